"""Data for image2code: an image of a chart and the matplotlib code that drew it; the model must write that code.

Record format (`.jsonl`, one object per line; a `.json` list / `{"data": [...]}` also loads)::

    {"id": "chart-0001",                      # unique string (optional: "#<row>" is used when absent)
     "description": "A bar chart ...",        # free text, optional (logged, not shown to the model)
     "image_path": "images/chart-0001.png",   # relative to images_root (default: the data file's folder) or absolute
     "reference_code": "import matplotlib..."}  # the code that renders the image (non-empty)

or the same with `"image_base64": "<base64 of the PNG/JPEG bytes>"` instead of `image_path` (one of the two, not
both). `build_dataset` validates every row and raises one `DataError` listing all problems (missing/empty code,
no image or both image fields, undecodable base64, missing or undecodable image file, duplicate id).

Rendering convention (the reward's sandbox must do the same): the code is run as a script with the Agg backend and
matplotlib's default style, and the image is the CURRENT figure (`plt.gcf()`) saved as PNG at the figure's own dpi,
without `bbox_inches="tight"`: a `figsize=(3, 2.4), dpi=64` figure gives a 192x153 image.

CLI (the original project's create_dataset.py; its --create_sample is now sample.py, which also splits)::

    python recipes/image2code/data.py --check FILE [--images_root DIR]     # "OK: FILE: N rows"; exit 2 on problems
    python recipes/image2code/data.py --convert_base64 IN.jsonl OUT.jsonl  # image_path -> image_base64
    python recipes/image2code/data.py --split_dataset IN.jsonl OUT_DIR [--eval_fraction 0.1 --test_fraction 0.1]

`--split_dataset` writes OUT_DIR/{train,eval,test}.jsonl; `image_path` records get their paths rewritten relative
to OUT_DIR (so they resolve from the split files' folder; the images themselves are not copied), base64 records are
copied as they are; `--seed` (default 0) fixes the shuffle. Neither `--convert_base64` nor `--split_dataset`
overwrites existing files unless `--overwrite` (else exit 1).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from PIL import Image

from core.data.cli import Option, Tool, check_main
from core.data.images import DEFAULT_MAX_PIXELS, NormalizedImage, open_image, open_lazy
from core.data.records import (
    DataError,
    describe_row,
    duplicate_id_problems,
    image_prompt,
    inspect_images,
    load_records,
    missing_column_problems,
    resolve_image_path,
    row_ids,
)

PROMPT = (
    "Write Python code using matplotlib that recreates this image exactly: the same chart type, data, colours, "
    "labels, title, legend and figure size. Answer with a single ```python code block. Do not call plt.show() or "
    "save the figure; the current figure is captured when your code finishes."
)

RECIPE_DIR = Path(__file__).resolve().parent
SPLITS = ("train", "eval", "test")


# ----------------------------------------------------------------------------------------------------- build_dataset


def _decode_base64(raw: Any) -> tuple[bytes | None, str | None]:
    """(image bytes, None) or (None, what is wrong); the bytes are checked to decode as an image."""
    if not isinstance(raw, str) or not raw.strip():
        return None, f"empty 'image_base64' (got {raw!r})"
    text = raw.strip()
    if text.startswith("data:") and "," in text:  # data URL: data:image/png;base64,....
        text = text.split(",", 1)[1]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        return None, f"'image_base64' is not valid base64 ({err})"
    try:
        with open_lazy(data) as image:  # up to core.data.images.MAX_DECODE_PIXELS, not Pillow's bomb guard
            image.load()
    except Exception as err:  # Pillow raises many types for bad data; all mean "cannot decode"
        return None, f"'image_base64' does not decode as an image ({type(err).__name__}: {err})"
    return data, None


def build_dataset(
    path: str | os.PathLike[str],
    images_root: str | os.PathLike[str] | None = None,
    system_prompt: str | None = None,
    max_samples: int | None = None,
) -> datasets.Dataset:
    """Load and validate an image2code file into the dataset GRPOTrainer and the rewards expect.

    Columns: `prompt` (conversational: image placeholder then `PROMPT`), `image` (PIL on access, through
    `core.data.images.open_image`: RGB with transparency on white, as `similarity` normalises the rendered candidate;
    path records are decoded lazily from their file, base64 records are stored as bytes), `reference_code`,
    `description`, `id`.
    `images_root` (for relative `image_path`) defaults to the data file's folder; `max_samples` keeps the first N
    records (only those are validated). Raises `DataError` listing every problem found.
    """
    path = Path(path)
    root = path.parent if images_root is None else Path(images_root)
    records = load_records(path)
    if max_samples is not None:
        records = records[: max(0, int(max_samples))]
    if not records:
        raise DataError([f"{path}: no records"], source=path)
    renamed = missing_column_problems(records, ["reference_code", ("image_path", "image_base64")])
    if renamed:
        raise DataError(renamed, source=path)  # once, not once per row

    path_rows = [(index, record) for index, record in enumerate(records) if "image_path" in record]
    infos = inspect_images(
        [record for _, record in path_rows],
        root,
        image_key="image_path",
        indices=[index for index, _ in path_rows],  # row numbers in the file, base64 rows counted too
    )
    path_info = {index: info for (index, _), info in zip(path_rows, infos, strict=True)}

    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    ids = row_ids(records)
    for index, record in enumerate(records):
        raw_id = record.get("id")
        row_id = ids[index]
        label = describe_row(index, raw_id)
        row_problems: list[str] = []

        code = record.get("reference_code")
        if not isinstance(code, str) or not code.strip():
            row_problems.append(f"{label}: missing or empty 'reference_code', got {code!r}")
        description = record.get("description", "")
        if description is None:
            description = ""
        if not isinstance(description, str):
            row_problems.append(f"{label}: 'description' must be a string, got {type(description).__name__}")

        image: dict[str, Any] | None = None
        has_path, has_b64 = "image_path" in record, "image_base64" in record
        if has_path and has_b64:
            row_problems.append(f"{label}: has both 'image_path' and 'image_base64'; keep one")
        elif has_path:
            info = path_info[index]
            if info.problem:
                row_problems.append(info.problem.replace("missing 'image_path'", "empty 'image_path'"))
            else:
                image = {"path": str(info.path), "bytes": None}
        elif has_b64:
            data, error = _decode_base64(record["image_base64"])
            if error:
                row_problems.append(f"{label}: {error}")
            else:
                image = {"path": None, "bytes": data}
        else:
            row_problems.append(f"{label}: no image: give 'image_path' or 'image_base64'")

        if row_problems:
            problems.extend(row_problems)
            continue
        rows.append(
            {
                "prompt": image_prompt(PROMPT, system_prompt),
                "image": image,
                "reference_code": code.strip("\n"),
                "description": description.strip(),
                "id": row_id,
            }
        )

    problems += duplicate_id_problems(ids)
    if problems:
        raise DataError(problems, source=path)
    dataset = datasets.Dataset.from_list(rows)
    return dataset.cast_column("image", NormalizedImage(max_pixels=DEFAULT_MAX_PIXELS))


# -------------------------------------------------------------------------------------------------------- rendering


def render_code(code: str) -> Image.Image:
    """Run trusted reference code in-process (Agg, default style) and return the current figure as an RGB image
    (`core.data.images.open_image`: a transparent figure background becomes white, as in the dataset and the reward).

    The rendering convention is the module docstring's. Only for OUR generated code: user/model code goes through
    the sandbox.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.close("all")
    try:
        with matplotlib.style.context("default"):
            exec(compile(code, "<reference_code>", "exec"), {"__name__": "__main__"})  # noqa: S102 - trusted code
            figure = plt.gcf()
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=figure.dpi, metadata={"Software": None})
    finally:
        plt.close("all")
    return open_image(buffer.getvalue())


# --------------------------------------------------------------------------------------------- convert and split


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"not overwriting {', '.join(existing)} (pass overwrite=True / --overwrite)")


def _write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


def convert_base64(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    images_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Copy IN to OUT with every `image_path` replaced by `image_base64` (the file's bytes, base64).

    Relative paths resolve from `images_root` (default: IN's folder). Records already in base64 are copied as they
    are. Every unreadable image is reported in one `DataError` and nothing is written.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    _refuse_existing([out_path], overwrite)
    root = in_path.parent if images_root is None else Path(images_root)
    records = load_records(in_path)
    converted, problems = [], []
    for index, record in enumerate(records):
        if "image_path" not in record:
            converted.append(record)
            continue
        raw = record["image_path"]
        label = describe_row(index, record.get("id"))
        if not isinstance(raw, str) or not raw.strip():
            problems.append(f"{label}: empty 'image_path' ({raw!r})")
            continue
        file = resolve_image_path(raw, root)
        try:
            data = file.read_bytes()
        except OSError as err:
            problems.append(f"{label}: image {raw!r} -> {file}: cannot read ({err.strerror or err})")
            continue
        new = {key: value for key, value in record.items() if key != "image_path"}
        new["image_base64"] = base64.b64encode(data).decode("ascii")
        converted.append(new)
    if problems:
        raise DataError(problems, source=in_path)
    _write_jsonl(out_path, converted)
    return out_path


def partition(count: int, num_eval: int, num_test: int, seed: int = 0) -> dict[str, list[int]]:
    """Row indices of each split, in file order: the rows shuffled by `seed`, the first `num_eval` to eval, the next
    `num_test` to test, the rest to train (sample.py splits its charts the same way)."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    parts = {
        "train": order[num_eval + num_test :],
        "eval": order[:num_eval],
        "test": order[num_eval : num_eval + num_test],
    }
    return {split: sorted(parts[split]) for split in SPLITS}


def split_dataset(
    in_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    eval_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    images_root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Shuffle IN (deterministically by `seed`) into OUT_DIR/{train,eval,test}.jsonl.

    Sizes: eval = round(N * eval_fraction), test = round(N * test_fraction), train = the rest (must stay > 0).
    Relative `image_path`s are rewritten relative to OUT_DIR (absolute ones stay absolute) so that the split files
    load with their own folder as images_root; images are not copied. Empty splits are still written (empty file).
    """
    if not (0 <= eval_fraction < 1 and 0 <= test_fraction < 1 and eval_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= eval, test and eval + test < 1, got eval={eval_fraction}, test={test_fraction}")
    in_path, out = Path(in_path), Path(out_dir)
    outputs = {split: out / f"{split}.jsonl" for split in SPLITS}
    _refuse_existing(list(outputs.values()), overwrite)
    root = in_path.parent if images_root is None else Path(images_root)
    records = load_records(in_path)
    n_eval, n_test = round(len(records) * eval_fraction), round(len(records) * test_fraction)
    if len(records) - n_eval - n_test <= 0:
        raise ValueError(
            f"{len(records)} records leave no training rows with eval={eval_fraction}, test={test_fraction}"
        )
    out_abs = out.absolute()
    rewritten = []
    for record in records:
        record = dict(record)
        raw = record.get("image_path")
        if isinstance(raw, str) and raw.strip() and not Path(raw).expanduser().is_absolute():
            record["image_path"] = Path(os.path.relpath(resolve_image_path(raw, root), out_abs)).as_posix()
        rewritten.append(record)
    for split, indices in partition(len(records), n_eval, n_test, seed).items():
        _write_jsonl(outputs[split], [rewritten[i] for i in indices])
    return outputs


# ---------------------------------------------------------------------------------------------------------------- CLI


def check(source: str, images_root: str | None = None, max_samples: int | None = None) -> int:
    """`data.py --check`: the rows of `source` that build_dataset accepts (it raises DataError otherwise)."""
    return len(build_dataset(source, images_root, max_samples=max_samples))


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit code."""
    tools = [
        Tool("--convert_base64", ("IN", "OUT"), "copy IN with image_path replaced by image_base64", convert_base64),
        Tool("--split_dataset", ("IN", "OUT_DIR"), "shuffle IN into OUT_DIR/{train,eval,test}.jsonl", split_dataset),
    ]
    options = [
        Option("--images_root", "folder relative image paths start from (default: the data file's)", metavar="DIR"),
        Option("--max_samples", "--check only the first N rows", int, metavar="N"),
        Option(
            "--eval_fraction",
            "--split_dataset: share of rows for eval (default 0.1)",
            float,
            metavar="F",
            aliases=("--eval",),
        ),
        Option(
            "--test_fraction",
            "--split_dataset: share of rows for test (default 0.1)",
            float,
            metavar="F",
            aliases=("--test",),
        ),
        Option("--seed", "--split_dataset: the shuffle's seed (default 0)", int),
        Option("--overwrite", "--convert_base64, --split_dataset: replace existing output files", action="store_true"),
    ]
    return check_main(check, argv, recipe_dir=RECIPE_DIR, options=options, tools=tools, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
