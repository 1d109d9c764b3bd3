"""Start-up check that the configured rewards can score the data (core.rewards.contract.check_rewards_can_score).

Each recipe writes a row's reference answer as its model would (`reference_completion` in its rewards.py); every
reward is scored on those before the model loads. A reward that returns None for all of them (grounding's iou_reward
on point answers) or raises is refused with a message naming the reward and the rows. The reference answers must
earn each recipe's full marks, which also checks the reference writers themselves.
"""

from __future__ import annotations

import json

import pytest

from core.data.records import DataError
from core.rewards.contract import check_rewards_can_score
from core.training.config import VLMModelConfig
from core.training.models import load_processor
from tests.helpers import load_recipe_module, run_smoke_train


@pytest.fixture(scope="module")
def grounding(tmp_path_factory):
    """Box and point versions of the grounding sample, built with the tiny Qwen2.5-VL processor (pixels_resized)."""
    data = load_recipe_module("grounding", "data")
    folder = tmp_path_factory.mktemp("grounding")
    load_recipe_module("grounding", "sample").make_sample(folder, num_samples=7, num_eval=1, seed=0)
    records = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    for record in records:
        x1, y1, x2, y2 = record["solution"]
        record["solution"] = [(x1 + x2) / 2, (y1 + y2) / 2]
    (folder / "points.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    processor = load_processor(VLMModelConfig(model_name_or_path="tiny:qwen2_5_vl")).image_processor
    boxes = data.build_dataset(folder / "train.jsonl", None, processor)
    points = data.build_dataset(folder / "points.jsonl", None, processor)
    return load_recipe_module("grounding", "rewards"), boxes, points, folder


@pytest.mark.parametrize("frame", ["pixels_resized", "norm1000", "pixels_original"])
def test_grounding_reference_answers_earn_full_marks(grounding, frame):
    rewards, boxes, _, _ = grounding
    funcs = rewards.build_reward_funcs(["accuracy_reward_coord", "iou_reward", "format_reward"], frame)
    scores = check_rewards_can_score(funcs, boxes, rewards.reference_completion(frame), num_rows=6)
    assert scores["accuracy_reward_coord"] == [1.0] * 6 and scores["format_reward"] == [1.0] * 6
    assert min(scores["iou_reward"]) > 0.97  # coordinates written with 2 decimals in the model's frame


def test_iou_reward_on_point_answers_is_refused_naming_reward_and_rows(grounding):
    rewards, _, points, folder = grounding
    funcs = rewards.build_reward_funcs(["accuracy_reward_coord", "iou_reward"], "pixels_resized")
    with pytest.raises(DataError) as err:
        check_rewards_can_score(funcs, points, rewards.reference_completion("pixels_resized"), source="points.jsonl")
    assert len(err.value.problems) == 1  # accuracy_reward_coord scores points; only iou_reward is refused
    problem = err.value.problems[0]
    assert problem.startswith("reward 'iou_reward' returned None (cannot score) for the reference answer of every row")
    assert "row 0 (id 'train-0000')" in problem and "row 5 (id 'train-0005')" in problem
    assert "points.jsonl" in str(err.value)


def test_a_reward_that_raises_is_refused_with_its_error(grounding):
    rewards, boxes, _, _ = grounding

    def needs_a_column(completions, depth, **kwargs):
        return [d for d in depth]

    with pytest.raises(DataError, match=r"reward 'needs_a_column' raised TypeError: .*depth"):
        check_rewards_can_score([needs_a_column], boxes, rewards.reference_completion("pixels_resized"))


def test_a_row_whose_reference_cannot_earn_full_marks_is_refused(grounding):
    rewards, boxes, _, _ = grounding

    def half_on_row_2(completions, id, **kwargs):  # noqa: A002 - the dataset column's name
        return [0.5 if row_id == "train-0002" else 1.0 for row_id in id]

    half_on_row_2.__name__ = "picky"
    funcs = [*rewards.build_reward_funcs(["accuracy_reward_coord"], "norm1000"), half_on_row_2]
    marks = {**rewards.REFERENCE_FULL_MARKS, "picky": 1.0}
    with pytest.raises(DataError) as err:
        check_rewards_can_score(funcs, boxes, rewards.reference_completion("norm1000"), num_rows=6, full_marks=marks)
    assert len(err.value.problems) == 1
    problem = err.value.problems[0]
    assert problem.startswith("row 2 (id 'train-0002'): reward 'picky' gives the reference answer '<answer>[")
    assert "0.5, not its full 1, so it can never pay for this row" in problem
    scores = check_rewards_can_score(funcs, boxes, rewards.reference_completion("norm1000"), full_marks={"picky": 0.5})
    assert scores["accuracy_reward_coord"] == [1.0] * 6  # full marks are a floor only for the rewards named


def test_rows_checked_spread_over_the_dataset_and_rows_without_reference_are_skipped(grounding):
    _, boxes, _, _ = grounding
    seen: list[list[str]] = []

    def record_ids(completions, id, **kwargs):  # noqa: A002 - the dataset column's name
        seen.append(list(id))
        return [1.0] * len(completions)

    check_rewards_can_score([record_ids], boxes, lambda row: "x", num_rows=3)
    assert seen == [["train-0000", "train-0002", "train-0005"]]
    assert check_rewards_can_score([record_ids], boxes, lambda row: None) == {}  # nothing to check against


def test_grounding_train_refuses_iou_on_points_before_the_model_loads(grounding, tmp_path):
    _, _, _, folder = grounding
    proc = run_smoke_train(
        "grounding",
        *("--train_file", str(folder / "points.jsonl"), "--eval_file", str(folder / "eval.jsonl")),
        *("--reward_funcs", "iou_reward", "--output_dir", str(tmp_path / "run")),
        timeout=300,
    )
    assert proc.returncode == 2  # a start-up error (core.errors.USER_ERROR_EXIT)
    assert "reward 'iou_reward' returned None (cannot score)" in proc.stderr
    assert "trainable" not in proc.stdout.lower()  # the trainer's start-up report: no model was built
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_video_reference_answers_earn_full_marks(tmp_path):
    data, rewards = load_recipe_module("video", "data"), load_recipe_module("video", "rewards")
    paths = load_recipe_module("video", "sample").make_sample(tmp_path, num_samples=3, num_eval=1, seed=0)
    dataset = data.build_dataset(paths["train"])
    funcs = rewards.build_reward_funcs(list(rewards.REWARD_NAMES))
    scores = check_rewards_can_score(
        funcs, dataset, rewards.reference_completion, full_marks=rewards.REFERENCE_FULL_MARKS
    )
    assert scores == {name: [1.0, 1.0] for name in rewards.REWARD_NAMES}


def test_mathvista_reference_writes_the_letter_for_letter_like_options():
    rewards = load_recipe_module("mathvista", "rewards")
    cfg = rewards.RewardConfig()
    row = {"answer": "A", "question_type": "multi_choice", "choices": ["B", "A"], "answer_type": "text"}
    completion = rewards.reference_completion(cfg)(row)
    assert completion.endswith("<SOLUTION>B</SOLUTION>")  # option 2 is lettered B; its text "A" would name option 1
    scores = rewards.build_reward_funcs(["correctness_reward"], cfg)[0](
        [completion],
        answer=["A"],
        question_type=["multi_choice"],
        choices=[["B", "A"]],
        answer_type=["text"],
        precision=[None],
        unit=[None],
    )
    assert scores == [2.0]


def test_mathvista_reference_answers_earn_full_marks(tmp_path):
    data, rewards = load_recipe_module("mathvista", "data"), load_recipe_module("mathvista", "rewards")
    sample = load_recipe_module("mathvista", "sample")  # 12 rows: every template (integer, float, list, choice)
    source = sample.make_sample(tmp_path / "mv", num_samples=12)["dataset"]
    dataset = data.build_dataset(source)
    cfg = rewards.RewardConfig(solution_start="<ans>", solution_end="</ans>")
    funcs = rewards.build_reward_funcs(list(rewards.REWARD_NAMES), cfg)
    scores = check_rewards_can_score(funcs, dataset, rewards.reference_completion(cfg), num_rows=12)
    assert scores == {"formatting_reward": [2.0] * 12, "correctness_reward": [2.0] * 12}
    marks = rewards.reference_full_marks(cfg)
    assert marks == {"formatting_reward": 2.0, "correctness_reward": 2.0}
    check_rewards_can_score(funcs, dataset, rewards.reference_completion(cfg), num_rows=12, full_marks=marks)
