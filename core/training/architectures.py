"""Real-size architectures without weights: every model a recipe's real config names, built from its `config.json`.

No download is needed to know how big a run is: core.training.architecture_facts holds the architecture values of
each checkpoint the real configs name (Qwen2.5-VL-3B/7B-Instruct, Qwen3-VL-8B-Instruct, Gemma-3-4B-it, and the
Qwen-Image / Qwen-Image-Edit pipelines: their `QwenImageTransformer2DModel` DiT, `AutoencoderKLQwenImage` VAE and
Qwen2.5-VL-7B text encoder) as plain dicts. From them this module builds the real transformers / diffusers classes:

* on the meta device (`build_model("random:Qwen/Qwen2.5-VL-7B-Instruct")`): exact parameter counts and module shapes,
  no memory, seconds;
* with random weights on a given device (`device="cuda"`): real memory and step time, no download.

Model ids `random:<hub id>` are accepted where core resolves model names: `core.training.models` builds the policy
from these facts (`load_model`) and reads its config and processor from :func:`random_model_dir`, a folder with the
real `config.json` (special-token ids taken from the processor's tokenizer) and a processor borrowed from the matching
`tiny:` checkpoint with the checkpoint's real pixel bounds. Only the weights (and, until the tiny checkpoints carry
the real vocabulary, the tokenizer) are not the checkpoint's.

Parameter counts built from the facts are checked against the published sizes in tests/test_architectures.py
(`PUBLISHED_PARAMS`, the sizes the model cards state).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from core.training.architecture_facts import (
    ARCHITECTURES,
    PUBLISHED_PARAMS,
    architecture,
    has_architecture,
    hub_id,
)
from core.training.model_ids import RANDOM_PREFIX, cache_dir, is_random, resolve_model_path

__all__ = [
    "ARCHITECTURES",
    "PUBLISHED_PARAMS",
    "RANDOM_PREFIX",
    "RANDOM_VERSION",
    "architecture",
    "build_component",
    "build_from_config",
    "build_model",
    "build_pipeline",
    "count_parameters",
    "has_architecture",
    "is_random",
    "parameter_count",
    "random_model_dir",
    "vlm_config",
]

RANDOM_VERSION = 1  # part of random_model_dir's folder name: bump when what it writes changes


# ---------------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------------


def vlm_config(facts: dict[str, Any], token_ids: dict[str, Any] | None = None) -> Any:
    """The transformers config of a VLM entry; `token_ids` replaces the special-token ids (e.g. from a tokenizer)."""
    from transformers import Gemma3Config, Qwen2_5_VLConfig, Qwen3VLConfig

    text = dict(facts["text_config"])
    ids = dict(facts["token_ids"])
    if token_ids:
        text.update({k: v for k, v in token_ids.items() if k in ("bos_token_id", "eos_token_id", "pad_token_id")})
        ids.update({k: v for k, v in token_ids.items() if k in ids})
    common = {"tie_word_embeddings": facts["tie_word_embeddings"], **ids}
    model_type = facts["model_type"]
    if model_type == "qwen2_5_vl":
        return Qwen2_5_VLConfig(text_config=text, vision_config=dict(facts["vision_config"]), **common)
    if model_type == "qwen3_vl":
        return Qwen3VLConfig(text_config=text, vision_config=dict(facts["vision_config"]), **common)
    if model_type == "gemma3":
        return Gemma3Config(
            text_config=text,
            vision_config={"model_type": "siglip_vision_model", **facts["vision_config"]},
            mm_tokens_per_image=facts["mm_tokens_per_image"],
            **common,
        )
    raise ValueError(f"unknown model_type {model_type!r}")


# ---------------------------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------------------------


def _dtype(dtype: Any) -> Any:
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16
    if isinstance(dtype, str):
        return getattr(torch, dtype)
    return dtype


@contextlib.contextmanager
def _default_dtype(dtype: Any):
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _fill_zero_matrices(module: Any) -> Any:
    """Re-draw all-zero weight matrices of a random model (e.g. Gemma-3's mm_input_projection_weight starts at zero):
    left at zero they would cut the image out of the computation. As core.testing.tiny does for the tiny checkpoints."""
    import torch

    with torch.no_grad():
        for param in module.parameters():
            if param.dim() >= 2 and param.is_floating_point() and not param.any():
                param.normal_(0.0, 0.02)
    return module


def build_from_config(config: Any, device: Any = "meta", dtype: Any = None, attn_implementation: str = "sdpa") -> Any:
    """`AutoModelForImageTextToText` of `config` on `device`: meta (no memory) or random weights there."""
    import torch
    from transformers import AutoModelForImageTextToText

    dtype = _dtype(dtype)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    if str(device) != "meta":
        _fill_zero_matrices(model)
    return model


def build_component(facts: dict[str, Any], component: str, device: Any = "meta", dtype: Any = None) -> Any:
    """One component of a pipeline entry: `transformer` (DiT), `vae` or `text_encoder`."""
    import torch

    dtype = _dtype(dtype)
    if component == "text_encoder":
        return build_from_config(vlm_config(facts["components"]["text_encoder"]), device, dtype)
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel

    cls = {"transformer": QwenImageTransformer2DModel, "vae": AutoencoderKLQwenImage}[component]
    with torch.device(device), _default_dtype(dtype):
        module = cls(**facts["components"][component])
    if str(device) != "meta":
        _fill_zero_matrices(module)
    return module.eval()


def build_model(name: str, device: Any = "meta", dtype: Any = None, config: Any = None) -> Any:
    """The real class of `name` (`random:<hub id>` or `<hub id>`) with its real architecture and no download.

    device="meta" (the default): every parameter on the meta device: exact parameter counts, no memory. Any other
    device: random weights allocated and initialised there (real memory and step time). A VLM id returns the
    `*ForConditionalGeneration` model; a pipeline id (Qwen/Qwen-Image, Qwen/Qwen-Image-Edit) a dict of its
    components {"transformer", "vae", "text_encoder"}. `config` overrides the VLM config (e.g. random_model_dir's,
    whose special-token ids match its tokenizer)."""
    facts = architecture(name)
    if facts["kind"] == "pipeline":
        return {c: build_component(facts, c, device, dtype) for c in ("transformer", "vae", "text_encoder")}
    return build_from_config(config if config is not None else vlm_config(facts), device, dtype)


def count_parameters(module: Any) -> int:
    """Parameters of a module (meta or real), each shared tensor once (tied embeddings count once)."""
    seen: set[int] = set()
    total = 0
    for param in module.parameters():  # parameters() already yields a tied tensor once
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
    return total


_COUNT_CACHE: dict[str, int] = {}


def parameter_count(name: str, component: str | None = None) -> int:
    """Meta-device parameter count of `name` (a pipeline: of `component`, or of all its components)."""
    key = f"{hub_id(name)}:{component}"
    if key not in _COUNT_CACHE:
        facts = architecture(name)
        if facts["kind"] == "pipeline":
            parts = [component] if component else ["transformer", "vae", "text_encoder"]
            _COUNT_CACHE[key] = sum(count_parameters(build_component(facts, c)) for c in parts)
        else:
            _COUNT_CACHE[key] = count_parameters(build_model(name))
    return _COUNT_CACHE[key]


# ---------------------------------------------------------------------------------------------------------------------
# random:<id> as a model folder (config + processor, no weights) for code that reads both from a path
# ---------------------------------------------------------------------------------------------------------------------


def _cache_root() -> Path:
    return cache_dir() / "random"


def _tiny_source(facts: dict[str, Any]) -> str:
    return "tiny:" + facts["family"]


def _special_ids(tokenizer: Any, family: str) -> dict[str, Any]:
    tid = tokenizer.convert_tokens_to_ids
    if family == "gemma3":
        return {
            "boi_token_index": tid("<start_of_image>"),
            "eoi_token_index": tid("<end_of_image>"),
            "image_token_index": tid("<image_soft_token>"),
            "bos_token_id": tid("<bos>"),
            "eos_token_id": [tid("<eos>"), tid("<end_of_turn>")],
            "pad_token_id": tid("<pad>"),
        }
    return {
        "image_token_id": tid("<|image_pad|>"),
        "video_token_id": tid("<|video_pad|>"),
        "vision_start_token_id": tid("<|vision_start|>"),
        "vision_end_token_id": tid("<|vision_end|>"),
        "bos_token_id": tid("<|endoftext|>"),
        "eos_token_id": tid("<|im_end|>"),
        "pad_token_id": tid("<|endoftext|>"),
    }


def _real_pixel_bounds(processor: Any, facts: dict[str, Any]) -> None:
    """Give a borrowed tiny processor the checkpoint's own image settings (the tiny ones are a few tokens)."""
    spec = facts["processor"]
    if "max_pixels" in spec:
        for attr in ("image_processor", "video_processor"):
            proc = getattr(processor, attr, None)
            if proc is not None and "longest_edge" in dict(getattr(proc, "size", None) or {}):
                proc.size = {"shortest_edge": spec["min_pixels"], "longest_edge": spec["max_pixels"]}
                if attr == "video_processor":
                    # the tiny video processor caps a whole clip at a few tokens; the real one does not
                    for key in ("cap_pixels_per_frame", "max_video_tokens"):
                        if hasattr(proc, key):
                            setattr(proc, key, None if key == "max_video_tokens" else False)
    else:
        side = spec["image_size"]
        processor.image_processor.size = {"height": side, "width": side}
        processor.image_seq_length = spec["tokens_per_image"]


def random_model_dir(name: str) -> str:
    """A folder for `random:<hub id>` that AutoConfig and AutoProcessor read: the checkpoint's real config.json (its
    special-token ids those of the folder's tokenizer) and the matching tiny checkpoint's processor with the
    checkpoint's real pixel bounds. No weights: `core.training.models.load_model` builds them (`build_model`). Written
    once per id under the cache, atomically (concurrent ranks each may write; the first rename wins)."""
    from transformers import AutoProcessor

    facts = architecture(name)
    if facts["kind"] != "vlm":
        raise ValueError(f"{hub_id(name)} is a diffusers pipeline: build it with build_pipeline, not as a folder")
    from core.testing.tiny import TINY_VERSION  # only here, when a random:<id> folder is made (a test fixture)

    # the borrowed processor comes from a tiny checkpoint: a new tiny generation gets a new folder
    target = _cache_root() / f"{hub_id(name).replace('/', '--')}-v{RANDOM_VERSION}-tiny{TINY_VERSION}"
    if (target / "config.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    processor = AutoProcessor.from_pretrained(resolve_model_path(_tiny_source(facts)))
    _real_pixel_bounds(processor, facts)
    config = vlm_config(facts, _special_ids(processor.tokenizer, facts["family"]))
    config.architectures = [_architecture_class(facts)]
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "RANDOM_WEIGHTS.json").write_text(json.dumps({"architecture_of": hub_id(name)}) + "\n")
        tmp.chmod(0o755)
        try:
            os.replace(tmp, target)
        except OSError:  # another process renamed its copy into place first
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _architecture_class(facts: dict[str, Any]) -> str:
    return {
        "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
        "qwen3_vl": "Qwen3VLForConditionalGeneration",
        "gemma3": "Gemma3ForConditionalGeneration",
    }[facts["model_type"]]


def build_pipeline(name: str, device: Any = "cpu", dtype: Any = None) -> Any:
    """A diffusers Qwen-Image(-Edit) pipeline with the real-size DiT, VAE and text encoder holding random weights on
    `device`, and the scheduler, tokenizer and processor of the matching tiny pipeline (no download)."""
    import diffusers

    facts = architecture(name)
    if facts["kind"] != "pipeline":
        raise ValueError(f"{hub_id(name)} is not a pipeline; use build_model")
    pipeline_cls = getattr(diffusers, facts["pipeline_class"])
    tiny = pipeline_cls.from_pretrained(
        resolve_model_path(facts["tiny"]), transformer=None, vae=None, text_encoder=None
    )
    tokenizer = tiny.tokenizer
    config = vlm_config(facts["components"]["text_encoder"], _special_ids(tokenizer, "qwen2_5_vl"))
    components: dict[str, Any] = {
        "scheduler": tiny.scheduler,
        "tokenizer": tokenizer,
        "transformer": build_component(facts, "transformer", device, dtype),
        "vae": build_component(facts, "vae", device, dtype),
        "text_encoder": build_from_config(config, device, dtype).eval(),
    }
    if getattr(tiny, "processor", None) is not None:
        _real_pixel_bounds(tiny.processor, facts["components"]["text_encoder"])
        components["processor"] = tiny.processor
    return pipeline_cls(**components)
