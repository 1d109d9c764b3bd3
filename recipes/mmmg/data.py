"""MMMG data for GRPO on the VLM inside Qwen-Image (knowledge-image generation).

Usage:
    python recipes/mmmg/data.py --make-sample recipes/mmmg/data/sample          # offline set, same shape
    python recipes/mmmg/data.py --check recipes/mmmg/data/sample --levels highschool --disciplines Math

MMMG (hub: MMMGbench/MMMG) has 59 configs `{level}_{discipline}` (6 levels x 10 disciplines, no
preschool_Philosophy), each with the split `test`. Columns used: `key`, `Education`, `Knowledge_Graph` (a JSON
string `{"elements": [...], "dependencies": ["Relation(src, tgt)", ...]}`), `Annotation` and the prompt text, whose
column name is `prompt_column` (default "prompt": not confirmed offline, so it is a setting).

`source` is the hub name (one `datasets.load_dataset(source, config, split="test")` per config) or a local folder
with one JSON-lines file per config, `<folder>/<config>.jsonl`, one row (the hub's columns) per line - what
`--make-sample` writes, next to its `sample.json` marker. In a local folder a config selected by an explicit level
AND discipline must exist; configs reached through "all" (None) are taken where present.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from protocol import parse_kg

from core.data.records import DataError, mark_sample_written, require_rows, resolve_dataset_source, sample_is_current

RECIPE_DIR = Path(__file__).resolve().parent
HUB_NAME = "MMMGbench/MMMG"
LEVELS = ("preschool", "primaryschool", "secondaryschool", "highschool", "undergraduate", "PhD")
DISCIPLINES = (
    "Biology",
    "Chemistry",
    "Economics",
    "Engineering",
    "Geography",
    "History",
    "Literature",
    "Math",
    "Philosophy",
    "Sociology",
)
MISSING_CONFIGS = frozenset({"preschool_Philosophy"})
SPLIT = "test"


def config_names(levels: Sequence[str] | None = None, disciplines: Sequence[str] | None = None) -> list[str]:
    """`{level}_{discipline}` for every requested pair that exists (None: all); ValueError naming bad names."""
    levels = list(LEVELS) if levels is None else list(levels)
    disciplines = list(DISCIPLINES) if disciplines is None else list(disciplines)
    problems = []
    bad_levels = [lv for lv in levels if lv not in LEVELS]
    if bad_levels:
        problems.append(f"unknown level(s) {bad_levels}; MMMG has {', '.join(LEVELS)}")
    bad_disciplines = [d for d in disciplines if d not in DISCIPLINES]
    if bad_disciplines:
        problems.append(f"unknown discipline(s) {bad_disciplines}; MMMG has {', '.join(DISCIPLINES)}")
    if problems:
        raise ValueError("; ".join(problems))
    names = [f"{lv}_{d}" for lv in levels for d in disciplines if f"{lv}_{d}" not in MISSING_CONFIGS]
    if not names:
        raise ValueError(f"no MMMG config for levels {levels} x disciplines {disciplines} (no preschool_Philosophy)")
    return names


def _read_jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            problems.append(f"{path.name}:{number}: not JSON ({err})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{path.name}:{number}: a row must be a JSON object")
            continue
        rows.append(row)
    return rows


def _load_tables(
    source: str, levels: Sequence[str] | None, disciplines: Sequence[str] | None, problems: list[str]
) -> dict[str, list[dict[str, Any]]]:
    configs = config_names(levels, disciplines)
    path = Path(source)
    tables: dict[str, list[dict[str, Any]]] = {}
    if path.exists():
        if not path.is_dir():
            raise DataError([f"{path} is not a folder of <config>.jsonl files"], source=source)
        explicit = levels is not None and disciplines is not None
        for config in configs:
            file = path / f"{config}.jsonl"
            if file.is_file():
                tables[config] = _read_jsonl(file, problems)
            elif explicit:
                problems.append(f"config {config}: no {file.name} in {path}")
        if not tables and not problems:
            present = sorted(p.stem for p in path.glob("*.jsonl"))
            problems.append(f"none of the selected configs is in {path}; it has {present}")
        return tables
    for config in configs:
        table = datasets.load_dataset(source, config, split=SPLIT)
        tables[config] = [dict(row) for row in table]
    return tables


def load_mmmg(
    source: str,
    levels: Sequence[str] | None = None,
    disciplines: Sequence[str] | None = None,
    prompt_column: str = "prompt",
    max_samples: int | None = None,
) -> list[dict[str, Any]]:
    """Validated rows (`id`, `key`, `config`, `level`, `discipline`, `education`, `text`, `knowledge_graph` (JSON
    string), `kg` (parsed), `annotation`); every problem of every row raised at once as one DataError.

    `max_samples` caps the rows taken from EACH config (the first ones), so a mix of configs stays a mix.
    """
    problems: list[str] = []
    tables = _load_tables(source, levels, disciplines, problems)
    rows: list[dict[str, Any]] = []
    for config, table in tables.items():
        level, discipline = config.split("_", 1)
        table = table[:max_samples] if max_samples else table
        columns = sorted({column for row in table for column in row})
        if table and any(prompt_column not in row for row in table):
            problems.append(
                f"config {config}: no prompt column {prompt_column!r} (set prompt_column); available: {columns}"
            )
            continue
        for index, row in enumerate(table):
            key = str(row.get("key") if row.get("key") is not None else index)
            rid = f"{config}-{key}"
            text = row.get(prompt_column)
            if not isinstance(text, str) or not text.strip():
                problems.append(f"{rid}: empty or non-text {prompt_column!r}")
            raw = row.get("Knowledge_Graph")
            if raw is None:
                problems.append(f"{rid}: no Knowledge_Graph")
                continue
            try:
                kg = parse_kg(raw)
            except ValueError as err:
                problems.append(f"{rid}: bad Knowledge_Graph: {err}")
                continue
            if not isinstance(text, str) or not text.strip():
                continue
            rows.append(
                {
                    "id": rid,
                    "key": key,
                    "config": config,
                    "level": level,
                    "discipline": discipline,
                    "education": str(row.get("Education") or level),
                    "text": text.strip(),
                    "knowledge_graph": raw if isinstance(raw, str) else json.dumps(kg),
                    "kg": kg,
                    "annotation": str(row.get("Annotation") or ""),
                }
            )
    if problems:
        raise DataError(problems, source=source)
    require_rows(len(rows), source, what="prompts")
    return rows


def text_prompt(text: str, system_prompt: str) -> list[dict[str, Any]]:
    """The pipeline's encoding template as a conversation: system, then the user's text (text-to-image: no image)."""
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {"role": "user", "content": [{"type": "text", "text": text}]},
    ]


def rows_to_dataset(rows: Sequence[dict[str, Any]], system_prompt: str) -> datasets.Dataset:
    """Rows `prompt`, `text`, `knowledge_graph`, `annotation`, `level`, `discipline`, `key`, `id` from `load_mmmg`;
    `system_prompt` is the pipeline's."""
    return datasets.Dataset.from_dict(
        {
            "prompt": [text_prompt(r["text"], system_prompt) for r in rows],
            **{
                column: [r[column] for r in rows]
                for column in ("text", "knowledge_graph", "annotation", "level", "discipline", "key", "id")
            },
        }
    )


def build_dataset(
    source: str,
    system_prompt: str,
    levels: Sequence[str] | None = None,
    disciplines: Sequence[str] | None = None,
    prompt_column: str = "prompt",
    max_samples: int | None = None,
) -> datasets.Dataset:
    """`load_mmmg` then `rows_to_dataset`, for callers that have the pipeline's system prompt already."""
    return rows_to_dataset(load_mmmg(source, levels, disciplines, prompt_column, max_samples), system_prompt)


# ----------------------------------------------------------------------------------------------- offline sample
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


def make_sample(out_dir: str | Path, n_per_config: int = 4, seed: int = 0) -> Path:
    """One `<config>.jsonl` per sample config, shaped like MMMG's rows. Re-running with the same arguments is a
    no-op; a folder not written by --make-sample is never overwritten."""
    out = Path(out_dir)
    request = {"generator": "make-sample", "n_per_config": n_per_config, "seed": seed, "configs": list(SAMPLE_CONFIGS)}
    if sample_is_current(out, request, [], list(out.iterdir()) if out.is_dir() else [], "--make-sample"):
        return out
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jsonl"):  # an earlier sample's configs (the folder holds nothing else of anyone's)
        old.unlink()
    rng = random.Random(seed)
    for config in SAMPLE_CONFIGS:
        lines = [json.dumps(row) for row in _sample_rows(config, n_per_config, rng)]
        (out / f"{config}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    mark_sample_written(out, request)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--make-sample", metavar="OUT_DIR", help="write an offline MMMG-shaped set")
    action.add_argument("--check", metavar="SOURCE", help="validate a local folder or hub dataset")
    parser.add_argument("--n-per-config", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levels", nargs="+", default=None, help="default: all")
    parser.add_argument("--disciplines", nargs="+", default=None, help="default: all")
    parser.add_argument("--prompt-column", default="prompt")
    parser.add_argument("--max-samples", type=int, default=None, help="rows per config")
    args = parser.parse_args(argv)
    if args.make_sample:
        try:
            out = make_sample(args.make_sample, args.n_per_config, args.seed)
        except FileExistsError as err:
            print(err, file=sys.stderr)
            return 1
        print(f"sample MMMG set ({', '.join(SAMPLE_CONFIGS)}; {args.n_per_config} rows each) in {out}")
        return 0
    try:
        source = resolve_dataset_source(args.check, RECIPE_DIR)
        rows = load_mmmg(source, args.levels, args.disciplines, args.prompt_column, args.max_samples)
    except (DataError, ValueError) as err:
        print(err, file=sys.stderr)
        return 1
    print(f"OK: {args.check}: {len(rows)} prompts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
