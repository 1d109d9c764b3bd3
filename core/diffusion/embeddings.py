"""Prompt embeddings for the frozen pipeline from the policy's own GRPO completions: one forward of the text encoder
over the pipeline's encoding prompt followed by the sampled ids, then exactly the pipeline's post-processing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

# Processor outputs with one value per token (the rest, e.g. pixel_values / image_grid_thw, are per image): re-laid out
# with the ids when a completion is appended. The names TRL's GRPOTrainer extends over the completion the same way.
PER_TOKEN_FIELDS = ("mm_token_type_ids", "token_type_ids")


def model_device(model: Any) -> torch.device:
    """The device a model (or any module) computes on: its ``device`` attribute, else its first parameter's."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def completion_prompt_embeds(
    text_encoder: Any,
    processor: Any,
    pipeline_template: str,
    drop_idx: int,
    instructions: Sequence[str],
    images: Sequence[Image.Image] | None,
    completion_ids: Sequence[Sequence[int] | torch.Tensor],
    *,
    logits_to_keep: int | None = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``prompt_embeds`` and ``prompt_embeds_mask`` for the pipeline from GRPO's own completions (never regenerated).

    One forward of ``text_encoder`` over ``pipeline_template.format(instruction)`` tokens (with the image inputs the
    processor builds for ``images``, as ``_get_qwen_prompt_embeds`` does; pass :func:`condition_images` for the edit
    pipeline, ``None`` for text-to-image) followed by ``completion_ids`` (unpadded, as generated), with
    ``output_hidden_states=True``; then exactly the pipeline's post-processing: last hidden states split per sample by
    the attention mask, the first ``drop_idx`` tokens (:func:`system_token_count`) dropped, zero-padded to the batch
    maximum with a 0/1 ``long`` mask. With empty completions this equals ``pipeline.encode_prompt`` (mask all ones is
    returned as a tensor, where the pipeline returns ``None``); a completion of n tokens appends n positions and, the
    model being causal, leaves the prefix unchanged.

    The forward gets every field the processor returned, as the policy's own forwards in TRL's GRPOTrainer do, so the
    hidden states are the policy's for what it sampled. That includes ``mm_token_type_ids``, from which transformers 5
    builds the image's 3-D (M-RoPE) positions (transformers 4 found the image tokens in the ids); diffusers 0.42's
    edit pipelines do not pass it (huggingface/diffusers#14194), so their own ``encode_prompt`` there gives the image
    sequential positions and differs from this (and from what the real DiT was trained with). Text-only prompts are
    unaffected: their positions are 1-D either way.

    ``processor``: the edit pipeline's processor, or for text-to-image a processor or the tokenizer. No decorator:
    gradients flow when called with grad enabled (call it under ``torch.no_grad()`` for rewards). ``logits_to_keep=1``
    spares the full-vocabulary logits the hidden states do not need (``None``: do not pass it, for a forward that
    rejects it). Outputs are in the text encoder's dtype, on its device; the pipeline's ``tokenizer_max_length``
    truncation (1024 tokens after the drop, text-to-image only) is not applied.
    """
    n = len(instructions)
    if len(completion_ids) != n or (images is not None and len(images) != n):
        raise ValueError(
            f"{n} instructions, {len(completion_ids)} completions and "
            f"{'no' if images is None else len(images)} images: one of each per sample is needed"
        )
    tokenizer = getattr(processor, "tokenizer", processor)
    config = getattr(text_encoder, "config", None)
    media_ids = {getattr(config, key, None) for key in ("image_token_id", "video_token_id")} - {None}
    completions = [torch.as_tensor(ids, dtype=torch.long).flatten().cpu() for ids in completion_ids]
    for i, ids in enumerate(completions):
        if media_ids and torch.isin(ids, torch.tensor(sorted(media_ids))).any():
            raise ValueError(
                f"completion {i} contains an image/video placeholder token, which the text encoder would try to fill "
                "with vision features; suppress those tokens during generation"
            )

    texts = [pipeline_template.format(instruction) for instruction in instructions]
    kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
    if images is not None:
        kwargs["images"] = list(images)
    inputs = processor(**kwargs)
    prompt_mask = inputs["attention_mask"].bool()
    rows = [
        torch.cat([ids[mask], completion.to(ids.dtype)])
        for ids, mask, completion in zip(inputs["input_ids"], prompt_mask, completions, strict=True)
    ]
    too_short = [i for i, row in enumerate(rows) if row.numel() <= drop_idx]
    if too_short:
        raise ValueError(f"samples {too_short} have no tokens left after dropping the first {drop_idx}")

    # Re-pad prompt + completion on the tokenizer's side, as the pipeline's own call pads the prompt alone.
    longest = max(row.numel() for row in rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((n, longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, longest), dtype=torch.long)
    spans = [
        slice(longest - row.numel(), longest) if tokenizer.padding_side == "left" else slice(0, row.numel())
        for row in rows
    ]
    for i, (row, span) in enumerate(zip(rows, spans, strict=True)):
        input_ids[i, span] = row
        attention_mask[i, span] = 1

    device = model_device(text_encoder)
    forward: dict[str, Any] = {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "output_hidden_states": True,
    }
    # Everything else the processor returned goes to the forward, as TRL's GRPOTrainer passes it to the policy's:
    # image tensors as they are, per-token fields re-laid out with the ids. Qwen2.5-VL needs `mm_token_type_ids` for
    # the image's 3-D (M-RoPE) positions: without it transformers 5 silently falls back to sequential positions
    # (Qwen2_5_VLModel.compute_3d_position_ids), i.e. a different conditioning than the one the policy sampled under.
    for key, value in inputs.items():
        if key in ("input_ids", "attention_mask") or value is None:
            continue
        if key in PER_TOKEN_FIELDS:
            value = _relayout_per_token(value, prompt_mask, completions, spans, longest)
        forward[key] = value.to(device) if isinstance(value, torch.Tensor) else value
    if logits_to_keep is not None:
        forward["logits_to_keep"] = logits_to_keep
    hidden_states = text_encoder(**forward).hidden_states[-1]
    return _masked_hidden_to_embeds(hidden_states, forward["attention_mask"], drop_idx)


def _relayout_per_token(
    values: torch.Tensor,
    prompt_mask: torch.Tensor,
    completions: Sequence[torch.Tensor],
    spans: Sequence[slice],
    longest: int,
) -> torch.Tensor:
    """A per-token processor field (``mm_token_type_ids``: 0 text, 1 image, 2 video) laid out like the re-padded ids:
    each prompt's valid entries, then 0 (text) for every completion token (as TRL's GRPOTrainer extends it over the
    completion), 0 on padding."""
    out = values.new_zeros((len(completions), longest))
    for i, (row, mask, completion, span) in enumerate(zip(values, prompt_mask, completions, spans, strict=True)):
        out[i, span] = torch.cat([row[mask], row.new_zeros(completion.numel())])
    return out


def _masked_hidden_to_embeds(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor, drop_idx: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``QwenImagePipeline._get_qwen_prompt_embeds`` after the forward (``_extract_masked_hidden`` and the padding),
    written out because it is a method of a pipeline this function does not need; the tests compare the two."""
    bool_mask = attention_mask.bool()
    selected = hidden_states[bool_mask]
    split = torch.split(selected, bool_mask.sum(dim=1).tolist(), dim=0)
    split = [sample[drop_idx:] for sample in split]
    longest = max(sample.size(0) for sample in split)
    prompt_embeds = torch.stack([torch.cat([u, u.new_zeros(longest - u.size(0), u.size(1))]) for u in split])
    mask = torch.stack(
        [
            torch.cat([u.new_ones(u.size(0), dtype=torch.long), u.new_zeros(longest - u.size(0), dtype=torch.long)])
            for u in split
        ]
    )
    return prompt_embeds, mask
