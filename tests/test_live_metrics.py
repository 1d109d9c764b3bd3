"""Live training metrics (issue 14, item 6): real configs log to TensorBoard, and the Qwen-Image recipes write grids of
the images the policy's completions rendered (`<output_dir>/samples/step-XXXXX.png` + `.json`, and TensorBoard's
`samples/rendered` when it is a report_to target)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from PIL import Image

from core.tools.plots import SAMPLES_DIR, SampleGridLog, image_grid, tensorboard_writer
from tests.helpers import RECIPES_DIR, REPO_ROOT, load_recipe_module, subprocess_env

RECIPES = sorted(p.name for p in RECIPES_DIR.iterdir() if (p / "config.yaml").is_file())
PAD = 2


def test_real_configs_log_to_tensorboard_and_smoke_configs_to_nothing() -> None:
    for recipe in RECIPES:
        assert yaml.safe_load((RECIPES_DIR / recipe / "config.yaml").read_text())["report_to"] == "tensorboard"
        assert yaml.safe_load((RECIPES_DIR / recipe / "config_smoke.yaml").read_text())["report_to"] == "none"
    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(Requirement(d).name == "tensorboard" for d in dependencies)  # a base dependency, not an extra
    import tensorboard  # noqa: F401  (and installed here)


def test_image_grid_sizes_and_placement() -> None:
    red, blue = Image.new("RGB", (64, 32), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    grid = image_grid([[red, blue, blue], [blue]])
    cell = 64  # the largest side of any image
    assert grid.size == (3 * cell + 4 * PAD, 2 * cell + 3 * PAD)
    assert grid.getpixel((PAD + 1, PAD + cell // 2)) == (255, 0, 0)  # the wide image centred vertically
    assert grid.getpixel((PAD + 1, PAD + 1)) == (255, 255, 255)
    assert grid.getpixel((2 * PAD + cell + cell // 2, PAD + cell // 2)) == (0, 0, 255)  # the small one scaled up
    assert image_grid([[Image.new("RGB", (1024, 512))]]).size == (256 + 2 * PAD, 256 + 2 * PAD)  # max_cell


def test_sample_grid_log_is_due_once_per_block_of_steps() -> None:
    log = SampleGridLog(every=3)
    due = []
    for step in (1, 2, 3, 4, 5, 7, 9, 10):  # generation steps (steps_per_generation may skip some)
        if log.due(step):
            due.append(step)
            log.last_step = step
    assert due == [1, 3, 7, 9]
    every_step = SampleGridLog(every=1)
    assert every_step.due(1)
    every_step.last_step = 1
    assert not every_step.due(1) and every_step.due(2)


class FakeWriter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []

    def add_image(self, tag: str, array: Any, step: int, dataformats: str) -> None:
        assert dataformats == "HWC" and array.ndim == 3 and array.shape[2] == 3
        self.calls.append(("image", tag, step))

    def add_text(self, tag: str, text: str, step: int) -> None:
        assert "make it blue" in text and "`a`" in text
        self.calls.append(("text", tag, step))

    def flush(self) -> None:
        self.calls.append(("flush", "", 0))


def test_sample_grid_log_writes_png_json_and_tensorboard(tmp_path) -> None:
    condition = Image.new("RGB", (48, 48), (0, 255, 0))
    rows = [
        {"instruction": "make it blue", "condition": condition, "images": [condition] * 10, "completions": ["a"] * 10},
        {"instruction": "make it red", "condition": None, "images": [condition], "completions": ["b"]},
    ]
    writer = FakeWriter()
    path = SampleGridLog(every=5, max_per_row=3).write(tmp_path, 7, rows, writer)
    assert path == tmp_path / SAMPLES_DIR / "step-00007.png"
    with Image.open(path) as grid:
        assert grid.size == (4 * 48 + 5 * PAD, 2 * 48 + 3 * PAD)  # condition + 3 renders per row, at most
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["step"] == 7 and [r["completions"] for r in record["rows"]] == [["a"] * 3, ["b"]]
    assert [r["condition_image"] for r in record["rows"]] == [True, False]
    assert writer.calls == [("image", "samples/rendered", 7), ("text", "samples/completions", 7), ("flush", "", 0)]


def test_tensorboard_writer_is_the_callbacks() -> None:
    class TensorBoardCallback:
        tb_writer = "writer"

    class Handler:
        callbacks = [object(), TensorBoardCallback()]

    class Trainer:
        callback_handler = Handler()

    assert tensorboard_writer(Trainer()) == "writer"
    assert tensorboard_writer(object()) is None


@pytest.mark.slow
def test_two_step_image_edit_smoke_run_writes_sample_grids_and_a_tensorboard_image(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sample = load_recipe_module("image_edit", "sample").make_sample(tmp_path / "data", 5, num_syn=1)["dataset"]
    out = tmp_path / "run"
    recipe = RECIPES_DIR / "image_edit"
    cmd = [
        sys.executable, str(recipe / "train.py"), "--config", str(recipe / "config_smoke.yaml"),
        "--dataset", str(sample), "--output_dir", str(out), "--disable_tqdm", "true",
        "--max_steps", "2", "--save_strategy", "no", "--log_images_steps", "1", "--report_to", "tensorboard",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    resolved = yaml.safe_load((out / "run_config.yaml").read_text())["ScriptArguments"]
    assert resolved["offload_dit"] and resolved["vae_tiling"] and resolved["vae_slicing"]  # the smoke config's

    pngs = sorted((out / SAMPLES_DIR).glob("*.png"))
    assert [p.name for p in pngs] == ["step-00001.png", "step-00002.png"]
    sizes = {}
    for png in pngs:
        rows = json.loads(png.with_suffix(".json").read_text())["rows"]
        # 4 generations of one prompt per step on one process: one row, the condition image and 4 renders
        assert [len(r["completions"]) for r in rows] == [4] and rows[0]["condition_image"]
        with Image.open(png) as grid:
            width, height = grid.size
        cell = height - 2 * PAD
        assert cell >= 64 and width == 5 * cell + 6 * PAD  # the renders are 64 x 64 (edit_height/edit_width)
        sizes[int(png.stem.split("-")[1])] = (width, height)

    events = list((out / "runs").rglob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0].parent), size_guidance={"images": 0})
    accumulator.Reload()
    assert "samples/rendered" in accumulator.Tags()["images"]
    images = accumulator.Images("samples/rendered")
    assert {e.step: (e.width, e.height) for e in images} == sizes
    assert "train/reward" in accumulator.Tags()["scalars"]  # the trainer's own scalars, same event file
