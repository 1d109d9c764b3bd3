"""How close a rendered image is to the reference: five pixel-level components and their weighted mean.

Normalisation (done first, by `normalise_pair`)
-----------------------------------------------
* Colour space: both images go through the same `core.data.images.normalize_image` that loaded the reference into the
  dataset: 8-bit RGB, transparency (RGBA, LA, P or L/RGB with a transparent colour) composited over WHITE,
  matplotlib's default figure background, so a transparent PNG of a chart matches the opaque one and a reference
  with a transparent background scores exactly 1 against its own rendering.
* Size: the reference is downscaled (never upscaled), keeping its aspect ratio, so that its long side is at most
  `WORKING_SIZE` (256 px); the generated image is then resized to exactly that size (bilinear), whatever its own
  size or aspect ratio. A generated image of the wrong size is therefore not rejected, only compared after
  stretching; a wrong aspect ratio still costs through the distortion it causes.

Components (each in [0, 1], 1 = identical); x, y are the normalised reference / generated images
----------------------------------------------------------------------------------------------
* `ssim`: mean structural similarity on grayscale (ITU-R 601 luma, 0..255) with an 11x11 Gaussian window
  (sigma 1.5) and the standard constants C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2 (Wang et al. 2004):
  SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)), averaged over
  the valid window positions, then clipped to [0, 1] (negative SSIM, anti-correlated structure, counts as 0).
  Images smaller than the window use a window as large as their short side allows.
* `mse`: 1 / (1 + MSE / MSE_SCALE) with MSE over all RGB values on the 0..255 scale and MSE_SCALE = 1000 (an RMS
  error of ~32 grey levels gives 0.5). Chosen over 1 - MSE / 255^2, which stays above 0.9 for nearly any two charts
  on white backgrounds and so hardly separates good from bad attempts.
* `cosine`: cosine similarity of the two flattened RGB vectors after subtracting each image's mean (Pearson
  correlation), mapped from [-1, 1] to [0, 1] by (cos + 1) / 2. Without centring, any two mostly-white images score
  ~1. A constant image has no direction: two constant images score 1 if their means agree within 1 grey level, else
  0; a constant image against a non-constant one scores 0.5 (uncorrelated).
* `histogram`: per-channel 32-bin colour histograms normalised to sum 1, histogram intersection sum(min(h_x, h_y)),
  averaged over R, G, B.
* `edge`: Sobel gradient magnitude of the grayscale image (0..1 scale) thresholded at EDGE_THRESHOLD = 0.5 (a step
  of ~1/8 of the grey range); edge maps compared by F1 with a 1-pixel tolerance (precision = share of generated
  edge pixels within 1 px of a reference edge, recall the converse, F1 = 2PR / (P + R)). Both edge-free: 1; only
  one edge-free: 0.

`combined` = sum(w_i * c_i) / sum(w_i) over the components with `SimilarityWeights` (defaults sum to 1; any
non-negative weights with a positive sum are accepted and renormalised).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from core.data.images import normalize_image

__all__ = [
    "COMPONENTS",
    "EDGE_THRESHOLD",
    "MSE_SCALE",
    "WORKING_SIZE",
    "SimilarityWeights",
    "cosine_similarity",
    "edge_similarity",
    "histogram_similarity",
    "image_similarity",
    "mse_similarity",
    "normalise_pair",
    "ssim",
]

COMPONENTS = ("ssim", "mse", "cosine", "histogram", "edge")
WORKING_SIZE = 256
MSE_SCALE = 1000.0
EDGE_THRESHOLD = 0.5
HISTOGRAM_BINS = 32
_SSIM_SIGMA = 1.5
_SSIM_WINDOW = 11
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


@dataclass
class SimilarityWeights:
    """Weight of each component in `combined`; defaults sum to 1."""

    ssim: float = 0.3
    mse: float = 0.15
    cosine: float = 0.15
    histogram: float = 0.2
    edge: float = 0.2

    def __post_init__(self) -> None:
        values = asdict(self)
        bad = {name: value for name, value in values.items() if not (float(value) >= 0.0 and np.isfinite(value))}
        if bad:
            raise ValueError(f"similarity weights must be finite and >= 0, got {bad}")
        if sum(values.values()) <= 0:
            raise ValueError("at least one similarity weight must be positive")

    def as_dict(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in COMPONENTS}


# ----------------------------------------------------------------------------------------------------- normalisation


def normalise_pair(reference: Image.Image, generated: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 HxWx3 arrays (0..255) of the same size: the reference's, capped at WORKING_SIZE."""
    reference, generated = normalize_image(reference), normalize_image(generated)
    width, height = reference.size
    if width < 1 or height < 1:
        raise ValueError(f"reference image has no pixels ({width}x{height})")
    scale = min(1.0, WORKING_SIZE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != reference.size:
        reference = reference.resize(size, Image.Resampling.BILINEAR)
    if generated.size != size:
        generated = generated.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(reference, dtype=np.float64), np.asarray(generated, dtype=np.float64)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


# -------------------------------------------------------------------------------------------------------- components


def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    kernel = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return kernel / kernel.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 'valid' 2-D filtering with a 1-D kernel (rows then columns), by sliding windows."""
    size = kernel.size
    rows = np.lib.stride_tricks.sliding_window_view(image, size, axis=1) @ kernel
    return np.lib.stride_tricks.sliding_window_view(rows, size, axis=0) @ kernel


def ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Mean SSIM of two same-size grayscale arrays on the 0..255 scale, clipped to [0, 1]."""
    window = min(_SSIM_WINDOW, x.shape[0], x.shape[1])
    kernel = _gaussian_kernel(window, _SSIM_SIGMA * window / _SSIM_WINDOW)
    mu_x, mu_y = _filter_valid(x, kernel), _filter_valid(y, kernel)
    sigma_xx = _filter_valid(x * x, kernel) - mu_x**2
    sigma_yy = _filter_valid(y * y, kernel) - mu_y**2
    sigma_xy = _filter_valid(x * y, kernel) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + _C1) * (2 * sigma_xy + _C2)
    denominator = (mu_x**2 + mu_y**2 + _C1) * (sigma_xx + sigma_yy + _C2)
    return float(np.clip(np.mean(numerator / denominator), 0.0, 1.0))


def mse_similarity(x: np.ndarray, y: np.ndarray) -> float:
    """1 / (1 + MSE / MSE_SCALE) on 0..255 values."""
    mse = float(np.mean((x - y) ** 2))
    return 1.0 / (1.0 + mse / MSE_SCALE)


def cosine_similarity(x: np.ndarray, y: np.ndarray) -> float:
    """(cos(x - mean x, y - mean y) + 1) / 2 of the flattened pixels; constant images handled as documented."""
    a, b = x.ravel() - x.mean(), y.ravel() - y.mean()
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    eps = 1e-9
    if norm_a <= eps and norm_b <= eps:
        return 1.0 if abs(float(x.mean()) - float(y.mean())) <= 1.0 else 0.0
    if norm_a <= eps or norm_b <= eps:
        return 0.5
    cosine = float(np.dot(a, b) / (norm_a * norm_b))
    return float(np.clip((cosine + 1.0) / 2.0, 0.0, 1.0))


def histogram_similarity(x: np.ndarray, y: np.ndarray, bins: int = HISTOGRAM_BINS) -> float:
    """Mean over R, G, B of the intersection of the normalised `bins`-bin histograms."""
    scores = []
    for channel in range(3):
        hist_x, _ = np.histogram(x[..., channel], bins=bins, range=(0.0, 256.0))
        hist_y, _ = np.histogram(y[..., channel], bins=bins, range=(0.0, 256.0))
        scores.append(np.minimum(hist_x / hist_x.sum(), hist_y / hist_y.sum()).sum())
    return float(np.clip(np.mean(scores), 0.0, 1.0))


def _sobel_edges(gray: np.ndarray, threshold: float = EDGE_THRESHOLD) -> np.ndarray:
    """Boolean edge map: Sobel magnitude of the 0..1 grayscale image above `threshold` (edge-padded borders)."""
    g = np.pad(gray / 255.0, 1, mode="edge")
    gx = (g[:-2, 2:] + 2 * g[1:-1, 2:] + g[2:, 2:]) - (g[:-2, :-2] + 2 * g[1:-1, :-2] + g[2:, :-2])
    gy = (g[2:, :-2] + 2 * g[2:, 1:-1] + g[2:, 2:]) - (g[:-2, :-2] + 2 * g[:-2, 1:-1] + g[:-2, 2:])
    return np.hypot(gx, gy) > threshold


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation (1-pixel tolerance)."""
    padded = np.pad(mask, 1)
    height, width = mask.shape
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy : dy + height, dx : dx + width]
    return out


def edge_similarity(x: np.ndarray, y: np.ndarray) -> float:
    """F1 of the two Sobel edge maps with a 1-pixel tolerance (inputs: same-size grayscale, 0..255)."""
    edges_x, edges_y = _sobel_edges(x), _sobel_edges(y)
    count_x, count_y = int(edges_x.sum()), int(edges_y.sum())
    if count_x == 0 and count_y == 0:
        return 1.0
    if count_x == 0 or count_y == 0:
        return 0.0
    precision = float((edges_y & _dilate(edges_x)).sum()) / count_y
    recall = float((edges_x & _dilate(edges_y)).sum()) / count_x
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# ------------------------------------------------------------------------------------------------------------- total


def image_similarity(
    reference: Image.Image, generated: Image.Image, weights: SimilarityWeights | None = None
) -> dict[str, float]:
    """Every component (`ssim`, `mse`, `cosine`, `histogram`, `edge`) and their weighted mean `combined`.

    Components with weight 0 are still computed and returned (they are logged), they only do not enter `combined`.
    """
    weights = weights or SimilarityWeights()
    w = weights.as_dict()
    x, y = normalise_pair(reference, generated)
    gray_x, gray_y = _gray(x), _gray(y)
    scores = {
        "ssim": ssim(gray_x, gray_y),
        "mse": mse_similarity(x, y),
        "cosine": cosine_similarity(x, y),
        "histogram": histogram_similarity(x, y),
        "edge": edge_similarity(gray_x, gray_y),
    }
    total = sum(w.values())
    scores["combined"] = float(sum(w[name] * scores[name] for name in COMPONENTS) / total)
    return scores
