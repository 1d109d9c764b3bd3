"""Strict reply parsing: a judge reply that is only half-understood must not become a reward."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

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
