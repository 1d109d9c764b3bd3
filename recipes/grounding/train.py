"""GRPO for visual grounding: point at / box the region a sentence describes (Qwen2.5-VL by default).

Launch:  bash recipes/grounding/run_8gpu.sh                  (8 GPUs, config.yaml)
         SMOKE=1 bash recipes/grounding/run_8gpu.sh          (CPU, config_smoke.yaml, 2 processes)
Direct:  python recipes/grounding/train.py --config recipes/grounding/config_smoke.yaml --output_dir outputs/smoke
main() runs the sections every recipe's train.py runs, in the same order: parse -> check -> data -> rewards -> model
-> trainer -> train, save.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from data import build_dataset
from datasets import Dataset
from rewards import (
    FRAMES,
    REFERENCE_FULL_MARKS,
    REWARD_NAMES,
    build_reward_funcs,
    frame_for_family,
    reference_completion,
)

from core.plan.memory import warn_if_over_budget
from core.ranges import AT_LEAST_ONE
from core.rewards.contract import check_rewards_can_score
from core.training.backends import check_backend
from core.training.config import parse_config
from core.training.lora import build_lora_config, freeze_for_full_finetune
from core.training.models import load_model, load_processor, model_family
from core.training.run import resolve_input_path, setup_logging, setup_run, train_and_save
from core.training.trainer import VLMGRPOTrainer
from core.training.warm_start import warm_start_checkpoint

RECIPE_DIR = Path(__file__).resolve().parent


@dataclass
class ScriptArguments:
    dataset_name: str = field(
        metadata={"help": "JSON or JSONL records: id, image, problem, solution (see data.py). Old key: train_file."}
    )
    eval_dataset_name: str | None = field(
        default=None, metadata={"help": "Optional held-out records in the same format. Old key: eval_file."}
    )
    images_root: str | None = field(
        default=None,
        metadata={
            "help": "Folder that relative image paths of dataset_name and eval_dataset_name are resolved against "
            "(default: each data file's own folder). Relative data paths are tried from the working directory, then "
            "from this recipe's folder."
        },
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy_reward_coord", "iou_reward", "format_reward"],
        metadata={"help": f"Rewards to optimise, any of {', '.join(REWARD_NAMES)}; weights via reward_weights."},
    )
    coord_frame: str = field(
        default="auto",
        metadata={"help": f"Frame the model answers in: auto (by model family) or one of {', '.join(FRAMES)}."},
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system message for every prompt."})
    max_train_samples: int | None = field(
        default=None, metadata={"range": AT_LEAST_ONE, "help": "Use only the first N training rows."}
    )


def build_datasets(script_args: ScriptArguments, processor: Any) -> tuple[Dataset, Dataset | None]:
    """Train and (optional) eval datasets. Each file's relative image paths resolve from that file's own folder
    unless images_root is set, as evaluate.py does, so an eval file kept elsewhere finds its own images."""
    images_root = resolve_input_path(script_args.images_root, RECIPE_DIR)
    build = partial(
        build_dataset,
        images_root=images_root,
        image_processor=processor.image_processor,
        system_prompt=script_args.system_prompt,
    )
    train_dataset = build(resolve_input_path(script_args.dataset_name, RECIPE_DIR))
    if script_args.max_train_samples:
        train_dataset = train_dataset.select(range(min(script_args.max_train_samples, len(train_dataset))))
    eval_file = resolve_input_path(script_args.eval_dataset_name, RECIPE_DIR)
    return train_dataset, build(eval_file) if eval_file else None


def main() -> None:
    # ---- parse
    script_args, training_args, model_args = parse_config(ScriptArguments)

    # ---- check: refused before anything loads
    check_backend("transformers", model_args, training_args)
    warn_if_over_budget(script_args, training_args, model_args)
    setup_logging(training_args)

    # ---- data: checked before any weights load
    processor, family = load_processor(model_args), model_family(model_args.model_name_or_path)
    train_dataset, eval_dataset = build_datasets(script_args, processor)

    # ---- rewards: checked before any weights load
    # Every reward must score the reference answers (core.rewards.contract.check_rewards_can_score).
    frame = frame_for_family(family) if script_args.coord_frame == "auto" else script_args.coord_frame
    reward_funcs = build_reward_funcs(script_args.reward_funcs, frame)
    check_rewards_can_score(
        reward_funcs,
        train_dataset,
        reference_completion(frame),
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
        reference_completion(frame),
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
