"""Generic video helpers shared by recipes: pick frames, decode only those, check files, build a lazy dataset.

Nothing here knows about a task. A recipe samples each clip's frame indices once, when it builds its dataset
(`inspect_videos` opens every file anyway to validate it, so the frame count and rate are known then), stores the
path and the indices in the table, and lets `to_video_dataset` decode the frames only when a row is read.

Frames and pixels: Qwen's own qwen-vl-utils
-------------------------------------------
How many frames, which ones and how large each frame is come from the Qwen team's `qwen-vl-utils` (PyPI, pinned
0.0.14, `qwen_vl_utils/vision_process.py`), the preprocessing Qwen2-VL / Qwen2.5-VL / Qwen3-VL were trained with:

* count: `smart_nframes` with `fps` (the wanted rate, default `FPS` = 2), `min_frames`, `max_frames`:
  duration * fps clamped to [min_frames rounded UP to even, max_frames rounded DOWN to even], then to the clip's
  frame count, then FLOORED to even (Qwen folds 2 frames into one temporal patch). A 2 s clip at 2 fps: 4 frames.
* a fixed count (`num_frames`, or no usable clip rate, or a row with `dynamic_sample` false, which asks for
  max_frames) goes through the same `smart_nframes` rule as a 1-second clip of `total_frames` frames sampled at that
  many frames per second, so it is clamped and floored exactly like the fps path (the library's own `nframes` key
  rounds half-to-even and may round ABOVE max_frames or the clip, which it then refuses).
* indices: `torch.linspace(0, total_frames - 1, count).round()`, as `_read_video_decord` computes them (that line
  is inline in the library, not a function).
* pixels per frame: `smart_resize(h, w, factor=patch_size * 2, min_pixels, max_pixels)` with the bounds
  `fetch_video` computes: min_pixels default `VIDEO_MIN_TOKEN_NUM * factor**2`, max_pixels =
  max(min(`VIDEO_MAX_TOKEN_NUM * factor**2`, total_pixels / count * 2), int(min_pixels * 1.05)), then at most the
  max_pixels asked for; total_pixels default `MODEL_SEQ_LEN * factor**2 * 0.9`. Frames are resized with PIL's
  bicubic filter (the library uses torchvision's antialiased bicubic on float tensors: same size, pixel values
  within rounding).

Where the library refuses, we decide (documented in recipes/video/README.md): a 1-frame clip (the library raises
"nframes should in interval [2, 1]") gives its frame twice, as the library's own list-of-frames path pads to an
even count; max_frames below 2 and max_pixels below min_pixels are refused with a ValueError up front.
We call `smart_nframes` and `smart_resize` but not `fetch_video` / `_read_video_decord`: those decode eagerly when
the row is built, and on any decord error `fetch_video` falls back to torchvision's `read_video`, which decodes the
whole clip (and no longer exists in torchvision 0.29). Here decord reads only the sampled frames, when a row is read.

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

from core.data.decode_cache import decode_cache, file_key
from core.data.records import DataError, describe_row, resolve_image_path

__all__ = [
    "DEFAULT_FPS",
    "DecodeVideoFrames",
    "FramePixels",
    "VideoInfo",
    "check_videos",
    "frame_count",
    "inspect_videos",
    "load_video_frames",
    "patch_size_of",
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

_qwen_lock = threading.Lock()
_qwen_module: Any = None


def _qwen() -> Any:
    """`qwen_vl_utils.vision_process`, imported on first use (it imports torch and torchvision) so `core` imports
    without it; its `fetch_video` is never called (see the module doc)."""
    global _qwen_module
    with _qwen_lock:
        if _qwen_module is None:
            try:
                from qwen_vl_utils import vision_process
            except ImportError as err:  # pragma: no cover - installed with the project
                raise ImportError("video sampling needs qwen-vl-utils (`pip install qwen-vl-utils==0.0.14`)") from err
            _qwen_module = vision_process
    return _qwen_module


DEFAULT_FPS = 2.0  # qwen_vl_utils.vision_process.FPS (0.0.14); a test checks they agree


def _usable_rate(value: float | None) -> bool:
    return value is not None and not isinstance(value, bool) and math.isfinite(value) and value > 0


def frame_count(
    total_frames: int,
    min_frames: int,
    max_frames: int,
    num_frames: int | None = None,
    fps: float | None = None,
    target_fps: float | None = DEFAULT_FPS,
) -> int:
    """How many frames to sample: qwen-vl-utils' `smart_nframes` (rules in the module doc); always even, >= 2."""
    for name, value in (("total_frames", total_frames), ("min_frames", min_frames), ("max_frames", max_frames)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    if max_frames < 2:
        raise ValueError(f"max_frames must be >= 2 (Qwen folds frames in pairs), got {max_frames}")
    if min_frames > max_frames:
        raise ValueError(f"min_frames ({min_frames}) must be <= max_frames ({max_frames})")
    if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1):
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    if total_frames == 1:  # the library refuses (nframes must be in [2, total]): the one frame is given twice
        return 2
    bounds = {"min_frames": min_frames, "max_frames": max_frames}
    if num_frames is None and _usable_rate(fps) and _usable_rate(target_fps):
        return _qwen().smart_nframes({"fps": float(target_fps), **bounds}, total_frames=total_frames, video_fps=fps)
    # A fixed count: the same rule for a 1-second clip at `wanted` frames per second (total / total * wanted is
    # exactly `wanted` in floating point), so it is clamped and floored to even exactly as the fps path. Capping
    # `wanted` at the clip's length first gives the same count without the library's "nframes > total" warning.
    wanted = min(num_frames if num_frames is not None else max_frames, total_frames)
    return _qwen().smart_nframes({"fps": wanted, **bounds}, total_frames=total_frames, video_fps=total_frames)


def sample_frame_indices(
    total_frames: int,
    min_frames: int,
    max_frames: int,
    num_frames: int | None = None,
    fps: float | None = None,
    target_fps: float | None = DEFAULT_FPS,
) -> list[int]:
    """Sorted frame indices spread uniformly over a clip of `total_frames`, as qwen-vl-utils samples them.

    `fps` is the clip's rate and `target_fps` the wanted one (duration * target_fps frames within the bounds);
    `num_frames`, a `target_fps` of None or an unknown clip rate ask for a fixed count (max_frames by default).
    Indices: `torch.linspace(0, total - 1, count).round()` as in the library's `_read_video_decord`.
    """
    count = frame_count(total_frames, min_frames, max_frames, num_frames, fps, target_fps)
    if total_frames == 1:
        return [0] * count
    import torch

    return [int(i) for i in torch.linspace(0, total_frames - 1, count).round().long().tolist()]


def sampled_fps(num_sampled: int, total_frames: int, fps: float | None) -> float | None:
    """Frame rate of the sampled frames (what Qwen2.5-VL needs for its temporal positions), None if fps is unknown.

    Same definition as transformers' `VideoMetadata.sampled_fps` and qwen-vl-utils' `sample_fps`:
    num_sampled / total_frames * fps.
    """
    if not fps or not math.isfinite(fps) or fps <= 0 or total_frames < 1:
        return None
    return num_sampled / total_frames * fps


@dataclass(frozen=True)
class FramePixels:
    """Per-frame pixel budget, computed as qwen-vl-utils' `fetch_video` does (module doc); None: its default.

    `image_patch_size` is the vision tower's patch (14 for Qwen2-VL / Qwen2.5-VL, 16 for Qwen3-VL: see
    `patch_size_of`); frames get sides that are multiples of patch * 2 (the 2x2 spatial merge).
    """

    image_patch_size: int = 14
    min_pixels: int | None = None
    max_pixels: int | None = None
    total_pixels: int | None = None

    def __post_init__(self) -> None:
        for name in ("image_patch_size", "min_pixels", "max_pixels", "total_pixels"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        if self.min_pixels is not None and self.max_pixels is not None and self.max_pixels < self.min_pixels:
            # the library asserts in smart_resize; refused here, before any frame is read
            raise ValueError(f"max_pixels ({self.max_pixels}) must be >= min_pixels ({self.min_pixels})")

    def bounds(self, num_frames: int) -> tuple[int, float]:
        """(min_pixels, max_pixels) of one frame of a clip sampled to `num_frames` frames (`fetch_video`'s formula)."""
        vp = _qwen()
        factor = self.image_patch_size * vp.SPATIAL_MERGE_SIZE
        low = self.min_pixels if self.min_pixels is not None else vp.VIDEO_MIN_TOKEN_NUM * factor * factor
        total = self.total_pixels if self.total_pixels is not None else vp.MODEL_SEQ_LEN * factor * factor * 0.9
        high = max(min(vp.VIDEO_MAX_TOKEN_NUM * factor * factor, total / num_frames * vp.FRAME_FACTOR), int(low * 1.05))
        if self.max_pixels is not None:
            high = min(self.max_pixels, high)
        return low, high

    def size(self, width: int, height: int, num_frames: int) -> tuple[int, int]:
        """(width, height) of each frame after qwen-vl-utils' `smart_resize` within `bounds(num_frames)`."""
        low, high = self.bounds(num_frames)
        vp = _qwen()
        if high < low:  # a max_pixels below the default min_pixels: the library asserts
            raise ValueError(f"max_pixels ({high}) must be >= min_pixels ({low})")
        factor = self.image_patch_size * vp.SPATIAL_MERGE_SIZE
        new_h, new_w = vp.smart_resize(height, width, factor=factor, min_pixels=low, max_pixels=high)
        if new_w < 1 or new_h < 1:  # smart_resize floors to 0 when max_pixels is below one factor x factor patch
            raise ValueError(f"max_pixels ({high}) is too small for a {width}x{height} frame (one patch is {factor}^2)")
        return new_w, new_h


def patch_size_of(processor: Any, default: int = 14) -> int:
    """The vision patch size a Qwen processor uses for video (its video processor's, else its image processor's)."""
    for attr in ("video_processor", "image_processor"):
        value = getattr(getattr(processor, attr, None), "patch_size", None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


# ---------------------------------------------------------------------------------------------------------- decoding


def _get_batch(reader: Any, indices: Sequence[int], path: Any) -> Any:
    """uint8 (n, H, W, 3) frames; decord's NDArray converted with `.asnumpy()`."""
    frames = reader.get_batch(list(indices)).asnumpy()
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{path}: decord returned frames of shape {frames.shape}, expected (n, H, W, 3)")
    return frames


def _to_images(frames: Any, pixels: FramePixels | None) -> list[Image.Image]:
    images = [Image.fromarray(frame) for frame in frames]
    if pixels is None or not images:
        return images
    size = pixels.size(images[0].width, images[0].height, len(images))
    return [image if image.size == size else image.resize(size, Image.Resampling.BICUBIC) for image in images]


def read_frames(
    path: str | os.PathLike[str], indices: Sequence[int], pixels: FramePixels | None = None
) -> list[Image.Image]:
    """RGB PIL images of exactly the frames `indices` (in that order, repeats allowed), resized to `pixels`' budget
    for that many frames (None: as decoded)."""
    reader = _open(path)
    indices = [int(i) for i in indices]
    total = len(reader)
    bad = [i for i in indices if not 0 <= i < total]
    if bad:
        raise IndexError(f"{path}: frame indices {bad} outside the clip's {total} frames")
    if not indices:
        return []
    return _to_images(_get_batch(reader, indices, path), pixels)


def load_video_frames(
    path: str | os.PathLike[str],
    min_frames: int,
    max_frames: int,
    pixels: FramePixels | None = None,
    num_frames: int | None = None,
    target_fps: float | None = DEFAULT_FPS,
) -> list[Image.Image]:
    """Sample a clip's frames (`sample_frame_indices`) and decode only those, as RGB PIL images within the budget."""
    reader = _open(path)
    fps = float(reader.get_avg_fps())
    indices = sample_frame_indices(len(reader), min_frames, max_frames, num_frames, fps, target_fps)
    return _to_images(_get_batch(reader, indices, path), pixels)


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

    Like `core.data.records.image_prompt`: every `content` is a list of parts so that the column has one Arrow type.
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
        pixels: FramePixels | None = None,
    ) -> None:
        self.video_column = video_column
        self.indices_column = indices_column
        self.pixels = pixels

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(video_column={self.video_column!r}, indices_column={self.indices_column!r}, "
            f"pixels={self.pixels!r})"
        )

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if self.video_column not in batch:  # e.g. dataset["id"]: nothing to decode
            return batch
        if self.indices_column not in batch:
            raise KeyError(f"decoding {self.video_column!r} needs the {self.indices_column!r} column as well")
        frames = [  # GRPO reads each row G times in a row: decoded once (core.data.decode_cache), a new list each
            list(
                decode_cache.get(
                    (*file_key(path), tuple(indices), repr(self.pixels)),
                    lambda path=path, indices=indices: read_frames(path, indices, self.pixels),
                )
            )
            for path, indices in zip(batch[self.video_column], batch[self.indices_column], strict=True)
        ]
        return {**batch, self.video_column: frames}


def to_video_dataset(
    rows: Iterable[Mapping[str, Any]],
    video_column: str = "video",
    indices_column: str = "frame_indices",
    pixels: FramePixels | None = None,
) -> datasets.Dataset:
    """A `datasets.Dataset` whose `video_column` reads as a list of RGB PIL frames, decoded only when a row is read.

    The Arrow table stores the video's path (`Value("string")`, absolute: see
    `core.data.records.resolve_image_path`) and
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
    return dataset.with_transform(DecodeVideoFrames(video_column, indices_column, pixels))
