"""The local judge's scoring rule: deterministic scores from the images' pixels (see "Scoring rule" in the
core.rewards.judge_server docstring), and the checklist / structured-output answers built from them.

`RequestImages` holds one request's images and derives each quantity of the rule from them once (a structured
answer asks for several criteria of the same images: recomputing the statistic and the pixel hash per criterion was
most of the server's CPU per request); the module functions are the rule for callers with bare images.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


class RequestImages:
    """The images (and text) of one request, with the rule's statistic, pixel hash and scores computed once each."""

    def __init__(self, images: list[Image.Image], text: str = "") -> None:
        self.images, self.text = images, text

    @cached_property
    def pixels(self) -> bytes:
        """The images' RGB pixels, concatenated: what every draw and checklist answer is keyed by."""
        return b"".join(_rgb(image).tobytes() for image in self.images)

    @cached_property
    def statistic(self) -> tuple[float, str]:
        """The exact 0..10 statistic of one or more images (see the package docstring) and its reason line."""
        if len(self.images) >= 2:
            first, last = _rgb(self.images[0]), _rgb(self.images[-1])
            if last.size != first.size:
                last = last.resize(first.size, Image.Resampling.BILINEAR)
            diff = float(np.abs(np.asarray(first, dtype=np.float32) - np.asarray(last, dtype=np.float32)).mean())
            return 10 * (1 - diff / 255), f"mean absolute difference between first and last image: {diff:.2f}/255"
        std = float(np.asarray(self.images[0].convert("L"), dtype=np.float32).std())
        return 10 * min(std / 127.5, 1.0), f"grayscale contrast (std): {std:.2f}"

    def dithered(self, value: float, salt: str = "") -> int:
        """`floor(value + u)` clipped to 0..10, `u` in [0, 1) from a SHA-256 of `salt` and the pixels."""
        digest = hashlib.sha256(salt.encode() + self.pixels).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        return min(10, max(0, math.floor(value + u)))

    @cached_property
    def score(self) -> tuple[int, str]:
        """The server's deterministic score (0..10) and reason; see the package docstring for the rule."""
        if self.images:
            value, reason = self.statistic
            return self.dithered(value), reason
        return int(hashlib.sha256(self.text.encode()).hexdigest(), 16) % 11, "no image: score from the text hash"

    def criterion(self, name: str) -> int:
        """A structured-output property's score: `score`, except `instruction_following`, which is 10 minus the
        statistic dithered with its own draw (so it does not cancel identity preservation in a sum of criteria)."""
        if name != "instruction_following":
            return self.score[0]
        if not self.images:
            return 10 - self.score[0]
        return self.dithered(10 - self.statistic[0], salt=name)


def dithered_score(value: float, images: list[Image.Image], salt: str = "") -> int:
    """`floor(value + u)` clipped to 0..10, `u` in [0, 1) from a SHA-256 of `salt` and the images' RGB pixels: the
    same images always get the same integer, and the integer's mean over many images is `value` (see the package
    docstring). A different `salt` draws an independent `u`."""
    return RequestImages(images).dithered(value, salt)


def pixel_statistic(images: list[Image.Image]) -> tuple[float, str]:
    """The exact 0..10 statistic of one or more images (see the package docstring) and its reason line."""
    return RequestImages(images).statistic


def score_images(images: list[Image.Image], text: str = "") -> tuple[int, str]:
    """The server's deterministic score (0..10) and reason for `images`; see the package docstring for the rule."""
    return RequestImages(images, text).score


def criterion_score(name: str, images: list[Image.Image], text: str = "") -> int:
    """A structured-output property's score (`RequestImages.criterion`)."""
    return RequestImages(images, text).criterion(name)


KEYS_RE = re.compile(r"^KEYS: (.+)$", re.MULTILINE)


def answer_keys(images: list[Image.Image], text: str) -> str:
    """Checklist judging (e.g. MMMG's yes/no per knowledge-graph key): a prompt with a line `KEYS: k1 | k2 | ...`
    gets a one-line description and then `key: yes|no` per key, deterministically from the images and the key
    (yes when a hash of both is below the image's 0..10 score, so higher-scoring images get more yes)."""
    keys = [k.strip() for k in KEYS_RE.search(text).group(1).split(" | ") if k.strip()]
    scored = RequestImages(images)
    score, reason = scored.score
    digest = hashlib.sha256(scored.pixels).hexdigest()
    lines = [f"Description: {reason}."]
    for key in keys:
        roll = int(hashlib.sha256((digest + key).encode()).hexdigest(), 16) % 10
        lines.append(f"{key}: {'yes' if roll < score else 'no'}")
    return "\n".join(lines)


def answer_schema(response_format: Any, images: list[Image.Image], text: str) -> str | None:
    """Structured output for a JSON-schema `response_format` (OpenAI's `{"type": "json_schema", "json_schema":
    {"schema": ...}}`), deterministically from the images; None when the request asks for no such schema."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return None
    scored = RequestImages(images, text)
    answer: dict[str, Any] = {}
    for name, spec in properties.items():
        value = scored.criterion(name)
        spec = spec if isinstance(spec, dict) else {}
        if spec.get("type") == "integer":
            answer[name] = value
        elif isinstance(spec.get("enum"), list) and str(value) in spec["enum"]:
            answer[name] = str(value)
        else:
            answer[name] = scored.score[1]
    return json.dumps(answer)
