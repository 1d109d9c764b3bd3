"""Complex-Edit data for GRPO on the VLM inside Qwen-Image-Edit.

Usage:
    python recipes/image_edit/data.py --make-sample recipes/image_edit/data/sample   # offline set, same shape
    python recipes/image_edit/data.py --check recipes/image_edit/data/sample --splits test_real --complexities 1 2

Complex-Edit (hub: UCSC-VLAA/Complex-Edit) has the splits `test_real` and `test_syn`, each row an `image` and an
`edit` whose `edit["compound"][c - 1]["compound_instruction"]` is the instruction at complexity c = 1..8: level 1
is a single atomic edit, level k merges atomic edits 1..k. `source` is a hub name or a local folder written by
`datasets.save_to_disk` (what `--make-sample` writes). Each (row, complexity) pair becomes one GRPO prompt.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from PIL import Image, ImageDraw

from core.data.images import DEFAULT_MAX_PIXELS, normalize_image
from core.data.records import (
    DataError,
    load_saved_split,
    mark_sample_written,
    require_rows,
    resolve_dataset_source,
    sample_is_current,
)

RECIPE_DIR = Path(__file__).resolve().parent
HUB_NAME = "UCSC-VLAA/Complex-Edit"
SPLITS = ("test_real", "test_syn")
MAX_COMPLEXITY = 8


def load_source(source: str, splits: Sequence[str]) -> dict[str, datasets.Dataset]:
    """The requested splits from a local `save_to_disk` folder or the hub."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; Complex-Edit has {', '.join(SPLITS)}")
    path = Path(source)
    if path.exists():
        return _load_local_splits(path, splits)
    loaded = datasets.load_dataset(source)
    missing = [s for s in splits if s not in loaded]
    if missing:
        raise DataError([f"split(s) {missing} not found; available: {list(loaded)}"], source=source)
    return {s: loaded[s] for s in splits}


def _load_local_splits(path: Path, splits: Sequence[str]) -> dict[str, datasets.Dataset]:
    """The requested splits of a `save_to_disk` folder, each loaded on its own (`core.data.records.load_saved_split`: an
    empty split is a DataError, not datasets' bare IndexError)."""
    if not (path / "dataset_dict.json").is_file():
        raise DataError([f"{path} is not a datasets.save_to_disk folder (no dataset_dict.json)"], source=path)
    problems, tables = [], {}
    for split in splits:
        try:
            tables[split] = load_saved_split(path, split)
        except DataError as err:
            problems += err.problems
    if problems:
        raise DataError(problems, source=path)
    return tables


def edit_prompt(instruction: str, system_prompt: str) -> list[dict[str, Any]]:
    """The pipeline's encoding template as a conversation: system, then the user turn with the image and text."""
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]},
    ]


def load_edit_rows(
    source: str,
    splits: Sequence[str] = ("test_real",),
    complexities: Sequence[int] = (1, 2, 3),
    max_samples: int | None = None,
) -> list[dict[str, Any]]:
    """Validated rows `id`, `instruction`, `complexity`, `image` (decoded); every problem reported at once.

    Needs no pipeline, so train.py calls it before any weights load: a missing folder or column, a bad split or
    complexity, an undecodable image or zero usable rows fail in seconds. `image` is `core.data.images.normalize_image`
    of the source picture (upright 8-bit RGB, transparency on white, at most `DEFAULT_MAX_PIXELS`).
    """
    bad = [c for c in complexities if not 1 <= int(c) <= MAX_COMPLEXITY]
    if bad:
        raise ValueError(f"complexities must be in 1..{MAX_COMPLEXITY}, got {bad}")
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    tables = load_source(source, splits)
    for split, table in tables.items():
        columns = set(table.column_names)
        if not {"image", "edit"} <= columns:
            problems.append(f"split {split}: needs columns image and edit, has {sorted(columns)}")
            continue
        for index, edit in enumerate(table["edit"]):
            compound = (edit or {}).get("compound") or []
            for c in complexities:
                rid = f"{split}-{index:05d}-c{c}"
                if len(compound) < c:
                    problems.append(f"{rid}: edit has {len(compound)} compound levels, complexity {c} asked")
                    continue
                instruction = str(compound[c - 1].get("compound_instruction") or "").strip()
                if not instruction:
                    problems.append(f"{rid}: empty compound_instruction")
                    continue
                rows.append({"id": rid, "split": split, "row": index, "complexity": int(c), "instruction": instruction})
    rows = rows[:max_samples] if max_samples else rows
    for r in rows:
        try:
            r["image"] = normalize_image(tables[r["split"]][r["row"]]["image"], max_pixels=DEFAULT_MAX_PIXELS)
        except Exception as err:  # any decode failure is reported with its row
            problems.append(f"{r['id']}: image cannot be decoded ({type(err).__name__}: {err})")
    if problems:
        raise DataError(problems, source=source)
    require_rows(len(rows), source, what=f"prompts in split(s) {', '.join(splits)}")
    return rows


def rows_to_dataset(rows: Sequence[dict[str, Any]], system_prompt: str) -> datasets.Dataset:
    """Rows `prompt`, `image`, `instruction`, `complexity`, `id` from `load_edit_rows`; `system_prompt` is the
    pipeline's (train.py resizes `image` to the pipeline's condition area as the pipeline would)."""
    return datasets.Dataset.from_dict(
        {
            "prompt": [edit_prompt(r["instruction"], system_prompt) for r in rows],
            "image": [r["image"] for r in rows],
            "instruction": [r["instruction"] for r in rows],
            "complexity": [r["complexity"] for r in rows],
            "id": [r["id"] for r in rows],
        }
    ).cast_column("image", datasets.Image())


def build_dataset(
    source: str,
    system_prompt: str,
    splits: Sequence[str] = ("test_real",),
    complexities: Sequence[int] = (1, 2, 3),
    max_samples: int | None = None,
) -> datasets.Dataset:
    """`load_edit_rows` then `rows_to_dataset`, for callers that have the pipeline's system prompt already."""
    return rows_to_dataset(load_edit_rows(source, splits, complexities, max_samples), system_prompt)


# ----------------------------------------------------------------------------------------------- offline sample
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


def make_sample(out_dir: str | Path, n_real: int = 16, n_syn: int = 8, seed: int = 0, size: int = 64) -> Path:
    """A `save_to_disk` DatasetDict shaped like Complex-Edit (test_real, test_syn; image + edit). Re-running with
    the same arguments is a no-op; a folder not written by --make-sample is never overwritten."""
    out = Path(out_dir)
    request = {"generator": "make-sample", "n_real": n_real, "n_syn": n_syn, "seed": seed, "size": size}
    if sample_is_current(out, request, [], list(out.iterdir()) if out.is_dir() else [], "--make-sample"):
        return out
    rng = random.Random(seed)
    splits = {
        name: [_sample_row(rng, size) for _ in range(n)] for name, n in (("test_real", n_real), ("test_syn", n_syn))
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
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--make-sample", metavar="OUT_DIR", help="write an offline Complex-Edit-shaped set")
    action.add_argument("--check", metavar="SOURCE", help="validate a local folder or hub dataset")
    parser.add_argument("--n-real", type=int, default=16)
    parser.add_argument("--n-syn", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", nargs="+", default=["test_real"])
    parser.add_argument("--complexities", nargs="+", type=int, default=[1, 2, 3])
    args = parser.parse_args(argv)
    if args.make_sample:
        try:
            out = make_sample(args.make_sample, args.n_real, args.n_syn, args.seed)
        except FileExistsError as err:
            print(err, file=sys.stderr)
            return 1
        print(f"sample Complex-Edit set ({args.n_real} test_real, {args.n_syn} test_syn rows) in {out}")
        return 0
    try:
        rows = load_edit_rows(resolve_dataset_source(args.check, RECIPE_DIR), args.splits, args.complexities)
    except (DataError, ValueError) as err:
        print(err, file=sys.stderr)
        return 1
    print(f"OK: {args.check}: {len(rows)} prompts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
