"""image2code end to end on CPU: 2 GRPO steps on tiny Qwen3-VL with the real sandboxed reward, then evaluate.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from tests.helpers import REPO_ROOT, load_recipe_module

RECIPE = REPO_ROOT / "recipes" / "image2code"
HOOK = "tests.fixtures.toy_rewards:code_length_score"
# The toy hook reward moves LoRA here; the smoke config's warm start and its longer answers are tested in
# test_smoke_learns.py, so these runs skip them (CI time).
NO_WARM_START = ("--warm_start_steps", "0", "--max_completion_length", "32", "--temperature", "1.0")
pytestmark = pytest.mark.slow


def test_smoke_training_with_the_sandboxed_reward_then_evaluate(tmp_path):
    data = load_recipe_module("image2code", "data")
    sample = data.create_sample(tmp_path / "sample", n=12, seed=0)
    splits = data.split_dataset(sample, tmp_path / "splits", eval_fraction=0.25, test_fraction=0.0)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [
        sys.executable,
        str(RECIPE / "train.py"),
        "--config",
        str(RECIPE / "config_smoke.yaml"),
        "--train_file",
        str(splits["train"]),
        "--eval_file",
        str(splits["eval"]),
        "--output_dir",
        str(out),
        "--custom_score_fn",
        HOOK,
        "--custom_score_weight",
        "0.5",
        "--disable_tqdm",
        "true",
        *NO_WARM_START,
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [e for e in state["log_history"] if "reward" in e]
    assert [e["step"] for e in steps] == [1, 2]
    for e in steps:
        assert "rewards/image2code_reward/mean" in e and "rewards/code_length_score/mean" in e
        rates = sum(v for k, v in e.items() if k.startswith("image2code/status/"))
        assert rates == pytest.approx(1.0)  # every completion was run and classified
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert sum(float(w.norm()) for n, w in weights.items() if "lora_B" in n) > 0

    cmd = [
        sys.executable,
        str(RECIPE / "evaluate.py"),
        str(out),
        "--max_samples",
        "3",
        "--max_new_tokens",
        "16",
        "--generate_examples",
        "--max_examples",
        "2",
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["num_samples"] == 3
    assert sum(metrics["status_rates"].values()) == pytest.approx(1.0)
    assert {"mean_lines", "mean_complexity", "imports_used"} <= metrics["code_quality"].keys()
    assert (out / "eval" / "examples.png").stat().st_size > 500
    assert "# image2code evaluation" in (out / "eval" / "report.md").read_text()
