"""Generic video helpers shared by recipes: pick frames, decode only those, check files, build a lazy dataset.

Nothing here knows about a task. A recipe samples each clip's frame indices once, when it builds its dataset
(`inspect_videos` opens every file anyway to validate it, so the frame count and rate are known then), stores the
path and the indices in the table, and lets `to_video_dataset` decode the frames only when a row is read.

Frame counts and Qwen's temporal patches
----------------------------------------
Qwen2-VL / Qwen2.5-VL / Qwen3-VL fold every 2 consecutive frames into one temporal patch (`temporal_patch_size` 2)
and pad an odd count by repeating the last frame, so `sample_frame_indices` always returns an even count:

    count = clamp(target, min_frames, max_frames)           target: see below
    count = count rounded DOWN to even, but at least max(2, min_frames rounded UP to even)
    count = min(count, total_frames rounded down to even)   a clip never gives more frames than it has ...
    count = 2 when total_frames == 1                        ... except a 1-frame clip, whose frame is repeated

so a clip shorter than `min_frames` gives all of its frames (an even count), and `[min_frames, max_frames]` with no
even number in it (e.g. [3, 3]) gives min_frames rounded up (4). `target` is `num_frames` when given; otherwise,
with `fps` and `target_fps` ("dynamic sampling"), `round(total_frames / fps * target_fps)`, i.e. the clip's
duration times the wanted rate; otherwise `max_frames`. Indices are spread uniformly from the first to the last
frame, `round(i * (total_frames - 1) / (count - 1))`, sorted, and unique whenever count <= total_frames.

decord notes
------------
`decord.VideoReader(path, ctx=cpu(0), num_threads=1)`: `len()` is the frame count from the container, and
`get_batch(indices)` seeks and decodes only what the indices need (frames between a key frame and a wanted frame are
decoded but not converted to RGB). It returns decord's own NDArray (`.asnumpy()` gives uint8 (n, H, W, 3)).
decord 0.6.0 ships wheels for Linux x86_64 and Windows only; it bundles its own FFmpeg 4, independent of PyAV's.
Quirk: frames exactly 16, 24, 48 or 72 pixels wide come back as 4 channels (`get_batch` then fails with "The size
must exactly match"); all other even widths up to 2000 were checked and read fine. Such clips are reported by
`inspect_videos` as undecodable.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from PIL import Image

from core.data import DataError, describe_row, resolve_image_path

__all__ = [
    "DecodeVideoFrames",
    "VideoInfo",
    "check_videos",
    "fit_pixel_budget",
    "inspect_videos",
    "load_video_frames",
    "read_frames",
    "sample_frame_indices",
    "sampled_fps",
    "to_video_dataset",
    "video_prompt",
]

_decord_lock = threading.Lock()
_decord_module: Any = None


def _decord() -> Any:
    """decord, imported on first use (with FFmpeg's console logging silenced) so `core` imports without it."""
    global _decord_module
    with _decord_lock:
        if _decord_module is None:
            try:
                import decord
            except ImportError as err:  # pragma: no cover - depends on the platform
                raise ImportError(
                    "reading videos needs decord (`pip install decord`; wheels exist for Linux x86_64 and Windows, "
                    "other platforms must build it from source)"
                ) from err
            decord.logging.set_level(decord.logging.QUIET)
            _decord_module = decord
    return _decord_module


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 for the block: decord's C++ core writes `ERROR opening: ...` there for every bad file,
    which `inspect_videos` reports itself. Used only around validation, once per call (not per thread)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr (e.g. closed): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _open(path: str | os.PathLike[str]) -> Any:
    decord = _decord()
    return decord.VideoReader(os.fspath(path), ctx=decord.cpu(0), num_threads=1)


# ---------------------------------------------------------------------------------------------------------- sampling


def _even_down(n: int) -> int:
    return n - n % 2


def _even_up(n: int) -> int:
    return n + n % 2


def _frame_count(
    total_frames: int,
    min_frames: int,
    max_frames: int,
    num_frames: int | None,
    fps: float | None,
    target_fps: float | None,
) -> int:
    if num_frames is not None:
        target = num_frames
    elif fps and target_fps and math.isfinite(fps) and math.isfinite(target_fps) and fps > 0 and target_fps > 0:
        target = round(total_frames / fps * target_fps)
    else:
        target = max_frames
    count = min(max(target, min_frames), max_frames)
    count = max(_even_down(count), 2, _even_up(min_frames))
    return min(count, _even_down(total_frames)) if total_frames >= 2 else 2


def sample_frame_indices(
    total_frames: int,
    min_frames: int,
    max_frames: int,
    num_frames: int | None = None,
    fps: float | None = None,
    target_fps: float | None = None,
) -> list[int]:
    """Sorted frame indices spread uniformly over a clip of `total_frames`; an even count (rules in the module doc).

    `num_frames` asks for a count; otherwise `fps` (the clip's) with `target_fps` (the wanted rate) gives
    duration * target_fps; otherwise `max_frames`. The result is always clamped as the module doc describes.
    """
    for name, value in (("total_frames", total_frames), ("min_frames", min_frames), ("max_frames", max_frames)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    if min_frames > max_frames:
        raise ValueError(f"min_frames ({min_frames}) must be <= max_frames ({max_frames})")
    if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1):
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    count = _frame_count(total_frames, min_frames, max_frames, num_frames, fps, target_fps)
    last = total_frames - 1
    # round(i * last / (count - 1)) in integer arithmetic: exact, so indices are unique whenever count <= total.
    return [(2 * i * last + (count - 1)) // (2 * (count - 1)) for i in range(count)]


def sampled_fps(num_sampled: int, total_frames: int, fps: float | None) -> float | None:
    """Frame rate of the sampled frames (what Qwen2.5-VL needs for its temporal positions), None if fps is unknown.

    Same definition as transformers' `VideoMetadata.sampled_fps`: num_sampled / total_frames * fps.
    """
    if not fps or not math.isfinite(fps) or fps <= 0 or total_frames < 1:
        return None
    return num_sampled / total_frames * fps


# ---------------------------------------------------------------------------------------------------------- decoding


def fit_pixel_budget(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(width, height) scaled down, aspect ratio kept, so that width * height <= max_pixels; never scaled up."""
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    if max_pixels < 1:
        raise ValueError(f"max_pixels_per_frame must be >= 1, got {max_pixels}")
    scale = math.sqrt(max_pixels / (width * height))
    new_w, new_h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    if new_w * new_h > max_pixels:  # very elongated: the short side was raised to 1 px, the long side gets the rest
        if new_w > new_h:
            new_w = max_pixels // new_h
        else:
            new_h = max_pixels // new_w
    return new_w, new_h


def _get_batch(reader: Any, indices: Sequence[int], path: Any) -> Any:
    """uint8 (n, H, W, 3) frames; decord's NDArray converted with `.asnumpy()`."""
    frames = reader.get_batch(list(indices)).asnumpy()
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: decord returned frames of shape {frames.shape}, expected (n, H, W, 3)")
    return frames


def _to_images(frames: Any, max_pixels_per_frame: int | None) -> list[Image.Image]:
    images = []
    for frame in frames:
        image = Image.fromarray(frame)
        size = fit_pixel_budget(image.width, image.height, max_pixels_per_frame)
        if size != image.size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        images.append(image)
    return images


def read_frames(
    path: str | os.PathLike[str], indices: Sequence[int], max_pixels_per_frame: int | None = None
) -> list[Image.Image]:
    """RGB PIL images of exactly the frames `indices` (in that order, repeats allowed), within the pixel budget."""
    reader = _open(path)
    indices = [int(i) for i in indices]
    total = len(reader)
    bad = [i for i in indices if not 0 <= i < total]
    if bad:
        raise IndexError(f"{path}: frame indices {bad} outside the clip's {total} frames")
    if not indices:
        return []
    return _to_images(_get_batch(reader, indices, path), max_pixels_per_frame)


def load_video_frames(
    path: str | os.PathLike[str],
    min_frames: int,
    max_frames: int,
    max_pixels_per_frame: int | None = None,
    num_frames: int | None = None,
    target_fps: float | None = None,
) -> list[Image.Image]:
    """Sample a clip's frames (`sample_frame_indices`) and decode only those, as RGB PIL images within the budget."""
    reader = _open(path)
    fps = float(reader.get_avg_fps())
    indices = sample_frame_indices(len(reader), min_frames, max_frames, num_frames, fps, target_fps)
    return _to_images(_get_batch(reader, indices, path), max_pixels_per_frame)


# -------------------------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class VideoInfo:
    """What `inspect_videos` learned about one row's video.

    `num_frames`, `fps` (None when the container does not say) and `size` ((width, height)) are None when the video
    could not be read; `problem` is a ready-to-print message, or None when the video is fine.
    """

    path: Path | None
    num_frames: int | None
    fps: float | None
    size: tuple[int, int] | None
    problem: str | None


def _inspect_one(index: int, row: Mapping[str, Any], root: Any, id_key: str, video_key: str) -> VideoInfo:
    label = describe_row(index, row.get(id_key))
    raw = row.get(video_key)
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    if not isinstance(raw, str) or not raw.strip():
        return VideoInfo(None, None, None, None, f"{label}: missing {video_key!r} (expected a video path, got {raw!r})")
    path = resolve_image_path(raw, root)
    where = f"{label}: video {raw!r} -> {path}"
    if not path.exists():
        return VideoInfo(path, None, None, None, f"{where}: file not found")
    if not path.is_file():
        return VideoInfo(path, None, None, None, f"{where}: not a file")
    if path.stat().st_size == 0:
        return VideoInfo(path, None, None, None, f"{where}: empty file")
    try:
        reader = _open(path)
        total = len(reader)
        if total < 1:
            return VideoInfo(path, 0, None, None, f"{where}: no video frames")
        fps = float(reader.get_avg_fps())
        # The first and the last frame: a truncated file opens fine but fails at the end, mid-training otherwise.
        frames = _get_batch(reader, [0, total - 1], path)
    except Exception as err:  # decord raises DECORDError (a RuntimeError) and friends for any unreadable file
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        return VideoInfo(path, None, None, None, f"{where}: cannot decode ({type(err).__name__}: {message})")
    height, width = int(frames.shape[1]), int(frames.shape[2])
    return VideoInfo(path, total, fps if math.isfinite(fps) and fps > 0 else None, (width, height), None)


def inspect_videos(
    rows: Sequence[Mapping[str, Any]],
    video_root: str | os.PathLike[str] | None,
    id_key: str = "id",
    video_key: str = "video",
    max_workers: int | None = None,
) -> list[VideoInfo]:
    """Open every row's video once (thread pool) and report frame count, fps and size, or the problem; row order.

    Relative paths start at `video_root` (or the working directory). Quiet: decord's and FFmpeg's console messages
    about bad files are silenced (stderr is redirected while the files are opened), the problems are returned.
    """
    rows = list(rows)
    if not rows:
        return []
    _decord()  # import once, before the threads race for it
    workers = max_workers or min(16, (os.cpu_count() or 1) * 2, len(rows))
    with _quiet_stderr(), ThreadPoolExecutor(max_workers=workers) as pool:
        return list(
            pool.map(lambda item: _inspect_one(item[0], item[1], video_root, id_key, video_key), enumerate(rows))
        )


def check_videos(
    rows: Sequence[Mapping[str, Any]],
    video_root: str | os.PathLike[str] | None,
    id_key: str = "id",
    video_key: str = "video",
) -> list[str]:
    """Problems with the rows' video files, e.g. `row 3 (id 'abc'): video 'x.mp4' -> /abs/x.mp4: file not found`.

    Missing, empty, frame-less and undecodable files are all reported; an empty list means every video is readable.
    """
    return [info.problem for info in inspect_videos(rows, video_root, id_key, video_key) if info.problem]


# ----------------------------------------------------------------------------------------------------------- dataset


def video_prompt(text: str, system_prompt: str | None = None) -> list[dict[str, Any]]:
    """A conversational prompt whose user turn is a video placeholder followed by `text`.

    Like `core.data.image_prompt`: every `content` is a list of parts so that the column has one Arrow type.
    """
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]})
    return messages


class DecodeVideoFrames:
    """`Dataset.with_transform` callable: replaces each row's video path by its frames at `frame_indices`.

    A module-level class (not a closure) so that a dataset carrying it pickles, e.g. into DataLoader workers.
    """

    def __init__(
        self,
        video_column: str = "video",
        indices_column: str = "frame_indices",
        max_pixels_per_frame: int | None = None,
    ) -> None:
        self.video_column = video_column
        self.indices_column = indices_column
        self.max_pixels_per_frame = max_pixels_per_frame

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(video_column={self.video_column!r}, indices_column={self.indices_column!r}, "
            f"max_pixels_per_frame={self.max_pixels_per_frame!r})"
        )

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if self.video_column not in batch:  # e.g. dataset["id"]: nothing to decode
            return batch
        if self.indices_column not in batch:
            raise KeyError(f"decoding {self.video_column!r} needs the {self.indices_column!r} column as well")
        frames = [
            read_frames(path, indices, self.max_pixels_per_frame)
            for path, indices in zip(batch[self.video_column], batch[self.indices_column], strict=True)
        ]
        return {**batch, self.video_column: frames}


def to_video_dataset(
    rows: Iterable[Mapping[str, Any]],
    video_column: str = "video",
    indices_column: str = "frame_indices",
    max_pixels_per_frame: int | None = None,
) -> datasets.Dataset:
    """A `datasets.Dataset` whose `video_column` reads as a list of RGB PIL frames, decoded only when a row is read.

    The Arrow table stores the video's path (`Value("string")`, absolute: see `core.data.resolve_image_path`) and
    the frames to read (`indices_column`, `List(Value("int64"))`); `with_transform(DecodeVideoFrames(...))` turns
    them into frames for `dataset[i]`, slices, iteration and DataLoaders. The raw table stays reachable through
    `dataset.data` or `dataset.with_format(None)`. Storing frames themselves (`List(Image())`) would put every
    frame's PNG bytes into the table, i.e. decode the whole set up front.
    """
    materialised = []
    for row in rows:
        row = dict(row)
        if isinstance(row.get(video_column), os.PathLike):
            row[video_column] = os.fspath(row[video_column])
        materialised.append(row)
    if not materialised:
        raise DataError(["no rows to build a dataset from"])
    dataset = datasets.Dataset.from_list(materialised)
    return dataset.with_transform(DecodeVideoFrames(video_column, indices_column, max_pixels_per_frame))
