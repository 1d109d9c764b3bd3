"""Data for action ordering in video: the model watches a clip and lists the actions it saw, in order.

Record format (the original project's; a `.json` list / `{"data": [...]}`, or `.jsonl` with one object per line)::

    {"id": "clip-0001",                                   # unique string (optional: "#<row>" is used when absent)
     "conversations": [
         {"from": "human", "value": "<video>\\nWhat happens in the video?"},   # must hold the <video> marker
         {"from": "gpt", "value": "<answer>(1) the red circle moves left (2) the red circle turns blue</answer>"}],
     "video": "videos/clip-0001.mp4",                      # relative to --video_root / video_root, or absolute
     "meta": {"frame_cnts": 48,                            # informational; the file's own frame count is used
              "min_frames": 4, "max_frames": 16,           # optional per-record bounds, within the config's
              "dynamic_sample": true}}                     # optional (default true): see below

"user"/"assistant" are accepted for "human"/"gpt". The `<video>` marker is removed from the question; the prompt's
user turn is a `{"type": "video"}` part followed by the question and `PROMPT_SUFFIX`.

Frames: `build_dataset` opens every clip once (validation), then fixes which frames each row uses with
`core.data.video.sample_frame_indices`, i.e. Qwen's own qwen-vl-utils rule: duration * `fps` (default 2) frames within
[min_frames, max_frames], floored to an even count, spread uniformly (`dynamic_sample` false: max_frames, same
clamping). A row's meta.min_frames / meta.max_frames narrow the config's bounds and are clamped into them: the
config's max_frames is a memory cap no row exceeds. The table keeps the path and those indices; frames are decoded
with decord only when a row is read, and resized to qwen-vl-utils' per-frame pixel budget
(`core.data.video.FramePixels`).

`build_dataset` validates every row before returning and raises one `DataError` listing all problems (missing
fields, no human turn or no `<video>` marker, no gpt answer, an answer without `(n)` actions, bad meta, duplicate
ids, missing/empty/undecodable videos).

CLI (the offline sample is sample.py's)::

    python recipes/video/data.py --check FILE [--video_root DIR]   # "OK: FILE: N rows"; exit 2 on problems
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
from rewards import parse_actions

from core.data.cli import Option, check_main
from core.data.records import (
    DataError,
    describe_row,
    duplicate_id_problems,
    load_records,
    missing_column_problems,
    row_ids,
)
from core.data.video import (
    DEFAULT_FPS,
    FramePixels,
    inspect_videos,
    sample_frame_indices,
    sampled_fps,
    to_video_dataset,
    video_prompt,
)

RECIPE_DIR = Path(__file__).resolve().parent
VIDEO_MARKER = "<video>"
PROMPT_SUFFIX = (
    "Think step by step about what happens in the video inside <think> </think>. Then list the actions in the "
    "order they happen inside <answer> </answer>, numbered like this: <answer>(1) first action (2) second "
    "action</answer>."
)
_HUMAN_ROLES = ("human", "user")
_GPT_ROLES = ("gpt", "assistant")


def build_prompt_text(human_value: str) -> str:
    """The user text for one human turn: the question without the `<video>` marker, then `PROMPT_SUFFIX`."""
    question = " ".join(human_value.replace(VIDEO_MARKER, " ").split())
    return f"{question} {PROMPT_SUFFIX}" if question else PROMPT_SUFFIX


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _turns(record: dict[str, Any], label: str) -> tuple[str | None, str | None, list[str]]:
    """(human text, gpt text, problems) from `conversations`."""
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        return None, None, [f"{label}: missing 'conversations' (expected a list of {{'from', 'value'}} turns)"]
    human_at = next(
        (i for i, turn in enumerate(conversations) if isinstance(turn, dict) and turn.get("from") in _HUMAN_ROLES),
        None,
    )
    if human_at is None:
        return None, None, [f"{label}: no human turn in 'conversations'"]
    problems = []
    human = conversations[human_at].get("value")
    if not isinstance(human, str) or VIDEO_MARKER not in human:
        problems.append(f"{label}: the human turn has no {VIDEO_MARKER!r} marker: {_short(human)}")
        human = None
    later = conversations[human_at + 1 :]
    gpt = next((t.get("value") for t in later if isinstance(t, dict) and t.get("from") in _GPT_ROLES), None)
    if not isinstance(gpt, str) or not gpt.strip():
        problems.append(f"{label}: no gpt answer after the human turn in 'conversations'")
        gpt = None
    return human, gpt, problems


def _frame_bounds(record: dict[str, Any], label: str, min_frames: int, max_frames: int) -> tuple[Any, list[str]]:
    """((min, max, dynamic), problems): the row's `meta` bounds, each clamped into the config's [min, max].

    The config's max_frames is the user's memory cap: a row asking for more frames gets max_frames, never more; a
    row asking for fewer than the config's min_frames gets min_frames.
    """
    meta = record.get("meta")
    if meta is None:
        return (min_frames, max_frames, True), []
    if not isinstance(meta, dict):
        return None, [f"{label}: 'meta' must be an object, got {_short(meta)}"]
    problems = []
    bounds = {"min_frames": min_frames, "max_frames": max_frames}
    given = {}
    for key in bounds:
        if key in meta and meta[key] is not None:
            value = meta[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{label}: meta.{key} must be a positive integer, got {_short(value)}")
            else:
                bounds[key] = given[key] = value
    dynamic = meta.get("dynamic_sample", True)
    if not isinstance(dynamic, bool):
        problems.append(f"{label}: meta.dynamic_sample must be true or false, got {_short(dynamic)}")
    # Only the row contradicting itself is an error; one bound outside the config's is clamped below.
    if not problems and len(given) == 2 and given["min_frames"] > given["max_frames"]:
        problems.append(f"{label}: meta.min_frames ({given['min_frames']}) > meta.max_frames ({given['max_frames']})")
    if problems:
        return None, problems
    low, high = (min(max(bounds[key], min_frames), max_frames) for key in ("min_frames", "max_frames"))
    return (low, high, dynamic), problems


def build_dataset(
    path: str | os.PathLike[str],
    video_root: str | os.PathLike[str] | None = None,
    min_frames: int = 4,
    max_frames: int = 16,
    max_pixels_per_frame: int | None = None,
    system_prompt: str | None = None,
    fps: float = DEFAULT_FPS,
    min_pixels_per_frame: int | None = None,
    image_patch_size: int = 14,
) -> datasets.Dataset:
    """Load, validate and convert a video file into the dataset the trainer and the rewards expect.

    Columns: `prompt` (conversational: video placeholder, then the question and PROMPT_SUFFIX), `video` (a list of
    RGB PIL frames, decoded when the row is read; the table stores the absolute path), `frame_indices` (which
    frames), `video_fps` (rate of the sampled frames, for Qwen2.5-VL's temporal positions; None if the container
    has no frame rate), `solution` (the gpt answer text), `actions` (the ordered, normalised actions), `id`.
    `video_root` defaults to the data file's folder. `fps` is the sampling rate for rows whose meta.dynamic_sample
    is true (the default); `min_pixels_per_frame` / `max_pixels_per_frame` (None: qwen-vl-utils' defaults) and
    `image_patch_size` (14 for Qwen2.5-VL, 16 for Qwen3-VL: `core.data.video.patch_size_of(processor)`) give each
    frame's size as qwen-vl-utils' `fetch_video` computes it. Raises `DataError` listing every problem found.
    """
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number of frames per second, got {fps!r}")
    sample_frame_indices(max(2, max_frames), min_frames, max_frames)  # ValueError now for bad bounds
    pixels = FramePixels(image_patch_size, min_pixels_per_frame, max_pixels_per_frame)  # ValueError now
    path = Path(path)
    root = path.parent if video_root is None else Path(video_root)
    records = load_records(path)
    if not records:
        raise DataError([f"{path}: no records"], source=path)
    renamed = missing_column_problems(records, ["conversations", "video"])
    if renamed:
        raise DataError(renamed, source=path)  # once, not once per row

    videos = inspect_videos(records, root)
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    ids = row_ids(records)
    for index, (record, info) in enumerate(zip(records, videos, strict=True)):
        raw_id = record.get("id")
        row_id = ids[index]
        label = describe_row(index, raw_id)

        human, gpt, row_problems = _turns(record, label)
        actions = parse_actions(gpt) if gpt is not None else []
        if gpt is not None and not actions:
            row_problems.append(
                f"{label}: the gpt answer has no actions (expected '<answer>(1) ... (2) ...</answer>'): {_short(gpt)}"
            )
        bounds, bound_problems = _frame_bounds(record, label, min_frames, max_frames)
        row_problems.extend(bound_problems)
        if info.problem:
            row_problems.append(info.problem)
        if row_problems:
            problems.extend(row_problems)
            continue

        low, high, dynamic = bounds
        indices = sample_frame_indices(info.num_frames, low, high, fps=info.fps, target_fps=fps if dynamic else None)
        rows.append(
            {
                "prompt": video_prompt(build_prompt_text(human), system_prompt),
                "video": str(info.path),
                "frame_indices": indices,
                "video_fps": sampled_fps(len(indices), info.num_frames, info.fps),
                "solution": gpt.strip(),
                "actions": actions,
                "id": row_id,
            }
        )

    problems += duplicate_id_problems(ids)
    if problems:
        raise DataError(problems, source=path)
    return to_video_dataset(rows, pixels=pixels)


def check(source: str, video_root: str | None = None) -> int:
    """`data.py --check`: the rows of `source` that build_dataset accepts (it raises DataError otherwise)."""
    return len(build_dataset(source, video_root))


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit code."""
    video_root = Option("--video_root", "folder relative video paths start from (default: SOURCE's)", metavar="DIR")
    return check_main(check, argv, recipe_dir=RECIPE_DIR, options=[video_root], description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
