"""The data command lines of every recipe (core.data.cli), run as a person runs them: real subprocesses.

* `sample.py [OUT_DIR] --num_samples N` writes the sample and says what it wrote; again, it says nothing changed;
  `data.py --check` on what it wrote prints `OK: SOURCE: N rows`, N the rows in the file;
* a broken file: `--check` exits 2 naming the file and the row; a folder not written by sample.py: exit 1;
* the old spellings still work (`data.py --make-sample`, `--create_sample`, `--n-train`, kebab options) and are
  not shown in --help.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from tests.helpers import RECIPES_DIR, subprocess_env


def run(recipe: str, script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python recipes/<recipe>/<script> ARGS` in `cwd`, output captured."""
    command = [sys.executable, str(RECIPES_DIR / recipe / script), *args]
    return subprocess.run(command, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300)


def jsonl_rows(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


# recipe: (sample.py flags, the --check SOURCE under the sample folder, --check flags, rows that SOURCE holds)
RECIPES: dict[str, tuple[list[str], str, list[str], Callable[[Path], int]]] = {
    "grounding": (["--num_samples", "5"], "train.jsonl", [], lambda out: jsonl_rows(out / "train.jsonl")),
    "video": (["--num_samples", "3"], "train.json", [], lambda out: len(json.loads((out / "train.json").read_text()))),
    "image2code": (["--num_samples", "4"], "train.jsonl", [], lambda out: jsonl_rows(out / "train.jsonl")),
    "image_edit": (  # one prompt per row and complexity: complexity 1 only, so prompts = test_real's rows
        ["--num_samples", "3"],
        ".",
        ["--complexities", "1"],
        lambda out: datasets.load_from_disk(str(out))["test_real"].num_rows,
    ),
    "mmmg": (["--num_samples", "4"], ".", [], lambda out: sum(jsonl_rows(f) for f in out.glob("*.jsonl"))),
    "mathvista": (
        ["--num_samples", "3"],
        ".",
        [],
        lambda out: pq.ParquetFile(out / "data" / "testmini-00000-of-00001.parquet").metadata.num_rows,
    ),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_sample_then_check_what_it_wrote(recipe: str, tmp_path: Path) -> None:
    flags, source, check_flags, rows_in = RECIPES[recipe]
    made = run(recipe, "sample.py", "sample", *flags, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("wrote sample:\n  "), made.stdout
    again = run(recipe, "sample.py", "sample", *flags, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("sample already holds this sample (sample.json); nothing written:\n  ")
    assert again.stdout.split("\n", 1)[1] == made.stdout.split("\n", 1)[1]  # the same listing

    rows = rows_in(tmp_path / "sample")
    assert rows > 0
    for listed in made.stdout.splitlines()[1:]:  # every path listed exists
        assert (tmp_path / listed.split(": ", 1)[1].split(" (")[0]).exists(), listed
    target = str(Path("sample") / source) if source != "." else "sample"
    checked = run(recipe, "data.py", "--check", target, *check_flags, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"OK: {target}: {rows} rows"), checked.stdout


def test_image2code_sample_writes_the_splits_directly(tmp_path: Path) -> None:
    made = run(
        "image2code", "sample.py", "out", "--num_samples", "6", "--num_eval", "2", "--num_test", "1", cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines() == [
        "wrote out:",
        "  train: out/train.jsonl (3 rows)",
        "  eval: out/eval.jsonl (2 rows)",
        "  test: out/test.jsonl (1 rows)",
    ]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "eval.jsonl",
        "images",
        "sample.json",
        "test.jsonl",
        "train.jsonl",
    ]


def test_check_of_a_broken_file_exits_2_naming_the_file_and_the_row(tmp_path: Path) -> None:
    assert run("grounding", "sample.py", "s", "--num_samples", "4", "--num_eval", "1", cwd=tmp_path).returncode == 0
    data = tmp_path / "s" / "train.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows[2]["solution"] = [30, 30, 10, 10]  # inverted box
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    checked = run("grounding", "data.py", "--check", "s/train.jsonl", cwd=tmp_path)
    assert checked.returncode == 2 and checked.stdout == ""
    assert checked.stderr.startswith("1 problem(s) in s/train.jsonl:\n")
    assert "row 2 (id 'train-0002'): bad 'solution' [30, 30, 10, 10]: needs x2 > x1 and y2 > y1" in checked.stderr


def test_sample_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "train.jsonl").write_text('{"id": "keep"}\n')
    refused = run("grounding", "sample.py", "mine", cwd=tmp_path)
    assert refused.returncode == 1 and "not written by sample.py" in refused.stderr
    assert (tmp_path / "mine" / "train.jsonl").read_text() == '{"id": "keep"}\n'
    bad = run("grounding", "sample.py", "other", "--num_samples", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "must be >= 1" in bad.stderr


# ---------------------------------------------------------------------------------------------- old spellings


def test_data_py_make_sample_runs_sample_py_with_the_old_counts(tmp_path: Path) -> None:
    old = run(
        "grounding", "data.py", "--make-sample", "old", "--n-train", "3", "--n-eval", "2", "--seed", "1", cwd=tmp_path
    )
    assert old.returncode == 0, old.stderr
    assert "--make-sample is now " in old.stderr and "sample.py" in old.stderr
    assert "  train: old/train.jsonl (3 rows)" in old.stdout and "  eval: old/eval.jsonl (2 rows)" in old.stdout
    new = run("grounding", "sample.py", "new", "--num_samples", "5", "--num_eval", "2", "--seed", "1", cwd=tmp_path)
    assert new.returncode == 0, new.stderr
    for name in ("train.jsonl", "eval.jsonl", "sample.json"):  # the same request, the same bytes
        assert (tmp_path / "old" / name).read_bytes() == (tmp_path / "new" / name).read_bytes()


def test_data_py_create_sample_runs_sample_py(tmp_path: Path) -> None:
    old = run("image2code", "data.py", "--create_sample", "old", "--n", "4", cwd=tmp_path)
    assert old.returncode == 0, old.stderr
    assert "  train: old/train.jsonl (2 rows)" in old.stdout
    assert json.loads((tmp_path / "old" / "sample.json").read_text())["num_samples"] == 4


def test_kebab_options_still_work_and_are_not_shown(tmp_path: Path) -> None:
    made = run("mathvista", "sample.py", "s", "--num-samples", "3", cwd=tmp_path)
    assert made.returncode == 0 and "(3 rows)" in made.stdout, made.stderr
    checked = run("mathvista", "data.py", "--check", "s", "--max-samples", "2", "--image-size", "64", cwd=tmp_path)
    assert checked.returncode == 0 and checked.stdout.startswith("OK: s: 2 rows"), checked.stderr
    for script, shown, hidden in (
        ("sample.py", ["--num_samples", "--seed"], ["--num-samples", "--n "]),
        ("data.py", ["--check", "--max_samples", "--image_size"], ["--max-samples", "--image-size", "--make-sample"]),
    ):
        text = run("mathvista", script, "--help", cwd=tmp_path).stdout
        assert all(flag in text for flag in shown) and not any(flag in text for flag in hidden), text
