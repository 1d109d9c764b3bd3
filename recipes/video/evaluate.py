"""Greedy evaluation of a finished (or checkpointed) video run: exact-order accuracy, action-set IoU, format rate.

Usage:  python recipes/video/evaluate.py RUN_DIR [--data_file FILE] [--max_samples N] [--batch_size 4]
Writes RUN_DIR/eval/ (or --out_dir): metrics.json, predictions.jsonl and predictions.png (a strip of the sampled
frames per clip with the predicted and true actions). RUN_DIR holds a LoRA adapter or full weights, plus the
run_config.yaml written by train.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import textwrap
from pathlib import Path

import torch
from data import build_dataset
from PIL import Image, ImageDraw
from rewards import action_score, format_reward, parse_actions

from core.data.video import DEFAULT_FPS, patch_size_of
from core.errors import install_error_hook
from core.evaluation.loading import generate_greedy, load_trained_policy
from core.training.run import resolve_input_path

RECIPE_DIR = Path(__file__).resolve().parent
logger = logging.getLogger("evaluate")


def set_iou(predicted: list[str], truth: list[str]) -> float:
    p, t = set(predicted), set(truth)
    return len(p & t) / len(p | t) if p | t else 0.0


def draw_strips(records: list[dict], clips: list[list[Image.Image]], path: Path, frames: int = 8, cell: int = 96):
    """One row per clip: up to `frames` evenly spaced frames, then the predicted (top) and true (bottom) actions."""
    text_w, row_h = 420, cell + 8
    sheet = Image.new("RGB", (frames * cell + text_w, max(1, len(records)) * row_h), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (rec, clip) in enumerate(zip(records, clips, strict=True)):
        picks = [clip[round(i * (len(clip) - 1) / max(frames - 1, 1))] for i in range(min(frames, len(clip)))]
        for c, frame in enumerate(picks):
            thumb = frame.convert("RGB")
            thumb.thumbnail((cell, cell))
            sheet.paste(thumb, (c * cell, r * row_h))
        x, y = frames * cell + 6, r * row_h + 2
        colour = (0, 140, 0) if rec["exact"] else (200, 0, 0)
        pred = textwrap.shorten("pred: " + ("; ".join(rec["predicted_actions"]) or "(none)"), 70)
        draw.text((x, y), pred, fill=colour)
        draw.text((x, y + 16), textwrap.shorten("true: " + "; ".join(rec["actions"]), 70), fill=(0, 0, 0))
        draw.text((x, y + 32), f"{rec['id']}  score={rec['accuracy_reward']:.2f}", fill=(90, 90, 90))
    sheet.save(path)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data_file", help="records to evaluate (default: the run's eval_file, else train_file)")
    parser.add_argument("--video_root", help="default: the run's video_root, else the data file's folder")
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--strip_size", type=int, default=8, help="clips drawn in predictions.png")
    parser.add_argument("--out_dir", type=Path, help="default: RUN_DIR/eval")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor, _, cfg = load_trained_policy(args.run_dir, device)
    script = cfg["ScriptArguments"]
    data_file = resolve_input_path(args.data_file or script.get("eval_file") or script["train_file"], RECIPE_DIR)
    video_root = resolve_input_path(args.video_root or script.get("video_root"), RECIPE_DIR) or str(
        Path(data_file).parent
    )
    # The frames training used: qwen-vl-utils' count, indices and pixel budget from the run's own settings.
    dataset = build_dataset(
        data_file,
        video_root=video_root,
        min_frames=script["min_frames"],
        max_frames=script["max_frames"],
        fps=script.get("fps", DEFAULT_FPS),
        min_pixels_per_frame=script.get("min_pixels_per_frame"),
        max_pixels_per_frame=script.get("max_pixels_per_frame"),
        image_patch_size=patch_size_of(processor),
        system_prompt=script.get("system_prompt"),
    )
    if args.max_samples:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))

    out_dir = args.out_dir or args.run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    clips: list[list[Image.Image]] = []
    for start in range(0, len(dataset), args.batch_size):
        rows = [dataset[i] for i in range(start, min(start + args.batch_size, len(dataset)))]
        completions = generate_greedy(model, processor, rows, args.max_new_tokens)  # frames and fps as in training
        formats = format_reward(completions)
        for row, text, fmt in zip(rows, completions, formats, strict=True):
            predicted = parse_actions(text)
            truth = list(row["actions"])
            records.append(
                {
                    "id": row["id"],
                    "completion": text,
                    "predicted_actions": predicted,
                    "actions": truth,
                    "exact": predicted == truth,
                    "set_iou": set_iou(predicted, truth),
                    "accuracy_reward": action_score(predicted, truth) or 0.0,
                    "format_reward": fmt,
                }
            )
            if len(clips) < args.strip_size:
                clips.append(row["video"])
        logger.info("evaluated %d/%d", len(records), len(dataset))

    n = max(len(records), 1)
    metrics = {
        "num_samples": len(records),
        "accuracy": sum(r["exact"] for r in records) / n,
        "mean_action_set_iou": sum(r["set_iou"] for r in records) / n,
        "mean_accuracy_reward": sum(r["accuracy_reward"] for r in records) / n,
        "format_rate": sum(r["format_reward"] == 1.0 for r in records) / n,
        "mean_format_reward": sum(r["format_reward"] for r in records) / n,
    }
    (out_dir / "metrics.json").write_text(json.dumps({**metrics, "data_file": data_file}, indent=2))
    with open(out_dir / "predictions.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    draw_strips(records[: len(clips)], clips, out_dir / "predictions.png")
    print(json.dumps(metrics, indent=2))
    print(f"wrote {out_dir}/metrics.json, predictions.jsonl, predictions.png")
    return metrics


if __name__ == "__main__":
    install_error_hook()  # a wrong folder or a killed run: one message, exit 2, no traceback
    main()
