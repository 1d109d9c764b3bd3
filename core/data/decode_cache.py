"""Decode each image or clip once while GRPO reads its row G times.

TRL's sampler yields every prompt `num_generations` times in a row, and `datasets` decodes a lazy image column on
every read, so each image was decoded G times per step (each clip G times per generation batch). `DecodeCache` keeps
the most recently decoded values, bounded by a byte budget, and hands the same object to every repeat. That also lets
`core.training.vision_reuse` recognise the repeats by identity before hashing pixels.

The shared object is treated as immutable: nothing in the training path edits a decoded image in place (PIL's
resizing and conversion return new images). Each DataLoader worker process has its own cache.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from PIL import Image

__all__ = ["DEFAULT_BUDGET_BYTES", "DecodeCache", "file_key", "bytes_key", "decode_cache"]

T = TypeVar("T")

# Enough for a generation batch's unique inputs on one rank (e.g. 16 prompts x 1 Mpx RGB = 48 MB, or 16 clips of
# 16 frames at 200 kpx = 150 MB), small next to a training process.
DEFAULT_BUDGET_BYTES = 256 * 1024 * 1024


def _size_of(value: Any) -> int:
    if isinstance(value, Image.Image):
        return value.width * value.height * len(value.getbands())
    if isinstance(value, (list, tuple)):
        return sum(_size_of(item) for item in value)
    return 0


def file_key(path: str) -> tuple:
    """A local file as of now: path, size and modification time (an edited file decodes again). A path that cannot
    be read keys on its name alone; its decoder then raises its own error, and failures are never cached."""
    try:
        stat = os.stat(path)
    except OSError:
        return ("file", os.fspath(path), None, None)
    return ("file", os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def bytes_key(data: bytes) -> tuple:
    """Encoded bytes by content (hashing compressed bytes costs a fraction of decoding them)."""
    return ("bytes", len(data), hashlib.blake2b(data, digest_size=16).digest())


class DecodeCache:
    """Least-recently-used decoded values under a byte budget (values larger than the budget are not kept)."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self.decodes = 0  # values actually decoded (tests, benchmark)
        self._values: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, decode: Callable[[], T]) -> T:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key][0]
        value = decode()
        size = _size_of(value)
        with self._lock:
            self.decodes += 1
            if key in self._values:  # another thread decoded it meanwhile: keep one copy, counted once
                return self._values[key][0]
            if size <= self.budget_bytes:
                self._values[key] = (value, size)
                self._bytes += size
                while self._bytes > self.budget_bytes:
                    _, (_, dropped) = self._values.popitem(last=False)
                    self._bytes -= dropped
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._bytes = 0


decode_cache = DecodeCache()  # the process's one cache, used by NormalizedImage and DecodeVideoFrames
