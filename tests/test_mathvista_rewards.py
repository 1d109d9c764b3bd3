"""MathVista rewards: block counting, the formatting reward, MathVista's answer normalisation, reward values on literal
completions (strings and chat messages), custom delimiters/amounts, and user rewards by import path."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest
from helpers import load_recipe_module

R = load_recipe_module("mathvista", "rewards")

CFG = R.RewardConfig()
CHOICES = ["2", "3.5", "4", "Yes"]  # lettered A, B, C, D
TOY = "tests.fixtures.toy_rewards:even_token_fraction"


def conv(text: str) -> list[dict[str, str]]:
    """A TRL conversational completion."""
    return [{"role": "assistant", "content": text}]


def answer(solution: str, cfg=CFG) -> str:
    """A well-formatted completion whose solution block holds `solution`."""
    return f"{cfg.reasoning_start}some thinking{cfg.reasoning_end}{cfg.solution_start}{solution}{cfg.solution_end}"


def correct(prediction, gold, *, question_type="free_form", answer_type="integer", **kwargs) -> bool:
    return R.is_correct(prediction, gold, question_type=question_type, answer_type=answer_type, **kwargs)


def normalize(prediction, *, question_type="free_form", answer_type="integer", **kwargs):
    kwargs = {"choices": None, "precision": None, "unit": None, **kwargs}
    return R.normalize_prediction(prediction, question_type=question_type, answer_type=answer_type, **kwargs)


def score(reward, completions: list, gold="14", question_type="free_form", answer_type="integer", **columns):
    """Call a reward the way GRPOTrainer does: every dataset column repeated per completion, plus TRL's extras."""
    n = len(completions)
    defaults = {"choices": None, "precision": float("nan"), "unit": ""}  # what a MathVista free-form row holds
    return reward(
        prompts=[[{"role": "user", "content": "x"}]] * n,
        completions=completions,
        completion_ids=[[1, 2]] * n,
        answer=[gold] * n,
        question_type=[question_type] * n,
        answer_type=[answer_type] * n,
        **{name: [columns.get(name, value)] * n for name, value in defaults.items()},
        trainer_state=None,
    )


# --------------------------------------------------------------------------------------------------------------- blocks


def test_extract_solution_and_format_ok() -> None:
    assert R.extract_solution(answer("  14 \n"), CFG) == "14"
    assert R.extract_solution("<SOLUTION>\n3.5\n</SOLUTION>", CFG) == "3.5"
    assert R.extract_solution("no tags 14", CFG) is None
    assert R.extract_solution("<SOLUTION>14", CFG) is None  # unclosed
    assert R.extract_solution("<SOLUTION>14</SOLUTION><SOLUTION>15</SOLUTION>", CFG) is None  # ambiguous
    assert R.extract_solution("<SOLUTION></SOLUTION>", CFG) == ""
    assert R.extract_solution("<SOLUTION>14</SOLUTION></SOLUTION>", CFG) is None  # a stray delimiter: not one block
    assert R.extract_solution("<SOLUTION><SOLUTION>14</SOLUTION></SOLUTION>", CFG) is None  # nested
    assert R.format_ok(answer("14"), CFG) is True
    assert R.format_ok("<SOLUTION>14</SOLUTION>", CFG) is False
    assert R.format_ok("<REASONING>a</REASONING><REASONING>b</REASONING><SOLUTION>14</SOLUTION>", CFG) is False
    assert R.format_ok("<reasoning>a</reasoning><solution>14</solution>", CFG) is False  # delimiters are literal


# ------------------------------------------------------------------------------------------------------ formatting


def test_formatting_reward_values() -> None:
    reward = R.FormattingReward(CFG)
    assert reward.__name__ == "formatting_reward"
    completions = [
        answer("14"),  # both blocks: 2
        "<REASONING>think</REASONING> the answer is 14",  # reasoning only: 1
        "<SOLUTION>14</SOLUTION>",  # solution only: 1
        "the answer is 14",  # neither: 0
        "<REASONING>a</REASONING><REASONING>b</REASONING><SOLUTION>14</SOLUTION>",  # 2 reasoning blocks: that half 0
        answer("14") + "<SOLUTION>15</SOLUTION>",  # 2 solution blocks: that half 0
        "<REASONING>a</REASONING><REASONING>b</REASONING><SOLUTION>1</SOLUTION><SOLUTION>2</SOLUTION>",  # 0
        "<REASONING>unclosed <SOLUTION>14</SOLUTION>",  # an unclosed block is missing: 1
        "",
    ]
    assert reward(completions=completions) == [2.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]


WELL_FORMED = answer("14")  # "<REASONING>some thinking</REASONING><SOLUTION>14</SOLUTION>"
SKELETON = "<REASONING></REASONING><SOLUTION></SOLUTION>"


@pytest.mark.parametrize(
    ("text", "formatting", "correctness"),
    [
        (SKELETON, 0.0, 0.0),  # the empty skeleton (the original paid 2.0)
        (SKELETON * 5, 0.0, 0.0),  # ... repeated five times
        ("<REASONING> \n\t </REASONING><SOLUTION>\n </SOLUTION>", 0.0, 0.0),  # whitespace-only blocks
        ("<REASONING>\u200b</REASONING><SOLUTION>\ufeff\u00ad</SOLUTION>", 0.0, 0.0),  # invisible characters only
        (WELL_FORMED, 2.0, 2.0),  # the full original score: +1 +1, and the right answer 2.0
        (WELL_FORMED * 2, 0.0, 0.0),  # a repeated well-formed block: no credit for either half, ambiguous answer
        ("<REASONING>think</REASONING><SOLUTION> </SOLUTION>", 1.0, 0.0),  # filled reasoning, empty solution
        ("<REASONING></REASONING><SOLUTION>14</SOLUTION>", 1.0, 2.0),  # empty reasoning, right solution
        ("<REASONING>a</REASONING><REASONING></REASONING><SOLUTION>14</SOLUTION>", 1.0, 2.0),  # 2nd block empty
        ("<REASONING>\u2800</REASONING><SOLUTION>\u2800</SOLUTION>", 0.0, 0.0),  # braille blanks (So)
        ("<REASONING>\u3164\u115f\u1160\uffa0</REASONING><SOLUTION>14</SOLUTION>", 1.0, 2.0),  # Hangul fillers (Lo)
        ("<REASONING>\u034f\ufe0f\u0301</REASONING><SOLUTION>\x00\x07</SOLUTION>", 0.0, 0.0),  # marks, controls
        ("<REASONING><REASONING>a</REASONING></REASONING><SOLUTION>14</SOLUTION>", 1.0, 2.0),  # nested reasoning
        ("<REASONING>a</REASONING><SOLUTION><SOLUTION>14</SOLUTION></SOLUTION>", 1.0, 0.0),  # nested solution
        ("<REASONING>a</REASONING></REASONING><SOLUTION>14</SOLUTION>", 1.0, 2.0),  # a stray closing delimiter
        (WELL_FORMED + "</SOLUTION>", 1.0, 0.0),
        ("<REASONING>" * 200_000 + "</REASONING>" * 200_000 + "<SOLUTION>14</SOLUTION>", 1.0, 2.0),  # flood
        ("<REASONING>a</REASONING>" + "<SOLUTION>" * 200_000 + "14" + "</SOLUTION>" * 200_000, 1.0, 0.0),
    ],
)
def test_empty_and_repeated_blocks_earn_no_formatting_credit(text: str, formatting: float, correctness: float) -> None:
    start = time.perf_counter()
    assert R.FormattingReward(CFG)(completions=[text, conv(text)]) == [formatting, formatting]
    assert time.perf_counter() - start < 5  # hang guard, not a speed target (quadratic: minutes)
    assert score(R.CorrectnessReward(CFG), [text]) == [correctness]
    assert R.format_ok(text, CFG) is (formatting == 2.0)


@pytest.mark.parametrize(
    ("question_type", "answer_type", "gold", "columns"),
    [
        ("free_form", "integer", "14", {}),
        ("free_form", "float", "1.5", {"precision": 1.0}),
        ("free_form", "list", "[1, 2]", {}),
        ("free_form", "text", "yes", {}),
        ("multi_choice", "text", "3.5", {"choices": CHOICES}),
    ],
)
def test_empty_solution_is_wrong_for_every_answer_type(question_type, answer_type, gold, columns) -> None:
    texts = ["<REASONING>r</REASONING><SOLUTION></SOLUTION>", "<REASONING>r</REASONING><SOLUTION> \n </SOLUTION>"]
    kinds = {"question_type": question_type, "answer_type": answer_type}
    assert score(R.CorrectnessReward(CFG), texts, gold=gold, **kinds, **columns) == [0.0, 0.0]
    assert score(R.CorrectnessReward(CFG), [answer(gold)], gold=gold, **kinds, **columns) == [2.0]  # the control


def test_formatting_reward_chat_messages() -> None:
    reward = R.FormattingReward()
    completions = [
        conv(answer("14")),
        [{"role": "assistant", "content": [{"type": "text", "text": "<SOLUTION>14</SOLUTION>"}]}],
        [{"role": "user", "content": answer("14")}],  # not the assistant's text
        None,
        42,
    ]
    assert reward(completions=completions) == [2.0, 1.0, 0.0, 0.0, 0.0]


def test_custom_delimiters_and_amounts() -> None:
    cfg = R.RewardConfig(
        reasoning_start="<think>",
        reasoning_end="</think>",
        solution_start="<answer>",
        solution_end="</answer>",
        formatting_reward=0.5,
        correctness_reward=3.0,
    )
    formatting, correctness = R.build_reward_funcs(["formatting_reward", "correctness_reward"], cfg)
    completions = [
        "<think>7 + 7</think><answer>14</answer>",
        "<think>7 + 7</think><answer>15</answer>",
        answer("14"),  # the default delimiters are not what this config asks for
        "<answer>14</answer>",
        "<think>a</think><think>b</think><answer>14</answer>",
    ]
    assert formatting(completions=completions) == [1.0, 1.0, 0.0, 0.5, 0.5]
    assert score(correctness, completions) == [3.0, 0.0, 0.0, 3.0, 3.0]


def test_reward_config_from_object_and_validation() -> None:
    args = SimpleNamespace(solution_start="<a>", solution_end="</a>", correctness_reward=5.0, learning_rate=1e-5)
    cfg = R.RewardConfig.from_object(args)
    assert cfg == R.RewardConfig(solution_start="<a>", solution_end="</a>", correctness_reward=5.0)
    with pytest.raises(ValueError, match="solution_end"):
        R.FormattingReward(R.RewardConfig(solution_end=""))
    with pytest.raises(ValueError, match="reasoning_start"):
        R.build_reward_funcs(["correctness_reward"], R.RewardConfig(reasoning_start=""))


@pytest.mark.parametrize(
    ("delimiters", "message"),
    [
        ({"solution_start": "**", "solution_end": "**"}, "solution_start '\\*\\*' occurs inside solution_end"),
        ({"solution_start": "SOL", "solution_end": "/SOL"}, "solution_start 'SOL' occurs inside solution_end '/SOL'"),
        ({"reasoning_start": "<S>", "solution_start": "<S>"}, "reasoning_start '<S>' occurs inside solution_start"),
        ({"reasoning_end": "</R>", "solution_start": "</R><S>"}, "reasoning_end '</R>' occurs inside solution_start"),
    ],
)
def test_delimiters_that_contain_one_another_are_refused(delimiters: dict, message: str) -> None:
    # A block pays only when each of its delimiters occurs once; a delimiter inside another occurs at least twice in
    # every well-formed answer, so that half of the formatting reward could never pay: refused at start-up.
    with pytest.raises(ValueError, match=message):
        R.FormattingReward(R.RewardConfig(**delimiters))


# ---------------------------------------------------------------------------------------------------- normalisation


def test_integer_answers() -> None:
    assert correct("14", "14")
    assert correct("14.0", "14")  # the original compared strings: "14.0" != "14" scored 0
    # MathVista's rule is int(float(x)): it TRUNCATES, so "14.7" reads as 14. Kept so reward and benchmark agree.
    assert correct("14.7", "14")
    assert not correct("15", "14")
    assert not correct("13.99", "14")  # truncation again: 13
    assert correct("14", 14)  # answers may arrive as numbers
    assert correct("-3", "-3") and not correct("3", "-3")
    assert normalize("14.7") == 14 and normalize("nothing") is None


def test_float_answers_round_to_precision() -> None:
    assert correct("1.449", "1.45", answer_type="float", precision=2.0)  # round(1.449, 2) == 1.45
    assert correct("1.45", "1.449", answer_type="float", precision=2.0)
    assert not correct("1.4", "1.45", answer_type="float", precision=2.0)
    assert correct("1.43", "1.4", answer_type="float", precision=1.0)
    assert not correct("1.46", "1.4", answer_type="float", precision=1.0)
    assert correct("1.50", "1.5", answer_type="float", precision=2.0)  # a raw string compare would miss this one
    assert correct("3/4", "0.75", answer_type="float", precision=2.0)
    assert correct("\\frac{3}{4}", "0.75", answer_type="float", precision=2.0)
    assert normalize("1.449", answer_type="float", precision=2.0) == 1.45


@pytest.mark.parametrize("precision", [None, float("nan")])
def test_float_without_precision_uses_isclose(precision) -> None:
    assert correct("0.3333333", "0.33333333", answer_type="float", precision=precision)  # rel 1e-6
    assert not correct("0.333", "0.33333333", answer_type="float", precision=precision)
    assert normalize("1.449", answer_type="float", precision=precision) == 1.449


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("B", True),
        ("(B)", True),
        ("B.", True),
        ("B)", True),
        ("B:", True),
        ("Option B", True),
        ("(b)", True),  # a lowercase letter only in parentheses
        ("b", False),
        ("3.5", True),  # the option text
        (" 3.5. ", True),
        ("3.50", True),  # numerically the option "3.5"
        ("(B) 3.5", True),
        ("(B) 4", True),  # letter and text both: the letter wins, as in MathVista
        ("C. 3.5", False),
        ("A", False),
        ("E", False),  # out of range: not readable
        ("(E) 3.5", False),
        ("The answer is B", False),  # not required, and no most-similar-option guessing
        ("The answer is (B).", True),  # a parenthesised letter anywhere, as MathVista's calculate_score
        ("Answer: (b)", True),
        ("(A) no; (B) yes", False),  # the first parenthesised letter decides, as official
        ("C (B)", True),  # a parenthesised letter beats a leading bare one, as official
        ("3", False),
        ("", False),
    ],
)
def test_multi_choice(prediction: str, expected: bool) -> None:
    assert correct(prediction, "3.5", question_type="multi_choice", answer_type="text", choices=CHOICES) is expected


def test_multi_choice_text_options_and_normalized_value() -> None:
    kwargs = {"question_type": "multi_choice", "answer_type": "text", "choices": CHOICES}
    assert correct("yes.", "Yes", **kwargs)
    assert correct("  YES ", "Yes", **kwargs)
    assert correct("D. Yes", "Yes", **kwargs)
    assert not correct("No", "Yes", **kwargs)
    assert correct("A triangle", "A triangle", question_type="multi_choice", choices=["A square", "A triangle"])
    assert normalize("(d)", **kwargs) == "Yes"
    assert normalize("3.50", **kwargs) == "3.5"
    assert normalize("E", **kwargs) is None
    assert normalize("B", question_type="multi_choice", choices=None) is None  # no options: unreadable, no crash


def test_list_answers() -> None:
    assert correct("[1, 2, 3]", "[1,2,3.0]", answer_type="list")
    assert correct("1, 2, 3", "[1, 2, 3]", answer_type="list")  # no brackets
    assert correct("The list is [1, 2, 3].", "[1, 2, 3]", answer_type="list")
    assert not correct("[1, 2]", "[1, 2, 3]", answer_type="list")
    assert not correct("[1, 2, 3, 4]", "[1, 2, 3]", answer_type="list")
    assert not correct("[3, 2, 1]", "[1, 2, 3]", answer_type="list")
    assert correct("['A', 'b']", "[a, B]", answer_type="list")  # strings case-insensitively
    assert not correct("[1, 2] or [1, 3]", "[1, 2]", answer_type="list")  # two different lists: ambiguous
    assert normalize("[1, 2, 3.0]", answer_type="list") == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("prediction", "gold", "unit", "expected"),
    [
        ("14 cm", "14", "cm", True),
        ("14cm", "14", "cm", True),
        ("14 CM", "14", "cm", True),
        ("14 cm", "14", None, True),  # no unit given: "14" is the only number
        ("$1,234", "1234", "", True),
        ("1,234", "1234", None, True),
        ("25%", "25", None, True),
        ("45°", "45", None, True),
        ("45^\\circ", "45", None, True),
        ("45 degrees", "45", None, True),
        ("24 cm^2", "24", None, True),
        ("\\boxed{14}", "14", None, True),
        ("$14$", "14", None, True),
        ("14.", "14", None, True),
        ("x = 14", "14", None, True),
        ("14 apples", "14", None, True),
        ("between 12 and 14", "14", None, False),  # two different numbers: not readable
        ("1,2", "12", None, False),
        ("fourteen", "14", None, False),
    ],
)
def test_units_and_number_reading(prediction: str, gold: str, unit, expected: bool) -> None:
    assert correct(prediction, gold, unit=unit) is expected


def test_text_answers() -> None:
    assert correct("Hello  World.", "hello world", answer_type="text")
    assert correct("\\text{Red}", "red", answer_type="text")
    assert not correct("blue", "red", answer_type="text")
    assert not correct("", "red", answer_type="text")


@pytest.mark.parametrize(
    "prediction",
    [
        None,
        42,
        3.5,
        float("nan"),
        [],
        {"a": 1},
        "1e999",
        "[1e999]",
        "9" * 5000,
        "[" * 5000,
        "\\boxed{" * 500,
        "((((" * 500,
    ],
)
@pytest.mark.parametrize("answer_type", ["integer", "float", "list", "text"])
def test_never_raises_on_odd_predictions(prediction, answer_type) -> None:
    result = correct(prediction, "14", answer_type=answer_type, precision=2.0)
    assert isinstance(result, bool)
    assert correct(prediction, "3.5", question_type="multi_choice", choices=CHOICES) in (True, False)


# -------------------------------------------------------------------------------------------------------- correctness


def test_correctness_reward_values() -> None:
    reward = R.CorrectnessReward(CFG)
    assert reward.__name__ == "correctness_reward"
    completions = [
        answer("14"),
        answer("14.0"),
        conv(answer("14 cm")),
        answer("15"),
        "<SOLUTION>14</SOLUTION>",  # reasoning missing: correctness does not care
        "14",  # no solution block
        answer("14") + "<SOLUTION>14</SOLUTION>",  # duplicated solution block: ambiguous, 0 even if both agree
        answer("between 12 and 14"),
        answer(""),
        None,
    ]
    assert score(reward, completions) == [2.0, 2.0, 2.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_correctness_reward_per_row_columns() -> None:
    reward = R.CorrectnessReward()
    rewards = reward(
        completions=[answer("B"), answer("1.449"), answer("[1, 2]"), answer("14 cm"), conv(answer("yes"))],
        answer=["3.5", "1.45", "[1, 2]", "14", "Yes"],
        question_type=["multi_choice", "free_form", "free_form", "free_form", "multi_choice"],
        answer_type=["text", "float", "list", "integer", "text"],
        choices=[CHOICES, None, None, None, ["Yes", "No"]],
        precision=[float("nan"), 2.0, float("nan"), float("nan"), float("nan")],
        unit=["", "", "", "cm", ""],
    )
    assert rewards == [2.0, 2.0, 2.0, 2.0, 2.0]
    # Optional columns may be absent altogether.
    assert reward(completions=[answer("14")], answer=["14"], question_type=["free_form"], answer_type=["integer"]) == [
        2.0
    ]
    with pytest.raises(ValueError, match="'answer' has 1 values for 2 completions"):
        reward(completions=["a", "b"], answer=["14"], question_type=["free_form"] * 2, answer_type=["integer"] * 2)


def test_degenerate_long_completions_stay_fast() -> None:
    # RL policies emit degenerate repetitions; a block-matching regex needs ~3 s for the first of these.
    formatting, correctness = R.build_reward_funcs(list(R.REWARD_NAMES), CFG)
    texts = [
        "<SOLUTION>" * 8000,
        "<REASONING>" * 8000 + "</SOLUTION>",
        answer("1 " * 20000),
        answer("[" + "1, " * 20000 + "1]"),
        answer("\\boxed{" * 2000 + "14" + "}" * 2000),
    ]
    start = time.perf_counter()
    assert formatting(completions=texts) == [0.0, 0.0, 2.0, 2.0, 2.0]
    assert score(correctness, texts) == [0.0, 0.0, 0.0, 0.0, 2.0]  # 14 is the only number in the last one
    assert score(correctness, texts, answer_type="list") == [0.0] * 5
    assert time.perf_counter() - start < 2.0


# ------------------------------------------------------------------------------------------------------ build by name


def test_build_reward_funcs_builtins_and_import_path() -> None:
    cfg = R.RewardConfig(formatting_reward=0.25)
    funcs = R.build_reward_funcs([*R.REWARD_NAMES, TOY], cfg)
    assert [f.__name__ for f in funcs] == ["formatting_reward", "correctness_reward", "even_token_fraction"]
    assert funcs[0].cfg is cfg and funcs[1].cfg is cfg
    assert funcs[0](completions=[answer("14")]) == [0.5]
    assert funcs[2](completions=["x", "y"], completion_ids=[[2, 4, 3], [1]]) == [2 / 3, 0.0]
    assert [f.__name__ for f in R.build_reward_funcs(["correctness_reward"])] == ["correctness_reward"]


def test_build_reward_funcs_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown reward 'accuracy'; built-in rewards: formatting_reward, correctness"):
        R.build_reward_funcs(["formatting_reward", "accuracy"], CFG)


def test_rewards_are_finite_floats() -> None:
    values = score(R.CorrectnessReward(), [answer("14"), "x"]) + R.FormattingReward()(completions=["x", answer("1")])
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)
