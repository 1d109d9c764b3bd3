"""Judge the edits a trained (or checkpointed) run makes: Complex-Edit scores per criterion and overall.

Usage:  python recipes/image_edit/evaluate.py RUN_DIR [--max_samples 16] [--splits test_real] [--complexities 1 2]
            [--judge_prompts_from PATH/TO/Complex-Edit] [--judge_samples 20]
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
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch
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
from core.evaluation.loading import load_trained_pipeline
from core.rewards.judge import JudgeArguments, JudgeClient
from core.rewards.judge_server import start_local_judge_if_asked
from core.training.prompts import encode_prompts
from core.training.run import resolve_dataset_source

RECIPE_DIR = Path(__file__).resolve().parent
logger = logging.getLogger("evaluate")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--dataset", help="default: the run's dataset")
    parser.add_argument("--splits", nargs="+", help="default: the run's splits")
    parser.add_argument("--complexities", nargs="+", type=int, help="default: the run's complexities")
    parser.add_argument("--max_samples", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--out_dir", type=Path, help="default: RUN_DIR/eval")
    parser.add_argument(
        "--judge_prompts_from",
        help="local checkout of UCSC-VLAA/Complex-Edit to read the official judge prompts from (default: the run's "
        "judge_prompts_from; none: the project's own wording, numbers not comparable with published ones)",
    )
    parser.add_argument("--judge_samples", type=int, default=OFFICIAL_SAMPLES, help="judge draws per call (official)")
    parser.add_argument("--judge_temperature", type=float, default=OFFICIAL_TEMPERATURE, help="official: 1.0")
    parser.add_argument("--judge_max_tokens", type=int, default=OFFICIAL_MAX_TOKENS, help="official: 512")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipeline, cfg = load_trained_pipeline(args.run_dir, device, edit=True)
    script = cfg["ScriptArguments"]
    # The run's VAE memory switches (renders as training rendered them; runs from before these keys: off).
    configure_vae(
        pipeline, script.get("vae_tiling", False), script.get("vae_slicing", False), script.get("vae_tile_size")
    )
    prompts = load_prompts(args.judge_prompts_from or script.get("judge_prompts_from"))
    processor, model = pipeline.processor, pipeline.text_encoder
    data = build_dataset(
        resolve_dataset_source(args.dataset or script["dataset"], RECIPE_DIR),
        template_system_prompt(pipeline),
        args.splits or script["splits"],
        args.complexities or script["complexities"],
        args.max_samples,
    )
    area = script.get("condition_area")
    rows = [data[i] for i in range(len(data))]
    images = [condition_images(pipeline, [r["image"]], area)[0] for r in rows]

    judge_fields = {f.name for f in dataclasses.fields(JudgeArguments)}
    judge_args = JudgeArguments(**{k: v for k, v in script.items() if k in judge_fields})
    judge_args.judge_temperature, judge_args.judge_max_tokens = args.judge_temperature, args.judge_max_tokens
    server = start_local_judge_if_asked(
        judge_args, finished_run=True
    )  # the run's local judge, if any, is gone: a fresh one
    judge = JudgeClient(judge_args)
    judge.check()

    with torch.no_grad():
        side, processor.tokenizer.padding_side = processor.tokenizer.padding_side, "left"  # batched generation
        enc = encode_prompts(processor, [r["prompt"] for r in rows], images=[[img] for img in images]).to(device)
        processor.tokenizer.padding_side = side  # the embeddings pad as the pipeline does
        out = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False)
        completion_ids = [
            [t for t in seq.tolist() if t != processor.tokenizer.pad_token_id]
            for seq in out[:, enc["input_ids"].shape[1] :]
        ]
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
    edited = renderer.render([r["instruction"] for r in rows], completion_ids, images, model=model)
    instructions = [r["instruction"] for r in rows]
    scores = score_edits(judge, images, edited, instructions, prompts, args.judge_samples)
    judge.close()
    if server is not None:
        server.close()

    out_dir = args.out_dir or args.run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
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
    metrics["protocol"] = protocol_record(prompts, args, judge_args.judge_model)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with open(out_dir / "predictions.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    cell = 160
    sheet = Image.new("RGB", (2 * cell + 260, cell * len(records)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (rec, img, ed) in enumerate(zip(records, images, edited, strict=True)):
        sheet.paste(img.convert("RGB").resize((cell, cell)), (0, i * cell))
        sheet.paste(ed.convert("RGB").resize((cell, cell)), (cell, i * cell))
        text = [rec["instruction"][:40]] + [f"{c[:22]}: {rec[c]}" for c in CRITERIA]
        draw.multiline_text((2 * cell + 6, i * cell + 4), "\n".join(text), fill=(0, 0, 0))
    sheet.save(out_dir / "predictions.png")
    print(json.dumps(metrics, indent=2))
    print(f"wrote {out_dir}/metrics.json, predictions.jsonl, predictions.png")
    return metrics


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
