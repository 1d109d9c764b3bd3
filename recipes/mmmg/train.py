"""GRPO on the Qwen2.5-VL text encoder of Qwen-Image for knowledge images, scored by the MMMG judge protocol.

Launch:  bash recipes/mmmg/run_8gpu.sh                    (8 GPUs, LoRA, config.yaml)
         SMOKE=1 bash recipes/mmmg/run_8gpu.sh            (CPU, tiny pipeline, local judge server)
Direct:  python recipes/mmmg/train.py --config recipes/mmmg/config_smoke.yaml --output_dir outputs/smoke
main() runs the sections every recipe's train.py runs, in the same order: parse -> check -> data -> rewards -> model
-> trainer -> train, save. The reward functions render with the policy's own pipeline, so they are built once the
model is loaded; the judge they ask is started and checked in the rewards section, before any weights.
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from data import DISCIPLINES, LEVELS, load_mmmg, rows_to_dataset
from rewards import build_reward_funcs

from core.diffusion.pipeline import PolicyRenderer, RenderMemoryArguments, load_pipeline, template_system_prompt
from core.plan.memory import warn_if_over_budget
from core.ranges import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE
from core.rewards.judge import JudgeArguments, JudgeClient
from core.rewards.judge_server import start_local_judge_if_asked
from core.training.backends import check_backend
from core.training.config import parse_config
from core.training.logits_to_keep import ignore_logits_to_keep_if_needed
from core.training.lora import build_lora_config, freeze_for_full_finetune
from core.training.models import torch_dtype
from core.training.run import resolve_dataset_source, setup_logging, setup_run, train_and_save
from core.training.trainer import VLMGRPOTrainer

RECIPE_DIR = Path(__file__).resolve().parent


@dataclass
class ScriptArguments(JudgeArguments, RenderMemoryArguments):
    dataset_name: str = field(
        default="data/sample",
        metadata={
            "help": "MMMG: the hub name MMMGbench/MMMG or a local folder written by sample.py. Old key: dataset."
        },
    )
    levels: list[str] | None = field(default=None, metadata={"help": f"Any of {', '.join(LEVELS)} (default: all)."})
    disciplines: list[str] | None = field(
        default=None, metadata={"help": f"Any of {', '.join(DISCIPLINES)} (default: all)."}
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt text."})
    max_train_samples: int | None = field(
        default=None,
        metadata={"range": AT_LEAST_ONE, "help": "At most N prompts per level_discipline config (keeps the mix)."},
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["knowledge_fidelity"],
        metadata={"help": "knowledge_fidelity (MMMG's protocol) and/or 'package.module:function'."},
    )
    num_inference_steps: int = field(
        default=20, metadata={"range": AT_LEAST_ONE, "help": "Denoising steps per rendered image."}
    )
    image_height: int | None = field(
        default=None, metadata={"range": AT_LEAST_ONE, "help": "Rendered height (default: the pipeline's)."}
    )
    image_width: int | None = field(
        default=None, metadata={"range": AT_LEAST_ONE, "help": "Rendered width (default: the pipeline's)."}
    )
    true_cfg_scale: float = field(
        default=1.0, metadata={"range": POSITIVE, "help": "CFG scale; 1.0 renders without a negative prompt."}
    )
    render_seed: int = field(default=0, metadata={"range": NON_NEGATIVE, "help": "Noise seed of every rendered image."})
    readability: bool = field(
        default=False,
        metadata={"help": "Multiply by MMMG's readability term R (needs SAM2 weights for region counts; off)."},
    )


def main() -> None:
    # ---- parse
    script_args, training_args, model_args = parse_config(ScriptArguments)

    # ---- check: refused before anything loads
    check_backend("transformers", model_args, training_args, text_encoder_policy=True)
    warn_if_over_budget(script_args, training_args, model_args)
    setup_logging(training_args)
    if script_args.readability:
        raise SystemExit(
            "readability needs SAM2 region counts, which this recipe does not ship (see README); set readability: false"
        )

    # ---- data: checked before any weights load
    # Levels, disciplines, prompt column, knowledge graphs and zero rows fail in seconds, before the judge starts.
    rows = load_mmmg(
        resolve_dataset_source(script_args.dataset_name, RECIPE_DIR),
        script_args.levels,
        script_args.disciplines,
        script_args.prompt_column,
        script_args.max_train_samples,
    )

    # ---- rewards: checked before any weights load
    # The judge (and the local judge server of `judge_base_url: local`) is held until the run ends; the reward
    # functions render with the policy's own pipeline, so they are built once it is loaded.
    with ExitStack() as resources:
        resources.enter_context(start_local_judge_if_asked(script_args) or nullcontext())
        judge = resources.enter_context(JudgeClient(script_args))
        judge.check()  # a misconfigured judge fails here, before the output folder or any weights

        # ---- model: the output folder is claimed (setup_run), then the weights load
        resume = setup_run(training_args, script_args, model_args)
        # The pipeline's own text encoder is the policy: its images always reflect the weights being trained.
        pipeline = load_pipeline(
            model_args.model_name_or_path,
            dtype=torch_dtype(model_args.dtype),
            device=training_args.device,
            edit=False,
            **script_args.pipeline_memory_kwargs(),
        )
        model, tokenizer = ignore_logits_to_keep_if_needed(pipeline.text_encoder), pipeline.tokenizer
        # The prompts take the pipeline's own template.
        train_dataset = rows_to_dataset(rows, template_system_prompt(pipeline))
        # The rewards render each completion's image with the pipeline, then ask the judge.
        renderer = PolicyRenderer(
            pipeline,
            tokenizer,
            script_args.num_inference_steps,
            script_args.render_seed,
            script_args.image_height,
            script_args.image_width,
            script_args.true_cfg_scale,
            offload_dit=script_args.offload_dit,
            log_images_steps=script_args.log_images_steps,
        )
        reward_funcs = build_reward_funcs(script_args.reward_funcs, renderer, judge)
        freeze_for_full_finetune(model, model_args)

        # ---- trainer
        trainer = VLMGRPOTrainer(
            model=model,
            reward_funcs=reward_funcs,
            args=training_args,
            train_dataset=train_dataset,
            processing_class=tokenizer,
            peft_config=build_lora_config(model, model_args),
        )
        renderer.bind(trainer)

        # ---- train, save
        train_and_save(trainer, resume)


if __name__ == "__main__":
    main()
