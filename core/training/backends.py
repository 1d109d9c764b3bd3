"""Two ways to build a GRPO policy: transformers + PEFT (every recipe's path) or Unsloth (one GPU, 4-bit, vLLM).

Unsloth's `FastVisionModel` (4-bit loading, its own gradient checkpointing, vLLM generation in the training process)
is what some original projects ran on a single GPU. It needs an NVIDIA GPU and it patches TRL's `GRPOTrainer` when
imported, so:
- `check_backend` runs at start-up, before data or weights load, and says what to do instead of failing an hour in;
  that includes the combinations Unsloth itself refuses only after the weights have loaded (see `_unsloth_problems`);
- the Unsloth trainer is TRL's `GRPOTrainer` as Unsloth patched it, looked up after `import unsloth`. Our
  `VLMGRPOTrainer` subclasses the unpatched class; what it adds (video tensors, placeholder suppression for text-only
  processors) is for paths an image-prompt Unsloth run does not take, and the reward curve is added here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from trl import GRPOConfig

from core.errors import UserFacingError
from core.training.config import VLMModelConfig
from core.training.models import torch_dtype
from core.training.trainer import RewardPlotCallback

logger = logging.getLogger(__name__)

BACKENDS = ("transformers", "unsloth")
# The extra of pyproject.toml that brings each backend's GPU packages (vLLM, vllm-bnb-plugin, bitsandbytes, Unsloth).
EXTRAS = {"transformers": "gpu", "unsloth": "unsloth"}


class BackendError(RuntimeError, UserFacingError):
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

    `video`: the prompts carry a clip (the video recipe); with `use_vllm` it is refused, since TRL would hand vLLM the
    prompt ids with `<|video_pad|>` tokens and no clip, so it would sample blind while the log-prob forwards see the
    video. `text_encoder_policy`: the policy is a diffusion pipeline's text encoder (image_edit, mmmg), whose folder
    holds no tokenizer or processor; vLLM serves it in colocate mode from a folder the trainer assembles
    (`core.training.vllm_generation.write_policy_folder`), and server mode is refused."""
    if backend not in BACKENDS:
        return [f"backend {backend!r} is not one of {', '.join(BACKENDS)}"]
    cuda = torch.cuda.is_available()
    install = f"pip install -e '.[{EXTRAS[backend]}]'"
    problems = []
    if backend == "unsloth":
        if not cuda:
            problems.append(
                "backend: unsloth needs an NVIDIA GPU (Unsloth's kernels, bitsandbytes 4-bit and its built-in vLLM "
                "are CUDA-only) and none is visible. Use --backend transformers: transformers + PEFT with the same "
                "LoRA, data and rewards, which runs on CPU (smoke tests) and on any number of GPUs (run_8gpu.sh)."
            )
        elif not _installed("unsloth"):
            problems.append(f"backend: unsloth needs the unsloth package: {install}")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            problems.append(
                "backend: unsloth runs one process on one GPU (python train.py --config ...); for several GPUs "
                "use --backend transformers (run_8gpu.sh does)."
            )
        if not model_args.use_peft:
            problems.append("backend: unsloth trains LoRA adapters here; full fine-tuning is --backend transformers")
        problems += _unsloth_problems(model_args, training_args)
    elif (model_args.load_in_4bit or model_args.load_in_8bit) and not cuda:
        problems.append(
            "load_in_4bit/load_in_8bit use bitsandbytes, which needs a CUDA GPU; none is visible "
            "(set --load_in_4bit false)."
        )
    if cuda and (model_args.load_in_4bit or model_args.load_in_8bit) and not _installed("bitsandbytes"):
        problems.append(f"load_in_4bit/load_in_8bit need bitsandbytes: {install}")
    if training_args.use_vllm and not _installed("vllm"):
        problems.append(f"use_vllm: true needs vLLM: {install} (or set --use_vllm false)")
    elif training_args.use_vllm and model_args.load_in_4bit and not _installed("vllm_bnb_plugin"):
        # vLLM 0.28 moved bitsandbytes out of tree (vllm-project/vllm#43529): without the plugin, vLLM cannot load
        # the 4-bit policy that TRL hands it (quantization="bitsandbytes") or that Unsloth's fast_inference shares.
        problems.append(
            f"use_vllm: true with load_in_4bit needs vllm-bnb-plugin (vLLM >= 0.28 serves bitsandbytes 4-bit only "
            f"through it): {install} (or set --use_vllm false)"
        )
    if training_args.use_vllm and video:
        problems.append(
            "use_vllm: true with video prompts is not supported yet: TRL gives vLLM the prompt's video placeholder "
            "tokens without the clip, so it would sample without seeing the video while training scores the "
            "completions against it. Set --use_vllm false (generation runs in the trainer, with the clip)."
        )
    if training_args.use_vllm and text_encoder_policy and training_args.vllm_mode != "colocate":
        problems.append(
            "use_vllm: true with vllm_mode server is not supported for a diffusion pipeline's text encoder: its "
            "text_encoder/ folder holds no tokenizer, processor or chat template for a server to load. Use "
            "--vllm_mode colocate (the trainer serves it from <output_dir>/vllm_policy, assembled at start-up)."
        )
    return problems


def _unsloth_problems(model_args: VLMModelConfig, training_args: GRPOConfig) -> list[str]:
    """Settings that Unsloth (2026.10.9, the [unsloth] extra) refuses only after loading the weights, or ignores.

    With `use_vllm` the policy loads with `fast_inference=True`, Unsloth's own vLLM engine in the training process,
    which Unsloth supports for vision models of the types in `unsloth/models/vision.py: VLLM_SUPPORTED_VLM`
    (gemma3, qwen2_5_vl, qwen3_vl, mistral3, ...). There:
    - `FastVisionModel.get_peft_model` raises "Finetuning vision layers is not supported for fast_inference. Only
      text layers are supported!" (vLLM serves LoRA on the language model only);
    - `refuse_fast_inference_load_in_8bit` (`unsloth/models/loader_utils.py`) raises for bitsandbytes 8-bit;
    - a trained `modules_to_save` (our `train_projector`) raises "fast inference does not work with training ...";
    - Unsloth's GRPO patch (`unsloth/models/rl.py`) sets `vllm_mode='colocate'`: its engine is in-process, a
      `vllm_mode: server` would be silently ignored.
    Without `use_vllm`, `train_projector` is still refused: `load_unsloth_policy` has no way to hand it to
    `get_peft_model`, and training silently without it would not be the run that was asked for.
    """
    problems = []
    if model_args.train_projector:
        problems.append(
            "backend: unsloth does not train the projector fully here (train_projector: true); Unsloth's vLLM "
            "cannot keep trained modules_to_save in sync either. Set --train_projector false or --backend "
            "transformers."
        )
    if not training_args.use_vllm:
        return problems
    if model_args.train_vision:
        problems.append(
            "backend: unsloth with use_vllm (Unsloth's fast_inference) trains LoRA on the language model only: "
            "Unsloth refuses finetune_vision_layers with fast_inference (vLLM cannot serve LoRA on the vision tower). "
            "Set --train_vision false, or --use_vllm false (generation in the training process)."
        )
    if model_args.load_in_8bit:
        problems.append(
            "backend: unsloth with use_vllm (Unsloth's fast_inference) has no bitsandbytes 8-bit path: set "
            "--load_in_8bit false (--load_in_4bit true for 4-bit), or --use_vllm false."
        )
    if getattr(training_args, "vllm_mode", "colocate") != "colocate":
        problems.append(
            "backend: unsloth generates with its own vLLM engine inside the training process (vllm_mode colocate); "
            "Unsloth ignores vllm_mode: server. Set --vllm_mode colocate, or --backend transformers to use a server."
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


def unsloth_load_kwargs(model_args: VLMModelConfig, training_args: GRPOConfig, max_seq_length: int) -> dict[str, Any]:
    """Keyword arguments of `FastVisionModel.from_pretrained` for these settings (no GPU needed to build them).

    `use_vllm` maps to `fast_inference`: Unsloth's own vLLM engine, sharing the weights with the trained model, with
    `max_seq_length` as its context and `vllm_gpu_memory_utilization` of the GPU. `max_lora_rank` sizes vLLM's LoRA
    slot for the rank trained (Unsloth's default, 64, would reserve memory for a rank-64 adapter; a rank above 64
    would not fit at all). vLLM standby is not requested: see `unsloth_standby_warning`.
    """
    kwargs: dict[str, Any] = {
        "model_name": model_args.model_name_or_path,
        "max_seq_length": max_seq_length,
        "dtype": None if model_args.dtype in (None, "auto") else torch_dtype(model_args.dtype),
        "load_in_4bit": model_args.load_in_4bit,
        "load_in_8bit": model_args.load_in_8bit,
        "use_gradient_checkpointing": "unsloth" if training_args.gradient_checkpointing else False,
        "fast_inference": bool(training_args.use_vllm),
        "random_state": training_args.seed,  # also vLLM's sampling seed with fast_inference
    }
    if training_args.use_vllm:
        kwargs["gpu_memory_utilization"] = training_args.vllm_gpu_memory_utilization
        kwargs["max_lora_rank"] = model_args.lora_r
    return kwargs


def unsloth_peft_kwargs(model_args: VLMModelConfig, training_args: GRPOConfig) -> dict[str, Any]:
    """Keyword arguments of `FastVisionModel.get_peft_model`: LoRA on the language and/or vision layers."""
    return {
        "finetune_vision_layers": model_args.train_vision,
        "finetune_language_layers": model_args.train_language,
        "finetune_attention_modules": True,
        "finetune_mlp_modules": True,
        "r": model_args.lora_r,
        "lora_alpha": model_args.lora_alpha,
        "lora_dropout": model_args.lora_dropout,
        "bias": "none",
        "use_rslora": model_args.use_rslora,
        "random_state": training_args.seed,
        "use_gradient_checkpointing": "unsloth" if training_args.gradient_checkpointing else False,
    }


def unsloth_standby_warning(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why `UNSLOTH_VLLM_STANDBY=1` in this environment does not do what it says for our policies (None: not set).

    Standby (vLLM's sleep mode: its memory freed while the trainer runs the backward pass) is switched on by that
    variable, read when unsloth_zoo is imported: it then takes `expandable_segments` out of PyTorch's allocator
    (`unsloth_zoo/__init__.py`). But every policy here is a vision model, and Unsloth 2026.10.9's `load_vllm`
    (`unsloth_zoo/vllm_utils.py`) turns standby off again for those ("vLLM standby (sleep mode) is unstable for
    multimodal models", an illegal-address error on the first sleep) unless `UNSLOTH_VLLM_STANDBY_VISION=1` forces
    it. So it is never set here: vLLM keeps its `vllm_gpu_memory_utilization` share for the whole run, and the
    allocator keeps expandable segments.
    """
    if environ.get("UNSLOTH_VLLM_STANDBY", "0") == "0":
        return None
    if environ.get("UNSLOTH_VLLM_STANDBY_VISION", "0") != "0":
        return (
            "UNSLOTH_VLLM_STANDBY_VISION=1 forces vLLM standby on for this vision model, which Unsloth calls "
            "unstable for multimodal models (illegal-address errors on the first sleep)."
        )
    return (
        "UNSLOTH_VLLM_STANDBY is set, but Unsloth turns standby off for vision models, so vLLM keeps its "
        "vllm_gpu_memory_utilization share throughout; the variable only took expandable_segments out of "
        "PyTorch's allocator. Unset it."
    )


def load_unsloth_policy(model_args: VLMModelConfig, training_args: GRPOConfig, max_seq_length: int) -> tuple[Any, Any]:
    """Unsloth's FastVisionModel with LoRA applied (language and/or vision layers), and its processor.

    `use_vllm` maps to Unsloth's `fast_inference` (its own vLLM engine, sharing weights with the trained model); see
    `unsloth_load_kwargs`. No vLLM standby: Unsloth does not apply it to vision models (`unsloth_standby_warning`).
    """
    warning = unsloth_standby_warning()
    if warning:
        logger.warning(warning)
    from unsloth import FastVisionModel  # imported late: it patches trl/transformers, and needs a GPU

    model, processor = FastVisionModel.from_pretrained(**unsloth_load_kwargs(model_args, training_args, max_seq_length))
    model = FastVisionModel.get_peft_model(model, **unsloth_peft_kwargs(model_args, training_args))
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
