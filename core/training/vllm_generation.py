"""vLLM generation for this project's policies: what TRL's `VLLMGeneration` (trl 1.15) lacks for them.

TRL hands vLLM the trainer's prompt token ids plus, per prompt, the PIL images, and builds the engine as
`LLM(model=model.name_or_path, ...)`. Three things go wrong for a VLM policy, and are fixed here:

- **Pixel bounds.** vLLM processes the images with the processor of the folder it loaded, not with the trainer's
  (whose `min_pixels`/`max_pixels` the config sets), so an image outside one set of bounds becomes a different number
  of image tokens in vLLM than in the trainer's ids. `fit_images_to_processor` resizes every prompt image to exactly
  the size the trainer's processor would resize it to (Qwen's `smart_resize`; a multiple of patch x merge within the
  bounds), before either side sees it; any Qwen processor then leaves it as it is. In colocate mode the engine also
  gets the trainer's bounds as `mm_processor_kwargs`.
- **A policy folder vLLM can load.** The policy of image_edit / mmmg is a diffusion pipeline's text encoder; its
  `text_encoder/` folder holds weights and config but no tokenizer, processor or chat template. `write_policy_folder`
  assembles one (weights linked, not copied; the trainer's processing class saved beside them), and the engine is
  built from it. Weights are then synced after every update exactly as TRL does for any policy.
- **Placeholder tokens.** The trainer keeps `<|image_pad|>` / `<|video_pad|>` out of sampling with `suppress_tokens`
  (transformers); vLLM's `SamplingParams` has no such field, so the same ids get `logit_bias` -100 (vLLM's floor),
  which leaves them a probability below e^-70 next to any real token.

Video prompts and `vllm_mode: server` with a text-encoder policy stay refused by
`core.training.backends.check_backend`: TRL's
vLLM path passes images only, and a server is started before training from a folder the user chooses.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from PIL import Image
from trl.generation import vllm_generation as trl_vllm

from core.data.vision import _is_dynamic_qwen, _qwen_pixel_bounds, _unwrap, model_image_size

logger = logging.getLogger(__name__)

PLACEHOLDER_LOGIT_BIAS = -100.0  # vLLM clamps logit_bias to [-100, 100]
POLICY_FOLDER = "vllm_policy"  # under output_dir: the folder a text-encoder policy is served from
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def placeholder_token_ids(model_config: Any) -> list[int]:
    """The image/video placeholder ids of a VLM config (none for a text-only model)."""
    ids = [getattr(model_config, key, None) for key in ("image_token_id", "video_token_id")]
    return [int(i) for i in ids if i is not None]


def suppress_placeholders(generation_kwargs: dict[str, Any] | None, model_config: Any) -> dict[str, Any]:
    """`generation_kwargs` for vLLM's `SamplingParams` with every placeholder id biased to -100 (kept where the user
    set a bias of their own)."""
    kwargs = dict(generation_kwargs or {})
    bias = {int(k): float(v) for k, v in (kwargs.get("logit_bias") or {}).items()}
    for token_id in placeholder_token_ids(model_config):
        bias.setdefault(token_id, PLACEHOLDER_LOGIT_BIAS)
    if bias:
        kwargs["logit_bias"] = bias
    return kwargs


def fit_image_to_processor(processor: Any, image: Image.Image) -> Image.Image:
    """`image` resized to the size `processor` would resize it to (bicubic, as Qwen's processors); unchanged for a
    processor whose token count does not depend on the image size (Gemma-3's fixed 896x896) or when it already fits."""
    if not _is_dynamic_qwen(_unwrap(processor)):
        return image
    size = model_image_size(processor, *image.size)
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def fit_images_to_processor(processor: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dataset rows (TRL's `image` / `images` columns) with every image brought to the processor's size; the rows
    themselves are not modified (new dicts are returned)."""
    fitted = []
    for row in rows:
        row = dict(row)
        if row.get("image") is not None:
            row["image"] = fit_image_to_processor(processor, row["image"])
        if row.get("images") is not None:
            row["images"] = [fit_image_to_processor(processor, image) for image in row["images"]]
        fitted.append(row)
    return fitted


def engine_processor_kwargs(processor: Any) -> dict[str, int]:
    """The trainer's pixel bounds as vLLM's `mm_processor_kwargs` (empty for fixed-size processors)."""
    image_processor = _unwrap(processor)
    if image_processor is None or not _is_dynamic_qwen(image_processor):
        return {}
    min_pixels, max_pixels = _qwen_pixel_bounds(image_processor)
    return {"min_pixels": min_pixels, "max_pixels": max_pixels}


def needs_policy_folder(model: Any) -> bool:
    """True when the policy was loaded from a local folder vLLM cannot serve as it is: no tokenizer in it (the
    `text_encoder/` folder of a diffusion pipeline)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    source = Path(str(base.config._name_or_path))
    return source.is_dir() and not (source / "tokenizer_config.json").exists()


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES))


def write_policy_folder(model: Any, processing_class: Any, out_dir: str | Path) -> Path:
    """A model folder vLLM can serve the policy from: `model`'s config and generation config, its weight files
    symlinked from the folder it was loaded from, and `processing_class` (tokenizer, processor with the trainer's
    pixel bounds, chat template) saved beside them.

    Safe to call from every process at once (each rank of a colocated run builds its engine from it): the folder is
    built under a private name and renamed into place; a complete folder already there (another rank's, or a previous
    start's) is replaced only when its weight links point elsewhere. Raises FileNotFoundError when the model was not
    loaded from a local folder with weight files (vLLM would have nothing to load).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    source = Path(base.config._name_or_path)
    if not source.is_dir() or not _weight_files(source):
        raise FileNotFoundError(
            f"cannot serve the policy with vLLM: it was not loaded from a local folder with weight files ({source})"
        )
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for weights in _weight_files(source):
        os.symlink(weights.resolve(), staging / weights.name)
    base.config.save_pretrained(staging)
    generation_config = getattr(base, "generation_config", None)
    if generation_config is not None:
        generation_config.save_pretrained(staging)
    _save_processing_class(processing_class, base.config, staging)
    if out.exists() and not _links_to(out, source):
        shutil.rmtree(out, ignore_errors=True)  # a previous start's folder for other weights
    try:
        staging.rename(out)
    except OSError:  # another process put an identical folder in place first
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("vLLM serves the policy from %s (weights linked from %s)", out, source)
    return out


def _links_to(folder: Path, source: Path) -> bool:
    """`folder` is complete and its weight links point at `source`'s weight files."""
    wanted = {w.name: w.resolve() for w in _weight_files(source)}
    links = {p.name: p.resolve() for p in _weight_files(folder)}
    return links == wanted and (folder / "config.json").exists() and (folder / "tokenizer_config.json").exists()


def _save_processing_class(processing_class: Any, config: Any, out: Path) -> None:
    """Save the trainer's processing class; a bare tokenizer (the text encoder of Qwen-Image) is completed into the
    architecture's own processor with default image/video processors, since vLLM builds a VLM's multimodal processor
    from the folder even for text-only prompts."""
    import transformers
    from transformers import ProcessorMixin
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    if isinstance(processing_class, ProcessorMixin) or getattr(config, "vision_config", None) is None:
        processing_class.save_pretrained(out)
        return
    parts: dict[str, Any] = {"tokenizer": processing_class}
    for kind in ("image", "video"):
        part = _default_part(kind, config.model_type)
        if part is not None:
            parts[f"{kind}_processor"] = part
    processor_cls = getattr(transformers, PROCESSOR_MAPPING_NAMES[config.model_type])
    processor_cls(**parts, chat_template=processing_class.chat_template).save_pretrained(out)


def _default_part(kind: str, model_type: str) -> Any:
    """A default-constructed image or video processor of `model_type` (None when the architecture has none)."""
    import transformers
    from transformers.models.auto import image_processing_auto, video_processing_auto

    mapping = (
        image_processing_auto.IMAGE_PROCESSOR_MAPPING_NAMES
        if kind == "image"
        else video_processing_auto.VIDEO_PROCESSOR_MAPPING_NAMES
    )
    names = mapping.get(model_type)
    if not names:
        return None
    if isinstance(names, str):
        candidates = [names]
    else:  # transformers 5: {"torchvision": ..., "pil": ...}; older: a tuple (slow, fast)
        candidates = [n for n in (names.values() if isinstance(names, dict) else names) if n]
    for name in candidates:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls()
    return None


@contextmanager
def _engine_overrides(module: Any, overrides: dict[str, Any], record: Callable[[dict[str, Any]], None]) -> Iterator:
    """Within the block, `module.LLM(**kwargs)` is built with `overrides` applied (TRL builds the engine as
    `LLM(model=model.name_or_path, ...)` with no hook for the folder or the processor kwargs)."""
    engine = module.LLM

    def build(**kwargs: Any) -> Any:
        kwargs.update(overrides)
        record(kwargs)
        return engine(**kwargs)

    module.LLM = build
    try:
        yield
    finally:
        module.LLM = engine


class PolicyVLLMGeneration(trl_vllm.VLLMGeneration):
    """TRL's `VLLMGeneration`, building its colocated engine from `served_from` (when the policy's own folder cannot
    be served) and with the trainer's `mm_processor_kwargs`. Server mode is TRL's unchanged: the server was started
    from a folder of the user's choosing."""

    def __init__(
        self, *args: Any, served_from: str | Path | None = None, mm_processor_kwargs: dict | None = None, **kw: Any
    ):
        self.served_from = None if served_from is None else str(served_from)
        self.mm_processor_kwargs = dict(mm_processor_kwargs or {})
        self.engine_kwargs: dict[str, Any] = {}  # what the engine was built with (colocate), for logs and tests
        super().__init__(*args, **kw)

    def _init_vllm(self) -> None:
        if self.mode != "colocate":
            return super()._init_vllm()
        overrides: dict[str, Any] = {}
        if self.served_from is not None:
            overrides["model"] = self.served_from
        if self.mm_processor_kwargs:
            overrides["mm_processor_kwargs"] = self.mm_processor_kwargs
        with _engine_overrides(trl_vllm, overrides, self.engine_kwargs.update):
            super()._init_vllm()
