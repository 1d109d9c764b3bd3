"""The grounding recipe's offline sample: coloured shapes, each row a sentence that singles one out, and its box.

    python recipes/grounding/sample.py [OUT_DIR] [--num_samples 80] [--num_eval 16] [--seed 0]

Writes OUT_DIR (default: data/sample next to this file, what config_smoke.yaml reads) `images/*.png`, `train.jsonl`
and `eval.jsonl` in data.py's record format. The same seed gives the same bytes; the same request again writes
nothing (`sample.json` records it), and a folder holding data this script did not write is never overwritten.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from core.data.cli import OldCounts, Option, sample_main
from core.data.records import mark_sample_written, sample_is_current

RECIPE_DIR = Path(__file__).resolve().parent
NUM_SAMPLES = 80  # 64 train + 16 eval rows

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


def make_sample(
    out_dir: str | os.PathLike[str], num_samples: int = NUM_SAMPLES, seed: int = 0, num_eval: int | None = None
) -> dict[str, Path]:
    """Write `images/*.png`, `train.jsonl` and `eval.jsonl` under `out_dir`: `num_samples` rows, `num_eval` of them
    (default: a fifth, at least 1) in eval.jsonl; returns {"train": path, "eval": path}."""
    num_eval = max(1, num_samples // 5) if num_eval is None else num_eval
    n_train = num_samples - num_eval
    if n_train < 1 or num_eval < 0:
        raise ValueError(f"need 0 <= num_eval < num_samples, got num_eval={num_eval}, num_samples={num_samples}")
    out = Path(out_dir)
    request = {"generator": "make-sample", "n_train": n_train, "n_eval": num_eval, "seed": seed}
    splits = {"train": out / "train.jsonl", "eval": out / "eval.jsonl"}
    if sample_is_current(out, request, splits.values(), splits.values(), "sample.py"):
        return splits
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, count in (("train", n_train), ("eval", num_eval)):
        lines = []
        for index in range(count):
            sample_id = f"{split}-{index:04d}"
            image, record = make_sample_record(sample_id, rng)
            relative = f"images/{sample_id}.png"
            image.save(out / relative, format="PNG")
            record = {"id": sample_id, "image": relative, **{k: v for k, v in record.items() if k != "id"}}
            lines.append(json.dumps(record))
        splits[split].write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    mark_sample_written(out, request)
    return splits


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    return sample_main(
        make_sample,
        argv,
        recipe_dir=RECIPE_DIR,
        description=__doc__,
        options=[
            Option("--num_eval", "rows in eval.jsonl (default: a fifth of --num_samples, at least 1)", int, metavar="N")
        ],
        # data.py --make-sample's spelling: --n-train 64 --n-eval 16
        old_counts=OldCounts(
            ("--n-train", "--n-eval"),
            lambda n_train=64, n_eval=16: {"num_samples": n_train + n_eval, "num_eval": n_eval},
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
