"""image2code reward throughput: the recipe's sandboxed render+score vs a fresh `python` per program vs a bare
in-process render+score, at the same parallelism, on the same programs, with the same scoring.

    python benchmarks/image2code_reward.py [--n 20] [--workers W] [--rounds 5] [--group 8]

Arms, each running W programs at a time (W defaults to the sandbox's own default, `default_workers()`):
  sandbox  the training path: `rewards.ProgramScorer` over a warm `core.rewards.sandbox.Sandbox(workers=W)`
           (every isolation layer, each program scored in the sandbox's pool as it ends)
  fresh    a new `python` interpreter per program (imports matplotlib, renders, writes the PNG to stdout), W at a
           time from W threads, each scoring its image as it comes back
  bare     UNSAFE: `render_code_in_process` + scoring in W forked worker processes with matplotlib already imported
Every arm scores with `rewards.score_program` against the program's reference image, on the same N distinct sample
reference programs (20 by default: each fresh interpreter costs ~0.7 s of CPU, and the whole run, 5 rounds of 3
arms, should stay near two minutes on 2 cores). The arms are interleaved over the rounds (the order rotates each
round), so a load spike from elsewhere hits them alike; per arm the median and min-max over the rounds are printed,
with the load average, and whether every arm computed the same similarities. A duplicates line shows a batch of
groups whose completions all agree (GRPO's converged groups): one sandbox job per group. The last line is the two
tracked ratios of medians: sandbox throughput / fresh (goal >= 6) and sandbox time per program / bare (goal <= 1.3).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import multiprocessing.pool
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "recipes" / "image2code"))

from rewards import ProgramScorer, RewardConfig, score_program  # noqa: E402
from sample import KINDS, make_sample_record  # noqa: E402

from core.rewards.sandbox import RenderResult, Sandbox, default_workers, render_code_in_process  # noqa: E402

FRESH_WRAPPER = """
import io, sys, matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
exec(compile(sys.stdin.read(), "<program>", "exec"), {"__name__": "__main__"})
buf = io.BytesIO()
plt.gcf().savefig(buf, format="png")
sys.stdout.buffer.write(buf.getvalue())
"""
CONFIG = RewardConfig()
# The programs and their reference images: module globals, so that the forked bare workers inherit them.
CODES: list[str] = []
REFERENCES: list[Image.Image] = []
Score = tuple[str, dict[str, float] | None]


def sample_programs(n: int) -> None:
    """N distinct sample reference programs (every chart kind in turn) and the images they draw."""
    rng = random.Random(0)
    for i in range(n):
        image, record = make_sample_record(f"b{i}", rng, KINDS[i % len(KINDS)])
        CODES.append(record["reference_code"])
        REFERENCES.append(image)
    assert len(set(CODES)) == n, "the sample programs must be distinct"


def rendered(image: Image.Image | None) -> RenderResult:
    return RenderResult("ok" if image is not None else "no_image", image, "", 0.0)


# ---------------------------------------------------------------------------------------------------------- arms
def sandbox_arm(sandbox: Sandbox, indices: list[int]) -> list[Score]:
    """The training path: one ProgramScorer per step (its cache never serves another round)."""
    batch = ProgramScorer(sandbox, CONFIG).score([CODES[i] for i in indices], image=[REFERENCES[i] for i in indices])
    return list(zip(batch.statuses, batch.similarities, strict=True))


def fresh_one(index: int, env: dict[str, str]) -> Score:
    out = subprocess.run(
        [sys.executable, "-c", FRESH_WRAPPER], input=CODES[index].encode(), capture_output=True, env=env, timeout=60
    )
    image = Image.open(io.BytesIO(out.stdout)) if out.returncode == 0 and out.stdout else None
    return score_program(rendered(image), REFERENCES[index], CONFIG)


def fresh_arm(threads: ThreadPoolExecutor, env: dict[str, str], indices: list[int]) -> list[Score]:
    return list(threads.map(lambda i: fresh_one(i, env), indices))


def bare_init() -> None:
    render_code_in_process(CODES[0])  # imports, font cache, first draw: warm like the sandbox's server


def bare_one(index: int) -> Score:
    return score_program(rendered(render_code_in_process(CODES[index])), REFERENCES[index], CONFIG)


def bare_arm(pool: multiprocessing.pool.Pool, indices: list[int]) -> list[Score]:
    return pool.map(bare_one, indices, chunksize=1)


# ------------------------------------------------------------------------------------------------------- timing
def timed(run: Callable[[list[int]], list[Score]], indices: list[int]) -> tuple[float, list[Score]]:
    start = time.perf_counter()
    scores = run(indices)
    return time.perf_counter() - start, scores


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.1f}-{max(values):.1f})"


def combined(scores: list[Score]) -> list[float | None]:
    return [similarity["combined"] if similarity else None for _, similarity in scores]


def duplicates_line(sandbox: Sandbox, n: int, group: int, distinct_rate: float) -> str:
    """A batch of n/G groups whose G completions are identical, as GRPO's agreeing groups are: one job per group."""
    indices = [i for i in range(max(1, n // group)) for _ in range(group)]
    jobs = sandbox.jobs
    seconds, _ = timed(lambda idx: sandbox_arm(sandbox, idx), indices)
    rate = len(indices) / seconds
    return (
        f"duplicates: {len(indices)} completions as {len(indices) // group} groups of {group} identical ones -> "
        f"{sandbox.jobs - jobs} sandbox jobs, {rate:.1f} completions/s (x{rate / distinct_rate:.1f} the all-distinct "
        "sandbox median)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="distinct sample reference programs per arm and round")
    parser.add_argument("--workers", type=int, default=default_workers(), help="programs at once, every arm")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (arm order rotates)")
    parser.add_argument("--group", type=int, default=8, help="group size of the duplicates line (0: skip it)")
    args = parser.parse_args()
    sample_programs(args.n)
    indices = list(range(args.n))
    load = os.getloadavg()[0]

    with contextlib.ExitStack() as stack:
        # The bare workers are forked first, while this process has no threads yet.
        pool = stack.enter_context(multiprocessing.get_context("fork").Pool(args.workers, initializer=bare_init))
        threads = stack.enter_context(ThreadPoolExecutor(args.workers))
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        sandbox = stack.enter_context(Sandbox(workers=args.workers))
        env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp, "MPLBACKEND": "Agg", "MPLCONFIGDIR": tmp}
        arms: dict[str, Callable[[list[int]], list[Score]]] = {
            "sandbox": lambda idx: sandbox_arm(sandbox, idx),
            "fresh": lambda idx: fresh_arm(threads, env, idx),
            "bare": lambda idx: bare_arm(pool, idx),
        }
        for run in arms.values():  # warm-up, untimed: fork server, worker imports, matplotlib's font cache
            run(indices[: args.workers])
        seconds: dict[str, list[float]] = {name: [] for name in arms}
        scores: dict[str, list[Score]] = {}
        names = list(arms)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                elapsed, scores[name] = timed(arms[name], indices)
                seconds[name].append(elapsed)
        distinct_rate = args.n / statistics.median(seconds["sandbox"])
        dup = duplicates_line(sandbox, args.n, args.group, distinct_rate) if args.group else ""
        protections = ", ".join(k for k, v in sandbox.protections.items() if v)

    cpus = len(os.sched_getaffinity(0))
    print(f"{args.n} distinct sample programs x {args.rounds} interleaved rounds, {args.workers} at once in every arm")
    print(f"{cpus} usable CPUs; load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    labels = {
        "sandbox": "sandbox render+score (ProgramScorer)",
        "fresh": "fresh python per program + score",
        "bare": "bare in-process render+score",
    }
    print(f"  {'arm':38} {'programs/s median (min-max)':>28} {'ms/program median (min-max)':>30}")
    for name in arms:
        rate = [args.n / s for s in seconds[name]]
        per = [s / args.n * 1000 for s in seconds[name]]
        print(f"  {labels[name]:38} {spread(rate):>28} {spread(per):>30}")
    ok = sum(status == "ok" for status, _ in scores["sandbox"])
    same = all(combined(scores[name]) == combined(scores["sandbox"]) for name in arms)
    print(f"  sandbox: {ok}/{args.n} ok; similarity identical in every arm: {same}; protections: {protections}")
    if dup:
        print(dup)
    sandbox_s, fresh_s, bare_s = (statistics.median(seconds[name]) for name in ("sandbox", "fresh", "bare"))
    print(
        f"ratios: sandbox/fresh throughput x{fresh_s / sandbox_s:.1f} (goal >= 6), "
        f"sandbox/bare time per program x{sandbox_s / bare_s:.2f} (goal <= 1.3)"
    )


if __name__ == "__main__":
    main()
