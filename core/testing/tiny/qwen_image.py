"""Tiny Qwen-Image(-Edit) diffusers pipelines: a tiny DiT and VAE, the real scheduler config, and the
``tiny:qwen2_5_vl`` model, tokenizer and processor as text encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.testing.tiny import resolve_model_path
from core.testing.tiny.common import SEED, TEXT, fill_zero_matrices
from core.testing.tiny.qwen import legacy_merges
from core.training.model_ids import TINY_PREFIX

# The real Qwen-Image scheduler_config.json (exponential time shift, dynamic shifting from the image sequence length).
_QWEN_IMAGE_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}
_VAE_Z_DIM = 4  # real: 16; the DiT's in_channels follow (z_dim * 2 * 2 packed latents)
_VAE = {
    "base_dim": 8,  # real: 96
    "z_dim": _VAE_Z_DIM,
    "dim_mult": [1, 2, 4, 4],  # as the real VAE: 3 downsamplings, so 8x spatial compression
    "num_res_blocks": 1,  # real: 2
    "temperal_downsample": [False, True, True],
    "latents_mean": [0.0] * _VAE_Z_DIM,
    "latents_std": [1.0] * _VAE_Z_DIM,
}
_DIT = {
    "patch_size": 2,
    "in_channels": _VAE_Z_DIM * 4,
    "out_channels": _VAE_Z_DIM,
    "num_layers": 2,  # real: 60
    "attention_head_dim": 16,  # real: 128
    "num_attention_heads": 2,  # real: 24
    "joint_attention_dim": TEXT["hidden_size"],  # the text encoder's hidden size (real: 3584)
    "axes_dims_rope": (4, 6, 6),  # frame/height/width rotary dims; sum to attention_head_dim (real: 16, 56, 56)
}


def build(out: Path, edit: bool) -> None:
    """Qwen-Image-Edit (``edit``) or Qwen-Image pipeline around the ``tiny:qwen2_5_vl`` checkpoint.

    Both pipelines get the same seeded DiT and VAE (they only differ in the pipeline class, and the edit pipeline also
    stores the processor, which feeds the input image to the text encoder). The text encoder is loaded from the cached
    ``tiny:qwen2_5_vl`` (built first if needed, under its own lock), so its weights, tokenizer and processor (with the
    small pixel bounds) are exactly those of that family.
    """
    import diffusers
    import torch
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration, Qwen2VLProcessor

    vlm_path = resolve_model_path(TINY_PREFIX + "qwen2_5_vl")
    text_encoder = Qwen2_5_VLForConditionalGeneration.from_pretrained(vlm_path, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(vlm_path)

    torch.manual_seed(SEED)
    transformer = fill_zero_matrices(QwenImageTransformer2DModel(**_DIT)).eval()
    torch.manual_seed(SEED + 1)
    vae = fill_zero_matrices(AutoencoderKLQwenImage(**_VAE)).eval()
    components: dict[str, Any] = {
        "scheduler": FlowMatchEulerDiscreteScheduler(**_QWEN_IMAGE_SCHEDULER),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": processor.tokenizer,
        "transformer": transformer,
    }
    if edit:
        # The real Qwen-Image-Edit stores a Qwen2VLProcessor (the class the pipeline declares); the image path is the
        # same as Qwen2.5-VL's, so the tiny one wraps the very same tokenizer and image/video processors.
        components["processor"] = Qwen2VLProcessor(
            image_processor=processor.image_processor,
            tokenizer=processor.tokenizer,
            video_processor=processor.video_processor,
            chat_template=processor.chat_template,
        )
    pipeline_cls = diffusers.QwenImageEditPipeline if edit else diffusers.QwenImagePipeline
    pipeline_cls(**components).save_pretrained(out, safe_serialization=True)
    legacy_merges(out)
