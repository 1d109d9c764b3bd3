"""Generic data helpers shared by every recipe: read records, check images, build a lazily-decoded dataset.

Nothing here knows about a task. A recipe's `data.py` reads its records with `load_records`, validates the
task-specific fields itself, checks the image files with `check_images` / `inspect_images` (so that ALL problems are
reported in one `DataError` instead of a crash on row 3 517 in the middle of training), and hands plain rows to
`to_dataset`.

Where the original project's collator went
------------------------------------------
The project this repo mirrors fed GRPO through a custom collator that, for every batch, (1) opened each image path
with Pillow, (2) batch-encoded images and chat-formatted prompts with `AutoProcessor`, and (3) returned
`pixel_values`, `image_grid_thw`, the raw `prompt`, the `solution` and per-image `scales` (original size / resized
size, used to map the model's coordinates back). In TRL 1.15 the split is:

* (1) image loading -> the dataset's `image` column is a `core.data.images.NormalizedImage` feature holding file
*paths*;
  `datasets` opens and decodes the file only when a row is accessed (see `to_dataset`), so nothing is held in memory,
  and every image goes through `core.data.images.open_image` (upright 8-bit RGB, transparency on white, downscaled once
  to the processor's pixel budget).
* (2) processor call -> `GRPOTrainer` itself: it fills the `{"type": "image"}` placeholder of the conversational
  `prompt` from the `image` column and calls the processor (`pixel_values`, `image_grid_thw`, ...) per batch.
* (3) `solution` and the size information -> ordinary dataset columns, which GRPOTrainer passes to the reward
  functions as keyword arguments. Instead of a scale factor we store the original `image_size` and the
  `model_image_size` (what the processor resizes the LOADED image to, see `core.data.vision.model_image_size` and
  `core.data.images.fit_size`); rewards convert frames.

What is left here is therefore only lazy loading, up-front validation and the size columns.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from core.data.images import DEFAULT_MAX_PIXELS, NormalizedImage, open_lazy, oriented_size

logger = logging.getLogger("core")

__all__ = [
    "SAMPLE_MARKER",
    "DataError",
    "ImageInfo",
    "check_images",
    "describe_row",
    "image_prompt",
    "inspect_images",
    "load_records",
    "load_saved_split",
    "looks_like_path",
    "mark_sample_written",
    "missing_column_problems",
    "require_rows",
    "resolve_dataset_source",
    "resolve_input_path",
    "resolve_image_path",
    "sample_is_current",
    "shown_path",
    "to_dataset",
]


class DataError(ValueError):
    """A data file has problems; the message lists every one of them, not just the first.

    Fixing a dataset one error per run is slow and, on a cluster, expensive, so validators collect all problems and
    raise once. `problems` keeps the individual strings for programmatic use (tests, CLI output).
    """

    def __init__(self, problems: Sequence[str], source: str | os.PathLike[str] | None = None) -> None:
        self.problems = list(problems)
        self.source = None if source is None else str(source)
        where = f" in {self.source}" if self.source else ""
        header = f"{len(self.problems)} problem(s){where}:"
        super().__init__("\n".join([header, *(f"  - {problem}" for problem in self.problems)]))


def require_rows(count: int, source: str | os.PathLike[str] | None, what: str = "rows") -> None:
    """Zero usable rows is an error, not a run that trains 0 steps and saves an untrained model as finished.

    Called by every recipe's loader after filtering (splits, levels, max_samples), so `data.py --check` and
    train.py both stop here, before any weights load.
    """
    if count <= 0:
        raise DataError(
            [
                f"no usable {what}: the data is empty or the selection (splits, levels, configs, max samples) left "
                "nothing; add rows or widen the selection"
            ],
            source=source,
        )


def missing_column_problems(
    records: Sequence[Mapping[str, Any]], required: Sequence[str | tuple[str, ...]]
) -> list[str]:
    """One problem per required column that NO record has (a renamed column), listing the columns found.

    A tuple is a set of alternatives (e.g. `("image_path", "image_base64")`). Reporting a renamed column once
    instead of once per row keeps a 5,000-row file's error readable; callers raise these before row checks.
    """
    found = sorted({key for record in records for key in record})
    problems = []
    for column in required:
        names = column if isinstance(column, tuple) else (column,)
        if records and not any(name in record for record in records for name in names):
            wanted = " or ".join(repr(name) for name in names)
            problems.append(f"no row has column {wanted} (renamed?); columns found: {found}")
    return problems


def describe_row(index: int, row_id: Any = None) -> str:
    """`row 3 (id 'abc')`: the prefix every problem message starts with, so messages from all validators line up."""
    return f"row {index}" if row_id is None else f"row {index} (id {str(row_id)!r})"


def load_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a `.json` file (a list of objects, or `{"data": [...]}`) or a `.jsonl` file (one object per line).

    Blank JSONL lines are skipped. Every malformed line and every non-object row is reported in one `DataError`
    naming the file and the line (JSONL) or row index (JSON).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError([f"file not found: {path}"], source=path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _load_jsonl(path)
    if suffix == ".json":
        return _load_json(path)
    raise DataError([f"unsupported file type {path.suffix!r}: expected .json or .jsonl"], source=path)


def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{path}: line {line_number}: malformed JSON ({err.msg} at column {err.colno})")
                continue
            if not isinstance(record, dict):
                problems.append(
                    f"{path}: line {line_number} (row {len(records)}): expected a JSON object, "
                    f"got {type(record).__name__}"
                )
                continue
            records.append(record)
    if problems:
        raise DataError(problems, source=path)
    return records


def _load_json(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8") as handle:
            content = json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError([f"{path}: malformed JSON ({err.msg} at line {err.lineno}, column {err.colno})"], path) from err
    if isinstance(content, dict) and isinstance(content.get("data"), list):
        content = content["data"]
    if not isinstance(content, list):
        found = type(content).__name__
        raise DataError([f'{path}: expected a list of objects or {{"data": [...]}}, got {found}'], source=path)
    problems = [
        f"{path}: row {index}: expected a JSON object, got {type(row).__name__}"
        for index, row in enumerate(content)
        if not isinstance(row, dict)
    ]
    if problems:
        raise DataError(problems, source=path)
    return content


def row_ids(records: Sequence[Mapping[str, Any]], id_key: str = "id") -> list[str]:
    """Each record's id as a string, `#<index>` for a record without one."""
    ids = []
    for index, record in enumerate(records):
        raw = record.get(id_key)
        ids.append(f"#{index}" if raw is None or raw == "" else str(raw))
    return ids


def duplicate_id_problems(ids: Sequence[str]) -> list[str]:
    """One message per id used by more than one row, naming the rows."""
    rows_by_id: dict[str, list[int]] = {}
    for index, row_id in enumerate(ids):
        rows_by_id.setdefault(row_id, []).append(index)
    return [
        f"duplicate id {row_id!r} in rows {', '.join(map(str, rows))}"
        for row_id, rows in rows_by_id.items()
        if len(rows) > 1
    ]


def image_prompt(text: str, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """A conversational prompt whose user turn is an image placeholder followed by `text`.

    GRPOTrainer fills the `{"type": "image"}` placeholder from the dataset's `image` column. Every `content` is a
    list of parts (the system turn too) because Arrow needs one type per column: a plain-string system content next
    to a list-of-parts user content would not fit in one `prompt` column.
    """
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]})
    return messages


def resolve_image_path(path: str | os.PathLike[str], images_root: str | os.PathLike[str] | None) -> Path:
    """Absolute paths are kept; relative ones are taken relative to `images_root` (or the working directory).

    The result is absolute so that the dataset keeps working when the process changes directory later.
    """
    candidate = Path(path).expanduser()
    if not candidate.is_absolute() and images_root is not None:
        candidate = Path(images_root).expanduser() / candidate
    return candidate.absolute()


@dataclass(frozen=True)
class ImageInfo:
    """What `inspect_images` learned about one row's image.

    `size` is (width, height) of the file's upright picture (EXIF orientation applied, as `core.data.images` decodes it;
    before any downscale to a pixel budget), or None when the image could not be read; `problem` is a ready-to-print
    message, or None when the image is fine.
    """

    path: Path | None
    size: tuple[int, int] | None
    problem: str | None


def _inspect_one(index: int, row: Mapping[str, Any], images_root: Any, id_key: str, image_key: str) -> ImageInfo:
    """One row's image; `index` is the row's number in the data file (for the message)."""
    label = describe_row(index, row.get(id_key))
    raw = row.get(image_key)
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    if not isinstance(raw, str) or not raw.strip():
        return ImageInfo(None, None, f"{label}: missing {image_key!r} (expected an image path, got {raw!r})")
    path = resolve_image_path(raw, images_root)
    where = f"{label}: image {raw!r} -> {path}"
    if not path.exists():
        return ImageInfo(path, None, f"{where}: file not found")
    if not path.is_file():
        return ImageInfo(path, None, f"{where}: not a file")
    try:
        # verify() checks structure/checksums cheaply but leaves the image unusable, hence the second open;
        # the reduced-size decode then catches truncated pixel data that verify() misses.
        # open_lazy: up to core.data.images.MAX_DECODE_PIXELS (Pillow's decompression-bomb guard refuses a 195 MP scan).
        with open_lazy(path) as image:
            image.verify()
        with open_lazy(path) as image:
            size = oriented_size(image)
            image.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale; a no-op for other formats
            image.load()
    except Exception as err:  # Pillow raises many unrelated types for bad files; all mean "cannot decode"
        return ImageInfo(path, None, f"{where}: cannot decode ({type(err).__name__}: {err})")
    return ImageInfo(path, size, None)


def inspect_images(
    rows: Sequence[Mapping[str, Any]],
    images_root: str | os.PathLike[str] | None,
    id_key: str = "id",
    image_key: str = "image",
    max_workers: int | None = None,
    indices: Sequence[int] | None = None,
) -> list[ImageInfo]:
    """Open every row's image once (in a thread pool: Pillow decodes without the GIL) and report size or problem.

    Results are in row order. Used by `check_images` and by recipes that also need the original image sizes, so
    the files are read only once. `indices`: each row's number in the data file when `rows` is a subset of it
    (e.g. only the rows with an image path), so the messages name the right row.
    """
    rows = list(rows)
    if not rows:
        return []
    numbers = list(range(len(rows))) if indices is None else list(indices)
    workers = max_workers or min(32, (os.cpu_count() or 1) * 4, len(rows))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(
            pool.map(
                lambda item: _inspect_one(item[0], item[1], images_root, id_key, image_key),
                zip(numbers, rows, strict=True),
            )
        )


def check_images(
    rows: Sequence[Mapping[str, Any]],
    images_root: str | os.PathLike[str] | None,
    id_key: str = "id",
    image_key: str = "image",
) -> list[str]:
    """Problems with the rows' image files, e.g. `row 3 (id 'abc'): image 'x.png' -> /abs/x.png: file not found`.

    An empty list means every image exists and decodes. Callers collect these with their own problems and raise a
    single `DataError`.
    """
    return [info.problem for info in inspect_images(rows, images_root, id_key, image_key) if info.problem]


def to_dataset(
    rows: Iterable[Mapping[str, Any]], image_column: str = "image", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> datasets.Dataset:
    """A `datasets.Dataset` whose `image_column` holds file paths, decoded only when accessed.

    Paths should be absolute (see `resolve_image_path`). Storing paths keeps the Arrow table small and makes
    building the dataset instant even for large sets. Decoding goes through `core.data.images.open_image` (the column is
    a `NormalizedImage`): every image reaching the processor is upright 8-bit RGB with transparency on white, and at
    most `max_pixels` (aspect kept; pass the processor's `core.data.vision.max_image_pixels`), i.e. exactly
    `core.data.images.fit_size(*ImageInfo.size, max_pixels)`: record that size, not the file's, as what the model sees.
    """
    materialised = []
    for row in rows:
        row = dict(row)
        if isinstance(row.get(image_column), os.PathLike):
            row[image_column] = os.fspath(row[image_column])
        materialised.append(row)
    if not materialised:
        raise DataError(["no rows to build a dataset from"])
    dataset = datasets.Dataset.from_list(materialised)
    return dataset.cast_column(image_column, NormalizedImage(max_pixels=max_pixels))


# ------------------------------------------------------------------------------------------ local paths vs hub ids

# Folders the recipes keep local data in (`sample.py` writes `data/sample`): a name starting with one is a path.
LOCAL_DATA_DIRS = ("data",)
DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".arrow", ".csv")


def resolve_input_path(path: str | None, recipe_dir: str | os.PathLike[str]) -> str | None:
    """A data path as the user meant it: absolute or relative to the working directory if it exists there,
    else relative to the recipe folder, so a recipe's config can name its own `data/` and a copied recipe folder
    reads its own copy."""
    if not path:
        return path
    candidate = Path(path)
    resolved = candidate if candidate.is_absolute() or candidate.exists() else Path(recipe_dir) / candidate
    resolved = resolved.resolve()
    logger.info("input %s -> %s", path, resolved)
    return str(resolved)


def looks_like_path(name: str, recipe_dir: str | os.PathLike[str]) -> bool:
    """Whether a dataset name is meant as a local path rather than a hub id (`owner/name`).

    A path: starts with `.`, `/`, `~`; has a backslash, more than one `/`, or a data-file suffix; or its first
    part is a recipe data folder (`data/...`) or a folder that exists in the working directory or the recipe folder.
    """
    if name.startswith((".", "/", "~")) or "\\" in name or name.lower().endswith(DATA_SUFFIXES):
        return True
    parts = [part for part in name.split("/") if part]
    if len(parts) > 2:
        return True
    if len(parts) < 2:
        return False
    first = parts[0]
    return first in LOCAL_DATA_DIRS or Path(first).is_dir() or (Path(recipe_dir) / first).is_dir()


def shown_path(path: Path) -> str:
    """`path` relative to the working directory when it is inside it (a command a person can paste), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def resolve_dataset_source(name: str, recipe_dir: str | os.PathLike[str]) -> str:
    """A dataset named by a local path (see `resolve_input_path`) or by a hub id: the resolved path when that path
    exists, else the name unchanged for `datasets.load_dataset`.

    A name that looks like a path (`looks_like_path`) and exists nowhere raises `DataError` with the command that
    makes the recipe's offline sample there, instead of a hub lookup that retries and fails with "Couldn't reach".
    """
    local = resolve_input_path(name, recipe_dir)
    if Path(local).exists():
        return local
    if not looks_like_path(name, recipe_dir):
        return name
    recipe_dir = Path(recipe_dir).resolve()
    target = Path(name).expanduser()
    target = target if target.is_absolute() else recipe_dir / target
    tried = sorted({str(Path(name).expanduser().absolute()), str(target)})
    raise DataError(
        [
            f"dataset {name!r} not found (looked for {' and '.join(tried)}). Make the offline sample with: "
            f"python {shown_path(recipe_dir / 'sample.py')} {shown_path(target)} ; or name an existing folder, "
            "or a hub dataset id (owner/name)"
        ]
    )


def load_saved_split(path: str | os.PathLike[str], split: str | None = None) -> datasets.Dataset:
    """One split of a `datasets.save_to_disk` folder: `split` of a DatasetDict folder (only that split is read), or
    the Dataset saved there (`split` None or the folder holds a single Dataset).

    A split saved with 0 rows has no data file and `datasets.load_from_disk` fails on it with a bare IndexError; it
    is a `DataError` naming the folder and split here. An unknown split names the ones there are.
    """
    path = Path(path)
    index = path / "dataset_dict.json"
    if index.is_file():
        available = list(json.loads(index.read_text()).get("splits", []))
        if split not in available:
            raise DataError([f"no split {split!r}; available: {', '.join(available) or '(none)'}"], source=path)
        folder = path / split
    else:
        folder = path
    state = folder / "state.json"
    if not state.is_file():
        raise DataError([f"{folder} is not a datasets.save_to_disk folder (no dataset_dict.json or state.json)"], path)
    if not json.loads(state.read_text()).get("_data_files"):
        where = f"split {split!r}" if index.is_file() else "the saved dataset"
        raise DataError([f"{where} holds 0 rows; remake the folder (sample.py) or choose another"], path)
    return datasets.load_from_disk(str(folder))


# ------------------------------------------------------------------------------------------ offline sample folders

SAMPLE_MARKER = "sample.json"


def sample_is_current(
    out: Path, request: Mapping[str, Any], outputs: Iterable[Path], clashes: Iterable[Path], generator: str
) -> bool:
    """Whether a recipe's sample generator may skip its work, and a guard before it (re)writes `out`.

    The `sample.json` marker records the request that wrote the folder. True: the marker holds this very request and
    every path in `outputs` exists, so the generator returns at once. False: the generator writes; a marker from
    another request is removed first, so an interrupted rewrite never claims success. Without a marker, any existing
    path in `clashes` (files the generator would write) was written by someone else: `FileExistsError`, and nothing
    is touched.
    """
    marker = out / SAMPLE_MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) == dict(request) and all(p.is_file() for p in outputs):
            return True
        marker.unlink()
        return False
    found = [p for p in clashes if p.exists()]
    if found:
        names = ", ".join(p.name for p in found[:3]) + (" ..." if len(found) > 3 else "")
        raise FileExistsError(
            f"{out} already holds {names} not written by {generator}; choose another folder (nothing was overwritten)"
        )
    return False


def mark_sample_written(out: Path, request: Mapping[str, Any]) -> None:
    """Record the request once every file is written (see `sample_is_current`)."""
    (out / SAMPLE_MARKER).write_text(json.dumps(dict(request)) + "\n")
