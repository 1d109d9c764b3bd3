"""Data for visual grounding: a sentence describes one region of an image; the model answers with its box.

Record format (a `.json` list / `{"data": [...]}`, or `.jsonl` with one object per line)::

    {"id": "img-0001",                       # unique string (optional: "#<row>" is used when absent)
     "image": "images/img-0001.png",         # relative to --images-root / images_root, or absolute
     "problem": "the small red circle",      # the referring sentence; "prompt" is accepted as an alias
     "solution": [x1, y1, x2, y2]}           # ground-truth box in ORIGINAL image pixels, x2 > x1, y2 > y1

`solution` may also be a point `[x, y]` (a point target): then only point-style rewards apply (accuracy by
distance; IoU returns None). Coordinates are in pixels of the upright image, i.e. after EXIF rotation, at the file's
full resolution. The model may get a smaller copy (`core.data.images`: an image above the processor's pixel budget is
downscaled once at load time, aspect kept); `model_image_size` is computed from that copy, so the rewards' frame
conversion (`rewards.to_original`) still lands in the file's pixels.

`build_dataset` validates every row before returning and raises one `DataError` listing all problems (empty
sentence, malformed/inverted/negative/out-of-image solution, missing or undecodable image, duplicate id).

CLI::

    python data.py --make-sample OUT_DIR [--n-train 64 --n-eval 16 --seed 0]   # offline synthetic shapes set
    python data.py --check FILE [--images-root DIR]                              # validate; exit 1 on problems
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image, ImageDraw

from core.data.images import DEFAULT_MAX_PIXELS, fit_size
from core.data.records import (
    DataError,
    describe_row,
    duplicate_id_problems,
    image_prompt,
    inspect_images,
    load_records,
    mark_sample_written,
    missing_column_problems,
    row_ids,
    sample_is_current,
    to_dataset,
)
from core.data.vision import max_image_pixels, model_image_size

PROMPT_TEMPLATE = "Locate {problem} in the image. Output its bounding box as [x1, y1, x2, y2] inside <answer></answer>."


def build_prompt_text(problem: str) -> str:
    """The user text for one referring sentence."""
    return PROMPT_TEMPLATE.format(problem=problem.strip())


def _parse_solution(raw: Any) -> tuple[list[float] | None, str | None]:
    """(numbers, None) or (None, what is wrong). Accepts a list of 2/4 numbers or a string holding such a list."""
    if isinstance(raw, str):
        start, end = raw.find("["), raw.rfind("]")
        try:
            raw = json.loads(raw[start : end + 1]) if 0 <= start < end else raw
        except json.JSONDecodeError:
            pass
    if not isinstance(raw, (list, tuple)):
        return None, f"expected [x1, y1, x2, y2] or [x, y], got {raw!r}"
    if len(raw) not in (2, 4):
        return None, f"expected 4 numbers (box) or 2 (point), got {len(raw)}: {list(raw)!r}"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in raw):
        return None, f"coordinates must be finite numbers, got {list(raw)!r}"
    return [float(v) for v in raw], None


def _solution_problems(solution: list[float], size: tuple[int, int] | None) -> list[str]:
    """Geometry problems of a parsed solution; bounds are checked only when the image size is known."""
    issues = []
    if any(v < 0 for v in solution):
        issues.append("negative coordinate")
    if len(solution) == 4 and (solution[2] <= solution[0] or solution[3] <= solution[1]):
        issues.append("needs x2 > x1 and y2 > y1")
    if size is not None:
        width, height = size
        xs, ys = solution[0::2], solution[1::2]
        if max(xs) > width or max(ys) > height:
            issues.append(f"outside the image ({width}x{height})")
    return issues


def build_dataset(
    path: str | os.PathLike[str],
    images_root: str | os.PathLike[str] | None = None,
    image_processor: Any = None,
    system_prompt: str | None = None,
) -> datasets.Dataset:
    """Load, validate and convert a grounding file into the dataset GRPOTrainer and the rewards expect.

    Columns: `prompt` (conversational, image placeholder then text), `image` (path, decoded lazily by
    `core.data.images.open_image`: RGB, transparency on white, downscaled to the processor's pixel budget
    `core.data.vision.max_image_pixels`, else `core.data.images.DEFAULT_MAX_PIXELS`), `solution` (floats, original
    pixels),
    `image_size` ([w, h] original: the frame of `solution`), `model_image_size` ([w, h] the model works in: the
    processor's resize of the LOADED, possibly downscaled, image; without a processor the loaded size, which equals
    `image_size` unless the image was over the budget), `id`, `problem` (the sentence, for logs).
    `images_root` defaults to the data file's folder. Raises `DataError` listing every problem found.
    """
    path = Path(path)
    root = path.parent if images_root is None else Path(images_root)
    records = load_records(path)
    if not records:
        raise DataError([f"{path}: no records"], source=path)
    renamed = missing_column_problems(records, ["image", ("problem", "prompt"), "solution"])
    if renamed:
        raise DataError(renamed, source=path)  # once, not once per row

    images = inspect_images(records, root)
    budget = max_image_pixels(image_processor) if image_processor is not None else None
    budget = DEFAULT_MAX_PIXELS if budget is None else budget
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    ids = row_ids(records)
    for index, (record, info) in enumerate(zip(records, images, strict=True)):
        raw_id = record.get("id")
        row_id = ids[index]
        label = describe_row(index, raw_id)
        row_problems = []

        problem = record.get("problem", record.get("prompt"))
        if not isinstance(problem, str) or not problem.strip():
            row_problems.append(f"{label}: missing or empty 'problem' (the referring sentence), got {problem!r}")

        solution, solution_error = _parse_solution(record.get("solution"))
        if solution is None:
            row_problems.append(f"{label}: bad 'solution': {solution_error}")
        else:
            issues = _solution_problems(solution, info.size)
            if issues:
                row_problems.append(f"{label}: bad 'solution' {record.get('solution')!r}: {'; '.join(issues)}")

        if info.problem:
            row_problems.append(info.problem)

        seen_size = None
        if info.size is not None:
            loaded_size = fit_size(*info.size, max_pixels=budget)  # what `to_dataset`'s decode hands the processor
            try:
                seen_size = loaded_size
                if image_processor is not None:
                    seen_size = model_image_size(image_processor, *loaded_size)
            except ValueError as err:  # e.g. aspect ratio > 200; an unknown processor is a TypeError and propagates
                row_problems.append(f"{label}: image {info.size[0]}x{info.size[1]} cannot be resized: {err}")

        if row_problems:
            problems.extend(row_problems)
            continue
        rows.append(
            {
                "prompt": image_prompt(build_prompt_text(problem), system_prompt),
                "image": str(info.path),
                "solution": solution,
                "image_size": list(info.size),
                "model_image_size": list(seen_size),
                "id": row_id,
                "problem": problem.strip(),
            }
        )

    problems += duplicate_id_problems(ids)
    if problems:
        raise DataError(problems, source=path)
    return to_dataset(rows, max_pixels=budget)


# ------------------------------------------------------------------------------------------------ synthetic sample

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
}
SIZES = {"small": (0.14, 0.20), "large": (0.32, 0.42)}  # side length as a fraction of the image's short side
_ATTRIBUTES = ("size", "colour", "shape")


def _random_object(rng: random.Random) -> dict[str, str]:
    return {"shape": rng.choice(SHAPES), "colour": rng.choice(list(COLOURS)), "size": rng.choice(list(SIZES))}


def _distractor(target: dict[str, str], rng: random.Random) -> dict[str, str]:
    """An object differing from the target in at least one attribute; usually sharing the others, so that the
    sentence has to use colour or size to single the target out."""
    while True:
        other = dict(target)
        for attribute in rng.sample(_ATTRIBUTES, rng.choice((1, 1, 2, 3))):
            other[attribute] = _random_object(rng)[attribute]
        if other != target:
            return other


def _describe(target: dict[str, str], distractors: list[dict[str, str]], rng: random.Random) -> str:
    """The shortest description that matches the target and no distractor (ties broken at random)."""
    options = [("shape",), ("colour", "shape"), ("size", "shape"), ("size", "colour", "shape")]
    unique = [keys for keys in options if not any(all(d[k] == target[k] for k in keys) for d in distractors)]
    shortest = min(len(keys) for keys in unique)  # the full description is always unique
    keys = rng.choice([keys for keys in unique if len(keys) == shortest])
    return "the " + " ".join(target[k] for k in keys)


def _place(side: int, width: int, height: int, boxes: list[list[int]], rng: random.Random) -> list[int] | None:
    """A free [x1, y1, x2, y2] box of the given side, 3 px clear of the others, or None after many tries."""
    for _ in range(200):
        x1, y1 = rng.randint(0, width - side), rng.randint(0, height - side)
        box = [x1, y1, x1 + side, y1 + side]
        if all(box[2] + 3 <= b[0] or b[2] + 3 <= box[0] or box[3] + 3 <= b[1] or b[3] + 3 <= box[1] for b in boxes):
            return box
    return None


def _draw(draw: ImageDraw.ImageDraw, obj: dict[str, str], box: list[int]) -> None:
    """Draw so that the shape's pixels span exactly the half-open box [x1, x2) x [y1, y2)."""
    x1, y1, x2, y2 = box
    fill = COLOURS[obj["colour"]]
    if obj["shape"] == "circle":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=fill)
    elif obj["shape"] == "square":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=fill)
    else:
        draw.polygon([((x1 + x2 - 1) / 2, y1), (x1, y2 - 1), (x2 - 1, y2 - 1)], fill=fill)


def _background(width: int, height: int, rng: random.Random) -> Image.Image:
    base = np.array([rng.randint(215, 250) for _ in range(3)], dtype=np.float32)
    pixels = np.broadcast_to(base, (height, width, 3)).copy()
    if rng.random() < 0.5:  # noisy background
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, 18.0, size=(height, width, 1))
        pixels += noise.astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")


def make_sample_record(sample_id: str, rng: random.Random) -> tuple[Image.Image, dict[str, Any]]:
    """One synthetic image with a uniquely described target and 1-3 distractors, plus its record (no image path)."""
    while True:
        width, height = rng.randint(96, 256), rng.randint(96, 256)
        short = min(width, height)
        target = _random_object(rng)
        objects = [target] + [_distractor(target, rng) for _ in range(rng.randint(1, 3))]
        boxes: list[list[int]] = []
        for obj in objects:
            low, high = SIZES[obj["size"]]
            box = _place(max(8, round(short * rng.uniform(low, high))), width, height, boxes, rng)
            if box is None:
                break
            boxes.append(box)
        if len(boxes) == len(objects):
            break
    image = _background(width, height, rng)
    draw = ImageDraw.Draw(image)
    for obj, box in zip(objects, boxes, strict=True):
        _draw(draw, obj, box)
    record = {
        "id": sample_id,
        "problem": _describe(target, objects[1:], rng),
        "solution": boxes[0],
        "target": target,
        "distractors": objects[1:],
    }
    return image, record


def make_sample(out_dir: str | os.PathLike[str], n_train: int = 64, n_eval: int = 16, seed: int = 0) -> dict[str, Path]:
    """Write `images/*.png`, `train.jsonl` and `eval.jsonl` under `out_dir`; the same seed gives the same bytes.

    A `sample.json` marker records what was generated: the same request again is a no-op, and a folder holding
    data files that make-sample did not write is never overwritten.
    """
    out = Path(out_dir)
    request = {"generator": "make-sample", "n_train": n_train, "n_eval": n_eval, "seed": seed}
    splits = {"train": out / "train.jsonl", "eval": out / "eval.jsonl"}
    if sample_is_current(out, request, splits.values(), splits.values(), "--make-sample"):
        return splits
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    written: dict[str, Path] = {}
    for split, count in (("train", n_train), ("eval", n_eval)):
        lines = []
        for index in range(count):
            sample_id = f"{split}-{index:04d}"
            image, record = make_sample_record(sample_id, rng)
            relative = f"images/{sample_id}.png"
            image.save(out / relative, format="PNG")
            record = {"id": sample_id, "image": relative, **{k: v for k, v in record.items() if k != "id"}}
            lines.append(json.dumps(record))
        written[split] = out / f"{split}.jsonl"
        written[split].write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    mark_sample_written(out, request)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--make-sample", metavar="OUT_DIR", help="write a synthetic offline dataset")
    action.add_argument("--check", metavar="FILE", help="validate a .json/.jsonl file")
    parser.add_argument("--n-train", type=int, default=64)
    parser.add_argument("--n-eval", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images-root", default=None, help="folder relative image paths start from (default: FILE's)")
    args = parser.parse_args(argv)

    if args.make_sample:
        try:
            written = make_sample(args.make_sample, args.n_train, args.n_eval, args.seed)
        except FileExistsError as err:
            print(err, file=sys.stderr)
            return 1
        print(f"sample images in {Path(args.make_sample) / 'images'}")
        for split, file in written.items():
            print(f"sample {split} set: {file} ({args.n_train if split == 'train' else args.n_eval} records)")
        return 0

    try:
        dataset = build_dataset(args.check, args.images_root)
    except DataError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"OK: {args.check}: {len(dataset)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
