"""image_edit's judge round trip: every call of every edit of a batch (alignment and perceptual quality) goes to the
judge together, so a batch waits one judge latency, with the scores, the all-or-none rule and the per-criterion
metrics of the two calls in sequence it replaced.

Against the real local judge server over HTTP; "together" is counted on the server (all requests of the batch in
flight at once: none was answered before the last arrived), not timed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from PIL import Image

from core.rewards.judge import JudgeArguments, JudgeClient
from core.rewards.judge_server import criterion_score, score_images, start_judge_server
from tests.helpers import load_recipe_module

JUDGING = load_recipe_module("image_edit", "judging")
COUNTERS = (
    "requests",
    "cache_hits",
    "deduplicated",
    "failures",
    "parse_failures",
    "breaker_rejected",
    "breaker_open",
    "latency_mean_s",
    "latency_max_s",
)


def edits(count: int) -> tuple[list[Image.Image], list[Image.Image], list[str]]:
    """`count` (input, edited, instruction) samples with distinct pixels, so no two requests are deduplicated."""
    originals = [Image.new("RGB", (16, 16), (10 * i, 40, 90)) for i in range(count)]
    edited = []
    for i, original in enumerate(originals):
        image = original.copy()
        image.paste((200, 20 * i, 0), (0, 0, 8, 16))  # the left half repainted: contrast and a difference
        edited.append(image)
    return originals, edited, [f"repaint the left half, edit {i}" for i in range(count)]


def judge_for(url: str, **overrides: Any) -> JudgeClient:
    settings: dict[str, Any] = {
        "judge_base_url": url,
        "judge_model": "local-judge",
        "judge_max_retries": 0,
        "judge_breaker_failures": 0,
        "judge_timeout_s": 10,
        "judge_max_concurrency": 32,
    }
    settings.update(overrides)
    return JudgeClient(JudgeArguments(**settings))


class Logged(dict):
    """TRL's `log_metric(name, value)`: the value logged under each name."""

    def __call__(self, name: str, value: float) -> None:
        assert name not in self, f"{name} logged twice"
        self[name] = value


def expected(original: Image.Image, edited: Image.Image) -> dict[str, float]:
    """The local judge's deterministic answers for one edit (see core.rewards.judge_server)."""
    return {
        "instruction_following": float(criterion_score("instruction_following", [original, edited])),
        "identity_preservation": float(score_images([original, edited])[0]),
        "perceptual_quality": float(score_images([edited])[0]),
    }


def test_every_request_of_a_batch_is_in_flight_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """8 edits, all three criteria: 16 requests in ONE `JudgeClient.score` call, all at the server together (the
    two calls in sequence had at most 8 in flight and waited two latencies)."""
    originals, edited, instructions = edits(8)
    prompts = JUDGING.load_prompts(None)
    with start_judge_server(latency_s=0.5) as server, judge_for(server.url) as judge:
        calls: list[int] = []
        score = judge.score

        def counted(requests: list, *rest: Any) -> list:
            calls.append(len(requests))
            return score(requests, *rest)

        monkeypatch.setattr(judge, "score", counted)
        scores = JUDGING.score_edits(judge, originals, edited, instructions, prompts, 1)
        assert calls == [16]
        assert server.stats.total == 16
        assert server.stats.max_in_flight == 16
    assert scores == {c: [expected(o, e)[c] for o, e in zip(originals, edited, strict=True)] for c in JUDGING.CRITERIA}


def test_scores_and_metrics_match_the_two_calls_in_sequence() -> None:
    """Same replies, same scores as the alignment call followed by the quality call, draws averaged; each
    criterion's metrics are its call's (both alignment criteria share one call's), under the names logged before."""
    originals, edited, instructions = edits(4)
    prompts = JUDGING.load_prompts(None)
    samples = 2
    with start_judge_server() as server, judge_for(server.url) as judge:
        logged = Logged()
        scores = JUDGING.score_edits(judge, originals, edited, instructions, prompts, samples, log_metric=logged)
        alignment = judge.score(
            [
                JUDGING.alignment_request(o, e, i, prompts, draw)
                for o, e, i in zip(originals, edited, instructions, strict=True)
                for draw in range(samples)
            ],
            JUDGING.parse_alignment,
        )
        quality = judge.score(
            [JUDGING.quality_request(e, prompts, draw) for e in edited for draw in range(samples)],
            JUDGING.parse_quality,
        )
    sequential = {
        "instruction_following": [JUDGING.mean([p[0] for p in alignment[2 * i : 2 * i + 2]]) for i in range(4)],
        "identity_preservation": [JUDGING.mean([p[1] for p in alignment[2 * i : 2 * i + 2]]) for i in range(4)],
        "perceptual_quality": [JUDGING.mean(quality[2 * i : 2 * i + 2]) for i in range(4)],
    }
    assert scores == sequential
    assert set(logged) == {f"judge/{name}/{c}" for name in COUNTERS for c in JUDGING.CRITERIA}
    for criterion in JUDGING.CRITERIA:
        assert logged[f"judge/requests/{criterion}"] == 4 * samples  # draws differ: nothing deduplicated
        assert logged[f"judge/failures/{criterion}"] == 0 and logged[f"judge/deduplicated/{criterion}"] == 0


def test_quality_failures_alone_unscore_the_whole_sample_and_count_under_quality() -> None:
    """All requests in one call, yet a sample is scored whole: its quality request failing (here every quality
    request: the marker is in the quality system prompt) leaves every criterion None, though alignment answered."""
    originals, edited, instructions = edits(3)
    prompts = JUDGING.load_prompts(None)
    failing = dataclasses.replace(prompts, quality_system="[judge:500] " + prompts.quality_system)
    with start_judge_server() as server, judge_for(server.url) as judge:
        logged = Logged()
        scores = JUDGING.score_edits(judge, originals, edited, instructions, failing, 1, log_metric=logged)
        assert server.stats.status_counts == {200: 3, 500: 3}
    assert scores == {c: [None, None, None] for c in JUDGING.CRITERIA}
    assert logged["judge/failures/perceptual_quality"] == 3
    assert logged["judge/failures/instruction_following"] == logged["judge/failures/identity_preservation"] == 0
    assert logged["judge/requests/instruction_following"] == logged["judge/requests/perceptual_quality"] == 3


def test_only_the_calls_the_criteria_need_are_made() -> None:
    originals, edited, instructions = edits(3)
    prompts = JUDGING.load_prompts(None)
    with start_judge_server() as server, judge_for(server.url) as judge:
        logged = Logged()
        scores = JUDGING.score_edits(
            judge, originals, edited, instructions, prompts, 1, ["perceptual_quality"], log_metric=logged
        )
        assert server.stats.total == 3
        assert {body["response_format"]["json_schema"]["name"] for body in server.stats.recent} == {"PerceptualQuality"}
    quality = [expected(o, e)["perceptual_quality"] for o, e in zip(originals, edited, strict=True)]
    assert scores == {"perceptual_quality": quality}
    assert set(logged) == {f"judge/{name}/perceptual_quality" for name in COUNTERS}
