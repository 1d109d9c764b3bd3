"""Every trainable group gets a gradient in the first GRPO step, under both activation-checkpointing modes.

Reentrant checkpointing (`use_reentrant=True`, forced by TRL for PEFT + ZeRO-3) only back-propagates into a
checkpointed block whose input requires grad; LoRA weights inside do not count. TRL therefore calls
`enable_input_require_grads()`, which hooks each sub-model's `get_input_embeddings()` output. For Qwen3-VL's vision
tower that lookup fails (transformers 5 names no input embedding for `Qwen3VLVisionModel`), so with `train_vision` no
vision LoRA weight got a gradient (see core.training.lora.expose_vision_input_embeddings). These tests run the real
trainer path
(core.training.models.load_model -> build_lora_config -> VLMGRPOTrainer, one step) for each family and both modes, and
read the
gradients just before the optimizer step.
"""

from __future__ import annotations

import re

import datasets
import pytest
import torch
from PIL import Image
from transformers import TrainerCallback
from trl import GRPOConfig

from core.training.config import VLMModelConfig
from core.training.lora import build_lora_config, module_group
from core.training.models import load_model_and_processor
from core.training.trainer import VLMGRPOTrainer
from tests.fixtures.toy_rewards import even_token_fraction

pytestmark = pytest.mark.slow

FAMILIES = ("qwen2_5_vl", "qwen3_vl", "gemma3")
EXPECTED_GROUPS = {"language/lora", "vision/lora", "projector/full"}


class GradCapture(TrainerCallback):
    """Copies every trainable parameter's gradient just before the optimizer consumes it."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor | None] = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {
            n: None if p.grad is None else p.grad.detach().clone()
            for n, p in model.named_parameters()
            if p.requires_grad
        }


def image_dataset() -> datasets.Dataset:
    colours = [(200, 30, 30), (30, 30, 200)]
    return datasets.Dataset.from_dict(
        {
            "prompt": [
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
            ]
            * len(colours),
            "image": [Image.new("RGB", (64, 48), c) for c in colours],
        }
    )


def unused_by_construction(model, names) -> set[str]:
    """Parameters that cannot get a gradient from a completion loss in the tiny checkpoints, whatever the trainer does.

    Qwen3-VL adds deepstack feature k to the LM's hidden states after decoder layer k, at image positions only. The tiny
    checkpoint has 2 text layers and 2 deepstack mergers, so the last merger lands after the last layer, where image
    positions reach only their own logits, which the loss never reads. (Qwen3-VL-8B: 36 layers, mergers after 0-2.)
    """
    config = model.config
    if not hasattr(config.vision_config, "deepstack_visual_indexes"):
        return set()
    last_layer = config.text_config.num_hidden_layers - 1
    return {n for n in names if (m := re.search(r"deepstack_merger_list\.(\d+)\.", n)) and int(m[1]) >= last_layer}


def report_groups(summary: str) -> set[str]:
    """Group names ('vision/lora', ...) listed after 'training:' in the start-up report."""
    return {part.split(": ")[0] for part in summary.split("training: ", 1)[1].split(", ")}


@pytest.mark.parametrize("use_reentrant", [True, False], ids=["reentrant", "non_reentrant"])
@pytest.mark.parametrize("family", FAMILIES)
def test_first_step_gives_every_trainable_group_a_gradient(tmp_path, family: str, use_reentrant: bool) -> None:
    torch.manual_seed(0)
    model_args = VLMModelConfig(
        model_name_or_path=f"tiny:{family}",
        dtype="float32",
        use_peft=True,
        train_vision=True,
        train_projector=True,
        lora_dropout=0.0,
    )
    model, processor, _ = load_model_and_processor(model_args)
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        bf16=False,
        max_steps=1,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=6,
        beta=0.0,
        gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": use_reentrant},
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=0,
        disable_tqdm=True,
    )
    capture = GradCapture()
    trainer = VLMGRPOTrainer(
        model=model,
        reward_funcs=[even_token_fraction],
        args=args,
        train_dataset=image_dataset(),
        processing_class=processor,
        peft_config=build_lora_config(model, model_args),
        callbacks=[capture],
    )
    assert report_groups(trainer.trainable_summary) == EXPECTED_GROUPS
    trainer.train()

    # The trainer switched checkpointing on (in train()) in the requested mode, in the vision tower and the LM alike.
    checkpointed = {n: m for n, m in trainer.model.named_modules() if getattr(m, "gradient_checkpointing", False)}
    assert {module_group(n) for n in checkpointed} >= {"vision", "language"}
    assert {m._gradient_checkpointing_func.keywords["use_reentrant"] for m in checkpointed.values()} == {use_reentrant}

    # A zero gradient must come from the graph, not from equal rewards (zero advantages give a zero loss gradient).
    assert next(e["reward_std"] for e in trainer.state.log_history if "reward_std" in e) > 0
    grads = capture.grads
    assert grads and set(grads) == {n for n, p in trainer.model.named_parameters() if p.requires_grad}

    def nonzero(name: str) -> bool:
        return grads[name] is not None and bool(grads[name].abs().sum() > 0)

    # LoRA B starts at zero, so every A's first gradient is zero by construction: B carries the check. Every adapted
    # layer (all vision blocks, down to the first one behind the patch embedding) and every projector weight must
    # get a gradient; a group-level check alone would miss a tower that trains only its last blocks.
    checked = {n for n in grads if "lora_B" in n or "lora_" not in n}
    unused = unused_by_construction(trainer.model, checked)
    assert len(unused) == (6 if family == "qwen3_vl" else 0)  # one merger: norm and two linears, weight and bias
    checked -= unused
    missing = sorted(n for n in checked if not nonzero(n))
    assert not missing, f"{len(missing)} of {len(checked)} trainable tensors got no gradient, e.g. {missing[:5]}"
    # ... and those tensors cover every group the start-up report names.
    assert {f"{module_group(n)}/{'lora' if 'lora_' in n else 'full'}" for n in checked} == EXPECTED_GROUPS
