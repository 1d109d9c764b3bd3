"""One config path for every recipe: a YAML file read by `trl.TrlParser`, where every field is also a `--flag`.

The parser is built over three dataclasses: the recipe's own script arguments, TRL's `GRPOConfig` and
`VLMModelConfig` (TRL's `ModelConfig` plus the vision-language switches TRL lacks). `TrlParser` already rejects
unknown YAML keys and lets the command line override the file; this module only adds the resolved-config record.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml
from trl import GRPOConfig, ModelConfig, TrlParser

RESOLVED_CONFIG_NAME = "run_config.yaml"

T = TypeVar("T")


@dataclass
class VLMModelConfig(ModelConfig):
    """TRL's model/LoRA arguments plus what a vision-language model needs on top."""

    min_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Lower bound on pixels per image after the processor's resize (Qwen families). "
            "None keeps the checkpoint's own processor setting."
        },
    )
    max_pixels: int | None = field(
        default=None,
        metadata={
            "help": "Upper bound on pixels per image after the processor's resize (Qwen families); the main "
            "memory knob for vision tokens. None keeps the checkpoint's own processor setting."
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


def parse_config(script_args_cls: type[T], args: list[str] | None = None) -> tuple[T, GRPOConfig, VLMModelConfig]:
    """Parse `--config file.yaml` plus CLI flags (sys.argv when args is None) into the three dataclasses."""
    parser = TrlParser((script_args_cls, GRPOConfig, VLMModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(args=args)
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
        out[type(cfg).__name__] = section
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
    text = yaml.safe_dump(config_as_dict(*configs), sort_keys=False)
    if path.exists() and path.read_text() != text:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
        path.rename(out_dir / f"run_config.{stamp}.yaml")
    path.write_text(text)
    return path


def load_resolved_config(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read back what `save_resolved_config` wrote (used by every recipe's evaluate.py)."""
    path = Path(run_dir) / RESOLVED_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} the output_dir of a training run?")
    return yaml.safe_load(path.read_text())


def apply_config_aliases(source: Any, aliases: dict[str, tuple[Any, str]]) -> list[str]:
    """Let a recipe keep an original project's config names: `aliases` maps a field of `source` (None = not given)
    to the (dataclass instance, field) that does the job. A target the user also set to something else is an error,
    since one of the two would be silently ignored. Returns what was applied, for the log."""
    applied = []
    for alias, (target, name) in aliases.items():
        value = getattr(source, alias)
        if value is None:
            continue
        current = getattr(target, name)
        default = next(f.default for f in dataclasses.fields(target) if f.name == name)
        if current != default and current != value:
            raise ValueError(f"{alias}={value!r} and {name}={current!r} set the same thing; keep one of them")
        setattr(target, name, value)
        applied.append(f"{alias} -> {type(target).__name__}.{name} = {value!r}")
    return applied
