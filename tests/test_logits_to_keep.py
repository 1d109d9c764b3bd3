"""The `...WithLogits` wrappers: applied only when the installed forward rejects `logits_to_keep`."""

import inspect

import torch
from transformers import AutoModelForImageTextToText, Qwen2_5_VLForConditionalGeneration

from core.testing.tiny import resolve_model_path
from core.training.logits_to_keep import (
    Qwen2_5_VLForConditionalGenerationWithLogits,
    Qwen3VLForConditionalGenerationWithLogits,
    forward_accepts_logits_to_keep,
    ignore_logits_to_keep_if_needed,
)


class OldQwen2_5_VL(Qwen2_5_VLForConditionalGeneration):
    """Stands in for a transformers release whose forward had no `logits_to_keep` (TRL #3296, #2770)."""

    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, image_grid_thw=None, labels=None):
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            labels=labels,
        )


def tiny_inputs(vocab_size: int) -> dict:
    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 7))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_current_transformers_accepts_argument_so_model_is_left_alone():
    path = resolve_model_path("tiny:qwen2_5_vl")
    model = AutoModelForImageTextToText.from_pretrained(path)
    assert forward_accepts_logits_to_keep(type(model))
    assert type(ignore_logits_to_keep_if_needed(model)) is Qwen2_5_VLForConditionalGeneration
    out = model(**tiny_inputs(model.config.text_config.vocab_size), logits_to_keep=1)
    assert out.logits.shape[1] == 1  # the real model honours it


def test_old_forward_fails_then_wrapper_ignores_argument():
    path = resolve_model_path("tiny:qwen2_5_vl")
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    model.__class__ = OldQwen2_5_VL
    inputs = tiny_inputs(model.config.text_config.vocab_size)
    assert not forward_accepts_logits_to_keep(OldQwen2_5_VL)
    try:
        model(**inputs, logits_to_keep=3)
        raised = False
    except TypeError as err:
        raised = "logits_to_keep" in str(err)
    assert raised, "the simulated old forward must reject logits_to_keep"

    expected = model(**inputs).logits
    wrapped = ignore_logits_to_keep_if_needed(model)
    assert wrapped is model and type(model).__name__ == "OldQwen2_5_VLWithLogits"
    got = model(**inputs, logits_to_keep=3).logits
    torch.testing.assert_close(got, expected)  # full logits: the argument is dropped, nothing else changes


def test_named_wrappers_forward_everything_but_logits_to_keep():
    for wrapper in (Qwen2_5_VLForConditionalGenerationWithLogits, Qwen3VLForConditionalGenerationWithLogits):
        assert "logits_to_keep" in inspect.signature(wrapper.forward).parameters
    path = resolve_model_path("tiny:qwen2_5_vl")
    plain = AutoModelForImageTextToText.from_pretrained(path).eval()
    wrapped = Qwen2_5_VLForConditionalGenerationWithLogits.from_pretrained(path).eval()
    inputs = tiny_inputs(plain.config.text_config.vocab_size)
    torch.testing.assert_close(wrapped(**inputs, logits_to_keep=2).logits, plain(**inputs).logits)
