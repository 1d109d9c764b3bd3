"""`plan_run`: the per-GPU memory plan of a run from its three parsed config objects (no weights loaded)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from core.plan.activations import (
    ActivationInput,
    Training,
    activation_terms,
    block_forward_transient,
    kv_cache_bytes,
    shape_from_config,
)
from core.plan.assumptions import (
    CUDA_CONTEXT_GB,
    DS_PREFETCH_BUCKET,
    DS_REDUCE_BUCKET,
    NF4_BYTES,
    QWEN_VIDEO_MAX_PIXELS,
    VAE_DECODE_FACTOR,
    VAE_ENCODE_FACTOR,
    GiB,
)
from core.plan.counts import count_policy, meta_policy_and_pipeline
from core.plan.report import Item, Launch, Plan


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
    policy, pipe, processor = meta_policy_and_pipeline(name)
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
