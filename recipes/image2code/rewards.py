"""Rewards for image2code: does the completion's code run, and how close is the image it draws to the reference?

Built-in rewards (TRL contract: `f(completions, **dataset_columns) -> list[float | None]`, weights via `reward_weights`)
--------------------------------------------------------------------------------------------------------------------
Each completion's code (`extract_code`) runs in the sandbox once; its effective status (`effective_status`) and, for
"ok", its similarity to the row's reference image (`similarity.image_similarity`, `combined`) give three rewards:

    code_execution_reward    1.0 if status is "ok" (it ran AND drew something), else 0.0     default weight 0.3
    image_similarity_reward  the combined similarity if "ok", else 0.0 (in [0, 1])           default weight 0.7
    status_penalty_reward    penalty(status), a config key per status (below), 0 for "ok"    default weight 1.0

TRL adds them up with `reward_weights`, so with the defaults

    total = 0.3 * code_execution_reward + 0.7 * image_similarity_reward + 1.0 * status_penalty_reward

which is the original project's formula `success * 0.3 + similarity * 0.7 + penalty(status)` exactly. The penalty
per status (config keys, in reward units: they configure `status_penalty_reward`, they are not weights):

    ok             0                                   -> total 0.3 + 0.7 * similarity, in [0.3, 1.0]
    syntax_error   syntax_error_penalty   (-1.0)       -> -1.0
    runtime_error  runtime_error_penalty  (-0.5)       -> -0.5
    timeout        timeout_penalty        (-0.5)       -> -0.5  (treated like a runtime error: it ran, never ended)
    killed         killed_penalty         (-0.5)       -> -0.5  (memory/resource limit: a runtime failure too)
    no_image       no_image_penalty       ( 0.0)       ->  0.0  (ran cleanly but drew nothing: no success, no penalty)

`reward_weights` left unset means each reward's default weight (`REWARD_WEIGHTS`; 1.0 for a user reward), so the
default `reward_funcs` keep the formula with or without a config file (`resolve_reward_settings`).

An "ok" result without an image counts as "no_image", and so does an "ok" image with almost no ink (`is_blank`:
under 0.1% of the pixels differ from the image's most common colour by more than 8/255 in a channel): a figure with
nothing drawn on it (`plt.figure()`), or only a speck or one dot, is an empty answer like the empty program (no
figure at all), and paying it the execution weight plus the similarity of a blank canvas to a mostly-white chart
(about 0.6 in total on the sample charts) would teach the policy to draw nothing. Empty axes (`plt.subplots()`,
about 4% ink) are an attempt and scored as "ok". An unknown status counts as "runtime_error". So the order is
ok > no_image > runtime failures > syntax error, which is what GRPO's group-relative advantages need. A completion
whose reference image is missing scores None in every built-in reward (TRL then ignores it). If similarity scoring
itself fails on an "ok" image (e.g. a degenerate image), similarity is 0 and the failure is logged.

Code extraction (`extract_code`): the LAST ```python (or ```py / ```python3) fenced block; else the FIRST generic
``` block (any other or no language tag); else the whole text. An unclosed final fence (a truncated completion)
counts as a block running to the end of the text. The result is stripped. So an empty completion, an empty fence
or a whitespace-only one is the empty program: it draws nothing ("no_image", 0.0). A repeated block is run once
(the last python block), so repeating code is never paid twice.

One render per distinct program per step: TRL calls every reward function separately on the same completions, and
three built-ins (plus any program scorer below) read the same render. `ProgramScorer` renders and scores a batch with
ONE `sandbox.map(codes, then)` call and keeps the scored batch for the next reward functions. Identical programs (a
group's completions often agree) run once, identical (program, reference image) pairs are scored once, and each
program is scored (`score_program`) in the sandbox's thread pool as soon as it is rendered, while the others still
run: the step waits for the batch's slowest program, not for its renders and then every score one after another.

User rewards: `reward_funcs` entries `package.module:function` (or `file.py:function`) are imported through
`core.rewards.contract.resolve_reward_funcs`, as in every recipe: a TRL reward `f(completions, **kwargs)` gets the
dataset columns (`image` is the reference image, `reference_code`, `description`, `id`). A function that takes
neither `completions` nor `**kwargs` (so TRL could never call it) and accepts three positional arguments is a
*program scorer* `f(code: str, reference_image: PIL.Image, result: RenderResult) -> float | None`, the former
`custom_score_fn` hook: it is wrapped into a TRL reward named after the function that reads the shared render
(`ProgramReward`); a scorer that raises on one completion scores None there (logged), not a crashed step.

Old keys (`resolve_reward_settings`, applied by train.py at parse time; see README "Old config keys"):
`code_execution_weight` / `image_similarity_weight` are the `reward_weights` entries of `code_execution_reward` /
`image_similarity_reward`; `custom_score_fn: F` with `custom_score_weight: W` (default 1.0) appends F to
`reward_funcs` and W to `reward_weights`.

Metrics (via TRL's `log_metric`, averaged per logging step, logged once per batch whichever rewards run):
`image2code/execution_success`, `image2code/status/<status>` for every status (rates),
`image2code/similarity/<component>` for every similarity component and `combined` (means over the "ok"
completions; not logged when a batch has none), `image2code/code_chars`.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, Protocol

import numpy as np
from PIL import Image
from similarity import COMPONENTS, SimilarityWeights, image_similarity, normalise_pair

from core.errors import ConfigError
from core.rewards.contract import RewardFunc, completion_text, resolve_reward_funcs

logger = logging.getLogger(__name__)

STATUSES = ("ok", "syntax_error", "runtime_error", "timeout", "killed", "no_image")
METRIC_PREFIX = "image2code"
# The built-in rewards and their default reward_weights: together the original total (module docstring).
REWARD_WEIGHTS = {"code_execution_reward": 0.3, "image_similarity_reward": 0.7, "status_penalty_reward": 1.0}
REWARD_NAMES = tuple(REWARD_WEIGHTS)
# Old config keys that were weights, and the built-in reward whose reward_weights entry each one is.
OLD_WEIGHT_KEYS = {
    "code_execution_weight": "code_execution_reward",
    "image_similarity_weight": "image_similarity_reward",
}

__all__ = [
    "BLANK_INK_FRACTION",
    "INK_TOLERANCE",
    "OLD_WEIGHT_KEYS",
    "REWARD_NAMES",
    "REWARD_WEIGHTS",
    "STATUSES",
    "BuiltinReward",
    "ProgramReward",
    "ProgramScorer",
    "RewardConfig",
    "ScoredBatch",
    "build_reward_funcs",
    "effective_status",
    "extract_code",
    "ink_fraction",
    "is_blank",
    "is_program_scorer",
    "reference_completion",
    "resolve_reward_settings",
    "run_reward_weights",
    "score_program",
    "score_result",
]


class Renderer(Protocol):
    """What the rewards need from `core.rewards.sandbox.Sandbox`: `[then(i, result of codes[i]) ...]`, in order."""

    def map(self, codes: list[str], then: Callable[[int, Any], Any]) -> list[Any]: ...


# ------------------------------------------------------------------------------------------------------------ config


@dataclass
class RewardConfig:
    """What configures the built-in rewards: the penalty per status (`status_penalty_reward`) and the similarity
    component weights (`image_similarity_reward`'s combined score). Not reward weights: those are `reward_weights`."""

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
        """A RewardConfig from any object (e.g. the recipe's parsed args) holding some of these field names; other
        attributes (an old run's `code_execution_weight`, say) are ignored."""
        names = [f.name for f in fields(cls)]
        return cls(**{name: getattr(source, name) for name in names if getattr(source, name, None) is not None})


def _flag_list(values: Sequence[float]) -> str:
    return " ".join(f"{v:g}" for v in values)


def resolve_reward_settings(
    reward_funcs: Sequence[str],
    reward_weights: Sequence[float] | None,
    *,
    code_execution_weight: float | None = None,
    image_similarity_weight: float | None = None,
    custom_score_fn: str | None = None,
    custom_score_weight: float | None = None,
) -> tuple[list[str], list[float]]:
    """The final (reward_funcs, reward_weights), with the old keys mapped onto them. Raises ConfigError.

    Rules (README "Old config keys"):
    1. `custom_score_fn: F` appends F to reward_funcs (F must not be listed already); `custom_score_weight: W`
       (default 1.0; only with custom_score_fn) is its reward_weights entry, appended when reward_weights is set.
    2. `code_execution_weight` / `image_similarity_weight` are the reward_weights entries of `code_execution_reward` /
       `image_similarity_reward`, which reward_funcs must list.
    3. reward_weights unset: each reward's weight is its old key's value if set, else `REWARD_WEIGHTS` (1.0 for a user
       reward). reward_weights set: it needs one value per reward, and an old key that disagrees with its entry is
       refused with the list to write instead (the two name the same number; keeping one silently would guess).
    """
    names = list(reward_funcs)
    old = {
        OLD_WEIGHT_KEYS[key]: (key, value)
        for key, value in (
            ("code_execution_weight", code_execution_weight),
            ("image_similarity_weight", image_similarity_weight),
        )
        if value is not None
    }
    if custom_score_weight is not None and not custom_score_fn:
        raise ConfigError(
            f"custom_score_weight {custom_score_weight:g} without custom_score_fn: it weighs nothing; drop it (user "
            "rewards go in reward_funcs, their weights in reward_weights)"
        )
    if custom_score_fn:
        if custom_score_fn in names:
            raise ConfigError(
                f"custom_score_fn {custom_score_fn!r} is already in reward_funcs; drop custom_score_fn (its weight "
                "is that reward's reward_weights entry)"
            )
        names.append(custom_score_fn)
        if custom_score_weight is not None:
            old[custom_score_fn] = ("custom_score_weight", custom_score_weight)
    for name, (key, _) in old.items():
        if name not in names:
            raise ConfigError(
                f"{key} is the reward_weights entry of {name}, which reward_funcs {names} does not list; add "
                f"{name} to reward_funcs or drop {key}"
            )
    if reward_weights is None:
        weights = [old[name][1] if name in old else REWARD_WEIGHTS.get(name, 1.0) for name in names]
        return names, [float(w) for w in weights]

    weights = [float(w) for w in reward_weights]
    if custom_score_fn and len(weights) == len(names) - 1:
        weights.append(1.0 if custom_score_weight is None else float(custom_score_weight))
    if len(weights) != len(names):
        raise ConfigError(
            f"reward_weights has {len(weights)} value(s) for the {len(names)} reward(s) of reward_funcs {names}: "
            "give one weight per reward, in the same order"
        )
    fixed = [float(old[name][1]) if name in old else w for name, w in zip(names, weights, strict=True)]
    if fixed != weights:
        keys = ", ".join(
            f"{key}={value:g}" for name, (key, value) in old.items() if float(value) != weights[names.index(name)]
        )
        raise ConfigError(
            f"{keys} and reward_weights [{', '.join(f'{w:g}' for w in weights)}] (for {names}) set the same "
            f"weight differently; keep one: write reward_weights: [{', '.join(f'{w:g}' for w in fixed)}] "
            f"(flag: --reward_weights {_flag_list(fixed)}) and drop the old key(s)"
        )
    return names, weights


def run_reward_weights(script: Mapping[str, Any], grpo: Mapping[str, Any] | None = None) -> dict[str, float]:
    """The built-in rewards' weights of a finished run, from its run_config.yaml sections (`ScriptArguments`,
    `GRPOConfig`), for evaluation's weighted total (`score_result(..., weights=...)`). A run recorded before
    `reward_funcs` existed had one total, `code_execution_weight` (0.3) / `image_similarity_weight` (0.7) /
    penalties, and its `reward_weights` weighed that total: the old total is returned for it, as evaluate.py
    computed it then."""
    if "reward_funcs" not in script:
        return {
            **REWARD_WEIGHTS,
            **{name: float(script[key]) for key, name in OLD_WEIGHT_KEYS.items() if script.get(key) is not None},
        }
    names, weights = resolve_reward_settings(
        script["reward_funcs"],
        (grpo or {}).get("reward_weights"),
        code_execution_weight=script.get("code_execution_weight"),
        image_similarity_weight=script.get("image_similarity_weight"),
        custom_score_fn=script.get("custom_score_fn"),
        custom_score_weight=script.get("custom_score_weight"),
    )
    return {name: weight for name, weight in zip(names, weights, strict=True) if name in REWARD_WEIGHTS}


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
# (`similarity.normalise_pair`): the 40 sample charts (seed 0, then data.create_sample) have 3.5% (sparse scatter
# plots) to 51% (area charts) ink, empty axes 3.9-4.5%, one word of text 0.4%; a single '.' or a 1-point-radius disc
# drawn on an empty figure 0.007-0.034%, a near-white (0.99) speck 0% (within the tolerance). 0.1% is 35x below the
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


def score_program(result: Any, reference: Image.Image, config: RewardConfig) -> tuple[str, dict[str, float] | None]:
    """(effective status, similarity components or None) of one rendered program; what every built-in reads."""
    status = effective_status(result)
    if status != "ok":
        return status, None
    try:
        return status, image_similarity(reference, result.image, config.similarity_weights)
    except Exception as err:  # a degenerate image must not take the training step down
        logger.warning("image2code: similarity failed (%s: %s); scoring similarity 0", type(err).__name__, err)
        return status, None


def _execution_value(status: str, similarity: dict[str, float] | None, config: RewardConfig) -> float:
    return 1.0 if status == "ok" else 0.0


def _similarity_value(status: str, similarity: dict[str, float] | None, config: RewardConfig) -> float:
    return similarity["combined"] if status == "ok" and similarity is not None else 0.0


def _penalty_value(status: str, similarity: dict[str, float] | None, config: RewardConfig) -> float:
    return config.penalty(status)


# The value of each built-in reward for one scored program (module docstring).
BUILTIN_VALUES: dict[str, Callable[[str, dict[str, float] | None, RewardConfig], float]] = {
    "code_execution_reward": _execution_value,
    "image_similarity_reward": _similarity_value,
    "status_penalty_reward": _penalty_value,
}


def score_result(
    result: Any,
    reference: Image.Image,
    config: RewardConfig | None = None,
    weights: Mapping[str, float] | None = None,
) -> tuple[float, str, dict[str, float] | None]:
    """(weighted total of the built-in rewards, effective status, similarity components or None) for one rendered
    program, as TRL sums them in training. `weights`: reward name -> weight (default `REWARD_WEIGHTS`, the
    original formula; `run_reward_weights` reads a run's); a built-in missing from it counts 0."""
    config = config or RewardConfig()
    weights = REWARD_WEIGHTS if weights is None else weights
    status, similarity = score_program(result, reference, config)
    total = sum(weights.get(name, 0.0) * value(status, similarity, config) for name, value in BUILTIN_VALUES.items())
    return total, status, similarity


# --------------------------------------------------------------------------------------------- one render per batch


@dataclass
class ScoredBatch:
    """A batch's programs, sandbox results and, per completion, status and similarity (both None: no reference)."""

    codes: list[str]
    references: list[Any]
    results: list[Any]
    statuses: list[str | None]
    similarities: list[dict[str, float] | None]


def _reference_images(n: int, image: Any, reference_image: Any) -> list[Any]:
    images = reference_image if reference_image is not None else image
    if images is None:
        raise ValueError("image2code rewards need the dataset column 'image' (the reference image)")
    images = list(images)
    if len(images) != n:
        raise ValueError(f"got {len(images)} reference images for {n} completions")
    return images


class ProgramScorer:
    """Renders and scores a batch once for every reward function that reads it.

    Why a shared, per-batch cache: TRL calls each reward function on its own, one after the other, with the same
    completions and dataset columns, and the three built-ins (and any program scorer) need the same render; running
    each program once per reward would triple the sandbox time, the dominant cost of a step. The cache key is the
    batch's extracted codes plus the identity of its reference images (TRL hands every reward the same column
    objects; the entry keeps them alive, so an id is never reused while it is cached): the same programs against
    other images (a later step, the start-up check) are scored afresh, never read from another batch. The last
    `size` batches are kept. Metrics are logged when a batch is scored, so once per batch.
    """

    def __init__(self, sandbox: Renderer, config: RewardConfig | None = None, size: int = 4) -> None:
        self.sandbox = sandbox
        self.config = config or RewardConfig()
        self.size = size
        self._cache: OrderedDict[tuple[tuple[str, ...], tuple[int, ...]], ScoredBatch] = OrderedDict()
        self.renders = 0  # sandbox.render calls made (for tests and logs)

    def score(
        self,
        completions: Sequence[Any],
        image: Sequence[Any] | None = None,
        reference_image: Sequence[Any] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
    ) -> ScoredBatch:
        codes = [extract_code(completion) for completion in completions]
        references = _reference_images(len(codes), image, reference_image)
        pairs = list(zip(codes, (id(reference) for reference in references), strict=True))
        key = (tuple(codes), tuple(reference for _, reference in pairs))
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        # A (program, reference) pair repeated in the batch (a group's agreeing completions: TRL hands a group's rows
        # the same decoded image) is rendered and scored once; the sandbox runs identical programs once anyway.
        first: dict[tuple[str, int], int] = {}
        for i, pair in enumerate(pairs):
            first.setdefault(pair, i)
        scored = self.sandbox.map(
            [code for code, _ in first], partial(self._score, [references[i] for i in first.values()])
        )
        self.renders += 1
        if len(scored) != len(first):
            raise RuntimeError(f"sandbox returned {len(scored)} results for {len(first)} codes")
        position = {pair: k for k, pair in enumerate(first)}
        picked = [scored[position[pair]] for pair in pairs]
        results = [result for result, _, _ in picked]
        statuses = [status for _, status, _ in picked]
        similarities = [similarity for _, _, similarity in picked]
        batch = ScoredBatch(codes, references, results, statuses, similarities)
        self._cache[key] = batch
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        if log_metric is not None:
            self._log(log_metric, batch)
        return batch

    def _score(self, references: list[Any], index: int, result: Any) -> tuple[Any, str | None, dict[str, float] | None]:
        """(result, effective status, similarity) of one rendered program; run in the sandbox's pool as the program
        ends. Never raises (`score_program` turns a failure into similarity None), so one program's failure costs
        only its own score."""
        reference = references[index]
        if reference is None:
            return result, None, None
        return (result, *score_program(result, reference, self.config))

    @staticmethod
    def _log(log_metric: Callable[[str, float], None], batch: ScoredBatch) -> None:
        statuses = [status for status in batch.statuses if status is not None]
        if not statuses:
            return
        n = len(statuses)
        log_metric(f"{METRIC_PREFIX}/execution_success", statuses.count("ok") / n)
        for status in STATUSES:
            log_metric(f"{METRIC_PREFIX}/status/{status}", statuses.count(status) / n)
        similarities = [s for s in batch.similarities if s is not None]
        if similarities:
            for name in (*COMPONENTS, "combined"):
                log_metric(f"{METRIC_PREFIX}/similarity/{name}", sum(s[name] for s in similarities) / len(similarities))
        log_metric(f"{METRIC_PREFIX}/code_chars", sum(len(code) for code in batch.codes) / len(batch.codes))


class BuiltinReward:
    """One built-in reward (`REWARD_NAMES`) as a TRL reward function named `name`, reading the shared scorer."""

    def __init__(self, name: str, scorer: ProgramScorer) -> None:
        if name not in BUILTIN_VALUES:
            raise ValueError(f"unknown image2code reward {name!r}; built-in rewards: {', '.join(REWARD_NAMES)}")
        self.__name__ = name
        self.scorer = scorer
        self.value = BUILTIN_VALUES[name]

    def __repr__(self) -> str:
        return f"BuiltinReward({self.__name__!r})"

    def __call__(
        self,
        completions: Sequence[Any],
        image: Sequence[Any] | None = None,
        reference_image: Sequence[Any] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        batch = self.scorer.score(completions, image, reference_image, log_metric)
        config = self.scorer.config
        return [
            None if status is None else self.value(status, similarity, config)
            for status, similarity in zip(batch.statuses, batch.similarities, strict=True)
        ]


def is_program_scorer(func: Any) -> bool:
    """Whether a user reward is a program scorer `f(code, reference_image, result)` rather than a TRL reward.

    TRL calls a reward with keyword arguments only (`prompts=`, `completions=`, the dataset columns), so a function
    with neither a `completions` parameter nor `**kwargs` can never be a TRL reward; one that also accepts three
    positional arguments is the per-program form (the former `custom_score_fn` hook). Anything else, and any
    callable whose signature cannot be read, is left to TRL's contract."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return False
    parameters = signature.parameters
    if "completions" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return False
    try:
        signature.bind(None, None, None)
    except TypeError:
        return False
    return True


class ProgramReward:
    """A program scorer `f(code, reference_image, result) -> float | None` as a TRL reward function named after
    `f`, reading the shared render (no second sandbox run)."""

    def __init__(self, func: Callable[..., float | None], scorer: ProgramScorer, name: str | None = None) -> None:
        if not callable(func):
            raise ValueError(f"image2code program scorer {func!r} is not callable")
        self.func = func
        self.scorer = scorer
        self.__name__ = name or getattr(func, "__name__", None) or type(func).__name__

    def __call__(
        self,
        completions: Sequence[Any],
        image: Sequence[Any] | None = None,
        reference_image: Sequence[Any] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        batch = self.scorer.score(completions, image, reference_image, log_metric)
        scores: list[float | None] = []
        failures = 0
        for code, reference, result in zip(batch.codes, batch.references, batch.results, strict=True):
            try:
                value = self.func(code, reference, result)
                scores.append(None if value is None else float(value))
            except Exception as err:  # a user scorer must not take the step down
                failures += 1
                scores.append(None)
                if failures == 1:
                    logger.warning("image2code reward %s failed: %s: %s", self.__name__, type(err).__name__, err)
        if failures:
            logger.warning("image2code reward %s failed on %d of %d completions", self.__name__, failures, len(scores))
        return scores


def reference_completion(row: Mapping[str, Any]) -> str:
    """The row's `reference_code` as a model answer (one fenced Python block), for
    `core.rewards.contract.check_rewards_can_score` at start-up: the reward renders it and compares it
    with the image."""
    return f"```python\n{row['reference_code']}\n```"


def build_reward_funcs(names: Sequence[str], sandbox: Renderer, config: RewardConfig | None = None) -> list[RewardFunc]:
    """The reward functions of `reward_funcs`, in order: built-ins by name (`REWARD_NAMES`), user rewards by import
    path (`core.rewards.contract.resolve_reward_funcs`), program scorers wrapped as `ProgramReward`. All of them
    share one `ProgramScorer`, so each program of a batch is rendered once. Weights are TRL's `reward_weights`."""
    scorer = ProgramScorer(sandbox, config)
    builtins = {name: partial(BuiltinReward, name, scorer) for name in REWARD_NAMES}
    funcs: list[RewardFunc] = []
    for name, func in zip(names, resolve_reward_funcs(names, builtins), strict=True):
        if name not in builtins:
            if is_program_scorer(func):
                func = ProgramReward(func, scorer)
            if getattr(func, "__name__", None) in builtins:
                raise ValueError(
                    f"reward {name!r} is named {func.__name__!r}, like the built-in reward; rename the function "
                    "(TRL logs every reward under its name)"
                )
        funcs.append(func)
    return funcs
