"""Video frames as Qwen's own `qwen-vl-utils` samples them: official-derived frame counts, indices, pixel budgets.

Every expected value below was computed OUTSIDE this project by running the Qwen team's library itself:
`qwen-vl-utils` 0.0.14 from PyPI (wheel sha256 5e28657bfd031e56bd447c5901b58ddfc3835285ed100f4c56580e0ade054e96),
`qwen_vl_utils/vision_process.py`, function `fetch_video(ele, image_patch_size, return_video_metadata=True)` with
its decord back end (`_read_video_decord` -> `smart_nframes`, `torch.linspace(...).round()`, then `smart_resize`
within the bounds `fetch_video` computes) on stand-in clips of the given frame count, frame rate and frame size.
The indices are `video_metadata["frames_indices"]`, the sizes the returned tensor's (width, height). Only the
numbers are copied here, not the code. Cases the library refuses ("nframes should in interval [2, 1]" for a
1-frame clip or max_frames 1; an AssertionError for max_pixels < min_pixels) are handled as documented in
core/data/video.py and recipes/video/README.md, and tested at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.data.records import DataError
from core.data.video import DEFAULT_FPS, FramePixels, frame_count, patch_size_of, sample_frame_indices
from tests.helpers import load_recipe_module
from tests.test_core_video import frame_numbers, ramp_clip

D = load_recipe_module("video", "data")

# (total_frames, clip fps, {fps, min_frames, max_frames} as given to the library, official frame indices)
OFFICIAL_INDICES = [
    (16, 8.0, {"fps": 2.0, "min_frames": 4, "max_frames": 16}, [0, 5, 10, 15]),  # 2 s at 2 fps: 4 frames
    (60, 30.0, {}, [0, 20, 39, 59]),  # the library's defaults: fps 2, min_frames 4
    (
        300,
        30.0,
        {"fps": 2.0, "min_frames": 4, "max_frames": 16},
        [0, 20, 40, 60, 80, 100, 120, 140, 159, 179, 199, 219, 239, 259, 279, 299],
    ),
    (
        300,
        30.0,
        {"fps": 2.0, "min_frames": 4, "max_frames": 768},
        [0, 16, 31, 47, 63, 79, 94, 110, 126, 142, 157, 173, 189, 205, 220, 236, 252, 268, 283, 299],
    ),
    (25, 10.0, {"fps": 2.0, "min_frames": 4, "max_frames": 16}, [0, 8, 16, 24]),  # 5 wanted: floored to 4
    (23, 8.0, {"fps": 2.0, "min_frames": 4, "max_frames": 16}, [0, 7, 15, 22]),  # 5.75 wanted: floor, not round
    (7, 25.0, {"fps": 2.0, "min_frames": 4, "max_frames": 16}, [0, 2, 4, 6]),  # min_frames wins
    (3, 8.0, {"fps": 2.0, "min_frames": 4, "max_frames": 16}, [0, 2]),  # shorter than min_frames: the clip wins
    (2, 8.0, {"fps": 2.0, "min_frames": 4, "max_frames": 16}, [0, 1]),
    (100, 24.0, {"fps": 1.0, "min_frames": 4, "max_frames": 16}, [0, 33, 66, 99]),
    (100, 24.0, {"fps": 2.0, "min_frames": 5, "max_frames": 9}, [0, 14, 28, 42, 57, 71, 85, 99]),  # odd bounds
    (100, 24.0, {"fps": 2.0, "min_frames": 3, "max_frames": 3}, [0, 99]),  # [3, 3]: max floored to 2 wins
    (
        1000,
        29.97,
        {"fps": 2.0, "min_frames": 4, "max_frames": 16},
        [0, 67, 133, 200, 266, 333, 400, 466, 533, 599, 666, 733, 799, 866, 932, 999],
    ),
    (
        1000,
        29.97,
        {"fps": 2.0, "min_frames": 4, "max_frames": 768},
        [
            0,
            15,
            31,
            46,
            61,
            77,
            92,
            108,
            123,
            138,
            154,
            169,
            184,
            200,
            215,
            231,
            246,
            261,
            277,
            292,
            307,
            323,
            338,
            353,
            369,
            384,
            400,
            415,
            430,
            446,
            461,
            476,
            492,
            507,
            523,
            538,
            553,
            569,
            584,
            599,
            615,
            630,
            646,
            661,
            676,
            692,
            707,
            722,
            738,
            753,
            768,
            784,
            799,
            815,
            830,
            845,
            861,
            876,
            891,
            907,
            922,
            938,
            953,
            968,
            984,
            999,
        ],
    ),
    (45, 30.0, {"fps": 4.0, "min_frames": 4, "max_frames": 16}, [0, 9, 18, 26, 35, 44]),
    (37, 12.5, {"fps": 0.5, "min_frames": 4, "max_frames": 16}, [0, 12, 24, 36]),
    (41, 10.0, {"fps": 2.0, "min_frames": 2, "max_frames": 6}, [0, 8, 16, 24, 32, 40]),
    (17, 8.0, {"fps": 2.0, "min_frames": 4, "max_frames": 16}, [0, 5, 11, 16]),
    (
        301,
        25.0,
        {"fps": 2.0, "min_frames": 4, "max_frames": 32},
        [0, 13, 26, 39, 52, 65, 78, 91, 104, 117, 130, 143, 157, 170, 183, 196, 209, 222, 235, 248, 261, 274, 287, 300],
    ),
    (33, 8.0, {"fps": 3.0, "min_frames": 4, "max_frames": 16}, [0, 3, 6, 9, 12, 15, 17, 20, 23, 26, 29, 32]),
    (9, 30.0, {"fps": 2.0, "min_frames": 4, "max_frames": 16}, [0, 3, 5, 8]),
    (5, 1.0, {"fps": 2.0, "min_frames": 4, "max_frames": 16}, [0, 1, 3, 4]),  # 10 wanted, the clip has 5
    (24, 8.0, {"fps": 2.0, "min_frames": 2, "max_frames": 4}, [0, 8, 15, 23]),  # the smoke config's bounds
    (32, 8.0, {"fps": 2.0, "min_frames": 2, "max_frames": 4}, [0, 10, 21, 31]),
]

# (width, height, frames sampled, image_patch_size, {min_pixels, max_pixels, total_pixels} given, official size)
OFFICIAL_SIZES = [
    (1920, 1080, 16, 14, {}, (1008, 560)),
    (640, 480, 4, 14, {}, (644, 476)),
    (64, 48, 4, 14, {}, (392, 280)),  # below the default min_pixels (128 tokens): scaled up
    (1280, 720, 16, 14, {"max_pixels": 200704}, (588, 336)),
    (96, 80, 4, 14, {"min_pixels": 3136, "max_pixels": 4096}, (56, 56)),
    (64, 88, 4, 14, {"min_pixels": 3136, "max_pixels": 4096}, (28, 56)),  # the library may end below min_pixels
    (1920, 1080, 16, 16, {}, (1152, 640)),  # Qwen3-VL: 16 px patches, sides multiples of 32
    (640, 360, 8, 16, {"max_pixels": 200704}, (576, 320)),
    (1920, 1080, 64, 14, {"total_pixels": 2_000_000}, (420, 224)),  # total budget over many frames
    (1920, 1080, 16, 14, {"total_pixels": 20_000_000, "max_pixels": 10**7}, (1008, 560)),  # max_pixels above the cap
    (3000, 100, 4, 14, {}, (2996, 112)),
    (720, 1280, 8, 14, {"min_pixels": 50000, "max_pixels": 150000}, (280, 504)),
]


@pytest.mark.parametrize(("total", "clip_fps", "ele", "indices"), OFFICIAL_INDICES)
def test_frame_indices_match_qwen_vl_utils(total: int, clip_fps: float, ele: dict, indices: list[int]) -> None:
    low, high = ele.get("min_frames", 4), ele.get("max_frames", min(768, total))
    if "fps" in ele:
        assert sample_frame_indices(total, low, high, fps=clip_fps, target_fps=ele["fps"]) == indices
    if ele.get("fps", DEFAULT_FPS) == DEFAULT_FPS:  # the default rate is the library's FPS
        assert sample_frame_indices(total, low, high, fps=clip_fps) == indices
    assert frame_count(total, low, high, fps=clip_fps, target_fps=ele.get("fps", DEFAULT_FPS)) == len(indices)


@pytest.mark.parametrize(("width", "height", "frames", "patch", "given", "size"), OFFICIAL_SIZES)
def test_frame_size_matches_qwen_vl_utils(width: int, height: int, frames: int, patch: int, given: dict, size) -> None:
    assert FramePixels(image_patch_size=patch, **given).size(width, height, frames) == size


def test_default_rate_is_the_librarys() -> None:
    from qwen_vl_utils import vision_process

    assert DEFAULT_FPS == vision_process.FPS == 2.0


def test_fixed_counts_follow_the_fps_rule_and_never_exceed_max_frames() -> None:
    # num_frames / unknown clip rate / dynamic_sample false: clamped to [min up to even, max down to even], floored
    assert frame_count(100, 4, 16, num_frames=7) == 6
    assert frame_count(100, 4, 16, num_frames=1) == 4
    assert frame_count(100, 4, 16, num_frames=50) == 16
    assert frame_count(100, 4, 7) == 6  # fixed count max_frames 7: floored to 6 (the library's nframes key gives 8)
    assert frame_count(9, 4, 16, fps=None) == 8 and frame_count(9, 4, 16, fps=0.0) == 8
    assert frame_count(80, 4, 16, fps=8.0, target_fps=None) == 16
    for total in range(2, 60):
        for high in range(2, 20):
            for rate in (0.5, 2.0, 7.0):
                count = frame_count(total, 1, high, fps=10.0, target_fps=rate)
                assert count % 2 == 0 and 2 <= count <= min(high, total)


def test_refused_by_the_library_handled_here(tmp_path: Path) -> None:
    # a 1-frame clip: the library raises (nframes must be in [2, 1]); here the frame is given twice
    assert sample_frame_indices(1, 4, 16, fps=8.0) == [0, 0]
    with pytest.raises(ValueError, match="max_frames must be >= 2"):
        sample_frame_indices(100, 1, 1, fps=24.0)
    with pytest.raises(ValueError, match=r"max_pixels \(3000\) must be >= min_pixels \(3136\)"):
        FramePixels(min_pixels=3136, max_pixels=3000)
    with pytest.raises(ValueError, match="must be >= min_pixels"):  # below the default min: also refused
        FramePixels(max_pixels=1000).size(640, 480, 4)


def test_patch_size_of_reads_the_processor() -> None:
    from types import SimpleNamespace

    assert patch_size_of(SimpleNamespace(video_processor=SimpleNamespace(patch_size=16))) == 16
    assert patch_size_of(SimpleNamespace(image_processor=SimpleNamespace(patch_size=14))) == 14
    assert patch_size_of(object()) == 14


# ---------------------------------------------------------------------------------------------- the recipe's data


def _row(row_id: str, video: Path, **extra) -> dict:
    return {
        "id": row_id,
        "conversations": [
            {"from": "human", "value": "<video>\nWhat happens?"},
            {"from": "gpt", "value": "<answer>(1) a (2) b</answer>"},
        ],
        "video": str(video),
        **extra,
    }


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("qwen-clips")
    return {
        "2s": ramp_clip(folder / "2s.mp4", frames=16, size=(64, 48), fps=8),  # 2 s
        "4s": ramp_clip(folder / "4s.mp4", frames=32, size=(64, 48), fps=8),  # 4 s
    }


def test_a_2s_clip_at_the_default_fps_gets_4_frames(clips: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([_row("a", clips["2s"])]))
    dataset = D.build_dataset(path, min_frames=4, max_frames=16)
    assert dataset[0]["frame_indices"] == [0, 5, 10, 15]  # OFFICIAL_INDICES[0]
    assert frame_numbers(dataset[0]["video"]) == [0, 5, 10, 15]  # decord read exactly those frames
    assert dataset[0]["video_fps"] == pytest.approx(4 / 16 * 8)


def test_row_meta_stays_within_the_config_bounds(clips: dict[str, Path], tmp_path: Path) -> None:
    rows = [
        _row("asks-16", clips["4s"], meta={"min_frames": 16, "max_frames": 16}),
        _row("asks-32-fixed", clips["4s"], meta={"max_frames": 32, "dynamic_sample": False}),
        _row("asks-2", clips["4s"], meta={"min_frames": 1, "max_frames": 2}),
        _row("plain", clips["4s"]),
    ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows))
    capped = D.build_dataset(path, min_frames=2, max_frames=4)
    # --max_frames 4 is the cap: a row asking 16 gets 4; 4 s at 2 fps wants 8 -> 4; meta [1, 2] -> [2, 2]
    assert [len(i) for i in capped["frame_indices"]] == [4, 4, 2, 4]
    wide = D.build_dataset(path, min_frames=4, max_frames=16)
    # meta [16, 16] -> 16; fixed 32 capped to 16; meta [1, 2] raised to the config's min 4; plain: 4 s * 2 fps = 8
    assert [len(i) for i in wide["frame_indices"]] == [16, 16, 4, 8]


def test_one_row_bound_outside_the_config_is_clamped_not_refused(clips: dict[str, Path], tmp_path: Path) -> None:
    rows = [
        _row("min16", clips["4s"], meta={"min_frames": 16}),  # above the config's max 4: clamped to 4
        _row("max2", clips["4s"], meta={"max_frames": 2}),  # below the config's min 4: raised to 4
    ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows))
    assert [len(i) for i in D.build_dataset(path, min_frames=4, max_frames=4)["frame_indices"]] == [4, 4]
    path.write_text(json.dumps([_row("self", clips["4s"], meta={"min_frames": 8, "max_frames": 6})]))
    with pytest.raises(DataError, match=r"row 0 \(id 'self'\): meta.min_frames \(8\) > meta.max_frames \(6\)"):
        D.build_dataset(path, min_frames=4, max_frames=16)


def test_frames_are_resized_to_the_librarys_budget(clips: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([_row("a", clips["2s"])]))
    dataset = D.build_dataset(path, min_pixels_per_frame=3136, max_pixels_per_frame=4096)
    frames = dataset[0]["video"]
    assert [f.size for f in frames] == [FramePixels(14, 3136, 4096).size(64, 48, 4)] * 4 == [(56, 56)] * 4
    qwen3 = D.build_dataset(path, image_patch_size=16, max_pixels_per_frame=200704)
    assert qwen3[0]["video"][0].size == FramePixels(16, None, 200704).size(64, 48, 4) == (448, 320)
