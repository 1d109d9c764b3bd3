"""GRPO actually learns: with a fixed seed, a dense toy reward rises on the tiny Qwen2.5-VL.

Catches sign, masking and advantage bugs that a 2-step smoke run cannot. Feasibility measured when this test was
written: mean reward 0.52 over the first 10 steps -> 1.00 over the last 10, about 14 s of CPU training.
"""

from __future__ import annotations

import pytest
from trl import GRPOConfig

from core.training.config import VLMModelConfig
from core.training.lora import build_lora_config, freeze_for_full_finetune
from core.training.models import load_model_and_processor
from core.training.trainer import VLMGRPOTrainer
from tests.fixtures.toy_rewards import even_token_fraction
from tests.helpers import load_recipe_module

pytestmark = pytest.mark.slow


def test_toy_reward_rises(tmp_path):
    data = load_recipe_module("grounding", "data")
    load_recipe_module("grounding", "sample").make_sample(tmp_path / "data", num_samples=17, num_eval=1, seed=0)
    model_args = VLMModelConfig(model_name_or_path="tiny:qwen2_5_vl", dtype="float32", use_peft=False)
    model, processor, _ = load_model_and_processor(model_args)
    dataset = data.build_dataset(tmp_path / "data" / "train.jsonl", None, processor.image_processor)
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        bf16=False,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        max_steps=120,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        beta=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        gradient_checkpointing=False,
        disable_tqdm=True,
    )
    freeze_for_full_finetune(model, model_args)
    trainer = VLMGRPOTrainer(
        model=model,
        reward_funcs=[even_token_fraction],
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=build_lora_config(model, model_args),
    )
    trainer.train()
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    assert len(rewards) == 120
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert last > first + 0.25, f"reward did not rise: first 10 steps {first:.2f}, last 10 steps {last:.2f}"
    assert last > 0.85
