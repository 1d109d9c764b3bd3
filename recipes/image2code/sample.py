"""The image2code recipe's offline sample: random matplotlib charts (8 kinds) and the code that draws each.

    python recipes/image2code/sample.py [OUT_DIR] [--num_samples 40] [--num_eval 4] [--num_test 4] [--seed 0]

Writes OUT_DIR (default: data/sample next to this file, what config_smoke.yaml reads) `images/*.png` and the splits
`train.jsonl`, `eval.jsonl`, `test.jsonl` (image_path records, data.py's format), ready to train on: no separate
split step. The same seed gives the same files; the same request again writes nothing (`sample.json` records it),
and a folder holding data this script did not write is never overwritten.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

from data import SPLITS, partition, render_code
from PIL import Image

from core.data.cli import OldCounts, Option, sample_main
from core.data.records import mark_sample_written, sample_is_current

RECIPE_DIR = Path(__file__).resolve().parent
NUM_SAMPLES = 40  # 32 train, 4 eval, 4 test charts

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


def make_sample(
    out_dir: str | os.PathLike[str],
    num_samples: int = NUM_SAMPLES,
    seed: int = 0,
    num_eval: int | None = None,
    num_test: int | None = None,
) -> dict[str, Path]:
    """Render `num_samples` charts into `out_dir/images` and write them as `train.jsonl`, `eval.jsonl` and
    `test.jsonl` (`num_eval` / `num_test` rows, default a tenth each and at least 1; the rest train); returns
    {split: path}.

    Chart kinds cycle through `KINDS` (so every kind appears once num_samples >= 8); data, colours and labels are
    random. Rows are assigned to splits as data.py's `split_dataset` does (`partition`).
    """
    num_eval = max(1, num_samples // 10) if num_eval is None else num_eval
    num_test = max(1, num_samples // 10) if num_test is None else num_test
    if num_eval < 0 or num_test < 0 or num_samples - num_eval - num_test < 1:
        raise ValueError(
            f"need num_eval + num_test < num_samples, got {num_eval} + {num_test} with num_samples={num_samples}"
        )
    out = Path(out_dir)
    request = {
        "generator": "sample.py",
        "num_samples": num_samples,
        "num_eval": num_eval,
        "num_test": num_test,
        "seed": seed,
    }
    outputs = {split: out / f"{split}.jsonl" for split in SPLITS}
    images = [out / "images" / f"chart-{index:04d}.png" for index in range(num_samples)]
    if sample_is_current(out, request, outputs.values(), [*outputs.values(), *images], "sample.py"):
        return outputs
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kinds = [KINDS[index % len(KINDS)] for index in range(num_samples)]
    rng.shuffle(kinds)
    records = []
    for index, kind in enumerate(kinds):
        image, record = make_sample_record(f"chart-{index:04d}", rng, kind)
        image.save(images[index], format="PNG")
        record = {
            "id": record["id"],
            "description": record["description"],
            "image_path": images[index].relative_to(out).as_posix(),
            "reference_code": record["reference_code"],
            "kind": kind,
        }
        records.append(record)
    for split, indices in partition(num_samples, num_eval, num_test, seed).items():
        outputs[split].write_text("".join(json.dumps(records[i]) + "\n" for i in indices), encoding="utf-8")
    mark_sample_written(out, request)
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    return sample_main(
        make_sample,
        argv,
        recipe_dir=RECIPE_DIR,
        description=__doc__,
        options=[
            Option(
                "--num_eval", "rows of eval.jsonl (default: a tenth of --num_samples, at least 1)", int, metavar="N"
            ),
            Option(
                "--num_test", "rows of test.jsonl (default: a tenth of --num_samples, at least 1)", int, metavar="N"
            ),
        ],
        old_counts=OldCounts(("--n",), lambda n: {"num_samples": n}),  # data.py --create_sample's spelling
    )


if __name__ == "__main__":
    raise SystemExit(main())
