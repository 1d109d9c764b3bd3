"""The image_edit recipe's offline sample: a Complex-Edit-shaped set of two-shape pictures and 8-level edits.

    python recipes/image_edit/sample.py [OUT_DIR] [--num_samples 24] [--num_syn 8] [--seed 0]

Writes OUT_DIR (default: data/sample next to this file, what config_smoke.yaml reads) as a `datasets.save_to_disk`
DatasetDict with Complex-Edit's splits and columns (test_real, test_syn; `image`, `edit` with `atom` and
`compound`), which data.py loads like the hub set. The same request again writes nothing (`sample.json` records
it), and a folder this script did not write is never overwritten.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from data import MAX_COMPLEXITY
from PIL import Image, ImageDraw

from core.data.cli import OldCounts, Option, sample_main
from core.data.records import mark_sample_written, sample_is_current

RECIPE_DIR = Path(__file__).resolve().parent
NUM_SAMPLES = 24  # 16 test_real + 8 test_syn rows

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 40),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
}
CORNERS = {
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
}


def _draw(draw: ImageDraw.ImageDraw, shape: str, colour: str, cx: float, cy: float, r: float) -> None:
    box = [cx - r, cy - r, cx + r, cy + r]
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


def _sample_row(rng: random.Random, size: int) -> dict[str, Any]:
    background = rng.choice(["white", "beige", "lightgray"])
    img = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(img)
    shapes = rng.sample(SHAPES, k=2)
    colours = rng.sample(list(COLOURS), k=2)
    spots = rng.sample(list(CORNERS), k=2)
    for shape, colour, spot in zip(shapes, colours, spots, strict=True):
        fx, fy = CORNERS[spot]
        _draw(draw, shape, colour, fx * size, fy * size, size * 0.16)
    new_colour = rng.choice([c for c in COLOURS if c not in colours])
    free = [c for c in CORNERS if c not in spots]
    third = next(s for s in SHAPES if s not in shapes)
    atoms = [
        f"make the {shapes[0]} {new_colour}",
        f"remove the {shapes[1]}",
        f"add a {rng.choice(list(COLOURS))} {third} in the {rng.choice(free)}",
        f"make the background {rng.choice(['black', 'light blue', 'pink'])}",
        f"make the {shapes[0]} larger",
        f"move the {shapes[0]} to the center",
        "draw a thin black border around the image",
        f"add a small {rng.choice(list(COLOURS))} dot in the {rng.choice(free)}",
    ]
    compound = [
        {"complexity": k, "compound_instruction": (", then ".join(atoms[:k]) + ".").capitalize()}
        for k in range(1, MAX_COMPLEXITY + 1)
    ]
    return {"image": img, "edit": {"atom": atoms, "compound": compound}}


def make_sample(
    out_dir: str | os.PathLike[str],
    num_samples: int = NUM_SAMPLES,
    seed: int = 0,
    num_syn: int | None = None,
    image_size: int = 64,
) -> dict[str, Path]:
    """Write the DatasetDict under `out_dir`: `num_samples` rows, `num_syn` of them (default: a third) in test_syn,
    the rest in test_real, each picture `image_size` pixels square; returns {"dataset": out_dir, "test_real": ...,
    "test_syn": ...} (the folder is the dataset source)."""
    num_syn = num_samples // 3 if num_syn is None else num_syn
    n_real = num_samples - num_syn
    if n_real < 1 or num_syn < 0:
        raise ValueError(f"need 0 <= num_syn < num_samples, got num_syn={num_syn}, num_samples={num_samples}")
    out = Path(out_dir)
    written = {"dataset": out, "test_real": out / "test_real", "test_syn": out / "test_syn"}
    request = {"generator": "make-sample", "n_real": n_real, "n_syn": num_syn, "seed": seed, "size": image_size}
    if sample_is_current(out, request, [], list(out.iterdir()) if out.is_dir() else [], "sample.py"):
        return written
    rng = random.Random(seed)
    splits = {
        name: [_sample_row(rng, image_size) for _ in range(n)]
        for name, n in (("test_real", n_real), ("test_syn", num_syn))
    }
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "edit": {
                "atom": datasets.List(datasets.Value("string")),
                "compound": datasets.List(
                    {"complexity": datasets.Value("int32"), "compound_instruction": datasets.Value("string")}
                ),
            },
        }
    )
    dd = datasets.DatasetDict(
        {name: datasets.Dataset.from_list(rows, features=features) for name, rows in splits.items()}
    )
    dd.save_to_disk(str(out))
    mark_sample_written(out, request)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    return sample_main(
        make_sample,
        argv,
        recipe_dir=RECIPE_DIR,
        description=__doc__,
        options=[Option("--num_syn", "rows of test_syn, out of --num_samples (default: a third)", int, metavar="N")],
        # data.py --make-sample's spelling: --n-real 16 --n-syn 8
        old_counts=OldCounts(
            ("--n-real", "--n-syn"),
            lambda n_real=16, n_syn=8: {"num_samples": n_real + n_syn, "num_syn": n_syn},
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
