"""Video rewards on literal completions: action parsing, format, ordered-action accuracy, reward plumbing."""

from __future__ import annotations

import time

import pytest
from helpers import load_recipe_module

R = load_recipe_module("video", "rewards")

TRUTH = ["the red circle moves left", "the red circle turns blue", "the blue circle moves up"]
SOLUTION = "<answer>(1) the red circle moves left (2) the red circle turns blue (3) the blue circle moves up</answer>"


def answer(*actions: str, think: str | None = "I watch the clip.") -> str:
    body = " ".join(f"({i}) {action}" for i, action in enumerate(actions, start=1))
    return (f"<think>{think}</think>" if think is not None else "") + f"<answer>{body}</answer>"


def conversational(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


# --------------------------------------------------------------------------------------------------------- parsing


def test_parse_actions_normalises_and_keeps_text_order() -> None:
    text = (
        "<answer>(1)  The Red circle   moves LEFT, then (2) the red circle turns blue; and\n"
        "(3) the blue circle moves up.</answer>"
    )
    assert R.parse_actions(text) == TRUTH
    assert R.parse_actions("<answer>(2) b (1) a</answer>") == ["b", "a"]  # numbers are separators, not re-sorted
    assert R.parse_actions("<answer>I saw: (1) a ( 2 ) b (3) </answer>") == ["a", "b"]  # preamble, empties dropped


def test_parse_actions_reads_only_the_last_answer_tag() -> None:
    assert R.parse_actions("<answer>(1) a</answer> wait <answer>(1) b (2) c</answer>") == ["b", "c"]
    assert R.parse_actions("(1) a (2) b") == []  # no tags: no answer
    assert R.parse_actions("<answer>a then b</answer>") == []  # no (n) markers
    assert R.parse_actions("<ANSWER>(1) A</ANSWER>") == ["a"]
    for junk in ("", None, 42, [{"role": "assistant"}], "<answer>", "<answer>(1) a"):
        assert R.parse_actions(junk) == []


def test_parse_actions_accepts_conversational_completions() -> None:
    assert R.parse_actions(conversational(SOLUTION)) == TRUTH
    parts = [{"role": "assistant", "content": [{"type": "text", "text": SOLUTION}]}]
    assert R.parse_actions(parts) == TRUTH


# ---------------------------------------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("<think>hmm</think>\n<answer>(1) a</answer>", 1.0),
        ("<answer>(1) a</answer><think>hmm</think>", 0.6),  # both, wrong order
        ("<think>hmm</think> (1) a", 0.3),
        ("<answer>(1) a</answer>", 0.3),
        ("(1) a (2) b", 0.0),
        ("", 0.0),
        ("<think>unclosed <answer>(1) a</answer>", 0.3),
    ],
)
def test_format_reward(text: str, score: float) -> None:
    assert R.format_reward([text]) == [pytest.approx(score)]
    assert R.format_reward([conversational(text)]) == [pytest.approx(score)]


WELL_FORMED = answer(*TRUTH)  # "<think>I watch the clip.</think><answer>(1) ... (3) ...</answer>"


@pytest.mark.parametrize(
    ("text", "fmt", "accuracy"),
    [
        ("<think></think><answer></answer>", 0.0, 0.0),  # the empty skeleton: no structure credit, no answer
        ("<think></think><answer></answer>" * 5, 0.0, 0.0),  # ... repeated five times
        ("<think> \n\t </think><answer>\n  </answer>", 0.0, 0.0),  # whitespace-only blocks
        ("<think>\u200b</think><answer>\ufeff\u00ad</answer>", 0.0, 0.0),  # invisible format characters only
        (WELL_FORMED, 1.0, 1.0),  # the full original score: 0.3 + 0.3 + 0.4
        (WELL_FORMED * 2, 0.0, 1.0),  # a repeated well-formed block: no format credit (accuracy reads the last)
        ("<think>hmm</think><answer></answer>", 0.3, 0.0),  # a filled think block alone
        ("<think></think><answer>(1) a</answer>", 0.3, 0.0),  # a filled answer block alone: no order credit
        ("<think>a</think><think>b</think>" + SOLUTION, 0.3, 1.0),  # repeated think: its part and order lost
        ("<think>a</think>" + SOLUTION + "<answer></answer>", 0.3, 0.0),  # repeated answer, the last one empty
    ],
)
def test_empty_and_repeated_blocks_earn_no_format_credit(text: str, fmt: float, accuracy: float) -> None:
    assert R.format_reward([text]) == [pytest.approx(fmt)]
    assert R.format_reward([conversational(text)]) == [pytest.approx(fmt)]
    assert R.accuracy_reward([text], actions=[TRUTH]) == [pytest.approx(accuracy)]
    assert R.ordered_accuracy_reward([text], actions=[TRUTH]) == [pytest.approx(accuracy)]


BLANKS = ["\u2800", "\u3164", "\u115f", "\u1160", "\uffa0", "\u034f", "\ufe0f", "\u0301", "\x00", "\x07", "\u200b"]


@pytest.mark.parametrize("blank", BLANKS, ids=[f"U+{ord(c):04X}" for c in BLANKS])
def test_invisible_characters_do_not_fill_a_block(blank: str) -> None:
    # Braille blank, Hangul fillers, combining marks, variation selectors, control characters: blank to the eye.
    assert R.format_reward([f"<think>{blank}</think><answer>{blank}</answer>"]) == [0.0]
    assert R.format_reward([f"<think>{blank * 3}</think>" + SOLUTION]) == [pytest.approx(0.3)]
    assert R.format_reward([f"<think>{blank}x</think>" + SOLUTION]) == [pytest.approx(1.0)]  # one visible char fills


@pytest.mark.parametrize(
    ("text", "fmt", "accuracy"),
    [
        ("<think><think>a</think></think>" + SOLUTION, 0.3, 1.0),  # nested think: its part and the order part lost
        ("<think>a</think><answer>" + SOLUTION + "</answer>", 0.3, 1.0),  # nested answer (accuracy reads the last)
        ("<think>a</think></think>" + SOLUTION, 0.3, 1.0),  # a stray closing tag is a second delimiter
        ("<think>a</think>" + SOLUTION + "</answer>", 0.3, 1.0),
        ("</think>a<think>" + SOLUTION, 0.3, 1.0),  # closed before it opens: no think block
        ("<think>a</THINK><Think>" + SOLUTION, 0.3, 1.0),  # tags are case-insensitive, so <Think> is a second one
        ("<THINK>a</Think>" + SOLUTION.upper(), 1.0, 1.0),  # ... and a well-formed answer in capitals is still one
        ("<think>" * 200_000 + "a" + "</think>" * 200_000 + SOLUTION, 0.3, 1.0),  # a flood of think delimiters
        ("<think>a</think>" + "<answer>" * 200_000 + "(1) x" + "</answer>" * 200_000, 0.3, 0.0),
    ],
    ids=[
        "nested-think",
        "nested-answer",
        "stray-think-end",
        "stray-answer-end",
        "reversed",
        "case",
        "capitals",
        "think-flood",
        "answer-flood",
    ],
)
def test_nested_stray_and_flooded_delimiters_earn_no_format_credit(text: str, fmt: float, accuracy: float) -> None:
    start = time.perf_counter()
    assert R.format_reward([text]) == [pytest.approx(fmt)]
    # linear scanning, also on a 200k-delimiter flood: a quadratic scan takes minutes; 2 s leaves room for a loaded CI
    assert time.perf_counter() - start < 2.0
    assert R.accuracy_reward([text], actions=[TRUTH]) == [pytest.approx(accuracy)]


# -------------------------------------------------------------------------------------------------------- accuracy


def test_accuracy_exact_order_scores_one() -> None:
    completions = [
        answer(*TRUTH),
        conversational(answer(*TRUTH, think=None)),
        answer("The Red circle moves left.", *TRUTH[1:]),
    ]
    assert R.ordered_accuracy_reward(completions, actions=[TRUTH] * 3) == [1.0, 1.0, 1.0]


def test_accuracy_wrong_order_is_partial_and_below_one() -> None:
    reversed_two = R.ordered_accuracy_reward([answer(TRUTH[1], TRUTH[0])], actions=[TRUTH[:2]])
    assert reversed_two == [pytest.approx(0.5)]  # same set, every pair swapped: IoU 1 * (0.5 + 0.4 * 0)
    one_swap = R.ordered_accuracy_reward([answer(TRUTH[0], TRUTH[2], TRUTH[1])], actions=[TRUTH])
    assert one_swap == [pytest.approx(0.5 + 0.4 * 2 / 3)]
    duplicate = R.ordered_accuracy_reward([answer(TRUTH[0], TRUTH[0], TRUTH[1], TRUTH[2])], actions=[TRUTH])
    assert duplicate == [pytest.approx(0.9)]  # same set, same order, but not the exact list
    assert max(reversed_two[0], one_swap[0], duplicate[0]) < 1.0


def test_accuracy_partial_sets_score_iou() -> None:
    subset = R.ordered_accuracy_reward([answer(TRUTH[0], TRUTH[2])], actions=[TRUTH])
    assert subset == [pytest.approx(2 / 3 * 0.9)]  # IoU 2/3, in order
    extra = R.ordered_accuracy_reward([answer(*TRUTH, "the blue circle turns red")], actions=[TRUTH])
    assert extra == [pytest.approx(3 / 4 * 0.9)]
    one_right_one_wrong = R.ordered_accuracy_reward([answer(TRUTH[0], "something else")], actions=[TRUTH])
    assert one_right_one_wrong == [pytest.approx(1 / 4 * 0.9)]  # 1 shared of 4 distinct; one shared: tau = 1
    disjoint = R.ordered_accuracy_reward([answer("a dog barks", "a cat runs")], actions=[TRUTH])
    assert disjoint == [0.0]


def test_accuracy_garbage_missing_tags_and_empty_score_zero() -> None:
    completions = [
        "(1) the red circle moves left",
        "",
        "no idea",
        None,
        "<answer></answer>",
        "<answer>left, blue</answer>",
    ]
    assert R.ordered_accuracy_reward(completions, actions=[TRUTH] * len(completions)) == [0.0] * len(completions)


def test_accuracy_uses_solution_when_actions_column_is_absent() -> None:
    completions = [answer(*TRUTH), answer(TRUTH[1], TRUTH[0], TRUTH[2])]
    by_solution = R.ordered_accuracy_reward(completions, solution=[SOLUTION] * 2)
    assert by_solution == R.ordered_accuracy_reward(completions, actions=[TRUTH] * 2)
    assert by_solution[0] == 1.0 and by_solution[1] < 1.0


def test_accuracy_unscorable_truth_is_none_and_missing_columns_raise() -> None:
    assert R.ordered_accuracy_reward([answer("a")], actions=[[]]) == [None]
    assert R.ordered_accuracy_reward([answer("a")], solution=["no actions here"]) == [None]
    with pytest.raises(ValueError, match="'actions' or 'solution'"):
        R.ordered_accuracy_reward([answer("a")])
    with pytest.raises(ValueError, match="2 values for 1 completions"):
        R.ordered_accuracy_reward([answer("a")], actions=[["a"], ["b"]])


def test_rewards_ignore_unrelated_dataset_columns() -> None:
    extra = {"prompt": [None], "video": [[]], "frame_indices": [[0, 1]], "video_fps": [2.0], "id": ["x"]}
    assert R.ordered_accuracy_reward([answer(*TRUTH)], actions=[TRUTH], solution=[SOLUTION], **extra) == [1.0]
    assert R.format_reward([answer(*TRUTH)], **extra) == [1.0]


# -------------------------------------------------------------------------------------------------------- plumbing


def test_build_reward_funcs_builtins_user_and_unknown() -> None:
    funcs = R.build_reward_funcs(["format_reward", "accuracy_reward", "tests.fixtures.toy_rewards:even_token_fraction"])
    assert [f.__name__ for f in funcs] == ["format_reward", "accuracy_reward", "even_token_fraction"]
    assert set(R.REWARD_NAMES) == set(R.DEFAULT_WEIGHTS)
    assert R.DEFAULT_WEIGHTS == {"format_reward": 0.3, "accuracy_reward": 0.7, "ordered_accuracy_reward": 0.7}
    with pytest.raises(ValueError, match="unknown reward 'iou_reward'"):
        R.build_reward_funcs(["iou_reward"])


def test_original_accuracy_is_exact_or_set_iou_and_cannot_see_order() -> None:
    assert R.accuracy_reward([answer(*TRUTH)], actions=[TRUTH]) == [1.0]
    # The original's formula: the right actions in the wrong order pay as much as the right answer...
    assert R.accuracy_reward([answer(TRUTH[1], TRUTH[0])], actions=[TRUTH[:2]]) == [1.0]
    # ...which is why ordered_accuracy_reward exists.
    assert R.ordered_accuracy_reward([answer(TRUTH[1], TRUTH[0])], actions=[TRUTH[:2]]) == [pytest.approx(0.5)]
    assert R.accuracy_reward([answer(TRUTH[0], TRUTH[2])], actions=[TRUTH]) == [pytest.approx(2 / 3)]
    assert R.accuracy_reward([answer(*TRUTH, "the blue circle turns red")], actions=[TRUTH]) == [pytest.approx(0.75)]
    assert R.accuracy_reward([answer("a dog barks")], actions=[TRUTH]) == [0.0]
    assert R.accuracy_reward(["no tags at all", ""], actions=[TRUTH] * 2) == [0.0, 0.0]
    assert R.accuracy_reward([answer("a")], actions=[[]]) == [None]
