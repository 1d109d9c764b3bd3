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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from core.diffusion import PolicyRenderer
from core.judge import JudgeClient, JudgeRequest, parse_score
from core.rewards import resolve_reward_funcs

RUBRIC_DIR = Path(__file__).resolve().parent / "rubric"
CRITERIA = ("instruction_following", "identity_preservation", "perceptual_quality")
USES_ORIGINAL = {"instruction_following": True, "identity_preservation": True, "perceptual_quality": False}


# The renderer is shared with the text-to-image recipe through core; the name stays for this recipe's readers.
EditRenderer = PolicyRenderer


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
        edited = self.renderer.render(instruction, completion_ids, originals)
        scores = self.judge.score(self.requests(originals, edited, instruction), parse_score)
        if log_metric is not None:
            for name, value in self.judge.pop_metrics().items():
                log_metric(f"{name}/{self.__name__}", value)
        return [None if s is None else s / 10.0 for s in scores]


def build_reward_funcs(names: Sequence[str], renderer: EditRenderer, judge: JudgeClient) -> list[Any]:
    """Judge rewards by criterion name, or user rewards `package.module:function`."""
    factories = {c: (lambda c=c: JudgeReward(c, renderer, judge)) for c in CRITERIA}
    return resolve_reward_funcs(names, factories)
