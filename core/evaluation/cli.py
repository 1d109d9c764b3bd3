"""The command line and plumbing every recipe's evaluate.py shares, so that each keeps only its task logic (scoring,
pictures):

    python recipes/<r>/evaluate.py RUN_DIR [--dataset_name SRC] [--max_samples N] [--batch_size B]
                                           [--max_new_tokens T] [--out_dir DIR] [recipe flags]

* `eval_parser`: those flags, snake_case as TrlParser spells them; `--data_file` and `--dataset` (the names evaluate.py
  used before) are accepted for `--dataset_name` without being shown in --help. Counts are checked (`--batch_size 0`
  would evaluate nothing): a bad value is a `ConfigError`, one message without a traceback like train.py's.
* `data_source`: what to evaluate when --dataset_name is not given: the run's `eval_dataset_name`, else its
  `dataset_name` (from its run_config.yaml, old key names mapped by `core.training.config.load_resolved_config`),
  resolved as training resolved it.
* `batches`, `first_rows`: the generation loop's slices, with progress in the log.
* `output_dir`, `write_results`, `report`: RUN_DIR/eval (or --out_dir) with metrics.json and predictions.jsonl, and
  the same final lines in every recipe: the headline metrics, then one `wrote PATH` line per file written.
* `run_judge`: the run's judge again (and the project's local judge server when the run used one), checked, closed on
  the way out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.ranges import AT_LEAST_ONE

logger = logging.getLogger("evaluate")

EVAL_DIR_NAME = "eval"  # RUN_DIR/eval/ unless --out_dir
METRICS_NAME = "metrics.json"
PREDICTIONS_NAME = "predictions.jsonl"
DATA_FLAG_ALIASES = ("--data_file", "--dataset")  # the names recipes' evaluate.py had for --dataset_name


def count(text: str) -> int:
    """argparse `type` of the count flags (--max_samples, --batch_size, --max_new_tokens): an integer >= 1. A 0
    would evaluate nothing (or fail deep in the batch loop), so it is refused up front with the allowed range."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value not in AT_LEAST_ONE:
        raise argparse.ArgumentTypeError(f"must be {AT_LEAST_ONE.describe()}, got {value}")
    return value


class OneSpelling(argparse.Action):
    """Stores the value like `store`; giving two spellings of one flag (`--dataset_name a --data_file b`) is an
    error, where argparse would keep the last one silently."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        given = namespace.__dict__.setdefault("_spellings", {})
        if given.setdefault(self.dest, option) != option:
            parser.error(f"{given[self.dest]} and {option} set the same thing; keep one of them")
        setattr(namespace, self.dest, values)


class EvalArgumentParser(argparse.ArgumentParser):
    """argparse with train.py's error style (a `ConfigError`: one message, exit 2 through core.errors' hook) and
    hidden aliases for old flag spellings."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message} (see --help)")

    def add_alias(self, *old: str, of: str) -> None:
        """Accept the flag(s) `old` for the existing flag `of` (same value, same checks), not shown in --help. Giving
        both is an error when `of` was added with `action=OneSpelling` (every shared flag is)."""
        action = next(a for a in self._actions if of in a.option_strings)
        self.add_argument(*old, dest=action.dest, type=action.type, action=OneSpelling, help=argparse.SUPPRESS)

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        parsed.__dict__.pop("_spellings", None)
        return parsed


def eval_parser(
    doc: str,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    max_samples: int | None = None,
    max_samples_help: str = "evaluate the first N rows only (default: all)",
    data_help: str = "data to evaluate (default: the run's eval_dataset_name, else its dataset_name)",
    root_flag: str | None = None,
) -> EvalArgumentParser:
    """The parser of an evaluate.py with the shared flags; the recipe adds its own flags to it.

    `doc`: the script's docstring (its first line is the description). `root_flag`: the recipe's media folder flag
    (`images_root`, `video_root`), defaulting to the run's setting (`media_root`).
    """
    parser = EvalArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="training output folder (its --output_dir) or a checkpoint-* in it")
    parser.add_argument("--dataset_name", action=OneSpelling, help=data_help)
    parser.add_alias(*DATA_FLAG_ALIASES, of="--dataset_name")
    if root_flag:
        where = f"default: the run's {root_flag}, else the data file's folder"
        parser.add_argument(f"--{root_flag}", action=OneSpelling, help=f"where relative media paths start ({where})")
    add = partial(parser.add_argument, action=OneSpelling, type=count)
    add("--max_samples", default=max_samples, help=max_samples_help)
    add("--batch_size", default=batch_size, help="rows generated at once")
    add("--max_new_tokens", default=max_new_tokens, help="greedy tokens per completion")
    parser.add_argument("--out_dir", type=Path, action=OneSpelling, help=f"default: RUN_DIR/{EVAL_DIR_NAME}")
    return parser


def parse_eval_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags (sys.argv when `argv` is None), with the log set up as every evaluate.py logs: INFO, timestamped."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args


def eval_device() -> str:
    """`cuda` when a GPU is there, else `cpu`: evaluation runs on one device."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def data_source(args: argparse.Namespace, script: dict[str, Any], recipe_dir: str | Path) -> str:
    """What to evaluate: --dataset_name, else the run's `eval_dataset_name`, else its `dataset_name`; a local path
    resolved as training resolved it (working directory, then the recipe folder), else a hub id."""
    from core.training.run import resolve_dataset_source

    name = args.dataset_name or script.get("eval_dataset_name") or script.get("dataset_name")
    if not name:
        raise ConfigError("the run's config names no dataset_name: pass --dataset_name")
    return resolve_dataset_source(name, recipe_dir)


def media_root(flag: str | None, run_value: str | None, recipe_dir: str | Path, source: str) -> str:
    """The folder relative image/video paths start from: the flag, else the run's setting, else the data file's
    own folder (as training resolves each data file's paths)."""
    from core.training.run import resolve_input_path

    return resolve_input_path(flag or run_value, recipe_dir) or str(Path(source).parent)


def first_rows(dataset: Any, max_samples: int | None) -> Any:
    """The first `max_samples` rows of a `datasets.Dataset` (all of them when None)."""
    return dataset.select(range(min(max_samples, len(dataset)))) if max_samples else dataset


def batches(dataset: Any, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """The rows of `dataset` in lists of `batch_size`, logging "evaluated n/total" after each."""
    total = len(dataset)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        yield [dataset[i] for i in range(start, stop)]
        logger.info("evaluated %d/%d", stop, total)


def output_dir(args: argparse.Namespace) -> Path:
    """--out_dir, else RUN_DIR/eval; created."""
    out = Path(args.out_dir) if args.out_dir else Path(args.run_dir) / EVAL_DIR_NAME
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_results(
    out_dir: Path, metrics: dict[str, Any], records: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None
) -> list[Path]:
    """metrics.json (`metrics`, then `extra`: where the numbers came from, e.g. the data source or the protocol) and
    predictions.jsonl (one record per evaluated row). Returns their paths."""
    metrics_path, predictions_path = out_dir / METRICS_NAME, out_dir / PREDICTIONS_NAME
    metrics_path.write_text(json.dumps({**metrics, **(extra or {})}, indent=2))
    with open(predictions_path, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return [metrics_path, predictions_path]


def report(metrics: dict[str, Any], files: Sequence[Path]) -> None:
    """The last lines every evaluate.py prints: the headline metrics (the per-group tables are in metrics.json),
    then `wrote PATH` for each file written."""
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict | list)}, indent=2))
    for path in files:
        print(f"wrote {path}")


@contextmanager
def run_judge(script: dict[str, Any], **overrides: Any) -> Iterator[Any]:
    """A checked `JudgeClient` on the run's judge settings (its ScriptArguments' JudgeArguments fields, `overrides`
    on top), closed on the way out. A run judged by the project's local judge server gets a fresh one (that run's
    server is gone with it), stopped on the way out too."""
    from core.rewards.judge import JudgeArguments, JudgeClient
    from core.rewards.judge_server import start_local_judge_if_asked

    fields = {f.name for f in dataclasses.fields(JudgeArguments)}
    judge_args = JudgeArguments(**{**{k: v for k, v in script.items() if k in fields}, **overrides})
    with ExitStack() as resources:
        resources.enter_context(start_local_judge_if_asked(judge_args, finished_run=True) or nullcontext())
        judge = resources.enter_context(JudgeClient(judge_args))
        judge.check()
        yield judge
