"""`JudgeClient`: scores batches of `JudgeRequest`s concurrently, deduplicated and cached, behind a circuit breaker
(see the package docstring for what it adds to a bare API call)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import openai
from openai.types.chat import ChatCompletion

from core.rewards.judge.arguments import JudgeArguments, JudgeRequest, JudgeUnavailable
from core.rewards.judge.cache import DiskCache, request_key
from core.rewards.judge.messages import BatchImages, build_messages
from core.rewards.judge.runtime import CircuitBreaker, LoopThread, Metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The start-up check must fail fast: an unreachable host should not cost the full per-request timeout and retries.
CHECK_TIMEOUT_S = 5.0
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
# httpx's connection pool re-scans every connection it holds, probing each idle one's socket, whenever a request
# starts or ends: quadratic in the connections of one pool, and at 128 concurrent requests a third of the client's
# CPU per batch. Requests are spread over several clients ("lanes") of at most this many connections each.
LANE_CONNECTIONS = 16


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


@dataclass(frozen=True)
class _Pending:
    """A distinct request of a `score` call about to be answered: what to send, how to read the reply, under which
    label to count it, and its images' digests (to share their encoding with the batch's other requests)."""

    request: JudgeRequest
    parse: Callable[[str], Any]
    label: str
    digests: tuple[str, ...]


# --------------------------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------------------------
class JudgeClient:
    """Scores batches of `JudgeRequest`s with a judge model; see core.rewards.judge for what it adds to a bare call.

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
        self._clients = self._make_clients()
        self._cache = DiskCache(args.judge_cache_dir)
        self._breaker = CircuitBreaker(args.judge_breaker_failures, args.judge_breaker_cooldown_s, self.describe)
        self._metrics = Metrics()
        self._loop: LoopThread | None = None
        self._slots: asyncio.LifoQueue[openai.AsyncOpenAI] | None = None
        self._loop_lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    def _make_clients(self) -> list[openai.AsyncOpenAI]:
        """One openai client per lane of `LANE_CONNECTIONS` requests in flight, `judge_max_concurrency` in all."""
        lanes = -(-self.args.judge_max_concurrency // LANE_CONNECTIONS)
        return [
            openai.AsyncOpenAI(
                base_url=self.args.judge_base_url,
                api_key=self._api_key,
                timeout=self.args.judge_timeout_s,
                max_retries=self.args.judge_max_retries,
            )
            for _ in range(lanes)
        ]

    def _new_slots(self) -> asyncio.LifoQueue[openai.AsyncOpenAI]:
        """`judge_max_concurrency` slots, each a lane's client: taking one bounds the requests in flight, in all and
        per lane; last in, first out, so a request goes out on a connection that has just been used."""
        slots: asyncio.LifoQueue[openai.AsyncOpenAI] = asyncio.LifoQueue()
        for index in range(self.args.judge_max_concurrency):
            slots.put_nowait(self._clients[index // LANE_CONNECTIONS])
        return slots

    # -- event loop ----------------------------------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._loop_lock:
            if self._loop is None or self._loop.pid != os.getpid():
                if self._loop is not None:  # forked: the parent's loop thread does not exist here
                    self._clients = self._make_clients()
                self._loop = LoopThread()
                self._slots = self._new_slots()
                self._breaker.new_loop()
                self._finalizer = weakref.finalize(self, LoopThread.stop, self._loop.loop, self._loop.thread)
            loop = self._loop
        return loop.run(coro)

    def close(self) -> None:
        """Close HTTP connections and stop the event-loop thread; the client can be used again afterwards."""
        with self._loop_lock:
            loop, self._loop = self._loop, None
        if loop is None or loop.pid != os.getpid():
            return
        try:
            loop.run(self._close_clients())
        finally:
            LoopThread.stop(loop.loop, loop.thread)
            self._clients = self._make_clients()

    async def _close_clients(self) -> None:
        await asyncio.gather(*(client.close() for client in self._clients))

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
        client = self._clients[0].with_options(timeout=timeout, max_retries=0)
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
        labels: Sequence[str] | None = None,
    ) -> list[T | None]:
        """`parse(reply)` for every request, in order; None where the judge failed or `parse` rejected the reply.

        All requests of the call are in flight together (up to `judge_max_concurrency`): a caller with several
        kinds of request per sample sends them in ONE call, so its batch waits one judge latency, not one per kind.
        `parse` is one parser for all requests, or one per request: a reply whose validity depends on its request
        (a checklist must answer that request's keys, an alignment reply has other keys than a quality reply) is
        then rejected here, so it counts as a parse failure, is never cached and never reaches the reward half-read.
        Identical requests must have equivalent parsers (one of them is sent and parsed for all). `labels`: one
        name per request under which its counters are kept (`pop_labelled_metrics`); None: all under "".

        Never raises for a failed sample: a reward of None is "cannot score", which TRL ignores, whereas an
        exception would kill the run and a 0 would teach the policy that the sample was bad.
        """
        if not requests:
            return []
        parsers = [parse] * len(requests) if callable(parse) else list(parse)
        labels = [""] * len(requests) if labels is None else list(labels)
        for name, given in (("parsers", parsers), ("labels", labels)):
            if len(given) != len(requests):
                raise ValueError(f"{len(given)} {name} for {len(requests)} judge requests")
        images = BatchImages()
        keys, outcomes, digests = self._keys(requests, labels, images)
        first_of: dict[str, int] = {}
        for index, key in enumerate(keys):
            if key not in outcomes:
                first_of.setdefault(key, index)
        for label, count in Counter(labels).items():  # every label gets an entry, even with nothing deduplicated
            unique = sum(1 for i in first_of.values() if labels[i] == label)
            invalid = sum(1 for i, key in enumerate(keys) if labels[i] == label and key.startswith("invalid-"))
            self._metrics.add("deduplicated", count - unique - invalid, label)
        if first_of:
            pending = {key: _Pending(requests[i], parsers[i], labels[i], digests[i]) for key, i in first_of.items()}
            outcomes.update(self._run(self._score_unique(pending, images)))
        self._warn_failed(outcomes)
        return [outcomes[key][0] for key in keys]

    def _keys(
        self, requests: list[JudgeRequest], labels: list[str], images: BatchImages
    ) -> tuple[list[str], dict[str, tuple[Any, str | None]], list[tuple[str, ...]]]:
        """Each request's key and image digests; a request whose key cannot be made (an image that fails to decode)
        gets an `invalid-<index>` key with its failure already in the returned outcomes.

        Hashing pixels is CPU work: done here, in the caller's thread, not on the shared event loop, and once per
        image object of the batch (`BatchImages.digest`).
        """
        args = self.args
        keys: list[str] = []
        outcomes: dict[str, tuple[Any, str | None]] = {}
        digests: list[tuple[str, ...]] = []
        for index, request in enumerate(requests):
            try:
                request_digests = tuple(images.digest(image) for image in request.images)
                key = request_key(
                    request, args.judge_model, args.judge_temperature, args.judge_max_tokens, request_digests
                )
            except Exception as err:  # e.g. an image file that fails to decode: this sample only is unscored
                request_digests, key = (), f"invalid-{index}"
                outcomes[key] = (None, f"invalid request ({type(err).__name__}: {err})")
                self._metrics.add("failures", label=labels[index])
            keys.append(key)
            digests.append(request_digests)
        return keys, outcomes, digests

    def _warn_failed(self, outcomes: dict[str, tuple[Any, str | None]]) -> None:
        """One log line per call that left requests unscored: how many, why, and one example."""
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

    async def _score_unique(
        self, pending: dict[str, _Pending], images: BatchImages
    ) -> dict[str, tuple[Any, str | None]]:
        keys = list(pending)
        for key in keys:
            images.register(pending[key].digests)
        results = await asyncio.gather(*(self._score_one(key, pending[key], images) for key in keys))
        return dict(zip(keys, results, strict=True))

    @staticmethod
    def _parse(parse: Callable[[str], T | None], reply: str | None) -> T | None:
        if reply is None:
            return None
        try:
            return parse(reply)
        except Exception:  # a recipe's parser raising is one unscored sample, not a crashed step
            return None

    async def _score_one(self, key: str, job: _Pending, images: BatchImages) -> tuple[Any, str | None]:
        """(parsed value, None) on success, (None, reason) on failure."""
        try:
            return await self._cached_or_sent(key, job, images)
        finally:
            images.release(job.digests)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[openai.AsyncOpenAI]:
        """One of the `judge_max_concurrency` request slots (waiting for one if all are taken): its lane's client."""
        assert self._slots is not None
        client = await self._slots.get()
        try:
            yield client
        finally:
            self._slots.put_nowait(client)

    async def _cached_or_sent(self, key: str, job: _Pending, images: BatchImages) -> tuple[Any, str | None]:
        label = job.label
        cached = self._cache.get(key)
        if cached is not None:
            value = self._parse(job.parse, cached)
            if value is not None:
                self._metrics.add("cache_hits", label=label)
                return value, None
        async with self._slot() as client:
            # Checked after waiting for a slot: the breaker may have opened while this request was queued.
            ticket = await self._breaker.acquire()
            if ticket is None:
                self._metrics.add("breaker_rejected", label=label)
                self._metrics.add("failures", label=label)
                return None, "circuit breaker open"
            try:
                urls = await images.data_urls(job.digests, job.request.images)
                body = self._body(job.request, build_messages(job.request, urls))
            except Exception as err:  # an image that cannot be encoded is this sample's problem, not the endpoint's
                self._breaker.release(ticket)
                self._metrics.add("failures", label=label)
                return None, f"cannot encode request ({type(err).__name__}: {err})"
            self._metrics.add("requests", label=label)
            started = time.monotonic()
            try:
                completion = await client.post("/chat/completions", body=body, cast_to=ChatCompletion)
            except Exception as err:  # openai errors after the client's retries, and anything unexpected
                self._metrics.latency(time.monotonic() - started, label)
                self._metrics.add("failures", label=label)
                # A 400/422 is about this request's content (too large, filtered), not the endpoint's health.
                per_request = isinstance(err, openai.BadRequestError | openai.UnprocessableEntityError)
                self._breaker.record(per_request, ticket)
                return None, _describe_error(err)
            self._metrics.latency(time.monotonic() - started, label)
            self._breaker.record(True, ticket)
        reply = completion.choices[0].message.content if completion.choices else None
        value = self._parse(job.parse, reply)
        if value is None:
            self._metrics.add("parse_failures", label=label)
            self._metrics.add("failures", label=label)
            return None, f"unparseable reply ({(reply or '')[:120]!r})"
        self._cache.put(key, reply, self.args.judge_model)  # type: ignore[arg-type]  # reply is a str here
        return value, None

    def _body(self, request: JudgeRequest, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The chat-completions request body, exactly what `chat.completions.create` would send.

        Sent with the SDK's documented `post` (same client: retries, timeouts, error types, the `ChatCompletion`
        model) rather than `chat.completions.create`, whose parameter transform walks every message part with type
        introspection: about a third of the client's CPU per request, for a body that is already plain JSON.
        """
        body: dict[str, Any] = {
            "model": self.args.judge_model,
            "messages": messages,
            **self._sampling_kwargs(self.args.judge_max_tokens),
        }
        if request.response_format is not None:
            body["response_format"] = request.response_format
        return body

    # -- metrics -------------------------------------------------------------------------------------------------
    def pop_metrics(self) -> dict[str, float]:
        """Counters since the last call, for per-step logging (all labels together).

        `judge/requests`: distinct requests sent over HTTP (the openai client's retries not counted separately);
        `judge/cache_hits`: distinct requests answered from the disk cache; `judge/deduplicated`: samples answered
        by an identical sample of the same batch; `judge/failures`: distinct requests left unscored (HTTP error,
        timeout, unparseable reply, breaker), of which `judge/parse_failures` and `judge/breaker_rejected`;
        `judge/breaker_open`: 1 if the breaker is open now or opened since the last call; `judge/latency_*_s`:
        wall time of the HTTP requests, retries included.
        """
        per_label = self._metrics.pop()
        counts: Counter[str] = sum((c for c, _ in per_label.values()), Counter())
        latencies = [seconds for _, values in per_label.values() for seconds in values]
        return self._summary(counts, latencies, self._pop_breaker_open())

    def pop_labelled_metrics(self) -> dict[str, dict[str, float]]:
        """`pop_metrics`'s counters per label of `score` (every label used since the last pop), e.g. a recipe's
        alignment and quality requests of one call logged apart; `judge/breaker_open` is the endpoint's, the same in
        each."""
        breaker_open = self._pop_breaker_open()
        return {
            label: self._summary(counts, latencies, breaker_open)
            for label, (counts, latencies) in self._metrics.pop().items()
        }

    def _pop_breaker_open(self) -> bool:
        breaker_open = self._breaker.is_open or self._breaker.opened_since_pop
        self._breaker.opened_since_pop = False
        return breaker_open

    @staticmethod
    def _summary(counts: Counter[str], latencies: list[float], breaker_open: bool) -> dict[str, float]:
        metrics = {
            f"judge/{name}": float(counts[name])
            for name in ("requests", "cache_hits", "deduplicated", "failures", "parse_failures", "breaker_rejected")
        }
        metrics["judge/breaker_open"] = 1.0 if breaker_open else 0.0
        metrics["judge/latency_mean_s"] = sum(latencies) / len(latencies) if latencies else 0.0
        metrics["judge/latency_max_s"] = max(latencies, default=0.0)
        return metrics
