"""core.data.video: frame sampling rules, decoding only the sampled frames, pixel budget, video checks, lazy dataset."""

from __future__ import annotations

import pickle
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from core.data.records import DataError
from core.data.video import (
    FramePixels,
    check_videos,
    inspect_videos,
    load_video_frames,
    read_frames,
    sample_frame_indices,
    sampled_fps,
    to_video_dataset,
    video_prompt,
)

STEP = 8  # brightness step between consecutive frames of a ramp clip: frame k is grey level STEP * k


def ramp_clip(path: Path, frames: int = 30, size: tuple[int, int] = (64, 48), fps: int = 10) -> Path:
    """An mp4 whose frame k is uniformly grey at level STEP * k (lossless H.264), so a frame names its index."""
    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for k in range(frames):
            pixels = np.full((height, width, 3), STEP * k, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def frame_numbers(images: list[Image.Image]) -> list[int]:
    """Which ramp frame each image is (its mean grey level / STEP), asserting it is a clean ramp frame."""
    numbers = []
    for image in images:
        level = float(np.asarray(image, dtype=np.float32).mean())
        assert abs(level / STEP - round(level / STEP)) < 0.25, f"grey level {level} is not a ramp frame"
        numbers.append(round(level / STEP))
    return numbers


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ramp_clip(tmp_path_factory.mktemp("clips") / "ramp.mp4")


# -------------------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    ("total", "low", "high", "kwargs", "count"),
    [
        (100, 4, 16, {}, 16),  # no clip rate: a fixed count, max_frames
        (10, 4, 16, {}, 10),  # a short clip gives all of its frames ...
        (9, 4, 16, {}, 8),  # ... floored to even
        (3, 4, 16, {}, 2),  # shorter than min_frames: the clip wins
        (1, 4, 16, {}, 2),  # one frame: repeated to make a pair (qwen-vl-utils refuses such a clip)
        (100, 5, 9, {}, 8),  # odd max: floored
        (100, 3, 3, {}, 2),  # [3, 3]: max floored to 2 wins over min rounded up to 4 (qwen-vl-utils' order)
        (100, 4, 16, {"num_frames": 7}, 6),
        (100, 4, 16, {"num_frames": 1}, 4),  # clamped to min_frames
        (100, 4, 16, {"num_frames": 50}, 16),  # clamped to max_frames
        (80, 4, 16, {"fps": 8.0}, 16),  # 10 s at the default 2 fps: 20 wanted, max_frames wins
        (80, 4, 16, {"fps": 8.0, "target_fps": 1.0}, 10),  # 10 s at 1 fps
        (80, 4, 16, {"fps": 8.0, "target_fps": 0.2}, 4),  # 2 frames wanted, min_frames wins
        (80, 4, 16, {"fps": 8.0, "target_fps": 0.5}, 4),  # 5 wanted -> 4 (floored to even)
        (46, 4, 16, {"fps": 8.0, "target_fps": 1.0}, 4),  # 5.75 wanted -> 4: floored, not rounded
        (80, 4, 16, {"fps": 8.0, "target_fps": None}, 16),  # no target rate: max_frames
        (80, 4, 16, {"fps": 0.0, "target_fps": 1.0}, 16),  # unknown clip rate: max_frames
    ],
)
def test_sample_frame_indices_counts(total: int, low: int, high: int, kwargs: dict, count: int) -> None:
    indices = sample_frame_indices(total, low, high, **kwargs)
    assert len(indices) == count
    assert indices == sorted(indices)
    assert indices[0] == 0 and indices[-1] == total - 1  # spread over the whole clip
    if count <= total:
        assert len(set(indices)) == count


def test_sample_frame_indices_invariants_over_a_grid() -> None:
    for total in range(1, 41):
        for low in range(1, 9):
            for high in range(max(low, 2), 21):
                indices = sample_frame_indices(total, low, high)
                count = len(indices)
                assert count % 2 == 0 and count >= 2
                assert all(0 <= i < total for i in indices) and indices == sorted(indices)
                if total >= 2:
                    assert count <= total - total % 2 and count <= high
                    assert len(set(indices)) == count
                    even_low, even_high = low + low % 2, high - high % 2
                    assert count == max(
                        2, min(max(even_high, even_low) if even_low <= even_high else even_high, total) // 2 * 2
                    )
                # uniform: gaps differ by at most one frame
                gaps = np.diff(indices)
                assert gaps.max() - gaps.min() <= 1


def test_sample_frame_indices_is_spread_uniformly() -> None:
    assert sample_frame_indices(300, 8, 8) == [0, 43, 85, 128, 171, 214, 256, 299]
    assert sample_frame_indices(1, 1, 4) == [0, 0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 5, 4), "min_frames \\(5\\) must be <= max_frames \\(4\\)"),
        ((10, 0, 4), "min_frames must be >= 1"),
        ((0, 1, 4), "total_frames must be >= 1"),
        ((10, 1.5, 4), "min_frames must be an int"),
    ],
)
def test_sample_frame_indices_rejects_bad_bounds(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_frame_indices(*args)
    with pytest.raises(ValueError, match="num_frames"):
        sample_frame_indices(10, 1, 4, num_frames=0)


def test_sampled_fps_matches_transformers_definition() -> None:
    assert sampled_fps(16, 80, 8.0) == pytest.approx(1.6)
    assert sampled_fps(16, 80, None) is None and sampled_fps(16, 80, 0.0) is None


# -------------------------------------------------------------------------------------------------------- decoding


def test_load_video_frames_returns_exactly_the_sampled_frames_in_order(clip: Path) -> None:
    frames = load_video_frames(clip, 6, 6)
    assert frame_numbers(frames) == sample_frame_indices(30, 6, 6) == [0, 6, 12, 17, 23, 29]
    assert all(frame.mode == "RGB" and frame.size == (64, 48) for frame in frames)
    assert frame_numbers(load_video_frames(clip, 4, 16, num_frames=8)) == sample_frame_indices(30, 4, 16, 8)
    # 30 frames at 10 fps = 3 s; 2 frames per second -> 6 frames
    assert len(load_video_frames(clip, 2, 16, target_fps=2.0)) == 6


def test_read_frames_keeps_order_and_repeats_and_checks_range(clip: Path) -> None:
    assert frame_numbers(read_frames(clip, [5, 1, 1, 29])) == [5, 1, 1, 29]
    assert read_frames(clip, []) == []
    with pytest.raises(IndexError, match=r"frame indices \[30\] outside the clip's 30 frames"):
        read_frames(clip, [0, 30])


def test_frames_are_resized_to_the_qwen_budget_content_kept(tmp_path: Path, clip: Path) -> None:
    wide = ramp_clip(tmp_path / "wide.mp4", frames=6, size=(96, 64))
    frames = load_video_frames(wide, 2, 4, pixels=FramePixels(14, min_pixels=784, max_pixels=3200), num_frames=4)
    assert [frame.size for frame in frames] == [(56, 28)] * 4  # smart_resize: multiples of 28, aspect ~kept
    assert frame_numbers(frames) == [0, 2, 3, 5]  # resizing keeps the content
    assert load_video_frames(clip, 2, 2)[0].size == (64, 48)  # no budget: as decoded
    assert read_frames(clip, [0, 1], FramePixels(14, 3136, 3136))[0].size == (56, 56)
    with pytest.raises(ValueError, match="too small"):
        FramePixels(14, min_pixels=1, max_pixels=10).size(64, 48, 2)
    with pytest.raises(ValueError, match="image_patch_size"):
        FramePixels(0)


# ------------------------------------------------------------------------------------------------------ validation


def test_check_videos_reports_every_bad_file_with_row_and_id_quietly(
    tmp_path: Path, clip: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    good = ramp_clip(tmp_path / "videos" / "good.mp4", frames=4)
    data = good.read_bytes()
    (tmp_path / "videos" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "videos" / "garbage.mp4").write_text("this is not a video\n" * 20)
    (tmp_path / "videos" / "empty.mp4").write_bytes(b"")
    (tmp_path / "videos" / "folder.mp4").mkdir()
    rows = [
        {"id": "ok", "video": "videos/good.mp4"},
        {"id": "gone", "video": "videos/missing.mp4"},
        {"id": "cut", "video": "videos/truncated.mp4"},
        {"id": "junk", "video": "videos/garbage.mp4"},
        {"id": "zero", "video": "videos/empty.mp4"},
        {"id": "dir", "video": "videos/folder.mp4"},
        {"id": "none"},
        {"video": str(clip)},  # absolute path, no id
    ]
    capfd.readouterr()
    problems = check_videos(rows, tmp_path)
    root = tmp_path.absolute()
    assert problems == [
        f"row 1 (id 'gone'): video 'videos/missing.mp4' -> {root}/videos/missing.mp4: file not found",
        problems[1],
        problems[2],
        f"row 4 (id 'zero'): video 'videos/empty.mp4' -> {root}/videos/empty.mp4: empty file",
        f"row 5 (id 'dir'): video 'videos/folder.mp4' -> {root}/videos/folder.mp4: not a file",
        "row 6 (id 'none'): missing 'video' (expected a video path, got None)",
    ]
    assert problems[1].startswith(f"row 2 (id 'cut'): video 'videos/truncated.mp4' -> {root}/videos/truncated.mp4: ")
    assert problems[2].startswith(f"row 3 (id 'junk'): video 'videos/garbage.mp4' -> {root}/videos/garbage.mp4: ")
    assert "cannot decode" in problems[1] and "cannot decode" in problems[2]
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""  # decord's own error lines are silenced


def test_inspect_videos_reports_frame_count_rate_and_size(clip: Path) -> None:
    (info,) = inspect_videos([{"id": "a", "video": clip.name}], clip.parent)
    assert info.problem is None and info.path == clip.absolute()
    assert (info.num_frames, info.fps, info.size) == (30, 10.0, (64, 48))
    assert inspect_videos([], None) == []


def test_narrow_frames_decord_misreads_are_reported_not_returned(tmp_path: Path) -> None:
    # decord 0.6 returns 4 "channels" for frames 16/24/48/72 px wide; such a clip must never yield wrong frames.
    narrow = ramp_clip(tmp_path / "narrow.mp4", frames=4, size=(72, 64))
    problems = check_videos([{"id": "n", "video": str(narrow)}], None)
    if problems:
        assert "cannot decode" in problems[0]
    else:
        frames = load_video_frames(narrow, 4, 4)
        assert frame_numbers(frames) == [0, 1, 2, 3] and frames[0].size == (72, 64)


# --------------------------------------------------------------------------------------------------------- dataset


def test_video_prompt_puts_the_video_first() -> None:
    assert video_prompt("What happens?") == [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}
    ]
    system = video_prompt("q", system_prompt="Be brief.")[0]
    assert system == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}


def test_to_video_dataset_stores_paths_and_decodes_on_read(clip: Path) -> None:
    rows = [
        {"id": "a", "video": clip, "frame_indices": [0, 10, 20, 29]},
        {"id": "b", "video": str(clip), "frame_indices": [3, 3]},
    ]
    dataset = to_video_dataset(rows, pixels=FramePixels(14, 3136, 3136))
    assert dataset.data.column("video").to_pylist() == [str(clip), str(clip)]  # only the path is in the table
    row = dataset[0]
    assert frame_numbers(row["video"]) == [0, 10, 20, 29]
    assert all(isinstance(frame, Image.Image) and frame.size == (56, 56) for frame in row["video"])
    assert row["frame_indices"] == [0, 10, 20, 29] and row["id"] == "a"
    assert frame_numbers(dataset[1:2]["video"][0]) == [3, 3]
    assert list(dataset["id"]) == ["a", "b"]  # columns without the video are not decoded
    shuffled = dataset.shuffle(seed=0).select([0])
    assert all(isinstance(frame, Image.Image) for frame in shuffled[0]["video"])

    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=lambda batch: batch)
    (batch,) = list(loader)
    assert [frame_numbers(item["video"]) for item in batch] == [[0, 10, 20, 29], [3, 3]]
    restored = pickle.loads(pickle.dumps(dataset))  # DataLoader workers receive a pickled dataset
    assert frame_numbers(restored[1]["video"]) == [3, 3]
    with pytest.raises(DataError, match="no rows"):
        to_video_dataset([])
