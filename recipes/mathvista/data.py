"""MathVista data for GRPO: a chart, figure or photo plus a math question; the model reasons, then answers.

MathVista (hub: `AI4Math/MathVista`, splits `testmini` (1000 rows, with answers) and `test`) has the columns
`pid`, `question`, `image` (a relative path such as "images/1.jpg"), `decoded_image` (the image itself), `choices`
(option texts, or None), `unit`, `precision` (decimal places of a float answer), `answer` (for multiple choice the
option TEXT, not its letter), `question_type` ("multi_choice" | "free_form"), `answer_type` ("integer" | "float" |
"text" | "list"), `metadata` (category, context, grade, img_height, img_width, language, skills, source, split,
task) and `query` (MathVista's own prompt).

`source` may be

* a hub dataset id (`datasets.load_dataset(source, split=split)`),
* a local folder in the hub layout, `<folder>/data/<split>-00000-of-00001.parquet` (what `sample.py` writes),
  or written by `save_to_disk` (a DatasetDict, or a single Dataset taken as the requested split),
* a `.json` / `.jsonl` file in the GitHub release format: a dict keyed by pid (`testmini.json`), a list, or one
  row per line, with `image` relative to the file's folder. The file is one split.

`build_dataset` validates every row of the requested slice first and raises one `DataError` listing all problems,
then converts the rows into what GRPOTrainer and the rewards need (see its docstring for the columns).

Over 500 lines: four source layouts, the prompt wording and a validity check per answer type are one data format's
rules, read together; the synthetic sample is sample.py's.

CLI (the offline sample is sample.py's)::

    python recipes/mathvista/data.py --check SOURCE [--split testmini --max_samples N]  # exit 2 on problems
"""

from __future__ import annotations

import ast
import io
import json
import math
import os
import re
import string
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from rewards import RewardConfig, is_correct

from core.data.cli import Option, check_main
from core.data.images import normalize_image, normalize_opened, open_lazy
from core.data.records import (
    DataError,
    describe_row,
    image_prompt,
    load_records,
    load_saved_split,
    looks_like_path,
    require_rows,
    resolve_dataset_source,
    resolve_image_path,
)

RECIPE_DIR = Path(__file__).resolve().parent
HUB_NAME = "AI4Math/MathVista"
DEFAULT_SPLIT = "testmini"
QUESTION_TYPES = ("multi_choice", "free_form")
ANSWER_TYPES = ("integer", "float", "text", "list")
CHOICE_LETTERS = string.ascii_uppercase  # option i is shown as "(A)", "(B)", ...; the model answers with the letter

# MathVista's columns and types on the hub; sample.py writes exactly these (plus `chart`).
METADATA_FEATURES = {
    "category": datasets.Value("string"),
    "context": datasets.Value("string"),
    "grade": datasets.Value("string"),
    "img_height": datasets.Value("int64"),
    "img_width": datasets.Value("int64"),
    "language": datasets.Value("string"),
    "skills": datasets.List(datasets.Value("string")),
    "source": datasets.Value("string"),
    "split": datasets.Value("string"),
    "task": datasets.Value("string"),
}
RAW_FEATURES = datasets.Features(
    {
        "pid": datasets.Value("string"),
        "question": datasets.Value("string"),
        "image": datasets.Value("string"),
        "decoded_image": datasets.Image(),
        "choices": datasets.List(datasets.Value("string")),
        "unit": datasets.Value("string"),
        "precision": datasets.Value("float64"),
        "answer": datasets.Value("string"),
        "question_type": datasets.Value("string"),
        "answer_type": datasets.Value("string"),
        "metadata": METADATA_FEATURES,
        "query": datasets.Value("string"),
    }
)
# Explicit output types: inferred ones would turn an all-None `choices`/`precision`/`unit` slice into Arrow's null
# type, and would not say whether precision is an int. With these, None stays None and lists stay lists.
OUTPUT_FEATURES = datasets.Features(
    {
        "prompt": datasets.List(
            {
                "role": datasets.Value("string"),
                "content": datasets.List({"type": datasets.Value("string"), "text": datasets.Value("string")}),
            }
        ),
        "image": datasets.Image(mode="RGB"),
        "pid": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "choices": datasets.List(datasets.Value("string")),
        "question_type": datasets.Value("string"),
        "answer_type": datasets.Value("string"),
        "precision": datasets.Value("int64"),
        "unit": datasets.Value("string"),
        "task": datasets.Value("string"),
        "grade": datasets.Value("string"),
        "category": datasets.Value("string"),
    }
)

_SHARD = re.compile(r"^(?P<split>.+?)(?:-\d{5}-of-\d{5})?\.parquet$")
_INTEGER = re.compile(r"[+-]?\d+")


# ------------------------------------------------------------------------------------------------------------ loading


def _parquet_splits(folder: Path) -> dict[str, list[Path]]:
    """Split name -> its shard files, from the hub layout `data/<split>-00000-of-00001.parquet` (or top level)."""
    splits: dict[str, list[Path]] = {}
    for file in sorted([*folder.glob("data/*.parquet"), *folder.glob("*.parquet")]):
        match = _SHARD.match(file.name)
        if match:
            splits.setdefault(match["split"], []).append(file)
    return splits


def _read_parquet(files: Sequence[Path]) -> datasets.Dataset:
    """The shards as one in-memory Dataset with the features stored in the files (so `decoded_image` is an Image).

    Read directly rather than via `load_dataset(folder)`: the latter works too (the split name comes from the file
    name) but converts into the global HF cache on every new path, which a 1000-row set does not need.
    """
    tables = [pq.read_table(file) for file in files]
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
    return datasets.Dataset(table)


def _unknown_split(source: Any, split: str, available: Sequence[str]) -> DataError:
    return DataError([f"no split {split!r}; available: {', '.join(available) or '(none)'}"], source=source)


def _json_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a GitHub-release file: `testmini.json` is a dict keyed by pid, which `load_records` (lists only)
    does not take; lists, `{"data": [...]}` and JSONL go through `load_records` and its error reporting."""
    if path.suffix.lower() == ".json" and path.is_file():
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            content = None  # load_records reports the syntax error with its position
        if isinstance(content, dict) and not isinstance(content.get("data"), list):
            not_objects = [
                f"{path}: key {key!r}: expected a JSON object" for key, v in content.items() if not isinstance(v, dict)
            ]
            if not_objects:
                raise DataError(not_objects, source=path)
            return [
                {"pid": key, **value} if value.get("pid") in (None, "") else value for key, value in content.items()
            ]
    return load_records(path)


def _coerce_record(record: dict[str, Any]) -> dict[str, Any]:
    """JSON written by hand may hold numbers where MathVista has strings (pid 7, answer 12, choices [1, 2]) or a
    list answer as a JSON list; normalise these so each column fits one Arrow type. Anything else is left for
    validation to report."""

    def is_number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    record = dict(record)
    for key in ("pid", "answer"):
        if is_number(record.get(key)):
            record[key] = str(record[key])
    if isinstance(record.get("answer"), list):
        record["answer"] = json.dumps(record["answer"])
    if isinstance(record.get("choices"), list):
        record["choices"] = [str(c) if is_number(c) else c for c in record["choices"]]
    precision = record.get("precision")
    if isinstance(precision, int) and not isinstance(precision, bool):
        record["precision"] = float(precision)
    return record


def _records_to_dataset(records: list[dict[str, Any]], path: Path) -> datasets.Dataset:
    """Rows of a JSON file as a Dataset shaped like the hub's: `image` as written (relative, like the hub's
    "images/1.jpg") and `decoded_image` an Image column over the path resolved against the file's folder (decoded
    lazily, so a missing file surfaces in validation, not here)."""
    rows = []
    for record in records:
        record = _coerce_record(record)
        raw = record.get("image")
        if record.get("decoded_image") is None:
            usable = isinstance(raw, str) and raw.strip()
            record["decoded_image"] = str(resolve_image_path(raw, path.parent)) if usable else None
        rows.append(record)
    keys = list(dict.fromkeys(key for row in rows for key in row))
    columns = {key: [row.get(key) for row in rows] for key in keys}
    bad = []
    for key, values in columns.items():
        try:
            pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as err:
            bad.append(f"column {key!r} mixes incompatible types ({err})")
    if bad:
        raise DataError(bad, source=path)
    dataset = datasets.Dataset.from_dict(columns)
    if "decoded_image" in dataset.column_names and dataset.features["decoded_image"] == datasets.Value("string"):
        dataset = dataset.cast_column("decoded_image", datasets.Image())
    return dataset


def _declared_splits(records: Sequence[Mapping[str, Any]]) -> set[str] | None:
    """The splits rows name in `metadata.split`, or None when any row does not say."""
    found = set()
    for record in records:
        metadata = record.get("metadata")
        value = metadata.get("split") if isinstance(metadata, dict) else None
        if not isinstance(value, str) or not value:
            return None
        found.add(value)
    return found


def load_split(source: str | os.PathLike[str], split: str = DEFAULT_SPLIT) -> datasets.Dataset:
    """The raw MathVista rows of one split, from a hub id, a hub-layout or `save_to_disk` folder, or a JSON file.

    The result has the hub's columns; for a JSON file `image` stays as written and `decoded_image` is an Image
    column over that path resolved against the file's folder. A split the source does not have raises `DataError`
    naming those it has (a JSON file is one split: it is refused only when every row's `metadata.split` names
    another one).
    """
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.is_file():
        records = _json_records(path)
        if not records:
            raise DataError([f"{path}: no records"], source=path)
        declared = _declared_splits(records)
        if declared is not None and split not in declared:
            raise _unknown_split(path, split, sorted(declared))
        return _records_to_dataset(records, path)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file():
            return load_saved_split(path, split)  # an empty split: a DataError, not datasets' IndexError
        if (path / "state.json").is_file() and (path / "dataset_info.json").is_file():
            return load_saved_split(path)  # one saved Dataset: it is the split asked for
        splits = _parquet_splits(path)
        if not splits:
            raise DataError(
                [f"{path} holds neither data/<split>-*.parquet files nor a save_to_disk dataset"], source=path
            )
        if split not in splits:
            raise _unknown_split(path, split, sorted(splits))
        return _read_parquet(splits[split])
    if looks_like_path(text, RECIPE_DIR):
        raise DataError([f"not found: {path}"], source=text)
    try:
        return datasets.load_dataset(text, split=split)
    except ValueError as err:
        if str(err).startswith("Unknown split"):  # datasets: 'Unknown split "x". Should be one of [...]'
            raise DataError([f"no split {split!r}: {err}"], source=text) from err
        raise


# ------------------------------------------------------------------------------------------------------------- prompt


def _precision_words(precision: int) -> tuple[str, str]:
    """('one decimal place', '1.2') and the like, for the float hint."""
    if precision == 0:
        return "no decimal places (a whole number)", "12"
    names = {1: "one decimal place", 2: "two decimal places", 3: "three decimal places"}
    example = "1." + ("23456789" * (precision // 8 + 1))[:precision]
    return names.get(precision, f"{precision} decimal places"), example


def _answer_hint(question_type: str, answer_type: str, precision: int | None) -> str:
    """One sentence saying what form the final answer takes, so that exact-match rewards can score it."""
    if question_type == "multi_choice":
        return "Answer with the letter of the correct option, e.g. A, B, C, D."
    if answer_type == "integer":
        return "The answer is an integer, e.g. 1, 2, 3."
    if answer_type == "float":
        if precision is None:
            return "The answer is a decimal number, e.g. 1.5."
        words, example = _precision_words(precision)
        return f"The answer is a number with {words}, e.g. {example}."
    if answer_type == "list":
        return "The answer is a Python list, e.g. [1, 2, 3]."
    return "The answer is a word or a short phrase."


def _mentions(question: str, unit: str) -> bool:
    """Whether the question already names the unit as a word ("in cm"), so the note would only repeat it."""
    return re.search(rf"(?<!\w){re.escape(unit)}(?!\w)", question, flags=re.IGNORECASE) is not None


def build_prompt_text(
    question: str,
    *,
    question_type: str,
    answer_type: str,
    choices: Sequence[str] | None = None,
    precision: int | None = None,
    unit: str | None = None,
    reward_cfg: RewardConfig = RewardConfig(),
) -> str:
    """The user text: answer-form hint, question, lettered options, unit note, then the output format.

    MathVista-style (hint first) in our own words. The delimiters come from `reward_cfg`, the same object the
    rewards parse with, so changing them in the config cannot make the prompt and the rewards disagree.
    """
    lines = [f"Hint: {_answer_hint(question_type, answer_type, precision)}", f"Question: {question.strip()}"]
    if question_type == "multi_choice" and choices:
        lines.append("Choices:")
        lines += [f"({letter}) {str(choice).strip()}" for letter, choice in zip(CHOICE_LETTERS, choices, strict=False)]
    if unit and unit.strip() and not _mentions(question, unit.strip()):
        lines.append(f"(Unit: {unit.strip()})")
    final = "the letter of the correct option" if question_type == "multi_choice" else "the final answer"
    lines.append(
        f"First think step by step between {reward_cfg.reasoning_start} and {reward_cfg.reasoning_end}, "
        f"then give only {final} between {reward_cfg.solution_start} and {reward_cfg.solution_end}."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------- validation


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _precision_value(raw: Any) -> tuple[int | None, str | None]:
    """(int or None, None) or (None, what is wrong): a precision must be a non-negative whole number (1.0 is 1)."""
    if _missing(raw):
        return None, None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        return None, f"precision must be a non-negative whole number, got {raw!r}"
    if raw < 0 or raw != int(raw):
        return None, f"precision must be a non-negative whole number, got {raw!r}"
    return int(raw), None


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _is_list(text: str) -> bool:
    """A Python/JSON list literal ("[1, 2]"; a parenthesised tuple too). Bare "1, 2" is not: it reads as a tuple
    to Python but nothing in the prompt asks for that form."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return isinstance(value, list) or (isinstance(value, tuple) and text.lstrip().startswith("("))


def _row_problems(row: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Problems of one row's text fields (images are checked separately) and the cleaned values when none."""
    problems = []
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        problems.append(f"missing or empty question, got {question!r}")
    question_type, answer_type = row.get("question_type"), row.get("answer_type")
    if question_type not in QUESTION_TYPES:
        problems.append(f"question_type must be one of {', '.join(QUESTION_TYPES)}, got {question_type!r}")
    if answer_type not in ANSWER_TYPES:
        problems.append(f"answer_type must be one of {', '.join(ANSWER_TYPES)}, got {answer_type!r}")
    raw_answer = row.get("answer")
    answer = raw_answer.strip() if isinstance(raw_answer, str) else None
    if not answer:
        problems.append(f"missing or empty answer, got {raw_answer!r}")

    raw_choices = row.get("choices")
    choices = None
    if raw_choices is not None:
        if isinstance(raw_choices, (list, tuple)) and all(isinstance(c, str) and c.strip() for c in raw_choices):
            choices = [c.strip() for c in raw_choices]
        else:
            problems.append(f"choices must be a list of non-empty strings, got {raw_choices!r}")
    precision, precision_error = _precision_value(row.get("precision"))
    if precision_error:
        problems.append(precision_error)

    if question_type == "multi_choice" and isinstance(raw_choices, (list, tuple)) and choices is not None:
        if len(choices) < 2:
            problems.append(f"multi_choice needs at least 2 choices, got {raw_choices!r}")
        elif len(choices) > len(CHOICE_LETTERS):
            problems.append(f"multi_choice has {len(choices)} choices, more than the {len(CHOICE_LETTERS)} letters")
        elif answer and answer not in choices:
            problems.append(f"answer {answer!r} is not one of the choices {choices!r}")
    elif question_type == "multi_choice" and raw_choices is None:
        problems.append("multi_choice needs at least 2 choices, got None")
    elif question_type == "free_form" and answer:  # a multi_choice answer is an option text, whatever its type
        if answer_type == "integer" and not _INTEGER.fullmatch(answer):
            problems.append(f"answer_type integer but answer {answer!r} is not an integer")
        elif answer_type == "float":
            if not _is_number(answer):
                problems.append(f"answer_type float but answer {answer!r} is not a number")
            if precision is None and not precision_error:
                problems.append("answer_type float needs a precision (decimal places), got None")
        elif answer_type == "list" and not _is_list(answer):
            problems.append(f"answer_type list but answer {answer!r} does not parse as a list")

    unit = row.get("unit")
    if not _missing(unit) and not isinstance(unit, str):
        problems.append(f"unit must be a string or None, got {unit!r}")
    metadata = row.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    clean = {
        "question": question.strip() if isinstance(question, str) else question,
        "answer": answer,
        "choices": choices,
        "question_type": question_type,
        "answer_type": answer_type,
        "precision": precision,
        "unit": (unit.strip() or None) if isinstance(unit, str) else None,
        "task": metadata.get("task"),
        "grade": metadata.get("grade"),
        "category": metadata.get("category"),
    }
    if not problems:
        unscorable = _unscorable_answer(clean)
        if unscorable:
            problems.append(unscorable)
    return problems, clean


def _unscorable_answer(clean: Mapping[str, Any]) -> str | None:
    """What is wrong when `correctness_reward` cannot match the row's answer even to itself, else None.

    Such a row passes every format check ("[[1, 2], [3, 4]]" is a list) but can never pay: no completion scores
    correct, so it costs generation time and teaches nothing. The answer is written as the prompt asks for it: the
    option's letter for multiple choice (an option text like "A" would read as a letter), the answer itself otherwise.
    """
    answer, answer_type = clean["answer"], clean["answer_type"]
    reference = answer
    if clean["question_type"] == "multi_choice":
        reference = CHOICE_LETTERS[clean["choices"].index(answer)]
    item = {key: clean[key] for key in ("question_type", "answer_type", "choices", "precision", "unit")}
    if is_correct(reference, answer, **item):
        return None
    why = " (a list answer holds numbers or strings, one level deep)" if answer_type == "list" else ""
    return (
        f"answer {answer!r} can never be rewarded: correctness_reward does not read it as a {answer_type} answer, "
        f"so not even the answer itself scores as correct{why}"
    )


def _image_origin(decoded: Any, image: Any, root: Path | None) -> str:
    """Where a row's picture comes from, for a message: `image 'x.png' -> /abs/x.png` or the embedded bytes."""
    if isinstance(decoded, Mapping) and decoded.get("bytes"):
        return f"decoded_image ({len(decoded['bytes'])} bytes embedded in the data)"
    named = image if isinstance(image, str) and image.strip() else None
    path = (decoded.get("path") if isinstance(decoded, Mapping) else None) or named
    return f"image {named or path!r} -> {resolve_image_path(path, root)}" if path else "image"


def _open_image(decoded: Any, image: Any, root: Path | None) -> Image.Image:
    """The row's picture: `decoded_image` bytes, else its path, else the `image` path (relative to `root`)."""
    if isinstance(decoded, Image.Image):
        return decoded
    if isinstance(decoded, Mapping) and decoded.get("bytes"):
        return open_lazy(decoded["bytes"])
    named = image if isinstance(image, str) and image.strip() else None
    path = (decoded.get("path") if isinstance(decoded, Mapping) else None) or named
    if path is None:
        raise LookupError("missing image (no decoded_image and no image path)")
    file = resolve_image_path(path, root)
    if not file.is_file():
        raise FileNotFoundError(f"image {named or path!r} -> {file}: file not found")  # the path as the user wrote it
    return open_lazy(file)  # up to core.data.images.MAX_DECODE_PIXELS, not Pillow's decompression-bomb guard


def prepare_image(image: Image.Image, image_size: int) -> Image.Image:
    """What the model sees of any picture (training rows, infer.py): `core.data.images.normalize_image` (upright 8-bit
    RGB, transparency on white, 16-bit greys kept), longest side at most `image_size` (downscaled once, never up)."""
    return normalize_image(image, max_side=image_size)


def _prepare_image(decoded: Any, image: Any, root: Path | None, image_size: int) -> tuple[dict | None, str | None]:
    """({"bytes": ..., "path": None}, None) for the RGB image downscaled to `image_size`, or (None, problem).

    Downscaling here, once, keeps the stored dataset small and the visual-token count per prompt bounded; small
    images are never upscaled. JPEG sources stay JPEG (photos), everything else is PNG (charts need sharp text).
    Decoded by `core.data.images.normalize_opened`: `prepare_image`'s result, a big JPEG decoded at a reduced DCT scale.
    """
    try:
        with _open_image(decoded, image, root) as opened:
            source_format = opened.format
            rgb = normalize_opened(opened, max_side=image_size)
    except (LookupError, FileNotFoundError) as err:
        return None, str(err)
    except Exception as err:  # Pillow raises many unrelated types for bad data; all mean "cannot decode"
        return None, f"{_image_origin(decoded, image, root)}: cannot decode ({type(err).__name__}: {err})"
    buffer = io.BytesIO()
    if source_format in ("JPEG", "MPO"):
        rgb.save(buffer, format="JPEG", quality=95)
    else:
        rgb.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}, None


def _source_root(source: str | os.PathLike[str]) -> Path | None:
    """Folder that relative image paths start from when a row has no image bytes."""
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        return path.absolute()
    if path.is_file():
        return path.parent.absolute()
    return None


def build_dataset(
    source: str | os.PathLike[str],
    split: str = DEFAULT_SPLIT,
    start: int = 0,
    max_samples: int | None = None,
    image_size: int = 512,
    reward_cfg: RewardConfig = RewardConfig(),
    system_prompt: str | None = None,
) -> datasets.Dataset:
    """Rows [start, start + max_samples) of the split, validated and converted for GRPOTrainer and the rewards.

    Columns: `prompt` (conversational: image placeholder, then `build_prompt_text`), `image` (RGB, longest side
    at most `image_size`, stored as bytes), `pid`, `question`, `answer` (str; the option TEXT for multi_choice),
    `choices` (list[str] or None), `question_type`, `answer_type`, `precision` (int or None), `unit` (str or None),
    `task`, `grade`, `category` (from `metadata`, None when absent).

    Every problem of every row in the slice (row numbers are indices in the split) is raised at once as one
    `DataError`, so a bad dataset costs one run to diagnose, not one per error.
    """
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    where = f"{os.fspath(source)} (split {split})"
    table = load_split(source, split)
    required = {"pid", "question", "answer", "question_type", "answer_type"}
    missing = sorted(required - set(table.column_names))
    if not {"decoded_image", "image"} & set(table.column_names):
        missing.append("decoded_image or image")
    if missing:
        raise DataError([f"missing column(s) {missing}; the source has {table.column_names}"], source=where)
    require_rows(len(table), where)
    if start >= len(table):
        raise DataError([f"start {start} is past the end of the split ({len(table)} rows)"], source=where)
    end = len(table) if max_samples is None else min(len(table), start + max_samples)
    table = table.select(range(start, end))
    if isinstance(table.features.get("decoded_image"), datasets.Image):
        table = table.cast_column("decoded_image", datasets.Image(decode=False))  # validate the bytes ourselves

    root = _source_root(source)
    rows = table.to_list()
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 2, len(rows))) as pool:
        images = list(
            pool.map(lambda row: _prepare_image(row.get("decoded_image"), row.get("image"), root, image_size), rows)
        )

    problems: list[str] = []
    output: list[dict[str, Any]] = []
    rows_by_pid: dict[str, list[int]] = {}
    for offset, (row, (image, image_problem)) in enumerate(zip(rows, images, strict=True)):
        index = start + offset
        raw_pid = row.get("pid")
        pid = f"#{index}" if raw_pid is None or raw_pid == "" else str(raw_pid)
        rows_by_pid.setdefault(pid, []).append(index)
        label = describe_row(index, raw_pid)
        row_problems, clean = _row_problems(row)
        if image_problem:
            row_problems.append(image_problem)
        if row_problems:
            problems += [f"{label}: {problem}" for problem in row_problems]
            continue
        text = build_prompt_text(
            clean["question"],
            question_type=clean["question_type"],
            answer_type=clean["answer_type"],
            choices=clean["choices"],
            precision=clean["precision"],
            unit=clean["unit"],
            reward_cfg=reward_cfg,
        )
        output.append({"prompt": image_prompt(text, system_prompt), "image": image, "pid": pid, **clean})
    problems += [
        f"duplicate pid {pid!r} in rows {', '.join(map(str, indices))}"
        for pid, indices in rows_by_pid.items()
        if len(indices) > 1
    ]
    if problems:
        raise DataError(problems, source=where)
    return datasets.Dataset.from_list(output, features=OUTPUT_FEATURES)


# --------------------------------------------------------------------------------------------------------------- CLI


def check(
    source: str, split: str = DEFAULT_SPLIT, start: int = 0, max_samples: int | None = None, image_size: int = 512
) -> tuple[int, str]:
    """`data.py --check`: the rows of the slice that build_dataset accepts (it raises DataError otherwise)."""
    dataset = build_dataset(resolve_dataset_source(source, RECIPE_DIR), split, start, max_samples, image_size)
    kinds = sorted(set(dataset["question_type"]) | set(dataset["answer_type"]))
    return len(dataset), f"split {split}: {', '.join(kinds)}"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit code."""
    options = [
        Option("--split", f"the split to check (default {DEFAULT_SPLIT})"),
        Option("--start", "first row of the slice (default 0)", int),
        Option("--max_samples", "rows of the slice (default: to the end)", int, metavar="N"),
        Option("--image_size", "longest image side after the one downscale (default 512)", int, metavar="PIXELS"),
    ]
    return check_main(
        check,
        argv,
        recipe_dir=RECIPE_DIR,
        options=options,
        description=__doc__,
        source_help="a hub id, a hub-layout or save_to_disk folder (sample.py writes one), or a .json/.jsonl file",
    )


if __name__ == "__main__":
    raise SystemExit(main())
