"""One way to turn any image file into what a model sees: 8-bit RGB, upright, opaque, within a pixel budget.

Every recipe loads images through here (`normalize_image`, `open_image`, or a dataset column typed `NormalizedImage`),
so training rows, evaluation rows and reward references are all the same picture. What a plain
`image.convert("RGB")` (and so `datasets.Image(mode="RGB")`) gets wrong, and what is done instead:

* Transparency: `convert("RGB")` drops the alpha channel, so a transparent background shows whatever colour the
  transparent pixels happen to hold (usually black), and a palette image's transparent index shows its palette
  colour. Here RGBA / LA / PA / RGBa / La, "P" and "L"/"RGB" with a `transparency` entry (PNG tRNS) are
  composited onto WHITE (`Image.alpha_composite`, so partial alpha blends): white is the page / matplotlib figure
  colour that transparent charts and scans are drawn to be seen on.
* 16-bit and float: `convert("RGB")` clips "I;16" / "I" values to 0..255, so a 16-bit greyscale PNG (values
  0..65535) collapses to a handful of grey levels. Here the full range is mapped linearly onto 0..255:
  "I;16*" (and "I" whose values lie in 0..65535, a 16-bit container) by v / 257 (65535 / 257 = 255, the
  standard 16 -> 8 bit rescale, e.g. libpng's `png_set_scale_16`); "F" in [0, 1] by v * 255, "F" already in
  [0, 255] as is; anything else ("I" or "F" outside those ranges) by min-max stretch to 0..255. NaN/inf are 0.
* EXIF orientation (phone photos) is applied (`ImageOps.exif_transpose`), so width/height and coordinates are those
  of the upright picture.
* CMYK, "1", "L" and the rest: Pillow's `convert("RGB")`.
* Size: an image above the budget (`max_pixels` total and/or `max_side` on the long side) is downscaled ONCE, at
  load time, aspect ratio kept (`fit_size`), with Lanczos (`reducing_gap` lets Pillow box-reduce huge images first,
  which is much faster and visually the same); JPEGs are decoded at a reduced DCT scale first (`Image.draft`) when
  the target is at least 2x smaller. Images are never upscaled. The budget is the processor's
  (`core.data.vision.max_image_pixels`), else `DEFAULT_MAX_PIXELS`, so a 10000x10000 scan costs what the model can use
  of
  it, not 100 megapixels per step. Greyscale ("1", "L") images are downscaled before they become RGB (the same
  pixels, a quarter of the memory: Pillow holds RGB in 4 bytes per pixel).
* Very large files: Pillow's decompression-bomb guard (a warning above ~89 megapixels, an error above ~179) is
  replaced, for files opened here (`open_lazy`, `open_image`), by one bound, `MAX_DECODE_PIXELS` (1 gigapixel):
  a 15000x13000 scan loads (and is downscaled at once); a file claiming more is refused with an error naming it.
"""

from __future__ import annotations

import io
import math
import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import datasets
import numpy as np
from datasets.features.features import register_feature
from PIL import ExifTags, Image, ImageFile, ImageOps

from core.data.decode_cache import bytes_key, decode_cache, file_key

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_DECODE_PIXELS",
    "ImageTooLargeError",
    "NormalizedImage",
    "fit_size",
    "normalize_image",
    "normalize_opened",
    "open_image",
    "open_lazy",
    "oriented_size",
]

# Fallback budget when no processor tells one: the largest default of any processor these recipes use (Qwen3-VL's
# image processor, size["longest_edge"] = 16 777 216 = 4096^2). Anything above it is never seen whole by a model.
DEFAULT_MAX_PIXELS = 4096 * 4096

# The largest image (width * height, as the file's header claims) that is decoded at all. Pillow's own guard
# (`Image.MAX_IMAGE_PIXELS`: warn above ~89 MP, refuse above ~179 MP) exists for servers decoding untrusted uploads;
# here the images are the user's own data, each read once and downscaled at once to the model's budget, so a 195 MP
# scan or map is legitimate. A bound is still needed: a decoded image costs up to 4 bytes per pixel in Pillow (RGB,
# RGBA), 4 GB at 1 gigapixel, plus the downscale, per data-loading thread; and a PNG of a few kilobytes can claim
# 100000 x 100000 pixels. Above 1 gigapixel the file is a mistake or a bomb: downscale it before training.
MAX_DECODE_PIXELS = 1 << 30

# Pillow's guard is one module global checked inside `Image.open`; it is lifted only around that call, under a lock,
# so concurrent loads here (thread pools in core.data.records) restore it correctly.
_PILLOW_GUARD_LOCK = threading.Lock()


class ImageTooLargeError(ValueError):
    """An image file whose header claims more than `MAX_DECODE_PIXELS` pixels."""


# EXIF orientations 5..8 rotate by 90/270 degrees: the upright image's width and height are the file's swapped.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_WHITE = (255, 255, 255)


def fit_size(width: int, height: int, max_pixels: int | None = None, max_side: int | None = None) -> tuple[int, int]:
    """(width, height) of a `width` x `height` image after `normalize_image`'s downscale (unchanged if within budget).

    The scale is the largest s <= 1 with (s w)(s h) <= max_pixels and s * max(w, h) <= max_side; sides are then
    rounded down (never above the budget), and are at least 1. Exposed so that datasets can record the size the
    model will get without decoding the pixels.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    scale = 1.0
    if max_pixels is not None:
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
        scale = min(scale, math.sqrt(max_pixels / (width * height)))
    if max_side is not None:
        if max_side < 1:
            raise ValueError(f"max_side must be >= 1, got {max_side}")
        scale = min(scale, max_side / max(width, height))
    if scale >= 1.0:
        return width, height
    # A tiny epsilon keeps exact fits exact (e.g. 1024 * 0.5 = 512, not 511 from 0.49999...).
    return max(1, math.floor(width * scale + 1e-9)), max(1, math.floor(height * scale + 1e-9))


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of `image` once its EXIF orientation is applied, read from the header (no pixel decode)."""
    width, height = image.size
    if image.getexif().get(ExifTags.Base.Orientation) in _TRANSPOSING_ORIENTATIONS:
        return height, width
    return width, height


def _to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """uint8 grey levels of an "I;16*" / "I" / "F" array, full range mapped linearly (see the module docstring)."""
    data = values.astype(np.float64)
    finite = np.isfinite(data)
    data = np.where(finite, data, 0.0)
    low, high = (float(data[finite].min()), float(data[finite].max())) if finite.any() else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        scaled = data / 257.0
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = data * 255.0
    elif mode == "F" and low >= 0 and high <= 255:
        scaled = data
    elif high > low:
        scaled = (data - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(data)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _flatten_onto_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB with transparency composited onto white (module docstring); `image` is not modified."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":  # I;16, I;16B, I;16L, I;16N, I, F
        values = np.asarray(image)
        grey = Image.fromarray(_to_8bit(values, mode), mode="L")
        key = image.info.get("transparency")
        if isinstance(key, int) and not isinstance(key, bool):  # PNG tRNS on a 16-bit grey image: one grey value
            alpha = Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8), mode="L")
            return _flatten_onto_white(Image.merge("LA", (grey, alpha)))
        return grey.convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        return _flatten_onto_white(image)
    if mode == "RGB":
        return image.copy()
    return image.convert("RGB")


def _normalize(image: Image.Image, target: tuple[int, int] | None) -> Image.Image:
    """Orientation, colour, then (if `target` is smaller than the upright image) one Lanczos downscale to `target`."""
    upright = ImageOps.exif_transpose(image) if image.getexif().get(ExifTags.Base.Orientation) is not None else image
    width, height = upright.size
    shrink = target is not None and target != (width, height) and target[0] <= width and target[1] <= height
    if shrink and upright.mode in ("1", "L") and "transparency" not in upright.info:
        # Grey: downscale before widening to RGB; identical pixels (three equal channels), a quarter of the memory.
        return upright.convert("L").resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0).convert("RGB")
    rgb = _to_rgb(upright)
    if shrink:
        rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return rgb


def normalize_image(image: Image.Image, max_pixels: int | None = None, max_side: int | None = None) -> Image.Image:
    """`image` as every model here should see it: upright, 8-bit RGB, transparency on white, within the budget.

    See the module docstring for each step. `max_pixels` bounds width * height, `max_side` the long side; None: no
    bound. The result is a new image (the input is left as it is) of size `fit_size(*oriented_size(image), ...)`.
    """
    target = fit_size(*oriented_size(image), max_pixels=max_pixels, max_side=max_side)
    return _normalize(image, target)


def _describe(source: Any) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes of image data>"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return str(getattr(source, "name", None) or "<image file object>")


def open_lazy(source: str | os.PathLike[str] | bytes | BinaryIO) -> ImageFile.ImageFile:
    """`PIL.Image.open` (header read, pixels not decoded) of a path, raw bytes or a binary file object, with the
    `MAX_DECODE_PIXELS` bound instead of Pillow's decompression-bomb guard (see the constant for why).

    Raises `ImageTooLargeError` naming the file, its size and the bound when the header claims more pixels. Use it
    as a context manager like `Image.open`.
    """
    name = _describe(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    with _PILLOW_GUARD_LOCK:
        guard = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            image = Image.open(source)
        finally:
            Image.MAX_IMAGE_PIXELS = guard
    width, height = image.size
    if width * height > MAX_DECODE_PIXELS:
        image.close()
        raise ImageTooLargeError(
            f"{name}: {width}x{height} image ({width * height / 1e6:.0f} megapixels) is above the bound of "
            f"{MAX_DECODE_PIXELS} pixels that are decoded (core.data.images.MAX_DECODE_PIXELS, 1 gigapixel); "
            "downscale it before training"
        )
    return image


def normalize_opened(image: Image.Image, max_pixels: int | None = None, max_side: int | None = None) -> Image.Image:
    """`normalize_image` of a just-opened file (`open_lazy`), decoding it: a JPEG far above the budget is decoded
    at a reduced DCT scale first (`Image.draft`, at least the target size, so the final Lanczos step still sets the
    exact size), which makes a 100-megapixel photo cost milliseconds instead of seconds. An image already loaded is
    simply normalised."""
    upright = oriented_size(image)
    target = fit_size(*upright, max_pixels=max_pixels, max_side=max_side)
    if image.format == "JPEG" and target[0] * 2 <= upright[0] and target[1] * 2 <= upright[1]:
        transposed = upright != image.size
        image.draft(None, (target[1], target[0]) if transposed else target)
    image.load()
    return _normalize(image, target)


def open_image(
    source: str | os.PathLike[str] | bytes | BinaryIO, max_pixels: int | None = None, max_side: int | None = None
) -> Image.Image:
    """Open a file path, raw bytes or a binary file object and return `normalize_image` of it, fully loaded.

    Same result size as `normalize_image`; opened by `open_lazy` (files up to `MAX_DECODE_PIXELS`, else
    `ImageTooLargeError`) and decoded by `normalize_opened` (JPEG draft mode far above the budget).
    """
    with open_lazy(source) as image:
        return normalize_opened(image, max_pixels, max_side)


@dataclass(repr=False)
class NormalizedImage(datasets.Image):
    """A `datasets.Image` column that decodes through `open_image`: lazy like `datasets.Image`, normalised like here.

    The Arrow table still holds `{"path", "bytes"}` (nothing is decoded when a dataset is built); each row access
    opens the file and returns `open_image(..., max_pixels, max_side)`. Registered with `datasets`, so the feature
    survives `select`, `map`, `save_to_disk`/`load_from_disk` and pickling to DataLoader workers. Paths that are not
    local files (hub URLs) are fetched by `datasets.Image` first and normalised after.
    """

    max_pixels: int | None = None
    max_side: int | None = None
    _type: str = field(default="NormalizedImage", init=False, repr=False)

    def __repr__(self) -> str:
        return f"NormalizedImage(max_pixels={self.max_pixels}, max_side={self.max_side}, decode={self.decode})"

    def decode_example(self, value: Any, token_per_repo_id: dict[str, Any] | None = None) -> Image.Image:
        if isinstance(value, Image.Image):
            return normalize_image(value, self.max_pixels, self.max_side)
        if isinstance(value, str):
            value = {"path": value, "bytes": None}
        path, data = value.get("path"), value.get("bytes")
        bounds = (self.max_pixels, self.max_side)
        if data is not None:  # GRPO reads each row G times in a row: decoded once (core.data.decode_cache)
            return decode_cache.get((*bytes_key(data), *bounds), lambda: open_image(data, *bounds))
        if path is not None and os.path.isfile(path):
            return decode_cache.get((*file_key(path), *bounds), lambda: open_image(path, *bounds))
        fetched = datasets.Image(decode=True).decode_example(value, token_per_repo_id)
        return normalize_image(fetched, self.max_pixels, self.max_side)


with warnings.catch_warnings():  # datasets flags register_feature as experimental; it is how custom features work
    warnings.simplefilter("ignore", UserWarning)
    register_feature(NormalizedImage, "NormalizedImage")
