"""Request keys (everything that determines the judge's reply, hashed: deduplication within a batch and the cache
key) and the on-disk reply cache several ranks can share."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from core.rewards.judge.arguments import JudgeRequest

logger = logging.getLogger(__name__)

_KEY_VERSION = 1  # bump when the request key's content changes, so old cache files are not misread


def image_digest(image: Image.Image) -> str:
    """Hash of the decoded pixels (mode, size, bytes): the same picture hashes the same whatever file it came from."""
    digest = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def request_key(
    request: JudgeRequest,
    model: str,
    temperature: float | None,
    max_tokens: int,
    image_digests: Sequence[str] | None = None,
) -> str:
    """The deduplication and cache key: everything that determines the judge's reply, hashed.

    `image_digests`: the request's `image_digest`s, when the caller already has them (hashing pixels is the costly
    part of a key); None computes them.
    """
    if image_digests is None:
        image_digests = [image_digest(image) for image in request.images]
    payload = {
        "v": _KEY_VERSION,
        "model": model,
        "system": request.system,
        "prompt": request.prompt,
        "images": list(image_digests),
        "temperature": temperature,
        "max_tokens": max_tokens,
    }
    # Only when set, so the keys (and cache files) of requests without them stay as they were.
    for name in ("response_format", "image_detail", "draw", "text_first"):
        if getattr(request, name):
            payload[name] = getattr(request, name)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class DiskCache:
    """Raw judge replies by request key, one JSON file each, written atomically (tmp file + os.replace).

    One file per key rather than one database: several training processes can write the same folder concurrently
    with no locking, and a half-written file can never be read (the rename is atomic).
    """

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = None if root is None else Path(root).expanduser()
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        if self.root is None:
            return None
        try:
            record = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        reply = record.get("reply") if isinstance(record, dict) else None
        return reply if isinstance(reply, str) else None

    def put(self, key: str, reply: str, model: str) -> None:
        if self.root is None:
            return
        path = self._path(key)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"reply": reply, "model": model, "created": time.time()}, handle)
            os.replace(tmp, path)
        except OSError as err:  # a full or read-only disk loses the cache entry, never the score
            logger.warning("judge cache: cannot write %s: %s", path, err)
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
