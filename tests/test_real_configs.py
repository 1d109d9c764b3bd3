"""Every recipe's real config.yaml parses through its own train.py dataclasses, so a typo'd or stale key fails here,
on CPU, instead of on the cluster. Only the machine-dependent keys are overridden: bf16 (needs a GPU), and the
per-device batch, scaled by the 8 processes run_8gpu.sh starts, since GRPOConfig checks the global generation batch
against num_generations with the world size it sees (1 here)."""

from __future__ import annotations

import pytest
import yaml

from core.training.config import COMMON_ALIASES, parse_config
from tests.helpers import RECIPES_DIR, load_recipe_module

RECIPES = sorted(p.name for p in RECIPES_DIR.iterdir() if (p / "config.yaml").is_file())

# The key names each recipe's configs had before the shared vocabulary (canonical -> old), all still accepted.
OLD_KEYS = {
    "grounding": {"dataset_name": "train_file", "eval_dataset_name": "eval_file"},
    "video": {"dataset_name": "train_file", "eval_dataset_name": "eval_file"},
    "image2code": {"dataset_name": "train_file", "eval_dataset_name": "eval_file"},
    "image_edit": {"dataset_name": "dataset", "dataset_train_split": "splits"},
    "mmmg": {"dataset_name": "dataset"},
    "mathvista": {"dataset_train_split": "dataset_split", "max_train_samples": "max_samples"},
}


@pytest.mark.parametrize("recipe", RECIPES)
def test_real_config_parses(recipe: str, tmp_path) -> None:
    train = load_recipe_module(recipe, "train")
    aliases = getattr(train, "ALIASES", None)
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
    assert (script.backend, script.dataset_name, script.dataset_train_split, script.image_size) == (
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


@pytest.mark.parametrize("recipe", RECIPES)
def test_real_config_names_its_extra_and_sizes_vllm(recipe: str) -> None:
    """Each config says on its first line what to install; each real config sizes vLLM itself (issue 13): TRL would
    otherwise take the model's own context (Gemma-3: 131072) and its 0.3 default without the config saying so."""
    real = (RECIPES_DIR / recipe / "config.yaml").read_text()
    smoke = (RECIPES_DIR / recipe / "config_smoke.yaml").read_text()
    assert real.startswith(("# Needs: pip install -e '.[gpu]'", "# Needs: pip install -e '.[unsloth]'"))
    assert "'.[gpu]'" in real.splitlines()[0]  # run_8gpu.sh's path, for every recipe
    assert smoke.startswith("# Needs: pip install -e . (CPU, no extra)")
    values = yaml.safe_load(real)
    assert isinstance(values.get("vllm_max_model_length"), int) and isinstance(
        values.get("vllm_gpu_memory_utilization"), float
    )
    assert values["max_completion_length"] < values["vllm_max_model_length"] <= 8192
    assert 0.0 < values["vllm_gpu_memory_utilization"] < 1.0


def test_mathvista_runs_as_the_original_on_unsloth_and_on_trl_vllm_across_gpus(tmp_path, monkeypatch) -> None:
    """config.yaml passes the start-up checks of backend unsloth (Unsloth's own vLLM via fast_inference), and with
    run_8gpu.sh's flags those of backend transformers (TRL's colocated vLLM), on a GPU machine with the extras."""
    from core.training import backends

    train = load_recipe_module("mathvista", "train")
    config = ["--config", str(RECIPES_DIR / "mathvista" / "config.yaml"), "--bf16", "false"]
    config += ["--output_dir", str(tmp_path)]
    launcher = (RECIPES_DIR / "mathvista" / "run_8gpu.sh").read_text()
    flags = launcher.split('"$here" \\\n', 1)[1].split('"$@"')[0].split()
    assert flags == ["--backend", "transformers", "--load_in_4bit", "false", "--vllm_gpu_memory_utilization", "0.35"]
    one_gpu = parse_config(train.ScriptArguments, config, aliases=train.ALIASES)
    eight_gpus = parse_config(train.ScriptArguments, [*config, *flags], aliases=train.ALIASES)

    monkeypatch.setattr(backends.torch.cuda, "is_available", lambda: True)  # after parsing: GRPOConfig asks CUDA
    monkeypatch.setattr(backends, "_installed", lambda package: True)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    script, training, model = one_gpu
    backends.check_backend(script.backend, model, training)
    kwargs = backends.unsloth_load_kwargs(model, training, script.max_seq_length)
    assert (kwargs["fast_inference"], kwargs["gpu_memory_utilization"], kwargs["load_in_4bit"]) == (True, 0.8, True)
    assert kwargs["max_seq_length"] == training.vllm_max_model_length == 2048
    script, training, model = eight_gpus
    backends.check_backend(script.backend, model, training)
    assert (script.backend, training.use_vllm, training.vllm_mode) == ("transformers", True, "colocate")
    assert training.vllm_gpu_memory_utilization == 0.35 and not model.load_in_4bit


def old_key_config(recipe: str, name: str, tmp_path) -> tuple[dict, str]:
    """The recipe's config `name` written with its old key names (OLD_KEYS) instead of the canonical ones."""
    values = yaml.safe_load((RECIPES_DIR / recipe / name).read_text())
    old = {OLD_KEYS[recipe].get(key, key): value for key, value in values.items()}
    path = tmp_path / f"old_{name}"
    path.write_text(yaml.safe_dump(old))
    return old, str(path)


# A value other than any config's, per canonical key, to show an old flag lands on the canonical field.
FLAG_VALUES = {
    "dataset_name": "elsewhere/train.jsonl",
    "eval_dataset_name": "elsewhere/eval.jsonl",
    "dataset_train_split": "test",
    "max_train_samples": "3",
}


@pytest.mark.parametrize("recipe", sorted(OLD_KEYS))
def test_a_config_with_the_old_key_names_parses_to_the_same_values(recipe: str, tmp_path) -> None:
    """Issue 16: one vocabulary (dataset_name, dataset_train_split, eval_dataset_name, max_train_samples) in every
    recipe, and the names each config had before still work, as config keys and as flags."""
    assert set(RECIPES) <= set(OLD_KEYS)
    train = load_recipe_module(recipe, "train")
    aliases = getattr(train, "ALIASES", None)
    flags = ["--bf16", "false", "--output_dir", str(tmp_path / "out")]
    smoke = yaml.safe_load((RECIPES_DIR / recipe / "config_smoke.yaml").read_text())
    assert set(OLD_KEYS[recipe]) <= set(smoke), "config_smoke.yaml sets every data key, under its canonical name"
    for name in ("config_smoke.yaml", "config.yaml"):
        path = RECIPES_DIR / recipe / name
        canonical = yaml.safe_load(path.read_text())
        assert not set(canonical) & set(COMMON_ALIASES), f"{name} uses no old key name"
        flags_here = [*flags, "--per_device_train_batch_size", str(8 * canonical.get("per_device_train_batch_size", 8))]
        new = parse_config(train.ScriptArguments, ["--config", str(path), *flags_here], aliases)
        old_path = tmp_path / f"old_{name}"
        old_path.write_text(yaml.safe_dump({OLD_KEYS[recipe].get(k, k): v for k, v in canonical.items()}))
        old = parse_config(train.ScriptArguments, ["--config", str(old_path), *flags_here], aliases)
        assert old[0] == new[0] and old[2] == new[2]
        assert {k: v for k, v in old[1].to_dict().items() if k != "logging_dir"} == {
            k: v for k, v in new[1].to_dict().items() if k != "logging_dir"
        }
    # The old names as flags, over the file's canonical keys.
    for canonical_key, old_key in OLD_KEYS[recipe].items():
        value = FLAG_VALUES[canonical_key]
        args = ["--config", str(RECIPES_DIR / recipe / "config_smoke.yaml"), *flags, f"--{old_key}", value]
        script, _, _ = parse_config(train.ScriptArguments, args, aliases)
        parsed = getattr(script, canonical_key)
        assert parsed in (value, int(value) if value.isdigit() else value, [value]), (canonical_key, parsed)
