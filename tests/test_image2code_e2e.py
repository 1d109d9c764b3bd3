"""image2code end to end on CPU: 2 GRPO steps on tiny Qwen3-VL with the real sandboxed rewards, then evaluate.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tests.helpers import REPO_ROOT, load_recipe_module

RECIPE = REPO_ROOT / "recipes" / "image2code"
BUILTINS = ["code_execution_reward", "image_similarity_reward", "status_penalty_reward"]
# A program scorer f(code, reference_image, result) (the former custom_score_fn hook) as a normal reward_funcs entry.
SCORER = "tests.fixtures.toy_rewards:code_length_score"
# The toy scorer moves LoRA here; the smoke config's warm start and its longer answers are tested in
# test_smoke_learns.py, so these runs skip them (CI time).
NO_WARM_START = ("--warm_start_steps", "0", "--max_completion_length", "32", "--temperature", "1.0")
pytestmark = pytest.mark.slow


def _sample_splits(out: Path) -> dict[str, Path]:
    """12 sample charts split 9 / 3 (train / eval): sample.py's make_sample, or data.py's two steps before it."""
    if (RECIPE / "sample.py").is_file():
        return load_recipe_module("image2code", "sample").make_sample(out, num_samples=12, num_eval=3, num_test=0)
    data = load_recipe_module("image2code", "data")
    sample = data.create_sample(out / "all", n=12, seed=0)
    return data.split_dataset(sample, out, eval_fraction=0.25, test_fraction=0.0)


def test_smoke_training_with_the_sandboxed_rewards_then_evaluate(tmp_path):
    splits = _sample_splits(tmp_path / "sample")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [
        sys.executable,
        str(RECIPE / "train.py"),
        "--config",
        str(RECIPE / "config_smoke.yaml"),
        "--dataset_name",
        str(splits["train"]),
        "--eval_dataset_name",
        str(splits["eval"]),
        "--output_dir",
        str(out),
        "--reward_funcs",
        *BUILTINS,
        SCORER,
        "--reward_weights",
        "0.3",
        "0.7",
        "1.0",
        "0.5",
        "--disable_tqdm",
        "true",
        *NO_WARM_START,
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recorded = yaml.safe_load((out / "run_config.yaml").read_text())
    assert recorded["ScriptArguments"]["reward_funcs"] == [*BUILTINS, SCORER]
    assert recorded["GRPOConfig"]["reward_weights"] == [0.3, 0.7, 1.0, 0.5]
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [e for e in state["log_history"] if "reward" in e]
    assert [e["step"] for e in steps] == [1, 2]
    for e in steps:
        for name in [*BUILTINS, "code_length_score"]:
            assert f"rewards/{name}/mean" in e
        weighted = sum(w * e[f"rewards/{n}/mean"] for n, w in zip(BUILTINS, [0.3, 0.7, 1.0], strict=True))
        assert e["reward"] == pytest.approx(weighted + 0.5 * e["rewards/code_length_score/mean"], abs=1e-4)
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
