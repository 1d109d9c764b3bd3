"""Reward curves from a run's logs: `python -m core.tools.plots RUN_DIR` (also written at the end of every training),
grids of the images a Qwen-Image recipe rendered during training (`SampleGridLog`), and the evaluation sheets every
recipe's evaluate.py draws (`panel`, `panel_sheet`: an image with a caption wrapped to its width, in a grid under a
title and a legend).

The curves read the `log_history` that the HF Trainer keeps in `trainer_state.json` (the run folder's, else its
newest checkpoint's), so they work for finished, stopped and resumed runs alike.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PLOT_NAME = "reward_curve.png"
SAMPLES_DIR = "samples"  # <output_dir>/samples/step-XXXXX.png (+ .json)


def find_trainer_state(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    candidates = [run_dir / "trainer_state.json"]
    checkpoints = sorted(
        run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1])
    )
    candidates += checkpoints[::-1]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no trainer_state.json in {run_dir} or its checkpoints: has the run logged a step yet?")


def reward_series(log_history: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """{'reward': (steps, values), 'rewards/<name>/mean': ...} from training log entries."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for entry in log_history:
        if "step" not in entry:
            continue
        for key, value in entry.items():
            if value is None:  # a step where no sample could be scored (e.g. the judge was down): a gap
                continue
            if key == "reward" or (key.startswith("rewards/") and key.endswith("/mean")):
                steps, values = series.setdefault(key, ([], []))
                steps.append(entry["step"])
                values.append(float(value))
    return series


def plot_reward_curves(log_history: list[dict], out_path: str | Path, title: str = "") -> Path:
    series = reward_series(log_history)
    if not series:
        raise ValueError("the logs hold no reward entries (was logging_steps larger than the number of steps?)")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for key in sorted(series, key=lambda k: (k != "reward", k)):
        steps, values = series[key]
        label = "total reward" if key == "reward" else key.removeprefix("rewards/").removesuffix("/mean")
        ax.plot(steps, values, marker="o", markersize=3, linewidth=2.2 if key == "reward" else 1.2, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_title(title or "GRPO rewards per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def plot_run(run_dir: str | Path) -> Path:
    state_path = find_trainer_state(run_dir)
    log_history = json.loads(state_path.read_text())["log_history"]
    return plot_reward_curves(log_history, Path(run_dir) / PLOT_NAME, title=Path(run_dir).resolve().name)


# ---------------------------------------------------------------------------------------------------------------------
# Rendered samples during training
# ---------------------------------------------------------------------------------------------------------------------


def image_grid(
    rows: Sequence[Sequence[Image.Image]],
    cell: int | None = None,
    pad: int = 2,
    max_cell: int = 256,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Images laid out row by row in square cells of `cell` pixels (default: the largest side of any image, at most
    `max_cell`), each scaled to fit its cell with its aspect ratio kept and centred, `pad` pixels between and around
    cells. Size: (columns * cell + (columns + 1) * pad) x (rows * cell + (rows + 1) * pad), columns = longest row."""
    if not rows or not any(rows):
        raise ValueError("image_grid needs at least one image")
    if cell is None:
        cell = min(max_cell, max(max(image.size) for row in rows for image in row))
    columns = max(len(row) for row in rows)
    grid = Image.new(
        "RGB", (columns * cell + (columns + 1) * pad, len(rows) * cell + (len(rows) + 1) * pad), background
    )
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            scale = cell / max(image.size)
            size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
            tile = image.convert("RGB").resize(size, Image.Resampling.LANCZOS) if size != image.size else image
            x = pad + c * (cell + pad) + (cell - size[0]) // 2
            y = pad + r * (cell + pad) + (cell - size[1]) // 2
            grid.paste(tile.convert("RGB"), (x, y))
    return grid


def tensorboard_writer(trainer: Any) -> Any | None:
    """The `SummaryWriter` of the trainer's TensorBoard callback (there when `report_to` includes tensorboard, on the
    process of global rank 0, once training has begun), so images land in the same event files as the scalars."""
    for callback in getattr(getattr(trainer, "callback_handler", None), "callbacks", []):
        if type(callback).__name__ == "TensorBoardCallback" and getattr(callback, "tb_writer", None) is not None:
            return callback.tb_writer
    return None


class SampleGridLog:
    """Grids of rendered training samples, every `every` optimizer steps.

    `due(step)` is true for the first step it is asked about and then for the first step asked about in each later
    block of `every` steps (step // every grew): renders happen only at generation steps (every
    `steps_per_generation` steps), so an exact multiple of `every` may never come by. `write` saves
    `<output_dir>/samples/step-XXXXX.png` (`image_grid` of the rows: the condition image when there is one, then the
    rendered images of the row; at most `max_rows` rows and `max_per_row` rendered images each) and
    `step-XXXXX.json` (per row the instruction and the decoded completions, in the grid's order), and adds the grid
    (`samples/rendered`) and the completions (`samples/completions`, markdown) to a TensorBoard `writer` if given.
    """

    def __init__(self, every: int, max_rows: int = 8, max_per_row: int = 8) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.max_rows, self.max_per_row = every, max_rows, max_per_row
        self.last_step: int | None = None

    def due(self, step: int) -> bool:
        return self.last_step is None or step // self.every > self.last_step // self.every

    def write(self, output_dir: str | Path, step: int, rows: Sequence[dict[str, Any]], writer: Any = None) -> Path:
        """`rows`: dicts with `instruction`, `condition` (an image or None), `images` and `completions` (same
        length). Returns the PNG's path."""
        rows = [
            {**row, "images": list(row["images"])[: self.max_per_row], "completions": list(row["completions"])}
            for row in list(rows)[: self.max_rows]
        ]
        cells = [([row["condition"]] if row.get("condition") is not None else []) + row["images"] for row in rows]
        grid = image_grid(cells)
        folder = Path(output_dir) / SAMPLES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step-{step:05d}.png"
        grid.save(path)
        records = [
            {
                "instruction": row["instruction"],
                "condition_image": row.get("condition") is not None,
                "completions": row["completions"][: self.max_per_row],
            }
            for row in rows
        ]
        path.with_suffix(".json").write_text(json.dumps({"step": step, "rows": records}, indent=1) + "\n")
        if writer is not None:
            writer.add_image("samples/rendered", np.asarray(grid), step, dataformats="HWC")
            text = "\n\n".join(
                f"**{r['instruction']}**\n\n" + "\n".join(f"{i + 1}. `{c}`" for i, c in enumerate(r["completions"]))
                for r in records
            )
            writer.add_text("samples/completions", text, step)
            writer.flush()
        self.last_step = step
        return path


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation sheets: panels of an image with a wrapped caption under it, in a grid under a title and a legend
# ---------------------------------------------------------------------------------------------------------------------

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
BLACK: RGB = (0, 0, 0)
GREY: RGB = (100, 100, 100)
RIGHT: RGB = (0, 140, 0)  # text and frames of a right answer (as video's strip)
WRONG: RGB = (200, 0, 0)
ELLIPSIS = "\u2026"


@dataclass(frozen=True)
class CaptionLine:
    """One paragraph of a caption, in one colour: wrapped to the panel's width, at most `max_lines` lines (the last
    one cut with an ellipsis), so a long question or prompt cannot push the rest of the caption out of sight."""

    text: str
    colour: RGB = BLACK
    max_lines: int | None = None


def caption_font(size: int = 12) -> Font:
    """Pillow's bundled font (scalable where Pillow has FreeType): no font file to find on the machine."""
    return ImageFont.load_default(size)


_MEASURE = ImageDraw.Draw(Image.new("RGB", (1, 1)))


def text_width(text: str, font: Font) -> int:
    """Width in pixels of `text` drawn at x=0, as `ImageDraw.textbbox` measures it (what a reader sees)."""
    return int(_MEASURE.textbbox((0, 0), text, font=font)[2]) if text else 0


def _fit_chars(text: str, font: Font, width: int, suffix: str = "") -> str:
    """The longest prefix of `text` that fits `width` with `suffix` after it (at least one character)."""
    end = len(text)
    while end > 1 and text_width(text[:end] + suffix, font) > width:
        end -= 1
    return text[:end] + suffix


def wrap_text(text: str, font: Font, width: int, max_lines: int | None = None) -> list[str]:
    """`text` in lines no wider than `width` pixels: greedy on words, a word wider than the width broken across
    lines, explicit newlines kept; past `max_lines` the last kept line ends in an ellipsis."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if text_width(candidate, font) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while text_width(word, font) > width:  # a word (a path, a long number) wider than the panel
                piece = _fit_chars(word, font, width)
                lines.append(piece)
                word = word[len(piece) :]
            line = word
        lines.append(line)
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _fit_chars(lines[-1].rstrip(), font, width, ELLIPSIS)
    return lines


def render_caption(lines: Sequence[CaptionLine], width: int, font: Font | None = None, pad: int = 3) -> Image.Image:
    """The caption block: each `CaptionLine` wrapped to `width - 2 * pad` pixels, in its colour, on white."""
    font = font or caption_font()
    wrapped = [
        (text, line.colour) for line in lines for text in wrap_text(line.text, font, width - 2 * pad, line.max_lines)
    ]
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (11, 2)
    line_height = ascent + descent + 2
    block = Image.new("RGB", (width, len(wrapped) * line_height + 2 * pad), "white")
    draw = ImageDraw.Draw(block)
    for i, (text, colour) in enumerate(wrapped):
        draw.text((pad, pad + i * line_height), text, fill=colour, font=font)
    return block


def fit_image(image: Image.Image, width: int, height: int | None = None) -> tuple[Image.Image, float]:
    """`image` in RGB scaled (up or down, aspect kept) to fit `width` x `height` (default: a `width` square), and
    the scale, so a recipe can draw boxes in the image's own coordinates on the scaled copy."""
    height = width if height is None else height
    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    rgb = image.convert("RGB")
    return (rgb.resize(size, Image.Resampling.LANCZOS) if size != rgb.size else rgb.copy()), scale


def panel(
    image: Image.Image | None,
    caption: Sequence[CaptionLine],
    width: int = 256,
    border: RGB | None = None,
    font: Font | None = None,
) -> Image.Image:
    """One example: `image` scaled to fit a `width` square (none: caption only), centred, its caption wrapped to
    the same width right under it, and a 3-pixel `border` round both (e.g. green right / red wrong)."""
    edge = 3 if border is not None else 0
    inner = width - 2 * edge
    thumb = fit_image(image, inner)[0] if image is not None else Image.new("RGB", (inner, 0))
    text = render_caption(caption, inner, font)
    out = Image.new("RGB", (width, thumb.height + text.height + 2 * edge), border or "white")
    out.paste(thumb, (edge + (inner - thumb.width) // 2, edge))
    out.paste(text, (edge, edge + thumb.height))
    return out


def legend_strip(items: Sequence[tuple[str, RGB]], width: int, font: Font | None = None) -> Image.Image:
    """A row (wrapping to more rows when needed) of colour swatches, each followed by its label."""
    font = font or caption_font()
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (11, 2)
    row_h, swatch, gap = ascent + descent + 6, ascent, 14
    placed: list[tuple[int, int, str, RGB]] = []
    x, y = 4, 0
    for label, colour in items:
        item_w = swatch + 4 + text_width(label, font)
        if x > 4 and x + item_w > width - 4:
            x, y = 4, y + row_h
        placed.append((x, y, label, colour))
        x += item_w + gap
    strip = Image.new("RGB", (width, y + row_h), "white")
    draw = ImageDraw.Draw(strip)
    for x, y, label, colour in placed:
        draw.rectangle([x, y + 3, x + swatch, y + 3 + swatch], fill=colour)
        draw.text((x + swatch + 4, y + 3), label, fill=BLACK, font=font)
    return strip


def panel_sheet(
    panels: Sequence[Image.Image],
    columns: int = 4,
    title: str = "",
    legend: Sequence[tuple[str, RGB]] = (),
    pad: int = 6,
) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Panels in a grid, `columns` wide, each row as tall as its tallest panel, under a wrapped `title` and a
    `legend_strip`. Returns the sheet and each panel's box (x0, y0, x1, y1) on it, in order."""
    if not panels:
        panels = [panel(None, [CaptionLine("nothing to show: no examples were evaluated", GREY)])]
    columns = max(1, min(columns, len(panels)))
    cell_w = max(p.width for p in panels)
    width = columns * cell_w + (columns + 1) * pad
    header = [CaptionLine(title)] if title else []
    parts = [render_caption(header, width - 2 * pad, caption_font(14))] if header else []
    if legend:
        parts.append(legend_strip(legend, width - 2 * pad))
    top = pad + sum(part.height for part in parts)
    rows = [panels[i : i + columns] for i in range(0, len(panels), columns)]
    heights = [max(p.height for p in row) for row in rows]
    sheet = Image.new("RGB", (width, top + sum(heights) + len(rows) * pad + pad), "white")
    y = pad
    for part in parts:
        sheet.paste(part, (pad, y))
        y += part.height
    boxes = []
    y = top + pad
    for row, height in zip(rows, heights, strict=True):
        for c, p in enumerate(row):
            x = pad + c * (cell_w + pad)
            sheet.paste(p, (x, y))
            boxes.append((x, y, x + p.width, y + p.height))
        y += height + pad
    return sheet, boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="+", help="training output folder(s)")
    for run_dir in parser.parse_args().run_dir:
        print(plot_run(run_dir))


if __name__ == "__main__":
    main()
