"""Rewards for GRPO on the VLM inside Qwen-Image-Edit: render the edit the policy's completion asks for, let a
vision-language judge score it.

For a batch, `EditRenderer` turns each completion into the pipeline's conditioning — one forward of the CURRENT
policy over [system + user(image + instruction) + assistant + completion], the system tokens dropped exactly as the
pipeline's `encode_prompt` drops them — and runs the frozen DiT/VAE on the input image. The images are made once per
batch and shared by the three judge rewards, which follow the official Complex-Edit protocol (`judging.py`): ONE
alignment call per sample (input + edited image, instruction; reasoning, then both scores) and one perceptual-quality
call (edited image alone), each `judge_samples` times, all of a batch's calls in flight together (one judge latency
per batch), scores the official integers 0..10:

* `instruction_following`  mean score_IF / 10   (alignment call)
* `identity_preservation`  mean score_IP / 10   (alignment call)
* `perceptual_quality`     mean score_PQ / 10   (quality call)

each in [0, 1] and logged on its own; the total is the `reward_weights`-weighted sum (config default 1.0 each: 3 x
Complex-Edit's overall score / 10, which ranks completions exactly as the overall score does; TRL's group scaling
removes the factor 3 from the advantages). A sample is scored whole or not at all: if the judge cannot score ANY
draw of any call of it (HTTP failure after retries, timeout, open circuit breaker, a reply off the official schema),
EVERY criterion of it is `None`: with only judge rewards TRL leaves such a sample out of the step (all-None
row: no reward, out of the group mean, advantage 0) - never a 0, never a partial total, never a crash. `EditJudge`
scores all criteria of a batch in one pass for that. Judge failures, cache hits and latency are logged per step and
criterion (the two alignment criteria share their call's counters), `image_edit/unscored` (the share of samples left
unscored) per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from judging import CRITERIA, JudgePrompts, load_prompts, score_edits
from PIL import Image

from core.diffusion.pipeline import PolicyRenderer
from core.rewards.contract import resolve_reward_funcs
from core.rewards.judge import JudgeClient, image_digest

DEFAULT_REWARD_SAMPLES = 1  # judge draws per call in training (evaluate.py: the official 20)


# The renderer is shared with the text-to-image recipe through core; the name stays for this recipe's readers.
EditRenderer = PolicyRenderer


class EditJudge:
    """The Complex-Edit judge of a batch: every criterion in use scored in ONE pass, shared by the per-criterion
    rewards, with every criterion None for a sample any criterion of which the judge could not score.

    Why one pass: TRL calls one reward function per criterion and sums a sample's weighted rewards with `nansum`
    (None -> NaN), so if each criterion were judged on its own, a failed criterion would count as 0 in the sample's
    total while the answered ones count - a judge outage would lower rewards instead of being skipped. The first
    criterion called for a batch renders it (the renderer caches the batch) and judges all criteria; the others read
    their column. A criterion called again for the same batch (a later step drew identical completions) starts a new
    pass, so a failure is retried, not replayed.
    """

    def __init__(
        self,
        renderer: EditRenderer,
        judge: JudgeClient,
        criteria: Sequence[str] = CRITERIA,
        prompts: JudgePrompts | None = None,
        samples: int = DEFAULT_REWARD_SAMPLES,
    ) -> None:
        unknown = [c for c in criteria if c not in CRITERIA]
        if unknown:
            raise ValueError(f"unknown criteria {unknown}; valid: {', '.join(CRITERIA)}")
        if samples < 1:
            raise ValueError(f"judge_samples must be >= 1, got {samples}")
        self.renderer, self.judge = renderer, judge
        self.criteria = tuple(dict.fromkeys(criteria))
        self.prompts = prompts if prompts is not None else load_prompts(None)
        self.samples = samples
        self._batch: tuple | None = None
        self._scores: dict[str, list[float | None]] = {}
        self._unread: set[str] = set()

    def score(
        self,
        originals: Sequence[Image.Image],
        edited: Sequence[Image.Image],
        instructions: Sequence[str],
        log_metric: Any = None,
    ) -> dict[str, list[float | None]]:
        """Each criterion's mean score / 10 per sample; None in every criterion for a sample with any part unscored."""
        raw = score_edits(
            self.judge, originals, edited, instructions, self.prompts, self.samples, self.criteria, log_metric
        )
        scored = {c: [None if s is None else s / 10.0 for s in raw[c]] for c in self.criteria}
        if log_metric is not None and self.criteria:
            column = scored[self.criteria[0]]
            log_metric("image_edit/unscored", sum(s is None for s in column) / max(len(column), 1))
        return scored

    def column(
        self,
        criterion: str,
        completion_ids: Sequence[Sequence[int]],
        image: Sequence[Any],
        instruction: Sequence[str],
        log_metric: Any = None,
    ) -> list[float | None]:
        """`criterion`'s rewards for the batch, from this batch's one scoring pass (run now if not yet run)."""
        originals = [img.convert("RGB") for img in image]
        batch = (
            tuple(instruction),
            tuple(tuple(ids) for ids in completion_ids),
            tuple(image_digest(img) for img in originals),
        )
        if batch != self._batch or criterion not in self._unread:
            edited = self.renderer.render(instruction, completion_ids, originals)
            self._scores = self.score(originals, edited, instruction, log_metric)
            self._batch, self._unread = batch, set(self.criteria)
        self._unread.discard(criterion)
        return list(self._scores[criterion])


class JudgeReward:
    """One Complex-Edit criterion as a TRL reward function (`__name__` is the criterion, its log name): its column
    of the batch's shared `EditJudge` pass."""

    def __init__(self, criterion: str, scorer: EditJudge) -> None:
        if criterion not in scorer.criteria:
            raise ValueError(f"criterion {criterion!r} is not scored by this EditJudge ({', '.join(scorer.criteria)})")
        self.__name__ = criterion
        self.scorer = scorer

    def __call__(
        self,
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]],
        image: Sequence[Any],
        instruction: Sequence[str],
        log_metric: Any = None,
        **kwargs: Any,
    ) -> list[float | None]:
        return self.scorer.column(self.__name__, completion_ids, image, instruction, log_metric)


def build_reward_funcs(
    names: Sequence[str],
    renderer: EditRenderer,
    judge: JudgeClient,
    prompts: JudgePrompts | None = None,
    samples: int = DEFAULT_REWARD_SAMPLES,
) -> list[Any]:
    """Judge rewards by criterion name (one shared `EditJudge` over the criteria named), or user rewards
    `package.module:function`. `prompts`: `judging.load_prompts(judge_prompts_from)` (default: own wording)."""
    scorer = EditJudge(renderer, judge, [name for name in names if name in CRITERIA], prompts, samples)
    factories = {c: (lambda c=c: JudgeReward(c, scorer)) for c in CRITERIA}
    return resolve_reward_funcs(names, factories)
