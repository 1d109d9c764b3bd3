"""GRPO on video: order the actions seen in a clip (Qwen2.5-VL by default).

Launch:  bash recipes/video/run_8gpu.sh                  (8 GPUs, config.yaml)
         SMOKE=1 bash recipes/video/run_8gpu.sh          (CPU, config_smoke.yaml, 2 processes)
Direct:  python recipes/video/train.py --config recipes/video/config_smoke.yaml --output_dir outputs/smoke
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data import build_dataset
from datasets import Dataset
from rewards import DEFAULT_WEIGHTS, REFERENCE_FULL_MARKS, REWARD_NAMES, build_reward_funcs, reference_completion

from core.data.video import patch_size_of
from core.plan.memory import warn_if_over_budget
from core.ranges import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE
from core.rewards.contract import check_rewards_can_score
from core.training.backends import check_backend
from core.training.config import parse_config
from core.training.lora import build_lora_config, freeze_for_full_finetune
from core.training.models import load_model, load_processor
from core.training.run import resolve_input_path, setup_run, train_and_save
from core.training.trainer import VLMGRPOTrainer
from core.training.warm_start import warm_start_checkpoint

RECIPE_DIR = Path(__file__).resolve().parent
# The original project's config names keep working, as keys and flags: each is renamed to the field doing the job.
ORIGINAL_NAMES = {
    "grpo_beta": "beta",  # KL weight to the frozen reference
    "grpo_sample_size": "num_generations",
    "generation_temperature": "temperature",
    "generation_top_p": "top_p",
    "tune_mm_llm": "train_language",
    "tune_mm_vision": "train_vision",
    "tune_mm_mlp": "train_projector",
}


@dataclass
class ScriptArguments:
    train_file: str = field(metadata={"help": "JSON/JSONL records: id, conversations, video, meta (see data.py)."})
    eval_file: str | None = field(default=None, metadata={"help": "Optional held-out records in the same format."})
    video_root: str | None = field(
        default=None,
        metadata={
            "help": "Folder relative video paths of train_file and eval_file start from (default: each data "
            "file's own folder). Relative data paths are tried from the working directory, then from this "
            "recipe's folder."
        },
    )
    fps: float = field(
        default=2.0,
        metadata={
            "range": POSITIVE,
            "help": "Frames sampled per second of video (qwen-vl-utils' rule, floored to an even count).",
        },
    )
    min_frames: int = field(
        default=4,
        metadata={
            "range": AT_LEAST_ONE,
            "help": "Fewest frames per clip (unless the clip is shorter); records' meta within.",
        },
    )
    max_frames: int = field(
        default=16,
        metadata={"range": AT_LEAST_ONE, "help": "Most frames per clip: the memory cap, no record's meta exceeds it."},
    )
    min_pixels_per_frame: int | None = field(
        default=None,
        metadata={"range": AT_LEAST_ONE, "help": "qwen-vl-utils' per-frame min_pixels (default 128 tokens' worth)."},
    )
    max_pixels_per_frame: int | None = field(
        default=None,
        metadata={
            "range": AT_LEAST_ONE,
            "help": "qwen-vl-utils' per-frame max_pixels (default 768 tokens' worth, less for long clips).",
        },
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["format_reward", "accuracy_reward"],
        metadata={"help": f"Rewards, any of {', '.join(REWARD_NAMES)} or 'package.module:function'."},
    )
    format_reward_weight: float = field(
        default=DEFAULT_WEIGHTS["format_reward"], metadata={"range": NON_NEGATIVE, "help": "Original name."}
    )
    accuracy_reward_weight: float = field(
        default=DEFAULT_WEIGHTS["accuracy_reward"], metadata={"range": NON_NEGATIVE, "help": "Original name."}
    )
    grpo_alpha: float = field(
        default=0.5,
        metadata={
            "range": POSITIVE,
            "help": "Original reward scaling: multiplies every reward weight. With TRL's default "
            "scale_rewards=group it cancels in the advantage; it matters with scale_rewards=none.",
        },
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system message for every prompt."})
    max_train_samples: int | None = field(
        default=None, metadata={"range": AT_LEAST_ONE, "help": "Use only the first N training rows."}
    )


def build_datasets(script_args: ScriptArguments, image_patch_size: int = 14) -> tuple[Dataset, Dataset | None]:
    """Train and (optional) eval datasets. Each file's relative video paths resolve from that file's own folder
    unless video_root is set, as evaluate.py does, so an eval file kept elsewhere finds its own clips.
    `image_patch_size`: the processor's (`core.data.video.patch_size_of`), for qwen-vl-utils' frame sizes."""
    data_kwargs = {
        "video_root": resolve_input_path(script_args.video_root, RECIPE_DIR),
        "min_frames": script_args.min_frames,
        "max_frames": script_args.max_frames,
        "fps": script_args.fps,
        "min_pixels_per_frame": script_args.min_pixels_per_frame,
        "max_pixels_per_frame": script_args.max_pixels_per_frame,
        "image_patch_size": image_patch_size,
        "system_prompt": script_args.system_prompt,
    }
    train_dataset = build_dataset(resolve_input_path(script_args.train_file, RECIPE_DIR), **data_kwargs)
    if script_args.max_train_samples:
        train_dataset = train_dataset.select(range(min(script_args.max_train_samples, len(train_dataset))))
    eval_file = resolve_input_path(script_args.eval_file, RECIPE_DIR)
    return train_dataset, build_dataset(eval_file, **data_kwargs) if eval_file else None


def main() -> None:
    script_args, training_args, model_args = parse_config(ScriptArguments, aliases=ORIGINAL_NAMES)
    check_backend("transformers", model_args, training_args, video=True)  # before anything loads
    warn_if_over_budget(script_args, training_args, model_args)  # before any weights load
    if training_args.reward_weights is None:
        weights = {
            "format_reward": script_args.format_reward_weight,
            "accuracy_reward": script_args.accuracy_reward_weight,
            "ordered_accuracy_reward": script_args.accuracy_reward_weight,
        }
        training_args.reward_weights = [script_args.grpo_alpha * weights.get(n, 1.0) for n in script_args.reward_funcs]
    resume = setup_run(training_args, script_args, model_args)

    processor = load_processor(model_args)
    train_dataset, eval_dataset = build_datasets(script_args, patch_size_of(processor))

    reward_funcs = build_reward_funcs(script_args.reward_funcs)
    check_rewards_can_score(
        reward_funcs,
        train_dataset,
        reference_completion,
        source=script_args.train_file,
        full_marks=REFERENCE_FULL_MARKS,
    )
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


if __name__ == "__main__":
    main()
