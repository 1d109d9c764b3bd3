"""Issue 15, items 2, 3, 5 and 9: data errors a person can act on, raised before any weights load.

* item 2: a missing local dataset is a "not found" error with the recipe's `sample.py` command, never a hub
  lookup (`Couldn't reach 'data/sample'` after 22 retries);
* item 3: every recipe checks its data and data arguments before the model (or the Qwen-Image pipeline) loads;
* item 5: the right row, one line for a renamed column, no bare IndexError, the corrupt file named, evaluate.py on a
  killed run or a mistyped folder;
* item 9: zero usable rows is an error in `data.py --check` and in train.py.

"Before any weights load" is proven with a model folder whose weight files are removed (`weightless_copy`): a run
that tried to load the model would fail on the missing weights instead of printing the data error.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from PIL import Image

from core.data.records import DataError, looks_like_path, missing_column_problems, resolve_dataset_source
from core.evaluation.loading import check_run_dir
from core.testing.tiny import resolve_model_path
from tests.helpers import RECIPES_DIR, REPO_ROOT, load_recipe_module, run_smoke_train, subprocess_env

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json")
# Lines only model / pipeline loading prints: core.training.models.load_model's log, diffusers' progress bar.
MODEL_LOAD_MARKERS = (re.compile(r"loaded \w+ \(\w+\) from"), re.compile(r"Loading pipeline components"))
SMOKE_MODELS = {
    "grounding": "tiny:qwen2_5_vl",
    "video": "tiny:qwen2_5_vl",
    "image2code": "tiny:qwen3_vl",
    "mathvista": "tiny:gemma3",
    "image_edit": "tiny:qwen_image_edit",
    "mmmg": "tiny:qwen_image",
}


def weightless_copy(name: str, dest: Path) -> Path:
    """`name`'s checkpoint folder without its weight files (config, processor, tokenizer linked): its processor
    loads, the model or pipeline does not."""
    source = Path(resolve_model_path(name))
    for file in source.rglob("*"):
        if file.is_dir() or file.name.endswith(WEIGHT_SUFFIXES):
            continue
        target = dest / file.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(file)
    return dest


def run_check(recipe: str, *args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """`python recipes/<recipe>/data.py ARGS` as a person runs it."""
    script = RECIPES_DIR / recipe / "data.py"
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )


def assert_no_model_loaded(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    for marker in MODEL_LOAD_MARKERS:
        assert not marker.search(output), f"the model loaded before the data error:\n{output[-3000:]}"
    assert "safetensors" not in output and "Error no file named" not in output, output[-3000:]


# ------------------------------------------------------------------------------------------- item 2: not found


@pytest.mark.parametrize("recipe", ["image_edit", "mmmg", "mathvista"])
def test_check_of_a_missing_local_dataset_says_how_to_make_the_sample(recipe: str) -> None:
    result = run_check(recipe, "--check", "data/nosuch")
    assert result.returncode == 2, result.stderr
    assert "Couldn't reach" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert f"dataset 'data/nosuch' not found (looked for {REPO_ROOT / 'data/nosuch'} and " in result.stderr
    assert (
        f"Make the offline sample with: python recipes/{recipe}/sample.py recipes/{recipe}/data/nosuch" in result.stderr
    )


def test_path_like_names_and_hub_ids(tmp_path: Path) -> None:
    recipe_dir = tmp_path / "recipe"
    (recipe_dir / "mine").mkdir(parents=True)
    for name in ("data/sample", "./sample", "../x", "/abs/x", "a/b/c", "train.jsonl", "mine/set", "~/x"):
        assert looks_like_path(name, recipe_dir), name
    for name in ("UCSC-VLAA/Complex-Edit", "MMMGbench/MMMG", "AI4Math/MathVista", "mnist"):
        assert not looks_like_path(name, recipe_dir), name
        assert resolve_dataset_source(name, recipe_dir) == name  # left to datasets.load_dataset
    with pytest.raises(DataError, match=r"dataset 'mine/set' not found .* sample with: python \S*/sample\.py "):
        resolve_dataset_source("mine/set", recipe_dir)


# ------------------------------------------------------------------------------ item 3 (+2, 9): before weights


def _empty_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_text("")
    return path


def _mmmg_empty(tmp_path: Path) -> Path:
    folder = tmp_path / "mmmg_empty"
    folder.mkdir()
    (folder / "highschool_Math.jsonl").write_text("")
    return folder


CASES = {
    # recipe: (flags built from tmp_path, expected message)
    "grounding": (lambda t: ["--train_file", str(_empty_file(t, "train.jsonl"))], "train.jsonl: no records"),
    "video": (lambda t: ["--train_file", str(_empty_file(t, "train.jsonl"))], "train.jsonl: no records"),
    "image2code": (lambda t: ["--train_file", str(_empty_file(t, "train.jsonl"))], "train.jsonl: no records"),
    "mathvista": (
        lambda t: ["--dataset_name", "data/nosuch"],
        "Make the offline sample with: python recipes/mathvista/sample.py recipes/mathvista/data/nosuch",
    ),
    "image_edit": (
        lambda t: ["--dataset", "data/nosuch"],  # (a bad --complexities is now refused at parse time)
        "Make the offline sample with: python recipes/image_edit/sample.py recipes/image_edit/data/nosuch",
    ),
    "mmmg": (lambda t: ["--dataset", str(_mmmg_empty(t))], "no usable prompts"),
}


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_train_refuses_bad_data_before_any_weights_load(recipe: str, tmp_path: Path) -> None:
    flags, message = CASES[recipe]
    model = weightless_copy(SMOKE_MODELS[recipe], tmp_path / "weightless")
    result = run_smoke_train(
        recipe,
        "--model_name_or_path",
        str(model),
        "--warm_start_steps",  # a weightless copy is not a tiny: id, which warm_start_steps requires
        "0",
        "--output_dir",
        str(tmp_path / "out"),
        *flags(tmp_path),
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert message in output, output[-3000:]
    assert "Couldn't reach" not in output
    assert_no_model_loaded(result)
    assert not list((tmp_path / "out").glob("adapter_*")), "no adapter may be saved"


def test_train_refuses_a_missing_image_edit_dataset_before_the_pipeline(tmp_path: Path) -> None:
    """Item 2 through train.py: the default `data/sample` of a fresh clone, here `data/nosuch`."""
    model = weightless_copy(SMOKE_MODELS["image_edit"], tmp_path / "weightless")
    result = run_smoke_train(
        "image_edit",
        "--model_name_or_path",
        str(model),
        "--output_dir",
        str(tmp_path / "out"),
        "--dataset",
        "data/nosuch",
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "python recipes/image_edit/sample.py recipes/image_edit/data/nosuch" in output, output[-3000:]
    assert "Couldn't reach" not in output
    assert_no_model_loaded(result)


# ------------------------------------------------------------------------------------ item 9: zero usable rows


def test_check_refuses_an_empty_mmmg_file(tmp_path: Path) -> None:
    result = run_check("mmmg", "--check", str(_mmmg_empty(tmp_path)))
    assert result.returncode == 2, result.stdout
    assert "OK:" not in result.stdout
    assert "no usable prompts: the data is empty or the selection" in result.stderr


def test_check_refuses_an_mmmg_selection_without_rows(tmp_path: Path) -> None:
    folder = _mmmg_empty(tmp_path)
    (folder / "PhD_Math.jsonl").write_text("")
    result = run_check("mmmg", "--check", str(folder), "--levels", "PhD", "highschool", "--disciplines", "Math")
    assert result.returncode == 2 and "no usable prompts" in result.stderr, result.stderr


@pytest.mark.parametrize("recipe", ["grounding", "video", "image2code"])
def test_check_refuses_an_empty_file(recipe: str, tmp_path: Path) -> None:
    result = run_check(recipe, "--check", str(_empty_file(tmp_path, "data.jsonl")))
    assert result.returncode == 2
    assert f"{tmp_path / 'data.jsonl'}: no records" in result.stderr


def test_check_refuses_an_empty_mathvista_file(tmp_path: Path) -> None:
    result = run_check("mathvista", "--check", str(_empty_file(tmp_path, "data.jsonl")))
    assert result.returncode == 2 and "no records" in result.stderr, result.stderr


def test_check_refuses_an_empty_mathvista_split(tmp_path: Path) -> None:
    folder = tmp_path / "mv"
    datasets.DatasetDict({"testmini": datasets.Dataset.from_dict({"pid": ["1"]}).select([])}).save_to_disk(folder)
    result = run_check("mathvista", "--check", str(folder))
    assert result.returncode == 2 and "split 'testmini' holds 0 rows" in result.stderr, result.stderr


# ----------------------------------------------------------------------------------------- item 5: messages


def test_image_edit_empty_saved_split_is_named_not_an_index_error(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    datasets.DatasetDict({"test_real": datasets.Dataset.from_dict({"image": [], "edit": []})}).save_to_disk(folder)
    result = run_check("image_edit", "--check", str(folder))
    assert result.returncode == 2
    assert "IndexError" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert f"1 problem(s) in {folder}:\n  - split 'test_real' holds 0 rows; remake the folder" in result.stderr


def _png_base64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_image2code_names_the_right_row_when_path_and_base64_rows_mix(tmp_path: Path) -> None:
    data = load_recipe_module("image2code", "data")
    rows = [
        {"id": "b64", "image_base64": _png_base64(), "reference_code": "x = 1"},
        {"id": "missing", "image_path": "nope.png", "reference_code": "x = 1"},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError) as err:
        data.build_dataset(path)
    assert err.value.problems == [f"row 1 (id 'missing'): image 'nope.png' -> {tmp_path / 'nope.png'}: file not found"]


RENAMED = {
    # recipe: (rows with one column renamed, the missing column as the message names it, build call)
    "grounding": (
        [{"id": str(i), "image": "a.png", "problem": "the cat", "box": [0, 0, 1, 1]} for i in range(5)],
        "'solution'",
        lambda data, path: data.build_dataset(path),
    ),
    "video": (
        [{"id": str(i), "clip": "a.mp4", "conversations": []} for i in range(5)],
        "'video'",
        lambda data, path: data.build_dataset(path),
    ),
    "image2code": (
        [{"id": str(i), "image_path": "a.png", "code": "x = 1"} for i in range(5)],
        "'reference_code'",
        lambda data, path: data.build_dataset(path),
    ),
}


@pytest.mark.parametrize("recipe", sorted(RENAMED))
def test_a_renamed_column_is_reported_once_with_the_columns_found(recipe: str, tmp_path: Path) -> None:
    rows, column, build = RENAMED[recipe]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError) as err:
        build(load_recipe_module(recipe, "data"), path)
    found = sorted({key for row in rows for key in row})
    assert err.value.problems == [f"no row has column {column} (renamed?); columns found: {found}"]


def test_missing_column_alternatives_are_named_together() -> None:
    rows = [{"id": "1", "picture": "a.png"}]
    assert missing_column_problems(rows, [("image_path", "image_base64"), "id"]) == [
        "no row has column 'image_path' or 'image_base64' (renamed?); columns found: ['id', 'picture']"
    ]


def _killed_run(tmp_path: Path) -> Path:
    """A run stopped after two checkpoints: its resolved config and checkpoint-1/2 (adapters), no final model."""
    run = tmp_path / "run"
    for step in (1, 2):
        (run / f"checkpoint-{step}").mkdir(parents=True)
        (run / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
    (run / "run_config.yaml").write_text("VLMModelConfig: {}\n")
    return run


def test_check_run_dir_points_a_killed_run_at_its_latest_checkpoint(tmp_path: Path) -> None:
    run = _killed_run(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        check_run_dir(run)
    assert str(err.value) == (
        f"{run} holds no final model: the run stopped before saving it. Evaluate its latest checkpoint instead: "
        f"{run / 'checkpoint-2'} (or resume training with --resume_from_checkpoint true)."
    )
    assert check_run_dir(run / "checkpoint-2") == run / "checkpoint-2"


@pytest.mark.parametrize("recipe", sorted(SMOKE_MODELS))
def test_evaluate_on_a_killed_run_or_a_mistyped_folder(recipe: str, tmp_path: Path) -> None:
    """All six evaluate.py go through core.evaluation.loading.check_run_dir before anything loads."""
    evaluate = load_recipe_module(recipe, "evaluate")
    run = _killed_run(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(f"latest checkpoint instead: {run / 'checkpoint-2'}")):
        evaluate.main([str(run)])
    typo = tmp_path / "rnu"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{typo}: no such folder.")):
        evaluate.main([str(typo)])
