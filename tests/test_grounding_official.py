"""Grounding rewards side by side with VLM-R1's REC rewards, on the same completions.

Expected VLM-R1 values were computed by running VLM-R1's own functions outside this project (extracted verbatim with
`ast` and executed on these completions, with real images on disk for the size it reads):

* repository `om-ai-lab/VLM-R1`, commit 90052f478646e38bc67363862f699b7afca6b337
* `src/open-r1-multimodal/src/open_r1/vlm_modules/qwen_module.py`: `Qwen2VLModule.iou_reward` (the REC "accuracy"
  reward that `grpo_rec.py` registers) and `Qwen2VLModule.format_reward_rec` (its "format" reward);
* `src/eval/test_rec_r1.py`: `extract_bbox_answer` + `iou` + `resize_bbox`, "correct" = IoU > 0.5 (its REC eval).

Only the resulting numbers are kept here. Setup "A": a 644x476 image that the model sees at 644x476 (image_grid_thw
(1, 34, 46), x14 = 476 high, 644 wide): VLM-R1's resize is the identity, as our `pixels_resized` frame is. Setup "B":
a 640x480 image seen as 644x476, the Qwen2.5-VL resize (VLM-R1 scales by image / (grid x 14), our `pixels_resized`
by image_size / model_image_size: the same numbers). The truth is [100, 100, 200, 200] in original pixels.

The rule (issue 12): our `iou_reward` equals VLM-R1's `iou_reward` wherever VLM-R1 can read the answer, and never
pays more for the same answer; the deliberate departures (README "How it maps to VLM-R1") are notations VLM-R1 does
not read - decimals, spaces inside the brackets, parentheses, Qwen2-VL's `(x1,y1),(x2,y2)`, tags in upper case - for
which we pay what VLM-R1 pays for the same box in its own notation `[x1, y1, x2, y2]` (rounded, for decimals).
"""

from __future__ import annotations

import pytest
from helpers import load_recipe_module

R = load_recipe_module("grounding", "rewards")

TRUTH = [100.0, 100.0, 200.0, 200.0]
SETUPS = {"A": ([644, 476], [644, 476]), "B": ([640, 480], [644, 476])}  # (image_size, model_image_size)
T = "<think>the red circle is left</think>"

# name, setup, completion, VLM-R1 iou_reward, VLM-R1 format_reward_rec, VLM-R1 eval correct (IoU > 0.5),
# then ours: iou_reward, format_reward, accuracy_reward_coord (VLM-R1 has no point-in-box reward).
CASES = [
    ("exact", "A", T + "<answer>[100, 100, 200, 200]</answer>", 0.9999999999999992, 0.0, 0, 1.0, 1.0, 1.0),
    (
        "exact_json",
        "A",
        T + '<answer>{"bbox_2d": [100, 100, 200, 200], "label": "circle"}</answer>',
        0.9999999999999992,
        1.0,
        1,
        1.0,
        1.0,
        1.0,
    ),
    ("third_overlap", "A", T + "<answer>[150, 100, 250, 200]</answer>", 0.3333333333333333, 0.0, 0, 1 / 3, 1.0, 1.0),
    ("disjoint", "A", T + "<answer>[300, 300, 400, 400]</answer>", 0.0, 0.0, 0, 0.0, 1.0, 0.0),
    ("no_think", "A", "<answer>[100, 100, 200, 200]</answer>", 0.9999999999999992, 0.0, 0, 1.0, 1.0, 1.0),
    # boxes outside the answer block: nothing, in VLM-R1 and here
    ("untagged_box", "A", "[100, 100, 200, 200]", 0.0, 0.0, 0, 0.0, 0.0, 0.0),
    (
        "box_in_think_only",
        "A",
        "<think>it is [100, 100, 200, 200]</think><answer>the circle</answer>",
        0.0,
        0.0,
        0,
        0.0,
        0.0,
        0.0,
    ),
    ("unclosed_answer", "A", T + "<answer>[100, 100, 200, 200]", 0.0, 0.0, 0, 0.0, 0.0, 0.0),
    ("box_after_answer", "A", T + "<answer>left</answer> [100, 100, 200, 200]", 0.0, 0.0, 0, 0.0, 0.0, 0.0),
    ("empty_answer", "A", T + "<answer></answer>", 0.0, 0.0, 0, 0.0, 0.0, 0.0),
    # several blocks / several boxes: the first box of the first block
    (
        "two_blocks_first_wrong",
        "A",
        T + "<answer>[300, 300, 400, 400]</answer><answer>[100, 100, 200, 200]</answer>",
        0.0,
        0.0,
        0,
        0.0,
        0.0,
        0.0,
    ),
    (
        "two_blocks_first_right",
        "A",
        T + "<answer>[100, 100, 200, 200]</answer><answer>[300, 300, 400, 400]</answer>",
        0.9999999999999992,
        0.0,
        0,
        1.0,
        0.0,
        1.0,
    ),
    (
        "two_boxes_first_right",
        "A",
        T + "<answer>[100, 100, 200, 200] or [300, 300, 400, 400]</answer>",
        0.9999999999999992,
        0.0,
        0,
        1.0,
        1.0,
        1.0,
    ),
    (
        "two_boxes_first_wrong",
        "A",
        T + "<answer>[300, 300, 400, 400] or [100, 100, 200, 200]</answer>",
        0.0,
        0.0,
        0,
        0.0,
        1.0,
        0.0,
    ),
    (
        "inverted_then_valid",
        "A",
        T + "<answer>[200, 200, 100, 100] [100, 100, 200, 200]</answer>",
        0.0,
        0.0,
        0,
        0.0,
        0.0,
        0.0,
    ),
    (
        "nested_answer",
        "A",
        T + '<answer><answer>{"bbox_2d": [100, 100, 200, 200]}</answer></answer>',
        0.9999999999999992,
        1.0,
        1,
        1.0,
        0.0,
        1.0,
    ),
    (
        "json_two_objects",
        "A",
        T + '<answer>[{"bbox_2d": [100, 100, 200, 200]}, {"bbox_2d": [300, 300, 400, 400]}]</answer>',
        0.9999999999999992,
        1.0,
        0,
        1.0,
        1.0,
        1.0,
    ),
    # VLM-R1's IoU: continuous, except that an overlap of at most 1 pixel (wide or high) counts as none
    ("overlap_1px", "A", T + "<answer>[199, 100, 300, 200]</answer>", 0.0, 0.0, 0, 0.0, 1.0, 0.0),
    ("overlap_2px", "A", T + "<answer>[198, 100, 300, 200]</answer>", 0.009999999999999858, 0.0, 0, 0.01, 1.0, 0.0),
    ("overlap_1px_height", "A", T + "<answer>[100, 199, 200, 300]</answer>", 0.0, 0.0, 0, 0.0, 1.0, 0.0),
    ("touching", "A", T + "<answer>[200, 100, 300, 200]</answer>", 0.0, 0.0, 0, 0.0, 1.0, 0.0),
    ("zero_area", "A", T + "<answer>[150, 150, 150, 150]</answer>", 0.0, 0.0, 0, 0.0, 1.0, 1.0),
    ("contains_gt", "A", T + "<answer>[50, 50, 250, 250]</answer>", 0.25, 0.0, 0, 0.25, 1.0, 1.0),
    # numbers VLM-R1 does not read and neither do we
    ("negative", "A", T + "<answer>[-5, 100, 200, 200]</answer>", 0.0, 0.0, 0, 0.0, 0.0, 0.0),
    ("exponent", "A", T + "<answer>[1e2, 1e2, 2e2, 2e2]</answer>", 0.0, 0.0, 0, 0.0, 0.0, 0.0),
    # the Qwen2.5-VL frame: answers in resized pixels
    (
        "resized_frame",
        "B",
        T + "<answer>[101, 99, 201, 198]</answer>",
        0.9887968318482622,
        0.0,
        0,
        0.9887968318482618,
        1.0,
        1.0,
    ),
    (
        "resized_frame_json",
        "B",
        T + '<answer>{"bbox_2d": [101, 99, 201, 198]}</answer>',
        0.9887968318482622,
        1.0,
        1,
        0.9887968318482618,
        1.0,
        1.0,
    ),
    (
        "resized_frame_shifted",
        "B",
        T + '<answer>{"bbox_2d": [151, 99, 251, 198]}</answer>',
        0.33303948509965936,
        1.0,
        0,
        0.33303948509965936,
        1.0,
        1.0,
    ),
    # deliberate departures: notations VLM-R1 does not read (DEPARTURES below)
    ("decimals", "A", T + "<answer>[100.4, 100.0, 199.6, 200.2]</answer>", 0.0, 0.0, 0, 0.990035769034236, 1.0, 1.0),
    ("decimals_rounded", "A", T + "<answer>[100, 100, 200, 200]</answer>", 0.9999999999999992, 0.0, 0, 1.0, 1.0, 1.0),
    ("spaces_in_brackets", "A", T + "<answer>[ 100, 100, 200, 200 ]</answer>", 0.0, 0.0, 0, 1.0, 1.0, 1.0),
    ("parentheses", "A", T + "<answer>(100, 100, 200, 200)</answer>", 0.0, 0.0, 0, 1.0, 1.0, 1.0),
    ("qwen2vl_two_points", "A", T + "<answer>(100,100),(200,200)</answer>", 0.0, 0.0, 0, 1.0, 1.0, 1.0),
    ("upper_case_tags", "A", T + "<ANSWER>[100, 100, 200, 200]</ANSWER>", 0.0, 0.0, 0, 1.0, 1.0, 1.0),
]
BY_NAME = {case[0]: case for case in CASES}
# departure -> the same box in VLM-R1's own notation; we never pay more than VLM-R1 pays for that
DEPARTURES = {
    "decimals": "decimals_rounded",
    "spaces_in_brackets": "exact",
    "parentheses": "exact",
    "qwen2vl_two_points": "exact",
    "upper_case_tags": "exact",
}
ULP = 1e-12  # VLM-R1 divides and multiplies by the size even when they cancel: 0.9999999999999992 for 1


def ours(name: str) -> tuple[float, float, float]:
    """(iou_reward, format_reward, accuracy_reward_coord) of our rewards on a case, in the pixels_resized frame."""
    _, setup, text, *_ = BY_NAME[name]
    size, model_size = SETUPS[setup]
    columns = {"solution": [TRUTH], "image_size": [size], "model_image_size": [model_size]}
    iou = R.IoUReward("pixels_resized")(completions=[[{"role": "assistant", "content": text}]], **columns)[0]
    accuracy = R.AccuracyCoordReward("pixels_resized")(completions=[text], **columns)[0]
    return iou, R.format_reward(completions=[text])[0], accuracy


def test_enough_cases_from_the_official_code() -> None:
    assert len(CASES) >= 15 and len(BY_NAME) == len(CASES)
    assert set(DEPARTURES) | set(DEPARTURES.values()) <= set(BY_NAME)


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_our_values(name: str) -> None:
    _, _, _, _, _, _, iou, fmt, accuracy = BY_NAME[name]
    got_iou, got_fmt, got_accuracy = ours(name)
    assert got_iou == pytest.approx(iou, abs=1e-15)
    assert (got_fmt, got_accuracy) == (fmt, accuracy)


@pytest.mark.parametrize("name", [c[0] for c in CASES if c[0] not in DEPARTURES])
def test_iou_reward_equals_vlmr1(name: str) -> None:
    """Same value as VLM-R1's iou_reward (to its rounding), hence never more."""
    vlmr1 = BY_NAME[name][3]
    assert ours(name)[0] == pytest.approx(vlmr1, abs=ULP)


@pytest.mark.parametrize(("name", "canonical"), sorted(DEPARTURES.items()))
def test_departures_never_pay_more_than_vlmr1_for_the_same_box(name: str, canonical: str) -> None:
    """VLM-R1 reads nothing in these notations (0); we read the box and pay at most what VLM-R1 pays for the same
    box written as VLM-R1 reads it."""
    assert BY_NAME[name][3] == 0.0
    assert ours(name)[0] > 0.0
    assert ours(name)[0] <= BY_NAME[canonical][3] + ULP


@pytest.mark.parametrize(
    "name", ["untagged_box", "box_in_think_only", "unclosed_answer", "box_after_answer", "empty_answer"]
)
def test_a_box_outside_the_answer_block_earns_nothing(name: str) -> None:
    assert BY_NAME[name][3] == 0.0  # VLM-R1
    assert ours(name) == (0.0, 0.0, 0.0)


def test_format_pays_where_vlmr1_does_except_repeated_tags() -> None:
    """VLM-R1's format reward asks for its own prompt's format (<think> first, a JSON object in the answer); ours for
    our prompt's (one <answer> block holding a box). Wherever VLM-R1 pays format, we pay too - except for repeated or
    nested answer tags, which our stricter rule refuses."""
    for name, *_, vlmr1_format, _, _, fmt, _ in CASES:
        if vlmr1_format == 1.0 and name != "nested_answer":
            assert fmt == 1.0, name
    assert BY_NAME["nested_answer"][7] == 0.0


def test_eval_rule_agrees_on_answers_in_vlmr1_format() -> None:
    """VLM-R1's REC eval (IoU > 0.5 on the box it extracts) and our iou_reward > 0.5 (evaluate.py's
    iou_0.5_accuracy) agree on single-box answers written in VLM-R1's prompted format. They differ where the eval's
    extractor differs from VLM-R1's own reward: it needs a JSON object and takes the LAST box inside it."""
    for name in ("exact_json", "resized_frame_json", "resized_frame_shifted", "nested_answer"):
        assert (ours(name)[0] > 0.5) == bool(BY_NAME[name][5]), name
    assert BY_NAME["json_two_objects"][5] == 0 and ours("json_two_objects")[0] > 0.5  # eval: the last box
