"""Model shapes and the bytes a forward + backward keeps: the activation and KV-cache terms of the memory plan.

The activation terms are the part tests/test_plan.py checks against measured peaks of the tiny models on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.plan.assumptions import TRL_TOKEN_CHUNK, TRL_VOCAB_CHUNK

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
