"""GRPO on the Qwen2.5-VL text encoder of Qwen-Image-Edit, rewarded by a vision-language judge of the edits.

Launch:  bash recipes/image_edit/run_8gpu.sh                    (8 GPUs, LoRA, config.yaml)
         bash recipes/image_edit/run_8gpu_full_finetune.sh      (8 GPUs, full fine-tuning, ZeRO-3)
         SMOKE=1 bash recipes/image_edit/run_8gpu.sh            (CPU, tiny pipeline, local judge server)
Direct:  python recipes/image_edit/train.py --config recipes/image_edit/config_smoke.yaml --output_dir outputs/smoke
main() runs the sections every recipe's train.py runs, in the same order: parse -> check -> data -> rewards -> model
-> trainer -> train, save. The reward functions render with the policy's own pipeline, so they are built once the
model is loaded; the judge they ask is started and checked in the rewards section, before any weights.
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from data import load_edit_rows, rows_to_dataset
from judging import CRITERIA, load_prompts
from rewards import DEFAULT_REWARD_SAMPLES, EditRenderer, build_reward_funcs

from core.diffusion.pipeline import RenderMemoryArguments, condition_images, load_pipeline, template_system_prompt
from core.plan.memory import warn_if_over_budget
from core.ranges import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range
from core.rewards.judge import JudgeArguments, JudgeClient
from core.rewards.judge_server import start_local_judge_if_asked
from core.training.backends import check_backend
from core.training.config import parse_config
from core.training.logits_to_keep import ignore_logits_to_keep_if_needed
from core.training.lora import build_lora_config, freeze_for_full_finetune
from core.training.models import set_pixel_bounds, torch_dtype
from core.training.run import resolve_dataset_source, setup_logging, setup_run, train_and_save
from core.training.trainer import VLMGRPOTrainer

RECIPE_DIR = Path(__file__).resolve().parent


@dataclass
class ScriptArguments(JudgeArguments, RenderMemoryArguments):
    dataset_name: str = field(
        default="data/sample",
        metadata={
            "help": "Complex-Edit: a local save_to_disk folder (relative paths: working directory, then this "
            "recipe's folder) or the hub name UCSC-VLAA/Complex-Edit. Old key: dataset."
        },
    )
    dataset_train_split: list[str] = field(
        default_factory=lambda: ["test_real"], metadata={"help": "test_real and/or test_syn. Old key: splits."}
    )
    complexities: list[int] = field(
        default_factory=lambda: [1, 2, 3],
        metadata={"range": Range(1, 8), "help": "Instruction complexity levels 1..8 to train on."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"range": AT_LEAST_ONE, "help": "Use only the first N prompts."}
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: list(CRITERIA),
        metadata={
            "help": f"Judge criteria ({', '.join(CRITERIA)}) or 'package.module:function'; weights via "
            "reward_weights (default equal: the mean)."
        },
    )
    judge_samples: int = field(
        default=DEFAULT_REWARD_SAMPLES,
        metadata={
            "range": AT_LEAST_ONE,
            "help": "Judge draws per call and sample, averaged (Complex-Edit's evaluation uses 20 at temperature 1.0; "
            "evaluate.py does). More draws: a less noisy reward, proportionally more judge requests.",
        },
    )
    judge_prompts_from: str | None = field(
        default=None,
        metadata={
            "help": "A local checkout of UCSC-VLAA/Complex-Edit: the judge prompts are read from it (official "
            "wording). Default: the project's own wording in rubric/ (scores not comparable with published ones)."
        },
    )
    num_inference_steps: int = field(
        default=20, metadata={"range": AT_LEAST_ONE, "help": "Denoising steps per rendered edit."}
    )
    edit_height: int | None = field(
        default=None, metadata={"range": AT_LEAST_ONE, "help": "Rendered height (default: the pipeline's)."}
    )
    edit_width: int | None = field(
        default=None, metadata={"range": AT_LEAST_ONE, "help": "Rendered width (default: the pipeline's)."}
    )
    true_cfg_scale: float = field(
        default=1.0,
        metadata={
            "range": POSITIVE,
            "help": "Pipeline CFG scale; 1.0 renders without a negative prompt (half the cost).",
        },
    )
    render_seed: int = field(
        default=0, metadata={"range": NON_NEGATIVE, "help": "Noise seed of every rendered edit (fair comparisons)."}
    )
    condition_area: int | None = field(
        default=None,
        metadata={
            "range": AT_LEAST_ONE,
            "help": "Pixels of the condition image the VLM and the DiT see (default: the pipeline's "
            "1024*1024); the smoke config uses 64*64.",
        },
    )


def main() -> None:
    # ---- parse
    script_args, training_args, model_args = parse_config(ScriptArguments)

    # ---- check: refused before anything loads
    check_backend("transformers", model_args, training_args, text_encoder_policy=True)
    warn_if_over_budget(script_args, training_args, model_args)
    setup_logging(training_args)
    prompts = load_prompts(script_args.judge_prompts_from)  # a wrong path fails here

    # ---- data: checked before any weights load
    # Splits, complexities, columns, images and zero rows fail in seconds, before the judge starts.
    rows = load_edit_rows(
        resolve_dataset_source(script_args.dataset_name, RECIPE_DIR),
        script_args.dataset_train_split,
        script_args.complexities,
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
            edit=True,
            **script_args.pipeline_memory_kwargs(),
        )
        model, processor = ignore_logits_to_keep_if_needed(pipeline.text_encoder), pipeline.processor
        set_pixel_bounds(processor, model_args.min_pixels, model_args.max_pixels)
        # The prompts take the pipeline's own template; the policy generates from, and is later re-run on, the
        # condition image the pipeline would make: same tokens.
        area = script_args.condition_area
        train_dataset = rows_to_dataset(rows, template_system_prompt(pipeline))
        train_dataset = train_dataset.map(lambda row: {"image": condition_images(pipeline, [row["image"]], area)[0]})
        # The rewards render each completion's edit with the pipeline, then ask the judge.
        renderer = EditRenderer(
            pipeline,
            processor,
            script_args.num_inference_steps,
            script_args.render_seed,
            script_args.edit_height,
            script_args.edit_width,
            script_args.true_cfg_scale,
            area,
            offload_dit=script_args.offload_dit,
            log_images_steps=script_args.log_images_steps,
        )
        reward_funcs = build_reward_funcs(script_args.reward_funcs, renderer, judge, prompts, script_args.judge_samples)
        freeze_for_full_finetune(model, model_args)

        # ---- trainer
        trainer = VLMGRPOTrainer(
            model=model,
            reward_funcs=reward_funcs,
            args=training_args,
            train_dataset=train_dataset,
            processing_class=processor,
            peft_config=build_lora_config(model, model_args),
        )
        renderer.bind(trainer)

        # ---- train, save
        train_and_save(trainer, resume)


if __name__ == "__main__":
    main()
