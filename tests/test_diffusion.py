"""Qwen-Image(-Edit) helpers on the tiny offline pipelines: the GRPO prompt renders as the pipeline's template, the
embeddings from completions match the pipeline's own encode_prompt, the frozen pipeline renders deterministically."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, QwenImageEditPipeline, QwenImagePipeline
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer
from trl.data_utils import prepare_multimodal_messages
from trl.trainer.utils import pad

from core.diffusion.pipeline import (
    END_TURN,
    SYSTEM_TURN,
    USER_TURN,
    check_drop_count,
    completion_prompt_embeds,
    condition_images,
    edit_prompt_messages,
    is_edit_pipeline,
    load_pipeline,
    pipeline_prompt_messages,
    run_edit,
    run_t2i,
    system_token_count,
    t2i_prompt_messages,
    template_system_prompt,
)
from core.testing.tiny import TINY_PIPELINES, build_tiny_checkpoint, resolve_model_path, weights_sha256

AREA = 64 * 64  # condition-image area for the tiny pipeline (the real pipeline uses 1024 * 1024)
INSTRUCTIONS = ["make the square blue", "add a small red star in the top left corner of the picture"]
# What diffusers hard-codes for the real Qwen2.5-VL tokenizer.
REAL_DROP_COUNTS = {"edit": 64, "t2i": 34}


@pytest.fixture(scope="module")
def edit_pipe() -> Any:
    return load_pipeline("tiny:qwen_image_edit")


@pytest.fixture(scope="module")
def t2i_pipe() -> Any:
    return load_pipeline("tiny:qwen_image")


def images() -> list[Image.Image]:
    first = Image.new("RGB", (80, 64), (240, 240, 240))
    first.paste((30, 30, 220), (20, 16, 50, 44))
    second = Image.new("RGB", (64, 72), (10, 120, 40))
    second.paste((250, 250, 0), (5, 5, 30, 30))
    return [first, second]


def encode(pipe: Any, instructions: list[str], completions: list[list[int]], **kwargs: Any) -> tuple:
    """completion_prompt_embeds with the pipeline's own components, template and drop count."""
    edit = is_edit_pipeline(pipe)
    return completion_prompt_embeds(
        pipe.text_encoder,
        pipe.processor if edit else pipe.tokenizer,
        pipe.prompt_template_encode,
        pipe.prompt_template_encode_start_idx,
        instructions,
        condition_images(pipe, images()[: len(instructions)], AREA) if edit else None,
        completions,
        **kwargs,
    )


def pipeline_encode(pipe: Any, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's own encode_prompt (mask None means all ones).

    For the edit pipeline the text encoder also gets the processor's ``mm_token_type_ids`` (built by the processor's
    own ``create_mm_token_type_ids`` from the ids the pipeline passes): diffusers 0.42 drops them
    (huggingface/diffusers#14194; the fix, #14189, forwards them), and without them transformers 5 gives the image
    sequential positions instead of Qwen2.5-VL's 3-D ones, which transformers 4 derived from the ids alone and the
    real DiT was trained with.
    """
    if not is_edit_pipeline(pipe):
        embeds, mask = pipe.encode_prompt(prompt=instructions)
        return embeds, torch.ones(embeds.shape[:2], dtype=torch.long) if mask is None else mask

    def add_token_types(_module: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        if kwargs.get("mm_token_type_ids") is None:
            ids = kwargs["input_ids"]
            kwargs["mm_token_type_ids"] = torch.tensor(pipe.processor.create_mm_token_type_ids(ids.tolist())).to(ids)
        return args, kwargs

    cond = condition_images(pipe, images()[: len(instructions)], AREA)
    handle = pipe.text_encoder.register_forward_pre_hook(add_token_types, with_kwargs=True)
    try:
        embeds, mask = pipe.encode_prompt(prompt=instructions, image=cond)
    finally:
        handle.remove()
    return embeds, torch.ones(embeds.shape[:2], dtype=torch.long) if mask is None else mask


def policy_hidden_states(
    pipe: Any, instructions: list[str], completions: list[list[int]], *, token_types: bool = True
) -> list[torch.Tensor]:
    """Last hidden states of the policy's own forward over edit prompt + completion: per sample its valid tokens
    after the pipeline's drop count.

    Built as TRL 1.15's GRPOTrainer builds its forward, independently of core.diffusion.pipeline: the GRPO prompt with
    its
    image through the processor's chat template (``_tokenize_prompts``), prompts left-padded together with their
    per-token ``mm_token_type_ids`` and completions right-padded, the types extended with zeros (text) over the
    completion (``_generate_single_turn`` / ``_generate_and_score_completions``), and every other field the processor
    returned. ``token_types=False`` leaves ``mm_token_type_ids`` out, as core.diffusion.pipeline's forward did.
    """
    cond = condition_images(pipe, images()[: len(instructions)], AREA)
    prompts = [
        prepare_multimodal_messages(pipeline_prompt_messages(pipe, instruction), images=[image])
        for instruction, image in zip(instructions, cond, strict=True)
    ]
    encoded = pipe.processor.apply_chat_template(prompts, add_generation_prompt=True, tokenize=True, return_dict=True)
    pad_id = pipe.processor.tokenizer.pad_token_id
    prompts_ids = [torch.tensor(ids) for ids in encoded["input_ids"]]
    completions_ids = [torch.tensor(ids, dtype=torch.long) for ids in completions]
    completion_block = pad(completions_ids, pad_id, "right")
    input_ids = torch.cat([pad(prompts_ids, pad_id, "left"), completion_block], dim=1)
    attention_mask = torch.cat(
        [
            pad([torch.ones_like(ids) for ids in prompts_ids], 0, "left"),
            pad([torch.ones_like(ids) for ids in completions_ids], 0, "right"),
        ],
        dim=1,
    )
    forward = {k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    if token_types:
        types = pad([torch.tensor(t) for t in encoded["mm_token_type_ids"]], 0, "left")
        forward["mm_token_type_ids"] = torch.cat([types, torch.zeros_like(completion_block)], dim=1)
    hidden = pipe.text_encoder(
        input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **forward
    ).hidden_states[-1]
    drop = pipe.prompt_template_encode_start_idx
    return [states[mask.bool()][drop:] for states, mask in zip(hidden, attention_mask, strict=True)]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# ---------------------------------------------------------------------------------------------------------------------
# Tiny pipelines
# ---------------------------------------------------------------------------------------------------------------------


def test_tiny_pipelines_load_with_their_classes(edit_pipe: Any, t2i_pipe: Any) -> None:
    assert TINY_PIPELINES == ("qwen_image_edit", "qwen_image")
    assert type(edit_pipe) is QwenImageEditPipeline and type(t2i_pipe) is QwenImagePipeline
    path = Path(resolve_model_path("tiny:qwen_image_edit"))
    assert type(QwenImageEditPipeline.from_pretrained(path)) is QwenImageEditPipeline
    assert type(load_pipeline("tiny:qwen_image_edit", edit=False)) is QwenImagePipeline  # same components
    # The text encoder is the tiny:qwen2_5_vl checkpoint, with its processor's small pixel bounds.
    assert (
        edit_pipe.transformer.config.joint_attention_dim == edit_pipe.text_encoder.config.get_text_config().hidden_size
    )
    vlm = Path(resolve_model_path("tiny:qwen2_5_vl"))
    assert weights_sha256(path / "text_encoder") == weights_sha256(vlm)
    vlm_processor = AutoProcessor.from_pretrained(vlm)
    assert edit_pipe.processor.image_processor.size == vlm_processor.image_processor.size
    assert edit_pipe.processor.tokenizer.get_vocab() == vlm_processor.tokenizer.get_vocab()
    with pytest.raises(ValueError, match="tiny:qwen_image_edit"):
        resolve_model_path("tiny:qwen_image_nope")


def test_tiny_pipeline_builds_deterministically(tmp_path: Path) -> None:
    first = build_tiny_checkpoint("qwen_image_edit", tmp_path / "a")
    second = build_tiny_checkpoint("qwen_image_edit", tmp_path / "b")
    cached = Path(resolve_model_path("tiny:qwen_image_edit"))
    assert weights_sha256(first / "transformer") == weights_sha256(second / "transformer")
    assert weights_sha256(first / "transformer") == weights_sha256(cached / "transformer")
    assert weights_sha256(first) == weights_sha256(second) == weights_sha256(cached)  # every component
    # Text-to-image shares the components; only the pipeline class (and the processor) differ.
    t2i = Path(resolve_model_path("tiny:qwen_image"))
    assert weights_sha256(t2i / "transformer") == weights_sha256(cached / "transformer")
    assert weights_sha256(t2i / "vae") == weights_sha256(cached / "vae")
    modes = {oct(p.stat().st_mode & 0o777) for p in cached.rglob("*") if p.is_dir()}
    assert modes == {"0o755"}  # component folders stay traversable in a shared cache


def test_no_all_zero_weight_matrix_in_dit_or_vae(edit_pipe: Any) -> None:
    for module in (edit_pipe.transformer, edit_pipe.vae):
        zero = [name for name, w in module.named_parameters() if w.dim() >= 2 and not w.any()]
        assert not zero, zero


# ---------------------------------------------------------------------------------------------------------------------
# Template, system prompt, drop count
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["edit", "t2i"])
def test_system_token_count_is_the_hand_split(kind: str, edit_pipe: Any, t2i_pipe: Any) -> None:
    pipe = edit_pipe if kind == "edit" else t2i_pipe
    template = pipe.prompt_template_encode
    tokenizer = pipe.processor.tokenizer if kind == "edit" else pipe.tokenizer
    system_turn = SYSTEM_TURN + template_system_prompt(pipe) + END_TURN
    assert template.startswith(system_turn + USER_TURN)
    by_hand = len(tokenizer(system_turn)["input_ids"]) + len(tokenizer(USER_TURN)["input_ids"])
    count = system_token_count(pipe)
    assert count == by_hand == pipe.prompt_template_encode_start_idx  # diffusers' value, unchanged by load_pipeline
    assert check_drop_count(pipe) == count
    # What the pipeline keeps starts with the user content: the image placeholder, or the instruction.
    ids = tokenizer(template.format("make it blue"))["input_ids"]
    assert tokenizer.decode(ids[count:]).startswith(
        "<|vision_start|><|image_pad|><|vision_end|>make it blue" if kind == "edit" else "make it blue"
    )
    assert tokenizer.decode(ids[:count]) == system_turn + USER_TURN


def test_diffusers_hard_codes_the_real_counts_and_mismatches_are_caught() -> None:
    for kind, name in (("edit", "tiny:qwen_image_edit"), ("t2i", "tiny:qwen_image")):
        raw = DiffusionPipeline.from_pretrained(resolve_model_path(name))  # not through load_pipeline: no fix
        assert raw.prompt_template_encode_start_idx == REAL_DROP_COUNTS[kind]
        # The tiny pipelines carry the real Qwen tokenizer: diffusers' hard-coded count is right for them.
        assert check_drop_count(raw) == REAL_DROP_COUNTS[kind]
        # A count that does not fit the tokenizer (another tokenizer or template than diffusers assumed) is caught.
        raw.prompt_template_encode_start_idx = REAL_DROP_COUNTS[kind] - 1
        with pytest.raises(ValueError, match="prompt_template_encode_start_idx"):
            check_drop_count(raw)
        assert check_drop_count(raw, on_mismatch="warn") == REAL_DROP_COUNTS[kind]
        assert raw.prompt_template_encode_start_idx == REAL_DROP_COUNTS[kind] - 1  # "warn" keeps it
        assert check_drop_count(raw, on_mismatch="fix") == REAL_DROP_COUNTS[kind]
        assert raw.prompt_template_encode_start_idx == REAL_DROP_COUNTS[kind]


def _on_disk_qwen_tokenizers() -> list[Any]:
    """Released Qwen2.5-VL tokenizers on disk ($QWEN2_5_VL_TOKENIZER or the Hugging Face cache), if any: an extra
    check next to the tiny pipelines' own tokenizer, which is built from Qwen's real vocabulary."""
    candidates: list[tuple[str, str | None]] = []
    if os.environ.get("QWEN2_5_VL_TOKENIZER"):
        candidates.append((os.environ["QWEN2_5_VL_TOKENIZER"], None))
    candidates += [
        ("Qwen/Qwen-Image-Edit", "tokenizer"),
        ("Qwen/Qwen-Image", "tokenizer"),
        ("Qwen/Qwen2.5-VL-7B-Instruct", None),
        ("Qwen/Qwen2.5-VL-3B-Instruct", None),
    ]
    found = []
    for repo, subfolder in candidates:
        try:
            kwargs = {"subfolder": subfolder} if subfolder else {}
            found.append(AutoTokenizer.from_pretrained(repo, local_files_only=True, **kwargs))
        except Exception:  # not on disk (or not a tokenizer): try the next one
            continue
    return found


def test_real_qwen_tokenizer_gives_diffusers_counts(edit_pipe: Any, t2i_pipe: Any) -> None:
    """64 (edit) and 34 (text-to-image): diffusers' prompt_template_encode_start_idx for the real Qwen2.5-VL
    tokenizer, computed from the template with the tiny pipelines' tokenizer (the real Qwen vocabulary,
    core.testing.tiny)."""
    for kind, pipe in (("edit", edit_pipe), ("t2i", t2i_pipe)):
        own = pipe.processor.tokenizer if kind == "edit" else pipe.tokenizer
        assert len(own) == 151665 and own.convert_tokens_to_ids("<|im_start|>") == 151644
        for tokenizer in [own, *_on_disk_qwen_tokenizers()]:
            real = SimpleNamespace(prompt_template_encode=pipe.prompt_template_encode, tokenizer=tokenizer)
            assert system_token_count(real) == REAL_DROP_COUNTS[kind]
        assert pipe.prompt_template_encode_start_idx == REAL_DROP_COUNTS[kind]  # load_pipeline changed nothing


def test_grpo_prompt_renders_as_the_pipeline_template(edit_pipe: Any, t2i_pipe: Any) -> None:
    vlm_processor = AutoProcessor.from_pretrained(resolve_model_path("tiny:qwen2_5_vl"))  # the GRPO policy's
    instruction = "Replace the {sky} with a sunset, keep the 2 boats."
    for processor in (edit_pipe.processor, vlm_processor):
        messages = edit_prompt_messages(instruction, template_system_prompt(edit_pipe))
        rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert rendered == edit_pipe.prompt_template_encode.format(instruction)
        assert pipeline_prompt_messages(edit_pipe, instruction) == messages
        # As TRL hands it to the processor: every content a list of parts, the placeholder filled with the image.
        prepared = prepare_multimodal_messages(messages, images=images()[:1])
        assert prepared[0]["content"] == [{"type": "text", "text": template_system_prompt(edit_pipe)}]
        rendered = processor.apply_chat_template(prepared, add_generation_prompt=True, tokenize=False)
        assert rendered == edit_pipe.prompt_template_encode.format(instruction)
    for renderer in (t2i_pipe.tokenizer, vlm_processor):
        messages = t2i_prompt_messages(instruction, template_system_prompt(t2i_pipe))
        rendered = renderer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert rendered == t2i_pipe.prompt_template_encode.format(instruction)
        assert pipeline_prompt_messages(t2i_pipe, instruction) == messages
        prepared = prepare_multimodal_messages(messages)
        rendered = renderer.apply_chat_template(prepared, add_generation_prompt=True, tokenize=False)
        assert rendered == t2i_pipe.prompt_template_encode.format(instruction)
    assert template_system_prompt(edit_pipe.prompt_template_encode).startswith("Describe the key features")
    assert is_edit_pipeline(edit_pipe) and not is_edit_pipeline(t2i_pipe)


# ---------------------------------------------------------------------------------------------------------------------
# Embeddings from completions
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["edit", "t2i"])
def test_empty_completion_equals_encode_prompt(kind: str, edit_pipe: Any, t2i_pipe: Any) -> None:
    pipe = edit_pipe if kind == "edit" else t2i_pipe
    with torch.no_grad():
        expected, expected_mask = pipeline_encode(pipe, INSTRUCTIONS)
        embeds, mask = encode(pipe, INSTRUCTIONS, [[], []])
    assert not bool(expected_mask.all())  # the two prompts differ in length: padding and mask are exercised
    torch.testing.assert_close(embeds, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mask, expected_mask, atol=0, rtol=0)
    assert mask.dtype == torch.long


@pytest.mark.parametrize("kind", ["edit", "t2i"])
def test_completion_extends_the_prompt_embeddings(kind: str, edit_pipe: Any, t2i_pipe: Any) -> None:
    pipe = edit_pipe if kind == "edit" else t2i_pipe
    tokenizer = pipe.tokenizer
    completions = [
        tokenizer.encode("The square turns blue.", add_special_tokens=False) + [tokenizer.eos_token_id],
        tokenizer.encode("A red star.", add_special_tokens=False),
    ]
    with torch.no_grad():
        base, base_mask = encode(pipe, INSTRUCTIONS, [[], []])
        embeds, mask = encode(pipe, INSTRUCTIONS, completions)
        logits_too, _ = encode(pipe, INSTRUCTIONS, completions, logits_to_keep=None)
    base_lengths = base_mask.sum(dim=1).tolist()
    assert mask.sum(dim=1).tolist() == [n + len(c) for n, c in zip(base_lengths, completions, strict=True)]
    assert embeds.shape[1] == max(mask.sum(dim=1).tolist())
    for i, n in enumerate(base_lengths):
        torch.testing.assert_close(embeds[i, :n], base[i, :n], atol=1e-5, rtol=1e-5)  # causal: prefix unchanged
        assert mask[i, : n + len(completions[i])].all() and not mask[i, n + len(completions[i]) :].any()
        assert not embeds[i, n + len(completions[i]) :].any()  # zero padding, as the pipeline pads
        assert embeds[i, n : n + len(completions[i])].abs().sum(dim=-1).gt(0).all()
    torch.testing.assert_close(logits_too, embeds, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_edit_embeddings_equal_the_policy_forward_with_its_image_positions(edit_pipe: Any, padding_side: str) -> None:
    """The conditioning the reward renders from is the policy's own hidden states for what it sampled: same ids,
    same image, same 3-D (M-RoPE) image positions from the processor's mm_token_type_ids, whichever side the
    processor pads (the tiny one pads right; the reference is laid out as TRL lays it out, prompts left-padded)."""
    tokenizer = edit_pipe.processor.tokenizer
    completions = [
        tokenizer.encode("The square turns blue.", add_special_tokens=False) + [tokenizer.eos_token_id],
        tokenizer.encode("A red star.", add_special_tokens=False),
    ]
    image_pad = edit_pipe.text_encoder.config.image_token_id
    drop = edit_pipe.prompt_template_encode_start_idx
    original_side, tokenizer.padding_side = tokenizer.padding_side, padding_side
    try:
        with torch.no_grad():
            embeds, mask = encode(edit_pipe, INSTRUCTIONS, completions)
    finally:
        tokenizer.padding_side = original_side
    assert not bool(mask.all())  # the two samples differ in length: padding is exercised
    with torch.no_grad():
        policy = policy_hidden_states(edit_pipe, INSTRUCTIONS, completions)
        sequential = policy_hidden_states(edit_pipe, INSTRUCTIONS, completions, token_types=False)
    for i, expected in enumerate(policy):
        n = int(mask[i].sum())
        assert n == expected.shape[0]
        torch.testing.assert_close(embeds[i, :n], expected, atol=1e-5, rtol=1e-5)
        # The tiny model is position sensitive, so the check above has teeth: sequential positions (no
        # mm_token_type_ids) leave <|vision_start|> and the first image token as they are (its 3-D position is
        # (p, p, p), p being its sequential one) and move every later token far outside that tolerance.
        ids = tokenizer(edit_pipe.prompt_template_encode.format(INSTRUCTIONS[i]))["input_ids"][drop:]
        assert ids[1] == image_pad  # <|vision_start|>, then the image (the processor expands it to its tokens)
        torch.testing.assert_close(sequential[i][:2], expected[:2], atol=1e-5, rtol=1e-5)
        assert (sequential[i][2:] - expected[2:]).abs().amax(dim=-1).min() > 1e-4
        assert (sequential[i] - expected).abs().max() > 1e-3


def test_placeholder_tokens_in_a_completion_are_refused(edit_pipe: Any) -> None:
    image_pad = edit_pipe.text_encoder.config.image_token_id
    with pytest.raises(ValueError, match="placeholder"):
        encode(edit_pipe, INSTRUCTIONS, [[5, image_pad], []])
    with pytest.raises(ValueError, match="one of each"):
        encode(edit_pipe, INSTRUCTIONS, [[]])


# ---------------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------------


def test_run_edit_size_determinism_and_prompt_dependence(edit_pipe: Any) -> None:
    with torch.no_grad():
        embeds, mask = encode(edit_pipe, INSTRUCTIONS, [[], []])
        other, other_mask = encode(edit_pipe, list(reversed(INSTRUCTIONS)), [[], []])
    inputs = images()
    kwargs = {"height": 64, "width": 64, "target_area": AREA, "num_inference_steps": 2}
    first = run_edit(edit_pipe, inputs, embeds, mask, seed=3, **kwargs)
    again = run_edit(edit_pipe, inputs, embeds, mask, seed=3, **kwargs)
    assert [image.size for image in first] == [(64, 64), (64, 64)]
    assert all(isinstance(image, Image.Image) for image in first)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(pixels(a), pixels(b))
    changed = run_edit(edit_pipe, inputs, other, other_mask, seed=3, **kwargs)
    assert not np.array_equal(pixels(first[0]), pixels(changed[0]))
    reseeded = run_edit(edit_pipe, inputs, embeds, mask, seed=4, **kwargs)
    assert not np.array_equal(pixels(first[0]), pixels(reseeded[0]))
    # A sample's image does not depend on the rest of the batch (per-sample generators, trimmed padding).
    alone = run_edit(edit_pipe, inputs[:1], embeds[:1], mask[:1], seed=3, **kwargs)
    assert np.abs(pixels(alone[0]) - pixels(first[0])).max() <= 2


def test_run_edit_groups_aspect_ratios_and_defaults_to_condition_size(edit_pipe: Any) -> None:
    wide, tall = Image.new("RGB", (96, 48), (200, 0, 0)), Image.new("RGB", (48, 112), (0, 0, 200))
    cond = condition_images(edit_pipe, [wide, tall], AREA)
    assert [image.size for image in cond] == [(96, 32), (32, 96)]  # ~AREA pixels, sides multiples of 32
    with torch.no_grad():
        embeds, mask = completion_prompt_embeds(
            edit_pipe.text_encoder,
            edit_pipe.processor,
            edit_pipe.prompt_template_encode,
            edit_pipe.prompt_template_encode_start_idx,
            INSTRUCTIONS,
            cond,
            [[], []],
        )
    out = run_edit(edit_pipe, [wide, tall], embeds, mask, target_area=AREA)
    assert [image.size for image in out] == [(96, 32), (32, 96)]
    with pytest.raises(ValueError, match="negative_prompt_embeds"):
        run_edit(edit_pipe, [wide, tall], embeds, mask, target_area=AREA, true_cfg_scale=4.0)
    guided = run_edit(
        edit_pipe,
        [wide, tall],
        embeds,
        mask,
        target_area=AREA,
        true_cfg_scale=4.0,
        negative_prompt_embeds=embeds.flip(0),
        negative_prompt_embeds_mask=mask.flip(0),
    )
    assert [image.size for image in guided] == [(96, 32), (32, 96)]


def test_run_t2i_size_and_determinism(t2i_pipe: Any) -> None:
    with torch.no_grad():
        embeds, mask = encode(t2i_pipe, INSTRUCTIONS, [[], []])
    first = run_t2i(t2i_pipe, embeds, mask, height=64, width=48, seed=1)
    again = run_t2i(t2i_pipe, embeds, mask, height=64, width=48, seed=1)
    assert [image.size for image in first] == [(48, 64), (48, 64)]
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(pixels(first[0]), pixels(first[1]))  # same noise (int seed), different prompts


# ---------------------------------------------------------------------------------------------------------------------
# Frozen DiT / VAE, trainable VLM
# ---------------------------------------------------------------------------------------------------------------------


def test_dit_and_vae_frozen_while_the_vlm_learns_through_them() -> None:
    pipe = load_pipeline("tiny:qwen_image_edit")  # private copy: the text encoder gets updated
    frozen = {"transformer": pipe.transformer, "vae": pipe.vae}
    for module in frozen.values():
        assert not any(p.requires_grad for p in module.parameters()) and not module.training
    before = {name: {k: v.clone() for k, v in m.state_dict().items()} for name, m in frozen.items()}
    encoder_before = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}

    embeds, mask = encode(pipe, INSTRUCTIONS, [[11, 12, 13], [14]])
    assert embeds.requires_grad
    batch = embeds.shape[0]
    latents = torch.randn(batch, 16, pipe.transformer.config.in_channels, generator=torch.Generator().manual_seed(0))
    noise_pred = pipe.transformer(
        hidden_states=latents,
        encoder_hidden_states=embeds,
        encoder_hidden_states_mask=mask,
        timestep=torch.full((batch,), 0.5),
        img_shapes=[[(1, 4, 4)]] * batch,
        return_dict=False,
    )[0]
    loss = noise_pred.pow(2).mean() + embeds.pow(2).mean()
    loss.backward()
    # An optimizer over *all* pipeline parameters must still leave the frozen modules alone.
    params = [p for m in (pipe.transformer, pipe.vae, pipe.text_encoder) for p in m.parameters()]
    torch.optim.SGD(params, lr=0.1).step()

    for name, module in frozen.items():
        assert all(p.grad is None for p in module.parameters()), name
        after = module.state_dict()
        assert all(torch.equal(after[k], v) for k, v in before[name].items()), name
    grads = [p.grad for p in pipe.text_encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    vision_grads = [p.grad for p in pipe.text_encoder.model.visual.parameters() if p.grad is not None]
    assert vision_grads and any(g.abs().sum() > 0 for g in vision_grads)  # the input image reaches the loss
    after = pipe.text_encoder.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in encoder_before.items())
