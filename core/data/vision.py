"""How big an image is *as the model sees it*, i.e. after the image processor's resize.

Grounding answers from Qwen2.5-VL are absolute pixels of the RESIZED image, so rewards must know that size to map a
prediction back to the original image. Computing it here, from the processor's own settings and transformers' own
resize rule, keeps it identical to what the processor does during training.

transformers 5.x notes (checked against 5.23): Qwen2-VL, Qwen2.5-VL and Qwen3-VL all use `Qwen2VLImageProcessor`
(or its `...Pil` twin); `min_pixels`/`max_pixels` given to the constructor are folded into
`size = SizeDict(shortest_edge=min_pixels, longest_edge=max_pixels)` and are no longer attributes. Older configs and
processors may still carry `min_pixels`/`max_pixels` attributes or `size["min_pixels"]`; all spellings are read.
"""

from __future__ import annotations

from typing import Any

__all__ = ["max_image_pixels", "model_image_size"]

# Qwen2VLImageProcessor class defaults (transformers 5.23), used only when a processor carries no bounds at all.
_QWEN_DEFAULT_MIN_PIXELS = 56 * 56
_QWEN_DEFAULT_MAX_PIXELS = 28 * 28 * 1280
# Fixed-size processors (Gemma-3: 896x896) stretch every image to (h, w); keeping up to twice each side before that
# resize leaves it at least 2x2 source pixels per output pixel to average, so nothing the model sees is lost.
FIXED_SIZE_OVERSAMPLING = 2


def _get(container: Any, key: str) -> Any:
    """Read `key` from a dict or a transformers `SizeDict` (which supports attribute access)."""
    if container is None:
        return None
    if isinstance(container, dict):
        return container.get(key)
    return getattr(container, key, None)


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _is_dynamic_qwen(image_processor: Any) -> bool:
    return type(image_processor).__name__.startswith("Qwen2VLImageProcessor")


def _unwrap(image_processor: Any) -> Any:
    """The image processor itself; a full `ProcessorMixin` is accepted too, and so is a wrapper that names what it
    wraps in `__wrapped__` (`core.training.vision_reuse.ProcessorReuse`)."""
    found = getattr(image_processor, "image_processor", None) or image_processor
    return getattr(found, "__wrapped__", found)


def _qwen_pixel_bounds(processor: Any) -> tuple[int, int]:
    """(min_pixels, max_pixels) of a Qwen2VLImageProcessor, whichever spelling (see the module docstring) holds them."""
    size = getattr(processor, "size", None)
    min_pixels = _first(_get(size, "shortest_edge"), _get(size, "min_pixels"), getattr(processor, "min_pixels", None))
    max_pixels = _first(_get(size, "longest_edge"), _get(size, "max_pixels"), getattr(processor, "max_pixels", None))
    return int(_first(min_pixels, _QWEN_DEFAULT_MIN_PIXELS)), int(_first(max_pixels, _QWEN_DEFAULT_MAX_PIXELS))


def max_image_pixels(image_processor: Any) -> int | None:
    """The most pixels an image needs at load time for this processor; None when it cannot be told.

    Qwen2-VL / Qwen2.5-VL / Qwen3-VL: the processor's `max_pixels` (`size["longest_edge"]`): `smart_resize` shrinks
    anything larger to that budget anyway, so decoding more only costs time and memory. Fixed-size processors
    (Gemma-3, `size={"height": h, "width": w}`): (2h) * (2w), see `FIXED_SIZE_OVERSAMPLING`. A processor that does
    not resize, or one this module does not know: None (`core.data.images.DEFAULT_MAX_PIXELS` is the caller's fallback).
    """
    processor = _unwrap(image_processor)
    if processor is None or getattr(processor, "do_resize", True) is False:
        return None
    if _is_dynamic_qwen(processor):
        return _qwen_pixel_bounds(processor)[1]
    size = getattr(processor, "size", None)
    fixed_height, fixed_width = _get(size, "height"), _get(size, "width")
    if fixed_height and fixed_width:
        return int(fixed_height) * int(fixed_width) * FIXED_SIZE_OVERSAMPLING**2
    return None


def model_image_size(image_processor: Any, width: int, height: int) -> tuple[int, int]:
    """(width, height) of a `width` x `height` image after `image_processor` has resized it.

    Qwen2-VL / Qwen2.5-VL / Qwen3-VL: `smart_resize` with factor = patch_size * merge_size (28 for Qwen2/2.5-VL,
    32 for Qwen3-VL) between the processor's min/max pixel bounds. Fixed-size processors (Gemma-3, SigLIP-style:
    `size={"height": h, "width": w}`) stretch every image to that size. A full `ProcessorMixin` is accepted too (its
    `image_processor` is used). Anything else raises TypeError: guessing would silently corrupt coordinate rewards.
    """
    processor = _unwrap(image_processor)
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if getattr(processor, "do_resize", True) is False:
        return width, height
    size = getattr(processor, "size", None)

    if _is_dynamic_qwen(processor):
        # Imported here: this module pulls in torch/torchvision (seconds), which data-only tools should not pay for.
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        factor = int(processor.patch_size) * int(processor.merge_size)
        min_pixels, max_pixels = _qwen_pixel_bounds(processor)
        resized_height, resized_width = smart_resize(
            height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels
        )
        return int(resized_width), int(resized_height)

    fixed_height, fixed_width = _get(size, "height"), _get(size, "width")
    if fixed_height and fixed_width and not getattr(processor, "do_center_crop", False):
        return int(fixed_width), int(fixed_height)

    raise TypeError(
        f"model_image_size does not know how {type(processor).__name__} resizes images (size={size!r}); supported: "
        "Qwen2VLImageProcessor (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) and fixed-size processors with "
        "size={'height': h, 'width': w} (Gemma-3)"
    )
