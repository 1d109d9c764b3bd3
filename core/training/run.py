"""Start-up and wrap-up shared by every recipe's train.py, so each train.py stays parse → data → rewards →
trainer → train → save."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import transformers
from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig, GRPOTrainer

from core.data import records as core_data
from core.training.config import RESOLVED_CONFIG_NAME, save_resolved_config

logger = logging.getLogger("core")


def setup_logging(training_args: GRPOConfig) -> None:
    """core's own messages at INFO on rank 0 (WARNING on the others); transformers at WARNING.

    transformers' INFO stream is mostly configuration, processor and tokenizer dumps: hundreds of lines before the
    first step that bury the progress bar, the rewards per step and where the results went. TrainingArguments'
    `--log_level info` (`--log_level_replica` for the other ranks) brings them back, as in any transformers script.
    """
    level = logging.INFO if training_args.process_index == 0 else logging.WARNING
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level, stream=sys.stdout
    )
    transformers.utils.logging.set_verbosity_warning()
    # What Trainer.__init__ does too, only earlier, so the model and processor loads obey the user's --log_level.
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())


def _wants_resume(training_args: GRPOConfig) -> bool:
    return training_args.resume_from_checkpoint not in (None, "", False, "false", "False")


def resolve_resume(training_args: GRPOConfig) -> str | None:
    """`--resume_from_checkpoint true|last` means the newest checkpoint in output_dir; a path is taken as given."""
    value = training_args.resume_from_checkpoint
    if not _wants_resume(training_args):
        return None
    if str(value).lower() in ("true", "last"):
        last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        if last is None:
            finished = (
                " (it holds a finished run saved without checkpoints, which cannot be continued)"
                if finished_run_state(training_args.output_dir) is not None
                else ""
            )
            raise FileNotFoundError(
                f"--resume_from_checkpoint {value}: no checkpoint-* in {training_args.output_dir}{finished}"
            )
        return last
    if not os.path.isdir(value):
        raise FileNotFoundError(f"--resume_from_checkpoint {value}: no such checkpoint folder")
    return value


def resolve_exact_resume(training_args: GRPOConfig) -> str | None:
    """`resolve_resume`, refusing a checkpoint that is not on a generation boundary (`check_resume_checkpoint`)."""
    checkpoint = resolve_resume(training_args)
    if checkpoint is not None:
        check_resume_checkpoint(checkpoint, training_args)
    return checkpoint


FINISHED_RUN_FILES = ("trainer_state.json", "train_results.json")
"""What `train_and_save` writes at the top of output_dir only once training has ended (a checkpoint keeps its own
trainer_state.json inside checkpoint-N): either one marks a finished run."""

KEPT_ON_OVERWRITE = ("training.log",)
"""Left in place by --overwrite_output_dir: the launcher is already appending this run's console to it."""


def finished_run_state(output_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The trainer state of the finished run in output_dir ({} when only train_results.json is left, or the state
    is unreadable), or None when output_dir holds no finished run."""
    out = Path(output_dir)
    if not any((out / name).is_file() for name in FINISHED_RUN_FILES):
        return None
    try:
        return json.loads((out / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return {}


def finished_run_is_complete(state: dict[str, Any], training_args: GRPOConfig) -> bool:
    """Whether resuming this finished run would train 0 steps: it already reached max_steps (or num_train_epochs when
    max_steps is not set). Asking for more steps is a real continuation, not a no-op."""
    if training_args.max_steps > 0:
        return int(state.get("global_step", 0)) >= training_args.max_steps
    return float(state.get("epoch", 0)) >= training_args.num_train_epochs


def _has_checkpoints(out: Path) -> bool:
    return out.is_dir() and any(p.is_dir() for p in out.glob("checkpoint-*"))


def _finished_summary(out: Path, state: dict[str, Any]) -> str:
    step = state.get("global_step")
    at = f"trained to step {step}" if step is not None else "trained"
    return f"{out} already holds a finished run ({at}; its model, trainer_state.json and train_results.json)"


def earlier_run_problem(training_args: GRPOConfig) -> str | None:
    """Why a new (not resumed) run must not start in output_dir, or None: it holds a finished run, or checkpoints of
    an interrupted one. Both messages say nothing was touched and how to keep, continue or replace that run."""
    out = Path(training_args.output_dir)
    state = finished_run_state(out)
    replace = "or --overwrite_output_dir true to delete it and start over"
    if state is not None:
        more = (
            "; to train it further, raise --max_steps and pass --resume_from_checkpoint true"
            if _has_checkpoints(out)
            else ""
        )
        return (
            f"{_finished_summary(out, state)}. Nothing was touched. Pass another --output_dir to keep it, "
            f"{replace}{more}."
        )
    if _has_checkpoints(out):
        return (
            f"{out} already holds checkpoints from an earlier run. Continue it with --resume_from_checkpoint true, "
            f"pass another --output_dir, {replace}; nothing was overwritten."
        )
    return None


_PENDING_OVERWRITE: dict[Path, tuple[dict[str, tuple[int, int]], Callable[[], Path]]] = {}
"""output_dir -> (its entries when setup_run ran: name -> (inode, mtime_ns); the deferred run_config.yaml write)."""


def _entries(out: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in out.iterdir() if p.name not in KEPT_ON_OVERWRITE}


def clear_output_dir(out: Path, entries: dict[str, tuple[int, int]] | None = None) -> None:
    """--overwrite_output_dir: delete the earlier run in `out` (all but KEPT_ON_OVERWRITE), so neither its checkpoints
    (which `--resume_from_checkpoint true` would pick) nor its finished-run files outlive it. With `entries` (from
    `_entries` at start-up), only those still unchanged are deleted: what this run wrote since is kept."""
    removed = 0
    for path in out.iterdir():
        if path.name in KEPT_ON_OVERWRITE:
            continue
        if entries is not None and entries.get(path.name) != (path.lstat().st_ino, path.lstat().st_mtime_ns):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed += 1
    logger.warning("--overwrite_output_dir: deleted %d entries of the earlier run in %s", removed, out)


def finish_pending_overwrite(output_dir: str | Path) -> None:
    """The deletion `setup_run` deferred for --overwrite_output_dir, then this run's run_config.yaml. Runs when
    training starts (`train_and_save`), after every data, reward and model check passed, so a refused start never
    costs the earlier run."""
    pending = _PENDING_OVERWRITE.pop(Path(output_dir).resolve(), None)
    if pending is None:
        return
    entries, write_config = pending
    clear_output_dir(Path(output_dir), entries)
    logger.info("resolved config written to %s", write_config())


def stop_if_already_finished(training_args: GRPOConfig) -> None:
    """`--resume_from_checkpoint` on a run that has already reached its steps: say so and exit 0 before anything is
    written (Trainer would train 0 steps and rewrite the run's results, state and curve)."""
    out = Path(training_args.output_dir)
    state = finished_run_state(out)
    if not _wants_resume(training_args) or state is None or not finished_run_is_complete(state, training_args):
        return
    if training_args.process_index == 0:
        asked = (
            f"the {training_args.max_steps} steps asked for"
            if training_args.max_steps > 0
            else f"the {training_args.num_train_epochs:g} epochs asked for"
        )
        further = (
            "raise --max_steps and pass --resume_from_checkpoint true"
            if _has_checkpoints(out)
            else "it would need checkpoints, and it was saved without any"
        )
        logger.warning(
            "Nothing to resume: %s, reaching %s. No file was changed. To train it further, %s; to start over, pass "
            "--overwrite_output_dir true or another --output_dir.",
            _finished_summary(out, state),
            asked,
            further,
        )
    raise SystemExit(0)


def setup_run(training_args: GRPOConfig, *configs: Any) -> str | None:
    """Logging, the guards that keep an earlier run's results (see `earlier_run_problem`,
    `stop_if_already_finished`), and the resolved-config record. Every refusal happens before any file is written.

    Returns the checkpoint to resume from (or None).
    """
    setup_logging(training_args)
    check_save_steps(training_args)
    overwrite = bool(getattr(training_args, "overwrite_output_dir", False))
    if overwrite and _wants_resume(training_args):
        raise ValueError(
            "--overwrite_output_dir true deletes the earlier run and --resume_from_checkpoint continues it: pass "
            "only one of them."
        )
    stop_if_already_finished(training_args)
    resume = resolve_exact_resume(training_args)
    out = Path(training_args.output_dir)
    problem = earlier_run_problem(training_args) if resume is None else None
    if problem and not overwrite:
        raise FileExistsError(problem)
    if training_args.process_index == 0:
        if problem:  # deleted once training starts (finish_pending_overwrite): a start that fails keeps it
            write_config = partial(save_resolved_config, out, *configs, training_args)
            _PENDING_OVERWRITE[out.resolve()] = (_entries(out), write_config)
            logger.warning(
                "--overwrite_output_dir: the earlier run in %s is deleted when training starts, after the data, "
                "reward and model checks",
                out,
            )
        else:
            path = save_resolved_config(out, *configs, training_args)
            logger.info("resolved config written to %s", path)
    return resume


def generation_interval(training_args: GRPOConfig) -> float:
    """Optimizer steps between two of TRL's generations: TRL generates once every `steps_per_generation *
    num_iterations` micro-batches (GRPOTrainer._prepare_inputs) and steps the optimizer every
    `gradient_accumulation_steps` micro-batches."""
    micro = training_args.steps_per_generation * training_args.num_iterations
    return micro / training_args.gradient_accumulation_steps


def boundary_unit(training_args: GRPOConfig) -> int:
    """The smallest number of optimizer steps that ends on a generation boundary; every boundary is a multiple of it.

    A checkpoint is exact only there: TRL keeps the unused rest of a generation batch in memory (`_buffered_inputs`)
    and does not save it, and a resumed trainer restarts its micro-batch counter at 0, so a run resumed inside a
    generation batch regenerates at different steps and ends with different weights.
    """
    micro = training_args.steps_per_generation * training_args.num_iterations
    return micro // math.gcd(micro, training_args.gradient_accumulation_steps)


def _boundary_problem(what: str, steps: int, training_args: GRPOConfig) -> str:
    unit = boundary_unit(training_args)
    below, above = (steps // unit) * unit, (steps // unit + 1) * unit
    suggestion = f"{below} or {above}" if below else f"{above}"
    micro = training_args.steps_per_generation * training_args.num_iterations
    return (
        f"{what}={steps} puts a checkpoint inside a generation batch: TRL generates once every "
        f"steps_per_generation x num_iterations = {micro} micro-batches, i.e. every "
        f"{generation_interval(training_args):g} optimizer steps with gradient_accumulation_steps="
        f"{training_args.gradient_accumulation_steps}, and does not save the unused part of a generation batch, so a "
        f"run resumed from such a checkpoint regenerates at different steps and diverges. Use a {what} that is a "
        f"multiple of {unit} (e.g. --{what} {suggestion})"
        + (
            ", or set steps_per_generation equal to gradient_accumulation_steps."
            if training_args.num_iterations == 1
            else "."
        )
    )


def save_steps_problem(
    training_args: GRPOConfig, save_steps: float | None = None, max_steps: int | None = None
) -> str | None:
    """Why the checkpoints of this run could not be resumed exactly (see `boundary_unit`), or None.

    Checks every `save_steps` (default: the config's, when it is an absolute step count; a fraction is checked once the
    trainer knows it) and the final checkpoint that Trainer writes at `max_steps` (default: the config's, when set).
    """
    if str(getattr(training_args.save_strategy, "value", training_args.save_strategy)) != "steps":
        return None
    unit = boundary_unit(training_args)
    save_steps = training_args.save_steps if save_steps is None else save_steps
    if save_steps is not None and save_steps >= 1 and int(save_steps) % unit:
        return _boundary_problem("save_steps", int(save_steps), training_args)
    max_steps = training_args.max_steps if max_steps is None else max_steps
    if max_steps is not None and max_steps > 0 and max_steps % unit:
        return _boundary_problem("max_steps", int(max_steps), training_args)
    return None


def check_save_steps(training_args: GRPOConfig, save_steps: float | None = None, max_steps: int | None = None) -> None:
    """Raise ValueError (with the fix) when a checkpoint would fall inside a generation batch; see
    `save_steps_problem`. Called before any data or model is loaded, and again when training starts."""
    problem = save_steps_problem(training_args, save_steps, max_steps)
    if problem:
        raise ValueError(problem)


def check_resume_checkpoint(checkpoint: str | os.PathLike[str], training_args: GRPOConfig) -> None:
    """Refuse to resume from a checkpoint saved inside a generation batch (by an earlier run with other settings, or
    copied in): it would continue with different samples than the run that wrote it. Names the checkpoints that are
    on a boundary."""
    state_file = Path(checkpoint) / "trainer_state.json"
    if not state_file.is_file():
        return
    step = int(json.loads(state_file.read_text()).get("global_step", 0))
    unit = boundary_unit(training_args)
    if step % unit == 0:
        return
    good = sorted(
        (p for p in Path(checkpoint).parent.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    good = [p.name for p in good if int(p.name.split("-")[-1]) % unit == 0]
    hint = f"resume from {good[-1]} (the newest on a boundary)" if good else "start the run again"
    raise ValueError(
        f"{checkpoint} was saved at step {step}, inside a generation batch (one generation every "
        f"{generation_interval(training_args):g} optimizer steps: boundaries are multiples of {unit}); TRL did not "
        f"save the rest of that batch, so resuming from it would diverge from the run that wrote it. "
        f"Pass --resume_from_checkpoint {Path(checkpoint).parent}/<checkpoint> to {hint}."
    )


def train_and_save(trainer: GRPOTrainer, resume: str | None, final_dir: str | Path | None = None) -> dict[str, float]:
    """Train (or resume), then save weights/adapter + processor, metrics and the trainer state.

    The model goes to output_dir, or to `final_dir` (relative paths inside output_dir) with a copy of the resolved
    config, so that folder alone is enough to load the trained model back.
    """
    if resume:
        logger.info("resuming from %s", resume)
    if trainer.accelerator.is_main_process:
        finish_pending_overwrite(trainer.args.output_dir)
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
    """`core.data.records.resolve_dataset_source`: a local path or a hub id; a missing path-like name is a DataError."""
    return core_data.resolve_dataset_source(name, recipe_dir)


def resolve_input_path(path: str | None, recipe_dir: str | Path) -> str | None:
    """`core.data.records.resolve_input_path`: working directory first, then the recipe folder."""
    return core_data.resolve_input_path(path, recipe_dir)
