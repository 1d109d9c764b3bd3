"""Judging a batch concurrently with `core.rewards.judge.JudgeClient.score` versus one request at a time.

    python benchmarks/judge_throughput.py [--samples 64 --latency 0.2 --concurrency 64 --distinct 16 --size 128]

Starts the local judge (`core.rewards.judge_server`) with a fixed per-request latency standing in for a remote VLM
judge,
then, in one run:

1. judges `--samples` distinct samples (a pair of random images each) with one `JudgeClient.score` call
   (`judge_max_concurrency=--concurrency`), and the same samples with a plain loop of synchronous single requests
   (`openai.OpenAI`, the obvious implementation a reward function would start with); prints both wall times, the
   speed-up, the batch time in units of one request's latency (the goal: close to 1x when concurrency >= samples),
   and whether both gave the same scores; the same batch against a zero-latency judge shows the local CPU cost
   (client encoding and HTTP, plus this server decoding images on the same cores), which a remote judge does not add;
2. judges `--samples` samples of which only `--distinct` are different and prints how many HTTP requests reached
   the server (expected: `--distinct`).

Why it matters: at training scale the reward calls the judge for hundreds of samples per GRPO step; one at a time,
the step would wait hundreds of judge latencies.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import openai
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.rewards.judge import JudgeArguments, JudgeClient, JudgeRequest, build_messages, parse_score  # noqa: E402
from core.rewards.judge_server import start_judge_server  # noqa: E402

PROMPT = "Rate from 0 to 10 how faithfully the second image reproduces the first. Answer as JSON {'score': n}."


def make_requests(count: int, size: int, seed: int) -> list[JudgeRequest]:
    """`count` distinct (source, candidate) pairs of random images: the candidate is the source plus noise."""
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(count):
        source = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        noise = rng.integers(-60, 61, (size, size, 3))
        candidate = np.clip(source.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        requests.append(JudgeRequest(PROMPT, (Image.fromarray(source), Image.fromarray(candidate))))
    return requests


def judge_one_at_a_time(url: str, model: str, requests: list[JudgeRequest]) -> list[float | None]:
    """The baseline: a synchronous client, one request after the other."""
    client = openai.OpenAI(base_url=url, api_key="local", timeout=60, max_retries=0)
    scores = []
    for request in requests:
        reply = client.chat.completions.create(
            model=model, messages=build_messages(request), temperature=0.0, max_tokens=256
        )
        scores.append(parse_score(reply.choices[0].message.content or ""))
    client.close()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the local judge takes per request")
    parser.add_argument("--concurrency", type=int, default=64, help="judge_max_concurrency")
    parser.add_argument("--distinct", type=int, default=16, help="distinct samples in the duplicate batch")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    args = parser.parse_args()

    def client_args(url: str) -> JudgeArguments:
        concurrency = args.concurrency
        return JudgeArguments(
            judge_base_url=url, judge_model="local-judge", judge_max_concurrency=concurrency, judge_breaker_failures=0
        )

    with start_judge_server("local-judge", latency_s=0.0) as server, JudgeClient(client_args(server.url)) as client:
        client.check()
        started = time.perf_counter()
        client.score(make_requests(args.samples, args.size, seed=2), parse_score)
        overhead_s = time.perf_counter() - started

    with start_judge_server("local-judge", latency_s=args.latency) as server:
        requests = make_requests(args.samples, args.size, seed=0)
        with JudgeClient(client_args(server.url)) as client:
            client.check()  # starts the client's event loop and connection pool, as a training run does at start-up
            started = time.perf_counter()
            batch_scores = client.score(requests, parse_score)
            batch_s = time.perf_counter() - started
            batch_metrics = client.pop_metrics()

            started = time.perf_counter()
            sequential_scores = judge_one_at_a_time(server.url, "local-judge", requests)
            sequential_s = time.perf_counter() - started

            distinct = make_requests(args.distinct, args.size, seed=1)
            duplicated = [distinct[i % args.distinct] for i in range(args.samples)]
            server.stats.reset()
            dup_scores = client.score(duplicated, parse_score)
            dup_metrics = client.pop_metrics()
            dup_http = server.stats.total

    print(
        f"local judge latency {args.latency:.3f} s/request, {args.samples} samples of 2 {args.size}px images, "
        f"{os.cpu_count()} CPU cores shared by client and server"
    )
    width = 42
    print(f"  {'one at a time (sync loop):':<{width}}{sequential_s:7.3f} s")
    print(
        f"  {f'JudgeClient.score (concurrency {args.concurrency}):':<{width}}{batch_s:7.3f} s   "
        f"({sequential_s / batch_s:.1f}x faster; batch = {batch_s / args.latency:.2f}x one request's latency)"
    )
    print(
        f"  {'JudgeClient.score, zero-latency judge:':<{width}}{overhead_s:7.3f} s   (no waiting: the CPU cost of "
        "encoding, HTTP and this server's decoding, on the same cores)"
    )
    print(
        f"  same scores: {batch_scores == sequential_scores}; unscored: {batch_scores.count(None)}; HTTP requests "
        f"{batch_metrics['judge/requests']:.0f}, mean latency {batch_metrics['judge/latency_mean_s']:.3f} s"
    )
    print(
        f"{args.samples} samples, {args.distinct} distinct: {dup_http} HTTP requests reached the server "
        f"(expected {args.distinct}); deduplicated {dup_metrics['judge/deduplicated']:.0f}; "
        f"unscored {dup_scores.count(None)}"
    )


if __name__ == "__main__":
    main()
