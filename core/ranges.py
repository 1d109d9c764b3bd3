"""Allowed values of numeric config fields: `metadata={"range": Range(...)}` (or an inclusive `(low, high)` tuple) on a
dataclass field, checked by `core.training.config.parse_config`. A module of its own, without TRL, so that light modules
(core.rewards.judge, core.diffusion.pipeline) can declare ranges on their argument dataclasses."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric field: [low, high] with either end open or unbounded (None)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        return f"{left}{low}, {high}{right}"

    def describe(self) -> str:
        """What a message says the value must be: `> 0`, `>= 1`, `<= 1`, or `in [1, 8]`."""
        if self.high is None and self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None and self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {self}"


POSITIVE = Range(0, None, low_open=True)  # > 0: time limits, scales, rates
AT_LEAST_ONE = Range(1, None)  # counts and sizes
NON_NEGATIVE = Range(0, None)  # weights, seeds, counts where 0 means "off"
FRACTION = Range(0, 1)
