"""Per-GPU memory of a GRPO run, from its config alone: know before launch whether it fits.

    python -m core.plan recipes/grounding/config.yaml [--num_gpus 8] [--gpu_memory_gb 80] [--zero 2|3]
                        [--accelerate_config FILE] [--text_tokens 256] [any --<config key> value ...]

The config is parsed with the recipe's own dataclasses (its train.py `ScriptArguments` and aliases,
core.training.config's
`VLMGRPOConfig` and `VLMModelConfig`), so flags override the file exactly as they would for train.py. The model is
never loaded: parameter counts and module shapes come from the real classes built on the meta device from
`core.training.architectures` (hub ids of the recipes' real configs) or from a local/tiny checkpoint's config.json.

What is counted, per GPU (GB = 2**30 bytes, the unit torch and nvidia-smi report 80 GB cards in):
* resident: policy weights (model dtype, or bitsandbytes 4-bit for the linear layers with load_in_4bit), the reference
  model when beta > 0 without PEFT (TRL 1.15 builds none with PEFT: it disables the adapter to get the reference
  log-probs), LoRA adapters / modules_to_save, fp32 master weights and AdamW moments as DeepSpeed ZeRO-2 / ZeRO-3
  partition them (read from the recipe's deepspeed_zero*.yaml that run_8gpu.sh uses), the frozen DiT + VAE of the
  Qwen-Image recipes (bf16, on every rank: core.diffusion.pipeline.load_pipeline places the whole pipeline), the vLLM
  reservation (vllm_gpu_memory_utilization x card, colocate), a fixed allowance for the CUDA context and NCCL;
* train (forward + backward): gradients (ZeRO-partitioned) and DeepSpeed's reduce bucket, plus the activations of one
  micro-batch (per_device_train_batch_size sequences of prompt + completion tokens) with or without gradient
  checkpointing; step: the gradient partition and its fp32 copy DeepSpeed makes for AdamW;
* generation (transformers generate, when use_vllm is off): the KV cache of the whole per-device generation batch
  (per_device_train_batch_size x steps_per_generation sequences), the prefill's transient activations and, under
  ZeRO-3, the full 16-bit weights TRL gathers for generation (ds3_gather_for_generation);
* render (Qwen-Image recipes): the DiT's forward activations and the VAE's decode (and, for edits, encode) of the
  generation batch, with VAE slicing/tiling and DiT offload as the recipe's flags set them.
The peak is the largest of these phases. Every assumption is printed with the table.

`warn_if_over_budget` runs the same plan at start-up (every recipe's train.py calls it right after `check_backend`) and
logs a warning when it exceeds the visible GPU's memory; it never raises, and does nothing without a GPU.

Modules: assumptions (fixed numbers), activations (model shapes, activation and KV-cache bytes), counts (which model,
parameter counts on the meta device), estimate (`plan_run`), report (`Plan`, `Launch`, table and Markdown), what_if
(`with_changes`) and this one (config parsing, the start-up check, the command line), which re-exports their public
names: `from core.plan.memory import ...` is the one import path.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.plan.activations import (
    LINEAR_INPUTS,
    ActivationInput,
    BlockShape,
    ModelShape,
    Training,
    activation_terms,
    block_backward_transient,
    block_forward_transient,
    block_saved_bytes,
    kv_cache_bytes,
    shape_from_config,
)
from core.plan.assumptions import DEFAULT_TEXT_TOKENS, GiB
from core.plan.counts import Counts, PipelineInfo, count_policy
from core.plan.estimate import plan_run
from core.plan.report import Item, Launch, Plan
from core.plan.what_if import with_changes
from core.tools.recipe_modules import load_recipe_module

__all__ = [
    "LINEAR_INPUTS",
    "ActivationInput",
    "BlockShape",
    "Counts",
    "Item",
    "Launch",
    "ModelShape",
    "PipelineInfo",
    "Plan",
    "Training",
    "activation_terms",
    "block_backward_transient",
    "block_forward_transient",
    "block_saved_bytes",
    "count_policy",
    "kv_cache_bytes",
    "launch_from_environment",
    "main",
    "parse_recipe_config",
    "plan_run",
    "read_accelerate_config",
    "shape_from_config",
    "warn_if_over_budget",
    "with_changes",
]

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Parsing a recipe config with the recipe's own dataclasses
# ---------------------------------------------------------------------------------------------------------------------


def parse_recipe_config(config: str | Path, extra: list[str] | None = None, num_gpus: int = 8) -> tuple[Any, Any, Any]:
    """(script_args, training_args, model_args) as the recipe's train.py would parse `--config config extra...` on
    `num_gpus` processes (GRPOConfig checks the generation batch against the world size it sees), on any machine."""
    import torch

    from core.training.config import (
        VLMGRPOConfig,
        VLMModelConfig,
        _AliasingTrlParser,
        rename_alias_flags,
        script_aliases,
    )

    config = Path(config)
    recipe_dir = config.resolve().parent
    if (recipe_dir / "train.py").is_file():
        train = load_recipe_module(recipe_dir, "train")
        script_cls = train.ScriptArguments
        aliases = script_aliases(script_cls, getattr(train, "ALIASES", None))
    else:
        script_cls, aliases = _GenericScriptArguments, {}
    bf16_gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported()

    @dataclass
    class PlannedGRPOConfig(VLMGRPOConfig):
        """VLMGRPOConfig that sees the planned world size, and accepts bf16 on machines without a bf16 GPU."""

        @property
        def world_size(self) -> int:  # type: ignore[override]
            return num_gpus

        def __post_init__(self) -> None:
            use_cpu = self.use_cpu
            if not bf16_gpu:
                self.use_cpu = True  # TrainingArguments refuses bf16 without a bf16 GPU unless use_cpu
            try:
                super().__post_init__()
            finally:
                self.use_cpu = use_cpu

    args = rename_alias_flags(["--config", str(config), *(extra or [])], aliases)
    parser = _AliasingTrlParser((script_cls, PlannedGRPOConfig, VLMModelConfig), aliases)
    script_args, training_args, model_args, *_ = parser.parse_args_and_config(args=args, return_remaining_strings=True)
    return script_args, training_args, model_args


@dataclass
class _GenericScriptArguments:
    """Any other YAML: every key that is not a GRPOConfig/VLMModelConfig field is ignored."""


def read_accelerate_config(path: str | Path | None) -> dict[str, Any]:
    import yaml

    if not path or not Path(path).is_file():
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    ds = data.get("deepspeed_config") or {}
    if data.get("distributed_type") != "DEEPSPEED":
        return {"zero_stage": 0}
    return {
        "zero_stage": int(ds.get("zero_stage", 0)),
        "offload_optimizer": ds.get("offload_optimizer_device", "none") not in ("none", None),
        "offload_param": ds.get("offload_param_device", "none") not in ("none", None),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Start-up check
# ---------------------------------------------------------------------------------------------------------------------


def launch_from_environment(gpu_memory_gb: float) -> Launch:
    """The launch this process is part of: world size and DeepSpeed settings from what accelerate exports."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1") or 1)
    deepspeed = env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    stage = int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2") or 2) if deepspeed else 0
    return Launch(
        num_gpus=world,
        zero_stage=stage,
        offload_optimizer=env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none") not in ("none", ""),
        offload_param=env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none") not in ("none", ""),
        gpu_memory_gb=gpu_memory_gb,
    )


def warn_if_over_budget(script_args: Any, training_args: Any, model_args: Any) -> Plan | None:
    """Log a warning, before any weights load, when the plan's per-GPU peak exceeds the visible GPU's memory.

    Never raises (a planner problem must not stop a run); without a CUDA GPU it does nothing, nor on any process but
    each machine's first (LOCAL_RANK 0: the ranks of a launch share one plan). Returns the plan (None when skipped)."""
    try:
        import torch

        if not torch.cuda.is_available() or int(os.environ.get("LOCAL_RANK", "0") or 0) != 0:
            return None
        device = torch.cuda.current_device()
        total_gb = torch.cuda.get_device_properties(device).total_memory / GiB
        plan = plan_run(script_args, training_args, model_args, launch_from_environment(total_gb))
        if plan.fits:
            logger.info(
                "memory plan: %.1f GB per GPU of %.1f GB (python -m core.plan for the breakdown)",
                plan.total_gb,
                total_gb,
            )
        else:
            plan = with_changes(plan, script_args, training_args, model_args, plan.launch)
            logger.warning(
                "memory plan: this run needs about %.1f GB per GPU (peak during %s) but the GPU has %.1f GB; it will "
                "probably run out of memory.\n%s",
                plan.total_gb,
                plan.peak_phase,
                total_gb,
                plan.format(),
            )
        return plan
    except Exception as exc:  # noqa: BLE001 - the check is advisory
        logger.info("memory plan skipped: %s", exc)
        return None


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------


def _at_least(low: float, kind: type) -> Any:
    """An argparse type refusing values below `low` with argparse's usage message (exit 2), not a traceback."""

    def parse(text: str) -> Any:
        value = kind(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a recipe's config YAML")
    parser.add_argument(
        "--num_gpus", type=_at_least(1, int), default=8, help="processes (GPUs) of the launch (default 8)"
    )
    parser.add_argument(
        "--gpu_memory_gb", type=_at_least(0.001, float), default=80.0, help="memory per GPU in GB (default 80)"
    )
    parser.add_argument(
        "--zero",
        type=int,
        choices=(0, 1, 2, 3),
        default=None,
        help="DeepSpeed ZeRO stage (default: read from --accelerate_config; 0 = no DeepSpeed)",
    )
    parser.add_argument(
        "--accelerate_config",
        default=None,
        help="accelerate/DeepSpeed YAML (default: the recipe's deepspeed_zero2.yaml, as run_8gpu.sh)",
    )
    parser.add_argument(
        "--text_tokens",
        type=int,
        default=DEFAULT_TEXT_TOKENS,
        help=f"prompt text tokens besides image/video tokens (default {DEFAULT_TEXT_TOKENS})",
    )
    parser.add_argument("--images_per_prompt", type=int, default=1, help="images per prompt (image recipes; default 1)")
    parser.add_argument("--what_if", action="store_true", help="list the changes and their peaks even when it fits")
    parser.add_argument("--markdown", action="store_true", help="print the plan as Markdown (README sections)")
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = Path(args.config)
    accelerate_config = args.accelerate_config or (config.resolve().parent / "deepspeed_zero2.yaml")
    launch_facts = read_accelerate_config(accelerate_config)
    if args.zero is not None:
        launch_facts["zero_stage"] = args.zero
    launch = Launch(
        num_gpus=args.num_gpus,
        gpu_memory_gb=args.gpu_memory_gb,
        text_tokens=args.text_tokens,
        images_per_prompt=args.images_per_prompt,
        accelerate_config=str(accelerate_config) if Path(accelerate_config).is_file() else None,
        **{"zero_stage": 2, **launch_facts},
    )
    if args.num_gpus == 1 and args.zero is None:
        launch.zero_stage = 0
    script_args, training_args, model_args = parse_recipe_config(config, extra, args.num_gpus)
    plan = with_changes(
        plan_run(script_args, training_args, model_args, launch),
        script_args,
        training_args,
        model_args,
        launch,
        always=args.what_if,
    )
    print(plan.markdown() if args.markdown else plan.format())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
