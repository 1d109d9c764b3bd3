"""Greedy evaluation of a finished (or checkpointed) run: point-in-box and IoU>0.5 accuracy.

Usage:  python recipes/grounding/evaluate.py RUN_DIR [--dataset_name FILE] [--images_root DIR] [--max_samples N]
            [--batch_size 8] [--max_new_tokens 64] [--grid_size 16] [--out_dir DIR]   (core/evaluation/cli.py)
Writes RUN_DIR/eval/ (or --out_dir): metrics.json, predictions.jsonl and predictions.png (one panel per example:
true box or point green, predicted red, a grey "nothing parsed" banner when the completion held neither; under it the
instruction, both coordinates, the completion when nothing parsed, hit and IoU; a legend on top).
RUN_DIR holds a LoRA adapter or full weights, plus run_config.yaml written by train.py.
"""

from __future__ import annotations

from pathlib import Path

from data import build_dataset
from PIL import Image, ImageDraw
from rewards import AccuracyCoordReward, IoUReward, frame_for_family, parse_box, parse_point, to_original

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
from core.tools.plots import BLACK, RIGHT, WRONG, CaptionLine, caption_font, fit_image, panel, panel_sheet

RECIPE_DIR = Path(__file__).resolve().parent


TRUE_COLOUR = (0, 200, 0)  # the true box / point
PRED_COLOUR = (220, 0, 0)  # the predicted box / point
NOTHING_COLOUR = (90, 90, 90)  # banner over an image whose completion held no box or point
LEGEND = [
    ("true box / point", TRUE_COLOUR),
    ("predicted box / point", PRED_COLOUR),
    ("nothing parsed from the completion", NOTHING_COLOUR),
]


def _coords(values: list[float] | None) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in values) + "]" if values else "none"


def _draw_target(draw: ImageDraw.ImageDraw, values: list[float], scale: float, colour: tuple[int, int, int]) -> None:
    """A box as a rectangle, a point as a cross in a circle (visible on any background), in image coordinates."""
    v = [c * scale for c in values]
    if len(v) == 4:
        draw.rectangle(v, outline=colour, width=2)
        return
    x, y = v
    draw.ellipse([x - 6, y - 6, x + 6, y + 6], outline=colour, width=2)
    draw.line([x - 9, y, x + 9, y], fill=colour, width=2)
    draw.line([x, y - 9, x, y + 9], fill=colour, width=2)


def outside(values: list[float], size: tuple[int, int]) -> bool:
    """Whether a predicted box or point lies wholly outside the image (drawn, it would not show)."""
    x0, y0, x1, y1 = values if len(values) == 4 else (*values, *values)
    return x1 < 0 or y1 < 0 or x0 > size[0] or y0 > size[1]


BANNER = 20  # height of the "nothing parsed" banner, in pixels


def annotate(record: dict, image: Image.Image, cell: int) -> Image.Image:
    """The image scaled to fit a `cell` square with the true target (green) and the prediction (red) drawn on it;
    when nothing was parsed, a grey "nothing parsed" banner above the image instead (above, not over it: a true box
    at the image's top edge stays visible)."""
    nothing = record["prediction"] is None
    thumb, scale = fit_image(image, cell, cell - BANNER if nothing else cell)
    draw = ImageDraw.Draw(thumb)
    _draw_target(draw, record["solution"], scale, TRUE_COLOUR)
    if not nothing:
        _draw_target(draw, record["prediction"], scale, PRED_COLOUR)
        return thumb
    framed = Image.new("RGB", (thumb.width, thumb.height + BANNER), NOTHING_COLOUR)
    ImageDraw.Draw(framed).text((4, 3), "nothing parsed", fill=(255, 255, 255), font=caption_font(13))
    framed.paste(thumb, (0, BANNER))
    return framed


def caption(record: dict, image_size: tuple[int, int]) -> list[CaptionLine]:
    """What the panel says under the image: the instruction, truth and prediction (with the completion when nothing
    parsed, so the reader sees what the model wrote), and hit / IoU in green (hit) or red (miss)."""
    lines = [
        CaptionLine(record["problem"], BLACK, max_lines=3),
        CaptionLine(f"true: {_coords(record['solution'])}", RIGHT),
    ]
    pred = record["prediction"]
    if pred is None:
        lines.append(CaptionLine(f"pred: nothing parsed from {record['completion']!r}", WRONG, max_lines=3))
    else:
        where = " (outside the image)" if outside(pred, image_size) else ""
        lines.append(CaptionLine(f"pred: {_coords(pred)}{where}", WRONG))
    iou = "n/a" if record["iou"] is None else f"{record['iou']:.2f}"
    hit = record["point_in_box"] >= 1.0
    lines.append(CaptionLine(f"point in box: {'yes' if hit else 'no'}, IoU: {iou}", RIGHT if hit else WRONG))
    return lines


def draw_grid(
    records: list[dict], images: list[Image.Image], path: Path, cell: int = 256, cols: int = 4
) -> list[tuple[int, int, int, int]]:
    """predictions.png: one panel per example (`annotate` + `caption`) under a legend. Returns the panels' boxes."""
    panels = [
        panel(annotate(rec, img, cell), caption(rec, img.size), width=cell)
        for rec, img in zip(records, images, strict=True)
    ]
    hits = sum(rec["point_in_box"] >= 1.0 for rec in records)
    title = f"{RECIPE_DIR.name}: {len(records)} examples, point in box {hits}/{len(records)}"
    sheet, boxes = panel_sheet(panels, cols, title=title, legend=LEGEND)
    sheet.save(path)
    return boxes


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = eval_parser(__doc__, batch_size=8, max_new_tokens=64, root_flag="images_root")
    parser.add_argument("--grid_size", type=int, default=16, help="images in predictions.png")
    args = parse_eval_args(parser, argv)

    model, processor, family, cfg = load_trained_policy(args.run_dir, eval_device())
    script = cfg["ScriptArguments"]
    data_file = data_source(args, script, RECIPE_DIR)
    images_root = media_root(args.images_root, script.get("images_root"), RECIPE_DIR, data_file)
    dataset = build_dataset(data_file, images_root, processor.image_processor, script.get("system_prompt"))
    dataset = first_rows(dataset, args.max_samples)
    frame = frame_for_family(family) if script.get("coord_frame", "auto") == "auto" else script["coord_frame"]
    accuracy, iou = AccuracyCoordReward(frame), IoUReward(frame)

    records: list[dict] = []
    grid_images: list[Image.Image] = []
    for rows in batches(dataset, args.batch_size):
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
                # back to the frame of solution/prediction: an over-budget image was downscaled at load
                # (core.data.images)
                grid_images.append(row["image"].resize(tuple(row["image_size"])))

    box_scores = [r["iou"] for r in records if r["iou"] is not None]
    metrics = {
        "num_samples": len(records),
        "point_in_box_accuracy": sum(r["point_in_box"] for r in records) / max(len(records), 1),
        "iou_0.5_accuracy": sum(s > 0.5 for s in box_scores) / max(len(box_scores), 1),
        "mean_iou": sum(box_scores) / max(len(box_scores), 1),
        "parse_rate": sum(r["prediction"] is not None for r in records) / max(len(records), 1),
    }
    out_dir = output_dir(args)
    written = write_results(out_dir, metrics, records, {"data_file": data_file, "frame": frame})
    draw_grid(records[: len(grid_images)], grid_images, out_dir / "predictions.png")
    report(metrics, [*written, out_dir / "predictions.png"])
    return metrics


if __name__ == "__main__":
    install_error_hook()  # a wrong folder or a killed run: one message, exit 2, no traceback
    main()
