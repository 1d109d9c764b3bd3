"""The client's machinery: the circuit breaker, per-step metrics, and the private event loop its requests run on."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Coroutine
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class CircuitBreaker:
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


class Metrics:
    """Counters and latencies since the last `pop`, kept apart per label (the `labels` of `JudgeClient.score`: a
    caller that sends several kinds of request in one call still reads each kind's counters); updated from the loop
    thread and the caller's, popped from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.latencies: defaultdict[str, list[float]] = defaultdict(list)

    def add(self, name: str, amount: int = 1, label: str = "") -> None:
        with self._lock:
            self.counts[label][name] += amount

    def latency(self, seconds: float, label: str = "") -> None:
        with self._lock:
            self.latencies[label].append(seconds)

    def pop(self) -> dict[str, tuple[Counter[str], list[float]]]:
        """(counts, latencies) per label seen since the last pop."""
        with self._lock:
            counts, latencies = self.counts, self.latencies
            self._reset()
        return {label: (counts[label], latencies[label]) for label in {*counts, *latencies}}


class LoopThread:
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
