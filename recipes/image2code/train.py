"""GRPO that teaches Qwen3-VL to write the matplotlib code that redraws an image.

Launch:  bash recipes/image2code/run_8gpu.sh                  (8 GPUs, config.yaml)
         SMOKE=1 bash recipes/image2code/run_8gpu.sh          (CPU, config_smoke.yaml, 2 processes)
Direct:  python recipes/image2code/train.py --config recipes/image2code/config_smoke.yaml --output_dir outputs/smoke
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from data import build_dataset
from rewards import RewardConfig, build_reward_funcs, reference_completion

from core.plan.memory import warn_if_over_budget
from core.ranges import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE
from core.rewards.contract import check_rewards_can_score
from core.rewards.sandbox import Sandbox, SandboxLimits
from core.training.backends import check_backend
from core.training.config import parse_config
from core.training.lora import build_lora_config, freeze_for_full_finetune
from core.training.models import load_model, load_processor
from core.training.run import resolve_input_path, setup_run, train_and_save
from core.training.trainer import VLMGRPOTrainer
from core.training.warm_start import warm_start_checkpoint

RECIPE_DIR = Path(__file__).resolve().parent


@dataclass
class ScriptArguments:
    train_file: str = field(
        default="data/sample/splits/train.jsonl",
        metadata={"help": "JSONL records {id, description, image_path | image_base64, reference_code}."},
    )
    eval_file: str | None = field(default=None, metadata={"help": "Optional held-out records, same format."})
    images_root: str | None = field(
        default=None, metadata={"help": "Folder image_path is relative to (default: the data file's folder)."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system message."})
    max_train_samples: int | None = field(
        default=None, metadata={"range": AT_LEAST_ONE, "help": "Use only the first N training rows."}
    )
    # The original's reward.* settings (total = success*w_exec + similarity*w_sim + penalty(status)).
    code_execution_weight: float = field(
        default=0.3, metadata={"range": NON_NEGATIVE, "help": "Weight of execution success."}
    )
    image_similarity_weight: float = field(
        default=0.7, metadata={"range": NON_NEGATIVE, "help": "Weight of the combined similarity."}
    )
    syntax_error_penalty: float = field(default=-1.0, metadata={"help": "Added when the code does not compile."})
    runtime_error_penalty: float = field(default=-0.5, metadata={"help": "Added when the code raises."})
    timeout_penalty: float = field(default=-0.5, metadata={"help": "Added when the code runs out of time."})
    killed_penalty: float = field(default=-0.5, metadata={"help": "Added when a limit kills it (memory, signal)."})
    no_image_penalty: float = field(default=0.0, metadata={"help": "Added when it runs but draws nothing."})
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
    custom_score_fn: str | None = field(
        default=None,
        metadata={
            "help": "Custom scoring hook 'package.module:function' called with (code, reference_image, "
            "result); logged under the function's name."
        },
    )
    custom_score_weight: float = field(
        default=1.0, metadata={"range": NON_NEGATIVE, "help": "Weight of the custom score."}
    )
    # Sandbox limits per program.
    sandbox_workers: int | None = field(
        default=None,
        metadata={
            "range": AT_LEAST_ONE,
            "help": "Programs run at once per rank (default: the node's cores / ranks per node).",
        },
    )
    sandbox_wall_s: float = field(default=10.0, metadata={"range": POSITIVE, "help": "Wall-clock seconds per program."})
    sandbox_memory_mb: int = field(
        default=1024, metadata={"range": AT_LEAST_ONE, "help": "Address-space limit per program."}
    )


def main() -> None:
    script_args, training_args, model_args = parse_config(ScriptArguments)
    check_backend("transformers", model_args, training_args)  # before anything loads
    warn_if_over_budget(script_args, training_args, model_args)  # before any weights load
    resume = setup_run(training_args, script_args, model_args)

    processor = load_processor(model_args)
    train_file = resolve_input_path(script_args.train_file, RECIPE_DIR)
    images_root = resolve_input_path(script_args.images_root, RECIPE_DIR)
    train_dataset = build_dataset(train_file, images_root, script_args.system_prompt, script_args.max_train_samples)
    eval_file = resolve_input_path(script_args.eval_file, RECIPE_DIR)
    eval_dataset = build_dataset(eval_file, images_root, script_args.system_prompt) if eval_file else None

    limits = SandboxLimits(
        wall_s=script_args.sandbox_wall_s, cpu_s=script_args.sandbox_wall_s, memory_mb=script_args.sandbox_memory_mb
    )
    # Every rank of a node runs its own sandbox: share the node's cores between them.
    per_rank = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    sandbox = Sandbox(limits, workers=script_args.sandbox_workers or per_rank)
    reward_funcs, weights = build_reward_funcs(
        RewardConfig.from_object(script_args), sandbox, script_args.custom_score_fn, script_args.custom_score_weight
    )
    if training_args.reward_weights is None:
        training_args.reward_weights = weights

    try:
        check_rewards_can_score(reward_funcs, train_dataset, reference_completion, source=script_args.train_file)
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
        trainer = VLMGRPOTrainer(
            model=model,
            reward_funcs=reward_funcs,
            args=training_args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processor,
            peft_config=build_lora_config(model, model_args),
        )
        train_and_save(trainer, resume)
    finally:
        sandbox.close()


if __name__ == "__main__":
    main()
