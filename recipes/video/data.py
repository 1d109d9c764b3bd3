"""Data for action ordering in video: the model watches a clip and lists the actions it saw, in order.

Record format (the original project's; a `.json` list / `{"data": [...]}`, or `.jsonl` with one object per line)::

    {"id": "clip-0001",                                   # unique string (optional: "#<row>" is used when absent)
     "conversations": [
         {"from": "human", "value": "<video>\\nWhat happens in the video?"},   # must hold the <video> marker
         {"from": "gpt", "value": "<answer>(1) the red circle moves left (2) the red circle turns blue</answer>"}],
     "video": "videos/clip-0001.mp4",                      # relative to --video-root / video_root, or absolute
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

CLI::

    python data.py --make-sample OUT_DIR [--n-train 24 --n-eval 8 --seed 0]   # offline synthetic clips
    python data.py --check FILE [--video-root DIR]                           # validate; exit 1 on problems
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image, ImageDraw
from rewards import parse_actions

from core.data.records import (
    DataError,
    describe_row,
    duplicate_id_problems,
    load_records,
    mark_sample_written,
    missing_column_problems,
    row_ids,
    sample_is_current,
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


# ------------------------------------------------------------------------------------------------ synthetic sample

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
}
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
QUESTIONS = (
    "What happens in the video? List the actions in the order they happen.",
    "Describe the sequence of actions in this clip, in order.",
    "Which actions does the shape perform, and in what order?",
)
SAMPLE_FPS = 8
SAMPLE_MIN_FRAMES, SAMPLE_MAX_FRAMES = 4, 16


def _video_codec() -> str:
    """libx264 when the PyAV wheel has it (it does on PyPI's), else MPEG-4 part 2, which every FFmpeg build has."""
    import av

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:
        return "mpeg4"


def encode_mp4(frames: Sequence[np.ndarray], path: str | os.PathLike[str], fps: int = SAMPLE_FPS) -> str:
    """Write uint8 (H, W, 3) RGB frames (even H and W: yuv420p) to an mp4; returns the codec used."""
    import av

    height, width = frames[0].shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even frame sizes, got {width}x{height}")
    codec = _video_codec()
    with av.open(os.fspath(path), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1  # one thread: identical bytes on every run
        if codec == "libx264":
            # Constant QP, not CRF: x264's CRF rate control (mb-tree) produced different bytes now and then for the
            # same frames, even with one thread; constant QP gave identical bytes in 1000 encodes.
            stream.options = {"qp": "20", "preset": "veryfast"}
        else:
            stream.bit_rate = 2_000_000
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode(None))
    return codec


def _plan_actions(rng: random.Random, width: int, height: int, side: int) -> tuple[dict[str, Any], list[dict]]:
    """A start state and 2-3 actions, each with `before`/`after` states and a phrase unique within the clip.

    Unique phrases also rule out two moves in the same direction in a row, which would look like one move.
    """
    state = {
        "shape": rng.choice(SHAPES),
        "colour": rng.choice(list(COLOURS)),
        "x": rng.randint(0, width - side),
        "y": rng.randint(0, height - side),
        "visible": True,
    }
    start = dict(state)
    count = rng.choice((2, 3, 3))
    actions: list[dict[str, Any]] = []
    if rng.random() < 0.35:  # the shape is not there at first: it fades or pops in
        start["visible"] = False
        actions.append(
            {
                "kind": "appear",
                "style": rng.choice(("fade", "pop")),
                "phrase": f"the {state['colour']} {state['shape']} appears",
                "before": start,
                "after": dict(state),
            }
        )
    min_move = max(10, side)  # at least the shape's own size: clearly visible even in 16 sampled frames
    while len(actions) < count:
        room = {
            "left": state["x"],
            "right": width - side - state["x"],
            "up": state["y"],
            "down": height - side - state["y"],
        }
        options = [("move", name) for name, space in room.items() if space >= min_move]
        options += [("colour", colour) for colour in COLOURS if colour != state["colour"]]
        kind, value = rng.choice(options)
        name = f"the {state['colour']} {state['shape']}"
        after = dict(state)
        if kind == "move":
            dx, dy = DIRECTIONS[value]
            distance = rng.randint(min_move, room[value])
            after["x"], after["y"] = state["x"] + dx * distance, state["y"] + dy * distance
            action = {"kind": "move", "phrase": f"{name} moves {value}"}
        else:
            after["colour"] = value
            action = {"kind": "colour", "style": rng.choice(("fade", "switch")), "phrase": f"{name} turns {value}"}
        if any(a["phrase"] == action["phrase"] for a in actions):
            continue
        actions.append({**action, "before": dict(state), "after": after})
        state = after
    return start, actions


def _render(state: dict[str, Any], side: int, size: tuple[int, int], background: tuple[int, ...], alpha: float):
    """One RGB frame as a uint8 array: the shape at `state`, blended over the background with `alpha`."""
    image = Image.new("RGB", size, background)
    if alpha > 0:
        colour = state["colour"]
        fill = COLOURS[colour] if isinstance(colour, str) else colour
        fill = tuple(round(f * alpha + b * (1 - alpha)) for f, b in zip(fill, background, strict=True))
        draw = ImageDraw.Draw(image)
        x1, y1 = round(state["x"]), round(state["y"])
        x2, y2 = x1 + side - 1, y1 + side - 1
        if state["shape"] == "circle":
            draw.ellipse([x1, y1, x2, y2], fill=fill)
        elif state["shape"] == "square":
            draw.rectangle([x1, y1, x2, y2], fill=fill)
        else:
            draw.polygon([((x1 + x2) / 2, y1), (x1, y2), (x2, y2)], fill=fill)
    return np.asarray(image)


def _segment_lengths(rng: random.Random, total: int, count: int) -> tuple[list[int], list[int]]:
    """(idle gaps before/between/after the actions, action lengths): every action gets >= 5 frames."""
    gaps = [0] * (count + 1)
    for _ in range(rng.randint(0, min(count + 1, total - 5 * count))):
        gaps[rng.randrange(count + 1)] += 1
    lengths = [5] * count
    for _ in range(total - 5 * count - sum(gaps)):
        lengths[rng.randrange(count)] += 1
    return gaps, lengths


def make_sample_clip(rng: random.Random) -> tuple[list[np.ndarray], list[str]]:
    """One synthetic clip (RGB uint8 frames) and its ordered action phrases."""
    # Width 72 is left out: decord 0.6 misreads frames 16, 24, 48 or 72 pixels wide (see core/data/video.py).
    width, height = rng.choice((64, 80, 88, 96)), rng.choice(range(64, 97, 8))
    side = round(min(width, height) * rng.uniform(0.18, 0.26))
    background = tuple(rng.randint(215, 250) for _ in range(3))
    start, actions = _plan_actions(rng, width, height, side)
    gaps, lengths = _segment_lengths(rng, rng.randint(16, 32), len(actions))

    def still(state: dict[str, Any]) -> np.ndarray:
        return _render(state, side, (width, height), background, 1.0 if state["visible"] else 0.0)

    frames: list[np.ndarray] = [still(start)] * gaps[0]
    for action, length, gap in zip(actions, lengths, gaps[1:], strict=True):
        before, after = action["before"], action["after"]
        for j in range(length):
            t = (j + 1) / length  # the action completes on its last frame
            if action["kind"] == "move":
                state = dict(before, x=before["x"] + t * (after["x"] - before["x"]))
                state["y"] = before["y"] + t * (after["y"] - before["y"])
                frames.append(still(state))
            elif action["kind"] == "colour":
                if action["style"] == "switch":
                    frames.append(still(before if j < length // 2 else after))
                else:
                    new, old = COLOURS[after["colour"]], COLOURS[before["colour"]]
                    mixed = tuple(round(a * t + b * (1 - t)) for a, b in zip(new, old, strict=True))
                    frames.append(_render(dict(after, colour=mixed), side, (width, height), background, 1.0))
            else:  # appear
                alpha = t if action["style"] == "fade" else float(j >= length // 2)
                frames.append(_render(after, side, (width, height), background, alpha))
        frames.extend([still(after)] * gap)
    return frames, [action["phrase"] for action in actions]


def make_sample(out_dir: str | os.PathLike[str], n_train: int = 24, n_eval: int = 8, seed: int = 0) -> dict[str, Path]:
    """Write `videos/*.mp4`, `train.json` and `eval.json` under `out_dir`; the same seed gives the same files.

    A `sample.json` marker records what was generated: the same request again is a no-op, and a folder holding
    data files or videos that make-sample did not write is never overwritten.
    """
    out = Path(out_dir)
    request = {"generator": "make-sample", "n_train": n_train, "n_eval": n_eval, "seed": seed}
    splits = {"train": out / "train.json", "eval": out / "eval.json"}
    names = {
        split: [f"{split}-{i:04d}" for i in range(count)] for split, count in (("train", n_train), ("eval", n_eval))
    }
    videos = [out / "videos" / f"{i}.mp4" for ids in names.values() for i in ids]
    if sample_is_current(out, request, splits.values(), [*splits.values(), *videos], "--make-sample"):
        return splits
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for split, ids in names.items():
        records = []
        for sample_id in ids:
            frames, phrases = make_sample_clip(rng)
            relative = f"videos/{sample_id}.mp4"
            encode_mp4(frames, out / relative)
            answer = " ".join(f"({i}) {phrase}" for i, phrase in enumerate(phrases, start=1))
            records.append(
                {
                    "id": sample_id,
                    "conversations": [
                        {"from": "human", "value": f"{VIDEO_MARKER}\n{rng.choice(QUESTIONS)}"},
                        {"from": "gpt", "value": f"<answer>{answer}</answer>"},
                    ],
                    "video": relative,
                    "meta": {
                        "frame_cnts": len(frames),
                        "min_frames": SAMPLE_MIN_FRAMES,
                        "max_frames": SAMPLE_MAX_FRAMES,
                        "dynamic_sample": True,
                    },
                }
            )
        splits[split].write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
    mark_sample_written(out, request)
    return splits


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--make-sample", metavar="OUT_DIR", help="write a synthetic offline dataset")
    action.add_argument("--check", metavar="FILE", help="validate a .json/.jsonl file")
    parser.add_argument("--n-train", type=int, default=24)
    parser.add_argument("--n-eval", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--video-root", default=None, help="folder relative video paths start from (default: FILE's)")
    args = parser.parse_args(argv)

    if args.make_sample:
        try:
            written = make_sample(args.make_sample, args.n_train, args.n_eval, args.seed)
        except FileExistsError as err:
            print(err, file=sys.stderr)
            return 1
        print(f"sample videos in {Path(args.make_sample) / 'videos'} ({_video_codec()})")
        for split, file in written.items():
            print(f"sample {split} set: {file} ({args.n_train if split == 'train' else args.n_eval} records)")
        return 0

    try:
        dataset = build_dataset(args.check, args.video_root)
    except DataError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"OK: {args.check}: {len(dataset)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
