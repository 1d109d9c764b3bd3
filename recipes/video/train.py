"""GRPO on video: order the actions seen in a clip (Qwen2.5-VL by default).

Launch:  bash recipes/video/run_8gpu.sh                  (8 GPUs, config.yaml)
         SMOKE=1 bash recipes/video/run_8gpu.sh          (CPU, config_smoke.yaml, 2 processes)
Direct:  python recipes/video/train.py --config recipes/video/config_smoke.yaml --output_dir outputs/smoke
main() runs the sections every recipe's train.py runs, in the same order: parse -> check -> data -> rewards -> model
-> trainer -> train, save.
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
from core.training.run import resolve_input_path, setup_logging, setup_run, train_and_save
from core.training.trainer import VLMGRPOTrainer
from core.training.warm_start import warm_start_checkpoint

RECIPE_DIR = Path(__file__).resolve().parent
# The original project's config names keep working, as keys and flags: each is renamed to the field doing the job
# (the names every recipe used to have, such as train_file, are core.training.config.COMMON_ALIASES).
ALIASES = {
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
    dataset_name: str = field(
        metadata={"help": "JSON/JSONL records: id, conversations, video, meta (see data.py). Old key: train_file."}
    )
    eval_dataset_name: str | None = field(
        default=None, metadata={"help": "Optional held-out records in the same format. Old key: eval_file."}
    )
    video_root: str | None = field(
        default=None,
        metadata={
            "help": "Folder relative video paths of dataset_name and eval_dataset_name start from (default: each "
            "data file's own folder). Relative data paths are tried from the working directory, then from this "
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
    train_dataset = build_dataset(resolve_input_path(script_args.dataset_name, RECIPE_DIR), **data_kwargs)
    if script_args.max_train_samples:
        train_dataset = train_dataset.select(range(min(script_args.max_train_samples, len(train_dataset))))
    eval_file = resolve_input_path(script_args.eval_dataset_name, RECIPE_DIR)
    return train_dataset, build_dataset(eval_file, **data_kwargs) if eval_file else None


def reward_weights(script_args: ScriptArguments) -> list[float]:
    """The original's reward weighting as TRL's reward_weights: grpo_alpha x each reward's own weight (1.0 for a
    reward the original had no weight for)."""
    weights = {
        "format_reward": script_args.format_reward_weight,
        "accuracy_reward": script_args.accuracy_reward_weight,
        "ordered_accuracy_reward": script_args.accuracy_reward_weight,
    }
    return [script_args.grpo_alpha * weights.get(name, 1.0) for name in script_args.reward_funcs]


def main() -> None:
    # ---- parse
    script_args, training_args, model_args = parse_config(ScriptArguments, aliases=ALIASES)

    # ---- check: refused before anything loads
    check_backend("transformers", model_args, training_args, video=True)
    warn_if_over_budget(script_args, training_args, model_args)
    setup_logging(training_args)

    # ---- data: checked before any weights load
    processor = load_processor(model_args)
    train_dataset, eval_dataset = build_datasets(script_args, patch_size_of(processor))

    # ---- rewards: checked before any weights load
    # Every reward must score the reference answers (core.rewards.contract.check_rewards_can_score).
    reward_funcs = build_reward_funcs(script_args.reward_funcs)
    if training_args.reward_weights is None:
        training_args.reward_weights = reward_weights(script_args)
    check_rewards_can_score(
        reward_funcs,
        train_dataset,
        reference_completion,
        source=script_args.dataset_name,
        full_marks=REFERENCE_FULL_MARKS,
    )

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
