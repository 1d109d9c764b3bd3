"""core.data.images: every image reaches a model as upright 8-bit RGB, transparency on white, within the pixel
budget."""

from __future__ import annotations

import io
import struct
import time
import warnings
import zlib
from pathlib import Path

import datasets
import numpy as np
import pytest
from helpers import load_recipe_module
from image_fixtures import (
    exif_rotated_jpeg,
    gradient_16bit,
    palette_with_transparency,
    transparent_with_black_square,
)
from PIL import Image

from core.data.images import (
    DEFAULT_MAX_PIXELS,
    MAX_DECODE_PIXELS,
    ImageTooLargeError,
    NormalizedImage,
    fit_size,
    normalize_image,
    open_image,
)
from core.data.records import inspect_images, to_dataset
from core.data.vision import max_image_pixels

# ------------------------------------------------------------------------------------------------- colour and depth


def test_16bit_grey_keeps_its_full_range(tmp_path: Path) -> None:
    image = open_image(gradient_16bit(tmp_path / "g16.png"))
    pixels = np.asarray(image)
    assert image.mode == "RGB" and image.size == (1024, 8)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all()
    row = pixels[0, :, 0].astype(int)
    assert len(np.unique(row)) == 256  # a plain convert("RGB") clips to 0..255: only a handful of levels
    assert row[0] == 0 and row[-1] == 255 and (np.diff(row) >= 0).all()
    assert row[512] == round(round(512 * 65535 / 1023) / 257)  # v / 257, not clipped


def test_float_image_in_unit_range_is_scaled_to_8bit() -> None:
    values = np.tile(np.linspace(0.0, 1.0, 256, dtype=np.float32), (4, 1))
    pixels = np.asarray(normalize_image(Image.fromarray(values, mode="F")))
    assert pixels[0, 0].tolist() == [0, 0, 0] and pixels[0, -1].tolist() == [255, 255, 255]
    assert len(np.unique(pixels[..., 0])) == 256


def test_transparent_background_becomes_white_not_black(tmp_path: Path) -> None:
    image = open_image(transparent_with_black_square(tmp_path / "rgba.png"))
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255) and image.getpixel((59, 39)) == (255, 255, 255)
    assert image.getpixel((15, 15)) == (0, 0, 0)
    # partial alpha blends onto white: 50% black over white is mid-grey
    half = Image.new("RGBA", (2, 2), (0, 0, 0, 128))
    assert abs(normalize_image(half).getpixel((0, 0))[0] - 127) <= 1


def test_palette_transparency_becomes_white(tmp_path: Path) -> None:
    image = open_image(palette_with_transparency(tmp_path / "p.png"))
    assert image.getpixel((0, 0)) == (255, 255, 255)  # the transparent index, black in the palette
    assert image.getpixel((10, 10)) == (255, 0, 0)


def test_cmyk_becomes_rgb(tmp_path: Path) -> None:
    image = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # no cyan, full magenta + yellow: red
    image.paste((0, 0, 0, 255), (0, 0, 4, 8))  # full black
    image.save(tmp_path / "cmyk.jpg", quality=100)
    for source in (image, tmp_path / "cmyk.jpg"):
        rgb = normalize_image(source) if isinstance(source, Image.Image) else open_image(source)
        assert rgb.mode == "RGB"
        assert all(abs(a - b) <= 3 for a, b in zip(rgb.getpixel((6, 4)), (255, 0, 0), strict=True))
        assert all(value <= 3 for value in rgb.getpixel((1, 4)))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = open_image(exif_rotated_jpeg(tmp_path / "rot.jpg"))
    assert image.size == (20, 40)  # upright: rotated 90 degrees clockwise
    red, white = image.getpixel((15, 3)), image.getpixel((3, 35))
    assert red[0] > 200 and red[1] < 60 and min(white) > 200  # the top-left block is now top-right


# ------------------------------------------------------------------------------------------------------- size budget


def test_fit_size_keeps_aspect_stays_within_budget_and_never_upscales() -> None:
    assert fit_size(640, 480, max_pixels=10**6) == (640, 480)
    assert fit_size(1024, 512, max_side=512) == (512, 256)
    for width, height, budget in ((10000, 10000, 802816), (3000, 1000, 50176), (777, 333, 12544)):
        w, h = fit_size(width, height, max_pixels=budget)
        assert w * h <= budget
        assert abs(w / h - width / height) <= 2 * (width / height) / min(w, h)  # within a pixel of the aspect
        assert (w + 1) * (h + 1) > budget  # as large as the budget allows, up to rounding


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_over_budget_image_is_downscaled_once_at_load(tmp_path: Path, fmt: str) -> None:
    # 4000x2000 against a 200 000-pixel budget (a 10000x10000 scan works the same, just slower to write)
    image = Image.new("RGB", (4000, 2000), (255, 255, 255))
    image.paste((0, 0, 255), (0, 0, 2000, 2000))  # left half blue
    path = tmp_path / f"big.{fmt.lower()}"
    image.save(path, format=fmt)
    loaded = open_image(path, max_pixels=200_000)
    assert loaded.size == fit_size(4000, 2000, max_pixels=200_000) == (632, 316)
    left, right = loaded.getpixel((100, 150)), loaded.getpixel((500, 150))
    assert left[2] > 240 and left[0] < 15 and min(right) > 240
    assert normalize_image(image, max_pixels=200_000).size == (632, 316)  # the same size from a PIL image
    assert open_image(path).size == (4000, 2000)  # no budget, no resize


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bilevel_png(path: Path, width: int, height: int, rows: int | None = None) -> Path:
    """A 1-bit greyscale PNG, top half white, bottom half black, written without holding its pixels in memory: a
    15000x13000 one is ~40 KB on disk. `rows`: write only that many rows (a header claiming more than the data)."""
    white, black = b"\x00" + b"\xff" * ((width + 7) // 8), b"\x00" + bytes((width + 7) // 8)
    count = height if rows is None else rows
    compressor = zlib.compressobj(9)
    top = min(count, height // 2)
    data = compressor.compress(white * top) + compressor.compress(black * (count - top))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale, no interlace
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
    path.write_bytes(png + _png_chunk(b"IDAT", data + compressor.flush()) + _png_chunk(b"IEND", b""))
    return path


def test_huge_image_within_the_decode_bound_loads_without_a_bomb_warning(tmp_path: Path) -> None:
    """A 195-megapixel scan (Pillow's guard refuses anything above ~179 MP) loads and is downscaled once, through
    open_image, core.data.records's image check and mathvista's dataset builder, without a DecompressionBombWarning;
    Pillow's
    own guard is left as it was for everyone else."""
    path = _bilevel_png(tmp_path / "scan.png", 15000, 13000)
    guard = Image.MAX_IMAGE_PIXELS
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        loaded = open_image(path, max_pixels=1_000_000)
        [info] = inspect_images([{"id": "scan", "image": path.name}], tmp_path)
        mathvista = load_recipe_module("mathvista", "data")
        stored, problem = mathvista._prepare_image(None, path.name, tmp_path, 512)
    assert time.perf_counter() - started < 10  # ~2 s here; the test's cost, not a property of the code
    assert Image.MAX_IMAGE_PIXELS == guard
    assert loaded.size == fit_size(15000, 13000, max_pixels=1_000_000) and loaded.mode == "RGB"
    assert loaded.getpixel((500, 10)) == (255, 255, 255) and loaded.getpixel((500, loaded.height - 10)) == (0, 0, 0)
    assert info.problem is None and info.size == (15000, 13000)
    assert problem is None and Image.open(io.BytesIO(stored["bytes"])).size == fit_size(15000, 13000, max_side=512)


def test_image_above_the_decode_bound_is_refused_naming_file_size_and_bound(tmp_path: Path) -> None:
    """A header claiming more than MAX_DECODE_PIXELS (1 gigapixel) is refused before any pixel is decoded, with an
    error that names the file, its size and the bound, in every loader."""
    path = _bilevel_png(tmp_path / "bomb.png", 40000, 30000, rows=2)  # 1.2 gigapixels claimed, a few bytes of data
    assert 40000 * 30000 > MAX_DECODE_PIXELS == 2**30
    with pytest.raises(ImageTooLargeError) as raised:
        open_image(path)
    message = str(raised.value)
    assert str(path) in message and "40000x30000" in message and str(MAX_DECODE_PIXELS) in message
    with pytest.raises(ImageTooLargeError, match=r"<\d+ bytes of image data>: 40000x30000"):
        open_image(path.read_bytes())
    [info] = inspect_images([{"id": "bomb", "image": path.name}], tmp_path)
    assert info.size is None and "ImageTooLargeError" in info.problem and "40000x30000" in info.problem
    mathvista = load_recipe_module("mathvista", "data")
    stored, problem = mathvista._prepare_image(None, path.name, tmp_path, 512)
    assert stored is None and str(path) in problem and "40000x30000" in problem


def test_mathvista_stores_a_big_jpeg_as_open_image_decodes_it(tmp_path: Path) -> None:
    """mathvista's dataset builder decodes through core.data.images (JPEG draft mode far above `image_size`), so its
    stored
    image is exactly open_image's, not a full-size decode downscaled afterwards."""
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)).resize((2000, 1500))
    photo.save(tmp_path / "photo.jpg", quality=90)
    stored, problem = load_recipe_module("mathvista", "data")._prepare_image(None, "photo.jpg", tmp_path, 400)
    expected = io.BytesIO()
    open_image(tmp_path / "photo.jpg", max_side=400).save(expected, format="JPEG", quality=95)
    assert problem is None and stored["bytes"] == expected.getvalue()


def test_grey_images_downscale_to_the_same_pixels_as_through_rgb() -> None:
    """normalize_image downscales "1"/"L" before widening to RGB (a quarter of the memory): the same pixels."""
    grey = Image.fromarray(np.random.default_rng(0).integers(0, 256, (301, 407), dtype=np.uint8), mode="L")
    size = fit_size(407, 301, max_side=100)
    for image in (grey, grey.convert("1")):
        through_rgb = image.convert("RGB").resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        assert np.array_equal(np.asarray(normalize_image(image, max_side=100)), np.asarray(through_rgb))


def test_max_image_pixels_reads_the_processor_budget() -> None:
    from transformers import Gemma3ImageProcessor, Qwen2VLImageProcessor

    assert max_image_pixels(Qwen2VLImageProcessor(min_pixels=3136, max_pixels=802816)) == 802816
    assert max_image_pixels(Gemma3ImageProcessor(size={"height": 896, "width": 896})) == 4 * 896 * 896
    assert max_image_pixels(None) is None
    assert DEFAULT_MAX_PIXELS == 4096 * 4096


# ------------------------------------------------------------------------------------------------ dataset column


def test_dataset_column_decodes_through_normalize_image_and_survives_select_and_disk(tmp_path: Path) -> None:
    rows = [
        {"id": "g16", "image": gradient_16bit(tmp_path / "g16.png")},
        {"id": "rgba", "image": transparent_with_black_square(tmp_path / "rgba.png")},
        {"id": "big", "image": gradient_16bit(tmp_path / "wide.png", width=2000, height=100)},
    ]
    dataset = to_dataset(rows, max_pixels=50_000)
    assert isinstance(dataset.features["image"], NormalizedImage)
    assert dataset.data.column("image").to_pylist()[0] == {"bytes": None, "path": str(tmp_path / "g16.png")}

    def check(ds: datasets.Dataset) -> None:
        by_id = {row["id"]: row["image"] for row in ds}
        assert len(np.unique(np.asarray(by_id["g16"])[..., 0])) > 200
        assert by_id["rgba"].getpixel((0, 0)) == (255, 255, 255)
        assert by_id["big"].size == fit_size(2000, 100, max_pixels=50_000)

    check(dataset)
    check(dataset.shuffle(seed=0).select(range(3)))
    dataset.save_to_disk(str(tmp_path / "saved"))
    check(datasets.load_from_disk(str(tmp_path / "saved")))

    # bytes decode the same way as paths
    buffer = io.BytesIO()
    Image.open(tmp_path / "rgba.png").save(buffer, format="PNG")
    decoded = NormalizedImage().decode_example({"bytes": buffer.getvalue(), "path": None})
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
