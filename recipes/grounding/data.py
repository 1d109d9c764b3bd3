"""Data for visual grounding: a sentence describes one region of an image; the model answers with its box.

Record format (a `.json` list / `{"data": [...]}`, or `.jsonl` with one object per line)::

    {"id": "img-0001",                       # unique string (optional: "#<row>" is used when absent)
     "image": "images/img-0001.png",         # relative to --images_root / images_root, or absolute
     "problem": "the small red circle",      # the referring sentence; "prompt" is accepted as an alias
     "solution": [x1, y1, x2, y2]}           # ground-truth box in ORIGINAL image pixels, x2 > x1, y2 > y1

`solution` may also be a point `[x, y]` (a point target): then only point-style rewards apply (accuracy by
distance; IoU returns None). Coordinates are in pixels of the upright image, i.e. after EXIF rotation, at the file's
full resolution. The model may get a smaller copy (`core.data.images`: an image above the processor's pixel budget is
downscaled once at load time, aspect kept); `model_image_size` is computed from that copy, so the rewards' frame
conversion (`rewards.to_original`) still lands in the file's pixels.

`build_dataset` validates every row before returning and raises one `DataError` listing all problems (empty
sentence, malformed/inverted/negative/out-of-image solution, missing or undecodable image, duplicate id).

CLI (the offline sample is sample.py's)::

    python recipes/grounding/data.py --check FILE [--images_root DIR]   # "OK: FILE: N rows"; exit 2 on problems
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from core.data.cli import Option, check_main
from core.data.images import DEFAULT_MAX_PIXELS, fit_size
from core.data.records import (
    DataError,
    describe_row,
    duplicate_id_problems,
    image_prompt,
    inspect_images,
    load_records,
    missing_column_problems,
    row_ids,
    to_dataset,
)
from core.data.vision import max_image_pixels, model_image_size

RECIPE_DIR = Path(__file__).resolve().parent

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


def check(source: str, images_root: str | None = None) -> int:
    """`data.py --check`: the rows of `source` that build_dataset accepts (it raises DataError otherwise)."""
    return len(build_dataset(source, images_root))


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit code."""
    images_root = Option("--images_root", "folder relative image paths start from (default: SOURCE's)", metavar="DIR")
    return check_main(check, argv, recipe_dir=RECIPE_DIR, options=[images_root], description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
