"""End to end on CPU with the tiny Qwen2.5-VL: train.py, evaluate.py, resume, the guard against overwriting a run.

Real subprocesses, real files. A dense toy reward (tests.fixtures.toy_rewards) is added to the recipe's rewards so a
random tiny model gets a non-zero GRPO advantage and the LoRA weights must move.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import REPO_ROOT, load_recipe_module, subprocess_env

RECIPE = REPO_ROOT / "recipes" / "grounding"
TOY = "tests.fixtures.toy_rewards:even_token_fraction"
# The dense toy reward moves LoRA here; the smoke config's warm start and its longer answers are tested in
# test_smoke_learns.py (with an evaluation of the warm-started run), so these runs skip them (CI time).
NO_WARM_START = ("--warm_start_steps", "0", "--max_completion_length", "24")
pytestmark = pytest.mark.slow


def env() -> dict[str, str]:
    return subprocess_env()


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grounding_sample")
    load_recipe_module("grounding", "sample").make_sample(out, num_samples=24, num_eval=8, seed=0)
    return out


def train_cmd(sample: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(RECIPE / "train.py"),
        "--config",
        str(RECIPE / "config_smoke.yaml"),
        "--train_file",
        str(sample / "train.jsonl"),
        "--eval_file",
        str(sample / "eval.jsonl"),
        "--output_dir",
        str(output_dir),
        "--reward_funcs",
        "accuracy_reward_coord",
        "format_reward",
        TOY,
        "--disable_tqdm",
        "true",
        *NO_WARM_START,
        *extra,
    ]


def run(cmd: list[str], cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    return proc


def lora_b_norm(path: Path) -> float:
    weights = load_file(str(path / "adapter_model.safetensors"))
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b, "no LoRA B weights saved"
    return float(torch.stack([w.float().norm() for w in lora_b]).sum())


@pytest.fixture(scope="module")
def trained_run(sample, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "two_steps"
    run(train_cmd(sample, out, "--max_steps", "2", "--save_steps", "2"))
    return out


def test_train_writes_checkpoint_plot_metrics_and_moves_lora(trained_run):
    out = trained_run
    # LoRA B starts at exactly zero: a non-zero norm means the optimiser changed trainable parameters.
    assert lora_b_norm(out) > 0
    assert lora_b_norm(out / "checkpoint-2") > 0
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    assert (out / "reward_curve.png").stat().st_size > 1000
    metrics = json.loads((out / "train_results.json").read_text())
    assert metrics["epoch"] > 0 and "train_runtime" in metrics
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    logged = [e for e in state["log_history"] if "reward" in e]
    assert len(logged) == 2
    assert all("rewards/even_token_fraction/mean" in e and "rewards/accuracy_reward_coord/mean" in e for e in logged)
    config = (out / "run_config.yaml").read_text()
    assert "tiny:qwen2_5_vl" in config and "even_token_fraction" in config


def test_evaluate_writes_metrics_predictions_and_grid(trained_run, sample):
    proc = run(
        [
            sys.executable,
            str(RECIPE / "evaluate.py"),
            str(trained_run),
            "--max_samples",
            "6",
            "--batch_size",
            "4",
            "--max_new_tokens",
            "12",
        ]
    )
    eval_dir = trained_run / "eval"
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["num_samples"] == 6
    for key in ("point_in_box_accuracy", "iou_0.5_accuracy", "mean_iou", "parse_rate"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["data_file"] == str(sample / "eval.jsonl")
    assert metrics["frame"] == "pixels_resized"
    rows = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"id", "completion", "prediction", "solution", "iou"} <= rows[0].keys()
    from PIL import Image

    with Image.open(eval_dir / "predictions.png") as grid:
        assert grid.size[0] == 4 * 256 + 5 * 6 and grid.size[1] > 2 * 256  # 4 panels a row, 2 rows
    assert "point_in_box_accuracy" in proc.stdout


def test_second_run_into_same_folder_is_refused_and_nothing_is_touched(trained_run, sample):
    before = {p: p.stat().st_mtime_ns for p in trained_run.rglob("*") if p.is_file()}
    proc = subprocess.run(
        train_cmd(sample, trained_run, "--max_steps", "2"),
        cwd=REPO_ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    assert "already holds a finished run (trained to step 2;" in proc.stderr + proc.stdout
    after = {p: p.stat().st_mtime_ns for p in trained_run.rglob("*") if p.is_file()}
    assert after == before


def test_bad_data_fails_before_training_with_every_problem_named(tmp_path, sample):
    rows = [json.loads(line) for line in (sample / "train.jsonl").read_text().splitlines()][:3]
    rows[0]["image"] = "images/missing.png"
    rows[1]["solution"] = [50, 50, 10, 10]
    rows[2]["problem"] = ""
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = train_cmd(sample, tmp_path / "out", "--max_steps", "1")
    cmd[cmd.index("--train_file") + 1] = str(bad)
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    err = proc.stderr
    assert "missing.png" in err and rows[0]["id"] in err
    assert rows[1]["id"] in err and rows[2]["id"] in err
    assert not (tmp_path / "out" / "checkpoint-1").exists()


def wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"training ended before {path} appeared:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_killed_run_resumes_to_the_same_final_step_keeping_earlier_logs(tmp_path, sample):
    out = tmp_path / "run"
    launch = ["bash", str(RECIPE / "run_8gpu.sh")]
    launch_env = {**env(), "SMOKE": "1", "NUM_GPUS": "1", "MAIN_PROCESS_PORT": "29517"}
    args = [
        "--train_file",
        str(sample / "train.jsonl"),
        "--eval_file",
        str(sample / "eval.jsonl"),
        "--output_dir",
        str(out),
        "--reward_funcs",
        TOY,
        "--max_steps",
        "6",
        "--save_steps",
        "2",
        "--disable_tqdm",
        "true",
        *NO_WARM_START,
    ]
    console = tmp_path / "console.txt"
    with open(console, "w") as sink:
        first = subprocess.Popen(
            launch + args, cwd=REPO_ROOT, env=launch_env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(out / "checkpoint-2" / "trainer_state.json", first, console)
        time.sleep(0.5)  # let the checkpoint's last files land
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)  # the whole launcher tree, as a dead node would
        first.wait()
    assert not (out / "trainer_state.json").exists(), "the first run finished before it was stopped"
    log_before = (out / "training.log").read_text()
    assert "process(es)" in log_before

    proc = subprocess.run(
        launch + args + ["--resume_from_checkpoint", "true"],
        cwd=REPO_ROOT,
        env=launch_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    steps = [e["step"] for e in state["log_history"] if "reward" in e]
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 1-2 come from before the stop
    log_after = (out / "training.log").read_text()
    assert log_after.startswith(log_before)  # appended, not overwritten
    assert "resuming from" in log_after
    assert (out / "checkpoint-6").is_dir()
