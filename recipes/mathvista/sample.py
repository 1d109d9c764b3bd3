"""The mathvista recipe's offline sample: synthetic bar and line charts with MathVista-style questions.

    python recipes/mathvista/sample.py [OUT_DIR] [--num_samples 64] [--seed 0]

Writes OUT_DIR (default: data/sample next to this file, what config_smoke.yaml reads) in the hub layout,
`data/testmini-00000-of-00001.parquet`, with MathVista's columns and types (plus `chart`, the drawn data), so data.py
loads it like `AI4Math/MathVista`. Twelve question templates (integer, float, list and multiple-choice answers)
cycle; every answer is computed from the drawn values, which are written on the chart. The same seed gives the same
bytes; the same request again writes nothing (`sample.json` records it), and a folder holding data this script did
not write is never overwritten.
"""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
from data import CHOICE_LETTERS, DEFAULT_SPLIT, RAW_FEATURES
from PIL import Image

from core.data.cli import OldCounts, sample_main
from core.data.records import mark_sample_written, sample_is_current

RECIPE_DIR = Path(__file__).resolve().parent
NUM_SAMPLES = 64

BAR_COLOUR = (76, 114, 176)  # the bars' exact RGB, so tests can measure them in the image
BAR_THEMES = (
    ("Fruit harvest", "kg", ("apple", "banana", "cherry", "grape", "lemon", "mango", "pear", "plum")),
    ("Students who like each sport", "%", ("tennis", "soccer", "chess", "golf", "rugby", "swimming")),
    ("Books read this year", None, ("Ann", "Ben", "Cara", "Dan", "Eve", "Finn", "Gus")),
)
LINE_THEMES = (("Rainfall per year", "mm"), ("Visitors per year (thousands)", None), ("Height of a tree", "cm"))
SAMPLE_SIZE = (3.2, 2.4)  # inches at 100 dpi: 320x240 px


def _bar_chart(rng: random.Random) -> dict[str, Any]:
    title, unit, names = rng.choice(BAR_THEMES)
    count = rng.randint(3, 6)
    return {
        "kind": "bar",
        "title": title,
        "unit": unit,
        "labels": rng.sample(names, count),
        "values": rng.sample(range(1, 31), count),  # distinct: "the highest" and comparisons are unambiguous
    }


def _line_chart(rng: random.Random) -> dict[str, Any]:
    title, unit = rng.choice(LINE_THEMES)
    count = rng.randint(4, 6)
    first = rng.randint(2012, 2018)
    return {
        "kind": "line",
        "title": title,
        "unit": unit,
        "labels": [str(first + i) for i in range(count)],
        "values": rng.sample(range(0, 51), count),
    }


def _draw_chart(chart: Mapping[str, Any]) -> bytes:
    """PNG bytes of the chart with every value written on it, so each question is answerable from the image.

    Uses matplotlib's object API on the Agg canvas (no pyplot state, no display). The PNG carries no software
    version text, so the bytes depend only on the chart (for a given matplotlib).
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=SAMPLE_SIZE, dpi=100)
    axes = figure.add_subplot()
    labels, values = chart["labels"], chart["values"]
    if chart["kind"] == "bar":
        bars = axes.bar(labels, values, color=[c / 255 for c in BAR_COLOUR])
        axes.bar_label(bars, fontsize=8)
        axes.set_ylim(0, max(values) * 1.2)
        axes.tick_params(axis="x", labelsize=7, labelrotation=30)
    else:
        axes.plot(labels, values, marker="o", color="tab:red")
        for x, y in zip(labels, values, strict=True):
            axes.annotate(str(y), (x, y), textcoords="offset points", xytext=(0, 5), ha="center", fontsize=8)
        axes.set_ylim(0, max(values) * 1.25 + 1)
        axes.tick_params(axis="x", labelsize=7)
    if chart["unit"]:
        axes.set_ylabel(chart["unit"], fontsize=8)
    axes.set_title(chart["title"], fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _pair(rng: random.Random, chart: Mapping[str, Any]) -> tuple[int, int]:
    i, j = rng.sample(range(len(chart["labels"])), 2)
    return i, j


def _numeric_options(correct: int, rng: random.Random) -> list[str]:
    options = {correct}
    while len(options) < 4:
        options.add(max(0, correct + rng.choice((-3, -2, -1, 1, 2, 3, 5))))
    ordered = sorted(options)
    return [str(v) for v in ordered]


# Each template: (chart kind, fn(chart, rng) -> question fields). Answers are computed from the drawn values.
def _q_tallest(chart: dict, rng: random.Random) -> dict:
    return {
        "question": "What is the value of the tallest bar?",
        "answer": str(max(chart["values"])),
        "answer_type": "integer",
        "unit": chart["unit"],
        "grade": "elementary school",
    }


def _q_difference(chart: dict, rng: random.Random) -> dict:
    i, j = _pair(rng, chart)
    (i, j) = (i, j) if chart["values"][i] > chart["values"][j] else (j, i)
    labels, values, unit = chart["labels"], chart["values"], chart["unit"]
    suffix = f" (in {unit})" if unit else ""  # names the unit, so the prompt adds no unit note
    return {
        "question": f"How much larger is the value of {labels[i]} than that of {labels[j]}{suffix}?",
        "answer": str(values[i] - values[j]),
        "answer_type": "integer",
        "unit": unit,
        "grade": "elementary school",
    }


def _q_value_at(chart: dict, rng: random.Random) -> dict:
    i = rng.randrange(len(chart["labels"]))
    return {
        "question": f"What is the value of the line at {chart['labels'][i]}?",
        "answer": str(chart["values"][i]),
        "answer_type": "integer",
        "unit": chart["unit"],
        "grade": "elementary school",
    }


def _q_change(chart: dict, rng: random.Random) -> dict:
    i, j = sorted(_pair(rng, chart))
    labels, values = chart["labels"], chart["values"]
    return {
        "question": f"What is the value in {labels[j]} minus the value in {labels[i]}?",
        "answer": str(values[j] - values[i]),
        "answer_type": "integer",
        "unit": chart["unit"],
        "grade": "high school",
    }


def _q_average(chart: dict, rng: random.Random) -> dict:
    what = "all bars" if chart["kind"] == "bar" else "all points of the line"
    mean = sum(chart["values"]) / len(chart["values"])
    return {
        "question": f"What is the average value of {what}?",
        "answer": f"{mean:.1f}",
        "answer_type": "float",
        "precision": 1.0,
        "unit": chart["unit"],
        "grade": "high school",
    }


def _q_ratio(chart: dict, rng: random.Random) -> dict:
    i, j = _pair(rng, chart)
    labels, values = chart["labels"], chart["values"]
    return {
        "question": f"What is the ratio of the value of {labels[i]} to the value of {labels[j]}?",
        "answer": f"{values[i] / values[j]:.2f}",
        "answer_type": "float",
        "precision": 2.0,
        "unit": None,
        "grade": "college",
    }


def _q_extreme_label(name: str, question: str, pick: Callable[[list], Any]) -> Callable[[dict, random.Random], dict]:
    """A multiple-choice template `_q_<name>`: which label holds the value `pick` (max or min) selects; the options
    are the chart's labels."""

    def template(chart: dict, rng: random.Random) -> dict:
        labels, values = chart["labels"], chart["values"]
        return {
            "question": question,
            "question_type": "multi_choice",
            "choices": list(labels),
            "answer": labels[values.index(pick(values))],
            "answer_type": "text",
            "grade": "elementary school",
            "category": "general-vqa",
        }

    template.__name__ = f"_q_{name}"  # the sample's `chart` column records the template by this name
    return template


_q_highest = _q_extreme_label("highest", "Which category has the highest value?", max)
_q_lowest_year = _q_extreme_label("lowest_year", "In which year is the value the lowest?", min)


def _q_greater(chart: dict, rng: random.Random) -> dict:
    i, j = _pair(rng, chart)
    labels, values = chart["labels"], chart["values"]
    return {
        "question": f"Is the value of {labels[i]} greater than the value of {labels[j]}?",
        "question_type": "multi_choice",
        "choices": ["Yes", "No"],
        "answer": "Yes" if values[i] > values[j] else "No",
        "answer_type": "text",
        "grade": "elementary school",
        "category": "general-vqa",
    }


def _q_sum_options(chart: dict, rng: random.Random) -> dict:
    i, j = _pair(rng, chart)
    labels, values = chart["labels"], chart["values"]
    total = values[i] + values[j]
    return {
        "question": f"What is the sum of the values of {labels[i]} and {labels[j]}?",
        "question_type": "multi_choice",
        "choices": _numeric_options(total, rng),
        "answer": str(total),
        "answer_type": "integer",
        "grade": "elementary school",
    }


def _q_list(chart: dict, rng: random.Random) -> dict:
    return {
        "question": "List the values of the bars from left to right.",
        "answer": json.dumps(chart["values"]),
        "answer_type": "list",
        "grade": "high school",
    }


SAMPLE_TEMPLATES: tuple[tuple[str, Callable[[dict, random.Random], dict]], ...] = (
    ("bar", _q_tallest),
    ("line", _q_value_at),
    ("bar", _q_average),
    ("bar", _q_highest),
    ("bar", _q_ratio),
    ("bar", _q_greater),
    ("line", _q_change),
    ("bar", _q_sum_options),
    ("bar", _q_list),
    ("line", _q_lowest_year),
    ("bar", _q_difference),
    ("line", _q_average),
)


def _mathvista_query(fields: Mapping[str, Any]) -> str:
    """A `query` shaped like MathVista's (its hint, the question, lettered choices)."""
    if fields["question_type"] == "multi_choice":
        hint = "Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
    else:
        kind = {"integer": "an integer answer", "list": "a Python list as an answer"}.get(fields["answer_type"])
        if fields["answer_type"] == "float":
            kind = f"a floating-point number with {int(fields['precision'])} decimal place(s)"
        hint = (
            f"Please answer the question requiring {kind or 'a short answer'} and provide the final value at the end."
        )
    lines = [f"Hint: {hint}", f"Question: {fields['question']}"]
    if fields["choices"]:
        lines += ["Choices:", *(f"({CHOICE_LETTERS[i]}) {c}" for i, c in enumerate(fields["choices"]))]
    return "\n".join(lines)


def make_sample_row(index: int, rng: random.Random) -> dict[str, Any]:
    """One MathVista-shaped row (hub columns plus `chart`, the drawn data as JSON) for template `index % 12`."""
    kind, template = SAMPLE_TEMPLATES[index % len(SAMPLE_TEMPLATES)]
    chart = _bar_chart(rng) if kind == "bar" else _line_chart(rng)
    fields = {
        "question_type": "free_form",
        "choices": None,
        "precision": None,
        "unit": None,
        "category": "math-targeted-vqa",
        **template(chart, rng),
    }
    png = _draw_chart(chart)
    with Image.open(io.BytesIO(png)) as image:
        width, height = image.size
    pid = str(index + 1)
    skills = ["statistical reasoning"] + (["arithmetic reasoning"] if fields["answer_type"] != "text" else [])
    return {
        "pid": pid,
        "question": fields["question"],
        "image": f"images/{pid}.png",
        "decoded_image": {"bytes": png, "path": None},
        "choices": fields["choices"],
        "unit": fields["unit"],
        "precision": fields["precision"],
        "answer": fields["answer"],
        "question_type": fields["question_type"],
        "answer_type": fields["answer_type"],
        "metadata": {
            "category": fields["category"],
            "context": "bar chart" if kind == "bar" else "line plot",
            "grade": fields["grade"],
            "img_height": height,
            "img_width": width,
            "language": "english",
            "skills": skills,
            "source": "synthetic charts",
            "split": DEFAULT_SPLIT,
            "task": "figure question answering" if kind == "bar" else "textbook question answering",
        },
        "query": _mathvista_query(fields),
        "chart": json.dumps({**chart, "template": template.__name__.removeprefix("_q_")}),
    }


def sample_data_file(out_dir: str | os.PathLike[str]) -> Path:
    """Where `make_sample` writes the split: the hub layout, so the folder loads like `AI4Math/MathVista`."""
    return Path(out_dir) / "data" / f"{DEFAULT_SPLIT}-00000-of-00001.parquet"


def make_sample(out_dir: str | os.PathLike[str], num_samples: int = NUM_SAMPLES, seed: int = 0) -> dict[str, Path]:
    """Write a `testmini` split of `num_samples` synthetic charts under `out_dir`; returns {"dataset": out_dir,
    "testmini": the parquet file} (the folder is the `source` for data.py's `load_split` / `build_dataset`)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    out = Path(out_dir)
    request = {"generator": "make-sample", "n": num_samples, "seed": seed}
    target = sample_data_file(out)
    written = {"dataset": out, DEFAULT_SPLIT: target}
    if sample_is_current(out, request, [target], [target, *(out / "data").glob("*.parquet")], "sample.py"):
        return written
    rng = random.Random(seed)
    rows = [make_sample_row(index, rng) for index in range(num_samples)]
    features = datasets.Features({**RAW_FEATURES, "chart": datasets.Value("string")})
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    # pyarrow directly (no progress bar); the table's schema carries the features, so decoded_image stays an Image
    pq.write_table(datasets.Dataset.from_list(rows, features=features).data.table, partial)
    os.replace(partial, target)
    mark_sample_written(out, request)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    return sample_main(
        make_sample,
        argv,
        recipe_dir=RECIPE_DIR,
        description=__doc__,
        old_counts=OldCounts(("--n",), lambda n: {"num_samples": n}),  # data.py --make-sample's spelling
    )


if __name__ == "__main__":
    raise SystemExit(main())
