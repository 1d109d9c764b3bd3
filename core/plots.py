"""Reward curves from a run's logs: `python -m core.plots RUN_DIR` (also written at the end of every training).

Reads the `log_history` that the HF Trainer keeps in `trainer_state.json` (the run folder's, else its newest
checkpoint's), so it works for finished, stopped and resumed runs alike.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PLOT_NAME = "reward_curve.png"


def find_trainer_state(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    candidates = [run_dir / "trainer_state.json"]
    checkpoints = sorted(
        run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[-1])
    )
    candidates += checkpoints[::-1]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no trainer_state.json in {run_dir} or its checkpoints: has the run logged a step yet?")


def reward_series(log_history: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """{'reward': (steps, values), 'rewards/<name>/mean': ...} from training log entries."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for entry in log_history:
        if "step" not in entry:
            continue
        for key, value in entry.items():
            if value is None:  # a step where no sample could be scored (e.g. the judge was down): a gap
                continue
            if key == "reward" or (key.startswith("rewards/") and key.endswith("/mean")):
                steps, values = series.setdefault(key, ([], []))
                steps.append(entry["step"])
                values.append(float(value))
    return series


def plot_reward_curves(log_history: list[dict], out_path: str | Path, title: str = "") -> Path:
    series = reward_series(log_history)
    if not series:
        raise ValueError("the logs hold no reward entries (was logging_steps larger than the number of steps?)")
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for key in sorted(series, key=lambda k: (k != "reward", k)):
        steps, values = series[key]
        label = "total reward" if key == "reward" else key.removeprefix("rewards/").removesuffix("/mean")
        ax.plot(steps, values, marker="o", markersize=3, linewidth=2.2 if key == "reward" else 1.2, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_title(title or "GRPO rewards per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def plot_run(run_dir: str | Path) -> Path:
    state_path = find_trainer_state(run_dir)
    log_history = json.loads(state_path.read_text())["log_history"]
    return plot_reward_curves(log_history, Path(run_dir) / PLOT_NAME, title=Path(run_dir).resolve().name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="+", help="training output folder(s)")
    for run_dir in parser.parse_args().run_dir:
        print(plot_run(run_dir))


if __name__ == "__main__":
    main()
