"""The mmmg recipe's offline sample: MMMG-shaped rows (prompt, knowledge graph, annotation) for three configs.

    python recipes/mmmg/sample.py [OUT_DIR] [--num_samples 12] [--seed 0]

Writes OUT_DIR (default: data/sample next to this file, what config_smoke.yaml reads) as one `<config>.jsonl` per
config in SAMPLE_CONFIGS, the rows spread evenly over them, in the hub's columns, which data.py loads like the hub
set. The same request again writes nothing (`sample.json` records it), and a folder this script did not write is
never overwritten.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.data.cli import OldCounts, sample_main
from core.data.records import mark_sample_written, sample_is_current

RECIPE_DIR = Path(__file__).resolve().parent
NUM_SAMPLES = 12  # 4 rows per config

SAMPLE_CONFIGS = ("primaryschool_Biology", "highschool_Math", "undergraduate_Chemistry")
_TOPICS: dict[str, list[dict[str, Any]]] = {
    "primaryschool_Biology": [
        {
            "prompt": "Draw how a plant makes food from sunlight.",
            "elements": ["plant", "sunlight", "water", "photosynthesis"],
            "dependencies": ["Requires(photosynthesis, sunlight)", "Requires(photosynthesis, water)"],
        },
        {
            "prompt": "Show the life cycle of a butterfly.",
            "elements": ["egg", "caterpillar", "butterfly"],
            "dependencies": ["TemporalOrder(egg, caterpillar)", "TemporalOrder(caterpillar, butterfly)"],
        },
        {
            "prompt": "Show what a cell contains.",
            "elements": ["cell", "nucleus", "cell membrane"],
            "dependencies": ["Contains(cell, nucleus)", "Contains(cell, membrane)"],
        },
    ],
    "highschool_Math": [
        {
            "prompt": "Illustrate the Pythagorean theorem on a right triangle.",
            "elements": ["right triangle", "hypotenuse", "a^2 + b^2 = c^2"],
            "dependencies": ["Contains(right triangle, hypotenuse)", "Defines(a^2 + b^2 = c^2, right triangle)"],
        },
        {
            "prompt": "Show the slope of a straight line.",
            "elements": ["line", "slope"],
            "dependencies": ["Defines(slope, line)"],
        },
    ],
    "undergraduate_Chemistry": [
        {
            "prompt": "Depict a combustion reaction of methane.",
            "elements": ["methane", "oxygen", "carbon dioxide", "heat"],
            "dependencies": ["Causes(methane, carbon dioxide)", "Requires(methane, oxygen)", "Entails(methane, heat)"],
        },
        {
            "prompt": "Show how a catalyst lowers activation energy.",
            "elements": ["catalyst", "activation energy", "reaction rate"],
            "dependencies": ["Causes(catalyst, activation energy)", "Causes(activation energy, reaction rate)"],
        },
    ],
}


def _sample_rows(config: str, n: int, rng: random.Random) -> list[dict[str, Any]]:
    level, discipline = config.split("_", 1)
    topics = _TOPICS[config]
    rows = []
    for i in range(n):
        topic = topics[i % len(topics)]
        deps = list(topic["dependencies"])
        rng.shuffle(deps)
        rows.append(
            {
                "key": f"{config}_{i:03d}",
                "Education": level,
                "prompt": topic["prompt"],
                "Knowledge_Graph": json.dumps({"elements": topic["elements"], "dependencies": deps}),
                "Annotation": f"A {level} {discipline.lower()} diagram: {topic['prompt'].lower()}",
            }
        )
    return rows


def make_sample(out_dir: str | os.PathLike[str], num_samples: int = NUM_SAMPLES, seed: int = 0) -> dict[str, Path]:
    """Write one `<config>.jsonl` per sample config under `out_dir`, `num_samples` rows in all (the first configs get
    one more when they do not divide evenly); returns {"dataset": out_dir, <config>: path, ...} (the folder is the
    dataset source)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    share, extra = divmod(num_samples, len(SAMPLE_CONFIGS))
    counts = {config: share + (index < extra) for index, config in enumerate(SAMPLE_CONFIGS)}
    out = Path(out_dir)
    written = {"dataset": out, **{config: out / f"{config}.jsonl" for config, n in counts.items() if n}}
    request = {"generator": "sample.py", "rows_per_config": counts, "seed": seed}
    if sample_is_current(out, request, [], list(out.iterdir()) if out.is_dir() else [], "sample.py"):
        return written
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jsonl"):  # an earlier sample's configs (the folder holds nothing else of anyone's)
        old.unlink()
    rng = random.Random(seed)
    for config, n in counts.items():
        if n:
            lines = [json.dumps(row) for row in _sample_rows(config, n, rng)]
            written[config].write_text("\n".join(lines) + "\n", encoding="utf-8")
    mark_sample_written(out, request)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code."""
    return sample_main(
        make_sample,
        argv,
        recipe_dir=RECIPE_DIR,
        description=__doc__,
        # data.py --make-sample's spelling: --n-per-config 4
        old_counts=OldCounts(
            ("--n-per-config",), lambda n_per_config=4: {"num_samples": n_per_config * len(SAMPLE_CONFIGS)}
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
