"""GRPO that teaches Qwen3-VL to write the matplotlib code that redraws an image.

Launch:  bash recipes/image2code/run_8gpu.sh                  (8 GPUs, config.yaml)
         SMOKE=1 bash recipes/image2code/run_8gpu.sh          (CPU, config_smoke.yaml, 2 processes)
Direct:  python recipes/image2code/train.py --config recipes/image2code/config_smoke.yaml --output_dir outputs/smoke
Sample data for both configs: python recipes/image2code/sample.py
main() runs the sections every recipe's train.py runs, in the same order: parse -> check -> data -> rewards -> model
-> trainer -> train, save. The old key names train_file / eval_file are core.training.config.COMMON_ALIASES; the old
reward keys are mapped by `apply_old_reward_keys`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data import build_dataset
from rewards import (
    REWARD_NAMES,
    REWARD_WEIGHTS,
    RewardConfig,
    build_reward_funcs,
    reference_completion,
    resolve_reward_settings,
)

from core.plan.memory import warn_if_over_budget
from core.ranges import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE
from core.rewards.contract import check_rewards_can_score
from core.rewards.sandbox import Sandbox, SandboxLimits
from core.training.backends import check_backend
from core.training.config import VLMGRPOConfig, parse_config
from core.training.lora import build_lora_config, freeze_for_full_finetune
from core.training.models import load_model, load_processor
from core.training.run import resolve_input_path, setup_logging, setup_run, train_and_save
from core.training.trainer import VLMGRPOTrainer
from core.training.warm_start import warm_start_checkpoint

RECIPE_DIR = Path(__file__).resolve().parent


@dataclass
class ScriptArguments:
    dataset_name: str = field(
        default="data/sample/train.jsonl",
        metadata={
            "help": "JSONL records {id, description, image_path | image_base64, reference_code}. Old key: train_file."
        },
    )
    eval_dataset_name: str | None = field(
        default=None, metadata={"help": "Optional held-out records, same format. Old key: eval_file."}
    )
    images_root: str | None = field(
        default=None, metadata={"help": "Folder image_path is relative to (default: the data file's folder)."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system message."})
    max_train_samples: int | None = field(
        default=None, metadata={"range": AT_LEAST_ONE, "help": "Use only the first N training rows."}
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: list(REWARD_NAMES),
        metadata={
            "help": f"Rewards, any of {', '.join(REWARD_NAMES)} or 'package.module:function'; weights via "
            f"reward_weights (unset: {', '.join(f'{n} {w:g}' for n, w in REWARD_WEIGHTS.items())}, 1.0 for others)."
        },
    )
    # status_penalty_reward's value per sandbox status (reward units, not weights).
    syntax_error_penalty: float = field(default=-1.0, metadata={"help": "Penalty when the code does not compile."})
    runtime_error_penalty: float = field(default=-0.5, metadata={"help": "Penalty when the code raises."})
    timeout_penalty: float = field(default=-0.5, metadata={"help": "Penalty when the code runs out of time."})
    killed_penalty: float = field(default=-0.5, metadata={"help": "Penalty when a limit kills it (memory, signal)."})
    no_image_penalty: float = field(default=0.0, metadata={"help": "Penalty when it runs but draws nothing."})
    # image_similarity_reward's combined score: weighted mean of the similarity components.
    ssim_weight: float = field(default=0.3, metadata={"range": NON_NEGATIVE, "help": "Similarity weight of SSIM."})
    mse_weight: float = field(
        default=0.15, metadata={"range": NON_NEGATIVE, "help": "Similarity weight of normalised MSE."}
    )
    cosine_weight: float = field(
        default=0.15, metadata={"range": NON_NEGATIVE, "help": "Similarity weight of cosine similarity."}
    )
    histogram_weight: float = field(
        default=0.2, metadata={"range": NON_NEGATIVE, "help": "Similarity weight of colour histograms."}
    )
    edge_weight: float = field(default=0.2, metadata={"range": NON_NEGATIVE, "help": "Similarity weight of edge maps."})
    # Old keys, mapped onto reward_funcs / reward_weights at parse time (rewards.resolve_reward_settings).
    code_execution_weight: float | None = field(
        default=None,
        metadata={"range": NON_NEGATIVE, "help": "Old key: the reward_weights entry of code_execution_reward."},
    )
    image_similarity_weight: float | None = field(
        default=None,
        metadata={"range": NON_NEGATIVE, "help": "Old key: the reward_weights entry of image_similarity_reward."},
    )
    custom_score_fn: str | None = field(
        default=None,
        metadata={
            "help": "Old key: a program scorer 'package.module:function' f(code, reference_image, result), "
            "appended to reward_funcs."
        },
    )
    custom_score_weight: float | None = field(
        default=None,
        metadata={"range": NON_NEGATIVE, "help": "Old key: custom_score_fn's reward_weights entry (default 1.0)."},
    )
    # Sandbox limits per program.
    sandbox_workers: int | None = field(
        default=None,
        metadata={
            "range": AT_LEAST_ONE,
            "help": "Programs run at once per rank (default: the CPUs this rank may use / ranks per node, "
            "core.rewards.sandbox.default_workers).",
        },
    )
    sandbox_wall_s: float = field(default=10.0, metadata={"range": POSITIVE, "help": "Wall-clock seconds per program."})
    sandbox_memory_mb: int = field(
        default=1024, metadata={"range": AT_LEAST_ONE, "help": "Address-space limit per program."}
    )


def apply_old_reward_keys(script_args: ScriptArguments, training_args: VLMGRPOConfig) -> None:
    """Map the old reward keys onto `reward_funcs` / `reward_weights` (rules: `rewards.resolve_reward_settings`,
    README "Old config keys") and clear them, so run_config.yaml records one canonical form. Unset reward_weights
    become each reward's default weight here, before anything is recorded, so the record shows the weights used."""
    script_args.reward_funcs, training_args.reward_weights = resolve_reward_settings(
        script_args.reward_funcs,
        training_args.reward_weights,
        code_execution_weight=script_args.code_execution_weight,
        image_similarity_weight=script_args.image_similarity_weight,
        custom_score_fn=script_args.custom_score_fn,
        custom_score_weight=script_args.custom_score_weight,
    )
    script_args.code_execution_weight = script_args.image_similarity_weight = None
    script_args.custom_score_fn = script_args.custom_score_weight = None


def main() -> None:
    # ---- parse
    # (old reward keys are mapped onto reward_funcs / reward_weights here, before anything is recorded)
    script_args, training_args, model_args = parse_config(ScriptArguments)
    apply_old_reward_keys(script_args, training_args)

    # ---- check: refused before anything loads
    check_backend("transformers", model_args, training_args)
    warn_if_over_budget(script_args, training_args, model_args)
    setup_logging(training_args)

    # ---- data: checked before any weights load
    processor = load_processor(model_args)
    images_root = resolve_input_path(script_args.images_root, RECIPE_DIR)
    train_dataset = build_dataset(
        resolve_input_path(script_args.dataset_name, RECIPE_DIR),
        images_root,
        script_args.system_prompt,
        script_args.max_train_samples,
    )
    eval_file = resolve_input_path(script_args.eval_dataset_name, RECIPE_DIR)
    eval_dataset = build_dataset(eval_file, images_root, script_args.system_prompt) if eval_file else None

    # ---- rewards: checked before any weights load
    # Each must score the reference answers. Every rank of a node runs its own sandbox, so by default each takes
    # its share of the node's CPUs; it forks its server now, before the weights load, and is closed however the run
    # ends.
    limits = SandboxLimits(
        wall_s=script_args.sandbox_wall_s, cpu_s=script_args.sandbox_wall_s, memory_mb=script_args.sandbox_memory_mb
    )
    with Sandbox(limits, workers=script_args.sandbox_workers) as sandbox:
        reward_funcs = build_reward_funcs(script_args.reward_funcs, sandbox, RewardConfig.from_object(script_args))
        check_rewards_can_score(reward_funcs, train_dataset, reference_completion, source=script_args.dataset_name)

        # ---- model: the output folder is claimed (setup_run), then the weights load
        resume = setup_run(training_args, script_args, model_args)
        # Smoke configs only: teach the random tiny policy the answer format, so groups differ
        # (core/training/warm_start.py).
        warm_start_checkpoint(
            model_args,
            processor,
            train_dataset,
            reference_completion,
            chat_template_kwargs=training_args.chat_template_kwargs,
        )
        model = load_model(model_args)
        freeze_for_full_finetune(model, model_args)

        # ---- trainer
        trainer = VLMGRPOTrainer(
            model=model,
            reward_funcs=reward_funcs,
            args=training_args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processor,
            peft_config=build_lora_config(model, model_args),
        )

        # ---- train, save
        train_and_save(trainer, resume)


if __name__ == "__main__":
    main()
