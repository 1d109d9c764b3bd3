"""MMMG data for GRPO on the VLM inside Qwen-Image (knowledge-image generation).

Usage:
    python recipes/mmmg/sample.py                                               # offline set, same shape: data/sample
    python recipes/mmmg/data.py --check recipes/mmmg/data/sample --levels highschool --disciplines Math

MMMG (hub: MMMGbench/MMMG) has 59 configs `{level}_{discipline}` (6 levels x 10 disciplines, no
preschool_Philosophy), each with the split `test`. Columns used: `key`, `Education`, `Knowledge_Graph` (a JSON
string `{"elements": [...], "dependencies": ["Relation(src, tgt)", ...]}`), `Annotation` and the prompt text, whose
column name is `prompt_column` (default "prompt": not confirmed offline, so it is a setting).

`source` is the hub name (one `datasets.load_dataset(source, config, split="test")` per config) or a local folder
with one JSON-lines file per config, `<folder>/<config>.jsonl`, one row (the hub's columns) per line - what
`sample.py` writes, next to its `sample.json` marker. In a local folder a config selected by an explicit level
AND discipline must exist; configs reached through "all" (None) are taken where present.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from protocol import parse_kg

from core.data.cli import Option, check_main
from core.data.records import DataError, require_rows, resolve_dataset_source

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


def check(
    source: str,
    levels: Sequence[str] | None = None,
    disciplines: Sequence[str] | None = None,
    prompt_column: str = "prompt",
    max_samples: int | None = None,
) -> tuple[int, str]:
    """`data.py --check`: the prompts `load_mmmg` accepts (it raises DataError otherwise)."""
    rows = load_mmmg(resolve_dataset_source(source, RECIPE_DIR), levels, disciplines, prompt_column, max_samples)
    return len(rows), f"prompts of {len({row['config'] for row in rows})} config(s)"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit code."""
    options = [
        Option("--levels", f"of {', '.join(LEVELS)} (default: all)", nargs="+"),
        Option("--disciplines", f"of {', '.join(DISCIPLINES)} (default: all)", nargs="+"),
        Option("--prompt_column", "the column holding the prompt text (default: prompt)"),
        Option("--max_samples", "check only the first N rows of each config", int, metavar="N"),
    ]
    return check_main(
        check,
        argv,
        recipe_dir=RECIPE_DIR,
        options=options,
        description=__doc__,
        source_help="a local folder of <config>.jsonl (sample.py writes one) or a hub dataset id",
    )


if __name__ == "__main__":
    raise SystemExit(main())
