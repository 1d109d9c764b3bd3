"""A vision-language judge behind any OpenAI-compatible chat-completions endpoint, for judge-scored rewards.

Recipes whose reward is "ask a VLM how good this image is" (image editing, text-to-image) call the judge for every
sample of every GRPO step: hundreds of requests per step at training scale, for hours. What that needs beyond a bare
API call, and where it lives here:

* **Throughput**: requests of a batch run concurrently (`asyncio`, bounded by `judge_max_concurrency`), so a step
  waits about one judge latency, not one per sample.
* **No repeated work**: identical requests in a batch (same model, system, prompt, image pixels, temperature,
  max_tokens) are sent once; with `judge_cache_dir` set, replies persist on disk (one JSON file per request key,
  written atomically, so several ranks can share a folder) and a rerun or a repeated sample costs nothing.
* **Failures never crash training and are never scored 0**: a transport error, an HTTP error after the openai
  client's own retries (429/5xx/timeouts, with backoff; configured here, not re-implemented), or a reply `parse`
  rejects gives `None` for that sample - TRL's "cannot score", which the trainer ignores instead of learning that
  the sample was bad.
* **A sample is scored whole or not at all**: a reward that asks several questions per sample (one TRL reward per
  criterion) must not keep the answered ones when one failed - TRL nansums a sample's rewards, so the failed one
  would count as 0 and a judge outage would lower the reward. `all_or_none` makes every column None for such a
  sample; a per-request `parse` rejects a reply that answers only part of its request's checklist.
* **A dead endpoint does not stall every step**: after `judge_breaker_failures` consecutive failed requests a circuit
  breaker opens and further requests fail at once (`None`); after `judge_breaker_cooldown_s` a single probe request
  is let through (half-open) and its success closes the breaker.
* **Fail before GPU work**: `JudgeClient.check()` verifies URL, key and model within seconds at start-up.
* **Observability**: `pop_metrics()` returns per-step counters (`judge/requests`, `judge/cache_hits`, ...).

`core.rewards.judge_server` is a local OpenAI-compatible judge (deterministic pixel scores, injectable faults) for
smoke runs,
the demo and the tests.

Typical use in a recipe's reward::

    client = JudgeClient(script_args)          # script_args: a dataclass inheriting JudgeArguments
    client.check()                             # before loading the model
    scores = client.score([JudgeRequest(prompt, (source, edited)) for ...], parse_score)   # list[float | None]
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import openai
from PIL import Image

from core.ranges import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE

__all__ = [
    "JudgeArguments",
    "JudgeClient",
    "JudgeRequest",
    "JudgeUnavailable",
    "all_or_none",
    "build_messages",
    "image_digest",
    "parse_json_object",
    "parse_score",
    "request_key",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The start-up check must fail fast: an unreachable host should not cost the full per-request timeout and retries.
CHECK_TIMEOUT_S = 5.0
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
_KEY_VERSION = 1  # bump when the request key's content changes, so old cache files are not misread


class JudgeUnavailable(RuntimeError):
    """The judge cannot be used at all (unreachable URL, rejected key, unknown model, missing key variable)."""


@dataclass(kw_only=True)
class JudgeArguments:
    """Judge settings a recipe's ScriptArguments inherits; every field is a YAML key and a `--flag`.

    keyword-only so that a subclass may still declare required fields (e.g. `train_file`) without defaults.
    """

    judge_base_url: str = field(
        default="https://api.openai.com/v1",
        metadata={
            "help": "OpenAI-compatible base URL of the judge: OpenAI, a vLLM server, "
            "python -m core.rewards.judge_server."
        },
    )
    judge_model: str = field(default="gpt-4.1-mini", metadata={"help": "Judge model name as the endpoint knows it."})
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY",
        metadata={
            "help": "NAME of the environment variable holding the judge's API key (the key itself never goes in a "
            "config file). Not needed for a localhost URL."
        },
    )
    judge_temperature: float | None = field(
        default=0.0,
        metadata={
            "range": NON_NEGATIVE,
            "help": "Sampling temperature of the judge; None (null) leaves it out (reasoning models: default).",
        },
    )
    judge_max_tokens: int = field(
        default=256, metadata={"range": AT_LEAST_ONE, "help": "Maximum tokens of one judge reply."}
    )
    judge_max_tokens_field: str = field(
        default="max_tokens",
        metadata={
            "help": "Request field carrying judge_max_tokens: max_tokens, or max_completion_tokens (OpenAI's "
            "reasoning models, e.g. o3, reject max_tokens).",
            "choices": ["max_tokens", "max_completion_tokens"],
        },
    )
    judge_timeout_s: float = field(
        default=60.0, metadata={"range": POSITIVE, "help": "Timeout of one judge HTTP attempt, in seconds."}
    )
    judge_max_retries: int = field(
        default=3,
        metadata={
            "range": NON_NEGATIVE,
            "help": "Retries (with backoff, by the openai client) on 429, 5xx, timeouts and connection errors.",
        },
    )
    judge_max_concurrency: int = field(
        default=32,
        metadata={"range": AT_LEAST_ONE, "help": "Judge requests in flight at once (per process), across all calls."},
    )
    judge_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the persistent reply cache (one JSON file per request); None disables it."},
    )
    judge_breaker_failures: int = field(
        default=5,
        metadata={
            "range": NON_NEGATIVE,
            "help": "Consecutive failed judge requests that open the circuit breaker (requests then fail at once); "
            "0 disables the breaker.",
        },
    )
    judge_breaker_cooldown_s: float = field(
        default=30.0,
        metadata={
            "range": NON_NEGATIVE,
            "help": "Seconds the breaker stays open before one probe request is let through.",
        },
    )


@dataclass(frozen=True)
class JudgeRequest:
    """One judge query: images (sent first, as PNG data URLs), then the user text; an optional system message.

    `response_format`: sent as the chat request's `response_format` (e.g. a JSON schema, for protocols that ask for
    structured output, as Complex-Edit does). `image_detail`: the image parts' `detail` ("high", "low", "auto").
    `draw`: requests that differ only in `draw` are independent samples of the same question (a protocol that averages
    n judge samples at temperature > 0): not deduplicated, cached apart; not sent. An empty `prompt` with images sends
    the images alone (no empty text part).
    """

    prompt: str
    images: tuple[Image.Image, ...] = ()
    system: str | None = None
    response_format: Mapping[str, Any] | None = None
    image_detail: str | None = None
    draw: int = 0
    text_first: bool = False  # the text part before the images (a protocol that sends them in that order, MMMG)

    def __post_init__(self) -> None:
        if not isinstance(self.images, tuple):  # accept a list, keep the frozen object's field a tuple
            object.__setattr__(self, "images", tuple(self.images))


# --------------------------------------------------------------------------------------------------------------
# strict reply parsing
# --------------------------------------------------------------------------------------------------------------
_FENCED_RE = re.compile(r"\A```(?:json)?[ \t]*\n?(.*?)\n?[ \t]*```\Z", re.DOTALL | re.IGNORECASE)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _has_type(value: Any, expected: type | tuple[type, ...]) -> bool:
    """isinstance, except that bool is not a number and an int is an acceptable float (JSON writes 7, not 7.0)."""
    kinds = expected if isinstance(expected, tuple) else (expected,)
    for kind in kinds:
        if kind in (int, float) and isinstance(value, bool):
            continue
        if kind is float and isinstance(value, int | float):
            return True
        if isinstance(value, kind):
            return True
    return False


def parse_json_object(reply: str, required: dict[str, type | tuple[type, ...]]) -> dict[str, Any] | None:
    """The JSON object `reply` consists of, if it has every `required` key with the required type; else None.

    Accepted: a bare object, or one fenced as ```json ... ``` (or plain ```), surrounded by whitespace at most.
    Rejected: prose around the object, arrays, NaN/Infinity, missing keys, wrong types (bool is not a number).
    Strict on purpose: a judge reply that is only half-understood must not become a reward.
    """
    if not isinstance(reply, str):
        return None
    text = reply.strip()
    fenced = _FENCED_RE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:  # JSONDecodeError and the non-finite constants
        return None
    if not isinstance(value, dict):
        return None
    for key, expected in required.items():
        if key not in value or not _has_type(value[key], expected):
            return None
    return value


def parse_score(reply: str, key: str = "score", lo: float = 0, hi: float = 10) -> float | None:
    """`reply`'s `key` as a float if the reply is a JSON object (see `parse_json_object`) with a number in [lo, hi]."""
    obj = parse_json_object(reply, {key: float})
    if obj is None:
        return None
    score = float(obj[key])
    if not math.isfinite(score) or not lo <= score <= hi:
        return None
    return score


def all_or_none(columns: Mapping[str, Sequence[T | None]]) -> dict[str, list[T | None]]:
    """Each column as a list, with None in EVERY column at the samples where ANY column is None.

    For rewards that ask the judge several questions per sample and return one TRL reward per question (image_edit's
    Complex-Edit criteria): TRL turns None into NaN and sums a sample's weighted rewards with `nansum`, so one failed
    question would count as 0 in the sample's total while the answered ones count. A sample None in every column is
    an all-NaN row, which TRL leaves out as a whole (reward NaN, out of the group baseline, advantage 0).
    """
    lists = {name: list(values) for name, values in columns.items()}
    lengths = {name: len(values) for name, values in lists.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of different lengths: {lengths}")
    count = next(iter(lengths.values()), 0)
    complete = [all(values[i] is not None for values in lists.values()) for i in range(count)]
    return {name: [v if ok else None for v, ok in zip(values, complete, strict=True)] for name, values in lists.items()}


# --------------------------------------------------------------------------------------------------------------
# request keys, payloads, cache
# --------------------------------------------------------------------------------------------------------------
def image_digest(image: Image.Image) -> str:
    """Hash of the decoded pixels (mode, size, bytes): the same picture hashes the same whatever file it came from."""
    digest = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def request_key(request: JudgeRequest, model: str, temperature: float | None, max_tokens: int) -> str:
    """The deduplication and cache key: everything that determines the judge's reply, hashed."""
    payload = {
        "v": _KEY_VERSION,
        "model": model,
        "system": request.system,
        "prompt": request.prompt,
        "images": [image_digest(image) for image in request.images],
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    # Only when set, so the keys (and cache files) of requests without them stay as they were.
    for name in ("response_format", "image_detail", "draw", "text_first"):
        if getattr(request, name):
            payload[name] = getattr(request, name)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _png_data_url(image: Image.Image) -> str:
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode or "a" in image.mode else "RGB")
    buffer = io.BytesIO()
    # Level 1: several times faster than the default 6 for a few percent more bytes; the batch encodes many images.
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def build_messages(request: JudgeRequest) -> list[dict[str, Any]]:
    """OpenAI chat messages for `request`: optional system message, then images (PNG data URLs) and the text."""
    detail = {"detail": request.image_detail} if request.image_detail else {}
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": _png_data_url(image), **detail}} for image in request.images
    ]
    if request.prompt or not request.images:
        content.append({"type": "text", "text": request.prompt})
    if request.text_first:
        content = content[len(request.images) :] + content[: len(request.images)]
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append({"role": "user", "content": content})
    return messages


class _DiskCache:
    """Raw judge replies by request key, one JSON file each, written atomically (tmp file + os.replace).

    One file per key rather than one database: several training processes can write the same folder concurrently
    with no locking, and a half-written file can never be read (the rename is atomic).
    """

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = None if root is None else Path(root).expanduser()
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        if self.root is None:
            return None
        try:
            record = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        reply = record.get("reply") if isinstance(record, dict) else None
        return reply if isinstance(reply, str) else None

    def put(self, key: str, reply: str, model: str) -> None:
        if self.root is None:
            return
        path = self._path(key)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"reply": reply, "model": model, "created": time.time()}, handle)
            os.replace(tmp, path)
        except OSError as err:  # a full or read-only disk loses the cache entry, never the score
            logger.warning("judge cache: cannot write %s: %s", path, err)
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


# --------------------------------------------------------------------------------------------------------------
# circuit breaker, metrics, event loop
# --------------------------------------------------------------------------------------------------------------
class _CircuitBreaker:
    """Closed -> (threshold consecutive failures) -> open -> (cooldown) -> one probe -> closed, or open again.

    Used only from the client's event-loop thread, so it needs no lock. A success of any request closes it (requests
    sent before it opened may still be in flight); their failures do not extend the open period, a probe's does.
    """

    def __init__(self, threshold: int, cooldown_s: float, describe: str) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.describe = describe
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.probing = False
        self._probe_done = asyncio.Event()
        self.opened_since_pop = False

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def new_loop(self) -> None:
        """asyncio primitives belong to one loop: a new loop (after close() or a fork) gets a fresh probe event."""
        self.probing = False
        self._probe_done = asyncio.Event()

    async def acquire(self) -> str | None:
        """'closed' or 'probe' when a request may go out, None when it must fail at once.

        While the probe is in flight, other requests wait for its verdict instead of failing: when it succeeds the
        rest of the batch goes out, so recovery does not cost a whole step of rewards.
        """
        while True:
            if self.opened_at is None:
                return "closed"
            if self.probing:
                await self._probe_done.wait()
                continue
            if time.monotonic() - self.opened_at < self.cooldown_s:
                return None
            self.probing = True
            self._probe_done = asyncio.Event()
            return "probe"

    def release(self, ticket: str) -> None:
        """The request never went out (a local error): a probe slot is given back without a verdict."""
        if ticket == "probe":
            self.probing = False
            self._probe_done.set()

    def record(self, ok: bool, ticket: str) -> None:
        if ticket == "probe":
            self.probing = False
            self._probe_done.set()
        if ok:
            self.consecutive_failures = 0
            if self.opened_at is not None:
                self.opened_at = None
                logger.warning("judge circuit breaker CLOSED: %s answers again", self.describe)
            return
        self.consecutive_failures += 1
        if self.opened_at is not None:
            if ticket == "probe":
                self.opened_at = time.monotonic()
                logger.info("judge circuit breaker: probe failed, open for another %.1f s", self.cooldown_s)
        elif self.threshold > 0 and self.consecutive_failures >= self.threshold:
            self.opened_at = time.monotonic()
            self.opened_since_pop = True
            logger.warning(
                "judge circuit breaker OPEN after %d consecutive failed requests to %s: judge requests fail at once "
                "(reward None) for %.1f s, then one probe request is tried",
                self.consecutive_failures,
                self.describe,
                self.cooldown_s,
            )


class _Metrics:
    """Counters since the last `pop`; updated from the loop thread, popped from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.counts: Counter[str] = Counter()
        self.latencies: list[float] = []

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[name] += amount

    def latency(self, seconds: float) -> None:
        with self._lock:
            self.latencies.append(seconds)

    def pop(self) -> tuple[Counter[str], list[float]]:
        with self._lock:
            counts, latencies = self.counts, self.latencies
            self._reset()
        return counts, latencies


class _LoopThread:
    """A private event loop running in a daemon thread, so synchronous callers from any thread can use async code.

    Why not `asyncio.run` per call: the AsyncOpenAI client's connection pool is bound to the loop it first ran on,
    and a fresh loop per step would either break it or throw the pool (and its keep-alive connections) away.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._run, args=(self.loop,), name="judge-event-loop", daemon=True)
        self.thread.start()

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:  # stopped by close() or the finalizer: release the executor's threads and the loop's resources
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("JudgeClient methods cannot be called from the judge's own event loop (e.g. in parse)")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    @staticmethod
    def stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
            if threading.current_thread() is not thread:
                thread.join(timeout=5)


def _describe_error(err: BaseException) -> str:
    if isinstance(err, openai.APITimeoutError):
        return "timeout"
    if isinstance(err, openai.APIConnectionError):
        return f"connection error ({err.__cause__ or err})"
    if isinstance(err, openai.APIStatusError):
        return f"HTTP {err.status_code} ({err.message})"
    return f"{type(err).__name__}: {err}"


def _is_local(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in _LOCAL_HOSTS or host.startswith("127.")


# --------------------------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------------------------
class JudgeClient:
    """Scores batches of `JudgeRequest`s with a judge model; see the module docstring for what it adds to a bare call.

    Thread-safe: `score`, `check` and `pop_metrics` may be called from any thread (including concurrently); all
    requests run on one private event loop, so the concurrency bound and the breaker are shared by all callers.
    """

    def __init__(self, args: JudgeArguments) -> None:
        self.args = args
        self.describe = f"judge {args.judge_model!r} at {args.judge_base_url}"
        api_key = os.environ.get(args.judge_api_key_env, "")
        if not api_key:
            if not _is_local(args.judge_base_url):
                raise JudgeUnavailable(
                    f"{self.describe}: the environment variable {args.judge_api_key_env} (judge_api_key_env) holding "
                    f"the API key is not set; export {args.judge_api_key_env}=<key>, or name another variable with "
                    "--judge_api_key_env"
                )
            api_key = "local-no-key"  # local servers (vLLM, core.rewards.judge_server) accept any token
        self._api_key = api_key
        # httpx logs one INFO line per request: hundreds per step in a training log at INFO. Quieted unless the
        # user configured those loggers themselves; judge failures are summarised by this module instead.
        for name in ("httpx2", "httpx"):
            if logging.getLogger(name).level == logging.NOTSET:
                logging.getLogger(name).setLevel(logging.WARNING)
        if args.judge_max_concurrency < 1:
            raise ValueError(f"judge_max_concurrency must be >= 1, got {args.judge_max_concurrency}")
        self._client = self._make_client()
        self._cache = _DiskCache(args.judge_cache_dir)
        self._breaker = _CircuitBreaker(args.judge_breaker_failures, args.judge_breaker_cooldown_s, self.describe)
        self._metrics = _Metrics()
        self._loop: _LoopThread | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._loop_lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    def _make_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.args.judge_base_url,
            api_key=self._api_key,
            timeout=self.args.judge_timeout_s,
            max_retries=self.args.judge_max_retries,
        )

    # -- event loop ----------------------------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._loop_lock:
            if self._loop is None or self._loop.pid != os.getpid():
                if self._loop is not None:  # forked: the parent's loop thread does not exist here
                    self._client = self._make_client()
                self._loop = _LoopThread()
                self._semaphore = asyncio.Semaphore(self.args.judge_max_concurrency)
                self._breaker.new_loop()
                self._finalizer = weakref.finalize(self, _LoopThread.stop, self._loop.loop, self._loop.thread)
            loop = self._loop
        return loop.run(coro)

    def close(self) -> None:
        """Close HTTP connections and stop the event-loop thread; the client can be used again afterwards."""
        with self._loop_lock:
            loop, self._loop = self._loop, None
        if loop is None or loop.pid != os.getpid():
            return
        try:
            loop.run(self._client.close())
        finally:
            _LoopThread.stop(loop.loop, loop.thread)
            self._client = self._make_client()

    def __enter__(self) -> JudgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- start-up check ------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise `JudgeUnavailable` unless the endpoint answers, accepts the key and serves the model.

        `GET /models` (OpenAI and vLLM both serve it; free) checks URL and key and names the served models; then one
        1-token chat request with the scoring requests' own `temperature` and token-limit field decides, since some
        gateways serve unlisted models and a listed model may still reject those parameters (OpenAI's reasoning
        models answer `max_tokens` or `temperature: 0` with HTTP 400), which would leave every sample unscored.
        Short timeout, no retries: an unreachable URL fails in seconds, before any GPU work.
        """
        self._run(self._check())
        logger.info("%s: reachable, key accepted, model served", self.describe)

    async def _check(self) -> None:
        timeout = min(CHECK_TIMEOUT_S, self.args.judge_timeout_s)
        client = self._client.with_options(timeout=timeout, max_retries=0)
        model = self.args.judge_model
        listed: list[str] | None = None
        try:
            page = await client.models.list()
            listed = [entry.id for entry in page.data]
        except openai.NotFoundError:
            pass  # no model list on this endpoint: the chat request below decides
        except openai.APIError as err:
            raise self._unavailable("GET /models", err, timeout) from err
        try:
            await client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "Reply with OK."}],
                **self._sampling_kwargs(1),
            )
        except openai.NotFoundError as err:
            served = "" if listed is None else f"; the endpoint lists: {', '.join(listed[:20]) or '(no models)'}"
            raise JudgeUnavailable(
                f"{self.describe}: model {model!r} is unknown to the endpoint ({_describe_error(err)}){served}"
            ) from err
        except openai.APIError as err:
            temperature = self.args.judge_temperature
            sent = "temperature omitted" if temperature is None else f"temperature={temperature:g}"
            what = f"a 1-token chat request with the scoring parameters ({sent}, {self.args.judge_max_tokens_field})"
            raise self._unavailable(what, err, timeout) from err

    def _sampling_kwargs(self, max_tokens: int) -> dict[str, Any]:
        """Temperature (left out when None) and the token limit under `judge_max_tokens_field`."""
        kwargs: dict[str, Any] = {self.args.judge_max_tokens_field: max_tokens}
        if self.args.judge_temperature is not None:
            kwargs["temperature"] = self.args.judge_temperature
        return kwargs

    def _unavailable(self, what: str, err: openai.APIError, timeout: float) -> JudgeUnavailable:
        if isinstance(err, openai.AuthenticationError | openai.PermissionDeniedError):
            reason = f"the API key from ${self.args.judge_api_key_env} was rejected ({_describe_error(err)})"
        elif isinstance(err, openai.APITimeoutError):
            reason = f"no answer within {timeout:g} s"
        elif isinstance(err, openai.APIConnectionError):
            reason = f"cannot connect ({err.__cause__ or err})"
        else:
            reason = _describe_error(err)
        return JudgeUnavailable(f"{self.describe}: {what} failed: {reason}")

    # -- scoring -------------------------------------------------------------------------------------------------
    def score(
        self,
        requests: list[JudgeRequest],
        parse: Callable[[str], T | None] | Sequence[Callable[[str], T | None]],
    ) -> list[T | None]:
        """`parse(reply)` for every request, in order; None where the judge failed or `parse` rejected the reply.

        `parse` is one parser for all requests, or one per request: a reply whose validity depends on its request
        (a checklist must answer that request's keys) is then rejected here, so it counts as a parse failure, is
        never cached and never reaches the reward half-read. Identical requests must have equivalent parsers (one
        of them is sent and parsed for all).

        Never raises for a failed sample: a reward of None is "cannot score", which TRL ignores, whereas an
        exception would kill the run and a 0 would teach the policy that the sample was bad.
        """
        if not requests:
            return []
        parsers = [parse] * len(requests) if callable(parse) else list(parse)
        if len(parsers) != len(requests):
            raise ValueError(f"{len(parsers)} parsers for {len(requests)} judge requests")
        args = self.args
        # Hashing pixels is CPU work: done here, in the caller's thread, not on the shared event loop.
        keys: list[str] = []
        outcomes: dict[str, tuple[T | None, str | None]] = {}
        for index, request in enumerate(requests):
            try:
                keys.append(request_key(request, args.judge_model, args.judge_temperature, args.judge_max_tokens))
            except Exception as err:  # e.g. an image file that fails to decode: this sample only is unscored
                keys.append(f"invalid-{index}")
                outcomes[keys[-1]] = (None, f"invalid request ({type(err).__name__}: {err})")
                self._metrics.add("failures")
        first_of: dict[str, int] = {}
        for index, key in enumerate(keys):
            if key not in outcomes:
                first_of.setdefault(key, index)
        self._metrics.add("deduplicated", len(requests) - len(outcomes) - len(first_of))
        if first_of:
            unique = {key: (requests[i], parsers[i]) for key, i in first_of.items()}
            outcomes.update(self._run(self._score_unique(unique)))
        failed = {key: reason for key, (_, reason) in outcomes.items() if reason is not None}
        if failed:
            causes = Counter(reason.split(" (", 1)[0] for reason in failed.values())
            logger.warning(
                "%s: %d of %d distinct requests unscored (reward None): %s; e.g. %s",
                self.describe,
                len(failed),
                len(outcomes),
                ", ".join(f"{cause}: {n}" for cause, n in causes.most_common()),
                next(iter(failed.values())),
            )
        return [outcomes[key][0] for key in keys]

    async def _score_unique(
        self, unique: dict[str, tuple[JudgeRequest, Callable[[str], T | None]]]
    ) -> dict[str, tuple[T | None, str | None]]:
        keys = list(unique)
        results = await asyncio.gather(*(self._score_one(key, *unique[key]) for key in keys))
        return dict(zip(keys, results, strict=True))

    @staticmethod
    def _parse(parse: Callable[[str], T | None], reply: str | None) -> T | None:
        if reply is None:
            return None
        try:
            return parse(reply)
        except Exception:  # a recipe's parser raising is one unscored sample, not a crashed step
            return None

    async def _score_one(
        self, key: str, request: JudgeRequest, parse: Callable[[str], T | None]
    ) -> tuple[T | None, str | None]:
        """(parsed value, None) on success, (None, reason) on failure."""
        cached = self._cache.get(key)
        if cached is not None:
            value = self._parse(parse, cached)
            if value is not None:
                self._metrics.add("cache_hits")
                return value, None
        assert self._semaphore is not None
        async with self._semaphore:
            # Checked after waiting for a slot: the breaker may have opened while this request was queued.
            ticket = await self._breaker.acquire()
            if ticket is None:
                self._metrics.add("breaker_rejected")
                self._metrics.add("failures")
                return None, "circuit breaker open"
            try:
                messages = await asyncio.to_thread(build_messages, request)  # PNG encoding off the loop
            except Exception as err:  # an image that cannot be encoded is this sample's problem, not the endpoint's
                self._breaker.release(ticket)
                self._metrics.add("failures")
                return None, f"cannot encode request ({type(err).__name__}: {err})"
            self._metrics.add("requests")
            started = time.monotonic()
            try:
                completion = await self._client.chat.completions.create(
                    model=self.args.judge_model,
                    messages=messages,  # type: ignore[arg-type]
                    **self._sampling_kwargs(self.args.judge_max_tokens),
                    **({} if request.response_format is None else {"response_format": request.response_format}),
                )
            except Exception as err:  # openai errors after the client's retries, and anything unexpected
                self._metrics.latency(time.monotonic() - started)
                self._metrics.add("failures")
                # A 400/422 is about this request's content (too large, filtered), not the endpoint's health.
                per_request = isinstance(err, openai.BadRequestError | openai.UnprocessableEntityError)
                self._breaker.record(per_request, ticket)
                return None, _describe_error(err)
            self._metrics.latency(time.monotonic() - started)
            self._breaker.record(True, ticket)
        reply = completion.choices[0].message.content if completion.choices else None
        value = self._parse(parse, reply)
        if value is None:
            self._metrics.add("parse_failures")
            self._metrics.add("failures")
            return None, f"unparseable reply ({(reply or '')[:120]!r})"
        self._cache.put(key, reply, self.args.judge_model)  # type: ignore[arg-type]  # reply is a str here
        return value, None

    # -- metrics -------------------------------------------------------------------------------------------------
    def pop_metrics(self) -> dict[str, float]:
        """Counters since the last call, for per-step logging.

        `judge/requests`: distinct requests sent over HTTP (the openai client's retries not counted separately);
        `judge/cache_hits`: distinct requests answered from the disk cache; `judge/deduplicated`: samples answered
        by an identical sample of the same batch; `judge/failures`: distinct requests left unscored (HTTP error,
        timeout, unparseable reply, breaker), of which `judge/parse_failures` and `judge/breaker_rejected`;
        `judge/breaker_open`: 1 if the breaker is open now or opened since the last call; `judge/latency_*_s`:
        wall time of the HTTP requests, retries included.
        """
        counts, latencies = self._metrics.pop()
        breaker_open = self._breaker.is_open or self._breaker.opened_since_pop
        self._breaker.opened_since_pop = False
        metrics = {
            f"judge/{name}": float(counts[name])
            for name in ("requests", "cache_hits", "deduplicated", "failures", "parse_failures", "breaker_rejected")
        }
        metrics["judge/breaker_open"] = 1.0 if breaker_open else 0.0
        metrics["judge/latency_mean_s"] = sum(latencies) / len(latencies) if latencies else 0.0
        metrics["judge/latency_max_s"] = max(latencies, default=0.0)
        return metrics
