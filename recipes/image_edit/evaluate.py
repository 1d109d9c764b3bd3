"""Judge the edits a trained (or checkpointed) run makes: Complex-Edit scores per criterion and overall.

Usage:  python recipes/image_edit/evaluate.py RUN_DIR [--dataset_name D] [--max_samples 16] [--splits test_real]
            [--complexities 1 2] [--judge_prompts_from PATH/TO/Complex-Edit] [--judge_samples 20] [--batch_size 8]
            [--max_new_tokens 128] [--out_dir DIR]   (the shared flags: core/evaluation/cli.py)
Writes RUN_DIR/eval/ (or --out_dir): metrics.json, predictions.jsonl and predictions.png (input | edit, scores).
Greedy completions from the trained VLM, rendered by the frozen pipeline and scored by the judge of the run's config
(`judge_base_url: local` starts the project's local judge server again) with the official Complex-Edit protocol
(`judging.py`): one alignment call and one perceptual-quality call per edit, each sampled `--judge_samples` times
(official: 20) at `--judge_temperature` (official: 1.0), criterion = mean of the draws, overall = mean of the three
criteria, benchmark number = mean over edits. metrics.json's `protocol` says which prompts, draws and judge produced
the numbers, and whether they are comparable with published Complex-Edit numbers (official prompts and judge model).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from data import build_dataset
from judging import (
    CRITERIA,
    OFFICIAL_JUDGE_MODEL,
    OFFICIAL_MAX_TOKENS,
    OFFICIAL_SAMPLES,
    OFFICIAL_TEMPERATURE,
    benchmark_means,
    load_prompts,
    overall,
    score_edits,
)
from PIL import Image, ImageDraw

from core.diffusion.pipeline import PolicyRenderer, condition_images, configure_vae, template_system_prompt
from core.errors import install_error_hook
from core.evaluation.cli import (
    data_source,
    eval_device,
    eval_parser,
    output_dir,
    parse_eval_args,
    report,
    run_judge,
    write_results,
)
from core.evaluation.loading import generate_completion_ids, load_trained_pipeline

RECIPE_DIR = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = eval_parser(
        __doc__,
        batch_size=8,
        max_new_tokens=128,
        max_samples=16,
        max_samples_help="edits to judge (the first ones of the selection)",
        data_help="default: the run's dataset_name",
    )
    parser.add_argument("--splits", nargs="+", help="default: the run's dataset_train_split")
    parser.add_argument("--complexities", nargs="+", type=int, help="default: the run's complexities")
    parser.add_argument(
        "--judge_prompts_from",
        help="local checkout of UCSC-VLAA/Complex-Edit to read the official judge prompts from (default: the run's "
        "judge_prompts_from; none: the project's own wording, numbers not comparable with published ones)",
    )
    parser.add_argument("--judge_samples", type=int, default=OFFICIAL_SAMPLES, help="judge draws per call (official)")
    parser.add_argument("--judge_temperature", type=float, default=OFFICIAL_TEMPERATURE, help="official: 1.0")
    parser.add_argument("--judge_max_tokens", type=int, default=OFFICIAL_MAX_TOKENS, help="official: 512")
    args = parse_eval_args(parser, argv)

    device = eval_device()
    pipeline, cfg = load_trained_pipeline(args.run_dir, device, edit=True)
    script = cfg["ScriptArguments"]
    # The run's VAE memory switches (renders as training rendered them; runs from before these keys: off).
    configure_vae(
        pipeline, script.get("vae_tiling", False), script.get("vae_slicing", False), script.get("vae_tile_size")
    )
    prompts = load_prompts(args.judge_prompts_from or script.get("judge_prompts_from"))
    processor, model = pipeline.processor, pipeline.text_encoder
    data = build_dataset(
        data_source(args, script, RECIPE_DIR),
        template_system_prompt(pipeline),
        args.splits or script["dataset_train_split"],
        args.complexities or script["complexities"],
        args.max_samples,
    )
    area = script.get("condition_area")
    rows = [data[i] for i in range(len(data))]
    images = [condition_images(pipeline, [r["image"]], area)[0] for r in rows]
    instructions = [r["instruction"] for r in rows]

    # The run's judge with the official sampling (the draws are --judge_samples; a local judge starts afresh).
    with run_judge(script, judge_temperature=args.judge_temperature, judge_max_tokens=args.judge_max_tokens) as judge:
        prompt_messages = [r["prompt"] for r in rows]
        completion_ids = generate_completion_ids(
            model, processor, prompt_messages, images, args.max_new_tokens, args.batch_size
        )
        renderer = PolicyRenderer(
            pipeline,
            processor,
            script["num_inference_steps"],
            script["render_seed"],
            script.get("edit_height"),
            script.get("edit_width"),
            script["true_cfg_scale"],
            area,
            offload_dit=script.get("offload_dit", False),
        )
        edited = renderer.render(instructions, completion_ids, images, model=model)
        scores = score_edits(judge, images, edited, instructions, prompts, args.judge_samples)
        judge_model = judge.args.judge_model

    records = []
    for i, row in enumerate(rows):
        per = {c: scores[c][i] for c in CRITERIA}
        records.append(
            {
                "id": row["id"],
                "instruction": row["instruction"],
                "completion": processor.decode(completion_ids[i], skip_special_tokens=True),
                **per,
                "overall": None if per["instruction_following"] is None else overall(per),  # all or none
            }
        )
    metrics: dict[str, Any] = {"num_samples": len(records), **benchmark_means(records)}
    metrics["protocol"] = protocol_record(prompts, args, judge_model)
    out_dir = output_dir(args)
    written = write_results(out_dir, metrics, records)
    draw_edits(records, images, edited, out_dir / "predictions.png")
    report(metrics, [*written, out_dir / "predictions.png"])
    return metrics


def draw_edits(
    records: list[dict[str, Any]], images: list[Any], edited: list[Any], path: Path, cell: int = 160
) -> None:
    """predictions.png: per edit, the input, the edit and the judge's scores per criterion."""
    sheet = Image.new("RGB", (2 * cell + 260, cell * len(records)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (rec, img, ed) in enumerate(zip(records, images, edited, strict=True)):
        sheet.paste(img.convert("RGB").resize((cell, cell)), (0, i * cell))
        sheet.paste(ed.convert("RGB").resize((cell, cell)), (cell, i * cell))
        text = [rec["instruction"][:40]] + [f"{c[:22]}: {rec[c]}" for c in CRITERIA]
        draw.multiline_text((2 * cell + 6, i * cell + 4), "\n".join(text), fill=(0, 0, 0))
    sheet.save(path)


def protocol_record(prompts: Any, args: argparse.Namespace, judge_model: str) -> dict[str, Any]:
    """Which protocol produced the numbers: prompts, draws, sampling, judge, and whether they are comparable with
    published Complex-Edit numbers: official prompts, the official judge model, and the official estimator (the mean
    of OFFICIAL_SAMPLES draws at OFFICIAL_TEMPERATURE; one greedy draw estimates a different quantity)."""
    official_draws = args.judge_samples == OFFICIAL_SAMPLES and args.judge_temperature == OFFICIAL_TEMPERATURE
    comparable = prompts.source == "official" and judge_model == OFFICIAL_JUDGE_MODEL and official_draws
    if prompts.source != "official":
        note = "own prompt wording (rubric/): not comparable with published Complex-Edit numbers"
    elif judge_model != OFFICIAL_JUDGE_MODEL:
        note = f"official prompts, but judge {judge_model!r} (published: {OFFICIAL_JUDGE_MODEL}): not comparable"
    elif not official_draws:
        note = (
            f"official prompts and judge, but {args.judge_samples} draw(s) at temperature {args.judge_temperature:g} "
            f"(published: {OFFICIAL_SAMPLES} at {OFFICIAL_TEMPERATURE:g}): not comparable"
        )
    else:
        note = "official prompts, judge model and draws: comparable with published Complex-Edit numbers"
    return {
        **prompts.describe(),
        "judge_samples": args.judge_samples,
        "judge_temperature": args.judge_temperature,
        "judge_max_tokens": args.judge_max_tokens,
        "judge_model": judge_model,
        "scale": "0-10 (criterion: mean of the draws; overall: mean of the three criteria; reported: mean over edits)",
        "comparable_with_published": comparable,
        "note": note,
    }


if __name__ == "__main__":
    install_error_hook()  # a wrong folder or a killed run: one message, exit 2, no traceback
    main()
