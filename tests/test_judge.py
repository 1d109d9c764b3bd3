"""core.rewards.judge against the real local judge server (core.rewards.judge_server) over HTTP on 127.0.0.1.

Nothing is mocked below the HTTP layer: the openai client, httpx, retries and timeouts all run for real, and the
server's own counters tell what actually reached it. Timeouts and retry delays are kept small so the file runs in
seconds.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from core.rewards.judge import (
    JudgeArguments,
    JudgeClient,
    JudgeRequest,
    JudgeUnavailable,
    all_or_none,
    build_messages,
    parse_json_object,
    parse_score,
)
from core.rewards.judge_server import JudgeServerHandle, dithered_score, score_images, start_judge_server

MODEL = "local-judge"


@pytest.fixture
def server() -> JudgeServerHandle:
    with start_judge_server(MODEL) as handle:
        yield handle


def judge_args(url: str, **overrides: Any) -> JudgeArguments:
    """Fast settings: 1 s timeout, one retry, breaker off unless a test turns it on."""
    settings: dict[str, Any] = {
        "judge_base_url": url,
        "judge_model": MODEL,
        "judge_timeout_s": 1.0,
        "judge_max_retries": 1,
        "judge_max_concurrency": 16,
        "judge_breaker_failures": 0,
    }
    settings.update(overrides)
    return JudgeArguments(**settings)


def solid(value: int, size: int = 16) -> Image.Image:
    return Image.new("RGB", (size, size), (value, value, value))


def pair(value: int, prompt: str = "How faithful is the edit?") -> JudgeRequest:
    """Source black, edited grey `value`: the server scores 10 * (1 - value / 255), dithered to an integer."""
    return JudgeRequest(prompt, (solid(0), solid(value)))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def expected_score(value: int) -> float:
    return float(dithered_score(10 * (1 - value / 255), [solid(0), solid(value)]))


# ---------------------------------------------------------------------------------------------------------------
# parsing helpers and the server's rule (no HTTP)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"score": 7, "reason": "ok"}', 7.0),
        ('  {"score": 7.5}\n', 7.5),
        ('```json\n{"score": 3}\n```', 3.0),
        ('```\n{"score": 0}\n```', 0.0),
        ('{"score": 10}', 10.0),
        ('The score is {"score": 7}', None),  # prose around the object
        ('{"score": 11}', None),  # out of range
        ('{"score": -1}', None),
        ('{"score": "7"}', None),  # a string is not a number
        ('{"score": true}', None),  # a bool is not a number
        ('{"score": NaN}', None),
        ('{"reason": "no score"}', None),
        ("[7]", None),
        ("7", None),
        ("", None),
        ('```json\n{"score": 3}\n``` trailing', None),
    ],
)
def test_parse_score_is_strict(reply: str, expected: float | None) -> None:
    assert parse_score(reply) == expected


def test_parse_json_object_checks_keys_and_types() -> None:
    assert parse_json_object('{"a": 1, "b": "x"}', {"a": int, "b": str}) == {"a": 1, "b": "x"}
    assert parse_json_object('{"a": 1.5}', {"a": int}) is None
    assert parse_json_object('{"a": 1}', {"a": float}) == {"a": 1}  # JSON writes 1, not 1.0
    assert parse_json_object('{"a": 1}', {"a": int, "b": str}) is None
    assert parse_json_object('{"a": [1]}', {"a": (list, dict)}) == {"a": [1]}
    assert parse_score('{"quality": 0.5}', key="quality", lo=0, hi=1) == 0.5


def test_server_scoring_rule_is_deterministic_from_pixels() -> None:
    half = Image.new("L", (16, 16), 0)
    half.paste(255, (0, 0, 8, 16))
    assert score_images([solid(0), solid(0)])[0] == 10
    assert score_images([solid(0), solid(255)])[0] == 0
    # different sizes are resized, not rejected: x = 10 * (1 - 128/255) = 4.98, dithered to 4 or 5
    assert score_images([solid(0), solid(128, size=32)])[0] in (4, 5)
    assert score_images([solid(90)])[0] == 0  # a flat image has no contrast
    assert score_images([half])[0] == 10
    assert score_images([], "text")[0] == score_images([], "text")[0]


def test_dithered_scores_vary_with_any_pixel_and_average_to_the_exact_statistic() -> None:
    """Renders that differ by one grey level in one pixel must not all tie (a tiny random renderer's group would give
    GRPO no reward variance), yet the scores' mean over many images is the exact pixel statistic."""
    base = np.full((16, 16, 3), 100, dtype=np.uint8)
    variants = []
    for i in range(400):
        arr = base.copy()
        arr.reshape(-1)[i % arr.size] += 1 + i // arr.size  # one sub-pixel one or two grey levels up
        variants.append(Image.fromarray(arr))
    exact = [10 * (1 - np.abs(np.asarray(v, dtype=np.float32) - 0).mean() / 255) for v in variants]
    scores = [score_images([solid(0), v])[0] for v in variants]
    assert set(scores) == {6, 7}  # x ~ 6.08 for every variant: round() would give 6 to all 400
    assert abs(np.mean(scores) - np.mean(exact)) < 0.06
    assert scores == [score_images([solid(0), v])[0] for v in variants]  # deterministic
    assert dithered_score(7.0, variants[:1]) == 7 and dithered_score(10.0, variants[:1]) == 10


def test_request_message_shape() -> None:
    messages = build_messages(JudgeRequest("judge this", (solid(1), solid(2)), system="You are a judge."))
    assert messages[0] == {"role": "system", "content": "You are a judge."}
    parts = messages[1]["content"]
    assert [part["type"] for part in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[2]["text"] == "judge this"


def test_judge_arguments_compose_with_required_recipe_fields() -> None:
    """Recipes inherit JudgeArguments and still declare required fields (kw_only base)."""

    @dataclass
    class ScriptArguments(JudgeArguments):
        train_file: str = field(metadata={"help": "records"})

    parsed = ScriptArguments(train_file="x.jsonl", judge_model="m")
    assert (parsed.train_file, parsed.judge_model, parsed.judge_cache_dir) == ("x.jsonl", "m", None)


# ---------------------------------------------------------------------------------------------------------------
# the server's HTTP surface
# ---------------------------------------------------------------------------------------------------------------
def _http(url: str, body: dict[str, Any] | None = None, token: str | None = "k") -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_server_endpoints_auth_and_errors(server: JudgeServerHandle) -> None:
    status, body = _http(f"{server.url}/models")
    assert status == 200 and [entry["id"] for entry in body["data"]] == [MODEL]
    status, body = _http(f"{server.url}/models", token=None)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    chat = {"model": "other", "messages": [{"role": "user", "content": "hi"}]}
    status, body = _http(f"{server.url}/chat/completions", chat)
    assert status == 404 and "other" in body["error"]["message"]
    status, body = _http(f"{server.url}/chat/completions", {**chat, "model": MODEL})
    assert status == 200 and body["object"] == "chat.completion" and body["usage"]["total_tokens"] > 0
    assert parse_score(body["choices"][0]["message"]["content"]) is not None


# ---------------------------------------------------------------------------------------------------------------
# the client against the server
# ---------------------------------------------------------------------------------------------------------------
def test_score_parses_replies_in_order_and_counts(server: JudgeServerHandle) -> None:
    values = [0, 40, 128, 200, 255]
    with JudgeClient(judge_args(server.url)) as client:
        scores = client.score([pair(v) for v in values], parse_score)
        assert scores == [expected_score(v) for v in values]
        metrics = client.pop_metrics()
        assert metrics["judge/requests"] == 5 and metrics["judge/failures"] == 0
        assert metrics["judge/cache_hits"] == 0 and metrics["judge/deduplicated"] == 0
        assert metrics["judge/breaker_open"] == 0
        assert 0 < metrics["judge/latency_mean_s"] <= metrics["judge/latency_max_s"] < 1
        assert client.pop_metrics()["judge/requests"] == 0  # popped: counters restart
        assert client.score([], parse_score) == []
    assert server.stats.total == 5


def test_concurrency_bound_is_respected() -> None:
    with start_judge_server(MODEL, latency_s=0.2) as server:
        with JudgeClient(judge_args(server.url, judge_max_concurrency=4)) as client:
            started = time.monotonic()
            scores = client.score([pair(v) for v in range(16)], parse_score)
            elapsed = time.monotonic() - started
        assert all(score is not None for score in scores)
        assert server.stats.total == 16
        assert 2 <= server.stats.max_in_flight <= 4
        assert elapsed >= 0.2 * 16 / 4 - 0.05  # four waves of 0.2 s


def test_identical_requests_are_sent_once(server: JudgeServerHandle) -> None:
    requests = [pair(v) for v in (10, 100, 250)] * 4  # 12 samples, 3 distinct (equal pixels, new Image objects)
    requests += [JudgeRequest("How faithful is the edit?", (solid(0), solid(10)), system="strict")]  # differs
    with JudgeClient(judge_args(server.url)) as client:
        scores = client.score(requests, parse_score)
        metrics = client.pop_metrics()
    assert scores[:12] == [expected_score(v) for v in (10, 100, 250)] * 4
    assert scores[12] == expected_score(10)
    assert server.stats.total == 4 and server.stats.distinct == 4
    assert metrics["judge/requests"] == 4 and metrics["judge/deduplicated"] == 9


def test_disk_cache_serves_a_rerun_without_http(server: JudgeServerHandle, tmp_path: Path) -> None:
    requests = [pair(v) for v in (5, 60, 130)] + [JudgeRequest("[judge:garbage]", (solid(3),))]
    args = judge_args(server.url, judge_cache_dir=str(tmp_path / "cache"))
    with JudgeClient(args) as client:
        first = client.score(requests, parse_score)
    assert first[:3] == [expected_score(v) for v in (5, 60, 130)] and first[3] is None
    assert server.stats.total == 4

    with JudgeClient(args) as fresh:  # a new process would look the same: only the folder is shared
        again = fresh.score(requests, parse_score)
        metrics = fresh.pop_metrics()
        # Raw replies are stored, so another parser re-parses them from the cache.
        reasons = fresh.score(requests[:1], lambda reply: parse_json_object(reply, {"reason": str})["reason"])
    assert again == first
    assert server.stats.total == 5  # only the unparseable reply (never cached) went out again
    assert metrics["judge/cache_hits"] == 3 and metrics["judge/requests"] == 1
    assert reasons[0] and "difference" in reasons[0]
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 3


def test_429_then_success_is_retried_by_the_openai_client() -> None:
    with start_judge_server(MODEL, fail_first_attempts=1, retry_after_s=0.02) as server:
        with JudgeClient(judge_args(server.url, judge_max_retries=2)) as client:
            scores = client.score([pair(v) for v in (0, 50, 255)], parse_score)
        assert scores == [expected_score(v) for v in (0, 50, 255)]
        assert server.stats.total == 6 and server.stats.status_counts == {429: 3, 200: 3}
        with JudgeClient(judge_args(server.url, judge_max_retries=0)) as no_retries:
            assert no_retries.score([pair(77)], parse_score) == [None]  # first attempt of a new request: 429


def test_failed_samples_are_none_while_the_rest_is_scored() -> None:
    with start_judge_server(MODEL, timeout_sleep_s=3.0, retry_after_s=0.02) as server:
        requests = [
            pair(0),
            pair(0, "[judge:500] rate"),
            pair(60),
            pair(0, "[judge:garbage] rate"),
            pair(0, "[judge:429] rate"),
            pair(0, "[judge:timeout] rate"),
            pair(255, "[judge:slow=0.1] rate"),
            pair(120),
        ]

        truncated = Image.open(io.BytesIO(png_bytes(solid(7))[:60]))  # opens lazily, fails when its pixels are read
        requests.append(JudgeRequest("rate", (truncated,)))

        def parse(reply: str) -> float | None:
            score = parse_score(reply)
            if score == expected_score(120):
                raise ValueError("a recipe parser that raises")
            return score

        args = judge_args(server.url, judge_timeout_s=0.5, judge_max_retries=1)
        with JudgeClient(args) as client:
            started = time.monotonic()
            scores = client.score(requests, parse)
            elapsed = time.monotonic() - started
            metrics = client.pop_metrics()
    assert scores == [10.0, None, expected_score(60), None, None, None, 0.0, None, None]
    assert elapsed < 3.0  # the hanging request was cut by the client's timeout, not waited for
    assert server.stats.by_hash.most_common(1)[0][1] == 2  # failing requests were retried once
    assert metrics["judge/failures"] == 6 and metrics["judge/parse_failures"] == 2


def test_circuit_breaker_opens_stops_traffic_and_closes_after_a_probe(
    server: JudgeServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    args = judge_args(
        server.url,
        judge_max_retries=0,
        judge_max_concurrency=1,  # sequential, so exactly which requests go out is deterministic
        judge_breaker_failures=3,
        judge_breaker_cooldown_s=0.5,
    )
    with caplog.at_level(logging.WARNING, logger="core.rewards.judge"), JudgeClient(args) as client:
        failing = [pair(v, "[judge:500] rate") for v in range(6)]
        assert client.score(failing, parse_score) == [None] * 6
        assert server.stats.total == 3  # the breaker opened after 3 failures; the rest never left the client
        assert any("OPEN" in record.message for record in caplog.records)

        assert client.score([pair(0), pair(255)], parse_score) == [None, None]  # open: even good requests
        assert server.stats.total == 3
        metrics = client.pop_metrics()
        assert metrics["judge/breaker_open"] == 1 and metrics["judge/breaker_rejected"] == 5
        assert metrics["judge/requests"] == 3 and metrics["judge/failures"] == 8

        time.sleep(0.55)  # cooldown over: one probe goes out, succeeds and closes the breaker
        assert client.score([pair(0), pair(255), pair(51)], parse_score) == [10.0, 0.0, 8.0]
        assert server.stats.total == 6
        assert any("CLOSED" in record.message for record in caplog.records)
        client.pop_metrics()
        assert client.pop_metrics()["judge/breaker_open"] == 0


def test_breaker_probe_failure_reopens_and_concurrent_requests_wait_for_the_probe(server: JudgeServerHandle) -> None:
    args = judge_args(
        server.url, judge_max_retries=0, judge_max_concurrency=4, judge_breaker_failures=2, judge_breaker_cooldown_s=0.3
    )
    with JudgeClient(args) as client:
        client.score([pair(v, "[judge:500]") for v in range(2)], parse_score)
        time.sleep(0.35)
        # The first request is the probe and fails: the breaker reopens and the waiting request is refused.
        assert client.score([pair(9, "[judge:500]"), pair(0)], parse_score) == [None, None]
        assert server.stats.total == 3
        time.sleep(0.35)
        # This probe succeeds: the three requests that waited for its verdict go out too, none is lost.
        assert client.score([pair(0), pair(255), pair(51), pair(102)], parse_score) == [10.0, 0.0, 8.0, 6.0]
        assert server.stats.total == 7


def test_score_works_from_threads_and_inside_a_running_loop(server: JudgeServerHandle) -> None:
    with JudgeClient(judge_args(server.url)) as client:
        results: dict[int, list[float | None]] = {}

        def work(index: int) -> None:
            results[index] = client.score([pair(index * 50)], parse_score)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert results == {i: [expected_score(i * 50)] for i in range(4)}

        async def from_async_code() -> list[float | None]:
            return client.score([pair(255)], parse_score)  # blocks this loop, runs on the client's own

        assert asyncio.run(from_async_code()) == [0.0]
        client.close()  # closing stops the loop thread; the next call starts a new one
        assert client.score([pair(0)], parse_score) == [10.0]


# ---------------------------------------------------------------------------------------------------------------
# start-up check
# ---------------------------------------------------------------------------------------------------------------
def test_check_passes_on_a_served_model(server: JudgeServerHandle) -> None:
    with JudgeClient(judge_args(server.url)) as client:
        client.check()
    assert server.stats.model_list_requests == 1 and server.stats.total == 1  # one 1-token chat request


@pytest.mark.parametrize("param", ["temperature", "max_tokens"])
def test_check_fails_when_the_served_model_rejects_the_scoring_parameters(param: str) -> None:
    """A listed model that rejects a scoring parameter (o3: `max_tokens`, `temperature: 0`) answered every scoring
    request with HTTP 400, leaving every sample unscored; the check now sends those parameters once, at start-up."""
    with start_judge_server(MODEL, unsupported_params=(param,)) as server:
        with JudgeClient(judge_args(server.url)) as client:
            with pytest.raises(JudgeUnavailable, match=f"Unsupported parameter: '{param}'") as info:
                client.check()
        assert server.stats.model_list_requests == 1  # the model is listed: only the chat request could tell
    assert "temperature=0" in str(info.value) and "max_tokens" in str(info.value)


def test_check_fails_fast_on_a_closed_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    started = time.monotonic()
    with JudgeClient(judge_args(url, judge_max_retries=3, judge_timeout_s=60)) as client:
        with pytest.raises(JudgeUnavailable, match="cannot connect") as info:
            client.check()
    assert time.monotonic() - started < 5
    assert url in str(info.value) and MODEL in str(info.value)


def test_check_fails_on_an_unknown_model(server: JudgeServerHandle) -> None:
    started = time.monotonic()
    with JudgeClient(judge_args(server.url, judge_model="no-such-judge")) as client:
        with pytest.raises(JudgeUnavailable, match="no-such-judge") as info:
            client.check()
    assert time.monotonic() - started < 5
    assert "unknown" in str(info.value) and MODEL in str(info.value)  # lists what the endpoint serves


def test_check_fails_on_a_rejected_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLM_GRPO_TEST_JUDGE_KEY", "wrong")
    with start_judge_server(MODEL, api_key="right") as server:
        with JudgeClient(judge_args(server.url, judge_api_key_env="VLM_GRPO_TEST_JUDGE_KEY")) as client:
            with pytest.raises(JudgeUnavailable, match="VLM_GRPO_TEST_JUDGE_KEY was rejected"):
                client.check()


def test_missing_key_variable_for_a_remote_url_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLM_GRPO_TEST_JUDGE_KEY", raising=False)
    args = JudgeArguments(judge_base_url="https://judge.invalid/v1", judge_api_key_env="VLM_GRPO_TEST_JUDGE_KEY")
    started = time.monotonic()
    with pytest.raises(JudgeUnavailable, match="VLM_GRPO_TEST_JUDGE_KEY.*is not set"):
        JudgeClient(args).check()
    assert time.monotonic() - started < 1


def test_checklist_prompts_get_deterministic_key_answers():
    from core.rewards.judge_server import answer_keys

    img = Image.new("RGB", (32, 32), (10, 200, 30))
    img.putpixel((3, 3), (255, 255, 255))
    text = "Describe the image.\nKEYS: heart | lungs | Contains(heart, lungs)"
    reply = answer_keys([img], text)
    lines = reply.splitlines()
    assert lines[0].startswith("Description:")
    assert [line.split(": ")[0] for line in lines[1:]] == ["heart", "lungs", "Contains(heart, lungs)"]
    assert all(line.endswith((": yes", ": no")) for line in lines[1:])
    assert answer_keys([img], text) == reply  # same image, same answers


def test_conditional_markers_fail_only_the_request_whose_text_holds_the_condition(server: JudgeServerHandle) -> None:
    """`[judge:KIND~TEXT]`: one sample's text in several prompts fails only the prompt that also holds TEXT."""
    sample = "[judge:500~IDENTITY] [judge:truncated~QUALITY] make it grey"
    requests = [pair(60, f"{rubric}: {sample}") for rubric in ("FOLLOWING", "IDENTITY", "QUALITY")]
    requests.append(pair(60, "[judge:500~IDENTITY] the condition is only inside a marker"))
    with JudgeClient(judge_args(server.url, judge_max_retries=0)) as client:
        scores = client.score(requests, parse_score)
        raw = client.score(requests[2:3], lambda reply: reply)  # a truncated reply as the server sent it
    assert scores == [expected_score(60), None, None, expected_score(60)]
    full = json.dumps({"score": 8, "reason": score_images([solid(0), solid(60)])[1]})
    assert raw == [full[: len(full) // 2]]  # the first half: no longer JSON
    assert server.stats.status_counts == {200: 4, 500: 1}  # no retries: one 500, the rest answered


def test_truncated_checklist_reply_loses_its_last_keys(server: JudgeServerHandle) -> None:
    from core.rewards.judge_server import answer_keys

    image = Image.new("RGB", (16, 16), (10, 200, 30))
    keys = "KEYS: heart | lungs | blood | Contains(heart, lungs) | Causes(heart, blood)"
    with JudgeClient(judge_args(server.url)) as client:
        full, cut = client.score(
            [JudgeRequest(f"Check.\n{keys}", (image,)), JudgeRequest(f"[judge:truncated] Check.\n{keys}", (image,))],
            lambda reply: reply,
        )
    assert full == answer_keys([image], keys) and cut == full[: len(full) // 2]
    assert 1 < len(cut.splitlines()) < len(full.splitlines())  # some keys answered, not all


def test_per_request_parsers(server: JudgeServerHandle) -> None:
    """A list of parsers: each reply is judged by its own request's parser, a rejected one counts as a failure."""
    with JudgeClient(judge_args(server.url)) as client:
        scores = client.score([pair(0), pair(60), pair(0, "other")], [parse_score, lambda r: None, parse_score])
        assert scores == [10.0, None, 10.0]
        assert client.pop_metrics()["judge/parse_failures"] == 1
        with pytest.raises(ValueError, match="2 parsers for 1 judge requests"):
            client.score([pair(0)], [parse_score, parse_score])


def test_all_or_none_unscores_a_sample_in_every_column() -> None:
    columns = {"a": [1.0, None, 0.5, 0.0], "b": [0.2, 0.3, None, 0.0], "c": [0.1, 0.1, 0.1, 0.0]}
    assert all_or_none(columns) == {
        "a": [1.0, None, None, 0.0],
        "b": [0.2, None, None, 0.0],
        "c": [0.1, None, None, 0.0],  # 0.0 is a score, not a failure
    }
    assert all_or_none({}) == {} and all_or_none({"a": []}) == {"a": []}
    with pytest.raises(ValueError, match="different lengths"):
        all_or_none({"a": [1.0], "b": []})


def test_labelled_metrics_count_each_kind_of_request_apart(server: JudgeServerHandle) -> None:
    """One call, two kinds of request: each label's counters are its own, `pop_metrics` still sums them."""
    requests = [pair(0, "kind A"), pair(60, "kind A"), pair(60, "kind A"), pair(0, "[judge:garbage] kind B")]
    labels = ["a", "a", "a", "b"]
    with JudgeClient(judge_args(server.url)) as client:
        assert client.score(requests, parse_score, labels) == [10.0, expected_score(60), expected_score(60), None]
        by_label = client.pop_labelled_metrics()
        assert set(by_label) == {"a", "b"}
        assert (by_label["a"]["judge/requests"], by_label["a"]["judge/deduplicated"]) == (2, 1)
        assert (by_label["a"]["judge/failures"], by_label["b"]["judge/failures"]) == (0, 1)
        assert by_label["b"]["judge/parse_failures"] == 1 and by_label["b"]["judge/requests"] == 1
        assert by_label["a"]["judge/latency_max_s"] > 0
        assert set(by_label["a"]) == set(client.pop_metrics())  # the same names; popped: all zero now
        client.score(requests, parse_score)
        assert set(client.pop_labelled_metrics()) == {""}  # no labels: one entry under ""
        with pytest.raises(ValueError, match="1 labels for 4 judge requests"):
            client.score(requests, parse_score, ["a"])


def test_an_image_in_several_requests_is_hashed_and_encoded_once_per_call(
    server: JudgeServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Complex-Edit sends the edited image in two requests, n draws repeat every request: each distinct picture is
    PNG-encoded once per `score` call, and each request's body is still exactly `build_messages(request)`."""
    from core.rewards.judge import messages

    encoded: list[tuple[int, int]] = []
    png_data_url = messages.png_data_url

    def counted(image: Image.Image) -> str:
        encoded.append(image.size)
        return png_data_url(image)

    monkeypatch.setattr(messages, "png_data_url", counted)
    source, edited = solid(0), solid(90, size=24)
    requests = [JudgeRequest("both images", (source, edited), draw=draw) for draw in range(3)] + [
        JudgeRequest("the edit alone", (edited.copy(),), draw=draw) for draw in range(3)
    ]
    with JudgeClient(judge_args(server.url)) as client:
        scores = client.score(requests, lambda reply: reply)
    assert None not in scores and server.stats.total == 6
    assert sorted(encoded) == [(16, 16), (24, 24)]  # 2 encodings, not 9; equal pixels in another object included
    sent = {(b["messages"][-1]["content"][-1]["type"], len(b["messages"][-1]["content"])) for b in server.stats.recent}
    assert sent == {("text", 3), ("text", 2)}
    for body in server.stats.recent:
        request = next(r for r in requests if r.prompt == body["messages"][-1]["content"][-1]["text"])
        assert body["messages"] == build_messages(request)  # the wire format of a request encoded on its own


def test_concurrency_spans_several_connection_lanes() -> None:
    """Requests are spread over lanes of LANE_CONNECTIONS connections: together they reach judge_max_concurrency,
    never more."""
    from core.rewards.judge.client import LANE_CONNECTIONS

    concurrency = LANE_CONNECTIONS * 2 + 4
    with start_judge_server(MODEL, latency_s=0.5) as server:
        with JudgeClient(judge_args(server.url, judge_max_concurrency=concurrency, judge_timeout_s=5)) as client:
            scores = client.score([pair(v) for v in range(concurrency + 8)], parse_score)
    assert None not in scores and server.stats.total == concurrency + 8
    assert LANE_CONNECTIONS < server.stats.max_in_flight <= concurrency
