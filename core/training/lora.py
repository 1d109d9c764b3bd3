"""Which parts of a VLM train: LoRA on the language model by default, switches for the vision tower and projector.

Every supported family splits the same way (module names as in transformers 5):
- vision tower: `...visual...` (Qwen2.5-VL, Qwen3-VL) or `...vision_tower...` (Gemma-3), minus the projector;
- projector: Qwen's `merger` (and Qwen3-VL's `deepstack_merger_list`) or Gemma-3's `multi_modal_projector`;
- language model: everything else (`language_model`, `lm_head`, embeddings).
"""

from __future__ import annotations

import logging
import re
from collections import Counter

from peft import LoraConfig
from torch import nn
from transformers import PreTrainedModel

from core.training.config import VLMModelConfig

logger = logging.getLogger(__name__)

PROJECTOR_PATTERN = re.compile(r"(^|\.)(merger|deepstack_merger_list|multi_modal_projector)(\.|$)")
VISION_PATTERN = re.compile(r"(^|\.)(visual|vision_tower|vision_model)(\.|$)")
# Never adapted: the output head and embeddings are tied or huge; LoRA there buys little and breaks weight tying.
NEVER_ADAPTED = ("lm_head", "embed_tokens", "wte")


def module_group(name: str) -> str:
    """'projector', 'vision' or 'language' for a module or parameter name."""
    if PROJECTOR_PATTERN.search(name):
        return "projector"
    if VISION_PATTERN.search(name):
        return "vision"
    return "language"


def enabled_groups(model_args: VLMModelConfig) -> set[str]:
    groups = {
        g
        for g, on in (
            ("language", model_args.train_language),
            ("vision", model_args.train_vision),
            ("projector", model_args.train_projector),
        )
        if on
    }
    if not groups:
        raise ValueError("Nothing to train: train_language, train_vision and train_projector are all false.")
    return groups


def lora_target_names(model: nn.Module, model_args: VLMModelConfig) -> list[str]:
    """Full names of the nn.Linear modules LoRA wraps.

    `lora_target_modules` (e.g. [q_proj, v_proj]) narrows by leaf name; the default is every linear layer of the
    enabled language/vision groups. Projectors are trained fully instead (see `build_lora_config`).
    """
    groups = enabled_groups(model_args) - {"projector"}
    wanted = model_args.lora_target_modules
    if isinstance(wanted, str):
        wanted = None if wanted == "all-linear" else [wanted]
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module_group(name) not in groups:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf in NEVER_ADAPTED or (wanted and leaf not in wanted):
            continue
        names.append(name)
    if not names and groups:
        raise ValueError(
            f"No linear layer matches lora_target_modules={model_args.lora_target_modules} in the "
            f"groups {sorted(groups)} of {type(model).__name__}."
        )
    return names


def projector_module_names(model: nn.Module) -> list[str]:
    """Top-most projector modules (for LoRA's modules_to_save); a ModuleList counts by its items, which PEFT can
    wrap without breaking the parent's iteration over them."""
    tops: list[str] = []
    for name, module in model.named_modules():
        if not PROJECTOR_PATTERN.search(name) or name in tops or any(name.startswith(t + ".") for t in tops):
            continue
        if isinstance(module, nn.ModuleList):
            tops += [f"{name}.{i}" for i in range(len(module))]
        else:
            tops.append(name)
    return tops


def build_lora_config(model: nn.Module, model_args: VLMModelConfig) -> LoraConfig | None:
    """The LoRA config for `GRPOTrainer(peft_config=...)`, or None for full fine-tuning."""
    if not model_args.use_peft:
        return None
    groups = enabled_groups(model_args)
    if groups == {"projector"}:
        # PEFT refuses a LoRA config whose only trainable modules are modules_to_save (NoMatchingPeftModuleError).
        raise ValueError(
            "use_peft with only train_projector leaves LoRA nothing to adapt; set use_peft=false to train the "
            "projector fully, or also enable train_language or train_vision."
        )
    targets = lora_target_names(model, model_args)
    to_save = list(model_args.lora_modules_to_save or [])
    if "projector" in groups:
        to_save += projector_module_names(model)
    return LoraConfig(
        task_type=model_args.lora_task_type,
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=targets,
        modules_to_save=sorted(set(to_save)) or None,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
        bias="none",
    )


def freeze_for_full_finetune(model: nn.Module, model_args: VLMModelConfig) -> None:
    """Without LoRA, train all weights of the enabled groups and freeze the rest."""
    if model_args.use_peft:
        return
    groups = enabled_groups(model_args)
    for name, param in model.named_parameters():
        param.requires_grad_(module_group(name) in groups)


def expose_vision_input_embeddings(model: nn.Module) -> list[str]:
    """Give each vision tower that lacks one an input embedding (its patch embedding); returns the towers changed.

    Why: activation checkpointing in reentrant mode (`use_reentrant=True`; TRL forces it for PEFT + ZeRO-3) only
    back-propagates into a checkpointed block whose *input* requires grad: LoRA weights inside the block do not
    count. TRL's GRPOTrainer (with PEFT) and transformers' `gradient_checkpointing_enable` therefore call
    `enable_input_require_grads()`, which hooks the output of every sub-model's `get_input_embeddings()` (transformers
    5, `PreTrainedModel.enable_input_require_grads`, since huggingface/transformers#41993). Qwen2.5-VL's vision tower
    answers with `patch_embed` (`_input_embed_layer = "patch_embed"`) and Gemma-3's SigLIP with its patch embedding,
    but `Qwen3VLVisionModel` raises NotImplementedError, which that loop skips. The vision blocks' input then never
    requires grad and, under reentrant checkpointing, no vision LoRA weight receives a gradient: the tower silently
    stays at its initial weights. Naming `patch_embed` as the input embedding, exactly as transformers does for
    Qwen2.5-VL, puts the hook where it belongs, for every caller of `enable_input_require_grads` (and is undone by
    `disable_input_require_grads`). Only worth doing when the vision tower trains: otherwise the hook makes backward
    run through the whole frozen tower for nothing (tests/test_vision_grads.py checks every family and mode).
    """
    changed = []
    for name, module in model.named_modules():
        if not isinstance(module, PreTrainedModel) or module_group(name) != "vision":
            continue
        try:
            module.get_input_embeddings()
            continue  # the tower already names its input embedding (Qwen2.5-VL, SigLIP)
        except NotImplementedError:
            pass
        if isinstance(getattr(module, "patch_embed", None), nn.Module):
            module._input_embed_layer = "patch_embed"  # read by PreTrainedModel.get_input_embeddings
            if module.get_input_embeddings() is not module.patch_embed:
                raise RuntimeError(f"could not expose {name}.patch_embed as the input embedding of {type(module)}")
            changed.append(name)
    return changed


def trainable_report(model: nn.Module) -> str:
    """One line of counts plus which module groups train, printed at start-up so a wrong switch shows at once."""
    total = trainable = 0
    per_group: Counter[str] = Counter()
    for name, param in model.named_parameters():
        n = param.numel() if param.numel() else getattr(param, "ds_numel", 0)  # ZeRO-3 keeps a 0-size stub
        total += n
        if param.requires_grad:
            trainable += n
            kind = "lora" if "lora_" in name else "full"
            per_group[f"{module_group(name)}/{kind}"] += n
    parts = ", ".join(f"{k}: {v:,}" for k, v in sorted(per_group.items())) or "none"
    pct = 100.0 * trainable / max(total, 1)
    return f"trainable params: {trainable:,} / {total:,} ({pct:.3f}%) | training: {parts}"
