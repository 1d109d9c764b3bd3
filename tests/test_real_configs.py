"""Every recipe's real config.yaml parses through its own train.py dataclasses, so a typo'd or stale key fails here,
on CPU, instead of on the cluster. Only the machine-dependent keys are overridden: bf16 (needs a GPU), and the
per-device batch, scaled by the 8 processes run_8gpu.sh starts, since GRPOConfig checks the global generation batch
against num_generations with the world size it sees (1 here)."""

from __future__ import annotations

import pytest
import yaml

from core.config import parse_config
from tests.helpers import RECIPES_DIR, load_recipe_module

RECIPES = sorted(p.name for p in RECIPES_DIR.iterdir() if (p / "config.yaml").is_file())


@pytest.mark.parametrize("recipe", RECIPES)
def test_real_config_parses(recipe: str, tmp_path) -> None:
    train = load_recipe_module(recipe, "train")
    aliases = getattr(train, "ALIASES", None) or getattr(train, "ORIGINAL_NAMES", None)
    path = RECIPES_DIR / recipe / "config.yaml"
    batch = yaml.safe_load(path.read_text()).get("per_device_train_batch_size", 8)
    args = ["--config", str(path), "--bf16", "false", "--output_dir", str(tmp_path)]
    script, training, model = parse_config(
        train.ScriptArguments, [*args, "--per_device_train_batch_size", str(8 * batch)], aliases=aliases
    )
    assert model.model_name_or_path and not model.model_name_or_path.startswith("tiny:")
    assert training.num_generations >= 2 and training.generation_batch_size % training.num_generations == 0


def test_mathvista_config_mirrors_the_original(tmp_path) -> None:
    train = load_recipe_module("mathvista", "train")
    args = [
        "--config",
        str(RECIPES_DIR / "mathvista" / "config.yaml"),
        "--bf16",
        "false",
        "--output_dir",
        str(tmp_path),
    ]
    script, training, model = parse_config(train.ScriptArguments, args, aliases=train.ALIASES)
    assert (script.backend, script.dataset_name, script.dataset_split, script.image_size) == (
        "unsloth",
        "AI4Math/MathVista",
        "testmini",
        512,
    )
    assert (model.model_name_or_path, model.load_in_4bit, model.lora_r, model.lora_alpha) == (
        "unsloth/gemma-3-4b-it",
        True,
        16,
        16,
    )
    assert model.train_language and not model.train_vision
    assert (training.per_device_train_batch_size, training.gradient_accumulation_steps) == (1, 2)
    assert (training.learning_rate, training.num_generations, training.loss_type) == (5e-6, 4, "dr_grpo")
    assert training.num_train_epochs == 2 and training.use_vllm
    assert (script.formatting_reward, script.correctness_reward) == (1.0, 2.0)
