"""Which parameters train: LoRA on the language model by default, switches for the vision tower and projector.

Every test runs the real tiny checkpoints (`tiny:<family>`) through PEFT. Expected module names are written out
here per family instead of reusing `core.training.lora.module_group`, so a wrong grouping rule cannot pass its own test.
"""

from __future__ import annotations

import re

import pytest
import torch
from peft import get_peft_model
from PIL import Image
from torch import nn

from core.training.config import VLMModelConfig
from core.training.lora import (
    build_lora_config,
    expose_vision_input_embeddings,
    freeze_for_full_finetune,
    lora_target_names,
    projector_module_names,
    trainable_report,
)
from core.training.models import load_model, load_processor

FAMILIES = ("qwen2_5_vl", "qwen3_vl", "gemma3")
VISION_PREFIX = {"qwen2_5_vl": "model.visual.", "qwen3_vl": "model.visual.", "gemma3": "model.vision_tower."}
PROJECTORS = {
    "qwen2_5_vl": ["model.visual.merger"],
    "qwen3_vl": [
        "model.visual.deepstack_merger_list.0",
        "model.visual.deepstack_merger_list.1",
        "model.visual.merger",
    ],
    "gemma3": ["model.multi_modal_projector"],
}
LANGUAGE_LINEARS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
NUM_TEXT_LAYERS = 2  # core.testing.tiny builds 2-layer text models


def make_args(family: str, **overrides) -> VLMModelConfig:
    return VLMModelConfig(model_name_or_path=f"tiny:{family}", use_peft=overrides.pop("use_peft", True), **overrides)


def group_of(family: str, name: str) -> str:
    """Independent, per-family statement of the module grouping `core.training.lora` should implement."""
    name = name.removeprefix("base_model.model.")
    if any(name == p or name.startswith(p + ".") for p in PROJECTORS[family]):
        return "projector"
    if name.startswith(VISION_PREFIX[family]):
        return "vision"
    return "language"


def linears(model: nn.Module, family: str, group: str) -> dict[str, nn.Linear]:
    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and group_of(family, n) == group and n.rsplit(".", 1)[-1] != "lm_head"
    }


def lora_numel(modules: dict[str, nn.Linear], r: int) -> int:
    """Parameters LoRA adds to these linears: A is r x in, B is out x r."""
    return sum(r * (m.in_features + m.out_features) for m in modules.values())


def group_numel(model: nn.Module, family: str, group: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if group_of(family, n) == group)


def trainable(model: nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def image_inputs(processor, family: str) -> dict[str, torch.Tensor]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the box?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.new("RGB", (90, 60), (200, 30, 30))
    return dict(processor(text=[text], images=[image], return_tensors="pt"))


@pytest.mark.parametrize("family", FAMILIES)
def test_default_lora_adapts_only_language_linears(family: str) -> None:
    model = load_model(make_args(family))
    args = make_args(family)
    expected_targets = linears(model, family, "language")
    config = build_lora_config(model, args)

    targets = set(config.target_modules)
    assert targets == set(expected_targets)
    assert len(targets) == len(LANGUAGE_LINEARS) * NUM_TEXT_LAYERS
    assert {t.rsplit(".", 1)[-1] for t in targets} == LANGUAGE_LINEARS
    assert all(t.startswith("model.language_model.layers.") for t in targets)
    assert not any(re.search(r"lm_head|embed_tokens", t) for t in targets)
    assert config.modules_to_save is None

    peft_model = get_peft_model(model, config)
    train = trainable(peft_model)
    assert len(train) == 2 * len(targets)  # one lora_A and one lora_B per target
    for name in train:
        assert "lora_" in name and ".language_model.layers." in name, name
        assert group_of(family, name) == "language"
    assert sum(p.numel() for p in train.values()) == lora_numel(expected_targets, args.lora_r)
    for name, param in peft_model.named_parameters():
        if group_of(family, name) in ("vision", "projector"):
            assert not param.requires_grad, name
    # The output head and embeddings stay plain, frozen modules.
    base = peft_model.get_base_model()
    assert type(base.lm_head) is nn.Linear and not base.lm_head.weight.requires_grad
    assert not base.get_input_embeddings().weight.requires_grad


@pytest.mark.parametrize("family", FAMILIES)
def test_train_vision_adds_lora_to_the_vision_tower(family: str) -> None:
    args = make_args(family, train_vision=True)
    model = load_model(args)
    vision = linears(model, family, "vision")
    language = linears(model, family, "language")
    assert vision, "the tiny vision tower has linear layers"

    config = build_lora_config(model, args)
    assert set(config.target_modules) == set(vision) | set(language)
    assert config.modules_to_save is None

    peft_model = get_peft_model(model, config)
    train = trainable(peft_model)
    vision_lora = {n for n in train if group_of(family, n) == "vision"}
    assert len(vision_lora) == 2 * len(vision)
    assert all("lora_" in n for n in train)
    assert not any(group_of(family, n) == "projector" for n in train)
    assert sum(p.numel() for p in train.values()) == lora_numel(vision, args.lora_r) + lora_numel(language, args.lora_r)
    assert sum(p.numel() for p in train.values()) > lora_numel(language, args.lora_r)


@pytest.mark.parametrize("family", FAMILIES)
def test_train_projector_trains_the_whole_projector(family: str) -> None:
    args = make_args(family, train_projector=True)
    model = load_model(args)
    processor = load_processor(args)
    projector_params = group_numel(model, family, "projector")
    assert projector_params > 0
    assert sorted(projector_module_names(model)) == PROJECTORS[family]
    inputs = image_inputs(processor, family)
    with torch.no_grad():
        reference = model(**inputs).logits

    config = build_lora_config(model, args)
    assert config.modules_to_save == sorted(PROJECTORS[family])
    assert set(config.target_modules) == set(linears(model, family, "language"))  # projector linears: no LoRA
    peft_model = get_peft_model(model, config)

    train = trainable(peft_model)
    full = {n: p for n, p in train.items() if "lora_" not in n}
    assert full and all(group_of(family, n) == "projector" and "modules_to_save" in n for n in full)
    assert sum(p.numel() for p in full.values()) == projector_params
    assert not any(group_of(family, n) == "vision" for n in train)
    # PEFT keeps a frozen original next to the trainable copy.
    originals = [p for n, p in peft_model.named_parameters() if "original_module" in n]
    assert sum(p.numel() for p in originals) == projector_params and not any(p.requires_grad for p in originals)
    # Wrapping changes nothing yet (copies are identical, LoRA B is zero), also for Qwen3-VL's deepstack list items.
    peft_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**inputs).logits, reference)


def test_projector_module_names_lists_each_module_once() -> None:
    model = load_model(make_args("qwen3_vl"))
    names = projector_module_names(model)
    assert names == [
        "model.visual.merger",
        "model.visual.deepstack_merger_list.0",
        "model.visual.deepstack_merger_list.1",
    ]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_target_modules_narrows_and_rejects_nonmatching(family: str) -> None:
    model = load_model(make_args(family))
    narrow = make_args(family, lora_target_modules=["q_proj"])
    names = lora_target_names(model, narrow)
    assert names == [f"model.language_model.layers.{i}.self_attn.q_proj" for i in range(NUM_TEXT_LAYERS)]
    assert set(build_lora_config(model, narrow).target_modules) == set(names)
    assert lora_target_names(model, make_args(family, lora_target_modules="all-linear")) == lora_target_names(
        model, make_args(family)
    )

    with pytest.raises(ValueError, match=r"No linear layer matches lora_target_modules=.*no_such_layer"):
        build_lora_config(model, make_args(family, lora_target_modules=["no_such_layer"]))
    with pytest.raises(ValueError, match="No linear layer matches"):  # the output head is never adapted
        build_lora_config(model, make_args(family, lora_target_modules=["lm_head"]))

    peft_model = get_peft_model(model, build_lora_config(model, narrow))
    train = trainable(peft_model)
    assert len(train) == 2 * NUM_TEXT_LAYERS
    assert all(re.search(r"\.self_attn\.q_proj\.lora_[AB]\.", n) for n in train)


@pytest.mark.parametrize("family", FAMILIES)
def test_nothing_to_train_and_projector_only_lora_raise(family: str) -> None:
    model = load_model(make_args(family))
    off = {"train_language": False, "train_vision": False, "train_projector": False}
    with pytest.raises(ValueError, match="Nothing to train"):
        build_lora_config(model, make_args(family, **off))
    with pytest.raises(ValueError, match="Nothing to train"):
        freeze_for_full_finetune(model, make_args(family, use_peft=False, **off))
    # LoRA with only the projector would hand PEFT a config with no adapter targets; say so up front.
    with pytest.raises(ValueError, match="use_peft=false"):
        build_lora_config(model, make_args(family, train_language=False, train_projector=True))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "switches",
    [
        {},
        {"train_vision": True},
        {"train_projector": True},
        {"train_language": False, "train_vision": True, "train_projector": True},
    ],
    ids=["default", "vision", "projector", "no-language"],
)
def test_full_finetune_freezes_all_but_enabled_groups(family: str, switches: dict) -> None:
    args = make_args(family, use_peft=False, **switches)
    model = load_model(args)
    assert build_lora_config(model, args) is None
    freeze_for_full_finetune(model, args)

    enabled = {g for g, on in (("language", args.train_language), ("vision", args.train_vision)) if on}
    enabled |= {"projector"} if args.train_projector else set()
    for name, param in model.named_parameters():
        assert param.requires_grad == (group_of(family, name) in enabled), name
    vision_param = next(p for n, p in model.named_parameters() if group_of(family, n) == "vision")
    assert vision_param.requires_grad == args.train_vision
    projector_param = next(p for n, p in model.named_parameters() if group_of(family, n) == "projector")
    assert projector_param.requires_grad == args.train_projector
    assert model.lm_head.weight.requires_grad == args.train_language


def test_freeze_is_a_no_op_with_peft() -> None:
    model = load_model(make_args("qwen2_5_vl"))
    freeze_for_full_finetune(model, make_args("qwen2_5_vl", use_peft=True))
    assert all(p.requires_grad for p in model.parameters())


REPORT = re.compile(r"trainable params: ([\d,]+) / ([\d,]+) \(([\d.]+)%\) \| training: (.*)")


def parse_report(report: str) -> tuple[int, int, float, dict[str, int]]:
    match = REPORT.fullmatch(report)
    assert match, report
    parts = {} if match[4] == "none" else dict(p.split(": ") for p in match[4].split(", "))
    return (
        int(match[1].replace(",", "")),
        int(match[2].replace(",", "")),
        float(match[3]),
        {k: int(v.replace(",", "")) for k, v in parts.items()},
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_trainable_report_counts_and_groups(family: str) -> None:
    args = make_args(family, train_vision=True, train_projector=True)
    model = load_model(args)
    peft_model = get_peft_model(model, build_lora_config(model, args))
    n_train, n_total, pct, groups = parse_report(trainable_report(peft_model))

    params = dict(peft_model.named_parameters())
    assert n_total == sum(p.numel() for p in params.values())
    assert n_train == sum(p.numel() for p in params.values() if p.requires_grad)
    assert pct == pytest.approx(100 * n_train / n_total, abs=1e-3)
    assert set(groups) == {"language/lora", "vision/lora", "projector/full"}
    assert sum(groups.values()) == n_train
    assert groups["projector/full"] == group_numel(load_model(args), family, "projector")
    assert groups["language/lora"] == sum(
        p.numel() for n, p in params.items() if p.requires_grad and group_of(family, n) == "language"
    )

    full = load_model(make_args(family, use_peft=False))
    freeze_for_full_finetune(full, make_args(family, use_peft=False))
    n_train, n_total, _, groups = parse_report(trainable_report(full))
    assert groups == {"language/full": n_train} and n_train == group_numel(full, family, "language")
    for p in full.parameters():
        p.requires_grad_(False)
    assert parse_report(trainable_report(full))[3] == {}
    assert trainable_report(full).endswith("training: none")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("train_vision", [False, True], ids=["default", "train_vision"])
def test_one_sgd_step_updates_only_enabled_adapters(family: str, train_vision: bool) -> None:
    torch.manual_seed(0)
    args = make_args(family, train_vision=train_vision, lora_dropout=0.0)
    model = load_model(args)
    processor = load_processor(args)
    peft_model = get_peft_model(model, build_lora_config(model, args))
    peft_model.train()
    inputs = image_inputs(processor, family)
    before = {n: p.detach().clone() for n, p in peft_model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0)

    loss = peft_model(**inputs, labels=inputs["input_ids"]).loss
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    optimizer.step()

    changed = {n for n, p in peft_model.named_parameters() if not torch.equal(p.detach(), before[n])}
    lora_b = {n for n, p in peft_model.named_parameters() if "lora_B" in n}
    # B starts at zero, so A's first gradient is zero: exactly the B matrices move.
    assert changed == lora_b
    assert {group_of(family, n) for n in changed} == ({"language", "vision"} if train_vision else {"language"})
    vision_weights = [n for n in before if group_of(family, n) == "vision" and "lora_" not in n]
    assert vision_weights and not any(n in changed for n in vision_weights)
    projector = [n for n in before if group_of(family, n) == "projector"]
    assert projector and not any(n in changed for n in projector)


VISION_INPUT_EMBEDDING = {
    "qwen2_5_vl": ("model.visual", "model.visual.patch_embed"),
    "qwen3_vl": ("model.visual", "model.visual.patch_embed"),
    "gemma3": ("model.vision_tower", "model.vision_tower.embeddings.patch_embedding"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_train_vision_hooks_the_patch_embedding_for_input_grads(family: str) -> None:
    """With train_vision, enable_input_require_grads (what TRL calls for PEFT + checkpointing) makes the vision
    tower's patch-embedding output require grad, which reentrant checkpointing needs to reach the vision LoRA weights.
    Qwen3-VL's tower names no input embedding in transformers 5; load_model exposes it (the gradients themselves,
    through the real trainer: tests/test_vision_grads.py). Without train_vision Qwen3-VL's tower stays unhooked, so
    backward does not run through a frozen tower."""
    tower_name, patch_name = VISION_INPUT_EMBEDDING[family]
    args = make_args(family, train_vision=True)
    model = load_model(args)
    modules = dict(model.named_modules())
    assert modules[tower_name].get_input_embeddings() is modules[patch_name]
    assert expose_vision_input_embeddings(model) == []  # idempotent: nothing left to expose

    outputs = {}
    modules[patch_name].register_forward_hook(lambda m, i, o: outputs.setdefault("patch", o))
    model.enable_input_require_grads()
    with torch.no_grad():
        model(**image_inputs(load_processor(args), family))
    assert outputs["patch"].requires_grad

    frozen_tower = load_model(make_args(family))
    tower = dict(frozen_tower.named_modules())[tower_name]
    if family == "qwen3_vl":
        with pytest.raises(NotImplementedError):
            tower.get_input_embeddings()
        assert expose_vision_input_embeddings(frozen_tower) == [tower_name]
        assert tower.get_input_embeddings() is tower.patch_embed
    else:  # transformers already names these towers' patch embeddings; nothing to change
        assert expose_vision_input_embeddings(frozen_tower) == []
