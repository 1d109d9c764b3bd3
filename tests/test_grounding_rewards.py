"""Grounding rewards: parsing, coordinate frames (and the IoU ~ 0 frame bug), reward values on literal completions."""

from __future__ import annotations

import math

import pytest
from helpers import load_recipe_module

R = load_recipe_module("grounding", "rewards")

GT = [100.0, 100.0, 200.0, 200.0]
SIZE = [640, 480]
HUGE = "1" + "0" * 300  # 1e300 written out: finite, but its area overflows


def conv(text: str) -> list[dict[str, str]]:
    """A TRL conversational completion."""
    return [{"role": "assistant", "content": text}]


def score(reward, texts: list, solution=GT, size=SIZE, model_size=SIZE, **extra) -> list[float | None]:
    """Call a reward the way GRPOTrainer does: every dataset column repeated per completion, plus TRL's extras."""
    n = len(texts)
    return reward(
        prompts=[[{"role": "user", "content": "x"}]] * n,
        completions=texts,
        completion_ids=[[1, 2]] * n,
        solution=[solution] * n,
        image_size=[size] * n,
        model_image_size=[model_size] * n,
        id=[f"r{i}" for i in range(n)],
        trainer_state=None,
        **extra,
    )


# --------------------------------------------------------------------------------------------------------------- frames


def test_frame_for_family() -> None:
    assert R.frame_for_family("qwen2_5_vl") == "pixels_resized"
    assert R.frame_for_family("qwen3_vl") == "norm1000"
    assert R.frame_for_family("qwen2_vl") == "norm1000"
    assert R.frame_for_family("gemma3") == "norm1000"
    assert R.frame_for_family("Qwen2.5-VL") == "pixels_resized"
    with pytest.raises(ValueError, match="known: gemma3, qwen2_5_vl"):
        R.frame_for_family("llava")
    assert set(R.FRAMES) == {"pixels_resized", "norm1000", "pixels_original"}


def test_to_original_pixels_resized() -> None:
    # Original 640x480 is seen by Qwen2.5-VL as 644x476: x * 640/644, y * 480/476.
    assert R.to_original([322, 238, 644, 476], "pixels_resized", [640, 480], [644, 476]) == [320.0, 240.0, 640.0, 480.0]
    assert R.to_original([161, 119], "pixels_resized", [640, 480], [644, 476]) == [160.0, 120.0]


def test_to_original_norm1000_and_identity() -> None:
    # x * 640 / 1000, y * 480 / 1000
    assert R.to_original([500, 500], "norm1000", [640, 480], None) == [320.0, 240.0]
    assert R.to_original([0, 0, 1000, 1000], "norm1000", [640, 480], [644, 476]) == [0.0, 0.0, 640.0, 480.0]
    assert R.to_original([250, 125, 750, 875], "norm1000", [640, 480]) == [160.0, 60.0, 480.0, 420.0]
    assert R.to_original([1, 2, 3, 4], "pixels_original", None, None) == [1.0, 2.0, 3.0, 4.0]


def test_to_original_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="valid frames: pixels_resized, norm1000, pixels_original"):
        R.to_original([1, 2], "pixels", [640, 480], [644, 476])
    with pytest.raises(ValueError, match="2 numbers"):
        R.to_original([1, 2, 3], "norm1000", [640, 480], None)
    with pytest.raises(ValueError, match="model_image_size"):
        R.to_original([1, 2], "pixels_resized", [640, 480], None)


# -------------------------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer>[10, 20, 30, 40]</answer>", [10, 20, 30, 40]),
        ("<think>it is at the left</think>\n<answer>(10.5, 2, 30, 40.25)</answer>", [10.5, 2, 30, 40.25]),
        ("<answer>[10,20,30,40]</answer>", [10, 20, 30, 40]),
        ('<answer>[{"bbox_2d": [1, 2, 3, 4], "label": "cat"}, {"bbox_2d": [5, 6, 7, 8]}]</answer>', [1, 2, 3, 4]),
        ('<answer>{"bbox_2d": [1.5, 2, 3, 4]}</answer>', [1.5, 2, 3, 4]),
        ("<answer>[0, 0, 1, 1]</answer> no wait <answer>[2, 2, 3, 3]</answer>", [0, 0, 1, 1]),  # first block only
        ("<answer>[1, 1, 2, 2] or maybe [3, 3, 4, 4]</answer>", [1, 1, 2, 2]),  # in the block: the first box
        ("<answer>(5, 6) then [1, 1, 2, 2]</answer>", [1, 1, 2, 2]),  # a point is not a box
        ("<answer><|box_start|>(10,20),(30,40)<|box_end|></answer>", [10, 20, 30, 40]),  # Qwen2-VL native
        ("<answer>a <answer>[1, 2, 3, 4]</answer></answer>", [1, 2, 3, 4]),  # first <answer> to first </answer>
    ],
)
def test_parse_box_accepts(text: str, expected: list[float]) -> None:
    assert R.parse_box(text) == [float(v) for v in expected]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I cannot see it.",
        "<answer></answer>",
        "<answer>[a, b, c, d]</answer>",
        "[nan, 1, 2, 3]",
        "[1, 2, 3]",
        "[1, 2, 3, 4, 5]",
        "<answer>[30, 40, 10, 20]</answer>",  # inverted
        "<answer>[30, 40, 10, 20] [1, 2, 3, 4]</answer>",  # the first box is inverted: no later box is taken
        "[10, 20, 30, 40]",  # no answer tags
        "<think>first guess [1, 1, 2, 2]</think> final: [3, 3, 4, 4]",  # boxes, but none in an answer block
        "<answer>[1, 2, 3, 4]",  # unclosed tag
        "<answer>the left one</answer> [1, 2, 3, 4]",  # the box follows the block
        "<answer></answer><answer>[1, 2, 3, 4]</answer>",  # the first block is empty; later blocks are not read
        "<answer>[1e999, 0, 2e999, 1]</answer>",  # no exponents (this one would overflow to inf)
        "<answer>[1e2, 2E1, 3e2, 4e1]</answer>",  # no exponents
        "<answer>[-5, 100, 200, 200]</answer>",  # no signs: VLM-R1 reads digits only
        "<answer>[+5, 100, 200, 200]</answer>",
        "<answer>[1, 2]</answer>",  # a point is not a box
        None,
        42,
        [{"role": "assistant"}],
        [[["nested"]]],
    ],
)
def test_parse_box_rejects_without_raising(text) -> None:
    assert R.parse_box(text) is None


def test_parse_point() -> None:
    assert R.parse_point("<answer>(5, 6)</answer>") == [5.0, 6.0]
    assert R.parse_point("<answer>[0, 0, 10, 20]</answer>") == [5.0, 10.0]  # a box counts by its centre
    assert R.parse_point('<answer>{"point_2d": [7, 8], "label": "x"}</answer>') == [7.0, 8.0]
    assert R.parse_point("<answer>(5, 6) or [0, 0, 10, 20]</answer>") == [5.0, 10.0]  # a box before any point
    assert R.parse_point("<answer>[20, 20, 10, 10] (5, 6)</answer>") is None  # its first box is inverted
    assert R.parse_point("(5, 6)") is None  # outside the answer tags
    assert R.parse_point("<answer>nothing here</answer>") is None
    assert R.parse_point("<answer>[1, 2, 3]</answer>") is None


def test_completion_text_forms() -> None:
    assert R.completion_text("plain") == "plain"
    assert R.completion_text(conv("hi")) == "hi"
    assert R.completion_text([{"role": "assistant", "content": [{"type": "text", "text": "parts"}]}]) == "parts"
    parts = [{"type": "text", "text": "<answer>[1, 2, 3, 4]</answer>"}]
    assert R.parse_box([{"role": "assistant", "content": parts}]) == [1, 2, 3, 4]


# -------------------------------------------------------------------------------------------------------------- rewards


def test_accuracy_reward_coord_box_solution() -> None:
    reward = R.AccuracyCoordReward("pixels_original")
    texts = [
        conv("<answer>[100, 100, 200, 200]</answer>"),  # exact
        conv("<answer>[0, 0, 300, 300]</answer>"),  # sloppy, but its centre (150, 150) is inside
        conv("<answer>[300, 300, 400, 400]</answer>"),  # wrong place
        conv("<answer>(150, 120)</answer>"),  # a point inside
        conv("<answer>(10, 10)</answer>"),  # a point outside
        "<answer>[120, 120, 180, 180]</answer>",  # plain string
        "[120, 120, 180, 180]",  # right box, but no answer tags: no accuracy
        conv("<answer>the middle</answer> [120, 120, 180, 180]"),  # right box after the answer block
        conv("garbage"),
        conv(""),
        conv("<answer>[nan, nan, nan, nan]</answer>"),
        conv(f"<answer>[0, 0, {HUGE}, {HUGE}]</answer>"),  # huge: centre far outside
    ]
    assert score(reward, texts) == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_accuracy_reward_coord_point_solution_uses_five_percent_of_diagonal() -> None:
    reward = R.AccuracyCoordReward("pixels_original")
    # 640x480 -> diagonal 800 -> tolerance 40 px around (320, 240).
    texts = [f"<answer>{t}</answer>" for t in ("(350, 240)", "(360, 240)", "(361, 240)", "[340, 220, 360, 260]", "-")]
    texts.append("(350, 240)")  # right, but outside the answer tags
    assert score(reward, texts, solution=[320.0, 240.0]) == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]


def test_iou_reward_values() -> None:
    reward = R.IoUReward("pixels_original")
    texts = [
        conv("<answer>[100, 100, 200, 200]</answer>"),
        conv("<answer>[150, 100, 250, 200]</answer>"),  # I = 50*100, U = 2*100*100 - 5000 -> 1/3
        conv("<answer>[300, 300, 400, 400]</answer>"),
        conv("<answer>(150, 150)</answer>"),  # a point has no IoU
        conv("no idea"),
        conv(f"<answer>[0, 0, {HUGE}, {HUGE}]</answer>"),  # overflowing union must not give NaN
        conv("<answer>[150, 150, 150, 150]</answer>"),  # zero-area box
        conv("[100, 100, 200, 200]"),  # the right box outside the answer tags
        conv("<answer>[199, 100, 300, 200]</answer>"),  # a 1-pixel-wide overlap: 0, as VLM-R1 (continuous: 0.005)
    ]
    values = score(reward, texts)
    assert values[0] == 1.0
    assert values[1] == pytest.approx(1 / 3)
    assert values[2:] == [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert all(isinstance(v, float) and math.isfinite(v) for v in values)


def test_iou_reward_is_none_for_point_solutions() -> None:
    reward = R.IoUReward("pixels_original")
    assert score(reward, ["<answer>[1, 2, 3, 4]</answer>", "x"], solution=[5.0, 5.0]) == [None, None]


def test_format_reward() -> None:
    texts = [
        conv("<think>left side</think><answer>[1, 2, 3, 4]</answer>"),
        conv('<answer>{"bbox_2d": [1, 2, 3, 4]}</answer>'),
        "[1, 2, 3, 4]",  # box but no tags: 0 (as VLM-R1; it earned 0.5 before)
        conv("<answer>somewhere left</answer>"),  # tags but no box
        conv("<answer>[1, 2, 3, 4]</answer><answer>[1, 2, 3, 4]</answer>"),  # not exactly one
        conv("<answer>[1, 2, 3, 4]"),  # unclosed tag
        conv(""),
        conv("<answer></answer>"),  # the empty skeleton
        conv("<answer></answer>" * 5),  # ... repeated
        conv("<answer> \n\t </answer>"),  # whitespace only
        conv("[1, 2, 3, 4] <answer></answer>"),  # an empty answer block is an answer: the free-text box is not read
        conv("<answer><answer>[1, 2, 3, 4]</answer></answer>"),  # nested: each tag must occur once
        conv("<answer>[1, 2, 3, 4]</answer></answer>"),  # a stray closing tag
        conv("<ANSWER>[1, 2, 3, 4]</Answer>"),  # tags are matched case-insensitively, as the accuracy rewards read them
        conv("<answer>[3, 4, 1, 2] [1, 2, 3, 4]</answer>"),  # the first box is inverted
    ]
    expected = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert R.format_reward(completions=texts) == expected


def test_norm1000_answer_scores_in_norm1000_frame() -> None:
    # GT [100, 100, 200, 200] in 640x480 is [156.25, 208.33, 312.5, 416.67] in 0..1000 coordinates.
    text = conv("<answer>[156, 208, 312, 417]</answer>")
    assert score(R.IoUReward("norm1000"), [text])[0] > 0.98
    assert score(R.AccuracyCoordReward("norm1000"), [text]) == [1.0]
    assert score(R.IoUReward("pixels_original"), [text])[0] < 0.2


def test_wrong_frame_reproduces_the_iou_zero_bug() -> None:
    # A 2560x1920 photo with a Qwen2.5-VL processor capped at 1280*28*28 pixels is seen as 1148x840
    # (hand-computed in test_core_data). The truth [1000, 800, 1400, 1100] in the model's resized pixels is
    # [1000 * 1148/2560, 800 * 840/1920, 1400 * 1148/2560, 1100 * 840/1920] = [448.4, 350, 627.8, 481.25];
    # a correct model answers with the rounded [448, 350, 628, 481].
    truth, size, seen = [1000.0, 800.0, 1400.0, 1100.0], [2560, 1920], [1148, 840]
    answer = [conv("<answer>[448, 350, 628, 481]</answer>")]

    def iou(frame: str) -> float:
        return score(R.IoUReward(frame), answer, solution=truth, size=size, model_size=seen)[0]

    def accuracy(frame: str) -> float:
        return score(R.AccuracyCoordReward(frame), answer, solution=truth, size=size, model_size=seen)[0]

    assert iou("pixels_original") == 0.0 and accuracy("pixels_original") == 0.0  # the bug: compared as-is
    assert iou("norm1000") < 0.2  # another wrong frame: [1147, 672, 1608, 924] overlaps the truth only a little
    assert iou("pixels_resized") > 0.99 and accuracy("pixels_resized") == 1.0  # the right frame


def test_rewards_accept_plain_string_and_conversational_alike() -> None:
    reward = R.IoUReward("pixels_original")
    text = "<answer>[100, 100, 200, 200]</answer>"
    assert score(reward, [text, conv(text)]) == [1.0, 1.0]


def test_missing_columns_are_reported() -> None:
    reward = R.AccuracyCoordReward("norm1000")
    with pytest.raises(ValueError, match="'image_size'"):
        reward(completions=["<answer>[1, 2, 3, 4]</answer>"], solution=[GT])
    with pytest.raises(ValueError, match="'solution'"):
        reward(completions=["<answer>[1, 2, 3, 4]</answer>"])
    # pixels_original needs neither size column for a box solution.
    box = "<answer>[120, 120, 130, 130]</answer>"
    assert R.AccuracyCoordReward("pixels_original")(completions=[box], solution=[GT]) == [1.0]


def test_build_reward_funcs_names_and_errors() -> None:
    funcs = R.build_reward_funcs(list(R.REWARD_NAMES), "norm1000")
    assert [f.__name__ for f in funcs] == ["accuracy_reward_coord", "iou_reward", "format_reward"]
    assert funcs[0].frame == "norm1000" and funcs[1].frame == "norm1000"
    assert R.AccuracyCoordReward("norm1000").__name__ == "accuracy_reward_coord"
    assert R.IoUReward("norm1000").__name__ == "iou_reward"
    with pytest.raises(ValueError, match="built-in rewards: accuracy_reward_coord, iou_reward, format_reward"):
        R.build_reward_funcs(["iou_reward", "acc"], "norm1000")
    with pytest.raises(ValueError, match="valid frames"):
        R.build_reward_funcs(["iou_reward"], "pixels")
    with pytest.raises(ValueError, match="valid frames"):
        R.AccuracyCoordReward("relative")


def test_parsing_degenerate_long_completions_stays_fast() -> None:
    # RL policies do emit degenerate repetitions; a quadratic regex would stall every training step.
    import time

    start = time.perf_counter()
    digits = "1" * 5000 + "x"
    for text in (
        "<answer>" * 5000,
        "[" * 50000,
        "(1, 2), " * 5000,
        '"bbox_2d": [' * 5000,
        f"[{digits}, 1, 2, 3]",
        f"({digits}, 1), (2, 3)",
    ):
        assert R.parse_box(text) is None or isinstance(R.parse_box(text), list)
        R.format_reward(completions=[text])
        inside = f"<answer>{text}</answer>"  # only an answer block is parsed for boxes
        assert R.parse_box(inside) is None or isinstance(R.parse_box(inside), list)
        R.parse_point(inside)
        R.format_reward(completions=[inside])
    assert time.perf_counter() - start < 2.0
