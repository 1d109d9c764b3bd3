"""A judge that is down for the whole run: the start-up check passes (the endpoint lists the model), every chat
request fails, every judge reward returns None. Before max_unscored_steps the run exited 0 with loss 0 and an
unchanged adapter; now it stops with an error naming the rewards, and saves no final model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.judge_server import start_judge_server
from tests.helpers import REPO_ROOT, load_recipe_module, subprocess_env

pytestmark = pytest.mark.slow


def test_image_edit_run_stops_when_the_judge_answers_nothing(tmp_path):
    recipe = REPO_ROOT / "recipes" / "image_edit"
    sample = load_recipe_module("image_edit", "data").make_sample(tmp_path / "s", n_real=4, n_syn=1)
    out = tmp_path / "run"
    judge = start_judge_server(error_rate=1.0)  # HTTP 500 for every chat request; GET /models still answers
    try:
        proc = subprocess.run(
            [
                sys.executable,
                str(recipe / "train.py"),
                "--config",
                str(recipe / "config_smoke.yaml"),
                "--dataset",
                str(sample),
                "--output_dir",
                str(out),
                "--judge_base_url",
                judge.url,
                "--max_steps",
                "5",
                "--max_unscored_steps",
                "2",
                "--disable_tqdm",
                "true",
            ],
            cwd=REPO_ROOT,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        judge.close()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-4000:]
    assert "UnscoredRewardsError: no completion could be scored in 2 consecutive generation batches" in output
    assert "instruction_following, identity_preservation, perceptual_quality returned None" in output
    assert not (out / "adapter_model.safetensors").exists() and not (out / "trainer_state.json").exists()
