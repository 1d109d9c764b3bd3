"""Image files that a plain `convert("RGB")` gets wrong, shared by the tests of core.data.images and the recipes' data.

Nothing here imports the project, so the recipe data tests that use these files run (and fail) on code without
core.data.images too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def gradient_16bit(path: Path, width: int = 1024, height: int = 8) -> Path:
    """A 16-bit greyscale PNG whose columns run 0 .. 65535 (Pillow reads it back as mode "I;16")."""
    values = np.tile(np.linspace(0, 65535, width).round().astype(np.uint16), (height, 1))
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode == "I;16"
    return path


def transparent_with_black_square(path: Path, size: tuple[int, int] = (60, 40)) -> Path:
    """RGBA PNG: fully transparent background (RGB under it black), an opaque black square at [10, 20) x [10, 20)."""
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste((0, 0, 0, 255), (10, 10, 20, 20))
    image.save(path)
    return path


def palette_with_transparency(path: Path) -> Path:
    """P-mode PNG: index 0 (black in the palette) is transparent, index 1 (red) fills [5, 15) x [5, 15)."""
    image = Image.new("P", (30, 20), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    image.paste(1, (5, 5, 15, 15))
    image.save(path, transparency=0)
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """A 40x20 JPEG tagged Orientation 6 (rotate 90 CW to view), red block in the stored image's top-left corner."""
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(path, exif=exif, quality=95)
    return path
