"""The local judge's scoring rule: deterministic scores from the images' pixels (see "Scoring rule" in the
core.rewards.judge_server docstring), and the checklist / structured-output answers built from them."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import numpy as np
from PIL import Image


def dithered_score(value: float, images: list[Image.Image], salt: str = "") -> int:
    """`floor(value + u)` clipped to 0..10, `u` in [0, 1) from a SHA-256 of `salt` and the images' RGB pixels: the
    same images always get the same integer, and the integer's mean over many images is `value` (see the package
    docstring). A different `salt` draws an independent `u`."""
    digest = hashlib.sha256(salt.encode() + b"".join(img.convert("RGB").tobytes() for img in images)).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return min(10, max(0, math.floor(value + u)))


def pixel_statistic(images: list[Image.Image]) -> tuple[float, str]:
    """The exact 0..10 statistic of one or more images (see the package docstring) and its reason line."""
    if len(images) >= 2:
        first, last = images[0].convert("RGB"), images[-1].convert("RGB")
        if last.size != first.size:
            last = last.resize(first.size, Image.Resampling.BILINEAR)
        diff = float(np.abs(np.asarray(first, dtype=np.float32) - np.asarray(last, dtype=np.float32)).mean())
        return 10 * (1 - diff / 255), f"mean absolute difference between first and last image: {diff:.2f}/255"
    std = float(np.asarray(images[0].convert("L"), dtype=np.float32).std())
    return 10 * min(std / 127.5, 1.0), f"grayscale contrast (std): {std:.2f}"


def score_images(images: list[Image.Image], text: str = "") -> tuple[int, str]:
    """The server's deterministic score (0..10) and reason for `images`; see the package docstring for the rule."""
    if images:
        value, reason = pixel_statistic(images)
        return dithered_score(value, images), reason
    score = int(hashlib.sha256(text.encode()).hexdigest(), 16) % 11
    return score, "no image: score from the text hash"


def criterion_score(name: str, images: list[Image.Image], text: str = "") -> int:
    """A structured-output property's score: `score_images`, except `instruction_following`, which is 10 minus the
    statistic dithered with its own draw (so it does not cancel identity preservation in a sum of criteria)."""
    if name != "instruction_following" or not images:
        score = score_images(images, text)[0]
        return 10 - score if name == "instruction_following" else score
    return dithered_score(10 - pixel_statistic(images)[0], images, salt=name)


KEYS_RE = re.compile(r"^KEYS: (.+)$", re.MULTILINE)


def answer_keys(images: list[Image.Image], text: str) -> str:
    """Checklist judging (e.g. MMMG's yes/no per knowledge-graph key): a prompt with a line `KEYS: k1 | k2 | ...`
    gets a one-line description and then `key: yes|no` per key, deterministically from the images and the key
    (yes when a hash of both is below the image's 0..10 score, so higher-scoring images get more yes)."""
    keys = [k.strip() for k in KEYS_RE.search(text).group(1).split(" | ") if k.strip()]
    score, reason = score_images(images, "")
    digest = hashlib.sha256(b"".join(img.convert("RGB").tobytes() for img in images)).hexdigest()
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
    reason = score_images(images, text)[1]
    answer: dict[str, Any] = {}
    for name, spec in properties.items():
        value = criterion_score(name, images, text)
        spec = spec if isinstance(spec, dict) else {}
        if spec.get("type") == "integer":
            answer[name] = value
        elif isinstance(spec.get("enum"), list) and str(value) in spec["enum"]:
            answer[name] = str(value)
        else:
            answer[name] = reason
    return json.dumps(answer)
