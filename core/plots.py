"""Reward curves from a run's logs: `python -m core.plots RUN_DIR` (also written at the end of every training),
and grids of the images a Qwen-Image recipe rendered during training (`SampleGridLog`).

The curves read the `log_history` that the HF Trainer keeps in `trainer_state.json` (the run folder's, else its
newest checkpoint's), so they work for finished, stopped and resumed runs alike.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from PIL import Image

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="+", help="training output folder(s)")
    for run_dir in parser.parse_args().run_dir:
        print(plot_run(run_dir))


if __name__ == "__main__":
    main()
