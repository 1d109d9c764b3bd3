"""Reward curve from a run folder's trainer_state.json, also via the CLI."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from core.tools.plots import PLOT_NAME, plot_run, reward_series

LOGS = [
    {"step": 1, "reward": 0.1, "rewards/acc/mean": 0.0, "rewards/fmt/mean": 0.2, "loss": 0.0},
    {"step": 2, "reward": 0.4, "rewards/acc/mean": 0.5, "rewards/fmt/mean": 0.3},
    {"step": 2, "train_runtime": 3.0},
]


def test_reward_series_picks_total_and_per_reward_means():
    series = reward_series([*LOGS, {"step": 3, "reward": None, "rewards/acc/mean": None}])  # unscored step: a gap
    assert series["reward"] == ([1, 2], [0.1, 0.4])
    assert series["rewards/acc/mean"] == ([1, 2], [0.0, 0.5])
    assert "loss" not in series and "train_runtime" not in series


def test_plot_run_uses_latest_checkpoint_when_run_has_no_final_state(tmp_path):
    (tmp_path / "checkpoint-1").mkdir()
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-1" / "trainer_state.json").write_text(json.dumps({"log_history": LOGS[:1]}))
    (tmp_path / "checkpoint-10" / "trainer_state.json").write_text(json.dumps({"log_history": LOGS}))
    path = plot_run(tmp_path)
    assert path == tmp_path / PLOT_NAME
    with Image.open(path) as img:
        assert img.size[0] > 300 and img.size[1] > 200


def test_cli_writes_png(tmp_path):
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": LOGS}))
    out = subprocess.run(
        [sys.executable, "-m", "core.tools.plots", str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().endswith(PLOT_NAME)
    assert (tmp_path / PLOT_NAME).stat().st_size > 1000


def test_no_rewards_is_a_clear_error(tmp_path):
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 1.0}]}))
    with pytest.raises(ValueError, match="no reward"):
        plot_run(tmp_path)
