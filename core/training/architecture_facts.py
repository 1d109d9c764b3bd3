"""The architecture facts of every checkpoint a recipe's real config names: its `config.json` values as plain dicts.

Qwen2.5-VL-3B/7B-Instruct, Qwen3-VL-8B-Instruct, Gemma-3-4B-it, and the Qwen-Image / Qwen-Image-Edit pipelines (their
`QwenImageTransformer2DModel` DiT, `AutoencoderKLQwenImage` VAE and Qwen2.5-VL-7B text encoder), each with a comment
naming its source (the model's Hugging Face `config.json`). Data only: core.training.architectures builds the real
transformers / diffusers classes from them. Values were written from the published config files (no network here);
the parameter counts built from them are checked against the published sizes (`PUBLISHED_PARAMS`) in
tests/test_architectures.py.
"""

from __future__ import annotations

import copy
from typing import Any

from core.training.model_ids import RANDOM_PREFIX, is_random

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


def hub_id(name: str) -> str:
    """`name` without its `random:` prefix."""
    return name[len(RANDOM_PREFIX) :] if is_random(name) else name


def architecture(name: str) -> dict[str, Any]:
    """The facts of `name` (a hub id or `random:<hub id>`); KeyError naming the known ids otherwise."""
    key = hub_id(name)
    if key not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise KeyError(f"no architecture facts for {key!r}; known: {known}")
    return ARCHITECTURES[key]


def has_architecture(name: str | None) -> bool:
    return isinstance(name, str) and hub_id(name) in ARCHITECTURES
