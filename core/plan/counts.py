"""Which model a config names, and its exact parameter counts from the real classes built on the meta device (a hub
id with architecture facts, a local or tiny checkpoint, or a Qwen-Image(-Edit) pipeline)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.training.model_ids import TINY_PREFIX, is_tiny, resolve_model_path


@dataclass
class Counts:
    total: int
    by_group: dict[str, int]
    linear_weights: int  # nn.Linear weights bitsandbytes would quantise (all but lm_head)
    trainable: int  # what the optimizer holds (LoRA + modules_to_save, or the enabled groups' weights)
    lora: int
    modules_to_save: int
    largest_layer: int  # ZeRO-3 gathers about one layer at a time
    lora_leaves: dict[str, frozenset[str]]  # group -> leaf names of the adapted linears


def count_policy(model: Any, model_args: Any) -> Counts:
    """Exact counts from a (meta) model: LoRA parameters from the very target list core.training.lora builds."""
    from torch import nn

    from core.training.architectures import count_parameters
    from core.training.lora import enabled_groups, lora_target_names, module_group, projector_module_names

    by_group: dict[str, int] = {"language": 0, "vision": 0, "projector": 0}
    for name, param in model.named_parameters():
        by_group[module_group(name)] += param.numel()
    total = count_parameters(model)
    modules = dict(model.named_modules())
    linear = sum(m.weight.numel() for n, m in modules.items() if isinstance(m, nn.Linear) and not n.endswith("lm_head"))
    layers = [m for n, m in modules.items() if isinstance(m, nn.ModuleList) and n.endswith("layers")]
    largest = max((count_parameters(layer[0]) for layer in layers if len(layer)), default=0)
    lora = modules_to_save = 0
    leaves: dict[str, set[str]] = {"language": set(), "vision": set()}
    if model_args.use_peft:
        for name in lora_target_names(model, model_args):
            module = modules[name]
            lora += model_args.lora_r * (module.in_features + module.out_features)
            if getattr(model_args, "use_dora", False):
                lora += module.out_features
            leaves.setdefault(module_group(name), set()).add(name.rsplit(".", 1)[-1])
        to_save = list(model_args.lora_modules_to_save or [])
        if "projector" in enabled_groups(model_args):
            to_save += projector_module_names(model)
        for name in set(to_save):
            if name in modules:
                modules_to_save += count_parameters(modules[name])
            else:
                modules_to_save += sum(count_parameters(m) for n, m in modules.items() if n.endswith("." + name))
        trainable = lora + modules_to_save
    else:
        groups = enabled_groups(model_args)
        trainable = sum(by_group[g] for g in groups)
    return Counts(
        total=total,
        by_group=by_group,
        linear_weights=linear,
        trainable=trainable,
        lora=lora,
        modules_to_save=modules_to_save,
        largest_layer=largest,
        lora_leaves={g: frozenset(v) for g, v in leaves.items()},
    )


# ---------------------------------------------------------------------------------------------------------------------
# Which model, which pipeline
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class PipelineInfo:
    edit: bool
    dit_params: int
    vae_params: int
    dit_inner: int
    dit_layers: int
    dit_block_params: int
    vae_base_dim: int
    vae_scale: int = 8


def is_pipeline(name: str) -> bool:
    from core.training.architectures import architecture, has_architecture

    if has_architecture(name):
        return architecture(name)["kind"] == "pipeline"
    if is_tiny(name):
        from core.testing.tiny import TINY_PIPELINES  # the test fixture, only for a tiny: id

        return name[len(TINY_PREFIX) :] in TINY_PIPELINES
    return (Path(name) / "model_index.json").is_file()


@functools.lru_cache(maxsize=8)
def meta_policy_and_pipeline(name: str) -> tuple[Any, PipelineInfo | None, dict[str, Any]]:
    """The policy VLM on the meta device, the frozen pipeline's facts (None for a plain VLM) and processor facts
    (cached: meta models hold no memory, and the what-if variants re-plan the same model)."""
    import torch
    from transformers import AutoConfig

    from core.training.architectures import (
        architecture,
        build_component,
        build_from_config,
        count_parameters,
        has_architecture,
        vlm_config,
    )

    if has_architecture(name):
        facts = architecture(name)
        if facts["kind"] == "vlm":
            return build_from_config(vlm_config(facts)), None, dict(facts["processor"])
        dit = build_component(facts, "transformer")
        vae = build_component(facts, "vae")
        text_facts = facts["components"]["text_encoder"]
        policy = build_from_config(vlm_config(text_facts))
        edit = facts["pipeline_class"] == "QwenImageEditPipeline"
        processor = dict(text_facts["processor"])
    else:
        path = Path(resolve_model_path(name))
        if not path.exists():
            raise FileNotFoundError(
                f"{name}: no architecture facts in core.training.architecture_facts and no local checkpoint at "
                f"{path}; add the checkpoint's config.json values to core.training.architecture_facts.ARCHITECTURES "
                "(no download is attempted)"
            )
        if not (path / "model_index.json").is_file():
            policy = build_from_config(AutoConfig.from_pretrained(path))
            return policy, None, _processor_facts_from_folder(path)
        from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel

        with torch.device("meta"):
            dit = QwenImageTransformer2DModel.from_config(QwenImageTransformer2DModel.load_config(path / "transformer"))
            vae = AutoencoderKLQwenImage.from_config(AutoencoderKLQwenImage.load_config(path / "vae"))
        policy = build_from_config(AutoConfig.from_pretrained(path / "text_encoder"))
        index = json.loads((path / "model_index.json").read_text())
        edit = "Edit" in index.get("_class_name", "")
        processor = _processor_facts_from_folder(path / "processor") if edit else {}
    blocks = getattr(dit, "transformer_blocks", [])
    info = PipelineInfo(
        edit=edit,
        dit_params=count_parameters(dit),
        vae_params=count_parameters(vae),
        dit_inner=dit.config.num_attention_heads * dit.config.attention_head_dim,
        dit_layers=dit.config.num_layers,
        dit_block_params=count_parameters(blocks[0]) if len(blocks) else 0,
        vae_base_dim=vae.config.base_dim,
    )
    return policy, info, processor


def _processor_facts_from_folder(path: Path) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    file = path / "preprocessor_config.json"
    if not file.is_file():
        file = path / "processor_config.json"
    if file.is_file():
        data = json.loads(file.read_text())
        data = data.get("image_processor", data)
        size = data.get("size") or {}
        facts["min_pixels"] = data.get("min_pixels") or size.get("shortest_edge")
        facts["max_pixels"] = data.get("max_pixels") or size.get("longest_edge")
        facts["patch_size"] = data.get("patch_size")
        facts["merge_size"] = data.get("merge_size")
    return {k: v for k, v in facts.items() if v is not None}
