"""The command lines of every recipe's `sample.py` and `data.py`, written once.

A recipe declares only what is its own: the generator (`make_sample`), the validator (`check`), data tools such as
image2code's `--split_dataset`, and their options. Parsing, the old spellings, the printed report and the exit codes
live here, so the six recipes (and every copy `vlm-grpo new` makes) behave alike:

    python recipes/<r>/sample.py [OUT_DIR] [--num_samples N] [--seed S] [recipe options]
    python recipes/<r>/data.py --check SOURCE [recipe options, e.g. --images_root DIR]

Exit codes: 0 done; 1 refused to overwrite files these commands did not write (`FileExistsError`); 2 bad data or bad
arguments (`DataError`, `ValueError`, and argparse's own usage errors).

Flags are snake_case, as TrlParser spells them. Each one's kebab spelling (`--images-root`) and its old names
(`Option.aliases`, `OldCounts`) still work but are not shown in --help. `data.py --make-sample OUT_DIR` and
`--create_sample OUT_DIR` (the generator's old home) run `sample.py OUT_DIR` with the remaining arguments.
"""

from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.data.records import SAMPLE_MARKER, DataError, load_records, shown_path

__all__ = ["OldCounts", "Option", "Tool", "add_option", "check_main", "count_rows", "sample_main"]

# Where the sample generator used to live: these data.py flags now run sample.py.
OLD_SAMPLE_FLAGS = ("--make-sample", "--make_sample", "--create_sample", "--create-sample")
REFUSED, BAD_INPUT = 1, 2  # exit codes besides 0


@dataclass(frozen=True)
class Option:
    """One flag of a recipe's own: `flag` in snake_case; its kebab spelling and `aliases` (old names) are accepted,
    hidden from --help. Only options given on the command line reach the function, so its own defaults apply;
    `help` should say them."""

    flag: str
    help: str
    type: Callable[[str], Any] | None = None
    nargs: str | None = None
    action: str | None = None
    metavar: str | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class OldCounts:
    """Old sample-size flags that are not a plain rename: `to_new(**given)` turns the ones given into the new
    keywords, e.g. `OldCounts(("--n-train", "--n-eval"), lambda n_train=64, n_eval=16: {"num_samples": n_train +
    n_eval, "num_eval": n_eval})`. Hidden from --help; a new flag given too wins."""

    flags: tuple[str, ...]
    to_new: Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Tool:
    """A data.py tool besides --check (e.g. `--split_dataset IN OUT_DIR`): `run(*values, **options it accepts)`
    returns what it wrote, a path or {name: path}, which is printed with row counts."""

    flag: str
    metavar: tuple[str, ...]
    help: str
    run: Callable[..., Path | Mapping[str, Path]]


def add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    """Add `option` with its kebab spelling and old names as hidden aliases of the same destination."""
    settings = {
        key: value
        for key, value in (("type", option.type), ("nargs", option.nargs), ("action", option.action))
        if value is not None
    }
    if option.metavar is not None:
        settings["metavar"] = option.metavar
    main = parser.add_argument(option.flag, help=option.help, default=argparse.SUPPRESS, **settings)
    hidden = [name for name in (option.flag.replace("_", "-"), *option.aliases) if name != option.flag]
    if hidden:
        parser.add_argument(*hidden, dest=main.dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **settings)


def _accepted(function: Callable[..., Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `values` that `function` takes as keywords (all of them when it has **kwargs)."""
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(values)
    return {key: value for key, value in values.items() if key in parameters}


def count_rows(path: Path) -> int | None:
    """Rows in a data file (.json/.jsonl/.parquet) or one split folder of `datasets.save_to_disk`; None otherwise."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_file() and suffix in (".json", ".jsonl"):
        return len(load_records(path))
    if path.is_file() and suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if (path / "state.json").is_file():
        import datasets

        return datasets.load_from_disk(str(path)).num_rows
    return None


def _described(path: Path) -> str:
    """`path (N rows)`, the path as a person can paste it (no count for a folder)."""
    rows = count_rows(path)
    return shown_path(Path(path)) + ("" if rows is None else f" ({rows} rows)")


def _report(written: Path | Mapping[str, Path]) -> str:
    """What follows "wrote": ` path (N rows)`, or `:` and one `name: path (N rows)` line per entry of a mapping."""
    if not isinstance(written, Mapping):
        return f" {_described(written)}"
    return ":" + "".join(f"\n  {name}: {_described(path)}" for name, path in written.items())


def _failed(err: Exception) -> int:
    print(err, file=sys.stderr)
    return REFUSED if isinstance(err, FileExistsError) else BAD_INPUT


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


# ------------------------------------------------------------------------------------------------------- sample.py


def sample_main(
    make_sample: Callable[..., Mapping[str, Path]],
    argv: Sequence[str] | None = None,
    *,
    recipe_dir: str | os.PathLike[str],
    options: Sequence[Option] = (),
    old_counts: OldCounts | None = None,
    description: str | None = None,
) -> int:
    """`sample.py [OUT_DIR] [--num_samples N] [--seed S] [options]`: run `make_sample(OUT_DIR, **given)` and print
    what it wrote (or that OUT_DIR already holds this very sample). OUT_DIR defaults to `<recipe_dir>/data/sample`,
    what the recipe's config_smoke.yaml reads. Returns the exit code."""
    out_default = Path(recipe_dir) / "data" / "sample"
    defaults = {name: p.default for name, p in inspect.signature(make_sample).parameters.items()}
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "out_dir", nargs="?", default=out_default, metavar="OUT_DIR", help=f"default: {shown_path(out_default)}"
    )
    add_option(
        parser,
        Option("--num_samples", f"rows in all (default {defaults.get('num_samples')})", _positive, metavar="N"),
    )
    add_option(parser, Option("--seed", f"same seed, same bytes (default {defaults.get('seed', 0)})", int))
    for option in options:
        add_option(parser, option)
    for flag in old_counts.flags if old_counts else ():
        parser.add_argument(flag, type=int, help=argparse.SUPPRESS, default=argparse.SUPPRESS)
    given = vars(parser.parse_args(argv))
    out = Path(given.pop("out_dir"))
    if old_counts:
        dests = [flag.lstrip("-").replace("-", "_") for flag in old_counts.flags]
        old = {dest: given.pop(dest) for dest in dests if dest in given}
        given = {**(old_counts.to_new(**old) if old else {}), **given}  # a new flag given too wins

    marker = out / SAMPLE_MARKER
    before = marker.stat().st_mtime_ns if marker.is_file() else None
    try:
        written = make_sample(out, **given)
    except (FileExistsError, DataError, ValueError) as err:
        return _failed(err)
    current = before is not None and marker.is_file() and marker.stat().st_mtime_ns == before
    where = shown_path(out)
    print(
        (f"{where} already holds this sample ({SAMPLE_MARKER}); nothing written" if current else f"wrote {where}")
        + _report(written)
    )
    return 0


# --------------------------------------------------------------------------------------------------------- data.py


def _forward_to_sample(recipe_dir: Path, argv: Sequence[str]) -> int | None:
    """`data.py --make-sample OUT_DIR [args]` (or --create_sample) as `sample.py OUT_DIR [args]`; None when argv
    holds no such flag."""
    argv = list(argv)
    for index, arg in enumerate(argv):
        name, equals, value = arg.partition("=")
        if name not in OLD_SAMPLE_FLAGS:
            continue
        if not equals:
            if index + 1 >= len(argv):
                print(f"{name} needs OUT_DIR", file=sys.stderr)
                return BAD_INPUT
            value = argv.pop(index + 1)
        del argv[index]
        script = recipe_dir / "sample.py"
        command = [sys.executable, str(script), value, *argv]
        print(f"{name} is now {shown_path(script)}; running: {' '.join(command[1:])}", file=sys.stderr)
        repo_root = str(Path(__file__).resolve().parents[2])  # `core` importable in the child as it is here
        paths = [repo_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
        sys.stdout.flush()
        return subprocess.run(command, env=env, check=False).returncode
    return None


def check_main(
    check: Callable[..., int | tuple[int, str]],
    argv: Sequence[str] | None = None,
    *,
    recipe_dir: str | os.PathLike[str],
    options: Sequence[Option] = (),
    tools: Sequence[Tool] = (),
    description: str | None = None,
    source_help: str = "a data file or folder to validate",
) -> int:
    """`data.py --check SOURCE [options]`: `check(SOURCE, **given options it accepts)` returns the usable rows (and
    optionally a detail), printed as `OK: SOURCE: N rows`; a `DataError` is printed with exit code 2. `tools` add
    further actions. The old `--make-sample OUT_DIR` / `--create_sample OUT_DIR` run sample.py. Returns the exit
    code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    forwarded = _forward_to_sample(Path(recipe_dir), argv)
    if forwarded is not None:
        return forwarded
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", metavar="SOURCE", help=source_help)
    for tool in tools:
        action.add_argument(tool.flag, nargs=len(tool.metavar), metavar=tool.metavar, help=tool.help)
        kebab = tool.flag.replace("_", "-")
        if kebab != tool.flag:
            action.add_argument(kebab, nargs=len(tool.metavar), dest=tool.flag.lstrip("-"), help=argparse.SUPPRESS)
    for option in options:
        add_option(parser, option)
    args = vars(parser.parse_args(argv))
    actions = {"check", *(tool.flag.lstrip("-") for tool in tools)}
    given = {key: value for key, value in args.items() if key not in actions}
    try:
        for tool in tools:
            values = args.get(tool.flag.lstrip("-"))
            if values:
                written = tool.run(*values, **_accepted(tool.run, given))
                print("wrote" + _report(written))
                return 0
        result = check(args["check"], **_accepted(check, given))
    except (FileExistsError, DataError, ValueError) as err:
        return _failed(err)
    rows, detail = result if isinstance(result, tuple) else (result, "")
    print(f"OK: {args['check']}: {rows} rows" + (f" ({detail})" if detail else ""))
    return 0
