"""Greedy evaluation of a finished (or checkpointed) video run: exact-order accuracy, action-set IoU, format rate.

Usage:  python recipes/video/evaluate.py RUN_DIR [--dataset_name FILE] [--video_root DIR] [--max_samples N]
            [--batch_size 4] [--max_new_tokens 256] [--strip_size 8] [--out_dir DIR]   (core/evaluation/cli.py)
Writes RUN_DIR/eval/ (or --out_dir): metrics.json, predictions.jsonl and predictions.png (a strip of the sampled
frames per clip with the predicted and true actions). RUN_DIR holds a LoRA adapter or full weights, plus the
run_config.yaml written by train.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from data import build_dataset
from PIL import Image, ImageDraw
from rewards import action_score, format_reward, parse_actions

from core.data.video import DEFAULT_FPS, patch_size_of
from core.errors import install_error_hook
from core.evaluation.cli import (
    batches,
    data_source,
    eval_device,
    eval_parser,
    first_rows,
    media_root,
    output_dir,
    parse_eval_args,
    report,
    write_results,
)
from core.evaluation.loading import generate_greedy, load_trained_policy

RECIPE_DIR = Path(__file__).resolve().parent


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
    parser = eval_parser(__doc__, batch_size=4, max_new_tokens=256, root_flag="video_root")
    parser.add_argument("--strip_size", type=int, default=8, help="clips drawn in predictions.png")
    args = parse_eval_args(parser, argv)

    model, processor, _, cfg = load_trained_policy(args.run_dir, eval_device())
    script = cfg["ScriptArguments"]
    data_file = data_source(args, script, RECIPE_DIR)
    # The frames training used: qwen-vl-utils' count, indices and pixel budget from the run's own settings.
    dataset = build_dataset(
        data_file,
        video_root=media_root(args.video_root, script.get("video_root"), RECIPE_DIR, data_file),
        min_frames=script["min_frames"],
        max_frames=script["max_frames"],
        fps=script.get("fps", DEFAULT_FPS),
        min_pixels_per_frame=script.get("min_pixels_per_frame"),
        max_pixels_per_frame=script.get("max_pixels_per_frame"),
        image_patch_size=patch_size_of(processor),
        system_prompt=script.get("system_prompt"),
    )
    dataset = first_rows(dataset, args.max_samples)

    records: list[dict] = []
    clips: list[list[Image.Image]] = []
    for rows in batches(dataset, args.batch_size):
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

    n = max(len(records), 1)
    metrics = {
        "num_samples": len(records),
        "accuracy": sum(r["exact"] for r in records) / n,
        "mean_action_set_iou": sum(r["set_iou"] for r in records) / n,
        "mean_accuracy_reward": sum(r["accuracy_reward"] for r in records) / n,
        "format_rate": sum(r["format_reward"] == 1.0 for r in records) / n,
        "mean_format_reward": sum(r["format_reward"] for r in records) / n,
    }
    out_dir = output_dir(args)
    written = write_results(out_dir, metrics, records, {"data_file": data_file})
    draw_strips(records[: len(clips)], clips, out_dir / "predictions.png")
    report(metrics, [*written, out_dir / "predictions.png"])
    return metrics


if __name__ == "__main__":
    install_error_hook()  # a wrong folder or a killed run: one message, exit 2, no traceback
    main()
