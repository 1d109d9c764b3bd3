"""Rewards for visual grounding: is the predicted point / box on the region the sentence describes?

Coordinate frames (the classic bug)
-----------------------------------
The ground truth `solution` is in ORIGINAL-image pixels, but models answer in their own frame:

* `pixels_resized`  - Qwen2.5-VL: absolute pixels of the image AFTER the processor's smart_resize
  (`model_image_size`, e.g. 640x480 is seen as 644x476);
* `norm1000`        - Qwen2-VL and Qwen3-VL: coordinates normalised to 0..1000 of the image;
  Gemma-3 has no native grounding format, we choose norm1000 for it (resolution independent, and its fixed
  896x896 resize would make resized pixels meaningless to the model);
* `pixels_original` - the data's own frame (for models prompted/trained to answer in original pixels).

Comparing a Qwen2.5-VL answer with the truth without converting gives IoU ~ 0 as soon as the processor resizes much
(a 2560x1920 photo is seen as 1148x840), and training then learns nothing. Every reward converts the prediction with
`to_original` first:

    pixels_resized : x_orig = x * W / W_model,  y_orig = y * H / H_model
    norm1000       : x_orig = x * W / 1000,     y_orig = y * H / 1000
    pixels_original: x_orig = x,                y_orig = y

where (W, H) = `image_size` and (W_model, H_model) = `model_image_size`, both dataset columns.

Rewards (TRL contract: `f(completions, **kwargs) -> list[float | None]`, dataset columns arrive as kwargs)
--------------------------------------------------------------------------------------------------------
* `accuracy_reward_coord` (as in the original project): 1.0 if the predicted point - or the centre
  ((x1 + x2) / 2, (y1 + y2) / 2) of a predicted box - lies inside the ground-truth box (x1 <= x <= x2 and
  y1 <= y <= y2), else 0.0. For a point solution (x*, y*): 1.0 if
  sqrt((x - x*)^2 + (y - y*)^2) <= 0.05 * sqrt(W^2 + H^2), i.e. within 5% of the image diagonal.
* `iou_reward`: IoU = |A ∩ B| / |A ∪ B| = I / (area(A) + area(B) - I) with I = w * h, w = min(ax2, bx2) - max(ax1, bx1),
  h likewise, counted only when w > 1 and h > 1 original pixels (VLM-R1's cut-off, MIN_OVERLAP_PX), else I = 0;
  area = (x2 - x1) * (y2 - y1). 0.0 when no box can be parsed; None for point solutions (IoU cannot score a point,
  TRL then ignores this reward).
* `format_reward`: 1.0 for exactly one `<answer>...</answer>` whose first box parses, else 0.0.

Which box is read (one rule, as VLM-R1's REC reward): the FIRST box of the FIRST `<answer>...</answer>` block. No
complete block (no tags, an unclosed tag), a block without a box, or a first box that is inverted: no prediction, so
accuracy and IoU are 0.0 - a box outside the answer tags earns nothing, as the prompt asks for the tags. Garbage,
empty and NaN answers score 0.0 too; parsing never raises. Repeating an answer never pays twice: later blocks are
never read, and two blocks are not "exactly one" for the format. Deliberate departures from VLM-R1 (notations,
decimals, tag case, the format rule) are listed with their reasons in README.md, "How it maps to VLM-R1".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core.rewards.contract import completion_text, resolve_reward_funcs, single_block

FRAMES = ("pixels_resized", "norm1000", "pixels_original")
REWARD_NAMES = ("accuracy_reward_coord", "iou_reward", "format_reward")

_FAMILY_FRAMES = {
    "qwen2_5_vl": "pixels_resized",
    "qwen2_vl": "norm1000",
    "qwen3_vl": "norm1000",
    "gemma3": "norm1000",  # our choice: Gemma-3 has no native grounding format
}

# Point-tolerance for point solutions, as a fraction of the image diagonal.
POINT_TOLERANCE = 0.05
# IoU counts an overlap only when it is more than this many original pixels wide AND high. VLM-R1's REC iou
# (vlm_modules/qwen_module.py, iou_reward) intersects [x1, x2 - 1] ranges and requires inter_x1 < inter_x2, i.e.
# min(x2) - max(x1) > 1; its area is then (min(x2) - max(x1)) * (...), the continuous one. So its IoU is the
# continuous IoU except that an overlap of at most 1 pixel in either direction scores 0, which we reproduce.
MIN_OVERLAP_PX = 1.0

# An unsigned decimal: VLM-R1 reads only digits (`\d+`); we also take a fraction ("10.5", see README), never a sign
# or an exponent, which no grounding answer needs. No nested quantifiers: no backtracking blow-up.
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_NUMBER_RE = re.compile(rf"\s*{_NUMBER}\s*")
# Answer tags, any case (`<ANSWER>` is `<answer>`); found with plain searches, so floods of tags stay linear.
_OPEN_RE = re.compile(re.escape("<answer>"), re.IGNORECASE)
_CLOSE_RE = re.compile(re.escape("</answer>"), re.IGNORECASE)
# A bracketed group with no nested brackets: "[1, 2, 3, 4]", "(10.5, 20)".
_GROUP_RE = re.compile(r"[\[(]([^\[\]()]*)[\])]")
# Qwen2-VL's native "(x1,y1),(x2,y2)" box.
_TWO_POINTS_RE = re.compile(rf"\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)\s*,?\s*\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)")


def frame_for_family(family: str) -> str:
    """The frame a model family answers in; `family` is a transformers `model_type` such as "qwen2_5_vl"."""
    key = family.lower().replace("-", "_").replace(".", "_")
    if key not in _FAMILY_FRAMES:
        raise ValueError(f"no coordinate frame known for family {family!r}; known: {', '.join(sorted(_FAMILY_FRAMES))}")
    return _FAMILY_FRAMES[key]


def _check_frame(frame: str) -> str:
    if frame not in FRAMES:
        raise ValueError(f"unknown coordinate frame {frame!r}; valid frames: {', '.join(FRAMES)}")
    return frame


def to_original(
    coords: Sequence[float],
    frame: str,
    image_size: Sequence[float] | None,
    model_image_size: Sequence[float] | None = None,
) -> list[float]:
    """Convert a point [x, y] or box [x1, y1, x2, y2] from `frame` to original-image pixels (formulas above)."""
    _check_frame(frame)
    if len(coords) not in (2, 4):
        raise ValueError(f"expected a point (2 numbers) or a box (4 numbers), got {len(coords)}: {coords!r}")
    if frame == "pixels_original":
        return [float(value) for value in coords]
    if image_size is None:
        raise ValueError(f"frame {frame!r} needs the original image_size")
    width, height = float(image_size[0]), float(image_size[1])
    if frame == "norm1000":
        scale_x, scale_y = width / 1000.0, height / 1000.0
    else:
        if model_image_size is None:
            raise ValueError("frame 'pixels_resized' needs model_image_size (the processor-resized size)")
        scale_x, scale_y = width / float(model_image_size[0]), height / float(model_image_size[1])
    return [float(value) * (scale_x if i % 2 == 0 else scale_y) for i, value in enumerate(coords)]


def from_original(
    coords: Sequence[float],
    frame: str,
    image_size: Sequence[float] | None,
    model_image_size: Sequence[float] | None = None,
) -> list[float]:
    """Inverse of `to_original`: original-image pixels -> `frame` (to write a reference answer as the model would)."""
    unit = to_original([1.0] * len(coords), frame, image_size, model_image_size)
    return [float(value) / scale for value, scale in zip(coords, unit, strict=True)]


# What a reference answer must earn at the start-up check (core.rewards.contract.check_rewards_can_score). Not
# format_reward
# (it pays boxes only, so point rows get 0) nor iou_reward (the 2-decimal reference is ~1, not exactly 1).
REFERENCE_FULL_MARKS = {"accuracy_reward_coord": 1.0}


def reference_completion(frame: str) -> Callable[[Mapping[str, Any]], str]:
    """A row's `solution` written as the model answers in `frame`: `<answer>[x1, y1, x2, y2]</answer>` (or [x, y]),
    for `core.rewards.contract.check_rewards_can_score` at start-up."""
    _check_frame(frame)

    def write(row: Mapping[str, Any]) -> str:
        coords = from_original(row["solution"], frame, row.get("image_size"), row.get("model_image_size"))
        return "<answer>[" + ", ".join(f"{value:.2f}" for value in coords) + "]</answer>"

    return write


# ----------------------------------------------------------------------------------------------------------- parsing


def answer_block(text: str) -> str | None:
    """The content of the FIRST answer block - from the first `<answer>` (any case) to the first `</answer>` after
    it - or None when there is no complete block. The same block VLM-R1's REC reward reads (its `re.search` of
    `<answer>(.*?)</answer>`); only this block is ever read for a box: text outside it earns no accuracy."""
    opening = _OPEN_RE.search(text)
    closing = _CLOSE_RE.search(text, opening.end()) if opening else None
    return text[opening.end() : closing.start()] if closing else None


def _numbers(raw: str) -> list[float] | None:
    """Comma-separated numbers of a group, or None if any item is not a finite number."""
    items = raw.split(",")
    if not all(_NUMBER_RE.fullmatch(item) for item in items):
        return None
    values = [float(item) for item in items]
    return values if all(math.isfinite(value) for value in values) else None


def _first_group(span: str, count: int) -> list[float] | None:
    """The first group of exactly `count` finite numbers in `span` by position, in any accepted notation
    (`[..]`, `(..)`, `{"bbox_2d": [..]}`, Qwen2-VL's `(x1,y1),(x2,y2)` for boxes), or None. The first one is taken
    whatever it holds - an inverted box is not skipped for a later valid one - as VLM-R1 takes its first box."""
    candidates: list[tuple[int, list[float]]] = []
    if count == 4:
        first = _TWO_POINTS_RE.search(span)
        if first:
            candidates.append((first.start(), [float(v) for v in first.groups()]))
    for match in _GROUP_RE.finditer(span):
        values = _numbers(match.group(1))
        if values is not None and len(values) == count:
            candidates.append((match.start(), values))
            break
    candidates = [(pos, values) for pos, values in candidates if all(math.isfinite(v) for v in values)]
    return min(candidates, key=lambda item: item[0])[1] if candidates else None


def _valid_box(values: list[float] | None) -> list[float] | None:
    if values is None:
        return None
    x1, y1, x2, y2 = values
    return values if x2 >= x1 and y2 >= y1 else None


def parse_box(text: Any) -> list[float] | None:
    """[x1, y1, x2, y2]: the first box of the first answer block (see `answer_block`), or None - also when the box
    is only outside the answer tags, or the first box is inverted. Accepts `[..]`, `(..)`, `{"bbox_2d": [..]}` (a
    list of such objects: the first), Qwen2-VL's `(x1,y1),(x2,y2)`; unsigned numbers with optional decimals."""
    try:
        block = answer_block(completion_text(text))
        return None if block is None else _valid_box(_first_group(block, 4))
    except Exception:  # a reward must never take training down on a weird completion
        return None


def parse_point(text: Any) -> list[float] | None:
    """[x, y] from the first answer block, or None: its first box counts as the box's centre, else its first point
    (`(x, y)`, `[x, y]`, `{"point_2d": [..]}`). Same rule as `parse_box`: nothing outside the answer tags is read."""
    try:
        block = answer_block(completion_text(text))
        if block is None:
            return None
        group = _first_group(block, 4)
        if group is not None:
            box = _valid_box(group)
            return None if box is None else [(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0]
        return _first_group(block, 2)
    except Exception:
        return None


# ----------------------------------------------------------------------------------------------------------- geometry


def box_iou(a: Sequence[float], b: Sequence[float], min_overlap: float = 0.0) -> float:
    """IoU of two [x1, y1, x2, y2] boxes; 0.0 for degenerate or non-finite input, and 0.0 when the overlap is at
    most `min_overlap` wide or high (`iou_reward` passes MIN_OVERLAP_PX, VLM-R1's cut-off)."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = inter_w * inter_h if inter_w > min_overlap and inter_h > min_overlap else 0.0
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    if not union > 0 or not math.isfinite(union):
        return 0.0
    iou = intersection / union
    return iou if math.isfinite(iou) else 0.0


def _column(kwargs: dict[str, Any], name: str, n: int, needed: bool) -> list[Any]:
    values = kwargs.get(name)
    if values is None:
        if needed:
            raise ValueError(f"reward needs the dataset column {name!r} (build the dataset with the recipe's data.py)")
        return [None] * n
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return list(values)


class _FrameReward:
    """Shared plumbing: the frame, the columns, per-completion conversion to original pixels."""

    reward_name = "frame_reward"

    def __init__(self, frame: str) -> None:
        self.frame = _check_frame(frame)
        # TRL logs each reward under its callable's __name__; keep the original project's names.
        self.__name__ = self.reward_name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(frame={self.frame!r})"

    def _rows(self, completions: Sequence[Any], kwargs: dict[str, Any]):
        n = len(completions)
        solutions = _column(kwargs, "solution", n, needed=True)
        sizes = _column(kwargs, "image_size", n, needed=self.frame != "pixels_original")
        model_sizes = _column(kwargs, "model_image_size", n, needed=self.frame == "pixels_resized")
        for completion, solution, size, model_size in zip(completions, solutions, sizes, model_sizes, strict=True):
            yield completion, [float(value) for value in solution], size, model_size


class AccuracyCoordReward(_FrameReward):
    """1.0 if the predicted point (or box centre) lands in the true box / near the true point, else 0.0."""

    reward_name = "accuracy_reward_coord"

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        rewards: list[float | None] = []
        for completion, solution, size, model_size in self._rows(completions, kwargs):
            point = parse_point(completion)
            if point is None:
                rewards.append(0.0)
                continue
            x, y = to_original(point, self.frame, size, model_size)
            if len(solution) == 4:
                hit = solution[0] <= x <= solution[2] and solution[1] <= y <= solution[3]
            else:
                if size is None:
                    raise ValueError("point solutions need the 'image_size' column for the distance tolerance")
                tolerance = POINT_TOLERANCE * math.hypot(float(size[0]), float(size[1]))
                hit = math.hypot(x - solution[0], y - solution[1]) <= tolerance
            rewards.append(1.0 if hit else 0.0)
        return rewards


class IoUReward(_FrameReward):
    """IoU of the predicted box with the true box; None for point solutions, which IoU cannot score."""

    reward_name = "iou_reward"

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        rewards: list[float | None] = []
        for completion, solution, size, model_size in self._rows(completions, kwargs):
            if len(solution) != 4:
                rewards.append(None)
                continue
            box = parse_box(completion)
            original = None if box is None else to_original(box, self.frame, size, model_size)
            rewards.append(0.0 if original is None else box_iou(original, solution, MIN_OVERLAP_PX))
        return rewards


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0: exactly one <answer>...</answer> whose first box parses (each tag once: nested, stray or repeated tags
    earn nothing, see core.rewards.contract.single_block); else 0.0 - a box without the tags included, as in VLM-R1's
    `format_reward_rec` (it used to earn 0.5: partial credit for an answer outside the requested format)."""
    rewards: list[float | None] = []
    for completion in completions:
        text = completion_text(completion)
        block = single_block(text, "<answer>", "</answer>", ignore_case=True)
        if block is not None and parse_box(f"<answer>{text[block[0] : block[1]]}</answer>") is not None:
            rewards.append(1.0)
        else:
            rewards.append(0.0)
    return rewards


def build_reward_funcs(names: Sequence[str], frame: str) -> list[Callable[..., list[float | None]]]:
    """Reward callables for `names`: built-ins (see REWARD_NAMES), the coordinate ones bound to `frame`, or user
    rewards given as an import path `package.module:function`."""
    _check_frame(frame)
    factories: dict[str, Callable[[], Callable[..., list[float | None]]]] = {
        "accuracy_reward_coord": lambda: AccuracyCoordReward(frame),
        "iou_reward": lambda: IoUReward(frame),
        "format_reward": lambda: format_reward,
    }
    return resolve_reward_funcs(names, factories)
