"""image2code data: the sample (sample.py, split as written), base64 conversion, split, loading, validation, CLI."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT, load_recipe_module
from PIL import Image

from core.data.records import DataError

D = load_recipe_module("image2code", "data")
S = load_recipe_module("image2code", "sample")

N = 10


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("i2c") / "sample"
    S.make_sample(out, num_samples=N, seed=0)
    return out


@pytest.fixture(scope="module")
def all_rows(sample: Path) -> Path:
    """Every sample row in one file next to the splits (their image paths resolve from there too), id order."""
    records = [r for split in D.SPLITS for r in _records(sample / f"{split}.jsonl")]
    return _write_jsonl(sample / "all.jsonl", sorted(records, key=lambda r: r["id"]))


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_sample_writes_train_eval_test_directly(sample: Path) -> None:
    splits = {split: _records(sample / f"{split}.jsonl") for split in D.SPLITS}
    assert {split: len(rows) for split, rows in splits.items()} == {"train": 8, "eval": 1, "test": 1}
    assert not (sample / "data.jsonl").exists() and not (sample / "splits").exists()  # no second step
    records = [r for rows in splits.values() for r in rows]
    assert sorted(r["id"] for r in records) == [f"chart-{i:04d}" for i in range(N)]  # a partition
    assert {r["kind"] for r in records} == set(S.KINDS)  # n >= 8 covers every kind
    for record in records:
        assert set(record) >= {"id", "description", "image_path", "reference_code"}
        with Image.open(sample / record["image_path"]) as image:
            assert image.size == (192, 153)  # figsize (3, 2.4) at dpi 64, truncated
        assert "plt.show" not in record["reference_code"] and "savefig" not in record["reference_code"]
    assert json.loads((sample / "sample.json").read_text())["num_samples"] == N
    assert all(len(D.build_dataset(sample / f"{split}.jsonl")) == len(rows) for split, rows in splits.items())


def test_sample_splits_as_split_dataset_does() -> None:
    parts = D.partition(10, 2, 1, seed=4)
    assert sorted(i for rows in parts.values() for i in rows) == list(range(10))
    assert {split: len(rows) for split, rows in parts.items()} == {"train": 7, "eval": 2, "test": 1}
    assert all(rows == sorted(rows) for rows in parts.values()) and D.partition(10, 2, 1, seed=4) == parts
    with pytest.raises(ValueError, match="num_eval \\+ num_test < num_samples"):
        S.make_sample("unused", num_samples=2)  # 1 eval + 1 test leave no training row


def test_sample_idempotent_and_never_overwrites(sample: Path, tmp_path: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in (sample / "images").iterdir()}
    S.make_sample(sample, num_samples=N, seed=0)  # same request: no-op
    assert {p.name: p.stat().st_mtime_ns for p in (sample / "images").iterdir()} == before
    user = tmp_path / "user"
    user.mkdir()
    (user / "train.jsonl").write_text("mine\n")
    with pytest.raises(FileExistsError, match="not written by sample.py"):
        S.make_sample(user, num_samples=3)
    assert (user / "train.jsonl").read_text() == "mine\n"


def test_sample_deterministic(tmp_path: Path) -> None:
    S.make_sample(tmp_path / "a", num_samples=3, seed=5)
    S.make_sample(tmp_path / "b", num_samples=3, seed=5)
    for split in D.SPLITS:
        assert (tmp_path / "a" / f"{split}.jsonl").read_text() == (tmp_path / "b" / f"{split}.jsonl").read_text()
    for name in ("chart-0000.png", "chart-0002.png"):
        a = np.asarray(Image.open(tmp_path / "a" / "images" / name))
        b = np.asarray(Image.open(tmp_path / "b" / "images" / name))
        assert np.array_equal(a, b)


def test_round_trip_base64_split_load(all_rows: Path, tmp_path: Path) -> None:
    b64_file = D.convert_base64(all_rows, tmp_path / "b64" / "data_b64.jsonl")
    assert all("image_base64" in r and "image_path" not in r for r in _records(b64_file))
    path_ds = D.build_dataset(all_rows)
    b64_ds = D.build_dataset(b64_file)
    assert set(path_ds.column_names) == {"prompt", "image", "reference_code", "description", "id"}
    assert path_ds.data.column("image").to_pylist()[0]["bytes"] is None  # path records stay lazy
    for a, b in zip(path_ds, b64_ds, strict=True):
        assert a["id"] == b["id"] and a["reference_code"] == b["reference_code"]
        assert a["image"].mode == b["image"].mode == "RGB"
        assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))  # same pixels from both formats

    # split both formats into a folder elsewhere; path records must still resolve from there
    for source, name in ((all_rows, "split_paths"), (b64_file, "split_b64")):
        outputs = D.split_dataset(source, tmp_path / "deep" / name, eval_fraction=0.2, test_fraction=0.1, seed=1)
        sizes = {split: len(_records(file)) for split, file in outputs.items()}
        assert sizes == {"train": 7, "eval": 2, "test": 1}
        ids = [r["id"] for file in outputs.values() for r in _records(file)]
        assert sorted(ids) == sorted(path_ds["id"])  # a partition
        loaded = {split: D.build_dataset(file) for split, file in outputs.items()}
        assert sum(len(ds) for ds in loaded.values()) == N
        row = loaded["train"][0]
        original = path_ds[path_ds["id"].index(row["id"])]
        assert np.array_equal(np.asarray(row["image"]), np.asarray(original["image"]))
    again = D.split_dataset(all_rows, tmp_path / "again", 0.2, 0.1, seed=1)
    first = tmp_path / "deep" / "split_paths"
    for split, file in again.items():  # deterministic: same seed, same rows per split
        assert [r["id"] for r in _records(file)] == [r["id"] for r in _records(first / f"{split}.jsonl")]
    with pytest.raises(FileExistsError):
        D.split_dataset(all_rows, tmp_path / "again")


def test_dataset_prompt(all_rows: Path) -> None:
    dataset = D.build_dataset(all_rows, system_prompt="You write code.", max_samples=3)
    assert len(dataset) == 3
    prompt = dataset[0]["prompt"]
    assert prompt[0]["role"] == "system"
    assert prompt[-1]["content"][0]["type"] == "image"
    text = prompt[-1]["content"][1]["text"]
    assert text == D.PROMPT and "```python" in text and "plt.show()" in text and "matplotlib" in text


def test_all_errors_listed_together(sample: Path, all_rows: Path, tmp_path: Path) -> None:
    good = _records(all_rows)[0]
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    image_path = str((sample / good["image_path"]).resolve())
    rows = [
        {**good, "image_path": image_path},  # fine (absolute path)
        {"id": "nocode", "image_path": image_path, "reference_code": "  "},
        {"id": "nofile", "image_path": "images/missing.png", "reference_code": "x = 1"},
        {"id": "badb64", "image_base64": "!!!not base64!!!", "reference_code": "x = 1"},
        {"id": "notimage", "image_base64": base64.b64encode(b"hello").decode(), "reference_code": "x = 1"},
        {"id": "noimage", "reference_code": "x = 1"},
        {"id": "both", "image_path": image_path, "image_base64": "aGk=", "reference_code": "x = 1"},
        {"id": "okb64", "image_base64": base64.b64encode(png.getvalue()).decode(), "reference_code": "x = 1"},
        {"id": "okb64", "image_base64": base64.b64encode(png.getvalue()).decode(), "reference_code": "y = 1"},
    ]
    with pytest.raises(DataError) as info:
        D.build_dataset(_write_jsonl(tmp_path / "bad.jsonl", rows))
    text = "\n".join(info.value.problems)
    assert len(info.value.problems) == 7
    for marker in (
        "'nocode'",
        "'nofile'",
        "file not found",
        "'badb64'",
        "not valid base64",
        "'notimage'",
        "does not decode",
        "'noimage'",
        "'both'",
        "duplicate id 'okb64'",
    ):
        assert marker in text, marker
    with pytest.raises(DataError, match="no records"):
        D.build_dataset(_write_jsonl(tmp_path / "empty.jsonl", []))
    with pytest.raises(DataError):  # convert_base64 lists unreadable images too and writes nothing
        D.convert_base64(tmp_path / "bad.jsonl", tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.slow
def test_cli(tmp_path: Path) -> None:
    recipe = REPO_ROOT / "recipes" / "image2code"

    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(recipe / script), *args], capture_output=True, text=True, cwd=tmp_path
        )

    made = run("sample.py", "s", "--num_samples", "4", "--seed", "2")
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines() == [
        "wrote s:",
        "  train: s/train.jsonl (2 rows)",
        "  eval: s/eval.jsonl (1 rows)",
        "  test: s/test.jsonl (1 rows)",
    ]
    old = run("data.py", "--create_sample", "old", "--n", "4", "--seed", "2")  # the old spelling: runs sample.py
    assert old.returncode == 0, old.stderr
    assert all(
        (tmp_path / "old" / f"{split}.jsonl").read_text() == (tmp_path / "s" / f"{split}.jsonl").read_text()
        for split in D.SPLITS
    )
    assert run("data.py", "--convert_base64", "s/train.jsonl", "b64.jsonl").stdout == "wrote b64.jsonl (2 rows)\n"
    done = run("data.py", "--split_dataset", "b64.jsonl", "split", "--eval", "0.5", "--test_fraction", "0")
    assert done.returncode == 0, done.stderr
    assert "  train: split/train.jsonl (1 rows)" in done.stdout and "  eval: split/eval.jsonl (1 rows)" in done.stdout
    check = run("data.py", "--check", "split/train.jsonl")
    assert check.returncode == 0 and check.stdout == "OK: split/train.jsonl: 1 rows\n"
    refused = run("data.py", "--split_dataset", "b64.jsonl", "split")
    assert refused.returncode == 1 and "--overwrite" in refused.stderr  # refuses to overwrite
    _write_jsonl(tmp_path / "bad.jsonl", [{"id": "x"}])
    failed = run("data.py", "--check", "bad.jsonl")
    assert failed.returncode == 2 and "bad.jsonl" in failed.stderr and "reference_code" in failed.stderr
