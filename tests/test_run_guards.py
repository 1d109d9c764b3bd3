"""Runs that cannot learn, or cannot continue as they claim, stop and say why.

- `max_unscored_steps`: a run in which no completion can be scored (every reward returns None: a judge outage, a
  reward that does not fit the data) stops with `UnscoredRewardsError` naming the rewards, instead of "succeeding"
  with loss 0 and unchanged weights.
- Checkpoints must fall on a generation boundary: TRL does not save the unused part of a generation batch, so a run
  resumed inside one regenerates at different steps. Such a save_steps is refused before anything loads; one on a
  boundary resumes to exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerControl, TrainerState
from trl import GRPOConfig

from core.training.config import VLMGRPOConfig, VLMModelConfig, config_as_dict, parse_config
from core.training.lora import build_lora_config
from core.training.models import load_model_and_processor
from core.training.run import check_save_steps, save_steps_problem, setup_run
from core.training.trainer import GenerationBoundaryCallback, UnscoredRewardsError, UnscoredStepGuard, VLMGRPOTrainer
from tests.fixtures.toy_rewards import even_token_fraction
from tests.helpers import load_recipe_module

NAN = float("nan")


def config(tmp_path, **overrides) -> GRPOConfig:
    values = {
        "output_dir": str(tmp_path / "out"),
        "bf16": False,
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "report_to": "none",
    }
    return GRPOConfig(**{**values, **overrides})


# ------------------------------------------------------------------------------------------------ unscored steps
def test_guard_counts_only_consecutive_fully_unscored_batches():
    guard = UnscoredStepGuard(["accuracy", "format"], max_unscored_steps=3)
    all_none = torch.full((4, 2), NAN)
    one_scored = all_none.clone()
    one_scored[2, 1] = 0.0  # a single scored completion (even a 0) resets the streak
    for rewards in (all_none, all_none, one_scored, all_none, all_none):
        guard.update(rewards)
    assert guard.consecutive == 2
    with pytest.raises(UnscoredRewardsError, match=r"3 consecutive generation batches \(max_unscored_steps=3\)"):
        guard.update(all_none)


def test_guard_names_the_rewards_that_returned_none_everywhere():
    guard = UnscoredStepGuard(["accuracy", "format", "judge"], max_unscored_steps=1)
    rewards = torch.full((4, 3), NAN)
    with pytest.raises(UnscoredRewardsError) as err:
        guard.update(rewards)
    assert "rewards accuracy, format, judge returned None" in str(err.value)


def test_guard_warns_once_about_a_reward_that_never_scores_while_others_do(caplog):
    guard = UnscoredStepGuard(["judge", "always_none"], max_unscored_steps=2)
    rewards = torch.tensor([[0.5, NAN], [0.2, NAN]])
    with caplog.at_level("WARNING", logger="core.training.trainer"):
        for _ in range(5):
            guard.update(rewards)
    warnings = [r.getMessage() for r in caplog.records if "always_none" in r.getMessage()]
    assert warnings == [
        "reward always_none returned None for every completion in 2 generation batches in a row: it contributes "
        "nothing to the advantages (the other rewards still train)"
    ]
    assert guard.consecutive == 0  # the run itself is scored: no stop


def test_guard_disabled_with_zero():
    guard = UnscoredStepGuard(["accuracy"], max_unscored_steps=0)
    for _ in range(50):
        guard.update(torch.full((2, 1), NAN))
    assert guard.consecutive == 50


def test_max_unscored_steps_is_a_config_flag_saved_in_the_grpo_section(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Script:
        train_file: str = "x.jsonl"

    _, training_args, _ = parse_config(
        Script, ["--output_dir", str(tmp_path), "--max_unscored_steps", "7", "--report_to", "none", "--bf16", "false"]
    )
    assert isinstance(training_args, VLMGRPOConfig) and training_args.max_unscored_steps == 7
    assert config_as_dict(training_args)["GRPOConfig"]["max_unscored_steps"] == 7
    with pytest.raises(ValueError, match="max_unscored_steps must be >= 0"):
        VLMGRPOConfig(output_dir=str(tmp_path), max_unscored_steps=-1, bf16=False, report_to="none")


def never_scores(completions, **kwargs):
    return [None] * len(completions)


class ScoresEveryOtherBatch:
    """None for every completion of the 1st, 3rd, ... call; a score otherwise."""

    __name__ = "every_other"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, completions, **kwargs):
        self.calls += 1
        return [None if self.calls % 2 else 1.0 for _ in completions]


@pytest.fixture(scope="module")
def grounding_rows(tmp_path_factory):
    data = load_recipe_module("grounding", "data")
    folder = tmp_path_factory.mktemp("grounding")
    load_recipe_module("grounding", "sample").make_sample(folder, num_samples=9, num_eval=1, seed=0)
    return data, folder


def tiny_trainer(tmp_path, rows, reward_funcs, **overrides) -> VLMGRPOTrainer:
    data, folder = rows
    model_args = VLMModelConfig(model_name_or_path="tiny:qwen2_5_vl", dtype="float32", use_peft=True, lora_r=4)
    model, processor, _ = load_model_and_processor(model_args)
    dataset = data.build_dataset(folder / "train.jsonl", None, processor.image_processor)
    values = {
        "output_dir": str(tmp_path / "out"),
        "bf16": False,
        "learning_rate": 1e-2,
        "per_device_train_batch_size": 4,
        "num_generations": 4,
        "max_completion_length": 4,
        "beta": 0.0,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "gradient_checkpointing": False,
        "disable_tqdm": True,
    }
    args = VLMGRPOConfig(**{**values, **overrides})
    return VLMGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=build_lora_config(model, model_args),
    )


@pytest.mark.slow
def test_training_stops_when_no_completion_can_be_scored(tmp_path, grounding_rows):
    trainer = tiny_trainer(tmp_path, grounding_rows, [never_scores, never_scores], max_steps=10, max_unscored_steps=3)
    with pytest.raises(UnscoredRewardsError) as err:
        trainer.train()
    message = str(err.value)
    assert "3 consecutive generation batches" in message and "rewards never_scores, never_scores" in message
    assert trainer.state.global_step == 2  # the 3rd generation batch (step 3's) raised before its optimizer step
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_training_with_intermittently_scored_batches_completes(tmp_path, grounding_rows):
    reward = ScoresEveryOtherBatch()
    trainer = tiny_trainer(tmp_path, grounding_rows, [reward], max_steps=4, max_unscored_steps=2)
    trainer.train()
    assert trainer.state.global_step == 4 and reward.calls == 4


# ------------------------------------------------------------------------------------------- generation boundary
def test_default_generation_batch_accepts_every_save_steps(tmp_path):
    for save_steps in (1, 3, 7):
        assert save_steps_problem(config(tmp_path, save_steps=save_steps, gradient_accumulation_steps=2)) is None


@pytest.mark.parametrize(
    ("overrides", "unit"),
    [
        ({"steps_per_generation": 2}, 2),  # generation every 2 optimizer steps
        ({"steps_per_generation": 4, "gradient_accumulation_steps": 2}, 2),  # mathvista's real config
        ({"num_iterations": 2}, 2),  # each generation batch is reused for 2 optimizer steps
        ({"steps_per_generation": 3, "gradient_accumulation_steps": 2}, 3),  # 3 micro-batches, 2 per step: lcm 6 = 3
    ],
)
def test_checkpoints_inside_a_generation_batch_are_refused_with_the_fix(tmp_path, overrides, unit):
    args = config(tmp_path, save_steps=unit + 1, per_device_train_batch_size=4, **overrides)
    with pytest.raises(ValueError) as err:
        check_save_steps(args)
    message = str(err.value)
    assert f"save_steps={unit + 1} puts a checkpoint inside a generation batch" in message
    assert f"multiple of {unit} (e.g. --save_steps {unit} or {2 * unit})" in message
    assert save_steps_problem(config(tmp_path, save_steps=2 * unit, **overrides)) is None
    # The final checkpoint, written at max_steps, must be on a boundary too.
    with pytest.raises(ValueError, match=f"max_steps={2 * unit + 1} puts a checkpoint inside a generation batch"):
        check_save_steps(config(tmp_path, save_steps=2 * unit, max_steps=2 * unit + 1, **overrides))
    assert save_steps_problem(config(tmp_path, save_steps=2 * unit, max_steps=4 * unit, **overrides)) is None
    assert save_steps_problem(config(tmp_path, save_strategy="no", max_steps=2 * unit + 1, **overrides)) is None


def test_setup_run_refuses_before_writing_anything(tmp_path):
    args = config(tmp_path, steps_per_generation=2, save_steps=3)
    with pytest.raises(ValueError, match="inside a generation batch"):
        setup_run(args)
    assert not (tmp_path / "out").exists()


def test_fractional_save_steps_are_checked_when_training_starts(tmp_path):
    args = config(tmp_path, steps_per_generation=2, save_steps=0.25)
    assert save_steps_problem(args) is None  # unknown until the trainer knows max_steps
    callback = GenerationBoundaryCallback()
    state = TrainerState()
    state.save_steps = 3  # 0.25 x 12 steps, as Trainer resolves it
    state.max_steps = 12
    with pytest.raises(ValueError, match="save_steps=3 puts a checkpoint inside a generation batch"):
        callback.on_train_begin(args, state, TrainerControl())
    state.save_steps = 4
    callback.on_train_begin(args, state, TrainerControl())
    state.max_steps = 13  # resolved from epochs: the final checkpoint would fall inside a batch
    with pytest.raises(ValueError, match="max_steps=13 puts a checkpoint inside a generation batch"):
        callback.on_train_begin(args, state, TrainerControl())
    state.max_steps, state.global_step = 12, 3  # resumed inside a batch, by whatever path
    with pytest.raises(ValueError, match="resuming at step 3, inside a generation batch"):
        callback.on_train_begin(args, state, TrainerControl())


def test_resume_refuses_a_checkpoint_inside_a_generation_batch_and_names_the_good_one(tmp_path):
    """An earlier run with another max_steps (or default settings) left checkpoint-3; generation every 2 steps."""
    out = tmp_path / "out"
    for step in (2, 3):
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    args = config(tmp_path, steps_per_generation=2, save_steps=2, max_steps=6, resume_from_checkpoint="true")
    with pytest.raises(ValueError) as err:
        setup_run(args)
    message = str(err.value)
    assert f"{out / 'checkpoint-3'} was saved at step 3, inside a generation batch" in message
    assert "resume from checkpoint-2 (the newest on a boundary)" in message
    args.resume_from_checkpoint = str(out / "checkpoint-2")
    assert setup_run(args) == str(out / "checkpoint-2")


@pytest.mark.slow
def test_resume_on_a_generation_boundary_gives_the_uninterrupted_weights(tmp_path, grounding_rows):
    """steps_per_generation=2 with gradient_accumulation_steps=1: one generation per 2 steps; checkpoint at step 2."""
    settings = {"max_steps": 4, "steps_per_generation": 2, "save_strategy": "steps", "save_steps": 2}
    full = tiny_trainer(tmp_path / "full", grounding_rows, [even_token_fraction], **settings)
    full.train()
    resumed_dir = tmp_path / "resumed" / "out"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(tmp_path / "full" / "out" / "checkpoint-2", resumed_dir / "checkpoint-2")
    resumed = tiny_trainer(tmp_path / "resumed", grounding_rows, [even_token_fraction], **settings)
    resumed.train(resume_from_checkpoint=str(resumed_dir / "checkpoint-2"))
    final_full = load_file(tmp_path / "full" / "out" / "checkpoint-4" / "adapter_model.safetensors")
    final_resumed = load_file(resumed_dir / "checkpoint-4" / "adapter_model.safetensors")
    start = load_file(resumed_dir / "checkpoint-2" / "adapter_model.safetensors")
    assert final_full.keys() == final_resumed.keys()
    assert any(not torch.equal(final_full[k], start[k]) for k in final_full)  # steps 3-4 did train
    for key in final_full:
        torch.testing.assert_close(final_resumed[key], final_full[key], rtol=0, atol=1e-6, msg=key)


# -------------------------------------------------------------------------------------------------- prompt padding
def test_right_padding_processor_is_left_padded_so_image_positions_match_the_prompt(tmp_path, grounding_rows):
    """Qwen-Image-Edit's pipeline processor pads on the right; TRL left-pads prompt ids but re-runs the processor
    for the log-prob forwards' mm_token_type_ids. Every image-token position must be typed 1 in those forwards."""
    trainer = tiny_trainer(tmp_path, grounding_rows, [even_token_fraction], max_steps=1)
    trainer.processing_class.tokenizer.padding_side = "right"
    trainer = VLMGRPOTrainer(
        model=trainer.model,
        reward_funcs=[even_token_fraction],
        args=trainer.args,
        train_dataset=trainer.train_dataset,
        processing_class=trainer.processing_class,
    )
    assert trainer.processing_class.tokenizer.padding_side == "left"
    rows = [trainer.train_dataset[i] for i in range(4)]
    assert len({len(row["problem"]) for row in rows}) > 1  # prompts of different lengths: padding matters
    trainer.model.train()
    output = trainer._generate_and_score_completions(rows)
    ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
    image = ids == trainer.model.config.image_token_id
    assert image.any(dim=1).all()
    assert torch.equal(output["mm_token_type_ids"] == 1, image)
