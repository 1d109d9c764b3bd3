"""The OpenAI chat messages of a judge request: optional system message, then images (PNG data URLs) and text; and
`BatchImages`, which hashes and encodes each distinct image of a batch once however many requests carry it."""

from __future__ import annotations

import asyncio
import base64
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from PIL import Image

from core.rewards.judge.arguments import JudgeRequest
from core.rewards.judge.cache import image_digest


def png_data_url(image: Image.Image) -> str:
    """`image` as a base64 PNG data URL, the image part every OpenAI-compatible endpoint accepts."""
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode or "a" in image.mode else "RGB")
    buffer = io.BytesIO()
    # Level 1: several times faster than the default 6 for a few percent more bytes; the batch encodes many images.
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def build_messages(request: JudgeRequest, image_urls: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """OpenAI chat messages for `request`: optional system message, then images and the text.

    `image_urls`: the request's images already encoded (one per image, in order), e.g. by `BatchImages`; None
    encodes them here.
    """
    urls = [png_data_url(image) for image in request.images] if image_urls is None else list(image_urls)
    if len(urls) != len(request.images):
        raise ValueError(f"{len(urls)} image URLs for a request with {len(request.images)} images")
    detail = {"detail": request.image_detail} if request.image_detail else {}
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": url, **detail}} for url in urls]
    if request.prompt or not request.images:
        content.append({"type": "text", "text": request.prompt})
    if request.text_first:
        content = content[len(urls) :] + content[: len(urls)]
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append({"role": "user", "content": content})
    return messages


class BatchImages:
    """The images of one `JudgeClient.score` call, each hashed once and PNG-encoded once.

    Why: one picture often travels in several requests of a batch - Complex-Edit sends the edited image in its
    alignment and its quality request, a protocol averaging n draws repeats every image n times - and hashing and
    PNG-encoding it per request was most of the client's CPU time per batch. Hashing runs in the caller's thread
    (`digest`, memoised by object: the requests keep their images alive for the call); encoding runs in a worker
    thread, started by the first request that needs the image and awaited by the others (`data_urls`, on the event
    loop, so no lock is needed). A data URL is dropped when the last request registered for it has finished
    (`release`), so a batch holds roughly the images of its requests in flight, as it did when each request
    encoded its own.
    """

    def __init__(self) -> None:
        self._digests: dict[int, str] = {}
        self._pending: Counter[str] = Counter()
        self._urls: dict[str, asyncio.Future[str]] = {}

    def digest(self, image: Image.Image) -> str:
        """`image_digest(image)`, computed once per image object of the batch."""
        found = self._digests.get(id(image))
        if found is None:
            found = self._digests[id(image)] = image_digest(image)
        return found

    def register(self, digests: Iterable[str]) -> None:
        """A request that will be sent carries these images: keep their data URLs until it calls `release`."""
        self._pending.update(digests)

    async def data_urls(self, digests: Sequence[str], images: Sequence[Image.Image]) -> list[str]:
        """The PNG data URLs of `images` (whose digests are `digests`): each encoded by the first request that needs
        it, shared with the others."""
        urls = []
        for digest, image in zip(digests, images, strict=True):
            future = self._urls.get(digest)
            if future is None:
                future = self._urls[digest] = asyncio.ensure_future(asyncio.to_thread(png_data_url, image))
            urls.append(await future)
        return urls

    def release(self, digests: Iterable[str]) -> None:
        """A registered request is done with these images: drop the data URLs no pending request needs."""
        for digest in digests:
            self._pending[digest] -= 1
            if self._pending[digest] <= 0:
                del self._pending[digest]
                self._urls.pop(digest, None)
