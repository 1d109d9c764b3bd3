"""The OpenAI chat messages of a judge request: optional system message, then images (PNG data URLs) and text."""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from core.rewards.judge.arguments import JudgeRequest


def _png_data_url(image: Image.Image) -> str:
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.mode or "a" in image.mode else "RGB")
    buffer = io.BytesIO()
    # Level 1: several times faster than the default 6 for a few percent more bytes; the batch encodes many images.
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def build_messages(request: JudgeRequest) -> list[dict[str, Any]]:
    """OpenAI chat messages for `request`: optional system message, then images (PNG data URLs) and the text."""
    detail = {"detail": request.image_detail} if request.image_detail else {}
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": _png_data_url(image), **detail}} for image in request.images
    ]
    if request.prompt or not request.images:
        content.append({"type": "text", "text": request.prompt})
    if request.text_first:
        content = content[len(request.images) :] + content[: len(request.images)]
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append({"role": "user", "content": content})
    return messages
