"""Grounding data: build_dataset columns and validation, the synthetic sample generator (sample.py), the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT, load_recipe_module
from image_fixtures import gradient_16bit, palette_with_transparency, transparent_with_black_square
from PIL import Image

from core.data.records import DataError

D = load_recipe_module("grounding", "data")
S = load_recipe_module("grounding", "sample")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    S.make_sample(out, num_samples=30, num_eval=6, seed=0)
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _png(path: Path, size: tuple[int, int] = (100, 80)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 200, 200)).save(path)


# ----------------------------------------------------------------------------------------------------- build_dataset


def test_build_dataset_columns_from_sample(sample: Path) -> None:
    dataset = D.build_dataset(sample / "train.jsonl", sample)
    assert len(dataset) == 24
    columns = {"prompt", "image", "solution", "image_size", "model_image_size", "id", "problem"}
    assert set(dataset.column_names) == columns
    row = dataset[0]
    user = row["prompt"][-1]
    assert user["role"] == "user"
    assert user["content"][0]["type"] == "image"
    assert user["content"][1]["text"] == D.PROMPT_TEMPLATE.format(problem=row["problem"])
    assert "<answer>" in user["content"][1]["text"]
    assert isinstance(row["image"], Image.Image) and row["image"].mode == "RGB"
    assert list(row["image"].size) == row["image_size"]
    assert row["model_image_size"] == row["image_size"]  # no processor: the model sees the original
    assert all(isinstance(v, float) for v in row["solution"]) and len(row["solution"]) == 4
    assert dataset.data.column("image").to_pylist()[0]["bytes"] is None  # lazy: only the path is stored


def test_build_dataset_with_processor_and_system_prompt(sample: Path) -> None:
    from transformers import Qwen2VLImageProcessor

    processor = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056)
    dataset = D.build_dataset(sample / "eval.jsonl", None, processor, system_prompt="You ground phrases.")
    for row in dataset.select_columns(["image_size", "model_image_size", "prompt"]):
        width, height = row["image_size"]
        seen_w, seen_h = row["model_image_size"]
        assert seen_w % 28 == 0 and seen_h % 28 == 0
        assert abs(seen_w - width) <= 14 and abs(seen_h - height) <= 14  # small images are only rounded to 28
        assert row["prompt"][0]["role"] == "system"


def test_dataset_prompt_fits_trl_multimodal_preparation(sample: Path) -> None:
    from trl.data_utils import prepare_multimodal_messages

    row = D.build_dataset(sample / "eval.jsonl", sample)[0]
    messages = prepare_multimodal_messages(row["prompt"], images=[row["image"]])
    assert messages[0]["content"][0]["image"] is row["image"]


def test_build_dataset_accepts_prompt_alias_point_solution_and_json(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    rows = [
        {"id": "p", "image": "a.png", "prompt": "the dot", "solution": [10, 20]},
        {"id": "s", "image": "a.png", "problem": "the box", "solution": "[1, 2, 100, 80]"},
    ]
    (tmp_path / "d.json").write_text(json.dumps({"data": rows}))
    dataset = D.build_dataset(tmp_path / "d.json", tmp_path)
    assert dataset["solution"] == [[10.0, 20.0], [1.0, 2.0, 100.0, 80.0]]
    assert dataset["problem"] == ["the dot", "the box"]


def test_build_dataset_reports_all_problems_together(tmp_path: Path) -> None:
    _png(tmp_path / "imgs" / "ok.png", size=(100, 80))
    (tmp_path / "imgs" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    good = {"image": "imgs/ok.png", "problem": "the red circle", "solution": [10, 10, 50, 50]}
    rows = [
        {"id": "good", **good},
        {**good, "id": "nofile", "image": "imgs/missing.png"},
        {**good, "id": "corrupt", "image": "imgs/corrupt.png"},
        {**good, "id": "inverted", "solution": [50, 10, 10, 50]},
        {**good, "id": "outside", "solution": [10, 10, 120, 50]},
        {**good, "id": "negative", "solution": [-5, 10, 20, 50]},
        {**good, "id": "three", "solution": [1, 2, 3]},
        {**good, "id": "text", "solution": "somewhere"},
        {**good, "id": "empty", "problem": "   "},
        {"id": "noproblem", "image": "imgs/ok.png", "solution": [10, 10, 50, 50]},
        {**good, "id": "good"},
    ]
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as info:
        D.build_dataset(path, tmp_path)
    message = str(info.value)
    problems = info.value.problems
    assert message.startswith(f"{len(problems)} problem(s) in {path}:")
    expected = [
        f"row 1 (id 'nofile'): image 'imgs/missing.png' -> {tmp_path / 'imgs' / 'missing.png'}: file not found",
        "row 2 (id 'corrupt'): image 'imgs/corrupt.png' ->",
        "cannot decode",
        "row 3 (id 'inverted'): bad 'solution' [50, 10, 10, 50]: needs x2 > x1 and y2 > y1",
        "row 4 (id 'outside'): bad 'solution' [10, 10, 120, 50]: outside the image (100x80)",
        "row 5 (id 'negative'): bad 'solution' [-5, 10, 20, 50]: negative coordinate",
        "row 6 (id 'three'): bad 'solution': expected 4 numbers (box) or 2 (point), got 3",
        "row 7 (id 'text'): bad 'solution': expected [x1, y1, x2, y2] or [x, y], got 'somewhere'",
        "row 8 (id 'empty'): missing or empty 'problem'",
        "row 9 (id 'noproblem'): missing or empty 'problem'",
        "duplicate id 'good' in rows 0, 10",
    ]
    for fragment in expected:
        assert fragment in message, fragment
    assert len(problems) == 10


def test_row_images_keep_16bit_levels_and_put_transparency_on_white(tmp_path: Path) -> None:
    files = {
        "g16": (gradient_16bit(tmp_path / "g16.png"), [0, 0, 9, 4]),
        "rgba": (transparent_with_black_square(tmp_path / "rgba.png"), [10, 10, 20, 20]),
        "pal": (palette_with_transparency(tmp_path / "pal.png"), [5, 5, 15, 15]),
    }
    records = [{"id": k, "image": f.name, "problem": "the shape", "solution": box} for k, (f, box) in files.items()]
    rows = {row["id"]: row for row in D.build_dataset(_write_jsonl(tmp_path / "data.jsonl", records))}
    grey = np.asarray(rows["g16"]["image"])
    assert len(np.unique(grey[..., 0])) > 200 and grey[0, 0, 0] == 0 and grey[0, -1, 0] == 255  # was 5 levels
    rgba = rows["rgba"]["image"]
    assert rgba.mode == "RGB" and rgba.getpixel((0, 0)) == (255, 255, 255) and rgba.getpixel((15, 15)) == (0, 0, 0)
    palette = rows["pal"]["image"]
    assert palette.getpixel((0, 0)) == (255, 255, 255) and palette.getpixel((10, 10)) == (255, 0, 0)


def test_over_budget_image_is_downscaled_once_with_consistent_size_columns(tmp_path: Path) -> None:
    from transformers import Qwen2VLImageProcessor

    rewards = load_recipe_module("grounding", "rewards")
    budget = 28 * 28 * 64  # 50 176 pixels: a 1200x600 image is 14x over
    processor = Qwen2VLImageProcessor(min_pixels=3136, max_pixels=budget)
    image = Image.new("RGB", (1200, 600), (255, 255, 255))
    image.paste((0, 0, 0), (300, 150, 600, 300))
    image.save(tmp_path / "big.png")
    records = [{"id": "big", "image": "big.png", "problem": "the black box", "solution": [300, 150, 600, 300]}]
    row = D.build_dataset(_write_jsonl(tmp_path / "data.jsonl", records), None, processor)[0]

    width, height = row["image"].size
    assert width * height <= budget and abs(width / height - 2.0) < 0.02  # downscaled at load, aspect kept
    assert row["image_size"] == [1200, 600]  # the frame of `solution` is the file's
    # model_image_size is what the processor really makes of the LOADED image (its patch grid x 14)
    grid = processor(images=[row["image"]], return_tensors="np")["image_grid_thw"][0]
    assert row["model_image_size"] == [int(grid[2]) * 14, int(grid[1]) * 14]
    # ...so a box the model reads off its own input maps back onto the truth in the file's pixels
    seen = np.asarray(row["image"].resize(tuple(row["model_image_size"]), Image.Resampling.BICUBIC).convert("L"))
    ys, xs = np.nonzero(seen < 128)
    box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
    back = rewards.to_original(box, "pixels_resized", row["image_size"], row["model_image_size"])
    assert np.allclose(back, [300, 150, 600, 300], atol=12)
    columns = {key: [row[key]] for key in ("solution", "image_size", "model_image_size")}
    assert rewards.IoUReward("pixels_resized")([f"<answer>{box}</answer>"], **columns)[0] > 0.9


def test_build_dataset_rejects_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no records"):
        D.build_dataset(tmp_path / "empty.jsonl")


# --------------------------------------------------------------------------------------------------------- sample.py


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_make_sample_is_deterministic_per_seed(tmp_path: Path) -> None:
    runs = (("a", 7), ("b", 7), ("c", 8))
    first, second, other = (S.make_sample(tmp_path / name, 7, seed=s, num_eval=2) for name, s in runs)
    assert first["train"].read_bytes() == second["train"].read_bytes()
    assert first["eval"].read_bytes() == second["eval"].read_bytes()
    images_a = sorted((tmp_path / "a" / "images").iterdir())
    assert [p.name for p in images_a] == sorted(p.name for p in (tmp_path / "b" / "images").iterdir())
    assert len(images_a) == 7
    assert all(p.read_bytes() == (tmp_path / "b" / "images" / p.name).read_bytes() for p in images_a)
    assert first["train"].read_bytes() != other["train"].read_bytes()


def test_make_sample_targets_are_uniquely_described_and_boxed(sample: Path) -> None:
    records = _records(sample / "train.jsonl") + _records(sample / "eval.jsonl")
    assert len(records) == 30 and len({r["id"] for r in records}) == 30
    sizes = set()
    for record in records:
        words = record["problem"].split()
        assert words[0] == "the" and words[-1] in S.SHAPES
        target, distractors = record["target"], record["distractors"]
        assert 1 <= len(distractors) <= 3

        def matches(obj: dict, words: list[str] = words) -> bool:
            return all(word in (obj["size"], obj["colour"], obj["shape"]) for word in words[1:])

        assert matches(target), record
        assert not any(matches(d) for d in distractors), record
        # The box is exactly the target's pixels: the tight box of target-coloured pixels near it equals the solution.
        pixels = np.asarray(Image.open(sample / record["image"]).convert("RGB"))
        height, width = pixels.shape[:2]
        sizes.add((width, height))
        x1, y1, x2, y2 = record["solution"]
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        left, top = max(0, x1 - 2), max(0, y1 - 2)
        window = pixels[top : min(height, y2 + 2), left : min(width, x2 + 2)]
        ys, xs = np.nonzero((window == np.array(S.COLOURS[target["colour"]])).all(axis=-1))
        assert [xs.min() + left, ys.min() + top, xs.max() + left + 1, ys.max() + top + 1] == [x1, y1, x2, y2]
    assert len(sizes) > 20  # varied, mostly non-square sizes
    assert all(96 <= w <= 256 and 96 <= h <= 256 for w, h in sizes)


# --------------------------------------------------------------------------------------------------------------- CLI


def test_cli_check_in_process(sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert D.main(["--check", str(sample / "eval.jsonl"), "--images_root", str(sample)]) == 0
    assert capsys.readouterr().out == f"OK: {sample / 'eval.jsonl'}: 6 rows\n"

    broken = tmp_path / "broken"
    S.make_sample(broken, num_samples=3, num_eval=1, seed=1)
    (broken / "images" / "train-0001.png").unlink()
    assert D.main(["--check", str(broken / "train.jsonl")]) == 2
    captured = capsys.readouterr()
    assert "row 1 (id 'train-0001')" in captured.err and "file not found" in captured.err


def test_cli_runs_as_a_script(sample: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    script = REPO_ROOT / "recipes" / "grounding" / "data.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check", str(sample / "eval.jsonl")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK:") and "6 rows" in result.stdout


def test_make_sample_is_idempotent_and_never_overwrites_user_data(tmp_path) -> None:
    first = S.make_sample(tmp_path / "s", num_samples=3, num_eval=1, seed=3)
    stamp = first["train"].stat().st_mtime_ns
    again = S.make_sample(tmp_path / "s", num_samples=3, num_eval=1, seed=3)
    assert again == first and first["train"].stat().st_mtime_ns == stamp  # same request: nothing rewritten

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.jsonl").write_text('{"id": "keep"}\n')
    with pytest.raises(FileExistsError, match="not written by sample.py"):
        S.make_sample(mine, num_samples=3, num_eval=1)
    assert (mine / "train.jsonl").read_text() == '{"id": "keep"}\n'
