"""Two ways to build a GRPO policy: transformers + PEFT (every recipe's path) or Unsloth (one GPU, 4-bit, vLLM).

Unsloth's `FastVisionModel` (4-bit loading, its own gradient checkpointing, vLLM generation in the training process)
is what some original projects ran on a single GPU. It needs an NVIDIA GPU and it patches TRL's `GRPOTrainer` when
imported, so:
- `check_backend` runs at start-up, before data or weights load, and says what to do instead of failing an hour in;
- the Unsloth trainer is TRL's `GRPOTrainer` as Unsloth patched it, looked up after `import unsloth`. Our
  `VLMGRPOTrainer` subclasses the unpatched class; what it adds (video tensors, placeholder suppression for text-only
  processors) is for paths an image-prompt Unsloth run does not take, and the reward curve is added here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

import torch
from trl import GRPOConfig

from core.config import VLMModelConfig
from core.models import torch_dtype
from core.trainer import RewardPlotCallback

logger = logging.getLogger(__name__)

BACKENDS = ("transformers", "unsloth")


class BackendError(RuntimeError):
    """The chosen backend cannot run here; the message lists every reason and the alternative."""


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def backend_problems(
    backend: str,
    model_args: VLMModelConfig,
    training_args: GRPOConfig,
    *,
    video: bool = False,
    text_encoder_policy: bool = False,
) -> list[str]:
    """Everything that stops `backend` from running on this machine with these settings (empty: good to go).

    `video`: the prompts carry a clip (the video recipe). `text_encoder_policy`: the policy is a diffusion pipeline's
    text encoder (image_edit, mmmg), whose folder holds no tokenizer or processor. With `use_vllm`, both are refused
    until generation through vLLM is supported for them (issue 13): TRL would hand vLLM the prompt ids with
    `<|video_pad|>` tokens and no clip, so it would sample blind while the log-prob forwards see the video; and vLLM
    cannot load a text-encoder folder with no tokenizer."""
    if backend not in BACKENDS:
        return [f"backend {backend!r} is not one of {', '.join(BACKENDS)}"]
    cuda = torch.cuda.is_available()
    problems = []
    if backend == "unsloth":
        if not cuda:
            problems.append(
                "backend: unsloth needs an NVIDIA GPU (Unsloth's kernels, bitsandbytes 4-bit and its built-in vLLM "
                "are CUDA-only) and none is visible. Use --backend transformers: transformers + PEFT with the same "
                "LoRA, data and rewards, which runs on CPU (smoke tests) and on any number of GPUs (run_8gpu.sh)."
            )
        elif not _installed("unsloth"):
            problems.append("backend: unsloth needs the unsloth package: pip install -e '.[unsloth]'")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            problems.append(
                "backend: unsloth runs one process on one GPU (python train.py --config ...); for several GPUs "
                "use --backend transformers (run_8gpu.sh does)."
            )
        if not model_args.use_peft:
            problems.append("backend: unsloth trains LoRA adapters here; full fine-tuning is --backend transformers")
    elif (model_args.load_in_4bit or model_args.load_in_8bit) and not cuda:
        problems.append(
            "load_in_4bit/load_in_8bit use bitsandbytes, which needs a CUDA GPU; none is visible "
            "(set --load_in_4bit false)."
        )
    if cuda and (model_args.load_in_4bit or model_args.load_in_8bit) and not _installed("bitsandbytes"):
        problems.append("load_in_4bit/load_in_8bit need bitsandbytes: pip install -e '.[quant]'")
    if training_args.use_vllm and not _installed("vllm"):
        problems.append("use_vllm: true needs vLLM: pip install -e '.[vllm]' (or set --use_vllm false)")
    if training_args.use_vllm and video:
        problems.append(
            "use_vllm: true with video prompts is not supported yet: TRL gives vLLM the prompt's video placeholder "
            "tokens without the clip, so it would sample without seeing the video while training scores the "
            "completions against it. Set --use_vllm false (generation runs in the trainer, with the clip)."
        )
    if training_args.use_vllm and text_encoder_policy:
        problems.append(
            "use_vllm: true is not supported for a diffusion pipeline's text encoder yet: its folder holds no "
            "tokenizer, processor or chat template for vLLM to load. Set --use_vllm false."
        )
    return problems


def check_backend(
    backend: str,
    model_args: VLMModelConfig,
    training_args: GRPOConfig,
    *,
    video: bool = False,
    text_encoder_policy: bool = False,
) -> None:
    """Raise `BackendError` naming every problem (and the alternative) before any data or weights load; see
    `backend_problems`."""
    problems = backend_problems(
        backend, model_args, training_args, video=video, text_encoder_policy=text_encoder_policy
    )
    if problems:
        raise BackendError("cannot start training:\n" + "\n".join(f"  - {p}" for p in problems))


def load_unsloth_policy(model_args: VLMModelConfig, training_args: GRPOConfig, max_seq_length: int) -> tuple[Any, Any]:
    """Unsloth's FastVisionModel with LoRA applied (language and/or vision layers), and its processor.

    `use_vllm` maps to Unsloth's `fast_inference` (its own vLLM engine, sharing weights with the trained model) with
    standby mode, which frees vLLM's memory during the backward pass, as the original did.
    """
    if training_args.use_vllm:
        os.environ.setdefault("UNSLOTH_VLLM_STANDBY", "1")  # read when unsloth is imported
    from unsloth import FastVisionModel  # imported late: it patches trl/transformers, and needs a GPU

    checkpointing: str | bool = "unsloth" if training_args.gradient_checkpointing else False
    dtype = None if model_args.dtype in (None, "auto") else torch_dtype(model_args.dtype)
    model, processor = FastVisionModel.from_pretrained(
        model_name=model_args.model_name_or_path,
        max_seq_length=max_seq_length,
        dtype=dtype,
        load_in_4bit=model_args.load_in_4bit,
        fast_inference=training_args.use_vllm,
        gpu_memory_utilization=training_args.vllm_gpu_memory_utilization,
        use_gradient_checkpointing=checkpointing,
    )
    model = FastVisionModel.get_peft_model(
        model,
        finetune_vision_layers=model_args.train_vision,
        finetune_language_layers=model_args.train_language,
        finetune_attention_modules=True,
        finetune_mlp_modules=True,
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        bias="none",
        use_rslora=model_args.use_rslora,
        random_state=training_args.seed,
        use_gradient_checkpointing=checkpointing,
    )
    logger.info(
        "loaded %s through Unsloth (4-bit: %s, vLLM: %s)",
        model_args.model_name_or_path,
        model_args.load_in_4bit,
        training_args.use_vllm,
    )
    return model, processor


def unsloth_grpo_trainer(**kwargs: Any) -> Any:
    """TRL's GRPOTrainer as Unsloth patched it (call after `load_unsloth_policy`), with the reward-curve callback."""
    import trl

    trainer = trl.GRPOTrainer(**kwargs)
    trainer.add_callback(RewardPlotCallback())
    return trainer
