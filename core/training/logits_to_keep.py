"""Qwen-VL classes that accept and ignore `logits_to_keep`, as the original project's `...WithLogits` classes did.

TRL's GRPO used to call `model(..., logits_to_keep=n)`. Some transformers releases' Qwen-VL `forward` did not take
that argument and failed with a TypeError (TRL issues #3296, #2770). TRL 1.15 no longer passes it and current
transformers accepts it, so `ignore_logits_to_keep_if_needed` leaves such models untouched and only swaps in the
wrapper class when the installed model's `forward` cannot take the argument. Dropping it is safe: GRPO slices the
completion positions out of the full logits itself.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping


class IgnoreLogitsToKeepMixin:
    """Drops `logits_to_keep` before calling the real forward."""

    def forward(self, *args: Any, logits_to_keep: Any = None, **kwargs: Any) -> Any:
        return super().forward(*args, **kwargs)  # type: ignore[misc]


class Qwen2_5_VLForConditionalGenerationWithLogits(IgnoreLogitsToKeepMixin, Qwen2_5_VLForConditionalGeneration):
    """Qwen2.5-VL that tolerates `logits_to_keep`."""


class Qwen3VLForConditionalGenerationWithLogits(IgnoreLogitsToKeepMixin, Qwen3VLForConditionalGeneration):
    """Qwen3-VL that tolerates `logits_to_keep`."""


_WRAPPERS: dict[type, type] = {
    Qwen2_5_VLForConditionalGeneration: Qwen2_5_VLForConditionalGenerationWithLogits,
    Qwen3VLForConditionalGeneration: Qwen3VLForConditionalGenerationWithLogits,
}


def _share_checkpoint_key_mapping(wrapper: type, native: type) -> None:
    """transformers 5 renames checkpoint keys per class and skips that for classes defined outside the library, so
    `Wrapper.from_pretrained` would load random weights. Only `forward` differs: reuse the native class's renaming."""
    mapping = get_checkpoint_conversion_mapping(native.__name__)
    if mapping is not None and get_checkpoint_conversion_mapping(wrapper.__name__) is None:
        register_checkpoint_conversion_mapping(wrapper.__name__, mapping)


for _native, _wrapper in _WRAPPERS.items():
    _share_checkpoint_key_mapping(_wrapper, _native)


def forward_accepts_logits_to_keep(model_cls: type[nn.Module]) -> bool:
    """Only a named parameter counts: a bare `**kwargs` may hand the argument on to a module that rejects it."""
    return "logits_to_keep" in inspect.signature(model_cls.forward).parameters


def ignore_logits_to_keep_if_needed(model: nn.Module) -> nn.Module:
    """Switch `model` to its `...WithLogits` class in place when its forward rejects `logits_to_keep`."""
    cls = type(model)
    if forward_accepts_logits_to_keep(cls) or isinstance(model, IgnoreLogitsToKeepMixin):
        return model
    wrapper = _WRAPPERS.get(cls)
    if wrapper is None:  # an older or patched subclass: build the same wrapper around it
        wrapper = type(f"{cls.__name__}WithLogits", (IgnoreLogitsToKeepMixin, cls), {})
        for native in cls.__mro__:
            _share_checkpoint_key_mapping(wrapper, native)
    model.__class__ = wrapper
    return model
