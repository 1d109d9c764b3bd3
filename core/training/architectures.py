"""Real-size architectures without weights: every model a recipe's real config names, as its `config.json` facts.

No download is needed to know how big a run is: this module holds the architecture values of each checkpoint the real
configs name (Qwen2.5-VL-3B/7B-Instruct, Qwen3-VL-8B-Instruct, Gemma-3-4B-it, and the Qwen-Image / Qwen-Image-Edit
pipelines: their `QwenImageTransformer2DModel` DiT, `AutoencoderKLQwenImage` VAE and Qwen2.5-VL-7B text encoder) as
plain dicts, each with a comment naming its source (the model's Hugging Face `config.json`). From them it builds the
real transformers / diffusers classes:

* on the meta device (`build_model("random:Qwen/Qwen2.5-VL-7B-Instruct")`): exact parameter counts and module shapes,
  no memory, seconds;
* with random weights on a given device (`device="cuda"`): real memory and step time, no download.

Model ids `random:<hub id>` are accepted where core resolves model names: `core.training.models` builds the policy
from these
facts (`load_model`) and reads its config and processor from :func:`random_model_dir`, a folder with the real
`config.json` (special-token ids taken from the processor's tokenizer) and a processor borrowed from the matching
`tiny:` checkpoint with the checkpoint's real pixel bounds. Only the weights (and, until the tiny checkpoints carry
the real vocabulary, the tokenizer) are not the checkpoint's.

Values were written from the published config files (no network here); parameter counts built from them are checked
against the published sizes in tests/test_architectures.py (`PUBLISHED_PARAMS`, the sizes the model cards state).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

RANDOM_PREFIX = "random:"
RANDOM_VERSION = 1  # part of random_model_dir's folder name: bump when what it writes changes

# ---------------------------------------------------------------------------------------------------------------------
# Architecture facts (config.json values; transformers 5 spells RoPE settings as `rope_parameters`)
# ---------------------------------------------------------------------------------------------------------------------

# Source: https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/blob/main/config.json (and preprocessor_config.json)
QWEN2_5_VL_7B: dict[str, Any] = {
    "kind": "vlm",
    "model_type": "qwen2_5_vl",
    "family": "qwen2_5_vl",
    "text_config": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "hidden_act": "silu",
        "in_channels": 3,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
    },
    "tie_word_embeddings": False,
    "token_ids": {
        "image_token_id": 151655,
        "video_token_id": 151656,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
    },
    # preprocessor_config.json: Qwen2VLImageProcessor, min_pixels 3136, max_pixels 12845056
    "processor": {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2, "temporal_patch": 2},
}

# Source: https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct/blob/main/config.json
QWEN2_5_VL_3B: dict[str, Any] = copy.deepcopy(QWEN2_5_VL_7B)
QWEN2_5_VL_3B["text_config"].update(
    vocab_size=151936,
    hidden_size=2048,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
)
QWEN2_5_VL_3B["vision_config"]["out_hidden_size"] = 2048
QWEN2_5_VL_3B["tie_word_embeddings"] = True

# Source: https://huggingface.co/Qwen/Qwen3-VL-8B-Instruct/blob/main/config.json (and preprocessor_config.json)
QWEN3_VL_8B: dict[str, Any] = {
    "kind": "vlm",
    "model_type": "qwen3_vl",
    "family": "qwen3_vl",
    "text_config": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 262144,
        "rms_norm_eps": 1e-06,
        "attention_bias": False,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision_config": {
        "depth": 27,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_heads": 16,
        "hidden_act": "gelu_pytorch_tanh",
        "in_channels": 3,
        "out_hidden_size": 4096,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [8, 16, 24],
    },
    "tie_word_embeddings": False,
    "token_ids": {
        "image_token_id": 151655,
        "video_token_id": 151656,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
    },
    # preprocessor_config.json: size {shortest_edge: 65536, longest_edge: 16777216}, patch 16, merge 2
    "processor": {"min_pixels": 65536, "max_pixels": 16777216, "patch_size": 16, "merge_size": 2, "temporal_patch": 2},
}

# Source: https://huggingface.co/google/gemma-3-4b-it/blob/main/config.json (unsloth/gemma-3-4b-it is the same
# checkpoint); fields the file leaves out are Gemma3TextConfig's defaults of that release (8 heads, 4 KV heads,
# head_dim 256, vocab 262208, every 6th layer global).
GEMMA3_4B: dict[str, Any] = {
    "kind": "vlm",
    "model_type": "gemma3",
    "family": "gemma3",
    "text_config": {
        "vocab_size": 262208,
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "num_hidden_layers": 34,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-06,
        "sliding_window": 1024,
        "layer_types": ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(34)],
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        },
        "bos_token_id": 2,
        "eos_token_id": [1, 106],
        "pad_token_id": 0,
    },
    "vision_config": {
        "hidden_size": 1152,
        "image_size": 896,
        "intermediate_size": 4304,
        "num_attention_heads": 16,
        "num_hidden_layers": 27,
        "patch_size": 14,
        "vision_use_head": False,
    },
    "tie_word_embeddings": True,
    "mm_tokens_per_image": 256,
    "token_ids": {"boi_token_index": 255999, "eoi_token_index": 256000, "image_token_index": 262144},
    # preprocessor_config.json: Gemma3ImageProcessor, 896 x 896, no pan-and-scan by default
    "processor": {"image_size": 896, "tokens_per_image": 256},
}

# Source: https://huggingface.co/Qwen/Qwen-Image/blob/main/transformer/config.json (Qwen-Image-Edit's
# transformer/config.json has the same values)
QWEN_IMAGE_DIT: dict[str, Any] = {
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 60,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 3584,
    "guidance_embeds": False,
    "axes_dims_rope": [16, 56, 56],
}

# Source: https://huggingface.co/Qwen/Qwen-Image/blob/main/vae/config.json (the Wan-2.1 VAE layout; same in
# Qwen-Image-Edit)
QWEN_IMAGE_VAE: dict[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": [
        -0.7571,
        -0.7089,
        -0.9113,
        0.1075,
        -0.1745,
        0.9653,
        -0.1517,
        1.5508,
        0.4134,
        -0.0715,
        0.5517,
        -0.3632,
        -0.1922,
        -0.9497,
        0.2503,
        -0.2921,
    ],  # fmt: skip
    "latents_std": [
        2.8184,
        1.4541,
        2.3275,
        2.6558,
        1.2196,
        1.7708,
        2.6052,
        2.0743,
        3.2687,
        2.1526,
        2.8652,
        1.5579,
        1.6382,
        1.1253,
        2.8251,
        1.9160,
    ],  # fmt: skip
}


def _pipeline(edit: bool) -> dict[str, Any]:
    # Source: https://huggingface.co/Qwen/Qwen-Image(-Edit)/blob/main/model_index.json; text_encoder/config.json is
    # Qwen2.5-VL-7B-Instruct's config; the edit pipeline's processor is a Qwen2VLProcessor with the default bounds.
    return {
        "kind": "pipeline",
        "pipeline_class": "QwenImageEditPipeline" if edit else "QwenImagePipeline",
        "tiny": "tiny:qwen_image_edit" if edit else "tiny:qwen_image",
        "components": {"transformer": QWEN_IMAGE_DIT, "vae": QWEN_IMAGE_VAE, "text_encoder": QWEN2_5_VL_7B},
        # VAE: 8x spatial compression; DiT patch 2: one image token per 16 x 16 pixels; default render 1024 x 1024
        "vae_scale_factor": 8,
        "default_area": 1024 * 1024,
    }


ARCHITECTURES: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-VL-7B-Instruct": QWEN2_5_VL_7B,
    "Qwen/Qwen2.5-VL-3B-Instruct": QWEN2_5_VL_3B,
    "Qwen/Qwen3-VL-8B-Instruct": QWEN3_VL_8B,
    "google/gemma-3-4b-it": GEMMA3_4B,
    "unsloth/gemma-3-4b-it": GEMMA3_4B,
    "Qwen/Qwen-Image": _pipeline(edit=False),
    "Qwen/Qwen-Image-Edit": _pipeline(edit=True),
}

# Sizes as the model cards / hub pages state them (rounded there); tests check the meta-device counts against these.
PUBLISHED_PARAMS: dict[str, float] = {
    "Qwen/Qwen2.5-VL-7B-Instruct": 8.29e9,
    "Qwen/Qwen2.5-VL-3B-Instruct": 3.75e9,
    "Qwen/Qwen3-VL-8B-Instruct": 8.77e9,
    "google/gemma-3-4b-it": 4.3e9,
    "Qwen/Qwen-Image:transformer": 20.4e9,  # "a 20B MMDiT"; the transformer folder's safetensors hold ~20.43 B
    "Qwen/Qwen-Image:vae": 127e6,  # the Wan-2.1 VAE: 127 M
}

# ---------------------------------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------------------------------


def is_random(name: str | None) -> bool:
    """True for `random:<hub id>` names: the architecture of that checkpoint with random weights."""
    return isinstance(name, str) and name.startswith(RANDOM_PREFIX)


def _hub_id(name: str) -> str:
    return name[len(RANDOM_PREFIX) :] if is_random(name) else name


def architecture(name: str) -> dict[str, Any]:
    """The facts of `name` (a hub id or `random:<hub id>`); KeyError naming the known ids otherwise."""
    hub_id = _hub_id(name)
    if hub_id not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise KeyError(f"no architecture facts for {hub_id!r}; known: {known}")
    return ARCHITECTURES[hub_id]


def has_architecture(name: str | None) -> bool:
    return isinstance(name, str) and _hub_id(name) in ARCHITECTURES


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
    key = f"{_hub_id(name)}:{component}"
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
    env = os.environ.get("VLM_GRPO_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "vlm-grpo") / "random"


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
    once
    per id under the cache, atomically (concurrent ranks each may write; the first rename wins)."""
    from transformers import AutoProcessor

    from core.testing.tiny import resolve_model_path

    facts = architecture(name)
    if facts["kind"] != "vlm":
        raise ValueError(f"{_hub_id(name)} is a diffusers pipeline: build it with build_pipeline, not as a folder")
    from core.testing.tiny import TINY_VERSION

    # the borrowed processor comes from a tiny checkpoint: a new tiny generation gets a new folder
    target = _cache_root() / f"{_hub_id(name).replace('/', '--')}-v{RANDOM_VERSION}-tiny{TINY_VERSION}"
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
        (tmp / "RANDOM_WEIGHTS.json").write_text(json.dumps({"architecture_of": _hub_id(name)}) + "\n")
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

    from core.testing.tiny import resolve_model_path

    facts = architecture(name)
    if facts["kind"] != "pipeline":
        raise ValueError(f"{_hub_id(name)} is not a pipeline; use build_model")
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
