"""Config: YAML + CLI through TrlParser, unknown keys fail, the resolved config is recorded."""

from dataclasses import dataclass, field

import pytest
import yaml

from core.training.config import (
    COMMON_ALIASES,
    RESOLVED_CONFIG_NAME,
    VLMModelConfig,
    canonical_keys,
    load_resolved_config,
    parse_config,
    save_resolved_config,
    script_aliases,
)


@dataclass
class ToyScriptArgs:
    train_file: str = field(default="train.jsonl", metadata={"help": "data"})
    reward_funcs: list[str] = field(default_factory=lambda: ["a"], metadata={"help": "rewards"})


CPU = {"use_cpu": True, "bf16": False}


def write_yaml(tmp_path, data):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**CPU, **data}))
    return str(path)


def test_yaml_fills_all_three_dataclasses(tmp_path):
    cfg = write_yaml(
        tmp_path,
        {
            "train_file": "x.jsonl",
            "learning_rate": 0.5,
            "num_generations": 4,
            "model_name_or_path": "tiny:qwen2_5_vl",
            "max_pixels": 12544,
            "train_vision": True,
            "output_dir": str(tmp_path / "out"),
        },
    )
    script, train, model = parse_config(ToyScriptArgs, ["--config", cfg])
    assert script.train_file == "x.jsonl"
    assert train.learning_rate == 0.5 and train.num_generations == 4
    assert isinstance(model, VLMModelConfig)
    assert model.max_pixels == 12544 and model.train_vision is True and model.train_projector is False


def test_cli_overrides_yaml(tmp_path):
    cfg = write_yaml(tmp_path, {"train_file": "x.jsonl", "learning_rate": 0.5, "output_dir": str(tmp_path / "o")})
    script, train, _ = parse_config(ToyScriptArgs, ["--config", cfg, "--learning_rate", "0.25", "--train_file", "y"])
    assert train.learning_rate == 0.25
    assert script.train_file == "y"


def test_unknown_yaml_key_fails(tmp_path):
    cfg = write_yaml(tmp_path, {"train_file": "x.jsonl", "learnin_rate": 0.5, "output_dir": str(tmp_path / "o")})
    with pytest.raises(ValueError, match="learnin_rate"):
        parse_config(ToyScriptArgs, ["--config", cfg])


def test_unknown_cli_flag_fails(tmp_path):
    cfg = write_yaml(tmp_path, {"output_dir": str(tmp_path / "o")})
    with pytest.raises(ValueError, match="no_such_flag"):
        parse_config(ToyScriptArgs, ["--config", cfg, "--no_such_flag", "1"])


def test_resolved_config_round_trip_and_kept_on_change(tmp_path):
    cfg = write_yaml(tmp_path, {"learning_rate": 0.5, "output_dir": str(tmp_path / "o")})
    script, train, model = parse_config(ToyScriptArgs, ["--config", cfg])
    out = tmp_path / "run"
    save_resolved_config(out, script, train, model)
    loaded = load_resolved_config(out)
    assert loaded["GRPOConfig"]["learning_rate"] == 0.5
    assert loaded["ToyScriptArgs"]["reward_funcs"] == ["a"]
    assert loaded["VLMModelConfig"]["train_language"] is True

    train.learning_rate = 0.1  # a resumed run with other settings keeps the earlier record
    save_resolved_config(out, script, train, model)
    assert load_resolved_config(out)["GRPOConfig"]["learning_rate"] == 0.1
    older = [p for p in out.glob("run_config.*.yaml") if p.name != RESOLVED_CONFIG_NAME]
    assert len(older) == 1 and yaml.safe_load(older[0].read_text())["GRPOConfig"]["learning_rate"] == 0.5


def test_load_resolved_config_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="run_config.yaml"):
        load_resolved_config(tmp_path)


ALIASES = {"grpo_beta": "beta", "grpo_sample_size": "num_generations", "tune_mm_vision": "train_vision"}


def test_original_names_land_before_grpo_config_derives_its_values(tmp_path):
    # num_generations=4 must be known when GRPOConfig checks the batch (4 prompts, default 8 generations fails).
    cfg = write_yaml(
        tmp_path,
        {
            "grpo_beta": 0.1,
            "grpo_sample_size": 4,
            "tune_mm_vision": True,
            "per_device_train_batch_size": 4,
            "output_dir": str(tmp_path / "o"),
        },
    )
    _, train, model = parse_config(ToyScriptArgs, ["--config", cfg], aliases=ALIASES)
    assert train.beta == 0.1 and train.num_generations == 4 and model.train_vision is True
    _, train, _ = parse_config(ToyScriptArgs, ["--config", cfg, "--grpo_beta=0.2"], aliases=ALIASES)
    assert train.beta == 0.2  # the command line wins over the file, under either name
    _, train, _ = parse_config(ToyScriptArgs, ["--config", cfg, "--beta", "0.3"], aliases=ALIASES)
    assert train.beta == 0.3


def test_both_names_for_one_setting_fail(tmp_path):
    cfg = write_yaml(tmp_path, {"grpo_beta": 0.1, "beta": 0.3, "output_dir": str(tmp_path / "o")})
    with pytest.raises(ValueError, match="grpo_beta=0.1 and beta=0.3"):
        parse_config(ToyScriptArgs, ["--config", cfg], aliases=ALIASES)
    cfg = write_yaml(tmp_path, {"output_dir": str(tmp_path / "o")})
    with pytest.raises(ValueError, match="--grpo_beta and --beta"):
        parse_config(ToyScriptArgs, ["--config", cfg, "--grpo_beta", "0.1", "--beta", "0.2"], aliases=ALIASES)


@dataclass
class SectionArgs:
    solution_start: str = field(default="<S>", metadata={"help": "delimiter"})
    formatting_reward: float = field(default=1.0, metadata={"help": "amount"})


SECTION_ALIASES = {"reward.solution_start": "solution_start", "reward.formatting_reward": "formatting_reward"}


def test_nested_section_and_dotted_names_of_an_original_config(tmp_path):
    cfg = write_yaml(
        tmp_path,
        {
            "reward": {"solution_start": "<answer>", "formatting_reward": 0.5},
            "generation_kwargs": {"top_k": 5},  # a mapping that is a real field stays a mapping
            "output_dir": str(tmp_path / "o"),
        },
    )
    script, train, _ = parse_config(SectionArgs, ["--config", cfg], aliases=SECTION_ALIASES)
    assert (script.solution_start, script.formatting_reward) == ("<answer>", 0.5)
    assert train.generation_kwargs == {"top_k": 5}
    script, _, _ = parse_config(SectionArgs, ["--config", cfg, "--reward.solution_start", "<sol>"], SECTION_ALIASES)
    assert script.solution_start == "<sol>"  # the command line still wins, under the dotted name
    dotted = write_yaml(tmp_path, {"reward.formatting_reward": 2.0, "output_dir": str(tmp_path / "o")})
    script, _, _ = parse_config(SectionArgs, ["--config", dotted], aliases=SECTION_ALIASES)
    assert script.formatting_reward == 2.0


def test_a_section_with_an_unknown_key_is_an_error(tmp_path):
    cfg = write_yaml(tmp_path, {"reward": {"solution_start": "<a>", "typo_key": 1}, "output_dir": str(tmp_path / "o")})
    with pytest.raises(ValueError, match="reward"):
        parse_config(SectionArgs, ["--config", cfg], aliases=SECTION_ALIASES)


# ------------------------------------------------------------------ issue 16: one vocabulary, the old names as aliases


@dataclass
class CanonicalArgs:
    dataset_name: str = field(default="train.jsonl", metadata={"help": "data"})
    eval_dataset_name: str | None = field(default=None, metadata={"help": "held-out data"})
    dataset_train_split: str = field(default="train", metadata={"help": "split"})
    max_train_samples: int | None = field(default=None, metadata={"range": (1, None), "help": "first N rows"})


def test_common_aliases_land_on_the_canonical_fields(tmp_path):
    old = {"train_file": "a.jsonl", "eval_file": "e.jsonl", "dataset_split": "testmini", "max_samples": 5}
    script, _, _ = parse_config(
        CanonicalArgs, ["--config", write_yaml(tmp_path, {**old, "output_dir": str(tmp_path / "o")})]
    )
    assert (script.dataset_name, script.eval_dataset_name, script.dataset_train_split, script.max_train_samples) == (
        "a.jsonl",
        "e.jsonl",
        "testmini",
        5,
    )
    cfg = write_yaml(tmp_path, {"dataset": "owner/name", "splits": "test_real", "output_dir": str(tmp_path / "o")})
    script, _, _ = parse_config(CanonicalArgs, ["--config", cfg, "--max_samples", "2", "--eval_file=x.jsonl"])
    assert (script.dataset_name, script.dataset_train_split, script.max_train_samples) == ("owner/name", "test_real", 2)
    assert script.eval_dataset_name == "x.jsonl"
    # The command line wins over the file under either name, and the range check sees the canonical field.
    script, _, _ = parse_config(CanonicalArgs, ["--config", cfg, "--dataset_name", "cli.jsonl"])
    assert script.dataset_name == "cli.jsonl"
    with pytest.raises(ValueError, match="--max_train_samples 0: must be >= 1"):
        parse_config(CanonicalArgs, ["--config", cfg, "--max_samples", "0"])


def test_common_aliases_only_for_fields_the_recipe_has(tmp_path):
    # ToyScriptArgs has no dataset_name: `dataset` is an unknown key there, with the usual hint, not a silent alias.
    cfg = write_yaml(tmp_path, {"dataset": "x.jsonl", "output_dir": str(tmp_path / "o")})
    with pytest.raises(ValueError, match="unknown key dataset in config file .*did you mean"):
        parse_config(ToyScriptArgs, ["--config", cfg])
    # and a field that still has an old name keeps it: train_file is ToyScriptArgs' own field.
    script, _, _ = parse_config(
        ToyScriptArgs, ["--config", write_yaml(tmp_path, {"train_file": "t", "output_dir": str(tmp_path / "o")})]
    )
    assert script.train_file == "t"
    assert script_aliases(ToyScriptArgs) == {}
    assert script_aliases(CanonicalArgs, {"grpo_beta": "beta"}) == {**COMMON_ALIASES, "grpo_beta": "beta"}


def test_two_names_of_one_field_with_different_values_fail(tmp_path):
    cfg = write_yaml(tmp_path, {"train_file": "a", "dataset_name": "b", "output_dir": str(tmp_path / "o")})
    with pytest.raises(ValueError, match="train_file='a' and dataset_name='b' set the same thing"):
        parse_config(CanonicalArgs, ["--config", cfg])
    cfg = write_yaml(tmp_path, {"train_file": "a", "dataset": "b", "output_dir": str(tmp_path / "o")})
    with pytest.raises(ValueError, match="dataset='b' and train_file='a' set the same thing"):
        parse_config(CanonicalArgs, ["--config", cfg])
    cfg = write_yaml(tmp_path, {"train_file": "a", "dataset_name": "a", "output_dir": str(tmp_path / "o")})
    assert parse_config(CanonicalArgs, ["--config", cfg])[0].dataset_name == "a"  # the same value twice: no conflict
    cfg = write_yaml(tmp_path, {"output_dir": str(tmp_path / "o")})
    with pytest.raises(ValueError, match="--train_file and --dataset_name set the same thing"):
        parse_config(CanonicalArgs, ["--config", cfg, "--train_file", "a", "--dataset_name", "b"])
    with pytest.raises(ValueError, match=r"--train_file and --dataset set the same thing \(--dataset_name\)"):
        parse_config(CanonicalArgs, ["--config", cfg, "--train_file", "a", "--dataset=b"])


def test_a_typo_of_a_canonical_key_is_pointed_at_it(tmp_path):
    cfg = write_yaml(tmp_path, {"dataset_nme": "x", "output_dir": str(tmp_path / "o")})
    with pytest.raises(ValueError, match="unknown key dataset_nme .*did you mean dataset_name"):
        parse_config(CanonicalArgs, ["--config", cfg])


def test_a_run_recorded_with_old_key_names_reads_with_the_canonical_ones(tmp_path):
    """run_config.yaml of a run trained before the rename: every evaluate.py reads it under the canonical names."""
    old = {"train_file": "t.jsonl", "eval_file": "e.jsonl", "max_samples": 48, "dataset_split": "testmini", "seed": 1}
    (tmp_path / RESOLVED_CONFIG_NAME).write_text(yaml.safe_dump({"ScriptArguments": old, "GRPOConfig": {"seed": 2}}))
    loaded = load_resolved_config(tmp_path)
    assert loaded["ScriptArguments"] == {
        "dataset_name": "t.jsonl",
        "eval_dataset_name": "e.jsonl",
        "max_train_samples": 48,
        "dataset_train_split": "testmini",
        "seed": 1,
    }
    assert loaded["GRPOConfig"] == {"seed": 2}
    # A canonical key already recorded wins over an old one.
    assert canonical_keys({"dataset": "old", "dataset_name": "new", "splits": ["a"]}) == {
        "dataset_name": "new",
        "dataset_train_split": ["a"],
    }
