"""Load a supported VLM and its processor the same way in every recipe.

Families: Qwen2.5-VL, Qwen3-VL and Gemma-3 (vision). `tiny:<family>` ids resolve to generated offline checkpoints
(core.training.model_ids, which imports the generator, a test fixture, only then); `random:<hub id>` ids to the real
architecture with random weights (core.training.architectures: no download).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from accelerate import PartialState
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin
from trl.trainer.utils import get_quantization_config

from core.training.architectures import build_model, random_model_dir
from core.training.config import VLMModelConfig
from core.training.logits_to_keep import ignore_logits_to_keep_if_needed
from core.training.lora import expose_vision_input_embeddings
from core.training.model_ids import is_random, resolve_model_path

logger = logging.getLogger(__name__)

SUPPORTED_FAMILIES = ("qwen2_5_vl", "qwen3_vl", "gemma3")
# Qwen-family processors resize dynamically between pixel bounds; Gemma-3 resizes to a fixed square.
DYNAMIC_RESOLUTION_FAMILIES = ("qwen2_5_vl", "qwen3_vl")


def model_path(name_or_path: str) -> str:
    """Where a model's files are: a tiny checkpoint, a random:<id> folder (config + processor), or the name as is."""
    return random_model_dir(name_or_path) if is_random(name_or_path) else resolve_model_path(name_or_path)


def model_family(name_or_path: str) -> str:
    """The `model_type` of a checkpoint, checked against the families the recipes support."""
    config = AutoConfig.from_pretrained(model_path(name_or_path))
    family = config.model_type
    if family not in SUPPORTED_FAMILIES:
        raise ValueError(f"{name_or_path} is a {family!r} model; supported families: {', '.join(SUPPORTED_FAMILIES)}")
    return family


def torch_dtype(name: str | None) -> torch.dtype | str:
    if name in (None, "auto"):
        return "auto"
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):  # torch.<name> may also be a module or function, e.g. "nn", "ones"
        raise ValueError(f"dtype {name!r} is not a torch dtype (use auto, bfloat16, float16 or float32)")
    return dtype


def set_pixel_bounds(processor: ProcessorMixin, min_pixels: int | None, max_pixels: int | None) -> None:
    """Apply min/max pixels to the image (and video) processor; transformers 5 keeps them in `size`."""
    if min_pixels is None and max_pixels is None:
        return
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels})")
    for attr in ("image_processor", "video_processor"):
        proc = getattr(processor, attr, None)
        size = dict(getattr(proc, "size", None) or {})
        if proc is None or "longest_edge" not in size:
            if attr == "image_processor":
                raise ValueError(
                    f"{type(proc).__name__} has a fixed input size; min_pixels/max_pixels only apply to "
                    f"the Qwen families ({', '.join(DYNAMIC_RESOLUTION_FAMILIES)})."
                )
            continue
        if min_pixels is not None:
            size["shortest_edge"] = min_pixels
        if max_pixels is not None:
            size["longest_edge"] = max_pixels
        proc.size = size


def load_processor(model_args: VLMModelConfig, padding_side: str = "left") -> ProcessorMixin:
    """Processor with the configured pixel bounds; left padding because GRPO generates from batched prompts."""
    path = model_path(model_args.model_name_or_path)
    processor = AutoProcessor.from_pretrained(path, revision=model_args.model_revision, padding_side=padding_side)
    set_pixel_bounds(processor, model_args.min_pixels, model_args.max_pixels)
    return processor


def model_init_kwargs(model_args: VLMModelConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "revision": model_args.model_revision,
        "dtype": torch_dtype(model_args.dtype),
        "attn_implementation": model_args.attn_implementation or "sdpa",
    }
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "load_in_4bit/load_in_8bit quantise with bitsandbytes, which needs a CUDA GPU; none is visible. "
                "Set --load_in_4bit false --load_in_8bit false on this machine."
            )
        kwargs["quantization_config"] = quantization_config
        # bitsandbytes quantises while loading onto a device: each process loads its own copy onto its own GPU.
        kwargs["device_map"] = {"": PartialState().local_process_index}
    return kwargs


def load_model(model_args: VLMModelConfig) -> PreTrainedModel:
    """The policy model, on CPU until the trainer places it (DeepSpeed and DDP need device_map=None)."""
    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is required (a hub id, a local path, tiny:<family> or random:<hub id>)")
    family = model_family(model_args.model_name_or_path)
    path = model_path(model_args.model_name_or_path)
    if is_random(model_args.model_name_or_path):
        # The real architecture with random weights (no download), built on CPU like a loaded checkpoint; the folder's
        # config carries special-token ids that match its processor.
        kwargs = model_init_kwargs(model_args)
        if "quantization_config" in kwargs:
            raise ValueError("random:<id> models are built unquantised: set load_in_4bit/load_in_8bit false")
        dtype = kwargs["dtype"] if kwargs["dtype"] != "auto" else torch.bfloat16
        model = build_model(
            model_args.model_name_or_path, device="cpu", dtype=dtype, config=AutoConfig.from_pretrained(path)
        )
    else:
        model = AutoModelForImageTextToText.from_pretrained(path, **model_init_kwargs(model_args))
    logger.info("loaded %s (%s) from %s", type(model).__name__, family, path)
    if model_args.train_vision:
        # Qwen3-VL's vision tower names no input embedding, so under reentrant checkpointing its LoRA would get no
        # gradient (see expose_vision_input_embeddings); done at load so that TRL's own enable_input_require_grads()
        # call, and transformers', cover it.
        expose_vision_input_embeddings(model)
    return ignore_logits_to_keep_if_needed(model)


def load_model_and_processor(model_args: VLMModelConfig) -> tuple[PreTrainedModel, ProcessorMixin, str]:
    return load_model(model_args), load_processor(model_args), model_family(model_args.model_name_or_path)
