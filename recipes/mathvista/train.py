"""GRPO for visual math: Gemma-3 answers MathVista questions as <REASONING>...</REASONING><SOLUTION>...</SOLUTION>.

One GPU (the original: Unsloth, 4-bit, vLLM):
         python recipes/mathvista/train.py --config recipes/mathvista/config.yaml
Launch:  bash recipes/mathvista/run_8gpu.sh                  (8 GPUs, config.yaml with backend transformers)
         SMOKE=1 bash recipes/mathvista/run_8gpu.sh          (CPU, config_smoke.yaml, 2 processes)
Direct:  python recipes/mathvista/train.py --config recipes/mathvista/config_smoke.yaml --output_dir outputs/smoke
The adapter, processor and resolved config land in OUTPUT_DIR/final_model/ (see infer.py and evaluate.py).
main() runs the sections every recipe's train.py runs, in the same order: parse -> check -> data -> rewards -> model
-> trainer -> train, save.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from data import HUB_NAME, build_dataset
from rewards import REWARD_NAMES, RewardConfig, build_reward_funcs, reference_completion, reference_full_marks

from core.plan.memory import warn_if_over_budget
from core.ranges import AT_LEAST_ONE, NON_NEGATIVE
from core.rewards.contract import check_rewards_can_score
from core.training.backends import BACKENDS, check_backend, load_unsloth_policy, unsloth_grpo_trainer
from core.training.config import parse_config
from core.training.lora import build_lora_config, freeze_for_full_finetune
from core.training.models import load_model, load_processor
from core.training.run import resolve_dataset_source, setup_logging, setup_run, train_and_save
from core.training.trainer import VLMGRPOTrainer
from core.training.warm_start import warm_start_checkpoint

RECIPE_DIR = Path(__file__).resolve().parent
FINAL_DIR = "final_model"
_DEFAULT_REWARDS = RewardConfig()
# The original project's key names (its config.yaml had a `reward:` section and Unsloth's LoRA switches).
ALIASES = {
    "reward.reasoning_start": "reasoning_start",
    "reward.reasoning_end": "reasoning_end",
    "reward.solution_start": "solution_start",
    "reward.solution_end": "solution_end",
    "reward.formatting_reward": "formatting_reward",
    "reward.correctness_reward": "correctness_reward",
    "finetune_vision_layers": "train_vision",
    "finetune_language_layers": "train_language",
}


@dataclass
class ScriptArguments:
    backend: str = field(
        default="transformers",
        metadata={
            "help": f"How the policy is built and sampled: one of {', '.join(BACKENDS)}. unsloth = the original "
            "(FastVisionModel, 4-bit, vLLM; one NVIDIA GPU); transformers = transformers + PEFT (optional "
            "bitsandbytes 4-bit, TRL's use_vllm), any device count, CPU included."
        },
    )
    dataset_name: str = field(
        default=HUB_NAME,
        metadata={
            "help": "Hub dataset id, a local folder in the hub layout (sample.py writes one), or a "
            "MathVista-style .json/.jsonl file. Relative paths: working directory first, then this recipe's folder."
        },
    )
    dataset_train_split: str = field(
        default="testmini", metadata={"help": "Split to train on. Old key: dataset_split."}
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={
            "range": AT_LEAST_ONE,
            "help": "Train on the first N rows only (evaluate.py then defaults to the rest). Old key: max_samples.",
        },
    )
    image_size: int = field(
        default=512,
        metadata={"range": AT_LEAST_ONE, "help": "Images are downscaled so their longest side is at most this (RGB)."},
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system message for every prompt."})
    reward_funcs: list[str] = field(
        default_factory=lambda: list(REWARD_NAMES),
        metadata={"help": f"Rewards, any of {', '.join(REWARD_NAMES)} or 'package.module:function'."},
    )
    reasoning_start: str = field(default=_DEFAULT_REWARDS.reasoning_start, metadata={"help": "Opens the reasoning."})
    reasoning_end: str = field(default=_DEFAULT_REWARDS.reasoning_end, metadata={"help": "Closes the reasoning."})
    solution_start: str = field(default=_DEFAULT_REWARDS.solution_start, metadata={"help": "Opens the final answer."})
    solution_end: str = field(default=_DEFAULT_REWARDS.solution_end, metadata={"help": "Closes the final answer."})
    formatting_reward: float = field(
        default=_DEFAULT_REWARDS.formatting_reward,
        metadata={
            "range": NON_NEGATIVE,
            "help": "Paid once for exactly one reasoning block and once for exactly one solution block.",
        },
    )
    correctness_reward: float = field(
        default=_DEFAULT_REWARDS.correctness_reward,
        metadata={
            "range": NON_NEGATIVE,
            "help": "Paid when the one solution block holds the right answer (MathVista's matching rules).",
        },
    )
    max_seq_length: int = field(
        default=2048,
        metadata={
            "range": AT_LEAST_ONE,
            "help": "backend unsloth: longest prompt + completion it prepares (vLLM) for.",
        },
    )


def main() -> None:
    # ---- parse
    script_args, training_args, model_args = parse_config(ScriptArguments, aliases=ALIASES)

    # ---- check: refused before anything loads
    # (backend unsloth without an NVIDIA GPU stops here too)
    check_backend(script_args.backend, model_args, training_args)
    warn_if_over_budget(script_args, training_args, model_args)
    setup_logging(training_args)

    # ---- data: checked before any weights load
    reward_cfg = RewardConfig.from_object(script_args)
    train_dataset = build_dataset(
        resolve_dataset_source(script_args.dataset_name, RECIPE_DIR),
        split=script_args.dataset_train_split,
        max_samples=script_args.max_train_samples,
        image_size=script_args.image_size,
        reward_cfg=reward_cfg,
        system_prompt=script_args.system_prompt,
    )

    # ---- rewards: checked before any weights load
    # Every reward must score the reference answers (core.rewards.contract.check_rewards_can_score).
    reward_funcs = build_reward_funcs(script_args.reward_funcs, reward_cfg)
    check_rewards_can_score(
        reward_funcs,
        train_dataset,
        reference_completion(reward_cfg),
        source=script_args.dataset_name,
        full_marks=reference_full_marks(reward_cfg),
    )

    # ---- model: the output folder is claimed (setup_run), then the weights load
    resume = setup_run(training_args, script_args, model_args)
    if script_args.backend == "unsloth":
        model, processor = load_unsloth_policy(model_args, training_args, script_args.max_seq_length)
    else:
        processor = load_processor(model_args)
        # Smoke configs only: teach the random tiny policy the answer format, so groups differ
        # (core/training/warm_start.py).
        warm_start_checkpoint(
            model_args,
            processor,
            train_dataset,
            reference_completion(reward_cfg),
            chat_template_kwargs=training_args.chat_template_kwargs,
        )
        model = load_model(model_args)
        freeze_for_full_finetune(model, model_args)

    # ---- trainer
    common = dict(reward_funcs=reward_funcs, args=training_args, train_dataset=train_dataset)
    if script_args.backend == "unsloth":
        trainer = unsloth_grpo_trainer(model=model, processing_class=processor, **common)
    else:
        peft_config = build_lora_config(model, model_args)
        trainer = VLMGRPOTrainer(model=model, processing_class=processor, peft_config=peft_config, **common)

    # ---- train, save
    train_and_save(trainer, resume, final_dir=FINAL_DIR)


if __name__ == "__main__":
    main()
