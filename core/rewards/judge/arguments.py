"""What a recipe configures (`JudgeArguments`, inherited by its ScriptArguments) and what it asks (`JudgeRequest`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from core.ranges import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE


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
