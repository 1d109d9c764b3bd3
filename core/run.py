"""Start-up and wrap-up shared by every recipe's train.py, so each train.py stays parse → data → rewards →
trainer → train → save."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import transformers
from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig, GRPOTrainer

from core.config import RESOLVED_CONFIG_NAME, save_resolved_config

logger = logging.getLogger("core")


def setup_logging(training_args: GRPOConfig) -> None:
    level = logging.INFO if training_args.process_index == 0 else logging.WARNING
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level, stream=sys.stdout
    )
    transformers.utils.logging.set_verbosity(level)


def resolve_resume(training_args: GRPOConfig) -> str | None:
    """`--resume_from_checkpoint true|last` means the newest checkpoint in output_dir; a path is taken as given."""
    value = training_args.resume_from_checkpoint
    if value in (None, "", False, "false", "False"):
        return None
    if str(value).lower() in ("true", "last"):
        last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        if last is None:
            raise FileNotFoundError(f"--resume_from_checkpoint {value}: no checkpoint-* in {training_args.output_dir}")
        return last
    if not os.path.isdir(value):
        raise FileNotFoundError(f"--resume_from_checkpoint {value}: no such checkpoint folder")
    return value


def setup_run(training_args: GRPOConfig, *configs: Any) -> str | None:
    """Logging, a guard against training over an earlier run's checkpoints, and the resolved-config record.

    Returns the checkpoint to resume from (or None).
    """
    setup_logging(training_args)
    resume = resolve_resume(training_args)
    out = Path(training_args.output_dir)
    if resume is None and out.is_dir() and any(out.glob("checkpoint-*")):
        raise FileExistsError(
            f"{out} already holds checkpoints from an earlier run. Continue it with --resume_from_checkpoint true, "
            "or pass another --output_dir; nothing was overwritten."
        )
    if training_args.process_index == 0:
        path = save_resolved_config(out, *configs, training_args)
        logger.info("resolved config written to %s", path)
    return resume


def train_and_save(trainer: GRPOTrainer, resume: str | None, final_dir: str | Path | None = None) -> dict[str, float]:
    """Train (or resume), then save weights/adapter + processor, metrics and the trainer state.

    The model goes to output_dir, or to `final_dir` (relative paths inside output_dir) with a copy of the resolved
    config, so that folder alone is enough to load the trained model back.
    """
    if resume:
        logger.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    out = Path(trainer.args.output_dir)
    target = out if final_dir is None else out / final_dir
    trainer.save_model(str(target))
    if target != out and trainer.accelerator.is_main_process and (out / RESOLVED_CONFIG_NAME).is_file():
        shutil.copyfile(out / RESOLVED_CONFIG_NAME, target / RESOLVED_CONFIG_NAME)
    metrics = dict(result.metrics)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if trainer.accelerator.is_main_process:
        logger.info("run saved to %s (model: %s)", out, target)
    return metrics


def resolve_dataset_source(name: str, recipe_dir: str | Path) -> str:
    """A dataset named by a local path (see `resolve_input_path`) or by a hub id: the resolved path when that path
    exists, else the name unchanged for `datasets.load_dataset`."""
    local = resolve_input_path(name, recipe_dir)
    return local if Path(local).exists() else name


def resolve_input_path(path: str | None, recipe_dir: str | Path) -> str | None:
    """A data path as the user meant it: absolute or relative to the working directory if it exists there,
    else relative to the recipe folder, so a recipe's config can name its own `data/` and a copied recipe folder
    reads its own copy."""
    if not path:
        return path
    candidate = Path(path)
    resolved = candidate if candidate.is_absolute() or candidate.exists() else Path(recipe_dir) / candidate
    resolved = resolved.resolve()
    logger.info("input %s -> %s", path, resolved)
    return str(resolved)
