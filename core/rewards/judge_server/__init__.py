"""A local OpenAI-compatible judge: real HTTP on 127.0.0.1, deterministic pixel scores, injectable faults.

Why it exists: recipes whose reward is a vision-language judge (`core.rewards.judge.JudgeClient`) must be
smoke-tested, demoed
and unit-tested without an API key, a GPU or a network. This server speaks the two endpoints the client uses -
`POST /v1/chat/completions` and `GET /v1/models` - with OpenAI's response and error shapes, so the client runs its
real code path (openai SDK, httpx, retries, timeouts) against it, and the faults a real endpoint has (rate limits,
5xx, garbage replies, hangs, slowness) can be produced on demand, per sample.

Scoring rule (deterministic: the same images always get the same score)
-------------------------------------------------------------------------
The images are the `image_url` data URLs of the request (any format Pillow decodes), in order:

* two or more images: the FIRST and the LAST are compared (source / edited, reference / generated); the last is
  resized to the first one's size if they differ (bilinear), both taken as RGB, and
  ``x = 10 * (1 - mean(|a - b|) / 255)`` - identical images score 10, black vs white scores 0;
* one image: its contrast, ``x = 10 * min(std(grayscale) / 127.5, 1)`` - a flat image scores 0, a half-black
  half-white image 10;
* the integer score is ``floor(x + u)``, with ``u`` in [0, 1) read from a SHA-256 of the images' pixels
  (:func:`dithered_score`): rounding keyed by the images, so the score's mean over images is the exact ``x``. Plain
  ``round(x)`` gave every render of a tiny random renderer the same score (they differ by a fraction of a grey level),
  hence no reward variance within a GRPO group and no gradient in a smoke run; integral ``x`` is returned exactly;
* no image: ``score = int(sha256(text), 16) % 11`` (still deterministic, lets text-only requests such as a start-up
  check get a well-formed reply).

The reply content is the JSON object ``{"score": s, "reason": "..."}`` with ``s`` an integer in 0..10; a prompt
holding a line ``KEYS: k1 | k2 | ...`` (checklist judging, e.g. MMMG) gets a description line and ``key: yes|no`` per
key instead (:func:`answer_keys`); a request with a JSON-schema ``response_format`` (structured output, e.g.
Complex-Edit's) gets an object with the schema's properties in order (:func:`answer_schema`): a property with an enum
of integer strings gets ``str(s)`` and an ``integer`` one ``s`` - except ``instruction_following``, which gets
``10 - x`` dithered with its own draw (an output identical to its input carries out no instruction; its own draw so
that it does not cancel identity preservation in their sum) - and any other string the reason.

Faults
------
Server-wide options of `start_judge_server` (and the CLI):

* ``latency_s`` - every chat request sleeps this long first;
* ``fail_first_attempts=N`` - the first N attempts of each distinct request (same body bytes) get HTTP 429, later
  attempts succeed: exercises the client's retries;
* ``error_rate=p`` - a fraction p of distinct requests, chosen by request hash (so deterministic, and a retry of the
  same request fails again), always get HTTP 500;
* ``timeout_sleep_s`` - how long a ``[judge:timeout]`` request hangs (set it above the client's timeout);
* ``retry_after_s`` - the ``retry-after-ms`` header sent with injected 429/500 replies (None: no header, so the
  client falls back to its own exponential backoff, 0.5 s and up);
* ``api_key`` - if set, the bearer token must equal it (else 401); by default any non-empty token is accepted;
* ``unsupported_params`` - request fields answered with HTTP 400 "Unsupported parameter", as OpenAI's reasoning
  models answer ``max_tokens`` or a non-default ``temperature``.

Markers in the request text (any message) target single samples:

* ``[judge:500]`` - always HTTP 500;  ``[judge:429]`` - always HTTP 429;
* ``[judge:garbage]`` - HTTP 200 with content that is not JSON;
* ``[judge:timeout]`` - sleeps ``timeout_sleep_s`` before answering (the client times out first);
* ``[judge:truncated]`` - HTTP 200 with only the first half of the normal reply (characters) and finish_reason
  ``length``, as when a reply hits ``max_tokens``: a score reply becomes unparseable JSON, a checklist reply loses
  its last keys;
* ``[judge:slow=0.3]`` - 0.3 s of extra latency.

Any marker may carry a condition, ``[judge:500~TEXT]``: it then applies only to requests whose text, markers removed,
contains TEXT (case-sensitive, no ``]``). One sample's text reaches several prompts when a reward asks the judge
several questions per sample; ``[judge:500~TEXT]`` in that text fails only the requests whose prompt contains TEXT,
i.e. exactly one part of the sample's judge scoring.

Counters (`JudgeServerStats`, `handle.stats`) record every chat request (total and per request hash), status codes,
model-list requests and the maximum number of chat requests in flight at once, so tests can check deduplication,
caching and the client's concurrency bound from the server side; `stats.recent` keeps the last 64 request bodies, so
tests can check what a request carried (messages, images, response_format).

    python -m core.rewards.judge_server --port 8765 --latency 0.05      # serves until Ctrl-C, prints the base URL

Modules: scoring (the deterministic scoring rule, checklist and structured-output answers), server (HTTP, faults,
counters, `start_judge_server`, `start_local_judge_if_asked`) and __main__ (the command line). Import from here:
`from core.rewards.judge_server import ...`.
"""

from core.rewards.judge_server.scoring import (
    answer_keys,
    answer_schema,
    criterion_score,
    dithered_score,
    pixel_statistic,
    score_images,
)
from core.rewards.judge_server.server import (
    LOCAL_JUDGE,
    LOCAL_JUDGE_MODEL,
    JudgeServerHandle,
    JudgeServerStats,
    start_judge_server,
    start_local_judge_if_asked,
)

__all__ = [
    "LOCAL_JUDGE",
    "LOCAL_JUDGE_MODEL",
    "JudgeServerHandle",
    "JudgeServerStats",
    "answer_keys",
    "answer_schema",
    "criterion_score",
    "dithered_score",
    "pixel_statistic",
    "score_images",
    "start_judge_server",
    "start_local_judge_if_asked",
]
