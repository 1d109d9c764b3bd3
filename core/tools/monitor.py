"""Reward per logged step from a run's training.log: `python -m core.tools.monitor outputs/<run>/training.log
[--follow]`.

The HF Trainer prints each logging step as a dict (`{'loss': '0.01', 'reward': '0.42', ...}`) into the log the
launcher tees; this reads those lines, so it works on a live run, a dead one and a finished one alike.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

_DICT = re.compile(r"\{'[^{}]*'reward'[^{}]*\}")
SHOWN = ("reward", "reward_std", "kl", "loss")


def parse_log_line(line: str) -> list[dict[str, float]]:
    """Every logged-step dict in a line (tqdm redraws can put several on one line), values as floats."""
    entries = []
    for match in _DICT.finditer(line):
        try:
            raw = ast.literal_eval(match.group(0))
        except (ValueError, SyntaxError):
            continue
        entry = {}
        for key, value in raw.items():
            try:
                entry[key] = float(value)
            except (TypeError, ValueError):
                continue
        entries.append(entry)
    return entries


def format_entry(step: int, entry: dict[str, float]) -> str:
    parts = [f"step {step:>5}"]
    parts += [f"{k} {entry[k]:.4f}" for k in SHOWN if k in entry]
    parts += [
        f"{k[len('rewards/') : -len('/mean')]} {v:.4f}"
        for k, v in entry.items()
        if k.startswith("rewards/") and k.endswith("/mean")
    ]
    parts += [f"{k} {v:g}" for k, v in entry.items() if k.startswith("judge/")]
    return " | ".join(parts)


def follow_lines(path: Path, pid: int | None = None, poll_s: float = 1.0, offset: int = 0) -> Iterator[str]:
    """Lines of `path` from byte `offset` as they are written, until process `pid` (if given) has exited and the
    file is drained."""
    while not path.exists():
        if pid is not None and not _alive(pid):
            return
        time.sleep(poll_s)
    with open(path, errors="replace") as f:
        f.seek(offset)
        while True:
            line = f.readline()
            if line:
                yield line
                continue
            if pid is not None and not _alive(pid):
                yield from f.readlines()
                return
            time.sleep(poll_s)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--follow", action="store_true", help="keep reading as the run writes")
    parser.add_argument("--pid", type=int, help="with --follow: stop once this process has exited")
    parser.add_argument("--offset", type=int, default=0, help="start reading at this byte (a relaunched run)")
    parser.add_argument("--first-step", type=int, default=1, help="number of the first step read")
    args = parser.parse_args(argv)
    lines = follow_lines(args.log, args.pid, offset=args.offset) if args.follow else open(args.log, errors="replace")
    step = args.first_step - 1
    for line in lines:
        for entry in parse_log_line(line):
            step += 1
            print(format_entry(step, entry), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
