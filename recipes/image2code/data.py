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

CLI (the original project's create_dataset.py)::

    python recipes/image2code/data.py --create_sample OUT_DIR [--n 40 --seed 0]   # OUT_DIR/images/*.png, data.jsonl
    python recipes/image2code/data.py --convert_base64 IN.jsonl OUT.jsonl         # image_path -> image_base64
    python recipes/image2code/data.py --split_dataset IN.jsonl OUT_DIR [--eval 0.1 --test 0.1 --seed 0]
    python recipes/image2code/data.py --check FILE [--images_root DIR]            # validate; exit 1 on problems

`--split_dataset` writes OUT_DIR/{train,eval,test}.jsonl; `image_path` records get their paths rewritten relative
to OUT_DIR (so they resolve from the split files' folder; the images themselves are not copied), base64 records are
copied as they are. Neither `--convert_base64` nor `--split_dataset` overwrites existing files unless `--overwrite`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from PIL import Image

from core.data.images import DEFAULT_MAX_PIXELS, NormalizedImage, open_image, open_lazy
from core.data.records import (
    DataError,
    describe_row,
    duplicate_id_problems,
    image_prompt,
    inspect_images,
    load_records,
    mark_sample_written,
    missing_column_problems,
    resolve_image_path,
    row_ids,
    sample_is_current,
)

PROMPT = (
    "Write Python code using matplotlib that recreates this image exactly: the same chart type, data, colours, "
    "labels, title, legend and figure size. Answer with a single ```python code block. Do not call plt.show() or "
    "save the figure; the current figure is captured when your code finishes."
)

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


# ------------------------------------------------------------------------------------------------- synthetic sample

_PALETTE = [
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "#1f77b4",
    "#e377c2",
    "#8c564b",
    "navy",
    "darkorange",
    "seagreen",
    "crimson",
    "gold",
    "teal",
    "black",
    "gray",
]
_TITLES = [
    "Monthly sales",
    "Temperature",
    "Survey results",
    "Revenue",
    "Growth",
    "Scores",
    "Traffic",
    "Usage",
    "Population",
    "Budget",
    "Errors per day",
    "Latency",
]
_CATEGORIES = ["A", "B", "C", "D", "E", "F"]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun"]
_SERIES = ["alpha", "beta", "gamma", "north", "south", "2023", "2024"]
_MARKERS = ["o", "s", "^", "x", "d", ""]
_LINESTYLES = ["-", "--", ":", "-."]
KINDS = ("line", "bar", "barh", "scatter", "pie", "histogram", "area", "subplots")


def _values(rng: random.Random, n: int, low: float = 1, high: float = 10) -> list[float]:
    return [round(rng.uniform(low, high), 1) for _ in range(n)]


def _decorate(lines: list[str], rng: random.Random, title: str | None, legend: bool, axes: bool = True) -> None:
    if title:
        lines.append(f"ax.set_title({title!r})")
    if axes and rng.random() < 0.5:
        lines.append(f"ax.set_xlabel({rng.choice(['x', 'time', 'month', 'group'])!r})")
        lines.append(f"ax.set_ylabel({rng.choice(['y', 'value', 'count', 'score'])!r})")
    if axes and rng.random() < 0.3:
        lines.append("ax.grid(True, alpha=0.3)")
    if legend:
        lines.append(f"ax.legend(loc={rng.choice(['best', 'upper left', 'lower right'])!r}, fontsize=6)")
    lines.append("fig.tight_layout()")


def _chart(kind: str, rng: random.Random) -> tuple[str, str]:
    """(reference code, description) of one chart of the given kind with random data, colours and labels."""
    title = rng.choice(_TITLES) if rng.random() < 0.7 else None
    colours = rng.sample(_PALETTE, 4)
    lines = ["import matplotlib.pyplot as plt"]
    if kind == "histogram" or (kind == "scatter" and rng.random() < 0.5):
        lines.insert(0, "import random")  # stdlib, seeded: numpy.random is unavailable in core.rewards.sandbox today
    lines.append("")
    if kind == "subplots":
        lines.append("fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(3, 2.4), dpi=64)")
        n = rng.randint(3, 5)
        lines.append(f"ax1.plot({list(range(n))}, {_values(rng, n)}, color={colours[0]!r}, marker='o')")
        lines.append(f"ax2.bar({_CATEGORIES[:n]}, {_values(rng, n)}, color={colours[1]!r})")
        left, right = rng.sample(_TITLES, 2)
        lines += [f"ax1.set_title({left!r}, fontsize=8)", f"ax2.set_title({right!r}, fontsize=8)"]
        if title:
            lines.append(f"fig.suptitle({title!r}, fontsize=9)")
        lines.append("fig.tight_layout()")
        text = f"Two side-by-side panels: a line plot '{left}' and a bar chart '{right}'"
        return "\n".join(lines) + "\n", text + (f" under the title '{title}'." if title else ".")

    lines.append("fig, ax = plt.subplots(figsize=(3, 2.4), dpi=64)")
    legend = False
    if kind == "line":
        series = rng.randint(1, 3)
        n = rng.randint(4, 6)
        xs = _MONTHS[:n] if rng.random() < 0.5 else list(range(1, n + 1))
        names = rng.sample(_SERIES, series)
        for k, name in enumerate(names):
            style = rng.choice(_LINESTYLES)
            marker = rng.choice(_MARKERS)
            lines.append(
                f"ax.plot({xs!r}, {_values(rng, n)}, color={colours[k]!r}, linestyle={style!r}, "
                f"marker={marker!r}, label={name!r})"
            )
        legend = series > 1 or rng.random() < 0.3
        text = f"A line chart with {series} series ({', '.join(names)}) over {n} points"
    elif kind == "bar":
        n = rng.randint(3, 6)
        lines.append(f"ax.bar({_CATEGORIES[:n]!r}, {_values(rng, n)}, color={colours[0]!r}, edgecolor='black')")
        text = f"A vertical bar chart of {n} categories in {colours[0]}"
    elif kind == "barh":
        n = rng.randint(3, 5)
        per_bar = [rng.choice(_PALETTE) for _ in range(n)]
        lines.append(f"ax.barh({_CATEGORIES[:n]!r}, {_values(rng, n)}, color={per_bar!r})")
        text = f"A horizontal bar chart of {n} categories with one colour per bar"
    elif kind == "scatter":
        n = rng.randint(8, 20)
        if lines[0] == "import random":
            seed = rng.randint(0, 999)
            lines.append(f"random.seed({seed})")
            lines.append(f"x = [random.uniform(0, 10) for _ in range({n})]")
            lines.append("y = [0.5 * v + random.gauss(0, 1) for v in x]")
            lines.append(f"ax.scatter(x, y, color={colours[0]!r}, s=12, marker={rng.choice(['o', 's', '^'])!r})")
        else:
            lines.append(f"ax.scatter({_values(rng, n, 0, 10)}, {_values(rng, n, 0, 10)}, color={colours[0]!r}, s=12)")
        text = f"A scatter plot of {n} points in {colours[0]}"
    elif kind == "pie":
        n = rng.randint(3, 5)
        lines.append(
            f"ax.pie({_values(rng, n, 5, 40)}, labels={_CATEGORIES[:n]!r}, "
            f"colors={rng.sample(_PALETTE, n)!r}, autopct='%1.0f%%', textprops={{'fontsize': 6}})"
        )
        lines.append("ax.axis('equal')")
        text = f"A pie chart with {n} slices and percentage labels"
    elif kind == "histogram":
        seed, bins = rng.randint(0, 999), rng.choice([8, 10, 15, 20])
        mean, spread = rng.randint(0, 50), rng.randint(3, 15)
        lines.append(f"random.seed({seed})")
        lines.append(f"data = [random.gauss({mean}, {spread}) for _ in range(200)]")
        lines.append(f"ax.hist(data, bins={bins}, color={colours[0]!r}, edgecolor='white')")
        text = f"A histogram of 200 normal samples (mean {mean}, sd {spread}) in {bins} bins"
    elif kind == "area":
        n = rng.randint(4, 7)
        lines.append(f"x = {list(range(n))}")
        lines.append(f"y = {_values(rng, n)}")
        lines.append(f"ax.fill_between(x, y, color={colours[0]!r}, alpha=0.5, label='area')")
        lines.append(f"ax.plot(x, y, color={colours[1]!r})")
        legend = rng.random() < 0.5
        text = f"An area chart of {n} points filled in {colours[0]}"
    else:
        raise ValueError(f"unknown chart kind {kind!r}; known: {', '.join(KINDS)}")
    _decorate(lines, rng, title, legend, axes=kind != "pie")
    text += f", titled '{title}'." if title else "."
    return "\n".join(lines) + "\n", text


def make_sample_record(sample_id: str, rng: random.Random, kind: str | None = None) -> tuple[Image.Image, dict]:
    """One random chart: its rendered image and its record (without the image field)."""
    kind = kind or rng.choice(KINDS)
    code, description = _chart(kind, rng)
    return render_code(code), {"id": sample_id, "description": description, "reference_code": code, "kind": kind}


def create_sample(out_dir: str | os.PathLike[str], n: int = 40, seed: int = 0) -> Path:
    """Write `images/*.png` and `data.jsonl` (image_path records) under `out_dir`; return the data file.

    Chart kinds cycle through `KINDS` (so every kind appears once n >= 8), data/colours/labels are random. A
    `sample.json` marker records the request: the same request again is a no-op, and a folder holding a data.jsonl
    that --create_sample did not write is never overwritten.
    """
    out = Path(out_dir)
    data_file = out / "data.jsonl"
    request = {"generator": "image2code-create-sample", "n": n, "seed": seed}
    if sample_is_current(out, request, [data_file], [data_file], "--create_sample"):
        return data_file
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kinds = [KINDS[index % len(KINDS)] for index in range(n)]
    rng.shuffle(kinds)
    lines = []
    for index, kind in enumerate(kinds):
        sample_id = f"chart-{index:04d}"
        image, record = make_sample_record(sample_id, rng, kind)
        relative = f"images/{sample_id}.png"
        image.save(out / relative, format="PNG")
        record = {
            "id": sample_id,
            "description": record["description"],
            "image_path": relative,
            "reference_code": record["reference_code"],
            "kind": kind,
        }
        lines.append(json.dumps(record))
    data_file.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    mark_sample_written(out, request)
    return data_file


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
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    out_abs = out.absolute()
    rewritten = []
    for record in records:
        record = dict(record)
        raw = record.get("image_path")
        if isinstance(raw, str) and raw.strip() and not Path(raw).expanduser().is_absolute():
            record["image_path"] = Path(os.path.relpath(resolve_image_path(raw, root), out_abs)).as_posix()
        rewritten.append(record)
    parts = {
        "eval": order[:n_eval],
        "test": order[n_eval : n_eval + n_test],
        "train": order[n_eval + n_test :],
    }
    for split in SPLITS:
        _write_jsonl(outputs[split], [rewritten[i] for i in sorted(parts[split])])
    return outputs


# ---------------------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--create_sample", metavar="OUT_DIR", help="render a synthetic chart dataset")
    action.add_argument("--convert_base64", nargs=2, metavar=("IN", "OUT"), help="image_path -> image_base64")
    action.add_argument("--split_dataset", nargs=2, metavar=("IN", "OUT_DIR"), help="train/eval/test split")
    action.add_argument("--check", metavar="FILE", help="validate a .jsonl/.json file")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval", type=float, default=0.1)
    parser.add_argument("--test", type=float, default=0.1)
    parser.add_argument("--images_root", default=None, help="folder relative image paths start from (default: IN's)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)

    try:
        if args.create_sample:
            data_file = create_sample(args.create_sample, args.n, args.seed)
            print(f"sample: {data_file} ({args.n} records), images in {data_file.parent / 'images'}")
        elif args.convert_base64:
            out = convert_base64(*args.convert_base64, images_root=args.images_root, overwrite=args.overwrite)
            print(f"wrote {out}")
        elif args.split_dataset:
            outputs = split_dataset(
                *args.split_dataset, args.eval, args.test, args.seed, args.images_root, args.overwrite
            )
            for split, file in outputs.items():
                count = sum(1 for line in file.read_text().splitlines() if line.strip())
                print(f"{split}: {file} ({count} records)")
        else:
            dataset = build_dataset(args.check, args.images_root)
            print(f"OK: {args.check}: {len(dataset)} rows")
    except (FileExistsError, DataError, ValueError) as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
