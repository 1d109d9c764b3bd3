"""Complex-Edit data for GRPO on the VLM inside Qwen-Image-Edit.

Usage:
    python recipes/image_edit/sample.py                                       # offline set, same shape: data/sample
    python recipes/image_edit/data.py --check recipes/image_edit/data/sample --splits test_real --complexities 1 2

Complex-Edit (hub: UCSC-VLAA/Complex-Edit) has the splits `test_real` and `test_syn`, each row an `image` and an
`edit` whose `edit["compound"][c - 1]["compound_instruction"]` is the instruction at complexity c = 1..8: level 1
is a single atomic edit, level k merges atomic edits 1..k. `source` is a hub name or a local folder written by
`datasets.save_to_disk` (what `sample.py` writes). Each (row, complexity) pair becomes one GRPO prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from core.data.cli import Option, check_main
from core.data.images import DEFAULT_MAX_PIXELS, normalize_image
from core.data.records import DataError, load_saved_split, require_rows, resolve_dataset_source

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


def check(
    source: str,
    splits: Sequence[str] = ("test_real",),
    complexities: Sequence[int] = (1, 2, 3),
    max_samples: int | None = None,
) -> tuple[int, str]:
    """`data.py --check`: the prompts (row x complexity) `load_edit_rows` accepts (it raises DataError otherwise)."""
    rows = load_edit_rows(resolve_dataset_source(source, RECIPE_DIR), splits, complexities, max_samples)
    return len(rows), f"prompts of split(s) {', '.join(splits)} at complexities {', '.join(map(str, complexities))}"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit code."""
    options = [
        Option("--splits", f"splits to read, of {', '.join(SPLITS)} (default: test_real)", nargs="+"),
        Option("--complexities", f"levels 1..{MAX_COMPLEXITY} (default: 1 2 3)", int, nargs="+"),
        Option("--max_samples", "check only the first N prompts", int, metavar="N"),
    ]
    return check_main(
        check,
        argv,
        recipe_dir=RECIPE_DIR,
        options=options,
        description=__doc__,
        source_help="a local save_to_disk folder (sample.py writes one) or a hub dataset id",
    )


if __name__ == "__main__":
    raise SystemExit(main())
