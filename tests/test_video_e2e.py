"""Video recipe end to end on CPU with the tiny Qwen2.5-VL: generated clips, train.py with the original's config
names, evaluate.py on the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from safetensors.torch import load_file

from tests.helpers import REPO_ROOT, load_recipe_module

RECIPE = REPO_ROOT / "recipes" / "video"
TOY = "tests.fixtures.toy_rewards:even_token_fraction"
# The dense toy reward moves LoRA here; the smoke config's warm start and its longer answers are tested in
# test_smoke_learns.py, so these runs skip them (CI time).
NO_WARM_START = ("--warm_start_steps", "0", "--max_completion_length", "24")
pytestmark = pytest.mark.slow


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def video_run(tmp_path_factory) -> tuple[Path, Path]:
    sample = tmp_path_factory.mktemp("video_sample")
    load_recipe_module("video", "sample").make_sample(sample, num_samples=12, num_eval=4, seed=0)
    out = tmp_path_factory.mktemp("video_runs") / "two_steps"
    run(
        [
            sys.executable,
            str(RECIPE / "train.py"),
            "--config",
            str(RECIPE / "config_smoke.yaml"),
            "--train_file",
            str(sample / "train.json"),
            "--eval_file",
            str(sample / "eval.json"),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--save_steps",
            "2",
            "--disable_tqdm",
            "true",
            "--reward_funcs",
            "format_reward",
            "accuracy_reward",
            TOY,
            *NO_WARM_START,
        ]
    )
    return out, sample


def test_video_training_moves_lora_and_logs_the_original_metrics(video_run):
    out, _ = video_run
    weights = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and sum(float(w.norm()) for w in lora_b) > 0  # LoRA B starts at zero
    assert any("merger" in name for name in weights)  # tune_mm_mlp: the merger is trained and saved in full
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [e for e in state["log_history"] if "reward" in e]
    assert [e["step"] for e in steps] == [1, 2]
    for key in ("loss", "rewards/format_reward/mean", "rewards/accuracy_reward/mean", "reward", "kl"):
        assert all(key in e for e in steps), key
    resolved = yaml.safe_load((out / "run_config.yaml").read_text())
    # The original names in config_smoke.yaml landed on the fields that do the job.
    assert resolved["GRPOConfig"]["beta"] == 0.1 and resolved["GRPOConfig"]["num_generations"] == 4
    assert resolved["VLMModelConfig"]["train_projector"] is True
    assert resolved["GRPOConfig"]["reward_weights"] == pytest.approx([0.15, 0.35, 0.5])  # grpo_alpha 0.5 x weights


def test_video_evaluate_writes_metrics_predictions_and_strip(video_run):
    out, sample = video_run
    run([sys.executable, str(RECIPE / "evaluate.py"), str(out), "--max_samples", "3", "--max_new_tokens", "12"])
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["num_samples"] == 3 and metrics["data_file"] == str(sample / "eval.json")
    for key in ("accuracy", "mean_action_set_iou", "format_rate", "mean_format_reward"):
        assert 0.0 <= metrics[key] <= 1.0
    rows = [json.loads(line) for line in (out / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["actions"] for r in rows)
    with Image.open(out / "eval" / "predictions.png") as strip:
        assert strip.size[1] == 3 * (96 + 8)


def test_conflicting_original_and_new_names_fail_before_training(tmp_path, video_run):
    _, sample = video_run
    config = yaml.safe_load((RECIPE / "config_smoke.yaml").read_text())
    config["beta"] = 0.3  # beside grpo_beta: 0.1
    path = tmp_path / "conflict.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [
        sys.executable,
        str(RECIPE / "train.py"),
        "--config",
        str(path),
        "--train_file",
        str(sample / "train.json"),
        "--output_dir",
        str(tmp_path / "o"),
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and "grpo_beta=0.1 and beta=0.3" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_bad_video_fails_before_training_with_its_id(tmp_path, video_run):
    _, sample = video_run
    records = json.loads((sample / "train.json").read_text())[:2]
    records[0]["video"] = "videos/missing.mp4"
    broken = sample / "videos" / "broken.mp4"
    broken.write_bytes(b"not a video")
    records[1]["video"] = "videos/broken.mp4"
    bad = sample / "bad.json"
    bad.write_text(json.dumps(records))
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            str(RECIPE / "train.py"),
            "--config",
            str(RECIPE / "config_smoke.yaml"),
            "--train_file",
            str(bad),
            "--output_dir",
            str(tmp_path / "o"),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    assert records[0]["id"] in proc.stderr and "missing.mp4" in proc.stderr
    assert records[1]["id"] in proc.stderr and "broken.mp4" in proc.stderr
