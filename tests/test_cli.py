"""The `vlm-grpo` command, run as a user runs it: the console script of this environment, in a real subprocess.

ls lists the six recipes with their models and rewards; validate accepts every recipe's smoke and real config (the
real ones with the plan from core.training.architectures; their hub datasets cannot be read offline, so the data
check is skipped there, and a hub dataset that cannot be reached is itself a reported problem) and refuses a bad
batch, key or data row with exit status 2 and the message; train, sample, check and eval run the recipe's own
scripts (train through core/tools/launch.sh, here with a recording stand-in for the interpreter so no training
starts); run_8gpu.sh is `vlm-grpo train` for its folder, also for a copy outside the repository.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.errors import USER_ERROR_EXIT
from tests.helpers import RECIPES_DIR, REPO_ROOT

pytestmark = pytest.mark.slow
VLM_GRPO = Path(sys.executable).with_name("vlm-grpo")
RECIPES = sorted(p.name for p in RECIPES_DIR.iterdir() if (p / "train.py").is_file())
COMMANDS = ("ls", "new", "validate", "sample", "check", "train", "eval", "plan")


def vlm_grpo(*args: str, cwd: Path = REPO_ROOT, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """`vlm-grpo ARGS` with the suite's environment (no PYTHONPATH: the command imports the installed core)."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(VLM_GRPO), *args],
        cwd=cwd,
        env={**environ, "PYTHONUNBUFFERED": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def recording_python(path: Path, record: Path) -> Path:
    """An interpreter stand-in that appends its arguments to `record` and exits 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$*" >> "{record}"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture(scope="module")
def samples() -> None:
    """Every recipe's sample data (what config_smoke.yaml reads), made through the command (idempotent)."""
    for recipe in RECIPES:
        proc = vlm_grpo("sample", recipe)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_console_script_is_installed_and_lists_every_command_on_one_line():
    assert VLM_GRPO.is_file(), "pip install -e . makes it ([project.scripts] in pyproject.toml)"
    proc = vlm_grpo("--help")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    for command in COMMANDS:
        [line] = [line for line in lines if line.strip().startswith(f"{command} ")]
        assert len(line.split(None, 1)[1]) > 10  # its one-line summary
    for command in COMMANDS:
        sub = vlm_grpo(command, "--help")
        assert sub.returncode == 0 and f"usage: vlm-grpo {command}" in sub.stdout
        assert f"example:\n  vlm-grpo {command}" in sub.stdout


def test_ls_lists_the_six_recipes_with_task_model_and_rewards():
    proc = vlm_grpo("ls", cwd=Path("/"))
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:] if line and not line[0].isspace()}
    assert set(RECIPES) <= set(rows) and len(RECIPES) == 6
    for recipe in RECIPES:
        config = yaml.safe_load((RECIPES_DIR / recipe / "config.yaml").read_text())
        assert config["model_name_or_path"] in rows[recipe]
        assert ", ".join(config["reward_funcs"]) in rows[recipe]
        assert rows[recipe].split()[1] == "GRPO"  # the task: train.py's docstring starts "GRPO ..."


def test_an_unknown_recipe_gets_did_you_mean_and_the_list():
    proc = vlm_grpo("train", "groundin", "--smoke")
    assert proc.returncode == USER_ERROR_EXIT
    assert "unknown recipe 'groundin': did you mean 'grounding'?" in proc.stderr
    assert "known recipes: " + ", ".join(RECIPES) in proc.stderr


@pytest.mark.parametrize("recipe", RECIPES)
def test_validate_accepts_every_smoke_config(recipe, samples):
    proc = vlm_grpo("validate", f"recipes/{recipe}/config_smoke.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "on 2 process(es)" in out  # a tiny model: validated for the SMOKE=1 launch
    assert "config  ok:" in out and "batch   ok:" in out and "data    ok: dataset_name " in out
    assert out.rstrip().endswith(f"valid: recipes/{recipe}/config_smoke.yaml (2 process(es))")


@pytest.mark.parametrize("recipe", RECIPES)
def test_validate_accepts_every_real_config_with_its_memory_verdict(recipe):
    """The real models are planned from core.training.architectures (no download); their data is skipped here."""
    proc = vlm_grpo("validate", f"recipes/{recipe}/config.yaml", "--skip_data_check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "on 8 process(es)" in proc.stdout
    assert "data    --  not checked (--skip_data_check)" in proc.stdout
    [memory] = [line for line in proc.stdout.splitlines() if line.startswith("  memory")]
    assert "verdict: fits in 80 GB per GPU" in memory


def test_validate_reports_a_hub_dataset_it_cannot_reach():
    proc = vlm_grpo("validate", "recipes/mathvista/config.yaml", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    assert proc.returncode == USER_ERROR_EXIT
    assert "data    PROBLEM: dataset_name AI4Math/MathVista: " in proc.stdout
    assert "(a hub dataset: check it where the hub is reachable, or --skip_data_check)" in proc.stdout
    assert "1 problem(s) in recipes/mathvista/config.yaml" in proc.stdout


def test_validate_reports_missing_sample_data_with_the_command_that_makes_it(tmp_path):
    copy = tmp_path / "my_task"
    assert vlm_grpo("new", "my_task", "--from", "grounding", "--dest", str(copy)).returncode == 0
    proc = vlm_grpo("validate", str(copy / "config.yaml"), "--skip_data_check")
    assert proc.returncode == 0, proc.stdout  # the config itself is fine
    proc = vlm_grpo("validate", str(copy / "config.yaml"), cwd=tmp_path)
    assert proc.returncode == USER_ERROR_EXIT
    assert "data    PROBLEM: dataset_name data/sample/train.jsonl: not found" in proc.stdout
    assert "make the sample data: vlm-grpo sample my_task   (or point dataset_name at your data)" in proc.stdout
    assert "2 problem(s)" in proc.stdout  # train and eval files


def test_validate_refuses_a_batch_that_does_not_hold_whole_groups_and_says_what_works(samples):
    proc = vlm_grpo("validate", "recipes/grounding/config_smoke.yaml", "--num_generations", "3")
    assert proc.returncode == USER_ERROR_EXIT, proc.stdout + proc.stderr
    assert (
        "batch   PROBLEM: 4 per device x 2 process(es) x 1 step(s) per generation = 8 completions, not a multiple "
        "of num_generations 3" in proc.stdout
    )
    assert (
        "numbers that work with 2 process(es): per_device_train_batch_size 3 or 6 or 9; gradient_accumulation_steps "
        "3 or 6 or 9; num_generations 2 or 4 or 8" in proc.stdout
    )
    # the same config is fine on 3 processes: 4 x 3 = 12 completions, 4 prompts x 3
    ok = vlm_grpo("validate", "recipes/grounding/config_smoke.yaml", "--num_generations", "3", "--num_gpus", "3")
    assert ok.returncode == 0, ok.stdout
    assert "= 12 completions = 4 prompt(s) x num_generations 3" in ok.stdout


def test_validate_refuses_an_unknown_key_with_did_you_mean(tmp_path):
    config = yaml.safe_load((RECIPES_DIR / "grounding" / "config_smoke.yaml").read_text())
    config["lerning_rate"] = config.pop("learning_rate", 1e-5)
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = vlm_grpo("validate", str(path), "--recipe", "grounding")
    assert proc.returncode == USER_ERROR_EXIT
    assert (
        f"config  PROBLEM: ConfigError: unknown key lerning_rate in config file {path}; did you mean learning_rate?"
        in (proc.stdout)
    )
    assert "Traceback" not in proc.stdout + proc.stderr


def test_validate_refuses_a_broken_data_row_with_the_row_and_the_reason(tmp_path, samples):
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps({"id": "r1", "image": "missing.png", "problem": "the red circle", "solution": [1, 2]}))
    proc = vlm_grpo("validate", "recipes/grounding/config_smoke.yaml", "--dataset_name", str(bad))
    assert proc.returncode == USER_ERROR_EXIT
    assert f"data    PROBLEM: dataset_name {bad}: DataError: 1 problem(s) in {bad}:" in proc.stdout
    assert f"- row 0 (id 'r1'): image 'missing.png' -> {tmp_path / 'missing.png'}: file not found" in proc.stdout
    assert "data    ok: eval_dataset_name data/sample/eval.jsonl: 16 rows" in proc.stdout  # the other source still


def test_check_and_sample_run_the_recipe_scripts(tmp_path):
    out = tmp_path / "sample"
    made = vlm_grpo("sample", "grounding", str(out), "--num_samples", "5", "--num_eval", "1")
    assert made.returncode == 0, made.stderr
    assert (out / "train.jsonl").read_text().count("\n") == 4
    again = vlm_grpo("sample", "grounding", str(out), "--num_samples", "5", "--num_eval", "1")
    assert "already holds this sample" in again.stdout  # idempotent
    checked = vlm_grpo("check", "grounding", str(out / "train.jsonl"))
    assert checked.returncode == 0 and checked.stdout.strip() == f"OK: {out / 'train.jsonl'}: 4 rows"
    (out / "images" / "train-0000.png").unlink()
    broken = vlm_grpo("check", "grounding", str(out / "train.jsonl"))
    assert broken.returncode == USER_ERROR_EXIT and "train-0000.png" in broken.stderr


def test_train_runs_the_launcher_with_smoke_and_num_gpus(tmp_path):
    record = tmp_path / "calls.txt"
    python = recording_python(tmp_path / "bin" / "python", record)
    out = tmp_path / "run"
    proc = vlm_grpo(
        "train",
        "grounding",
        "--smoke",
        "--num_gpus",
        "1",
        "--max_steps",
        "3",
        "--output_dir",
        str(out),
        PYTHON=str(python),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sample, launch = record.read_text().splitlines()
    recipe = RECIPES_DIR / "grounding"
    assert sample == str(recipe / "sample.py")
    assert launch.startswith("-m accelerate.commands.launch") and "--num_processes 1" in launch
    assert f"{recipe / 'train.py'} --config {recipe / 'config_smoke.yaml'} --ddp_backend gloo" in launch
    assert launch.endswith(f"--max_steps 3 --output_dir {out}")
    assert "== sample data:" in proc.stdout and (out / "training.log").is_file()


def test_train_config_flag_picks_the_yaml(tmp_path):
    record = tmp_path / "calls.txt"
    python = recording_python(tmp_path / "bin" / "python", record)
    other = tmp_path / "mine.yaml"
    other.write_text("")
    proc = vlm_grpo("train", "video", "--config", str(other), "--output_dir", str(tmp_path / "run"), PYTHON=str(python))
    assert proc.returncode == 0, proc.stderr
    [launch] = record.read_text().splitlines()
    assert f"--config {other} " in launch and launch.count("--config") == 2  # accelerate's --config_file + train.py's


@pytest.mark.parametrize("recipe", ["grounding", "mathvista"])
def test_run_8gpu_sh_is_vlm_grpo_train_for_its_folder(recipe, tmp_path):
    record = tmp_path / "calls.txt"
    python = recording_python(tmp_path / "bin" / "python", record)
    proc = subprocess.run(
        ["bash", str(RECIPES_DIR / recipe / "run_8gpu.sh"), "--output_dir", str(tmp_path / "run")],
        cwd=tmp_path,
        env={**os.environ, "PYTHON": str(python), "NUM_GPUS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [launch] = record.read_text().splitlines()
    assert f"{RECIPES_DIR / recipe / 'train.py'} --config {RECIPES_DIR / recipe / 'config.yaml'}" in launch
    if recipe == "mathvista":  # its multi-GPU settings, still overridable after them
        assert "--backend transformers --load_in_4bit false --vllm_gpu_memory_utilization 0.35 --output_dir" in launch
    script = (RECIPES_DIR / recipe / "run_8gpu.sh").read_text()
    assert recipe not in script.lower()


def test_a_copy_outside_the_repository_launches_without_vlm_grpo_on_path(tmp_path):
    copy = tmp_path / "work" / "my_task"
    assert vlm_grpo("new", "my_task", "--from", "grounding", "--dest", str(copy)).returncode == 0
    record = tmp_path / "calls.txt"
    python = recording_python(tmp_path / "bin" / "python", record)
    proc = subprocess.run(
        ["bash", str(copy / "run_8gpu.sh"), "--output_dir", str(tmp_path / "run")],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "PYTHON": str(python), "NUM_GPUS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{copy / 'train.py'} --config {copy / 'config.yaml'}" in record.read_text()
    assert f'"{VLM_GRPO.resolve()}"' in (copy / "run_8gpu.sh").read_text()  # the command that made the copy


def fake_evaluate(folder: Path) -> Path:
    """A recipe folder whose evaluate.py prints the arguments it got."""
    folder.mkdir(parents=True)
    (folder / "train.py").write_text("")
    (folder / "evaluate.py").write_text("import sys\nprint('evaluate', *sys.argv[1:])\n")
    return folder


def test_eval_runs_the_evaluate_py_of_the_recipe_that_trained_the_run(tmp_path):
    recipe = fake_evaluate(tmp_path / "my_task")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.yaml").write_text(yaml.safe_dump({"Run": {"recipe_dir": str(recipe)}, "GRPOConfig": {}}))
    proc = vlm_grpo("eval", str(run), "--max_samples", "4")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"evaluate {run} --max_samples 4"
    final = run / "final_model"  # a run whose record is in final_model/ (mathvista)
    final.mkdir()
    (run / "run_config.yaml").rename(final / "run_config.yaml")
    assert vlm_grpo("eval", str(run)).stdout.strip() == f"evaluate {run}"


def test_eval_of_a_run_without_recipe_dir_says_how_to_name_the_recipe(tmp_path):
    run = tmp_path / "old_run"
    run.mkdir()
    (run / "run_config.yaml").write_text(yaml.safe_dump({"ScriptArguments": {"train_file": "x.jsonl"}}))
    proc = vlm_grpo("eval", str(run))
    assert proc.returncode == USER_ERROR_EXIT
    assert proc.stderr.strip() == (
        f"vlm-grpo eval: error: {run / 'run_config.yaml'} does not say which recipe trained the run (no "
        f"Run.recipe_dir: the run is older than vlm-grpo eval); name it: vlm-grpo eval {run} --recipe RECIPE"
    )
    recipe = fake_evaluate(tmp_path / "my_task")
    named = vlm_grpo("eval", str(run), "--recipe", str(recipe), "--batch_size", "2")
    assert named.returncode == 0 and named.stdout.strip() == f"evaluate {run} --batch_size 2"
    nothing = vlm_grpo("eval", str(tmp_path))
    assert nothing.returncode == USER_ERROR_EXIT and "no run_config.yaml in it" in nothing.stderr


def test_new_refuses_a_bad_name_and_a_non_empty_destination(tmp_path):
    bad = vlm_grpo("new", "my-task", "--from", "grounding", "--dest", str(tmp_path / "x"))
    assert bad.returncode == USER_ERROR_EXIT and "NAME must be a Python identifier" in bad.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    taken = vlm_grpo("new", "full", "--from", "grounding", "--dest", str(tmp_path / "full"))
    assert taken.returncode == USER_ERROR_EXIT and "already exists and is not empty" in taken.stderr
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


def test_plan_is_core_plan():
    proc = vlm_grpo("plan", "grounding", "--num_gpus", "4")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Memory plan per GPU: Qwen/Qwen2.5-VL-7B-Instruct, 4 GPU(s)")
    assert "\nverdict: fits in 80 GB per GPU" in proc.stdout
