"""The video recipe's offline sample: short clips of one shape that moves, changes colour or appears, in order.

    python recipes/video/sample.py [OUT_DIR] [--num_samples 32] [--num_eval 8] [--seed 0]

Writes OUT_DIR (default: data/sample next to this file, what config_smoke.yaml reads) `videos/*.mp4`, `train.json`
and `eval.json` in data.py's record format (the original project's). The same seed gives the same files; the same
request again writes nothing (`sample.json` records it), and a folder holding data or videos this script did not
write is never overwritten.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from data import VIDEO_MARKER
from PIL import Image, ImageDraw

from core.data.cli import OldCounts, Option, sample_main
from core.data.records import mark_sample_written, sample_is_current

RECIPE_DIR = Path(__file__).resolve().parent
NUM_SAMPLES = 32  # 24 train + 8 eval clips

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


def make_sample(
    out_dir: str | os.PathLike[str], num_samples: int = NUM_SAMPLES, seed: int = 0, num_eval: int | None = None
) -> dict[str, Path]:
    """Write `videos/*.mp4`, `train.json` and `eval.json` under `out_dir`: `num_samples` clips, `num_eval` of them
    (default: a quarter, at least 1) in eval.json; returns {"train": path, "eval": path}."""
    num_eval = max(1, num_samples // 4) if num_eval is None else num_eval
    n_train = num_samples - num_eval
    if n_train < 1 or num_eval < 0:
        raise ValueError(f"need 0 <= num_eval < num_samples, got num_eval={num_eval}, num_samples={num_samples}")
    out = Path(out_dir)
    request = {"generator": "make-sample", "n_train": n_train, "n_eval": num_eval, "seed": seed}
    splits = {"train": out / "train.json", "eval": out / "eval.json"}
    names = {
        split: [f"{split}-{i:04d}" for i in range(count)] for split, count in (("train", n_train), ("eval", num_eval))
    }
    videos = [out / "videos" / f"{i}.mp4" for ids in names.values() for i in ids]
    if sample_is_current(out, request, splits.values(), [*splits.values(), *videos], "sample.py"):
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
    """The command line; returns the exit code."""
    return sample_main(
        make_sample,
        argv,
        recipe_dir=RECIPE_DIR,
        description=__doc__,
        options=[
            Option(
                "--num_eval", "clips in eval.json (default: a quarter of --num_samples, at least 1)", int, metavar="N"
            )
        ],
        # data.py --make-sample's spelling: --n-train 24 --n-eval 8
        old_counts=OldCounts(
            ("--n-train", "--n-eval"),
            lambda n_train=24, n_eval=8: {"num_samples": n_train + n_eval, "num_eval": n_eval},
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
