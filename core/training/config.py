"""One config path for every recipe: a YAML file read by `trl.TrlParser`, where every field is also a `--flag`.

The parser is built over three dataclasses: the recipe's own script arguments, `VLMGRPOConfig` (TRL's `GRPOConfig`
plus run guards) and `VLMModelConfig` (TRL's `ModelConfig` plus the vision-language switches TRL lacks). `TrlParser`
already rejects unknown YAML keys and lets the command line override the file; this module adds the
resolved-config record, "did you mean" for an unknown key or flag, and range checks: a dataclass field (the
recipes' ScriptArguments included) declares its allowed values with `metadata={"range": (low, high)}` (inclusive,
None for no bound) or a `Range`, and `parse_config` refuses a value outside it before anything loads.
`INHERITED_RANGES` does the same for the fields TRL and transformers own. Errors are `core.errors.ConfigError`,
shown without a traceback (core.errors).

One vocabulary across recipes: the same setting has the same key everywhere (`dataset_name`, `dataset_train_split`,
`eval_dataset_name`, `max_train_samples`, as in TRL's own scripts). The names recipes used before stay accepted
through `COMMON_ALIASES`, which `parse_config` applies to every recipe whose ScriptArguments has the target field, on
top of the recipe's own `ALIASES` (an original project's names); `load_resolved_config` maps them when it reads a
run_config.yaml written before the rename, so such runs still evaluate.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import os
import sys
import time
import types
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml
from trl import GRPOConfig, ModelConfig, TrlParser

from core.errors import ConfigError, install_error_hook
from core.ranges import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, Range
from core.training.model_ids import is_tiny

RESOLVED_CONFIG_NAME = "run_config.yaml"
SCRIPT_SECTION = "ScriptArguments"  # run_config.yaml's section of a recipe's own arguments

# Key names the recipes used before they shared one vocabulary -> the canonical field. Applied to a recipe only where
# its ScriptArguments has the canonical field (and no field of the old name), so each old key means what it meant.
COMMON_ALIASES: dict[str, str] = {
    "train_file": "dataset_name",  # grounding, video, image2code
    "dataset": "dataset_name",  # image_edit, mmmg
    "eval_file": "eval_dataset_name",
    "dataset_split": "dataset_train_split",  # mathvista
    "splits": "dataset_train_split",  # image_edit (a list of splits)
    "max_samples": "max_train_samples",  # mathvista
}

T = TypeVar("T")


# Fields of TRL's GRPOConfig / ModelConfig (and transformers' TrainingArguments) users set in the recipes' configs.
INHERITED_RANGES: dict[str, Range] = {
    "learning_rate": NON_NEGATIVE,
    "num_train_epochs": POSITIVE,
    "max_steps": Range(-1, None),  # -1: use num_train_epochs
    "per_device_train_batch_size": AT_LEAST_ONE,
    "per_device_eval_batch_size": AT_LEAST_ONE,
    "gradient_accumulation_steps": AT_LEAST_ONE,
    "num_generations": Range(2, None),  # GRPO's advantage compares completions within a group
    "num_generations_eval": AT_LEAST_ONE,
    "max_completion_length": AT_LEAST_ONE,
    "temperature": POSITIVE,
    "top_p": Range(0, 1, low_open=True),
    "top_k": NON_NEGATIVE,
    "min_p": FRACTION,
    "repetition_penalty": POSITIVE,
    "beta": NON_NEGATIVE,
    "epsilon": NON_NEGATIVE,
    "epsilon_high": NON_NEGATIVE,
    "num_iterations": AT_LEAST_ONE,
    "steps_per_generation": AT_LEAST_ONE,
    "generation_batch_size": AT_LEAST_ONE,
    "logging_steps": POSITIVE,
    "save_steps": POSITIVE,
    "eval_steps": POSITIVE,
    "save_total_limit": AT_LEAST_ONE,
    "warmup_steps": NON_NEGATIVE,
    "weight_decay": NON_NEGATIVE,
    "max_grad_norm": NON_NEGATIVE,
    "seed": NON_NEGATIVE,
    "dataloader_num_workers": NON_NEGATIVE,
    "adam_beta1": Range(0, 1, high_open=True),
    "adam_beta2": Range(0, 1, high_open=True),
    "adam_epsilon": POSITIVE,
    "lora_r": AT_LEAST_ONE,
    "lora_alpha": POSITIVE,
    "lora_dropout": Range(0, 1, high_open=True),
    "vllm_gpu_memory_utilization": Range(0, 1, low_open=True),
    "vllm_tensor_parallel_size": AT_LEAST_ONE,
}


def field_range(f: dataclasses.Field) -> Range | None:
    """The field's declared `range` metadata (a `Range` or an inclusive (low, high) tuple), else INHERITED_RANGES."""
    spec = f.metadata.get("range") if f.metadata else None
    if spec is None:
        return INHERITED_RANGES.get(f.name)
    return spec if isinstance(spec, Range) else Range(*spec)


def range_problems(config: Any) -> list[str]:
    """One line per numeric field of the dataclass `config` whose value (or any item of a list value) is outside
    its range. None is always allowed: it means "the default"."""
    problems = []
    for f in dataclasses.fields(config):
        allowed = field_range(f)
        value = getattr(config, f.name, None)
        if allowed is None or value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        bad = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v not in allowed]
        if bad:
            shown = value if isinstance(value, (list, tuple)) else bad[0]
            problems.append(f"--{f.name} {shown}: must be {allowed.describe()}")
    return problems


def check_ranges(*configs: Any) -> None:
    """Raise ConfigError listing every out-of-range value of the parsed dataclasses."""
    problems = [p for cfg in configs for p in range_problems(cfg)]
    if problems:
        raise ConfigError(
            "out-of-range value(s) (set in the config file or on the command line):\n  "
            + "\n  ".join(problems)
            + "\nSet each to a value within its range."
        )


def unknown_key_message(unknown: list[str], known: list[str], where: str, flags: bool = False) -> str:
    """`unknown key 'x' in where; did you mean 'y'?` per unknown key (difflib's closest known key); with `flags`,
    `unknown flag --x ...; did you mean --y?`."""
    noun, prefix = ("flag", "--") if flags else ("key", "")
    lines = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean {prefix}{close[0]}?" if close else f" (no known {noun} is close; see --help)"
        lines.append(f"unknown {noun} {prefix}{key} in {where}{hint}")
    return "\n".join(lines)


@dataclass
class VLMModelConfig(ModelConfig):
    """TRL's model/LoRA arguments plus what a vision-language model needs on top."""

    min_pixels: int | None = field(
        default=None,
        metadata={
            "range": AT_LEAST_ONE,
            "help": "Lower bound on pixels per image after the processor's resize (Qwen families). "
            "None keeps the checkpoint's own processor setting.",
        },
    )
    max_pixels: int | None = field(
        default=None,
        metadata={
            "range": AT_LEAST_ONE,
            "help": "Upper bound on pixels per image after the processor's resize (Qwen families); the main "
            "memory knob for vision tokens. None keeps the checkpoint's own processor setting.",
        },
    )
    train_language: bool = field(
        default=True,
        metadata={
            "help": "Train the language model (LoRA adapters on its linear layers, or all its weights when "
            "use_peft is false)."
        },
    )
    train_vision: bool = field(
        default=False,
        metadata={"help": "Also train the vision tower (LoRA on its linear layers, or full weights)."},
    )
    train_projector: bool = field(
        default=False,
        metadata={
            "help": "Also train the vision-language merger/projector (fully: it is small, and Gemma-3's "
            "projector is a bare weight that LoRA cannot wrap)."
        },
    )
    warm_start_steps: int = field(
        default=0,
        metadata={
            "range": NON_NEGATIVE,
            "help": "Tiny test models only (smoke configs): supervised steps on the first 64 training rows' "
            "reference answers before GRPO, so a random tiny model writes the answer format and its completions "
            "differ in what the reward judges (reward variance within groups, a non-zero gradient). See "
            "core/training/warm_start.py. 0: off.",
        },
    )


@dataclass
class VLMGRPOConfig(GRPOConfig):
    """TRL's `GRPOConfig` plus the run guards TRL lacks. Saved as the `GRPOConfig` section of run_config.yaml."""

    max_unscored_steps: int = field(
        default=5,
        metadata={
            "range": NON_NEGATIVE,
            "help": "Stop training with an error after this many consecutive generation batches (optimizer steps "
            "with the default steps_per_generation) in which no completion could be scored: every reward returned "
            "None, e.g. the judge is down. Such steps have zero advantage and teach nothing. 0 disables the check.",
        },
    )
    reuse_vision: bool = field(
        default=True,
        metadata={
            "help": "Decode, process and encode each unique image or clip once per generation batch instead of once "
            "per completion and forward (core.training.vision_reuse). The vision-tower features are reused only "
            "while no vision or projector parameter trains; log-probs equal TRL's path. false: TRL's path as is."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in an output_dir that already holds a run (checkpoints or a finished run): its "
            "contents are deleted before training, except training.log, which keeps appending. Without it such a "
            "folder is refused and left untouched. (transformers' former TrainingArguments flag, gone in 5.x.)"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_unscored_steps < 0:
            raise ValueError(f"max_unscored_steps must be >= 0 (0 disables the check), got {self.max_unscored_steps}")


class _AliasingTrlParser(TrlParser):
    """TrlParser that also accepts an original project's key names, renamed before any dataclass is built (so that
    values GRPOConfig derives in __post_init__, such as the generation batch size, see the final numbers)."""

    def __init__(self, dataclass_types: tuple, aliases: dict[str, str]) -> None:
        # No prefix matching: `--sandbox_wall 5` must be "did you mean --sandbox_wall_s", not silently that flag.
        super().__init__(dataclass_types, allow_abbrev=False)
        self.aliases = aliases

    def set_defaults_with_config(self, **kwargs: Any) -> list[str]:
        return super().set_defaults_with_config(**rename_aliases(kwargs, self.aliases))

    @staticmethod
    def _parse_dataclass_field(parser: argparse.ArgumentParser, f: dataclasses.Field) -> None:
        """HfArgumentParser hands every metadata key to argparse, which knows no `range`: drop it there (parse_config
        checks it) and show it in --help instead."""
        if f.metadata and "range" in f.metadata:
            metadata = {k: v for k, v in f.metadata.items() if k != "range"}
            metadata["help"] = f"{metadata.get('help', '')} Allowed: {field_range(f)}.".strip()
            f = copy.copy(f)
            f.metadata = types.MappingProxyType(metadata)
        TrlParser._parse_dataclass_field(parser, f)

    def error(self, message: str) -> None:  # type: ignore[override]
        """argparse's usage errors (a bad value, a missing required flag) as a ConfigError: one message, shown like
        every other start-up error, instead of the usage of several hundred flags on every rank."""
        raise ConfigError(f"{message} (see --help)")

    def known_keys(self) -> list[str]:
        """Every key the config file and the command line accept (aliases included)."""
        return sorted({a.dest for a in self._actions if a.dest != "help"} | set(self.aliases))


def flatten_aliased_sections(config: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
    """`reward: {solution_start: X}` -> `reward.solution_start: X` when that dotted name is an alias, so an original
    project's nested YAML sections read as flat fields. Other mappings (e.g. generation_kwargs) are left alone."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        dotted = {f"{key}.{sub}": v for sub, v in value.items()} if isinstance(value, dict) else {}
        if dotted and all(name in aliases for name in dotted):
            out.update(dotted)
        else:
            out[key] = value
    return out


def script_aliases(script_args_cls: type, aliases: dict[str, str] | None = None) -> dict[str, str]:
    """Every old name `parse_config` accepts for `script_args_cls`: the `COMMON_ALIASES` whose canonical field the
    class has (and whose old name it does not), then the recipe's own `aliases` (which win on a clash)."""
    names = {f.name for f in dataclasses.fields(script_args_cls)}
    common = {old: new for old, new in COMMON_ALIASES.items() if new in names and old not in names}
    return {**common, **(aliases or {})}


def canonical_keys(section: dict[str, Any]) -> dict[str, Any]:
    """A recorded ScriptArguments section with the `COMMON_ALIASES` old names mapped to the canonical ones, so a run
    trained before the rename (run_config.yaml with `train_file`, `dataset`, `max_samples`, ...) reads like a new one.
    A canonical key already recorded wins over an old one."""
    out = dict(section)
    for old, new in COMMON_ALIASES.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    return out


def rename_aliases(config: dict[str, Any], aliases: dict[str, str]) -> dict[str, Any]:
    """Config keys with original names renamed; one file setting two names of one field to different values is an
    error."""
    out = flatten_aliased_sections(config, aliases)
    set_by: dict[str, str] = {}  # canonical field -> the old name that set it
    for old, new in aliases.items():
        if old not in out:
            continue
        value = out.pop(old)
        if new in out and out[new] != value:
            other = set_by.get(new, new)
            raise ValueError(f"{old}={value!r} and {other}={out[new]!r} set the same thing; keep one of them")
        out[new] = value
        set_by[new] = old
    return out


def rename_alias_flags(args: list[str], aliases: dict[str, str]) -> list[str]:
    """`--old v` / `--old=v` -> `--new ...`; giving two flags of one field is an error (argparse would keep one
    silently)."""
    renamed = []
    given: dict[str, str] = {}  # canonical field -> the old flag that set it
    for arg in args:
        name, eq, value = arg.partition("=")
        if name.startswith("--") and name[2:] in aliases:
            new = aliases[name[2:]]
            if any(a == f"--{new}" or a.startswith(f"--{new}=") for a in args):
                raise ValueError(f"{name} and --{new} set the same thing; keep one of them")
            if given.setdefault(new, name) != name:
                raise ValueError(f"{given[new]} and {name} set the same thing (--{new}); keep one of them")
            arg = f"--{new}{eq}{value}"
        renamed.append(arg)
    return renamed


def parse_config(
    script_args_cls: type[T], args: list[str] | None = None, aliases: dict[str, str] | None = None
) -> tuple[T, VLMGRPOConfig, VLMModelConfig]:
    """Parse `--config file.yaml` plus CLI flags (sys.argv when args is None) into the three dataclasses.

    `aliases` maps an original project's key names onto the fields that do the job (e.g. grpo_beta -> beta), in the
    YAML and on the command line alike; the command line still wins over the file. A dotted alias such as
    `reward.solution_start` also accepts the nested YAML form `reward: {solution_start: ...}`. The `COMMON_ALIASES`
    of the fields `script_args_cls` has are added (`script_aliases`), so `train_file:` still sets `dataset_name`.
    """
    install_error_hook()  # every train.py calls this first: its start-up errors print as messages
    aliases = script_aliases(script_args_cls, aliases)
    args = rename_alias_flags(list(sys.argv[1:] if args is None else args), aliases)
    parser = _AliasingTrlParser((script_args_cls, VLMGRPOConfig, VLMModelConfig), aliases)
    config_path = args[args.index("--config") + 1] if "--config" in args[:-1] else None
    script_args, training_args, model_args, from_file, from_cli = parser.parse_args_and_config(
        args=args, return_remaining_strings=True, separate_remaining_strings=True
    )
    unknown = []
    if from_file:
        keys = [s[2:] for s in from_file[::2]]  # TrlParser returns them as ["--key", "value", ...]
        unknown.append(unknown_key_message(keys, parser.known_keys(), f"config file {config_path}"))
    if from_cli:
        flags = [s.split("=", 1)[0][2:] for s in from_cli if s.startswith("--")]
        if flags:
            unknown.append(unknown_key_message(flags, parser.known_keys(), "the command line", flags=True))
        else:
            unknown.append(f"unexpected argument(s) on the command line: {' '.join(from_cli)}")
    if unknown:
        raise ConfigError("\n".join(unknown))
    check_ranges(script_args, training_args, model_args)
    if model_args.warm_start_steps and not is_tiny(model_args.model_name_or_path or ""):
        raise ConfigError(
            f"--warm_start_steps {model_args.warm_start_steps} is for tiny test models only (got "
            f"{model_args.model_name_or_path!r}); set --warm_start_steps 0 (a real model needs real SFT)"
        )
    return script_args, training_args, model_args


def config_as_dict(*configs: Any) -> dict[str, dict[str, Any]]:
    """Plain, YAML-safe view of the parsed dataclasses, one section per dataclass."""
    out: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        section = {}
        for f in dataclasses.fields(cfg):
            if not f.init:
                continue
            section[f.name] = _plain(getattr(cfg, f.name))
        # One section name for TRL's config and its subclass, so every reader of run_config.yaml finds "GRPOConfig".
        out["GRPOConfig" if isinstance(cfg, GRPOConfig) else type(cfg).__name__] = section
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):  # before str: many TrainingArguments enums are also str
        return _plain(value.value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    return str(value)


def save_resolved_config(output_dir: str | os.PathLike, *configs: Any) -> Path:
    """Write every resolved field next to the run's outputs, so the run can be reproduced and evaluated.

    A resumed run with different settings keeps the earlier record under a timestamped name instead of
    overwriting it.
    """
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESOLVED_CONFIG_NAME
    # Run.recipe_dir: the folder of the script that trained (train.py); `vlm-grpo eval RUN_DIR` runs its evaluate.py.
    run = {"Run": {"recipe_dir": str(Path(sys.argv[0]).resolve().parent)}}
    text = yaml.safe_dump({**run, **config_as_dict(*configs)}, sort_keys=False)
    if path.exists() and path.read_text() != text:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
        path.rename(out_dir / f"run_config.{stamp}.yaml")
    path.write_text(text)
    return path


def load_resolved_config(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read back what `save_resolved_config` wrote (used by every recipe's evaluate.py), its ScriptArguments under
    the canonical key names (`canonical_keys`) whatever names the run was recorded with."""
    path = Path(run_dir) / RESOLVED_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} the output_dir of a training run?")
    config = yaml.safe_load(path.read_text())
    if isinstance(config.get(SCRIPT_SECTION), dict):
        config[SCRIPT_SECTION] = canonical_keys(config[SCRIPT_SECTION])
    return config
