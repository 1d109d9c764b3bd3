"""The evaluation pictures a person learns from (issue 15, item 13), checked on the PNG each recipe writes and on
the captions it draws: grounding's predicted box / point and "nothing parsed" banner with a legend, mathvista's
example grid, mmmg's prompt and judged checklist, and the shared caption wrapping of core.tools.plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from core.tools.plots import (
    ELLIPSIS,
    RIGHT,
    WRONG,
    CaptionLine,
    caption_font,
    panel,
    panel_sheet,
    text_width,
    wrap_text,
)
from tests.helpers import load_recipe_module

G = load_recipe_module("grounding", "evaluate")
MV = load_recipe_module("mathvista", "evaluate")
MM = load_recipe_module("mmmg", "evaluate")

SKY = (200, 220, 250)  # background of the test images: none of the drawing colours
LONG = (
    "Look at the chart and tell how many of the bars are taller than the one labelled 'b', counting only the "
    "blue bars: /a/really/long/path/without/any/spaces/in/it/at/all/that/cannot/fit/on/one/line.png and more words"
)


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def count(region: np.ndarray, colour: tuple[int, int, int]) -> int:
    """Pixels of exactly `colour` (boxes, swatches, frames: drawn without anti-aliasing)."""
    return int((region == np.array(colour)).all(axis=-1).sum())


def tinted(region: np.ndarray, channel: int) -> int:
    """Pixels of anti-aliased text in a primary colour: that channel 40 above both others (0 red, 1 green)."""
    rgb = region.astype(int)
    others = np.delete(rgb, channel, axis=-1).max(axis=-1)
    return int((rgb[..., channel] - others > 40).sum())


def picture(size: tuple[int, int], colour: tuple[int, int, int] = SKY) -> Image.Image:
    return Image.new("RGB", size, colour)


def wrapped(lines: list[CaptionLine], width: int) -> list[str]:
    """The caption's lines as `core.tools.plots.render_caption` draws them in a panel of `width` (3-pixel margins)."""
    font = caption_font()
    return [text for line in lines for text in wrap_text(line.text, font, width - 6, line.max_lines)]


def assert_gutters_blank(image: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> None:
    """Nothing drawn between or beside the panels: no caption runs past its panel's width."""
    for x0, y0, x1, y1 in boxes:
        assert (image[y0:y1, x1 : x1 + 6] == 255).all(), f"ink right of the panel at {x0, y0}"
        assert (image[y0:y1, max(0, x0 - 6) : x0] == 255).all(), f"ink left of the panel at {x0, y0}"


# ------------------------------------------------------------------------------------------------ core.tools.plots
def test_wrap_text_keeps_every_line_within_the_width_and_every_word():
    font = caption_font()
    lines = wrap_text(LONG, font, 150)
    assert len(lines) > 5
    assert all(text_width(line, font) <= 150 for line in lines)
    assert "".join(lines).replace(" ", "") == LONG.replace(" ", "")  # nothing lost, the long path broken up


def test_wrap_text_cuts_at_max_lines_with_an_ellipsis():
    font = caption_font()
    lines = wrap_text(LONG, font, 150, max_lines=2)
    assert len(lines) == 2 and lines[-1].endswith(ELLIPSIS)
    assert all(text_width(line, font) <= 150 for line in lines)
    assert wrap_text("short", font, 150, max_lines=2) == ["short"]


def test_panel_sheet_places_panels_in_rows_under_the_title_and_legend():
    panels = [panel(picture((40, 20)), [CaptionLine(LONG, max_lines=k)], width=120) for k in (1, 4, 2)]
    sheet, boxes = panel_sheet(panels, columns=2, title="a title", legend=[("right", RIGHT)])
    assert len(boxes) == 3
    assert boxes[0][1] == boxes[1][1] > 20  # first row under the title and legend
    assert boxes[1][3] > boxes[0][3]  # the 4-line caption makes a taller panel
    assert boxes[2][1] >= max(boxes[0][3], boxes[1][3])  # second row under the taller panel of the first
    assert sheet.width == 2 * 120 + 3 * 6
    image = np.asarray(sheet)
    assert count(image[: boxes[0][1]], RIGHT) > 20  # the legend's swatch
    assert_gutters_blank(image, boxes)


# ------------------------------------------------------------------------------------------------ grounding
def grounding_record(prediction, solution=(30, 20, 90, 70), completion="", hit=0.0, iou=None) -> dict:
    return {
        "id": "x",
        "problem": "the small red circle near the top left corner of the picture, " * 3,
        "completion": completion,
        "prediction": None if prediction is None else list(prediction),
        "solution": list(solution),
        "point_in_box": hit,
        "iou": iou,
    }


def image_region(image: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int], cell: int = 256):
    """The drawn image inside a grounding panel (fitted to the cell's width, centred) and its scale."""
    scale = cell / max(size)
    width, height = round(size[0] * scale), round(size[1] * scale)
    x = box[0] + (cell - width) // 2
    return image[box[1] : box[1] + height, x : x + width], scale


def test_grounding_grid_draws_the_predicted_box_point_and_nothing_parsed(tmp_path):
    size = (200, 100)
    records = [
        grounding_record([100, 40, 180, 90], completion="[100, 40, 180, 90]", iou=0.0),
        grounding_record([150, 30], completion="(150, 30)"),
        grounding_record(None, solution=(30, 0, 90, 20), completion="It is the round thing on the left."),
    ]
    path = tmp_path / "predictions.png"
    boxes = G.draw_grid(records, [picture(size)] * 3, path)
    image = pixels(path)
    assert len(boxes) == 3
    assert_gutters_blank(image, boxes)

    box_region, scale = image_region(image, boxes[0], size)
    x0, y0, x1, y1 = (round(v * scale) for v in (100, 40, 180, 90))
    inside = box_region[y0 - 2 : y1 + 3, x0 - 2 : x1 + 3]
    assert count(inside, G.PRED_COLOUR) > 2 * ((x1 - x0) + (y1 - y0))  # the rectangle's outline, 2 px wide
    assert count(box_region, G.PRED_COLOUR) == count(inside, G.PRED_COLOUR)  # and nowhere else
    assert count(box_region, G.TRUE_COLOUR) > 0  # the true box too

    point_region, scale = image_region(image, boxes[1], size)
    px, py = round(150 * scale), round(30 * scale)
    assert count(point_region[py - 10 : py + 11, px - 10 : px + 11], G.PRED_COLOUR) > 20
    assert count(point_region, G.NOTHING_COLOUR) == 0

    none_region, _ = image_region(image, boxes[2], size)
    assert count(none_region, G.PRED_COLOUR) == 0  # nothing parsed: no predicted mark ...
    banner, below = none_region[: G.BANNER], none_region[G.BANNER :]
    assert count(banner, G.NOTHING_COLOUR) > 0.7 * banner.shape[0] * banner.shape[1]  # ... but the grey banner
    assert count(banner, G.TRUE_COLOUR) == 0  # above the image, not over it:
    assert count(below[:2], G.TRUE_COLOUR) > 2 * 60  # the true box on the image's top edge shows in full

    legend = image[: boxes[0][1]]
    for colour in (G.TRUE_COLOUR, G.PRED_COLOUR, G.NOTHING_COLOUR):
        assert count(legend, colour) > 20


def test_grounding_caption_says_nothing_parsed_and_shows_the_completion():
    text = wrapped(G.caption(grounding_record(None, completion="the round thing"), (200, 100)), 256)
    joined = " ".join(text)
    assert "nothing parsed" in joined and "the round thing" in joined
    assert "point in box: no" in joined and "IoU: n/a" in joined
    font = caption_font()
    assert all(text_width(line, font) <= 250 for line in text)
    parsed = " ".join(wrapped(G.caption(grounding_record([500, 500, 600, 600], iou=0.0), (200, 100)), 256))
    assert "pred: [500, 500, 600, 600] (outside the image)" in parsed and "nothing parsed" not in parsed


# ------------------------------------------------------------------------------------------------ mathvista
def mathvista_row(pid: str, answer: str, **extra) -> dict:
    base = {
        "pid": pid,
        "question": LONG,
        "answer": answer,
        "choices": None,
        "precision": None,
        "unit": None,
        "question_type": "free_form",
        "answer_type": "integer",
        "task": "figure question answering",
        "grade": "elementary school",
    }
    return {**base, **extra}


def test_mathvista_example_grid_has_one_framed_panel_per_example(tmp_path):
    cfg = MV.RewardConfig()
    choices = {"question_type": "multi_choice", "answer_type": "text", "choices": ["3", "4.5", "6"]}
    records = [
        MV.score(mathvista_row("1", "14"), "<SOLUTION>14.0</SOLUTION>", cfg),
        MV.score(mathvista_row("2", "4.5", **choices), "<SOLUTION>B</SOLUTION>", cfg),
        MV.score(mathvista_row("3", "3"), "no solution block here", cfg),
    ]
    assert [r["correct"] for r in records] == [True, True, False]
    colours = [(250, 200, 0), (0, 200, 200), (120, 0, 120)]
    path = tmp_path / "examples.png"
    boxes = MV.draw_examples(records, [picture((160, 120), c) for c in colours], path)
    image = pixels(path)
    assert len(boxes) == 3
    assert_gutters_blank(image, boxes)
    for i, ((x0, y0, x1, y1), record) in enumerate(zip(boxes, records, strict=True)):
        frame = RIGHT if record["correct"] else WRONG
        assert tuple(image[y0, x0]) == frame and tuple(image[y1 - 1, x1 - 1]) == frame
        assert count(image[y0:y1, x0:x1], colours[i]) > 100 * 100  # its own image, in its own panel only
        assert count(image[y0:y1, x0:x1], colours[(i + 1) % 3]) == 0

    caption = " ".join(wrapped(MV.example_caption(records[1]), 250))
    assert caption.startswith("right") and "(A) 3" in caption and "answer: 4.5" in caption
    assert "prediction: 'B' read as '4.5'" in caption
    wrong = " ".join(wrapped(MV.example_caption(records[2]), 250))
    assert wrong.startswith("wrong") and "no single solution block in 'no solution block here'" in wrong


def test_mathvista_bar_label_shows_a_zero_accuracy_group():
    assert MV.bar_label({"accuracy": 0.0, "count": 5}) == "0.00 (0/5)"
    assert MV.bar_label({"accuracy": 2 / 3, "count": 3}) == "0.67 (2/3)"


# ------------------------------------------------------------------------------------------------ mmmg
KG = {
    "elements": ["plant", "sunlight", "water", "photosynthesis"],
    "dependencies": ["Requires(photosynthesis, sunlight)", "Requires(photosynthesis, water)"],
}


def mmmg_record(judged: dict[str, bool] | None, score: float | None) -> dict:
    return {
        "id": "x",
        "level": "primaryschool",
        "discipline": "Biology",
        "text": "Draw how a plant makes food from sunlight, " + LONG,
        "fidelity": score,
        "region_count": None,
        "score": score,
        "judged": judged,
    }


def test_mmmg_caption_lists_the_prompt_and_each_judged_key_with_yes_or_no():
    judged = {"plant": True, "sunlight": False, "water": True, "photosynthesis": False}
    judged |= {"Requires(photosynthesis, sunlight)": False, "Requires(photosynthesis, water)": True}
    lines = MM.caption(mmmg_record(judged, 0.4), KG)
    assert lines[0].text == "primaryschool / Biology: score 0.40"
    assert lines[1].text.startswith("prompt: Draw how a plant makes food from sunlight")
    checklist = {line.text: line.colour for line in lines[2:]}
    for key, yes in judged.items():
        assert checklist[f"{'yes' if yes else 'no'}: {key}"] == (RIGHT if yes else WRONG)
    assert list(checklist)[0] == "elements:" and "dependencies:" in checklist
    font = caption_font()
    assert all(text_width(line, font) <= 250 for line in wrapped(lines, 256))
    unscored = [line.text for line in MM.caption(mmmg_record(None, None), KG)]
    assert unscored[0].endswith("not scored") and "judge: no reply" in unscored[-1]


def test_mmmg_grid_shows_why_two_look_alike_images_score_differently(tmp_path):
    yes = dict.fromkeys([*KG["elements"], *KG["dependencies"]], True)
    no = dict.fromkeys(yes, False)
    same = picture((64, 64), (240, 240, 220))
    ImageDraw.Draw(same).rectangle([20, 20, 44, 50], fill=(30, 60, 200))
    path = tmp_path / "images.png"
    boxes = MM.draw_grid([mmmg_record(yes, 1.0), mmmg_record(no, 0.0)], [same, same], [KG, KG], path)
    image = pixels(path)
    assert len(boxes) == 2
    assert_gutters_blank(image, boxes)
    captions = [image[y0 + 256 : y1, x0:x1] for x0, y0, x1, y1 in boxes]  # under the 256-pixel image
    assert tinted(captions[0], 1) > 200 and tinted(captions[0], 0) == 0  # all "yes": green lines only
    assert tinted(captions[1], 0) > 200 and tinted(captions[1], 1) == 0  # all "no": red lines only
    assert captions[0].shape[0] > 12 * 12  # score, prompt, 2 headings, 6 keys: nothing cut off


@pytest.mark.parametrize("recipe", ["grounding", "mathvista", "mmmg"])
def test_readme_describes_the_evaluation_picture(recipe):
    readme = (Path(__file__).resolve().parents[1] / "recipes" / recipe / "README.md").read_text()
    expected = {"grounding": '"nothing parsed"', "mathvista": "`eval/examples.png`", "mmmg": "yes / no"}[recipe]
    assert expected in readme
