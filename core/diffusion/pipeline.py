"""Qwen-Image(-Edit) as a frozen renderer for GRPO on its Qwen2.5-VL text encoder.

The image-editing (``QwenImageEditPipeline``) and text-to-image (``QwenImagePipeline``) recipes train only the VLM that
the pipeline uses as text encoder; the DiT (``transformer``) and the ``vae`` stay frozen. A GRPO step then goes:

1. the policy samples completions for the *pipeline's own* encoding prompt (:func:`pipeline_prompt_messages` renders,
   through the VLM's chat template, to exactly ``pipeline.prompt_template_encode.format(instruction)``);
2. :func:`completion_prompt_embeds` runs the VLM over that prompt followed by the sampled completion ids and applies
   the pipeline's own post-processing (last hidden states, system turn dropped, padded with a mask), so with an empty
   completion it reproduces ``pipeline.encode_prompt`` exactly (for the edit pipeline: as it encodes with the image's
   3-D positions, see :func:`completion_prompt_embeds`);
3. :func:`run_edit` / :func:`run_t2i` render images from those embeddings with the frozen pipeline (no text encoding
   inside the pipeline), deterministically per seed, for a judge to score.

The number of leading tokens the pipeline drops is hard-coded in diffusers (``prompt_template_encode_start_idx``: 64
for the edit template, 34 for text-to-image, valid for the real Qwen2.5-VL tokenizer only); here it is computed from
the tokenizer (:func:`system_token_count`) and :func:`load_pipeline` corrects the pipeline attribute if they differ
(they do for the tiny offline pipelines, whose tokenizer is not Qwen's).

Modules: :mod:`core.diffusion.prompts` (template, system prompt, drop count, GRPO prompts, condition images),
:mod:`core.diffusion.loading` (:func:`load_pipeline`, VAE switches, :class:`HostOffload`),
:mod:`core.diffusion.embeddings` (:func:`completion_prompt_embeds`) and this one (rendering, :class:`PolicyRenderer`),
which also re-exports the others' public names: ``from core.diffusion.pipeline import ...`` is the one import path.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions
from PIL import Image
from trl.models import unwrap_model_for_generation

from core.diffusion.embeddings import PER_TOKEN_FIELDS, completion_prompt_embeds, model_device
from core.diffusion.loading import HostOffload, RenderMemoryArguments, configure_vae, load_pipeline
from core.diffusion.prompts import (
    DEFAULT_CONDITION_AREA,
    END_TURN,
    IMAGE_PLACEHOLDER,
    SYSTEM_TURN,
    USER_TURN,
    check_drop_count,
    condition_images,
    edit_prompt_messages,
    is_edit_pipeline,
    pipeline_prompt_messages,
    system_token_count,
    t2i_prompt_messages,
    template_system_prompt,
)

__all__ = [
    "DEFAULT_CONDITION_AREA",
    "END_TURN",
    "IMAGE_PLACEHOLDER",
    "MAX_T2I_SEQUENCE_LENGTH",
    "PER_TOKEN_FIELDS",
    "SYSTEM_TURN",
    "USER_TURN",
    "HostOffload",
    "PolicyRenderer",
    "RenderMemoryArguments",
    "check_drop_count",
    "completion_prompt_embeds",
    "condition_images",
    "configure_vae",
    "edit_prompt_messages",
    "is_edit_pipeline",
    "load_pipeline",
    "pipeline_prompt_messages",
    "run_edit",
    "run_t2i",
    "system_token_count",
    "t2i_prompt_messages",
    "template_system_prompt",
]

logger = logging.getLogger(__name__)

# QwenImagePipeline refuses max_sequence_length > 1024 and truncates prompt embeddings to it.
MAX_T2I_SEQUENCE_LENGTH = 1024

# ---------------------------------------------------------------------------------------------------------------------
# Rendering with the frozen pipeline
# ---------------------------------------------------------------------------------------------------------------------

_AREA_LOCK = threading.Lock()


@contextlib.contextmanager
def _condition_area(pipeline: Any, area: int) -> Iterator[None]:
    """Make ``QwenImageEditPipeline.__call__`` size the condition image to ``area`` pixels instead of 1024 * 1024.

    The pipeline offers no argument for it: it calls the module-level ``calculate_dimensions(1024 * 1024, ratio)``.
    That global is swapped for one with the other area for the duration of the call (under a lock, restored after);
    the pipeline's VAE encoding, its DiT positions (``img_shapes``) and the text encoder image then all follow.
    """
    if area == DEFAULT_CONDITION_AREA:
        yield
        return
    namespace = inspect.unwrap(type(pipeline).__call__).__globals__
    original = namespace.get("calculate_dimensions")
    if original is None:
        raise ValueError(
            f"{type(pipeline).__name__}.__call__ does not size its condition image with calculate_dimensions"
        )
    with _AREA_LOCK:
        namespace["calculate_dimensions"] = lambda _area, ratio: original(area, ratio)
        try:
            yield
        finally:
            namespace["calculate_dimensions"] = original


def _generators(seed: int | Sequence[int], indices: Sequence[int], count: int) -> list[torch.Generator]:
    """One CPU generator per sample: the initial noise depends only on the sample's seed, not on the batch or device
    (an int seed gives every sample the same noise, so a GRPO group differs only by its prompt embeddings)."""
    seeds = [seed] * count if isinstance(seed, int) else list(seed)
    if len(seeds) != count:
        raise ValueError(f"{len(seeds)} seeds for {count} samples")
    return [torch.Generator(device="cpu").manual_seed(int(seeds[i])) for i in indices]


def _select(embeds: torch.Tensor | None, mask: torch.Tensor | None, indices: list[int], pipeline: Any) -> tuple:
    """Rows ``indices``, trimmed to their longest valid length, detached, in the DiT's dtype and device."""
    if embeds is None:
        return None, None
    device, dtype = pipeline._execution_device, pipeline.transformer.dtype
    embeds = embeds[indices].detach()
    if mask is not None:
        mask = mask[indices].detach()
        valid = mask.bool().any(dim=0).nonzero()
        length = int(valid.max()) + 1 if valid.numel() else 1
        embeds, mask = embeds[:, :length], mask[:, :length].to(device)
    return embeds.to(device=device, dtype=dtype), mask


def _check_batch(prompt_embeds: torch.Tensor, mask: torch.Tensor | None, count: int, what: str) -> None:
    if prompt_embeds.dim() != 3 or prompt_embeds.shape[0] != count:
        raise ValueError(f"{what} must be (batch={count}, seq, hidden), got {tuple(prompt_embeds.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(prompt_embeds.shape[:2]):
        raise ValueError(f"{what}_mask {tuple(mask.shape)} does not match {what} {tuple(prompt_embeds.shape)}")


def _cfg_check(true_cfg_scale: float, negative_prompt_embeds: torch.Tensor | None) -> None:
    if true_cfg_scale > 1 and negative_prompt_embeds is None:
        # The pipeline would only warn and silently run without guidance.
        raise ValueError("true_cfg_scale > 1 needs negative_prompt_embeds (encode a negative prompt the same way)")


def run_edit(
    pipeline: Any,
    images: Sequence[Image.Image],
    prompt_embeds: torch.Tensor,
    prompt_embeds_mask: torch.Tensor | None,
    num_inference_steps: int = 2,
    height: int | None = None,
    width: int | None = None,
    seed: int | Sequence[int] = 0,
    true_cfg_scale: float = 1.0,
    *,
    target_area: int | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds_mask: torch.Tensor | None = None,
) -> list[Image.Image]:
    """Edit ``images`` with the frozen ``QwenImageEditPipeline`` driven by precomputed ``prompt_embeds`` (the pipeline
    encodes no text), one output image per row, deterministic for ``seed`` (see :func:`_generators`).

    ``height``/``width``: output size (``None``: the condition size; rounded down to multiples of 16 by the pipeline).
    ``target_area``: pixels of the condition image the pipeline VAE-encodes and places next to the output latents
    (``None``: the pipeline's hard-coded 1024 * 1024, about 4096 extra DiT tokens per image; e.g. ``64 * 64`` for the
    tiny pipeline or cheap smoke runs); embeddings must then come from :func:`condition_images` with the same area.
    Samples are rendered in one pipeline call per condition size, because the pipeline sizes every image of a call
    from the first one's aspect ratio.
    """
    _check_batch(prompt_embeds, prompt_embeds_mask, len(images), "prompt_embeds")
    if negative_prompt_embeds is not None:
        _check_batch(negative_prompt_embeds, negative_prompt_embeds_mask, len(images), "negative_prompt_embeds")
    _cfg_check(true_cfg_scale, negative_prompt_embeds)
    area = DEFAULT_CONDITION_AREA if target_area is None else target_area
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        width_c, height_c, _ = calculate_dimensions(area, image.size[0] / image.size[1])
        groups.setdefault((width_c, height_c), []).append(i)
    results: list[Image.Image | None] = [None] * len(images)
    with _condition_area(pipeline, area):
        for indices in groups.values():
            embeds, mask = _select(prompt_embeds, prompt_embeds_mask, indices, pipeline)
            neg, neg_mask = _select(negative_prompt_embeds, negative_prompt_embeds_mask, indices, pipeline)
            output = pipeline(
                image=[images[i] for i in indices],
                prompt_embeds=embeds,
                prompt_embeds_mask=mask,
                negative_prompt_embeds=neg,
                negative_prompt_embeds_mask=neg_mask,
                true_cfg_scale=true_cfg_scale,
                height=height,
                width=width,
                num_inference_steps=num_inference_steps,
                generator=_generators(seed, indices, len(images)),
                output_type="pil",
            )
            for i, image in zip(indices, output.images, strict=True):
                results[i] = image
    return [image for image in results if image is not None]


def run_t2i(
    pipeline: Any,
    prompt_embeds: torch.Tensor,
    prompt_embeds_mask: torch.Tensor | None,
    num_inference_steps: int = 2,
    height: int | None = None,
    width: int | None = None,
    seed: int | Sequence[int] = 0,
    true_cfg_scale: float = 1.0,
    *,
    negative_prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds_mask: torch.Tensor | None = None,
) -> list[Image.Image]:
    """Text-to-image counterpart of :func:`run_edit` for ``QwenImagePipeline`` (``height``/``width`` ``None``: the
    pipeline's 1024 x 1024). The pipeline truncates embeddings to 1024 tokens (its ``max_sequence_length`` limit);
    longer ones are truncated here too, with a warning, instead of failing."""
    count = prompt_embeds.shape[0]
    _check_batch(prompt_embeds, prompt_embeds_mask, count, "prompt_embeds")
    if negative_prompt_embeds is not None:
        _check_batch(negative_prompt_embeds, negative_prompt_embeds_mask, count, "negative_prompt_embeds")
    _cfg_check(true_cfg_scale, negative_prompt_embeds)
    indices = list(range(count))
    embeds, mask = _select(prompt_embeds, prompt_embeds_mask, indices, pipeline)
    neg, neg_mask = _select(negative_prompt_embeds, negative_prompt_embeds_mask, indices, pipeline)
    longest = max(t.shape[1] for t in (embeds, neg) if t is not None)
    if longest > MAX_T2I_SEQUENCE_LENGTH:
        logger.warning("prompt embeddings of %d tokens truncated to %d", longest, MAX_T2I_SEQUENCE_LENGTH)
    output = pipeline(
        prompt_embeds=embeds,
        prompt_embeds_mask=mask,
        negative_prompt_embeds=neg,
        negative_prompt_embeds_mask=neg_mask,
        true_cfg_scale=true_cfg_scale,
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        generator=_generators(seed, indices, count),
        max_sequence_length=min(longest, MAX_T2I_SEQUENCE_LENGTH),
        output_type="pil",
    )
    return list(output.images)


class PolicyRenderer:
    """Images for the batch at hand, rendered once from the policy's CURRENT weights and shared by every reward of
    the batch (TRL calls reward functions one after another with the same completions).

    Edit pipelines render from `images` (the condition images the policy saw while generating, already resized with
    :func:`condition_images`, so the embedding forward sees the same image tokens as generation); text-to-image
    pipelines take `images=None`.

    `offload_dit`: the DiT stays in host memory (:class:`HostOffload`) and is lent to the render device for each
    render only, so between renders (generation, the policy's forward/backward, the optimizer step) its ~41 GB are
    free; each render then pays one host-to-device copy of the DiT.

    `log_images_steps` > 0: while training, the process of global rank 0 writes a grid of what it rendered (per row:
    the condition image for edits, then the images of one prompt's completions) as
    ``<output_dir>/samples/step-XXXXX.png`` (with the instructions and decoded completions in ``step-XXXXX.json``),
    and to TensorBoard (``samples/rendered``, ``samples/completions``) when ``report_to`` includes tensorboard, at the
    first render and then at the first render of every later block of `log_images_steps` optimizer steps
    (:class:`core.tools.plots.SampleGridLog`). Other ranks render other prompts; only rank 0's are shown.
    """

    def __init__(
        self,
        pipeline: Any,
        processor: Any,
        num_inference_steps: int,
        seed: int,
        height: int | None = None,
        width: int | None = None,
        true_cfg_scale: float = 1.0,
        condition_area: int | None = None,
        *,
        offload_dit: bool = False,
        log_images_steps: int = 0,
    ) -> None:
        self.pipeline, self.processor = pipeline, processor
        self.num_inference_steps, self.seed = num_inference_steps, seed
        self.height, self.width, self.true_cfg_scale = height, width, true_cfg_scale
        self.condition_area = condition_area
        self.trainer: Any = None
        self._key: tuple | None = None
        self._images: list[Image.Image] = []
        self.dit_offload = HostOffload(pipeline.transformer) if offload_dit else None
        if log_images_steps < 0:
            raise ValueError(f"log_images_steps must be >= 0 (0: off), got {log_images_steps}")
        self.sample_log: Any = None
        if log_images_steps:
            from core.tools.plots import SampleGridLog

            self.sample_log = SampleGridLog(log_images_steps)

    def bind(self, trainer: Any) -> None:
        """Attach the trainer whose model is the policy; the frozen VAE (and the DiT unless it is offloaded) move to
        its device."""
        self.trainer = trainer
        self.pipeline.vae.to(trainer.accelerator.device)
        if self.dit_offload is None:
            self.pipeline.transformer.to(trainer.accelerator.device)

    def render_device(self, model: Any = None) -> torch.device:
        """Where the pipeline renders: the bound trainer's device, else `model`'s (evaluation), else the VAE's."""
        if self.trainer is not None:
            return torch.device(self.trainer.accelerator.device)
        if model is not None:
            return model_device(model)
        return model_device(self.pipeline.vae)

    def _embeddings(
        self,
        model: Any,
        instructions: Sequence[str],
        completion_ids: Sequence[Sequence[int]],
        images: Sequence[Image.Image] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        was_training = model.training
        model.eval()  # no dropout in the conditioning we score
        try:
            return completion_prompt_embeds(
                model,
                self.processor,
                self.pipeline.prompt_template_encode,
                self.pipeline.prompt_template_encode_start_idx,
                list(instructions),
                None if images is None else list(images),
                [list(ids) for ids in completion_ids],
            )
        finally:
            model.train(was_training)

    @torch.no_grad()
    def render(
        self,
        instructions: Sequence[str],
        completion_ids: Sequence[Sequence[int]],
        images: Sequence[Image.Image] | None = None,
        model: Any = None,
    ) -> list[Image.Image]:
        """`model`: render with this text encoder instead of the bound trainer's policy (evaluation)."""
        digests = tuple(hashlib.blake2b(img.tobytes(), digest_size=8).hexdigest() for img in images or ())
        key = (tuple(instructions), tuple(tuple(ids) for ids in completion_ids), digests)
        if key == self._key:
            return self._images
        if model is not None:
            embeds, mask = self._embeddings(model, instructions, completion_ids, images)
        elif self.trainer is None:
            raise RuntimeError("PolicyRenderer.bind(trainer) must be called before training")
        else:
            trainer = self.trainer
            # TRL's own generation context: under ZeRO-3 it gathers the full weights and lifts DeepSpeed's hooks for
            # the duration, so this forward outside the engine does not disturb the partitioned forward/backward.
            with unwrap_model_for_generation(
                trainer.model_wrapped,
                trainer.accelerator,
                gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
            ) as policy:
                embeds, mask = self._embeddings(policy, instructions, completion_ids, images)
        common = {
            "num_inference_steps": self.num_inference_steps,
            "height": self.height,
            "width": self.width,
            "seed": self.seed,
            "true_cfg_scale": self.true_cfg_scale,
        }
        # The DiT comes to the GPU only now, after the policy's gathered weights (ZeRO-3) were released above.
        lend = self.dit_offload is not None
        dit = self.dit_offload.lent(self.render_device(model)) if lend else contextlib.nullcontext()
        with dit:
            if images is None:
                rendered = run_t2i(self.pipeline, embeds, mask, **common)
            else:
                rendered = run_edit(
                    self.pipeline, list(images), embeds, mask, target_area=self.condition_area, **common
                )
        self._key, self._images = key, rendered
        if model is None:
            self._log_samples(instructions, completion_ids, images, rendered, digests)
        return rendered

    def _log_samples(
        self,
        instructions: Sequence[str],
        completion_ids: Sequence[Sequence[int]],
        images: Sequence[Image.Image] | None,
        rendered: Sequence[Image.Image],
        digests: Sequence[str],
    ) -> None:
        """The grid of this training render (see the class docstring), when one is due."""
        trainer = self.trainer
        if self.sample_log is None or trainer is None or not trainer.is_world_process_zero():
            return
        step = trainer.state.global_step + 1  # the optimizer step this generation feeds, numbered as the logs do
        if not self.sample_log.due(step):
            return
        from core.tools.plots import tensorboard_writer

        rows: list[dict[str, Any]] = []
        previous = None
        for i, (instruction, ids, image) in enumerate(zip(instructions, completion_ids, rendered, strict=True)):
            group = (instruction, digests[i] if digests else None)
            if group != previous:  # TRL puts a prompt's generations next to each other
                condition = None if images is None else images[i]
                rows.append({"instruction": instruction, "condition": condition, "images": [], "completions": []})
                previous = group
            rows[-1]["images"].append(image)
            rows[-1]["completions"].append(self.processor.decode(list(ids), skip_special_tokens=True))
        self.sample_log.write(trainer.args.output_dir, step, rows, tensorboard_writer(trainer))
