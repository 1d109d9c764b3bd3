"""Judge the edits a trained (or checkpointed) run makes: Complex-Edit scores per criterion and overall.

Usage:  python recipes/image_edit/evaluate.py RUN_DIR [--max_samples 16] [--splits test_real] [--complexities 1 2]
Writes RUN_DIR/eval/ (or --out_dir): metrics.json, predictions.jsonl and predictions.png (input | edit, scores).
Greedy completions from the trained VLM, rendered by the frozen pipeline and scored by the judge of the run's config
(`judge_base_url: local` starts the project's local judge server again).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from data import build_dataset
from PIL import Image, ImageDraw
from rewards import CRITERIA, RUBRIC_DIR, USES_ORIGINAL

from core.diffusion import PolicyRenderer, condition_images, template_system_prompt
from core.evaluation import load_trained_pipeline
from core.judge import JudgeArguments, JudgeClient, JudgeRequest, parse_score
from core.judge_server import start_local_judge_if_asked
from core.prompts import encode_prompts
from core.run import resolve_dataset_source

RECIPE_DIR = Path(__file__).resolve().parent
logger = logging.getLogger("evaluate")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--dataset", help="default: the run's dataset")
    parser.add_argument("--splits", nargs="+", help="default: the run's splits")
    parser.add_argument("--complexities", nargs="+", type=int, help="default: the run's complexities")
    parser.add_argument("--max_samples", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--out_dir", type=Path, help="default: RUN_DIR/eval")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipeline, cfg = load_trained_pipeline(args.run_dir, device, edit=True)
    script = cfg["ScriptArguments"]
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

    judge_args = JudgeArguments(**{k: v for k, v in script.items() if k.startswith("judge_")})
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
    )
    edited = renderer.render([r["instruction"] for r in rows], completion_ids, images, model=model)
    scores: dict[str, list[float | None]] = {}
    for criterion in CRITERIA:
        template = (RUBRIC_DIR / f"{criterion}.txt").read_text()
        requests = [
            JudgeRequest(
                prompt=template.format(instruction=r["instruction"]),
                images=(img, ed) if USES_ORIGINAL[criterion] else (ed,),
            )
            for r, img, ed in zip(rows, images, edited, strict=True)
        ]
        scores[criterion] = judge.score(requests, parse_score)
    judge.close()
    if server is not None:
        server.close()

    out_dir = args.out_dir or args.run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for i, row in enumerate(rows):
        per = {c: scores[c][i] for c in CRITERIA}
        valid = [v for v in per.values() if v is not None]
        records.append(
            {
                "id": row["id"],
                "instruction": row["instruction"],
                "completion": processor.decode(completion_ids[i], skip_special_tokens=True),
                **per,
                "overall": sum(valid) / len(valid) if len(valid) == len(CRITERIA) else None,
            }
        )
    metrics: dict[str, float] = {"num_samples": len(records)}
    for key in (*CRITERIA, "overall"):
        valid = [r[key] for r in records if r[key] is not None]
        metrics[key] = sum(valid) / len(valid) if valid else float("nan")
        metrics[f"{key}_scored"] = len(valid)
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


if __name__ == "__main__":
    main()
