"""Per-GPU memory of a GRPO run, from its config alone: know before launch whether it fits.

    python -m core.plan recipes/grounding/config.yaml [--num_gpus 8] [--gpu_memory_gb 80] [--zero 2|3]
                        [--accelerate_config FILE] [--text_tokens 256] [any --<config key> value ...]

The config is parsed with the recipe's own dataclasses (its train.py `ScriptArguments` and aliases,
core.training.config's
`VLMGRPOConfig` and `VLMModelConfig`), so flags override the file exactly as they would for train.py. The model is
never loaded: parameter counts and module shapes come from the real classes built on the meta device from
`core.training.architectures` (hub ids of the recipes' real configs) or from a local/tiny checkpoint's config.json.

What is counted, per GPU (GB = 2**30 bytes, the unit torch and nvidia-smi report 80 GB cards in):
* resident: policy weights (model dtype, or bitsandbytes 4-bit for the linear layers with load_in_4bit), the reference
  model when beta > 0 without PEFT (TRL 1.15 builds none with PEFT: it disables the adapter to get the reference
  log-probs), LoRA adapters / modules_to_save, fp32 master weights and AdamW moments as DeepSpeed ZeRO-2 / ZeRO-3
  partition them (read from the recipe's deepspeed_zero*.yaml that run_8gpu.sh uses), the frozen DiT + VAE of the
  Qwen-Image recipes (bf16, on every rank: core.diffusion.pipeline.load_pipeline places the whole pipeline), the vLLM
  reservation (vllm_gpu_memory_utilization x card, colocate), a fixed allowance for the CUDA context and NCCL;
* train (forward + backward): gradients (ZeRO-partitioned) and DeepSpeed's reduce bucket, plus the activations of one
  micro-batch (per_device_train_batch_size sequences of prompt + completion tokens) with or without gradient
  checkpointing; step: the gradient partition and its fp32 copy DeepSpeed makes for AdamW;
* generation (transformers generate, when use_vllm is off): the KV cache of the whole per-device generation batch
  (per_device_train_batch_size x steps_per_generation sequences), the prefill's transient activations and, under
  ZeRO-3, the full 16-bit weights TRL gathers for generation (ds3_gather_for_generation);
* render (Qwen-Image recipes): the DiT's forward activations and the VAE's decode (and, for edits, encode) of the
  generation batch, with VAE slicing/tiling and DiT offload as the recipe's flags set them.
The peak is the largest of these phases. Every assumption is printed with the table.

`warn_if_over_budget` runs the same plan at start-up (every recipe's train.py calls it right after `check_backend`) and
logs a warning when it exceeds the visible GPU's memory; it never raises, and does nothing without a GPU.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.tools.recipe_modules import load_recipe_module

logger = logging.getLogger(__name__)

GiB = 1024**3

# --- fixed assumptions (each printed with the plan) ------------------------------------------------------------------
CUDA_CONTEXT_GB = 1.0  # CUDA context, cuBLAS/NCCL workspaces: outside torch's allocator (typically 0.5-1.5 GB)
DS_REDUCE_BUCKET = int(5e8)  # DeepSpeed's default reduce_bucket_size (elements; deepspeed/runtime/zero/config.py)
DS_PREFETCH_BUCKET = int(5e7)  # ZeRO-3 stage3_prefetch_bucket_size default
NF4_BYTES = 0.5 + 0.5 / 64 * 0.25  # 4-bit weight + double-quantised absmax per 64-block (bitsandbytes nf4)
TRL_TOKEN_CHUNK = 4096  # trl/kernels/chunked_logprob.py TOKEN_CHUNK_SIZE
TRL_VOCAB_CHUNK = 32768  # trl/trainer/utils.py _CHUNKED_LOGPROB_CHUNK_SIZE
DEFAULT_TEXT_TOKENS = 256  # prompt text around the image: template, system turn, question / instruction
QWEN_VIDEO_MAX_PIXELS = 768 * 28 * 28  # qwen-vl-utils' per-frame VIDEO_MAX_PIXELS when the config sets none
VAE_DECODE_FACTOR = 12  # VAE decode peak ~ factor x (H x W x base_dim) values per image (Wan-2.1 decoder; unmeasured)
VAE_ENCODE_FACTOR = 8  # VAE encode peak, the same way (the edit pipeline encodes the condition image)


# ---------------------------------------------------------------------------------------------------------------------
# Model shapes
# ---------------------------------------------------------------------------------------------------------------------

# Leaf names of the linear layers in a transformer block, by the tensor they read: attn_in (normed hidden), o_in (the
# attention output), mlp_in (normed hidden), down_in (the MLP's inner activation).
LINEAR_INPUTS = {
    "q_proj": "attn_in",
    "k_proj": "attn_in",
    "v_proj": "attn_in",
    "qkv": "attn_in",
    "o_proj": "o_in",
    "proj": "o_in",
    "out_proj": "o_in",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
    "linear_fc1": "mlp_in",
    "fc1": "mlp_in",
    "down_proj": "down_in",
    "linear_fc2": "down_in",
    "fc2": "down_in",
}


@dataclass
class BlockShape:
    """One transformer block as the activation model sees it."""

    hidden: int
    q_dim: int  # heads x head_dim
    kv_dim: int  # kv heads x head_dim
    intermediate: int
    norms: int  # norms on the residual stream per block (2; Gemma-3: 4)
    norm_kind: str  # "rms" (Qwen: fp32 upcast, weight x normed), "gemma" (fp32 throughout), "layer" (LayerNorm)
    qk_norm: bool  # per-head RMSNorm on q and k (Qwen3, Gemma-3)
    gated: bool  # SwiGLU / GeGLU (gate, up, down) vs fc1 -> act -> fc2
    linear_leaves: tuple[str, ...]

    def input_dim(self, group: str) -> int:
        return {"attn_in": self.hidden, "o_in": self.q_dim, "mlp_in": self.hidden, "down_in": self.intermediate}[group]


@dataclass
class ModelShape:
    family: str
    layers: int
    text: BlockShape
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    sliding_window: int | None = None
    sliding_layers: int = 0
    vision: BlockShape | None = None
    vision_depth: int = 0
    patch: int = 14
    merge: int = 2
    temporal_patch: int = 2
    fixed_image_tokens: int | None = None  # Gemma-3: every image is this many tokens
    fixed_image_patches: int | None = None  # Gemma-3: (896 / 14)^2 patches through SigLIP
    mergers: int = 1  # Qwen3-VL: the merger plus its deepstack mergers


def shape_from_config(config: Any) -> ModelShape:
    """The dimensions the activation and KV-cache terms need, from a transformers VLM config (real or tiny)."""
    text = config.get_text_config()
    heads, kv_heads = text.num_attention_heads, getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    family = config.model_type
    gemma = family == "gemma3"
    text_block = BlockShape(
        hidden=text.hidden_size,
        q_dim=heads * head_dim,
        kv_dim=kv_heads * head_dim,
        intermediate=text.intermediate_size,
        norms=4 if gemma else 2,
        norm_kind="gemma" if gemma else "rms",
        qk_norm=family in ("gemma3", "qwen3_vl"),
        gated=True,
        linear_leaves=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    )
    layer_types = list(getattr(text, "layer_types", None) or [])
    shape = ModelShape(
        family=family,
        layers=text.num_hidden_layers,
        text=text_block,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab=text.vocab_size,
        sliding_window=getattr(text, "sliding_window", None) if gemma else None,
        sliding_layers=sum(t == "sliding_attention" for t in layer_types) if gemma else 0,
    )
    vision = getattr(config, "vision_config", None)
    if vision is None:
        return shape
    if gemma:
        shape.vision = BlockShape(
            hidden=vision.hidden_size,
            q_dim=vision.hidden_size,
            kv_dim=vision.hidden_size,
            intermediate=vision.intermediate_size,
            norms=2,
            norm_kind="layer",
            qk_norm=False,
            gated=False,
            linear_leaves=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
        )
        shape.vision_depth = vision.num_hidden_layers
        shape.patch = vision.patch_size
        shape.merge = 1
        shape.fixed_image_tokens = int(getattr(config, "mm_tokens_per_image", 256))
        shape.fixed_image_patches = (vision.image_size // vision.patch_size) ** 2
        return shape
    qwen3 = family == "qwen3_vl"
    shape.vision = BlockShape(
        hidden=vision.hidden_size,
        q_dim=vision.hidden_size,
        kv_dim=vision.hidden_size,
        intermediate=vision.intermediate_size,
        norms=2,
        norm_kind="layer" if qwen3 else "rms",
        qk_norm=False,
        gated=not qwen3,
        linear_leaves=("qkv", "proj", "linear_fc1", "linear_fc2")
        if qwen3
        else ("qkv", "proj", "gate_proj", "up_proj", "down_proj"),
    )
    shape.vision_depth = vision.depth
    shape.patch = vision.patch_size
    shape.merge = vision.spatial_merge_size
    shape.temporal_patch = vision.temporal_patch_size
    shape.mergers = 1 + len(getattr(vision, "deepstack_visual_indexes", None) or [])
    return shape


# ---------------------------------------------------------------------------------------------------------------------
# Activations (bytes), the term tests/test_plan.py checks against measured peaks of tiny models on CPU
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Training:
    """How a block's parameters train: 'full', 'lora' (frozen base + adapters), 'frozen' (gradients flow through to
    earlier trainable parts), 'none' (nothing before or inside needs a gradient: no graph is kept)."""

    mode: str
    lora_leaves: frozenset[str] = frozenset()
    lora_r: int = 0
    lora_dropout: bool = False
    dropout_mask_bytes: int = 1  # CUDA's fused dropout keeps a bool mask; CPU's keeps a mask in the input's dtype


def _norm_bytes(kind: str, dim: int, b: int, full: bool) -> float:
    """Bytes a norm keeps for backward per token. Qwen's RMSNorm upcasts to fp32 (its fp32 input is kept by pow/mul;
    the normed value only when the weight trains); Gemma's keeps fp32 input (and fp32 output when the weight trains);
    LayerNorm keeps its input."""
    if kind == "rms":
        return 4 * dim + (b * dim if full else 0)
    if kind == "gemma":
        return 4 * dim * (2 if full else 1)
    return b * dim


def block_saved_bytes(block: BlockShape, b: int, training: Training, kv_repeat: bool) -> float:
    """Bytes per token one block keeps for backward (autograd keeps a tensor only for a gradient that is needed:
    frozen linears keep no input, frozen norms no output)."""
    if training.mode == "none":
        return 0.0
    full = training.mode == "full"
    total = block.norms * _norm_bytes(block.norm_kind, block.hidden, b, full)
    if block.qk_norm:
        total += _norm_bytes("gemma" if block.norm_kind == "gemma" else "rms", block.q_dim + block.kv_dim, b, full)
    kv = block.q_dim if kv_repeat else block.kv_dim
    total += b * (2 * block.q_dim + 2 * kv)  # scaled_dot_product_attention keeps q, k, v and its output
    total += b * block.intermediate * (3 if block.gated else 1)  # act(gate), gate, up  /  fc1 output
    saved_inputs: set[str] = set()
    if full:
        saved_inputs = {LINEAR_INPUTS[leaf] for leaf in block.linear_leaves}
    for leaf in training.lora_leaves:
        group = LINEAR_INPUTS[leaf]
        if training.lora_dropout:  # each adapter draws its own dropout of the input: the copy and its mask stay
            total += (b + training.dropout_mask_bytes) * block.input_dim(group)
        else:
            saved_inputs.add(group)
        total += b * training.lora_r  # lora_A's output, kept by lora_B
    total += sum(b * block.input_dim(group) for group in saved_inputs)
    return total


def block_backward_transient(block: BlockShape, b: int) -> float:
    """Gradients alive at once inside one block's backward (per token): of the MLP's inner activations and the
    hidden state, beside what the block keeps."""
    return b * (2 * block.intermediate + 2 * block.hidden)


def block_forward_transient(block: BlockShape, b: int) -> float:
    """Peak per token of one block's forward when nothing is kept (no_grad, or a frozen tower): residual, normed
    input and the MLP's inner tensors (or q/k/v/out in attention, whichever is larger)."""
    mlp = block.intermediate * (3 if block.gated else 2)
    attn = 2 * block.q_dim + 2 * block.kv_dim
    return b * (2 * block.hidden + max(mlp, attn))


@dataclass
class ActivationInput:
    shape: ModelShape
    batch: int  # sequences in the micro-batch
    seq: int  # prompt + completion tokens per sequence (padded length)
    completion: int  # tokens scored (the LM head runs on these only)
    patches: int  # vision patches of the micro-batch (before the spatial merge)
    dtype_bytes: int  # 2 (bf16) or 4 (fp32)
    checkpointing: bool
    text: Training
    vision: Training  # of the tower's blocks
    projector_trains: bool
    kv_repeat: bool  # sdpa with a padding mask repeats k/v to every head (transformers' repeat_kv); flash does not
    padded: bool = True  # a 4D mask is built (left-padded GRPO batches; Gemma-3 builds its sliding masks anyway)
    lm_head: str = "fused"  # "fused": TRL's tiled log-prob head; "none": the backbone only (tests)


def activation_terms(a: ActivationInput) -> dict[str, float]:
    """Peak activation bytes of one forward + backward, split into named terms whose sum is the peak."""
    s, b = a.shape, a.dtype_bytes
    tokens = a.batch * a.seq
    terms: dict[str, float] = {}
    text_saved = block_saved_bytes(s.text, b, a.text, a.kv_repeat)
    if a.checkpointing:
        kept = s.layers * b * s.text.hidden  # each checkpointed block keeps its input only
        recompute = text_saved + block_backward_transient(s.text, b)
        terms["language layers (checkpointed inputs)"] = tokens * kept
        terms["one layer recomputed in backward"] = tokens * recompute
    else:
        terms["language layers"] = tokens * (s.layers * text_saved + block_backward_transient(s.text, b))
    final_norm = _norm_bytes(s.text.norm_kind, s.text.hidden, b, a.text.mode == "full")
    rope = 2 * b * s.head_dim + (24 if s.family != "gemma3" else 8)  # cos/sin (+ 3D position ids for M-RoPE)
    # 4D masks (batch x seq x seq), taken as additive fp32 masks: one, or a full and a sliding one for Gemma-3
    mask = a.batch * a.seq * a.seq * 4 * (2 if s.sliding_layers else 1) if (a.padded or s.sliding_layers) else 0
    terms["rotary tables, positions, attention mask, final norm"] = tokens * (rope + final_norm) + mask
    if a.lm_head == "fused":
        kept_hidden = a.batch * a.completion * (b * s.text.hidden + 16)
        tile = min(a.batch * a.completion, TRL_TOKEN_CHUNK) * min(s.vocab, TRL_VOCAB_CHUNK) * 4
        terms["LM head (TRL fused log-probs, one tile)"] = kept_hidden + tile
    # vision tower and projector
    if s.vision is not None and a.patches:
        v = s.vision
        if a.vision.mode == "none":
            vision_kept = 0.0
            # a frozen tower keeps nothing: its forward peak happens before the language model's activations exist
            vision_transient = a.patches * block_forward_transient(v, b)
        else:
            saved = block_saved_bytes(v, b, a.vision, kv_repeat=False)
            if a.checkpointing:
                vision_kept = a.patches * (s.vision_depth * b * v.hidden)
                vision_transient = a.patches * (saved + block_backward_transient(v, b))
            else:
                vision_kept = a.patches * (s.vision_depth * saved)
                vision_transient = a.patches * block_backward_transient(v, b)
        if a.projector_trains or a.vision.mode != "none":
            # Qwen merger: norm on patches, then fc1 -> GELU -> fc2 on merged tokens (4 patches each); Gemma: pooled
            per_patch = (4 + b) * v.hidden + 3 * b * v.hidden if s.fixed_image_tokens is None else 0
            vision_kept += a.patches * per_patch * s.mergers
        if vision_kept:
            terms["vision tower / projector (kept for backward)"] = vision_kept
        language_peak = sum(terms.values())
        if vision_transient > language_peak - vision_kept:
            terms["vision forward transient (beyond the language peak)"] = vision_transient - (
                language_peak - vision_kept
            )
    return terms


def kv_cache_bytes(shape: ModelShape, sequences: int, length: int, b: int) -> float:
    """transformers' DynamicCache: k and v per layer; Gemma-3's sliding layers keep at most their window."""
    sliding = shape.sliding_layers
    window = min(length, shape.sliding_window or length)
    per_token_layer = 2 * shape.kv_heads * shape.head_dim * b
    return sequences * per_token_layer * ((shape.layers - sliding) * length + sliding * window)


# ---------------------------------------------------------------------------------------------------------------------
# Parameter counts (meta device)
# ---------------------------------------------------------------------------------------------------------------------


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


def _is_pipeline(name: str) -> bool:
    from core.testing.tiny import TINY_PIPELINES, TINY_PREFIX
    from core.training.architectures import architecture, has_architecture

    if has_architecture(name):
        return architecture(name)["kind"] == "pipeline"
    if name.startswith(TINY_PREFIX):
        return name[len(TINY_PREFIX) :] in TINY_PIPELINES
    return (Path(name) / "model_index.json").is_file()


@functools.lru_cache(maxsize=8)
def _meta_policy_and_pipeline(name: str) -> tuple[Any, PipelineInfo | None, dict[str, Any]]:
    """The policy VLM on the meta device, the frozen pipeline's facts (None for a plain VLM) and processor facts
    (cached: meta models hold no memory, and the what-if variants re-plan the same model)."""
    import torch
    from transformers import AutoConfig

    from core.testing.tiny import resolve_model_path
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
                f"{name}: no architecture facts in core.training.architectures and no local checkpoint at {path}; "
                "add the "
                "checkpoint's config.json values to core.training.architectures.ARCHITECTURES "
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


# ---------------------------------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Launch:
    """How the run is launched (not in the training config): run_8gpu.sh's defaults."""

    num_gpus: int = 8
    zero_stage: int = 2  # 0: no DeepSpeed (one process, or plain DDP)
    offload_optimizer: bool = False
    offload_param: bool = False
    gpu_memory_gb: float = 80.0
    text_tokens: int = DEFAULT_TEXT_TOKENS
    images_per_prompt: int = 1  # image VLM recipes; video recipes read frames; Qwen-Image t2i has none
    accelerate_config: str | None = None


@dataclass
class Item:
    name: str
    gb: float
    phase: str  # resident | train | generate | render
    note: str = ""


@dataclass
class Plan:
    items: list[Item]
    assumptions: list[str]
    launch: Launch
    params: dict[str, int]
    model: str
    changes: list[tuple[str, float]] = field(default_factory=list)

    PHASES = ("train", "step", "generate", "render")

    def phase_total(self, phase: str) -> float:
        return sum(i.gb for i in self.items if i.phase in ("resident", phase))

    def phase_totals(self) -> dict[str, float]:
        present = {i.phase for i in self.items}
        return {p: self.phase_total(p) for p in self.PHASES if p in present or p == "train"}

    @property
    def total_gb(self) -> float:
        return max(self.phase_totals().values())

    @property
    def peak_phase(self) -> str:
        totals = self.phase_totals()
        return max(totals, key=totals.get)

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.launch.gpu_memory_gb

    def markdown(self) -> str:
        """The same plan as Markdown (component table, phase peaks, verdict, assumptions), for README sections."""
        launch = self.launch
        zero = f"DeepSpeed ZeRO-{launch.zero_stage}" if launch.zero_stage else "no DeepSpeed"
        lines = [
            f"Per GPU: {self.model}, {launch.num_gpus} GPU(s), {zero}, {launch.gpu_memory_gb:g} GB cards "
            "(GB = 2^30 bytes).",
            "",
            "| component | GB | when |",
            "|---|---:|---|",
        ]
        for item in self.items:
            note = f" ({item.note})" if item.note else ""
            lines.append(f"| {item.name}{note} | {item.gb:.2f} | {item.phase} |")
        for phase, gb in self.phase_totals().items():
            lines.append(f"| peak during {phase} | {gb:.2f} | |")
        verdict = "fits" if self.fits else "does not fit"
        lines.append(
            f"| **total (peak per GPU, during {self.peak_phase})** | **{self.total_gb:.1f}** | "
            f"**{verdict} in {launch.gpu_memory_gb:g} GB** |"
        )
        if self.changes:
            lines += ["", "Changes, cheapest first (new peak per GPU):", ""]
            lines += [f"- {label}: {gb:.1f} GB" for label, gb in self.changes]
        lines += ["", "Assumptions:", ""] + [f"- {a}" for a in self.assumptions]
        return "\n".join(lines)

    def format(self) -> str:
        launch = self.launch
        zero = f"DeepSpeed ZeRO-{launch.zero_stage}" if launch.zero_stage else "no DeepSpeed"
        lines = [
            f"Memory plan per GPU: {self.model}, {launch.num_gpus} GPU(s), {zero}, {launch.gpu_memory_gb:g} GB cards",
            "",
            f"{'component':<64} {'GB':>8}  when",
        ]
        for item in self.items:
            note = f"  ({item.note})" if item.note else ""
            lines.append(f"{item.name:<64} {item.gb:>8.2f}  {item.phase}{note}")
        lines.append("-" * 84)
        for phase, gb in self.phase_totals().items():
            lines.append(f"{'peak during ' + phase:<64} {gb:>8.2f}")
        verdict = "fits" if self.fits else "DOES NOT FIT"
        lines.append(f"{'total (peak per GPU, during ' + self.peak_phase + ')':<64} {self.total_gb:>8.2f}")
        headroom = launch.gpu_memory_gb - self.total_gb
        lines.append(
            f"verdict: {verdict} in {launch.gpu_memory_gb:g} GB per GPU "
            + (f"({headroom:.1f} GB to spare)" if self.fits else f"({-headroom:.1f} GB over)")
        )
        if self.changes:
            lines += ["", "changes, cheapest first (new peak per GPU):"]
            for label, gb in self.changes:
                mark = "fits" if gb <= launch.gpu_memory_gb else "still over"
                lines.append(f"  {label}: {gb:.1f} GB ({mark})")
        elif not self.fits:
            lines += ["", "no change this planner knows brings the peak under the budget"]
        lines += ["", "parameters: " + ", ".join(f"{k} {v:,}" for k, v in self.params.items())]
        lines += ["", "assumptions:"] + [f"  - {a}" for a in self.assumptions]
        return "\n".join(lines)


def _dtype_bytes(name: str | None) -> int:
    return 4 if name in ("float32", "fp32") else 2


def _qwen_tokens(pixels: int, patch: int, merge: int) -> int:
    return max(1, pixels // (patch * merge) ** 2)


def _edit_condition_tokens(area: int, processor: dict[str, Any], patch: int, merge: int) -> int:
    """Image tokens of the square condition image of `area` pixels after the Qwen processor's smart_resize."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    side = int(math.sqrt(area))
    side = max(32, side // 32 * 32)  # diffusers' calculate_dimensions rounds to multiples of 32
    factor = patch * merge
    h, w = smart_resize(
        side,
        side,
        factor=factor,
        min_pixels=int(processor.get("min_pixels") or 56 * 56),
        max_pixels=int(processor.get("max_pixels") or 28 * 28 * 1280),
    )
    return (h // factor) * (w // factor)


def plan_run(script_args: Any, training_args: Any, model_args: Any, launch: Launch | None = None) -> Plan:
    """The per-GPU memory plan of the run the three parsed config objects describe."""
    launch = launch or Launch()
    name = model_args.model_name_or_path
    policy, pipe, processor = _meta_policy_and_pipeline(name)
    shape = shape_from_config(policy.config)
    counts = count_policy(policy, model_args)
    unsloth = getattr(script_args, "backend", "transformers") == "unsloth"
    if unsloth:
        launch = dataclasses.replace(launch, num_gpus=1, zero_stage=0, offload_optimizer=False, offload_param=False)
    n, zero = launch.num_gpus, launch.zero_stage
    b = _dtype_bytes(model_args.dtype)
    items: list[Item] = []
    notes: list[str] = [
        "GB = 2**30 bytes; 'when': resident = held for the whole run, the others add to it only in that phase",
        f"CUDA context, cuBLAS and NCCL workspaces: a fixed {CUDA_CONTEXT_GB:g} GB (outside torch's allocator)",
    ]
    shard = n if zero == 3 else 1

    def add(label: str, nbytes: float, phase: str, note: str = "") -> None:
        items.append(Item(label, nbytes / GiB, phase, note))

    # --- weights --------------------------------------------------------------------------------------------------
    four_bit = bool(getattr(model_args, "load_in_4bit", False))
    if four_bit:
        weights = counts.linear_weights * NF4_BYTES + (counts.total - counts.linear_weights) * b
        note = "bitsandbytes nf4 linears, the rest in " + (model_args.dtype or "bf16")
        notes.append("load_in_4bit: every nn.Linear but lm_head in nf4 with double quantisation (~0.51 B/param)")
    else:
        weights = counts.total * b
        note = f"{model_args.dtype or 'bfloat16'}, {counts.total / 1e9:.2f} B params"
    if zero == 3 and not four_bit:
        weights /= n
        note += f", ZeRO-3 shard 1/{n}"
        if launch.offload_param:
            weights = 0.0
            note += ", offloaded to CPU (offload_param_device)"
    policy_label = "policy weights" + (" (Qwen-Image text encoder = policy)" if pipe else "")
    if unsloth and training_args.use_vllm:
        note += "; shared with Unsloth's vLLM engine, inside its reservation below"
        add(policy_label, 0, "resident", note)
    else:
        add(policy_label, weights, "resident", note)
    if training_args.beta > 0 and not model_args.use_peft:
        ref = counts.total * b / shard
        add("reference model (beta > 0, no PEFT)", ref, "resident", "ZeRO-3 shard" if shard > 1 else "full copy")
        notes.append("reference model: a second copy of the policy (TRL builds it when beta > 0 and PEFT is off)")
    elif training_args.beta > 0:
        notes.append(
            "no reference model: with PEFT, TRL 1.15 computes the reference log-probs with the adapter disabled"
        )

    # --- trainable state ------------------------------------------------------------------------------------------
    t = counts.trainable
    deepspeed = zero > 0
    if model_args.use_peft:
        add(
            f"LoRA adapters (r={model_args.lora_r}, {counts.lora:,} params)",
            counts.lora * (b if deepspeed else 4) / shard,
            "resident",
            "bf16 under DeepSpeed" if deepspeed else "fp32 (PEFT's autocast_adapter_dtype)",
        )
        if counts.modules_to_save:
            add(
                f"modules_to_save copies ({counts.modules_to_save:,} params, e.g. the projector)",
                counts.modules_to_save * b / shard,
                "resident",
            )
    state_shard = n if deepspeed else 1
    if deepspeed:
        add(
            "fp32 master weights of the trainable params",
            4 * t / state_shard * (0 if launch.offload_optimizer else 1),
            "resident",
            f"ZeRO-{zero}: 1/{n} each" + (", offloaded to CPU" if launch.offload_optimizer else ""),
        )
    add(
        "AdamW moments (fp32 m and v)",
        8 * t / state_shard * (0 if launch.offload_optimizer else 1),
        "resident",
        (f"ZeRO-{zero}: 1/{n} each" if deepspeed else "one process")
        + (", offloaded to CPU" if launch.offload_optimizer else ""),
    )
    grad_bytes = (2 if deepspeed else (4 if model_args.use_peft else b)) * t
    add(
        "gradients of the trainable params",
        grad_bytes / state_shard,
        "train",
        f"ZeRO-{zero}: partitioned 1/{n}" if deepspeed else "",
    )
    if deepspeed:
        add("gradients again, bf16 partition (optimizer step)", grad_bytes / state_shard, "step")
        add(
            "fp32 copy of the gradient partition (optimizer step)",
            4 * t / state_shard,
            "step",
            "DeepSpeed upcasts before AdamW" + (", on CPU" if launch.offload_optimizer else ""),
        )
        if launch.offload_optimizer:
            items[-1].gb = 0.0
        add(
            "DeepSpeed reduce bucket (reduce_bucket_size 5e8, bf16)", DS_REDUCE_BUCKET * 2, "train", "DeepSpeed default"
        )
        if zero == 3:
            add(
                "ZeRO-3 gathered layers + prefetch bucket",
                2 * counts.largest_layer * b + DS_PREFETCH_BUCKET * b,
                "train",
            )
        notes.append(
            "DeepSpeed (accelerate config without explicit buckets): bf16 params, fp32 master + AdamW partitioned over "
            f"the {n} ranks ({'weights too' if zero == 3 else 'weights replicated'}), reduce_bucket_size 5e8"
        )
    else:
        notes.append("no DeepSpeed: the optimizer and gradients are not partitioned")
    add("CUDA context, NCCL, workspaces", CUDA_CONTEXT_GB * GiB, "resident", "assumed")

    # --- sequence lengths ---------------------------------------------------------------------------------------
    text_tokens = launch.text_tokens
    image_tokens = patches = 0
    patch, merge = int(processor.get("patch_size") or shape.patch), int(processor.get("merge_size") or shape.merge)
    max_frames = getattr(script_args, "max_frames", None)
    if pipe is not None:
        if pipe.edit:
            area = getattr(script_args, "condition_area", None) or 1024 * 1024
            image_tokens = _edit_condition_tokens(area, processor, patch, merge)
            patches = image_tokens * merge * merge
            notes.append(
                f"prompt: the condition image at {area:,} px = {image_tokens} image tokens + {text_tokens} "
                "text tokens (edit template and instruction)"
            )
        else:
            notes.append(f"prompt: text only, {text_tokens} tokens (Qwen-Image template + prompt)")
    elif max_frames:
        frames = int(max_frames) // 2 * 2
        pixels = getattr(script_args, "max_pixels_per_frame", None) or QWEN_VIDEO_MAX_PIXELS
        per_group = _qwen_tokens(int(pixels), patch, merge)
        image_tokens = frames // shape.temporal_patch * per_group
        patches = image_tokens * merge * merge
        notes.append(
            f"prompt: a video of max_frames={frames} frames at {int(pixels):,} px per frame = {image_tokens} "
            f"video tokens ({per_group} per {shape.temporal_patch}-frame group) + {text_tokens} text tokens"
        )
    elif shape.fixed_image_tokens is not None:
        image_tokens = shape.fixed_image_tokens * launch.images_per_prompt
        patches = (shape.fixed_image_patches or 0) * launch.images_per_prompt
        notes.append(
            f"prompt: {launch.images_per_prompt} image(s) of {shape.fixed_image_tokens} tokens each (fixed "
            f"size) + {text_tokens} text tokens"
        )
    else:
        max_pixels = model_args.max_pixels or processor.get("max_pixels") or 28 * 28 * 1280
        per_image = _qwen_tokens(int(max_pixels), patch, merge)
        image_tokens = per_image * launch.images_per_prompt
        patches = image_tokens * merge * merge
        notes.append(
            f"prompt: {launch.images_per_prompt} image(s) at max_pixels={int(max_pixels):,} = at most "
            f"{per_image} image tokens each + {text_tokens} text tokens (worst case: every image at the cap)"
        )
    prompt = text_tokens + image_tokens
    completion = training_args.max_completion_length
    seq = prompt + completion
    per_device = training_args.per_device_train_batch_size
    steps_per_gen = training_args.steps_per_generation or training_args.gradient_accumulation_steps
    gen_batch = per_device * steps_per_gen
    notes.append(
        f"sequence: {prompt} prompt + {completion} completion tokens (max_completion_length, every "
        f"completion at the cap); micro-batch {per_device}; generation batch {per_device} x "
        f"{steps_per_gen} (steps_per_generation) = {gen_batch} sequences per GPU"
    )

    # --- activations -----------------------------------------------------------------------------------------------
    groups = {
        g
        for g, on in (
            ("language", model_args.train_language),
            ("vision", model_args.train_vision),
            ("projector", model_args.train_projector),
        )
        if on
    }
    dropout = bool(model_args.lora_dropout and model_args.lora_dropout > 0)

    def training_of(group: str) -> Training:
        if group not in groups:
            return Training("frozen" if group == "language" else "none")
        if model_args.use_peft and group != "projector":
            return Training("lora", counts.lora_leaves.get(group, frozenset()), model_args.lora_r, dropout)
        return Training("full")

    attn = model_args.attn_implementation or "sdpa"
    unsloth_offload = unsloth and training_args.gradient_checkpointing
    act_input = ActivationInput(
        shape=shape,
        batch=per_device,
        seq=seq,
        completion=completion,
        patches=patches * per_device,
        dtype_bytes=b,
        checkpointing=bool(training_args.gradient_checkpointing),
        text=training_of("language"),
        vision=training_of("vision"),
        projector_trains="projector" in groups,
        kv_repeat=attn != "flash_attention_2",
    )
    terms = activation_terms(act_input)
    if unsloth_offload:
        kept = terms.pop("language layers (checkpointed inputs)", 0.0)
        notes.append(
            f"Unsloth's gradient checkpointing keeps the layer inputs in host RAM ({kept / GiB:.2f} GB off the GPU)"
        )
    for label, nbytes in terms.items():
        add("activations: " + label, nbytes, "train")
    notes.append(
        "activations: "
        + (
            "gradient checkpointing per decoder layer (inputs kept, one layer recomputed)"
            if training_args.gradient_checkpointing
            else "no gradient checkpointing (every layer keeps its tensors)"
        )
        + f"; attention {attn}"
        + (" with a padding mask: k/v repeated to every head" if act_input.kv_repeat else "")
        + "; TRL's fused LM head scores the completion in tiles (no full logits)"
    )

    # --- generation --------------------------------------------------------------------------------------------------
    if training_args.use_vllm:
        util = training_args.vllm_gpu_memory_utilization
        if training_args.vllm_mode == "colocate":
            add(
                f"vLLM reservation (vllm_gpu_memory_utilization {util} x card)",
                util * launch.gpu_memory_gb * GiB,
                "resident",
                "its own weights + KV cache" if not unsloth else "Unsloth: policy weights + KV cache",
            )
            notes.append("vLLM colocate: its share of the card is held for the whole run (no sleep mode)")
        else:
            notes.append("vLLM server mode: generation runs on other GPUs, nothing here")
    else:
        kv = kv_cache_bytes(shape, gen_batch, seq, b)
        add(
            f"KV cache ({gen_batch} seq x {seq} tokens x {shape.layers} layers x {shape.kv_heads} kv heads x "
            f"{shape.head_dim})",
            kv,
            "generate",
        )
        prefill = (
            gen_batch * prompt * block_forward_transient(shape.text, b) + gen_batch * prompt * 2 * b * shape.text.hidden
        )
        if shape.vision is not None and patches:
            prefill = max(prefill, gen_batch * patches * block_forward_transient(shape.vision, b))
        add("prefill activations (no grad, one layer at a time)", prefill, "generate")
        if zero == 3 and getattr(training_args, "ds3_gather_for_generation", True):
            add(
                "ZeRO-3: full 16-bit weights gathered for generation",
                counts.total * b * (1 - 1 / n),
                "generate",
                "ds3_gather_for_generation",
            )
        notes.append("generation with transformers generate (use_vllm false): the whole generation batch at once")

    # --- frozen pipeline ---------------------------------------------------------------------------------------------
    if pipe is not None:
        offload = bool(getattr(script_args, "offload_dit", False))
        dit_bytes = pipe.dit_params * 2
        add(
            f"frozen DiT (QwenImageTransformer2DModel, {pipe.dit_params / 1e9:.2f} B params, bf16)",
            dit_bytes,
            "render" if offload else "resident",
            "offload_dit: lent to the GPU for each render" if offload else "",
        )
        add(
            f"frozen VAE (AutoencoderKLQwenImage, {pipe.vae_params / 1e6:.0f} M params, bf16)",
            pipe.vae_params * 2,
            "resident",
        )
        height = getattr(script_args, "edit_height", None) or getattr(script_args, "image_height", None)
        width = getattr(script_args, "edit_width", None) or getattr(script_args, "image_width", None)
        area = (height or 1024) * (width or 1024)
        cfg = 2 if (getattr(script_args, "true_cfg_scale", 1.0) or 1.0) > 1 else 1
        image_seq = area // (pipe.vae_scale * 2) ** 2
        cond_seq = (
            (getattr(script_args, "condition_area", None) or 1024 * 1024) // (pipe.vae_scale * 2) ** 2
            if pipe.edit
            else 0
        )
        dit_tokens = gen_batch * cfg * (image_seq + cond_seq + seq)
        dit_act = dit_tokens * 2 * (14 * pipe.dit_inner)
        add(
            f"DiT forward activations ({gen_batch * cfg} x {image_seq + cond_seq} image + {seq} text tokens)",
            dit_act,
            "render",
            "no grad, one block at a time",
        )
        slicing = bool(getattr(script_args, "vae_slicing", False))
        tiling = bool(getattr(script_args, "vae_tiling", False))
        tile = int(getattr(script_args, "vae_tile_size", None) or 256)
        pixels = min(area, tile * tile) if tiling else area
        images = 1 if slicing else gen_batch * cfg
        vae_act = images * pixels * pipe.vae_base_dim * 2 * VAE_DECODE_FACTOR
        if pipe.edit:
            cond_pixels = min(
                getattr(script_args, "condition_area", None) or 1024 * 1024, tile * tile if tiling else 1 << 62
            )
            vae_act = max(vae_act, images * cond_pixels * pipe.vae_base_dim * 2 * VAE_ENCODE_FACTOR)
        add(
            f"VAE decode{'/encode' if pipe.edit else ''} ({images} image(s) at once, "
            f"{'tiles of ' + str(tile) + ' px' if tiling else str(area) + ' px'})",
            vae_act,
            "render",
            "unmeasured estimate",
        )
        # the policy's forward for the prompt embeddings (no grad) precedes the DiT; take the larger
        notes.append(
            f"render: {area:,} px images (pipeline default 1024 x 1024 unless set), DiT sequence = image "
            "latents / 16^2 (+ the condition image's for edits) + the text; VAE peak "
            f"~{VAE_DECODE_FACTOR} x H x W x {pipe.vae_base_dim} values per image (estimate, not measured)"
        )
        notes.append(
            "the DiT and VAE are bf16 on every rank (load_pipeline moves the whole pipeline; DeepSpeed does "
            "not shard them)"
        )

    params = {"policy": counts.total, "trainable": counts.trainable}
    if model_args.use_peft:
        params["lora"] = counts.lora
    if pipe is not None:
        params.update(dit=pipe.dit_params, vae=pipe.vae_params)
    if unsloth:
        notes.append("backend unsloth: one process on one GPU, no DeepSpeed (num_gpus and ZeRO ignored)")
    notes.append("not counted: the CUDA caching allocator's fragmentation (often 5-10% more than the peak above)")
    return Plan(items=items, assumptions=notes, launch=launch, params=params, model=name)


# ---------------------------------------------------------------------------------------------------------------------
# What-ifs: the cheapest changes that make a run fit
# ---------------------------------------------------------------------------------------------------------------------


def _variants(script_args: Any, training_args: Any, model_args: Any, launch: Launch) -> list[tuple[str, Any]]:
    """(label, edit) pairs, cheapest first; edit(s, t, m, l) changes copies in place."""
    out: list[tuple[str, Any]] = []
    pipeline = _is_pipeline(model_args.model_name_or_path)
    if getattr(script_args, "backend", "transformers") == "unsloth":
        launch = dataclasses.replace(launch, zero_stage=0)
    if not training_args.gradient_checkpointing:
        out.append(("gradient_checkpointing: true", lambda s, t, m, lc: setattr(t, "gradient_checkpointing", True)))
    if pipeline and not getattr(script_args, "vae_slicing", False):
        out.append(("vae_slicing: true", lambda s, t, m, lc: setattr(s, "vae_slicing", True)))
    if pipeline and not getattr(script_args, "vae_tiling", False):
        out.append(("vae_tiling: true", lambda s, t, m, lc: setattr(s, "vae_tiling", True)))
    if not model_args.use_peft:
        out.append(("use_peft: true (LoRA)", lambda s, t, m, lc: setattr(m, "use_peft", True)))
    if launch.zero_stage in (1, 2) and launch.num_gpus > 1:
        out.append(
            (
                "DeepSpeed ZeRO-3 (ACCELERATE_CONFIG=.../deepspeed_zero3.yaml)",
                lambda s, t, m, lc: setattr(lc, "zero_stage", 3),
            )
        )
    if training_args.per_device_train_batch_size > 1:
        half = training_args.per_device_train_batch_size // 2
        out.append(
            (
                f"per_device_train_batch_size: {half} (x2 gradient_accumulation_steps, same effective batch)",
                lambda s, t, m, lc: setattr(t, "per_device_train_batch_size", half),
            )
        )
    steps = training_args.steps_per_generation or training_args.gradient_accumulation_steps
    if not training_args.use_vllm and steps > 1:
        out.append(
            (
                f"steps_per_generation: {max(1, steps // 2)} (half the generation batch: fewer completions generated "
                "at once; num_generations itself does not set per-GPU memory)",
                lambda s, t, m, lc: setattr(t, "steps_per_generation", max(1, steps // 2)),
            )
        )
    if getattr(script_args, "max_frames", None):
        frames = max(2, int(script_args.max_frames) // 2)
        out.append((f"max_frames: {frames}", lambda s, t, m, lc: setattr(s, "max_frames", frames)))
    elif pipeline and getattr(script_args, "condition_area", "absent") != "absent":
        area = (getattr(script_args, "condition_area", None) or 1024 * 1024) // 4
        out.append((f"condition_area: {area} (half the side)", lambda s, t, m, lc: setattr(s, "condition_area", area)))
    elif not pipeline and model_args.max_pixels:
        px = model_args.max_pixels // 2
        out.append((f"max_pixels: {px}", lambda s, t, m, lc: setattr(m, "max_pixels", px)))
    if training_args.use_vllm and training_args.vllm_gpu_memory_utilization > 0.2:
        out.append(
            ("vllm_gpu_memory_utilization: 0.2", lambda s, t, m, lc: setattr(t, "vllm_gpu_memory_utilization", 0.2))
        )
    if pipeline and not getattr(script_args, "offload_dit", False):
        out.append(
            (
                "offload_dit: true (the DiT waits in host RAM between renders)",
                lambda s, t, m, lc: setattr(s, "offload_dit", True),
            )
        )
    if (
        launch.zero_stage == 3
        and getattr(training_args, "ds3_gather_for_generation", True)
        and not training_args.use_vllm
    ):
        out.append(
            (
                "ds3_gather_for_generation: false (ZeRO-3 generation gathers one layer at a time; slower)",
                lambda s, t, m, lc: setattr(t, "ds3_gather_for_generation", False),
            )
        )
    if model_args.use_peft and not getattr(model_args, "load_in_4bit", False) and launch.zero_stage != 3:
        out.append(
            (
                "load_in_4bit: true (QLoRA: bitsandbytes nf4 base weights)",
                lambda s, t, m, lc: setattr(m, "load_in_4bit", True),
            )
        )
    if launch.zero_stage and not launch.offload_optimizer:
        out.append(
            (
                "optimizer states on CPU (offload_optimizer_device: cpu)",
                lambda s, t, m, lc: setattr(lc, "offload_optimizer", True),
            )
        )
    return out


def with_changes(
    plan: Plan, script_args: Any, training_args: Any, model_args: Any, launch: Launch, always: bool = False
) -> Plan:
    """`plan` with its `changes` when it does not fit (or `always`): each variant that lowers the peak with its new
    peak, cheapest first; if none fits alone, the cheapest combination that does."""
    if plan.fits and not always:
        return plan
    variants = _variants(script_args, training_args, model_args, launch)
    results: list[tuple[str, float]] = []

    def apply(edits: list[Any]) -> float:
        s, t, m, lc = (copy.copy(x) for x in (script_args, training_args, model_args, launch))
        for edit in edits:
            edit(s, t, m, lc)
        return plan_run(s, t, m, lc).total_gb

    for label, edit in variants:
        try:
            gb = apply([edit])
        except Exception as exc:  # a variant the setup cannot express: skip it, keep the others
            logger.debug("variant %s failed: %s", label, exc)
            continue
        if gb < plan.total_gb - 0.05:
            results.append((label, gb))
    if not plan.fits and results and not any(gb <= launch.gpu_memory_gb for _, gb in results):
        # none fits alone: add them in order (cheapest first), keeping each that still lowers the peak
        chosen: list[Any] = []
        labels: list[str] = []
        current = plan.total_gb
        for label, edit in variants:
            try:
                gb = apply([*chosen, edit])
            except Exception:  # noqa: BLE001 - skip a variant the setup cannot express
                continue
            if gb < current - 0.05:
                chosen.append(edit)
                labels.append(label.split(" (")[0])
                current = gb
            if current <= launch.gpu_memory_gb:
                break
        results.append(("together: " + " + ".join(labels), current))
    plan.changes = results
    return plan


# ---------------------------------------------------------------------------------------------------------------------
# Parsing a recipe config with the recipe's own dataclasses
# ---------------------------------------------------------------------------------------------------------------------


def parse_recipe_config(config: str | Path, extra: list[str] | None = None, num_gpus: int = 8) -> tuple[Any, Any, Any]:
    """(script_args, training_args, model_args) as the recipe's train.py would parse `--config config extra...` on
    `num_gpus` processes (GRPOConfig checks the generation batch against the world size it sees), on any machine."""
    import torch

    from core.training.config import VLMGRPOConfig, VLMModelConfig, _AliasingTrlParser, rename_alias_flags

    config = Path(config)
    recipe_dir = config.resolve().parent
    if (recipe_dir / "train.py").is_file():
        train = load_recipe_module(recipe_dir, "train")
        script_cls = train.ScriptArguments
        aliases = getattr(train, "ALIASES", None) or getattr(train, "ORIGINAL_NAMES", None) or {}
    else:
        script_cls, aliases = _GenericScriptArguments, {}
    bf16_gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported()

    @dataclass
    class PlannedGRPOConfig(VLMGRPOConfig):
        """VLMGRPOConfig that sees the planned world size, and accepts bf16 on machines without a bf16 GPU."""

        @property
        def world_size(self) -> int:  # type: ignore[override]
            return num_gpus

        def __post_init__(self) -> None:
            use_cpu = self.use_cpu
            if not bf16_gpu:
                self.use_cpu = True  # TrainingArguments refuses bf16 without a bf16 GPU unless use_cpu
            try:
                super().__post_init__()
            finally:
                self.use_cpu = use_cpu

    args = rename_alias_flags(["--config", str(config), *(extra or [])], aliases)
    parser = _AliasingTrlParser((script_cls, PlannedGRPOConfig, VLMModelConfig), aliases)
    script_args, training_args, model_args, *_ = parser.parse_args_and_config(args=args, return_remaining_strings=True)
    return script_args, training_args, model_args


@dataclass
class _GenericScriptArguments:
    """Any other YAML: every key that is not a GRPOConfig/VLMModelConfig field is ignored."""


def read_accelerate_config(path: str | Path | None) -> dict[str, Any]:
    import yaml

    if not path or not Path(path).is_file():
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    ds = data.get("deepspeed_config") or {}
    if data.get("distributed_type") != "DEEPSPEED":
        return {"zero_stage": 0}
    return {
        "zero_stage": int(ds.get("zero_stage", 0)),
        "offload_optimizer": ds.get("offload_optimizer_device", "none") not in ("none", None),
        "offload_param": ds.get("offload_param_device", "none") not in ("none", None),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Start-up check
# ---------------------------------------------------------------------------------------------------------------------


def launch_from_environment(gpu_memory_gb: float) -> Launch:
    """The launch this process is part of: world size and DeepSpeed settings from what accelerate exports."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1") or 1)
    deepspeed = env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    stage = int(env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2") or 2) if deepspeed else 0
    return Launch(
        num_gpus=world,
        zero_stage=stage,
        offload_optimizer=env.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none") not in ("none", ""),
        offload_param=env.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none") not in ("none", ""),
        gpu_memory_gb=gpu_memory_gb,
    )


def warn_if_over_budget(script_args: Any, training_args: Any, model_args: Any) -> Plan | None:
    """Log a warning, before any weights load, when the plan's per-GPU peak exceeds the visible GPU's memory.

    Never raises (a planner problem must not stop a run); without a CUDA GPU it does nothing, nor on any process but
    each machine's first (LOCAL_RANK 0: the ranks of a launch share one plan). Returns the plan (None when skipped)."""
    try:
        import torch

        if not torch.cuda.is_available() or int(os.environ.get("LOCAL_RANK", "0") or 0) != 0:
            return None
        device = torch.cuda.current_device()
        total_gb = torch.cuda.get_device_properties(device).total_memory / GiB
        plan = plan_run(script_args, training_args, model_args, launch_from_environment(total_gb))
        if plan.fits:
            logger.info(
                "memory plan: %.1f GB per GPU of %.1f GB (python -m core.plan for the breakdown)",
                plan.total_gb,
                total_gb,
            )
        else:
            plan = with_changes(plan, script_args, training_args, model_args, plan.launch)
            logger.warning(
                "memory plan: this run needs about %.1f GB per GPU (peak during %s) but the GPU has %.1f GB; it will "
                "probably run out of memory.\n%s",
                plan.total_gb,
                plan.peak_phase,
                total_gb,
                plan.format(),
            )
        return plan
    except Exception as exc:  # noqa: BLE001 - the check is advisory
        logger.info("memory plan skipped: %s", exc)
        return None


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="a recipe's config YAML")
    parser.add_argument("--num_gpus", type=int, default=8, help="processes (GPUs) of the launch (default 8)")
    parser.add_argument("--gpu_memory_gb", type=float, default=80.0, help="memory per GPU in GB (default 80)")
    parser.add_argument(
        "--zero",
        type=int,
        choices=(0, 1, 2, 3),
        default=None,
        help="DeepSpeed ZeRO stage (default: read from --accelerate_config; 0 = no DeepSpeed)",
    )
    parser.add_argument(
        "--accelerate_config",
        default=None,
        help="accelerate/DeepSpeed YAML (default: the recipe's deepspeed_zero2.yaml, as run_8gpu.sh)",
    )
    parser.add_argument(
        "--text_tokens",
        type=int,
        default=DEFAULT_TEXT_TOKENS,
        help=f"prompt text tokens besides image/video tokens (default {DEFAULT_TEXT_TOKENS})",
    )
    parser.add_argument("--images_per_prompt", type=int, default=1, help="images per prompt (image recipes; default 1)")
    parser.add_argument("--what_if", action="store_true", help="list the changes and their peaks even when it fits")
    parser.add_argument("--markdown", action="store_true", help="print the plan as Markdown (README sections)")
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING)
    config = Path(args.config)
    accelerate_config = args.accelerate_config or (config.resolve().parent / "deepspeed_zero2.yaml")
    launch_facts = read_accelerate_config(accelerate_config)
    if args.zero is not None:
        launch_facts["zero_stage"] = args.zero
    launch = Launch(
        num_gpus=args.num_gpus,
        gpu_memory_gb=args.gpu_memory_gb,
        text_tokens=args.text_tokens,
        images_per_prompt=args.images_per_prompt,
        accelerate_config=str(accelerate_config) if Path(accelerate_config).is_file() else None,
        **{"zero_stage": 2, **launch_facts},
    )
    if args.num_gpus == 1 and args.zero is None:
        launch.zero_stage = 0
    script_args, training_args, model_args = parse_recipe_config(config, extra, args.num_gpus)
    plan = with_changes(
        plan_run(script_args, training_args, model_args, launch),
        script_args,
        training_args,
        model_args,
        launch,
        always=args.what_if,
    )
    print(plan.markdown() if args.markdown else plan.format())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
