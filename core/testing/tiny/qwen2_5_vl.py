"""Tiny Qwen2.5-VL: the real tokenizer and released chat template, tiny image/video processors, 2+2 layers."""

from __future__ import annotations

from pathlib import Path

from core.testing.tiny.common import MROPE_SECTION, TEXT, TEXT_KV_HEADS
from core.testing.tiny.qwen import QWEN_SPECIAL, QWEN_VOCAB_SIZE, legacy_merges, qwen_tokenizer, save_qwen_model

# Qwen2-VL / Qwen2.5-VL (also the processor template of Qwen-Image-Edit): a default system turn when the conversation
# does not open with one; `add_vision_id=True` numbers the images/videos ("Picture 1: ").
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build(out: Path) -> None:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = qwen_tokenizer(QWEN2_5_VL_CHAT_TEMPLATE, qwen3=False)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    vision_cfg = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,  # 56 px = 2x2 merged tokens per attention window
        "fullatt_block_indexes": [1],
        "out_hidden_size": TEXT["hidden_size"],
        "tokens_per_second": 2,
    }
    text_cfg = {
        **TEXT,
        "num_key_value_heads": TEXT_KV_HEADS,
        "vocab_size": QWEN_VOCAB_SIZE,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": MROPE_SECTION},
    }
    save_qwen_model(Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, text_cfg, vision_cfg, ids, out)

    pixels = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 16}
    image_processor = Qwen2VLImageProcessor(size=dict(pixels), patch_size=14, temporal_patch_size=2, merge_size=2)
    video_processor = Qwen2VLVideoProcessor(
        size=dict(pixels),
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        min_frames=2,
        max_frames=8,
        fps=2.0,
        cap_pixels_per_frame=True,  # bounds the whole clip to `max_video_tokens` (and silences a v5 warning)
        max_video_tokens=64,
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    legacy_merges(out)
