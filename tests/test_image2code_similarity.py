"""image2code similarity: identity, separation of different charts, ranges, size/colour-space normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import load_recipe_module
from PIL import Image

S = load_recipe_module("image2code", "similarity")
D = load_recipe_module("image2code", "data")

BAR = """import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(3, 2.4), dpi=64)
ax.bar(['A', 'B', 'C', 'D'], [3, 7, 2, 5], color={colour!r})
ax.set_title('Sales')
fig.tight_layout()
"""
PIE = """import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(3, 2.4), dpi=64)
ax.pie([10, 20, 30, 40], labels=['A', 'B', 'C', 'D'], colors=['red', 'gold', 'teal', 'navy'])
ax.axis('equal')
"""
LINE = """import matplotlib.pyplot as plt
fig, ax = plt.subplots(figsize=(3, 2.4), dpi=64)
ax.plot([1, 2, 3, 4, 5], [5, 1, 4, 2, 6], color='crimson', marker='o', label='x')
ax.legend()
"""

KEYS = {*S.COMPONENTS, "combined"}


@pytest.fixture(scope="module")
def charts() -> dict[str, Image.Image]:
    return {
        "bar": D.render_code(BAR.format(colour="tab:blue")),
        "bar_orange": D.render_code(BAR.format(colour="tab:orange")),
        "pie": D.render_code(PIE),
        "line": D.render_code(LINE),
    }


def test_identical_scores_one_for_every_component(charts: dict[str, Image.Image]) -> None:
    for image in charts.values():
        scores = S.image_similarity(image, image.copy())
        assert set(scores) == KEYS
        for name, value in scores.items():
            assert value == pytest.approx(1.0, abs=1e-9), name


def test_different_charts_score_clearly_lower(charts: dict[str, Image.Image]) -> None:
    # Measured: bar/pie 0.42, bar/line 0.41, pie/line 0.39 (pairs of random sample charts: 0.34-0.66); the same bar
    # chart recoloured 0.77. Pinned with a margin.
    for a, b in (("bar", "pie"), ("bar", "line"), ("pie", "line")):
        combined = S.image_similarity(charts[a], charts[b])["combined"]
        assert combined < 0.6, (a, b, combined)
    # the same chart in another colour sits in between: closer than a different chart, below identity
    recoloured = S.image_similarity(charts["bar"], charts["bar_orange"])
    other = S.image_similarity(charts["bar"], charts["pie"])
    assert other["combined"] < recoloured["combined"] < 0.99
    assert recoloured["ssim"] > other["ssim"] and recoloured["edge"] > other["edge"]


def test_components_in_unit_interval(charts: dict[str, Image.Image]) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (120, 90, 3), dtype=np.uint8))
    blank = Image.new("RGB", (50, 40), "white")
    black = Image.new("L", (5, 5), 0)  # smaller than the SSIM window, grayscale
    images = [*charts.values(), noise, blank, black]
    for ref in images:
        for gen in images:
            scores = S.image_similarity(ref, gen)
            assert set(scores) == KEYS
            for name, value in scores.items():
                assert 0.0 <= value <= 1.0, (name, value)


def test_size_and_colour_space_normalisation(charts: dict[str, Image.Image]) -> None:
    bar = charts["bar"]
    assert S.image_similarity(bar, bar.convert("RGBA"))["combined"] == pytest.approx(1.0)
    # transparent background composited over white == matplotlib's white figure
    rgba = np.array(bar.convert("RGBA"))
    rgba[(rgba[..., :3] == 255).all(axis=-1), 3] = 0
    assert S.image_similarity(bar, Image.fromarray(rgba, "RGBA"))["combined"] == pytest.approx(1.0)
    bigger = bar.resize((bar.width * 2, bar.height * 2), Image.Resampling.BICUBIC)
    assert S.image_similarity(bar, bigger)["combined"] > 0.9
    assert S.image_similarity(bigger, bar)["combined"] > 0.9
    assert S.image_similarity(bar, bar.convert("P", palette=Image.Palette.ADAPTIVE))["combined"] > 0.9
    big = bar.resize((1000, 800))
    x, y = S.normalise_pair(big, bar)
    assert x.shape == y.shape == (205, 256, 3)  # long side capped at WORKING_SIZE, aspect kept


def test_blank_and_constant_images() -> None:
    white = Image.new("RGB", (64, 48), "white")
    assert S.image_similarity(white, white)["combined"] == pytest.approx(1.0)
    grey = Image.new("RGB", (64, 48), (128, 128, 128))
    scores = S.image_similarity(white, grey)
    assert scores["cosine"] == 0.0 and scores["histogram"] == 0.0 and scores["edge"] == 1.0


def test_weights() -> None:
    assert sum(S.SimilarityWeights().as_dict().values()) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        S.SimilarityWeights(ssim=-0.1)
    with pytest.raises(ValueError):
        S.SimilarityWeights(ssim=0, mse=0, cosine=0, histogram=0, edge=0)
    a = Image.new("RGB", (64, 48), "white")
    b = a.copy()
    b.paste((0, 0, 0), (10, 10, 30, 30))
    only_edge = S.SimilarityWeights(ssim=0, mse=0, cosine=0, histogram=0, edge=2.0)
    scores = S.image_similarity(a, b, only_edge)
    assert scores["combined"] == pytest.approx(scores["edge"])  # renormalised by the weight sum


def test_reference_with_transparent_background_scores_one_against_its_own_rendering(tmp_path) -> None:
    # The figure's background is transparent: the PNG's background pixels are (r, g, b, 0). The reference reaches
    # the reward through the dataset, the candidate as the sandbox's RGBA PNG; both must be flattened the same way.
    import json

    from core.rewards.sandbox import render_code_in_process

    code = BAR.format(colour="tab:green") + "fig.patch.set_alpha(0.0)\nax.patch.set_alpha(0.0)\n"
    rendered = render_code_in_process(code)  # what the sandbox returns: the PNG as written, RGBA
    assert rendered.mode == "RGBA" and rendered.getpixel((0, 0))[3] == 0
    rendered.save(tmp_path / "ref.png")
    record = {"id": "t", "image_path": "ref.png", "reference_code": code}
    (tmp_path / "data.jsonl").write_text(json.dumps(record) + "\n")
    reference = D.build_dataset(tmp_path / "data.jsonl")[0]["image"]
    assert reference.getpixel((0, 0)) == (255, 255, 255)  # matplotlib's white, not the black under alpha 0
    for candidate in (rendered, render_code_in_process(code), D.render_code(code)):
        assert S.image_similarity(reference, candidate)["combined"] == pytest.approx(1.0, abs=1e-9)
