"""Loading a supported VLM and its processor (`core.training.models`) with the real tiny checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    Gemma3ForConditionalGeneration,
    Gemma3Processor,
    LlamaConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
)

from core.data.vision import model_image_size
from core.testing.tiny import resolve_model_path
from core.training.config import VLMModelConfig
from core.training.models import (
    load_model,
    load_model_and_processor,
    load_processor,
    model_family,
    set_pixel_bounds,
    torch_dtype,
)

FAMILIES = ("qwen2_5_vl", "qwen3_vl", "gemma3")
QWEN_FAMILIES = ("qwen2_5_vl", "qwen3_vl")
MODEL_CLASSES = {
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "qwen3_vl": Qwen3VLForConditionalGeneration,
    "gemma3": Gemma3ForConditionalGeneration,
}
PROCESSOR_CLASSES = {"qwen2_5_vl": Qwen2_5_VLProcessor, "qwen3_vl": Qwen3VLProcessor, "gemma3": Gemma3Processor}


def make_args(family: str, **kwargs) -> VLMModelConfig:
    return VLMModelConfig(model_name_or_path=f"tiny:{family}", **kwargs)


def chat_prompt(processor, question: str = "What color is the box?") -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def image_token_count(processor, input_ids: torch.Tensor) -> int:
    image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    return int((input_ids == image_token_id).sum())


@pytest.mark.parametrize("family", FAMILIES)
def test_load_model_and_processor(family: str) -> None:
    model, processor, loaded_family = load_model_and_processor(make_args(family))
    assert loaded_family == family
    assert isinstance(model, MODEL_CLASSES[family])
    assert model.config.model_type == family
    assert isinstance(processor, PROCESSOR_CLASSES[family])
    assert processor.tokenizer.padding_side == "left"
    assert model.config._attn_implementation == "sdpa"
    assert model.config.text_config._attn_implementation == "sdpa"
    assert next(model.parameters()).device.type == "cpu"

    # Left padding in practice: the shorter prompt of a batch gets the pad tokens in front.
    short, long = chat_prompt(processor, "Hi?"), chat_prompt(processor, "Which of the shapes is the largest one?")
    image = Image.new("RGB", (64, 64), "blue")
    batch = processor(text=[short, long], images=[[image], [image]], padding=True, return_tensors="pt")
    pad = processor.tokenizer.pad_token_id
    assert batch["input_ids"][0, 0] == pad and batch["attention_mask"][0, 0] == 0
    assert batch["input_ids"][0, -1] != pad and batch["attention_mask"][0, -1] == 1
    assert (batch["attention_mask"][1] == 1).all()


def test_load_processor_padding_side_can_be_right() -> None:
    assert load_processor(make_args("qwen2_5_vl"), padding_side="right").tokenizer.padding_side == "right"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("bfloat16", torch.bfloat16), ("float32", torch.float32), ("auto", None)],
)
def test_dtype(family: str, dtype: str, expected: torch.dtype | None) -> None:
    if expected is None:  # "auto": whatever the checkpoint was saved in
        saved = json.loads((Path(resolve_model_path(f"tiny:{family}")) / "config.json").read_text())["dtype"]
        expected = getattr(torch, saved)
    model = load_model(make_args(family, dtype=dtype))
    assert {p.dtype for p in model.parameters()} == {expected}


@pytest.mark.parametrize("family", FAMILIES)
def test_attn_implementation_eager_when_asked(family: str) -> None:
    model = load_model(make_args(family, attn_implementation="eager"))
    assert model.config._attn_implementation == "eager"
    assert model.config.text_config._attn_implementation == "eager"
    assert model.config.vision_config._attn_implementation == "eager"


def test_torch_dtype() -> None:
    assert torch_dtype("bfloat16") is torch.bfloat16
    assert torch_dtype("float16") is torch.float16
    assert torch_dtype(None) == "auto" and torch_dtype("auto") == "auto"
    with pytest.raises(ValueError, match=r"dtype 'bogus' is not a torch dtype \(use auto, bfloat16"):
        torch_dtype("bogus")
    # Names of torch attributes that are not dtypes must not slip through to from_pretrained.
    for name in ("nn", "ones", "Tensor"):
        with pytest.raises(ValueError, match="is not a torch dtype"):
            torch_dtype(name)


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_pixel_bounds_set_processor_size_and_patch_count(family: str) -> None:
    default = load_processor(make_args(family))
    factor = default.image_processor.patch_size * default.image_processor.merge_size
    max_pixels = factor * factor * 6
    min_pixels = factor * factor * 2
    processor = load_processor(make_args(family, min_pixels=min_pixels, max_pixels=max_pixels))
    for proc in (processor.image_processor, processor.video_processor):
        assert proc.size["shortest_edge"] == min_pixels
        assert proc.size["longest_edge"] == max_pixels

    image = Image.new("RGB", (300, 200), "green")
    width, height = model_image_size(processor, 300, 200)
    assert width * height <= max_pixels and width % factor == 0 and height % factor == 0
    patch = processor.image_processor.patch_size
    out = processor(text=[chat_prompt(processor)], images=[image], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, height // patch, width // patch]]
    n_patches = (height // patch) * (width // patch)
    assert out["pixel_values"].shape[0] == n_patches
    assert image_token_count(processor, out["input_ids"]) == n_patches // processor.image_processor.merge_size**2

    # The checkpoint's own, larger bound gives more patches: the setting really changed the processor's work.
    default_out = default(text=[chat_prompt(default)], images=[image], return_tensors="pt")
    assert default_out["image_grid_thw"].prod() > out["image_grid_thw"].prod()


@pytest.mark.parametrize("family", QWEN_FAMILIES)
def test_min_pixels_upscales_small_images(family: str) -> None:
    processor = load_processor(make_args(family))
    checkpoint_max = processor.image_processor.size["longest_edge"]
    factor = processor.image_processor.patch_size * processor.image_processor.merge_size
    min_pixels = factor * factor * 12
    set_pixel_bounds(processor, min_pixels, None)
    assert processor.image_processor.size["shortest_edge"] == min_pixels
    assert processor.image_processor.size["longest_edge"] == checkpoint_max  # untouched bound is kept

    width, height = model_image_size(processor, 40, 30)
    assert width * height >= min_pixels
    out = processor(text=[chat_prompt(processor)], images=[Image.new("RGB", (40, 30))], return_tensors="pt")
    patch = processor.image_processor.patch_size
    assert out["image_grid_thw"].tolist() == [[1, height // patch, width // patch]]


def test_pixel_bounds_rejected_for_gemma3_and_when_inverted() -> None:
    for bounds in ({"min_pixels": 1024}, {"max_pixels": 4096}):
        with pytest.raises(ValueError, match=r"only apply to the Qwen families \(qwen2_5_vl, qwen3_vl\)"):
            load_processor(make_args("gemma3", **bounds))
    with pytest.raises(ValueError, match=r"min_pixels \(8192\) is larger than max_pixels \(4096\)"):
        load_processor(make_args("qwen2_5_vl", min_pixels=8192, max_pixels=4096))
    processor = load_processor(make_args("qwen3_vl"))
    before = dict(processor.image_processor.size)
    set_pixel_bounds(processor, None, None)  # no bounds: the checkpoint's settings stay
    assert dict(processor.image_processor.size) == before


def test_model_family(tmp_path: Path) -> None:
    assert [model_family(f"tiny:{f}") for f in FAMILIES] == list(FAMILIES)
    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match=r"'llama' model; supported families: qwen2_5_vl, qwen3_vl, gemma3"):
        model_family(str(tmp_path))
    with pytest.raises(ValueError, match="supported families"):  # refused before any weights are looked for
        load_model(VLMModelConfig(model_name_or_path=str(tmp_path)))
    with pytest.raises(ValueError, match="model_name_or_path is required"):
        load_model(VLMModelConfig(model_name_or_path=None))


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_from_chat_templated_image_prompt(family: str) -> None:
    model, processor, _ = load_model_and_processor(make_args(family))
    text = chat_prompt(processor)
    inputs = processor(text=[text], images=[Image.new("RGB", (90, 60), (200, 30, 30))], return_tensors="pt")
    assert image_token_count(processor, inputs["input_ids"]) > 0  # the template's image slot was expanded
    prompt_len = inputs["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (1, prompt_len + 4)
    assert torch.equal(out[:, :prompt_len], inputs["input_ids"])
    new_tokens = out[0, prompt_len:]
    assert ((new_tokens >= 0) & (new_tokens < model.config.text_config.vocab_size)).all()
    assert isinstance(processor.decode(new_tokens), str)
