"""Rewards for GRPO on the VLM inside Qwen-Image-Edit: render the edit the policy's completion asks for, let a
vision-language judge score it.

For a batch, `EditRenderer` turns each completion into the pipeline's conditioning — one forward of the CURRENT
policy over [system + user(image + instruction) + assistant + completion], the system tokens dropped exactly as the
pipeline's `encode_prompt` drops them — and runs the frozen DiT/VAE on the input image. The images are made once per
batch and shared by the three judge rewards, which follow the Complex-Edit protocol (rubric prompts in `rubric/`):

* `instruction_following`  (original + edited image, instruction): score_IF / 10
* `identity_preservation`  (original + edited image, instruction): score_IP / 10
* `perceptual_quality`     (edited image only):                    score_PQ / 10

each in [0, 1] and logged on its own; the total is the `reward_weights`-weighted sum (default 1/3 each: the mean of
the three, Complex-Edit's overall score / 10). A sample the judge cannot score (HTTP failure after retries, timeout,
open circuit breaker, a reply that is not the strict JSON asked for) gets `None`, which TRL leaves out of that
reward's mean — never a 0 and never a crash. Judge failures, cache hits and latency are logged per step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from trl.models import unwrap_model_for_generation

from core.diffusion import completion_prompt_embeds, run_edit
from core.judge import JudgeClient, JudgeRequest, parse_score
from core.rewards import resolve_reward_funcs

RUBRIC_DIR = Path(__file__).resolve().parent / "rubric"
CRITERIA = ("instruction_following", "identity_preservation", "perceptual_quality")
USES_ORIGINAL = {"instruction_following": True, "identity_preservation": True, "perceptual_quality": False}


class EditRenderer:
    """Edited images for the batch at hand, rendered once with the policy's current weights."""

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
    ) -> None:
        self.pipeline, self.processor = pipeline, processor
        self.num_inference_steps, self.seed = num_inference_steps, seed
        self.height, self.width, self.true_cfg_scale = height, width, true_cfg_scale
        self.condition_area = condition_area
        self.trainer: Any = None
        self._key: tuple | None = None
        self._images: list[Image.Image] = []

    def bind(self, trainer: Any) -> None:
        """Attach the trainer whose model is the policy; the frozen DiT/VAE move to its device."""
        self.trainer = trainer
        device = trainer.accelerator.device
        for name in ("transformer", "vae"):
            getattr(self.pipeline, name).to(device)

    @torch.no_grad()
    def render(
        self, images: Sequence[Image.Image], instructions: Sequence[str], completion_ids: Sequence[Sequence[int]]
    ) -> list[Image.Image]:
        """`images` are the condition images the policy saw while generating (train.py already resized them with
        `core.diffusion.condition_images`), so the embedding forward sees the same image tokens as generation."""
        digests = tuple(hashlib.blake2b(img.tobytes(), digest_size=8).hexdigest() for img in images)
        key = (tuple(instructions), tuple(tuple(ids) for ids in completion_ids), digests)
        if key == self._key:
            return self._images
        if self.trainer is None:
            raise RuntimeError("EditRenderer.bind(trainer) must be called before training")
        trainer = self.trainer
        # TRL's own generation context: under ZeRO-3 it gathers the full weights and lifts DeepSpeed's hooks for the
        # duration, so this forward outside the engine does not disturb the partitioned training forward/backward.
        with unwrap_model_for_generation(
            trainer.model_wrapped,
            trainer.accelerator,
            gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
        ) as model:
            was_training = model.training
            model.eval()  # no dropout in the conditioning we score
            try:
                embeds, mask = completion_prompt_embeds(
                    model,
                    self.processor,
                    self.pipeline.prompt_template_encode,
                    self.pipeline.prompt_template_encode_start_idx,
                    list(instructions),
                    list(images),
                    [list(ids) for ids in completion_ids],
                )
            finally:
                model.train(was_training)
        edited = run_edit(
            self.pipeline,
            list(images),
            embeds,
            mask,
            num_inference_steps=self.num_inference_steps,
            height=self.height,
            width=self.width,
            seed=self.seed,
            true_cfg_scale=self.true_cfg_scale,
            target_area=self.condition_area,
        )
        self._key, self._images = key, edited
        return edited


class JudgeReward:
    """One Complex-Edit criterion as a TRL reward function (`__name__` is the criterion, its log name)."""

    def __init__(self, criterion: str, renderer: EditRenderer, judge: JudgeClient) -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {criterion!r}; valid: {', '.join(CRITERIA)}")
        self.__name__ = criterion
        self.renderer, self.judge = renderer, judge
        self.template = (RUBRIC_DIR / f"{criterion}.txt").read_text()

    def requests(
        self, originals: Sequence[Image.Image], edited: Sequence[Image.Image], instructions: Sequence[str]
    ) -> list[JudgeRequest]:
        pairs = USES_ORIGINAL[self.__name__]
        return [
            JudgeRequest(prompt=self.template.format(instruction=instr), images=(orig, out) if pairs else (out,))
            for orig, out, instr in zip(originals, edited, instructions, strict=True)
        ]

    def __call__(
        self,
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]],
        image: Sequence[Any],
        instruction: Sequence[str],
        log_metric: Any = None,
        **kwargs: Any,
    ) -> list[float | None]:
        originals = [img.convert("RGB") for img in image]
        edited = self.renderer.render(originals, instruction, completion_ids)
        scores = self.judge.score(self.requests(originals, edited, instruction), parse_score)
        if log_metric is not None:
            for name, value in self.judge.pop_metrics().items():
                log_metric(f"{name}/{self.__name__}", value)
        return [None if s is None else s / 10.0 for s in scores]


def build_reward_funcs(names: Sequence[str], renderer: EditRenderer, judge: JudgeClient) -> list[Any]:
    """Judge rewards by criterion name, or user rewards `package.module:function`."""
    factories = {c: (lambda c=c: JudgeReward(c, renderer, judge)) for c in CRITERIA}
    return resolve_reward_funcs(names, factories)
