"""core.data.records (records, image checks, lazy dataset) and core.data.vision (image size as the model sees it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from core.data.records import (
    DataError,
    check_images,
    image_prompt,
    inspect_images,
    load_records,
    resolve_image_path,
    to_dataset,
)
from core.data.vision import model_image_size


def _png(path: Path, size: tuple[int, int] = (20, 10), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)
    return path


# ------------------------------------------------------------------------------------------------------ load_records


def test_load_records_json_list_and_data_wrapper(tmp_path: Path) -> None:
    rows = [{"id": "a"}, {"id": "b"}]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": rows}))
    assert load_records(tmp_path / "list.json") == rows
    assert load_records(tmp_path / "wrapped.json") == rows


def test_load_records_jsonl_skips_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"id": "a"}\n\n   \n{"id": "b"}\n')
    assert load_records(tmp_path / "d.jsonl") == [{"id": "a"}, {"id": "b"}]


def test_load_records_reports_every_malformed_line_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a"}\n{"id": \n{"id": "c"}\n[1, 2]\nnot json\n')
    with pytest.raises(DataError) as info:
        load_records(path)
    message = str(info.value)
    assert str(path) in message
    assert "line 2: malformed JSON" in message
    assert "line 4 (row 2): expected a JSON object, got list" in message
    assert "line 5: malformed JSON" in message
    assert len(info.value.problems) == 3


def test_load_records_names_non_object_json_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"id": "a"}, "oops", 3]))
    with pytest.raises(DataError) as info:
        load_records(path)
    assert "row 1: expected a JSON object, got str" in str(info.value)
    assert "row 2: expected a JSON object, got int" in str(info.value)


def test_load_records_rejects_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        load_records(tmp_path / "nope.jsonl")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="expected .json or .jsonl"):
        load_records(tmp_path / "d.csv")


# ---------------------------------------------------------------------------------------------- prompts and paths


def test_image_prompt_puts_image_before_text_and_optional_system() -> None:
    assert image_prompt("find it") == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "find it"}]}
    ]
    with_system = image_prompt("find it", system_prompt="be brief")
    assert with_system[0] == {"role": "system", "content": [{"type": "text", "text": "be brief"}]}
    assert with_system[1]["content"][0] == {"type": "image"}


def test_resolve_image_path(tmp_path: Path) -> None:
    assert resolve_image_path("a/b.png", tmp_path) == tmp_path / "a" / "b.png"
    absolute = tmp_path / "elsewhere" / "c.png"
    assert resolve_image_path(absolute, tmp_path / "root") == absolute
    assert resolve_image_path("x.png", None).is_absolute()


# ------------------------------------------------------------------------------------------------------ check_images


def test_check_images_reports_missing_and_corrupt_together(tmp_path: Path) -> None:
    _png(tmp_path / "imgs" / "ok.png")
    (tmp_path / "imgs" / "garbage.png").write_bytes(b"this is not a png at all" * 10)
    truncated = _png(tmp_path / "imgs" / "truncated.png", size=(64, 64)).read_bytes()
    (tmp_path / "imgs" / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    rows = [
        {"id": "ok", "image": "imgs/ok.png"},
        {"id": "gone", "image": "imgs/missing.png"},
        {"id": "junk", "image": "imgs/garbage.png"},
        {"id": "cut", "image": "imgs/truncated.png"},
        {"id": "none"},
    ]
    problems = check_images(rows, tmp_path)
    assert len(problems) == 4, problems
    missing, garbage, cut, absent = problems
    missing_path = tmp_path / "imgs" / "missing.png"
    assert missing == f"row 1 (id 'gone'): image 'imgs/missing.png' -> {missing_path}: file not found"
    assert garbage.startswith(f"row 2 (id 'junk'): image 'imgs/garbage.png' -> {tmp_path / 'imgs' / 'garbage.png'}: ")
    assert "cannot decode (" in garbage
    assert cut.startswith("row 3 (id 'cut'):") and "cannot decode (" in cut
    assert absent.startswith("row 4 (id 'none'): missing 'image'")


def test_check_images_is_quiet_and_empty_for_good_images(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [{"id": str(i), "image": str(_png(tmp_path / f"{i}.png"))} for i in range(20)]
    assert check_images(rows, images_root=None) == []
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_inspect_images_sizes_follow_exif_rotation(tmp_path: Path) -> None:
    # datasets.Image applies exif_transpose on decode, so a 40x20 file tagged "rotate 90" is seen as 20x40.
    _png(tmp_path / "plain.png", size=(40, 20))
    rotated = Image.new("RGB", (40, 20))
    exif = rotated.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    infos = inspect_images([{"image": "plain.png"}, {"image": "rotated.jpg"}], tmp_path)
    assert [info.size for info in infos] == [(40, 20), (20, 40)]
    assert all(info.problem is None for info in infos)


# -------------------------------------------------------------------------------------------------------- to_dataset


def test_to_dataset_stores_paths_and_decodes_lazily_to_rgb(tmp_path: Path) -> None:
    paths = [
        _png(tmp_path / "grey.png", mode="L"),
        _png(tmp_path / "alpha.png", mode="RGBA"),
        _png(tmp_path / "palette.png", mode="P"),
    ]
    dataset = to_dataset([{"id": str(i), "image": path} for i, path in enumerate(paths)])
    # The Arrow table holds the path and no pixel bytes: nothing was read when the dataset was built.
    stored = dataset.data.column("image").to_pylist()
    assert stored == [{"bytes": None, "path": str(path)} for path in paths]
    # Deleting a file after building proves decoding happens on access, not before.
    paths[0].unlink()
    with pytest.raises(FileNotFoundError):
        dataset[0]["image"]
    for index in (1, 2):
        image = dataset[index]["image"]
        assert isinstance(image, Image.Image)
        assert image.mode == "RGB" and image.size == (20, 10)


def test_to_dataset_rejects_empty() -> None:
    with pytest.raises(DataError, match="no rows"):
        to_dataset([])


# --------------------------------------------------------------------------------------------------- model_image_size


def test_model_image_size_qwen_rounds_to_factor() -> None:
    from transformers import Qwen2VLImageProcessor

    processor = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056)
    # smart_resize, factor = patch 14 * merge 2 = 28:
    #   h: round(480 / 28) = round(17.14) = 17 -> 476;  w: round(640 / 28) = round(22.86) = 23 -> 644
    #   644 * 476 = 306 544 lies within [3136, 12 845 056], so no rescaling.
    assert model_image_size(processor, 640, 480) == (644, 476)


def test_model_image_size_qwen_shrinks_to_max_pixels() -> None:
    from transformers import Qwen2VLImageProcessor

    processor = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=1003520)  # 1280 * 28 * 28
    # 2560x1920: rounded 2548x1932 = 4.9M > 1 003 520, so beta = sqrt(2560 * 1920 / 1003520) = 2.2131
    #   h = floor(1920 / 2.2131 / 28) * 28 = floor(30.98) * 28 = 840
    #   w = floor(2560 / 2.2131 / 28) * 28 = floor(41.31) * 28 = 1148
    assert model_image_size(processor, 2560, 1920) == (1148, 840)
    # Qwen3-VL uses the same processor class with patch_size 16, factor 32:
    #   h = floor(1920 / 2.2131 / 32) * 32 = floor(27.11) * 32 = 864;  w = floor(36.15) * 32 = 1152
    assert model_image_size(Qwen2VLImageProcessor(max_pixels=1003520, patch_size=16), 2560, 1920) == (1152, 864)


def test_model_image_size_qwen_grows_to_min_pixels_and_reads_pil_variant() -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(min_pixels=200704, max_pixels=1003520)
    # 100x50: rounded 112x56 = 6272 < 200 704, so beta = sqrt(200704 / 5000) = 6.3357
    #   h = ceil(50 * 6.3357 / 28) * 28 = ceil(11.31) * 28 = 336
    #   w = ceil(100 * 6.3357 / 28) * 28 = ceil(22.63) * 28 = 644
    assert model_image_size(processor, 100, 50) == (644, 336)


def test_model_image_size_matches_what_the_processor_does() -> None:
    from transformers import Qwen2VLImageProcessor

    processor = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=200000)
    grid = processor(images=[Image.new("RGB", (333, 517))], return_tensors="pt")["image_grid_thw"][0].tolist()
    width, height = model_image_size(processor, 333, 517)
    assert (height, width) == (grid[1] * 14, grid[2] * 14)


def test_model_image_size_fixed_size_and_unknown() -> None:
    from transformers import CLIPImageProcessor, Gemma3ImageProcessor

    gemma = Gemma3ImageProcessor(size={"height": 896, "width": 896})
    assert model_image_size(gemma, 640, 480) == (896, 896)
    with pytest.raises(TypeError, match="does not know how CLIPImageProcessor resizes"):
        model_image_size(CLIPImageProcessor(), 640, 480)


def test_sample_marker_reuses_refuses_and_never_leaves_a_stale_claim(tmp_path):
    from core.data.records import SAMPLE_MARKER, mark_sample_written, sample_is_current

    out, data = tmp_path / "s", tmp_path / "s" / "data.jsonl"
    assert sample_is_current(out, {"n": 1}, [data], [data], "sample.py") is False  # nothing there yet
    out.mkdir()
    data.write_text("user's own\n")
    with pytest.raises(FileExistsError, match=r"already holds data.jsonl not written by sample.py"):
        sample_is_current(out, {"n": 1}, [data], [data], "sample.py")
    assert data.read_text() == "user's own\n"
    mark_sample_written(out, {"n": 1})
    assert sample_is_current(out, {"n": 1}, [data], [data], "sample.py") is True
    assert sample_is_current(out, {"n": 2}, [data], [data], "sample.py") is False  # another request: rewrite
    assert not (out / SAMPLE_MARKER).exists()  # ... and an interrupted rewrite cannot claim success
