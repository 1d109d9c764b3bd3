"""The pipeline's encoding template, seen from the policy: its system prompt, the number of tokens the pipeline drops,
and the GRPO prompts whose chat-template rendering is exactly that template (plus the condition images as the
pipeline's text encoder sees them).

The number of leading tokens the pipeline drops is hard-coded in diffusers (``prompt_template_encode_start_idx``: 64
for the edit template, 34 for text-to-image, valid for the real Qwen2.5-VL tokenizer only); here it is computed from
the tokenizer (:func:`system_token_count`) and checked (:func:`check_drop_count`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions
from PIL import Image

logger = logging.getLogger(__name__)

SYSTEM_TURN = "<|im_start|>system\n"
USER_TURN = "<|im_start|>user\n"
END_TURN = "<|im_end|>\n"
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
# QwenImageEditPipeline.__call__ sizes the condition image to this many pixels (aspect ratio kept, sides rounded to 32).
DEFAULT_CONDITION_AREA = 1024 * 1024


def is_edit_pipeline(pipeline_or_template: Any) -> bool:
    """Whether the encoding template feeds an input image to the text encoder (Qwen-Image-Edit) or not."""
    return IMAGE_PLACEHOLDER in _template(pipeline_or_template)


# ---------------------------------------------------------------------------------------------------------------------
# Template, system prompt and the dropped-token count
# ---------------------------------------------------------------------------------------------------------------------


def _template(pipeline_or_template: Any) -> str:
    template = (
        pipeline_or_template
        if isinstance(pipeline_or_template, str)
        else getattr(pipeline_or_template, "prompt_template_encode", None)
    )
    if not isinstance(template, str) or "{}" not in template:
        raise ValueError(
            f"no encoding template ('prompt_template_encode' with a '{{}}' slot) in {pipeline_or_template!r}"
        )
    if not template.startswith(SYSTEM_TURN) or END_TURN + USER_TURN not in template:
        raise ValueError(f"encoding template is not '<|im_start|>system ... <|im_start|>user ...': {template!r}")
    return template


def _tokenizer(pipeline: Any) -> Any:
    """The tokenizer the pipeline encodes with: the processor's for the edit pipeline, else ``pipeline.tokenizer``."""
    processor = getattr(pipeline, "processor", None)
    tokenizer = getattr(processor, "tokenizer", None) or getattr(pipeline, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"{type(pipeline).__name__} has neither a processor with a tokenizer nor a tokenizer")
    return tokenizer


def template_system_prompt(pipeline_or_template: Any) -> str:
    """The system text of the pipeline's encoding template, so the GRPO prompt can carry the very same system turn."""
    template = _template(pipeline_or_template)
    return template[len(SYSTEM_TURN) : template.index(END_TURN + USER_TURN)]


def system_token_count(pipeline: Any) -> int:
    """Number of leading tokens ``_get_qwen_prompt_embeds`` must drop: the system turn plus the user-turn header.

    Computed with the pipeline's tokenizer from the template text up to and including ``<|im_start|>user\\n`` (what
    stays starts with the user content: the image placeholder for the edit template, the instruction for
    text-to-image). For the real Qwen2.5-VL tokenizer this must be 64 for Qwen-Image-Edit and 34 for Qwen-Image, the
    values diffusers hard-codes in ``prompt_template_encode_start_idx``. ``pipeline`` may be any object with
    ``prompt_template_encode`` and a ``tokenizer`` (or ``processor.tokenizer``).

    The prefix is tokenized on its own and checked to be a prefix of the tokenized template, which holds because the
    split falls right after the ``\\n`` that ends a turn header (special tokens cut BPE merges there).
    """
    template = _template(pipeline)
    tokenizer = _tokenizer(pipeline)
    end = template.index(USER_TURN) + len(USER_TURN)
    prefix = tokenizer(template[:end])["input_ids"]
    full = tokenizer(template.format(""))["input_ids"]
    if list(full[: len(prefix)]) != list(prefix):
        raise ValueError("the template's system turn does not tokenize the same alone and inside the template")
    return len(prefix)


def check_drop_count(pipeline: Any, on_mismatch: Literal["fix", "warn", "raise"] = "raise") -> int:
    """Compare :func:`system_token_count` with the pipeline's hard-coded ``prompt_template_encode_start_idx``.

    A mismatch means the pipeline's own ``encode_prompt`` drops the wrong tokens (a different tokenizer or template
    than diffusers assumed): ``"raise"`` a ValueError, ``"warn"`` and keep it, or ``"fix"``: warn and set the
    attribute to the computed count. Returns the computed count.
    """
    computed = system_token_count(pipeline)
    hard_coded = getattr(pipeline, "prompt_template_encode_start_idx", None)
    if hard_coded != computed:
        message = (
            f"{type(pipeline).__name__}.prompt_template_encode_start_idx is {hard_coded}, but its tokenizer gives "
            f"{computed} tokens for the template's system turn + '<|im_start|>user\\n'"
        )
        if on_mismatch == "raise":
            raise ValueError(message)
        if on_mismatch == "fix":
            logger.warning("%s; using %d (expected for tokenizers other than Qwen2.5-VL's)", message, computed)
            pipeline.prompt_template_encode_start_idx = computed
        else:
            logger.warning(message)
    return computed


# ---------------------------------------------------------------------------------------------------------------------
# GRPO prompts
# ---------------------------------------------------------------------------------------------------------------------


def edit_prompt_messages(instruction: str, system: str) -> list[dict[str, Any]]:
    """Conversational GRPO prompt whose chat-template rendering (``add_generation_prompt=True``) is exactly
    ``QwenImageEditPipeline.prompt_template_encode.format(instruction)`` when ``system`` is
    :func:`template_system_prompt` of it: the completions are then sampled in the context the pipeline encodes."""
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]},
    ]


def t2i_prompt_messages(prompt: str, system: str) -> list[dict[str, Any]]:
    """Text-to-image counterpart of :func:`edit_prompt_messages` (no image part), for ``QwenImagePipeline``."""
    return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]


def pipeline_prompt_messages(pipeline_or_template: Any, instruction: str) -> list[dict[str, Any]]:
    """:func:`edit_prompt_messages` or :func:`t2i_prompt_messages`, whichever the pipeline's template calls for,
    with the template's own system prompt."""
    system = template_system_prompt(pipeline_or_template)
    if is_edit_pipeline(pipeline_or_template):
        return edit_prompt_messages(instruction, system)
    return t2i_prompt_messages(instruction, system)


def condition_images(pipeline: Any, images: Sequence[Image.Image], target_area: int | None = None) -> list[Image.Image]:
    """The input images as ``QwenImageEditPipeline.__call__`` hands a single PIL image to the text encoder: resized
    (the pipeline's VaeImageProcessor, Lanczos) to ``calculate_dimensions(target_area, width / height)``, i.e. about
    ``target_area`` pixels with sides rounded to 32 (``None``: the pipeline's 1024 * 1024).

    Pass these to :func:`completion_prompt_embeds` so the VLM sees what it sees inside the pipeline; :func:`run_edit`
    takes the original images (the pipeline resizes them itself, to the same size for the VAE). The processor then
    applies its own pixel bounds on top (for the real model: up to ~1370 vision tokens at 1024 * 1024).
    """
    area = DEFAULT_CONDITION_AREA if target_area is None else target_area
    resized = []
    for image in images:
        width, height, _ = calculate_dimensions(area, image.size[0] / image.size[1])
        resized.append(pipeline.image_processor.resize(image, height, width))
    return resized
