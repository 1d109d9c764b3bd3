"""What-ifs: the cheapest config changes that make a run fit, each re-planned with `plan_run`."""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

from core.plan.counts import is_pipeline
from core.plan.estimate import plan_run
from core.plan.report import Launch, Plan

logger = logging.getLogger(__name__)


def _variants(script_args: Any, training_args: Any, model_args: Any, launch: Launch) -> list[tuple[str, Any]]:
    """(label, edit) pairs, cheapest first; edit(s, t, m, l) changes copies in place."""
    out: list[tuple[str, Any]] = []
    pipeline = is_pipeline(model_args.model_name_or_path)
    if getattr(script_args, "backend", "transformers") == "unsloth":
        launch = dataclasses.replace(launch, zero_stage=0)
    if not training_args.gradient_checkpointing:
        out.append(("gradient_checkpointing: true", lambda s, t, m, lc: setattr(t, "gradient_checkpointing", True)))
    if pipeline and not getattr(script_args, "vae_slicing", False):
        out.append(("vae_slicing: true", lambda s, t, m, lc: setattr(s, "vae_slicing", True)))
    if pipeline and not getattr(script_args, "vae_tiling", False):
        out.append(("vae_tiling: true", lambda s, t, m, lc: setattr(s, "vae_tiling", True)))
    if not model_args.use_peft:
        out.append(("use_peft: true (LoRA)", lambda s, t, m, lc: setattr(m, "use_peft", True)))
    if launch.zero_stage in (1, 2) and launch.num_gpus > 1:
        out.append(
            (
                "DeepSpeed ZeRO-3 (ACCELERATE_CONFIG=.../deepspeed_zero3.yaml)",
                lambda s, t, m, lc: setattr(lc, "zero_stage", 3),
            )
        )
    if training_args.per_device_train_batch_size > 1:
        half = training_args.per_device_train_batch_size // 2
        out.append(
            (
                f"per_device_train_batch_size: {half} (x2 gradient_accumulation_steps, same effective batch)",
                lambda s, t, m, lc: setattr(t, "per_device_train_batch_size", half),
            )
        )
    steps = training_args.steps_per_generation or training_args.gradient_accumulation_steps
    if not training_args.use_vllm and steps > 1:
        out.append(
            (
                f"steps_per_generation: {max(1, steps // 2)} (half the generation batch: fewer completions generated "
                "at once; num_generations itself does not set per-GPU memory)",
                lambda s, t, m, lc: setattr(t, "steps_per_generation", max(1, steps // 2)),
            )
        )
    if getattr(script_args, "max_frames", None):
        frames = max(2, int(script_args.max_frames) // 2)
        out.append((f"max_frames: {frames}", lambda s, t, m, lc: setattr(s, "max_frames", frames)))
    elif pipeline and getattr(script_args, "condition_area", "absent") != "absent":
        area = (getattr(script_args, "condition_area", None) or 1024 * 1024) // 4
        out.append((f"condition_area: {area} (half the side)", lambda s, t, m, lc: setattr(s, "condition_area", area)))
    elif not pipeline and model_args.max_pixels:
        px = model_args.max_pixels // 2
        out.append((f"max_pixels: {px}", lambda s, t, m, lc: setattr(m, "max_pixels", px)))
    if training_args.use_vllm and training_args.vllm_gpu_memory_utilization > 0.2:
        out.append(
            ("vllm_gpu_memory_utilization: 0.2", lambda s, t, m, lc: setattr(t, "vllm_gpu_memory_utilization", 0.2))
        )
    if pipeline and not getattr(script_args, "offload_dit", False):
        out.append(
            (
                "offload_dit: true (the DiT waits in host RAM between renders)",
                lambda s, t, m, lc: setattr(s, "offload_dit", True),
            )
        )
    if (
        launch.zero_stage == 3
        and getattr(training_args, "ds3_gather_for_generation", True)
        and not training_args.use_vllm
    ):
        out.append(
            (
                "ds3_gather_for_generation: false (ZeRO-3 generation gathers one layer at a time; slower)",
                lambda s, t, m, lc: setattr(t, "ds3_gather_for_generation", False),
            )
        )
    if model_args.use_peft and not getattr(model_args, "load_in_4bit", False) and launch.zero_stage != 3:
        out.append(
            (
                "load_in_4bit: true (QLoRA: bitsandbytes nf4 base weights)",
                lambda s, t, m, lc: setattr(m, "load_in_4bit", True),
            )
        )
    if launch.zero_stage and not launch.offload_optimizer:
        out.append(
            (
                "optimizer states on CPU (offload_optimizer_device: cpu)",
                lambda s, t, m, lc: setattr(lc, "offload_optimizer", True),
            )
        )
    return out


def with_changes(
    plan: Plan, script_args: Any, training_args: Any, model_args: Any, launch: Launch, always: bool = False
) -> Plan:
    """`plan` with its `changes` when it does not fit (or `always`): each variant that lowers the peak with its new
    peak, cheapest first; if none fits alone, the cheapest combination that does."""
    if plan.fits and not always:
        return plan
    variants = _variants(script_args, training_args, model_args, launch)
    results: list[tuple[str, float]] = []

    def apply(edits: list[Any]) -> float:
        s, t, m, lc = (copy.copy(x) for x in (script_args, training_args, model_args, launch))
        for edit in edits:
            edit(s, t, m, lc)
        return plan_run(s, t, m, lc).total_gb

    for label, edit in variants:
        try:
            gb = apply([edit])
        except Exception as exc:  # a variant the setup cannot express: skip it, keep the others
            logger.debug("variant %s failed: %s", label, exc)
            continue
        if gb < plan.total_gb - 0.05:
            results.append((label, gb))
    if not plan.fits and results and not any(gb <= launch.gpu_memory_gb for _, gb in results):
        # none fits alone: add them in order (cheapest first), keeping each that still lowers the peak
        chosen: list[Any] = []
        labels: list[str] = []
        current = plan.total_gb
        for label, edit in variants:
            try:
                gb = apply([*chosen, edit])
            except Exception:  # noqa: BLE001 - skip a variant the setup cannot express
                continue
            if gb < current - 0.05:
                chosen.append(edit)
                labels.append(label.split(" (")[0])
                current = gb
            if current <= launch.gpu_memory_gb:
                break
        results.append(("together: " + " + ".join(labels), current))
    plan.changes = results
    return plan
