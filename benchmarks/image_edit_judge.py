"""One judge round trip per image_edit batch: `score_edits` (all criteria in one call) against the two calls in
sequence it replaced.

    python benchmarks/image_edit_judge.py [--samples 64 --latency 0.2 --size 64 --rounds 5 --concurrency 128]

Starts the local judge (`core.rewards.judge_server`) in a child process with a fixed per-request latency standing in
for a remote VLM judge (its CPU work then runs outside this process, as a remote judge's does, though on the same
cores), builds a batch of `--samples` Complex-Edit samples (an input and an edited `--size` px image each; 64 px is
`config_smoke.yaml`'s render and condition size, the training config renders at the pipeline's 1024 x 1024), and
times, over `--rounds` interleaved rounds (order alternating):

1. one alignment request alone: one request's latency, HTTP included (the ratio's denominator);
2. the previous path, re-created here: the alignment requests of the batch in one `JudgeClient.score` call, then the
   quality requests in a second, so the batch waits two latencies;
3. `judging.score_edits` with all three criteria: every request of the batch in ONE call.

Then `score_edits` against a zero-latency judge: the local CPU cost of a batch (PNG encoding, HTTP, the SDK), with
this process's CPU time per batch, which no judge latency hides. Prints medians and min-max, whether both paths gave
the same scores, and the goal line `ratio: batch wall / one request latency xN.NN (goal <= 1.5)`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.rewards.judge import JudgeArguments, JudgeClient, all_or_none  # noqa: E402
from core.rewards.judge_server import LOCAL_JUDGE_MODEL, start_judge_server  # noqa: E402
from core.tools.recipe_modules import load_recipe_module  # noqa: E402

JUDGING = load_recipe_module(Path(__file__).resolve().parents[1] / "recipes" / "image_edit", "judging")


# ----------------------------------------------------------------------------------------------------- the judge
def _serve(latency_s: float, connection: Connection) -> None:
    """Child process: serve the local judge until the parent sends anything."""
    with start_judge_server(LOCAL_JUDGE_MODEL, latency_s=latency_s) as handle:
        connection.send(handle.url)
        connection.recv()


@contextmanager
def judge_process(latency_s: float) -> Iterator[str]:
    """The base URL of a local judge running in a child process (spawned: no state shared with this one)."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_serve, args=(latency_s, child), daemon=True)
    process.start()
    try:
        yield parent.recv()
    finally:
        parent.send("stop")
        process.join(timeout=10)


# ----------------------------------------------------------------------------------------------------- the batch
def make_batch(count: int, size: int, seed: int) -> tuple[list[Image.Image], list[Image.Image], list[str]]:
    """`count` (input, edited, instruction) samples: smooth random pictures, the edit a blend with another one."""
    rng = np.random.default_rng(seed)

    def picture() -> np.ndarray:
        coarse = rng.integers(0, 256, (max(size // 8, 1), max(size // 8, 1), 3), dtype=np.uint8)
        return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)

    originals, edited = [], []
    for _ in range(count):
        source = picture()
        share = rng.uniform(0.1, 0.9)
        originals.append(Image.fromarray(source.astype(np.uint8)))
        edited.append(Image.fromarray((source * (1 - share) + picture() * share).astype(np.uint8)))
    return originals, edited, [f"edit number {seed}-{i}: repaint the scene" for i in range(count)]


def two_calls(judge: JudgeClient, originals: list, edited: list, instructions: list, prompts: Any) -> dict:
    """The path `score_edits` replaced: alignment requests in one call, then quality requests in a second."""
    alignment = judge.score(
        [JUDGING.alignment_request(o, e, i, prompts) for o, e, i in zip(originals, edited, instructions, strict=True)],
        JUDGING.parse_alignment,
    )
    quality = judge.score([JUDGING.quality_request(e, prompts) for e in edited], JUDGING.parse_quality)
    raw = {
        "instruction_following": [None if pair is None else float(pair[0]) for pair in alignment],
        "identity_preservation": [None if pair is None else float(pair[1]) for pair in alignment],
        "perceptual_quality": [None if score is None else float(score) for score in quality],
    }
    return all_or_none(raw)


# ----------------------------------------------------------------------------------------------------- timing
def timed(action: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, this process's CPU seconds, result) of `action()`."""
    cpu, started = time.process_time(), time.perf_counter()
    result = action()
    return time.perf_counter() - started, time.process_time() - cpu, result


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.3f} s  (min-max {min(values):.3f}-{max(values):.3f})"


def client(url: str, concurrency: int) -> JudgeClient:
    args = JudgeArguments(
        judge_base_url=url,
        judge_model=LOCAL_JUDGE_MODEL,
        judge_max_concurrency=concurrency,
        judge_breaker_failures=0,
        judge_max_tokens=512,
    )
    return JudgeClient(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=64, help="edits per batch (two requests each)")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the local judge takes per request")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (config_smoke.yaml: 64)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--concurrency", type=int, default=None, help="judge_max_concurrency (default: 2 x samples)")
    args = parser.parse_args()
    concurrency = args.concurrency or 2 * args.samples
    prompts = JUDGING.load_prompts(None)
    lone, before, after, same, unscored, requests = [], [], [], True, 0, set()

    with judge_process(args.latency) as url, client(url, concurrency) as judge:
        judge.check()  # starts the event loop and the connection pool, as a training run does at start-up
        for round_index in range(args.rounds):
            batch = make_batch(args.samples, args.size, seed=round_index)
            single = JUDGING.alignment_request(batch[0][0], batch[1][0], batch[2][0], prompts, draw=round_index + 1)
            lone.append(timed(lambda single=single: judge.score([single], JUDGING.parse_alignment))[0])
            paths = [
                (before, lambda batch=batch: two_calls(judge, *batch, prompts)),
                (after, lambda batch=batch: JUDGING.score_edits(judge, *batch, prompts, 1)),
            ]
            results = []
            for times, action in paths if round_index % 2 == 0 else paths[::-1]:
                judge.pop_metrics()
                wall, _, result = timed(action)
                times.append(wall)
                results.append(result)
                requests.add(int(judge.pop_metrics()["judge/requests"]))
            same = same and results[0] == results[1]
            unscored += sum(score is None for score in results[0]["perceptual_quality"])

    zero, cpu = [], []
    with judge_process(0.0) as url, client(url, concurrency) as judge:
        judge.check()
        for round_index in range(args.rounds):
            batch = make_batch(args.samples, args.size, seed=100 + round_index)
            wall, seconds, _ = timed(lambda batch=batch: JUDGING.score_edits(judge, *batch, prompts, 1))
            zero.append(wall)
            cpu.append(seconds)

    one_request = statistics.median(lone)
    print(
        f"image_edit judge: {args.samples} samples (input + edited image, {args.size} px), 1 draw: "
        f"{2 * args.samples} requests per batch; local judge in a child process, {args.latency:.3f} s latency; "
        f"judge_max_concurrency {concurrency}; {os.cpu_count()} CPU cores; {args.rounds} interleaved rounds"
    )
    width = 44
    print(f"  {'one request alone:':<{width}}{spread(lone)}")
    print(f"  {'two calls in sequence (before):':<{width}}{spread(before)}")
    print(
        f"  {'score_edits, one call (now):':<{width}}{spread(after)}   "
        f"(x{statistics.median(before) / statistics.median(after):.2f} faster)"
    )
    print(
        f"  {'score_edits, zero-latency judge:':<{width}}{spread(zero)}   (client CPU "
        f"{statistics.median(cpu):.3f} s per batch: the local cost no judge latency hides)"
    )
    sent = ", ".join(str(count) for count in sorted(requests))
    print(f"  same scores both ways: {same}; unscored: {unscored}; HTTP requests per batch: {sent}")
    print(f"ratio: batch wall / one request latency x{statistics.median(after) / one_request:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
