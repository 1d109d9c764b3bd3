"""Rewards for image2code: does the completion's code run, and how close is the image it draws to the reference?

Main reward `image2code_reward` (the original project's formula, `RewardConfig` names)
--------------------------------------------------------------------------------------
    total = execution_success * code_execution_weight            (0.3)
          + image_similarity  * image_similarity_weight          (0.7)
          + penalty(status)

with `execution_success` = 1 only for status "ok" (the code ran AND a figure was captured), `image_similarity` the
`combined` score of `similarity.image_similarity` (0 unless "ok"), and the penalty by sandbox status:

    ok             0                                   -> 0.3 + 0.7 * similarity, in [0.3, 1.0]
    syntax_error   syntax_error_penalty   (-1.0)       -> -1.0
    runtime_error  runtime_error_penalty  (-0.5)       -> -0.5
    timeout        timeout_penalty        (-0.5)       -> -0.5  (treated like a runtime error: it ran, never ended)
    killed         killed_penalty         (-0.5)       -> -0.5  (memory/resource limit: a runtime failure too)
    no_image       no_image_penalty       ( 0.0)       ->  0.0  (ran cleanly but drew nothing: no success, no penalty)

An "ok" result without an image counts as "no_image", and so does an "ok" image with almost no ink (`is_blank`:
under 0.1% of the pixels differ from the image's most common colour by more than 8/255 in a channel): a figure with
nothing drawn on it (`plt.figure()`), or only a speck or one dot, is an empty answer like the empty program (no
figure at all), and paying it the execution weight plus the similarity of a blank canvas to a mostly-white chart
(about 0.6 in total on the sample charts) would teach the policy to draw nothing. Empty axes (`plt.subplots()`,
about 4% ink) are an attempt and scored as "ok". An unknown status counts as "runtime_error". So the order is
ok > no_image > runtime failures > syntax error, which is what GRPO's group-relative advantages need. A completion
whose reference image is missing scores None (TRL then ignores it). If similarity scoring itself fails on an "ok"
image (e.g. a degenerate image), similarity is 0 and the failure is logged.

Code extraction (`extract_code`): the LAST ```python (or ```py / ```python3) fenced block; else the FIRST generic
``` block (any other or no language tag); else the whole text. An unclosed final fence (a truncated completion)
counts as a block running to the end of the text. The result is stripped. So an empty completion, an empty fence
or a whitespace-only one is the empty program: it draws nothing ("no_image", 0.0). A repeated block is run once
(the last python block), so repeating code is never paid twice.

Rendering once per batch: all completions of a batch go to the sandbox in ONE `render(codes)` call (the sandbox
parallelises). `RenderCache` remembers the last few batches by the tuple of codes, so the main reward and a custom
hook reward - separate TRL reward functions, called one after the other on the same completions - share one render.

Custom scoring hook: `--custom_score_fn package.module:function` (loaded with `core.rewards.contract.load_object`)
names a
function `f(code: str, reference_image: PIL.Image, result: RenderResult) -> float`. It becomes its own TRL reward
function whose `__name__` is the function's name (TRL logs `rewards/<name>/mean`) with its own weight in
`reward_weights` (`--custom_score_weight`). A hook that raises on one completion scores None there (logged), not a
crashed step.

Metrics (via TRL's `log_metric`, averaged per logging step): `image2code/execution_success`,
`image2code/status/<status>` for every status (rates), `image2code/similarity/<component>` for every similarity
component and `combined` (means over the "ok" completions; not logged when a batch has none), `image2code/code_chars`.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import numpy as np
from PIL import Image
from similarity import COMPONENTS, SimilarityWeights, image_similarity, normalise_pair

from core.rewards.contract import completion_text, load_object

logger = logging.getLogger(__name__)

STATUSES = ("ok", "syntax_error", "runtime_error", "timeout", "killed", "no_image")
REWARD_NAME = "image2code_reward"
METRIC_PREFIX = "image2code"

__all__ = [
    "BLANK_INK_FRACTION",
    "INK_TOLERANCE",
    "REWARD_NAME",
    "STATUSES",
    "HookReward",
    "Image2CodeReward",
    "RenderCache",
    "RewardConfig",
    "build_reward_funcs",
    "effective_status",
    "extract_code",
    "ink_fraction",
    "is_blank",
    "score_result",
]


class Renderer(Protocol):
    """What the rewards need from `core.rewards.sandbox.Sandbox`."""

    def render(self, codes: list[str]) -> list[Any]: ...


# ------------------------------------------------------------------------------------------------------------ config


@dataclass
class RewardConfig:
    """Weights and penalties of the main reward (module docstring), plus the similarity component weights."""

    code_execution_weight: float = 0.3
    image_similarity_weight: float = 0.7
    syntax_error_penalty: float = -1.0
    runtime_error_penalty: float = -0.5
    timeout_penalty: float = -0.5
    killed_penalty: float = -0.5
    no_image_penalty: float = 0.0
    ssim_weight: float = 0.3
    mse_weight: float = 0.15
    cosine_weight: float = 0.15
    histogram_weight: float = 0.2
    edge_weight: float = 0.2

    def __post_init__(self) -> None:
        self.similarity_weights  # validates the component weights early  # noqa: B018

    @property
    def similarity_weights(self) -> SimilarityWeights:
        return SimilarityWeights(
            ssim=self.ssim_weight,
            mse=self.mse_weight,
            cosine=self.cosine_weight,
            histogram=self.histogram_weight,
            edge=self.edge_weight,
        )

    def penalty(self, status: str) -> float:
        return {
            "ok": 0.0,
            "syntax_error": self.syntax_error_penalty,
            "runtime_error": self.runtime_error_penalty,
            "timeout": self.timeout_penalty,
            "killed": self.killed_penalty,
            "no_image": self.no_image_penalty,
        }[status]

    @classmethod
    def from_object(cls, source: Any) -> RewardConfig:
        """A RewardConfig from any object (e.g. the recipe's parsed args) holding some of these field names."""
        names = [f.name for f in fields(cls)]
        return cls(**{name: getattr(source, name) for name in names if hasattr(source, name)})


# ------------------------------------------------------------------------------------------------------- extraction

_FENCE_RE = re.compile(r"```[ \t]*([^\n`]*)\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3"}


def extract_code(text: Any) -> str:
    """The code of a completion (string or TRL message list): last python block, else first block, else all text."""
    text = completion_text(text)
    blocks = [(tag.strip().lower(), body) for tag, body in _FENCE_RE.findall(text)]
    python = [body for tag, body in blocks if (tag.split() or [""])[0] in _PYTHON_TAGS]
    if python:
        return python[-1].strip()
    if blocks:
        return blocks[0][1].strip()
    return text.strip()


# ---------------------------------------------------------------------------------------------------------- scoring


# "Ink": a pixel differing from the image's dominant colour by more than INK_TOLERANCE (0..255) in some channel.
# An image whose ink fraction is below BLANK_INK_FRACTION is blank. Measured at the similarity working size
# (`similarity.normalise_pair`): the 40 charts of `data.create_sample` (seed 0) have 3.5% (sparse scatter plots) to
# 51% (area charts) ink, empty axes 3.9-4.5%, one word of text 0.4%; a single '.' or a 1-point-radius disc drawn on
# an empty figure 0.007-0.034%, a near-white (0.99) speck 0% (within the tolerance). 0.1% is 35x below the
# sparsest chart and 3x above one dot.
INK_TOLERANCE = 8
BLANK_INK_FRACTION = 0.001


def ink_fraction(image: Image.Image) -> float:
    """Share of pixels (as the similarity measure sees the image: `similarity.normalise_pair`, RGB with transparency
    over white, at its working size) that differ from the image's most common colour by more than INK_TOLERANCE in
    any channel."""
    _, seen = normalise_pair(image, image)
    pixels = np.rint(seen).astype(np.int64).reshape(-1, 3)
    keys = (pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2]
    colours, counts = np.unique(keys, return_counts=True)
    dominant = colours[counts.argmax()]
    background = np.array([(dominant >> 16) & 255, (dominant >> 8) & 255, dominant & 255])
    return float((np.abs(pixels - background).max(axis=1) > INK_TOLERANCE).mean())


def is_blank(image: Image.Image) -> bool:
    """Whether next to nothing was drawn: `ink_fraction(image)` < BLANK_INK_FRACTION (0.1% of the pixels).

    A single colour is blank, and so is a figure with one speck or dot on it: paying those the execution weight plus
    the similarity of an empty canvas to a mostly-white chart (about 0.6) would teach drawing nothing. Empty axes
    (`plt.subplots()`, ~4% ink) are an attempt and are scored. A reference chart this sparse would be unlearnable
    (its own code scores no_image), but real charts have 35x more ink than the bound (see BLANK_INK_FRACTION).
    """
    return ink_fraction(image) < BLANK_INK_FRACTION


def effective_status(result: Any) -> str:
    """The status the reward uses: "ok" without an image, or with a blank one (`is_blank`: almost no ink), is
    "no_image"; an unknown status is "runtime_error"."""
    status = getattr(result, "status", None)
    if status not in STATUSES:
        return "runtime_error"
    if status == "ok":
        image = getattr(result, "image", None)
        try:
            if image is None or is_blank(image):
                return "no_image"
        except Exception as err:  # an unreadable image is no image; a reward must not take the step down
            logger.warning("image2code: cannot read the rendered image (%s: %s)", type(err).__name__, err)
            return "no_image"
    return status


def score_result(
    result: Any, reference: Image.Image, config: RewardConfig
) -> tuple[float, str, dict[str, float] | None]:
    """(total reward, effective status, similarity components or None) for one rendered completion."""
    status = effective_status(result)
    similarity: dict[str, float] | None = None
    success = 0.0
    sim_score = 0.0
    if status == "ok":
        success = 1.0
        try:
            similarity = image_similarity(reference, result.image, config.similarity_weights)
            sim_score = similarity["combined"]
        except Exception as err:  # a degenerate image must not take the training step down
            logger.warning("image2code: similarity failed (%s: %s); scoring similarity 0", type(err).__name__, err)
    total = success * config.code_execution_weight + sim_score * config.image_similarity_weight
    return total + config.penalty(status), status, similarity


class RenderCache:
    """Renders a batch of codes with ONE `sandbox.render` call and remembers the last `size` batches by codes."""

    def __init__(self, sandbox: Renderer, size: int = 4) -> None:
        self.sandbox = sandbox
        self.size = size
        self._cache: OrderedDict[tuple[str, ...], list[Any]] = OrderedDict()
        self.calls = 0  # sandbox.render calls made (for tests and logs)

    def render(self, codes: Sequence[str]) -> list[Any]:
        key = tuple(codes)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        results = list(self.sandbox.render(list(codes)))
        self.calls += 1
        if len(results) != len(codes):
            raise RuntimeError(f"sandbox returned {len(results)} results for {len(codes)} codes")
        self._cache[key] = results
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return results


def _reference_images(n: int, image: Any, reference_image: Any) -> list[Any]:
    images = reference_image if reference_image is not None else image
    if images is None:
        raise ValueError("image2code rewards need the dataset column 'image' (the reference image)")
    images = list(images)
    if len(images) != n:
        raise ValueError(f"got {len(images)} reference images for {n} completions")
    return images


def _as_cache(sandbox: Renderer | RenderCache) -> RenderCache:
    return sandbox if isinstance(sandbox, RenderCache) else RenderCache(sandbox)


class Image2CodeReward:
    """The main reward as a TRL reward function (`__name__` = "image2code_reward"); see the module docstring.

    `sandbox` is anything with `render(codes) -> list[RenderResult]` (normally `core.rewards.sandbox.Sandbox`), or a
    `RenderCache` shared with hook rewards. `hook` is only kept for `build_reward_funcs`' convenience: pass a
    `HookReward` built on the same cache to have it reuse this reward's renders.
    """

    def __init__(
        self, sandbox: Renderer | RenderCache, config: RewardConfig | None = None, hook: HookReward | None = None
    ) -> None:
        self.__name__ = REWARD_NAME
        self.cache = _as_cache(sandbox)
        self.config = config or RewardConfig()
        self.hook = hook

    def __call__(
        self,
        completions: Sequence[Any],
        image: Sequence[Any] | None = None,
        reference_image: Sequence[Any] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        codes = [extract_code(completion) for completion in completions]
        references = _reference_images(len(codes), image, reference_image)
        results = self.cache.render(codes)
        rewards: list[float | None] = []
        statuses: list[str] = []
        similarities: list[dict[str, float]] = []
        for reference, result in zip(references, results, strict=True):
            if reference is None:
                rewards.append(None)
                continue
            total, status, similarity = score_result(result, reference, self.config)
            rewards.append(total)
            statuses.append(status)
            if similarity is not None:
                similarities.append(similarity)
        if log_metric is not None and statuses:
            self._log(log_metric, statuses, similarities, codes)
        return rewards

    @staticmethod
    def _log(
        log_metric: Callable[[str, float], None],
        statuses: list[str],
        similarities: list[dict[str, float]],
        codes: list[str],
    ) -> None:
        n = len(statuses)
        log_metric(f"{METRIC_PREFIX}/execution_success", statuses.count("ok") / n)
        for status in STATUSES:
            log_metric(f"{METRIC_PREFIX}/status/{status}", statuses.count(status) / n)
        if similarities:
            for name in (*COMPONENTS, "combined"):
                log_metric(f"{METRIC_PREFIX}/similarity/{name}", sum(s[name] for s in similarities) / len(similarities))
        log_metric(f"{METRIC_PREFIX}/code_chars", sum(len(code) for code in codes) / len(codes))


class HookReward:
    """A user scoring hook `f(code, reference_image, result) -> float` as a TRL reward function named after `f`."""

    def __init__(self, func: Callable[..., float], sandbox: Renderer | RenderCache, name: str | None = None) -> None:
        if not callable(func):
            raise ValueError(f"image2code hook {func!r} is not callable")
        self.func = func
        self.cache = _as_cache(sandbox)
        self.__name__ = name or getattr(func, "__name__", None) or type(func).__name__

    def __call__(
        self,
        completions: Sequence[Any],
        image: Sequence[Any] | None = None,
        reference_image: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        codes = [extract_code(completion) for completion in completions]
        references = _reference_images(len(codes), image, reference_image)
        results = self.cache.render(codes)
        scores: list[float | None] = []
        failures = 0
        for code, reference, result in zip(codes, references, results, strict=True):
            try:
                value = self.func(code, reference, result)
                scores.append(None if value is None else float(value))
            except Exception as err:  # a user hook must not take the step down
                failures += 1
                scores.append(None)
                if failures == 1:
                    logger.warning("image2code hook %s failed: %s: %s", self.__name__, type(err).__name__, err)
        if failures:
            logger.warning("image2code hook %s failed on %d of %d completions", self.__name__, failures, len(codes))
        return scores


def load_hook(path: str) -> Callable[..., float]:
    """The hook function named by `package.module:function` (or `file.py:function`); errors name the path."""
    func = load_object(path)
    if not callable(func):
        raise ValueError(f"image2code hook {path!r} is not callable")
    return func


def reference_completion(row: Mapping[str, Any]) -> str:
    """The row's `reference_code` as a model answer (one fenced Python block), for
    `core.rewards.contract.check_rewards_can_score` at start-up: the reward renders it and compares it
    with the image."""
    return f"```python\n{row['reference_code']}\n```"


def build_reward_funcs(
    config: RewardConfig,
    sandbox: Renderer,
    hook_path: str | None = None,
    hook_weight: float = 1.0,
) -> tuple[list[Any], list[float]]:
    """(reward functions, reward_weights) for GRPOConfig: the main reward (weight 1.0) and, with `hook_path`, the
    hook reward (weight `hook_weight`), both rendering through one shared `RenderCache`."""
    cache = RenderCache(sandbox)
    funcs: list[Any] = []
    weights: list[float] = []
    hook = None
    if hook_path:
        hook = HookReward(load_hook(hook_path), cache)
        if hook.__name__ == REWARD_NAME:
            raise ValueError(f"image2code hook {hook_path!r}: the name {REWARD_NAME!r} is taken by the main reward")
    funcs.append(Image2CodeReward(cache, config, hook))
    weights.append(1.0)
    if hook is not None:
        funcs.append(hook)
        weights.append(float(hook_weight))
    return funcs, weights
