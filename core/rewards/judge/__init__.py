"""A vision-language judge behind any OpenAI-compatible chat-completions endpoint, for judge-scored rewards.

Recipes whose reward is "ask a VLM how good this image is" (image editing, text-to-image) call the judge for every
sample of every GRPO step: hundreds of requests per step at training scale, for hours. What that needs beyond a bare
API call, and where it lives here:

* **Throughput**: requests of a batch run concurrently (`asyncio`, bounded by `judge_max_concurrency`), so a step
  waits about one judge latency, not one per sample; a recipe asking several kinds of question per sample sends
  them all in one `score` call (a parser and a metrics label per request) to wait one latency, not one per kind.
  Each distinct image of a call is hashed and PNG-encoded once, however many requests carry it.
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
* **Observability**: `pop_metrics()` returns per-step counters (`judge/requests`, `judge/cache_hits`, ...);
  `pop_labelled_metrics()` the same per label of `score`.

`core.rewards.judge_server` is a local OpenAI-compatible judge (deterministic pixel scores, injectable faults) for
smoke runs, the demo and the tests.

Typical use in a recipe's reward::

    client = JudgeClient(script_args)          # script_args: a dataclass inheriting JudgeArguments
    client.check()                             # before loading the model
    scores = client.score([JudgeRequest(prompt, (source, edited)) for ...], parse_score)   # list[float | None]

Modules: arguments (`JudgeArguments`, `JudgeRequest`, `JudgeUnavailable`), replies (strict reply parsing,
`all_or_none`), messages (the chat payload, each image of a batch encoded once), cache (request keys, the on-disk
reply cache), runtime (circuit breaker, metrics, the private event loop) and client (`JudgeClient`). Import from
here: `from core.rewards.judge import ...`.
"""

from core.rewards.judge.arguments import JudgeArguments, JudgeRequest, JudgeUnavailable
from core.rewards.judge.cache import DiskCache, image_digest, request_key
from core.rewards.judge.client import JudgeClient
from core.rewards.judge.messages import build_messages
from core.rewards.judge.replies import all_or_none, parse_json_object, parse_score

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

_DiskCache = DiskCache  # the name tests/test_complex_edit_official.py imports
