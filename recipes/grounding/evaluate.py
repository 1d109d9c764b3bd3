"""Greedy evaluation of a finished (or checkpointed) run: point-in-box and IoU>0.5 accuracy.

Usage:  python recipes/grounding/evaluate.py RUN_DIR [--data_file FILE] [--max_samples N] [--batch_size 8]
Writes RUN_DIR/eval/ (or --out_dir): metrics.json, predictions.jsonl and predictions.png (true box green,
prediction red). RUN_DIR holds a LoRA adapter or full weights, plus run_config.yaml written by train.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import torch
from data import build_dataset
from PIL import Image, ImageDraw
from rewards import AccuracyCoordReward, IoUReward, frame_for_family, parse_box, parse_point, to_original

from core.evaluation import generate_greedy, load_trained_policy
from core.run import resolve_input_path

RECIPE_DIR = Path(__file__).resolve().parent
logger = logging.getLogger("evaluate")


def draw_grid(records: list[dict], images: list[Image.Image], path: Path, cell: int = 256, cols: int = 4) -> None:
    rows = math.ceil(len(records) / cols)
    grid = Image.new("RGB", (cols * cell, rows * (cell + 28)), "white")
    for i, (rec, img) in enumerate(zip(records, images, strict=True)):
        scale = cell / max(img.size)
        thumb = img.convert("RGB").resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
        draw = ImageDraw.Draw(thumb)
        truth = [v * scale for v in rec["solution"]]
        if len(truth) == 4:
            draw.rectangle(truth, outline=(0, 200, 0), width=2)
        else:
            draw.ellipse([truth[0] - 4, truth[1] - 4, truth[0] + 4, truth[1] + 4], outline=(0, 200, 0), width=2)
        pred = rec["prediction"]
        if pred is not None and len(pred) == 4:
            draw.rectangle([v * scale for v in pred], outline=(220, 0, 0), width=2)
        elif pred is not None:
            x, y = pred[0] * scale, pred[1] * scale
            draw.line([x - 5, y, x + 5, y], fill=(220, 0, 0), width=2)
            draw.line([x, y - 5, x, y + 5], fill=(220, 0, 0), width=2)
        x0, y0 = (i % cols) * cell, (i // cols) * (cell + 28)
        grid.paste(thumb, (x0, y0))
        caption = f"{rec['problem'][:34]}\nhit={rec['point_in_box']:.0f} iou={rec['iou'] or 0:.2f}"
        ImageDraw.Draw(grid).multiline_text((x0 + 3, y0 + cell), caption, fill=(0, 0, 0), spacing=1)
    grid.save(path)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data_file", help="records to evaluate (default: the run's eval_file, else train_file)")
    parser.add_argument("--images_root", help="default: the run's images_root, else the data file's folder")
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--grid_size", type=int, default=16, help="images in predictions.png")
    parser.add_argument("--out_dir", type=Path, help="default: RUN_DIR/eval")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor, family, cfg = load_trained_policy(args.run_dir, device)
    script = cfg["ScriptArguments"]
    data_file = resolve_input_path(args.data_file or script.get("eval_file") or script["train_file"], RECIPE_DIR)
    images_root = resolve_input_path(args.images_root or script.get("images_root"), RECIPE_DIR) or str(
        Path(data_file).parent
    )
    dataset = build_dataset(data_file, images_root, processor.image_processor, script.get("system_prompt"))
    if args.max_samples:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    frame = frame_for_family(family) if script.get("coord_frame", "auto") == "auto" else script["coord_frame"]
    accuracy, iou = AccuracyCoordReward(frame), IoUReward(frame)

    out_dir = args.out_dir or args.run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    grid_images: list[Image.Image] = []
    for start in range(0, len(dataset), args.batch_size):
        rows = [dataset[i] for i in range(start, min(start + args.batch_size, len(dataset)))]
        completions = generate_greedy(model, processor, rows, args.max_new_tokens)
        columns = {k: [r[k] for r in rows] for k in ("solution", "image_size", "model_image_size")}
        hits = accuracy(completions, **columns)
        ious = iou(completions, **columns)
        for row, text, hit, score in zip(rows, completions, hits, ious, strict=True):
            raw = parse_box(text) or parse_point(text)
            pred = to_original(raw, frame, row["image_size"], row["model_image_size"]) if raw else None
            records.append(
                {
                    "id": row["id"],
                    "problem": row["problem"],
                    "completion": text,
                    "prediction": pred,
                    "solution": row["solution"],
                    "point_in_box": float(hit or 0.0),
                    "iou": score,
                }
            )
            if len(grid_images) < args.grid_size:
                # back to the frame of solution/prediction: an over-budget image was downscaled at load (core.images)
                grid_images.append(row["image"].resize(tuple(row["image_size"])))
        logger.info("evaluated %d/%d", len(records), len(dataset))

    box_scores = [r["iou"] for r in records if r["iou"] is not None]
    metrics = {
        "num_samples": len(records),
        "point_in_box_accuracy": sum(r["point_in_box"] for r in records) / max(len(records), 1),
        "iou_0.5_accuracy": sum(s > 0.5 for s in box_scores) / max(len(box_scores), 1),
        "mean_iou": sum(box_scores) / max(len(box_scores), 1),
        "parse_rate": sum(r["prediction"] is not None for r in records) / max(len(records), 1),
    }
    (out_dir / "metrics.json").write_text(json.dumps({**metrics, "data_file": data_file, "frame": frame}, indent=2))
    with open(out_dir / "predictions.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    draw_grid(records[: len(grid_images)], grid_images, out_dir / "predictions.png")
    print(json.dumps(metrics, indent=2))
    print(f"wrote {out_dir}/metrics.json, predictions.jsonl, predictions.png")
    return metrics


if __name__ == "__main__":
    main()
