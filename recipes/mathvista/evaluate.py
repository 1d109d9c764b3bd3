"""MathVista-style accuracy of a trained adapter: overall and per question type, answer type, task and grade.

Usage:  python recipes/mathvista/evaluate.py RUN_DIR [--dataset_name D --split S --start N --max_samples N]
RUN_DIR is a training output folder (its final_model/ is used), final_model/ itself or a checkpoint-* folder.
By default it scores the rows of the run's split that the run did NOT train on (those after max_samples); with no
such rows it falls back to the training rows and says so. Answers are read with the same rules as the reward.
Writes RUN_DIR/eval/ (or --out_dir): metrics.json, predictions.jsonl and accuracy.png.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from data import build_dataset, load_split
from rewards import RewardConfig, extract_solution, format_ok, is_correct

from core.evaluation import generate_greedy, load_trained_policy
from core.run import resolve_dataset_source

RECIPE_DIR = Path(__file__).resolve().parent
GROUPS = ("question_type", "answer_type", "task", "grade")
logger = logging.getLogger("evaluate")


def model_dir(run_dir: Path) -> Path:
    """The folder holding the weights: a run's final_model/ when given the run, else the folder itself."""
    return run_dir / "final_model" if (run_dir / "final_model" / "run_config.yaml").is_file() else run_dir


def default_rows(source: str, split: str, trained: int | None, total: int) -> tuple[int, bool]:
    """(first row to score, whether those rows are held out): rows after the ones trained on, when any remain."""
    if trained and trained < total:
        return trained, True
    logger.warning("no held-out rows in %s[%s]: scoring rows the run trained on", source, split)
    return 0, False


def score(row: dict[str, Any], completion: str, reward_cfg: RewardConfig) -> dict[str, Any]:
    """One prediction record: the row's identity and groups, the extracted solution, right or wrong, format."""
    prediction = extract_solution(completion, reward_cfg)
    correct = prediction is not None and is_correct(
        prediction,
        row["answer"],
        question_type=row["question_type"],
        answer_type=row["answer_type"],
        choices=row["choices"],
        precision=row["precision"],
        unit=row["unit"],
    )
    return {
        **{k: row[k] for k in ("pid", "question", "answer", "choices", *GROUPS)},
        "prediction": prediction,
        "correct": bool(correct),
        "format_ok": format_ok(completion, reward_cfg),
        "completion": completion,
    }


def accuracy_by(records: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    """{group value: {accuracy, count}} over the records, sorted by value."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        groups[str(record.get(key) or "unknown")].append(record["correct"])
    return {k: {"accuracy": sum(v) / len(v), "count": len(v)} for k, v in sorted(groups.items())}


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    n = max(len(records), 1)
    return {
        "num_samples": len(records),
        "accuracy": sum(r["correct"] for r in records) / n,
        "format_rate": sum(r["format_ok"] for r in records) / n,
        "solution_rate": sum(r["prediction"] is not None for r in records) / n,
        **{f"accuracy_by_{key}": accuracy_by(records, key) for key in GROUPS},
    }


def plot_accuracy(metrics: dict[str, Any], path: Path) -> None:
    """One horizontal bar panel per grouping, overall accuracy as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(GROUPS), figsize=(4.2 * len(GROUPS), 3.6), sharex=True)
    for ax, key in zip(axes, GROUPS, strict=True):
        table = metrics[f"accuracy_by_{key}"]
        labels = [f"{name}\n(n={row['count']})" for name, row in table.items()]
        ax.barh(labels, [row["accuracy"] for row in table.values()], color="#4c72b0")
        ax.tick_params(axis="y", labelsize=8)
        ax.axvline(metrics["accuracy"], color="k", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_title(key)
        ax.invert_yaxis()
    fig.suptitle(f"accuracy {metrics['accuracy']:.3f} over {metrics['num_samples']} items (dashed: overall)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--dataset_name", help="default: the run's dataset_name")
    parser.add_argument("--split", help="default: the run's dataset_split")
    parser.add_argument("--start", type=int, help="first row to score (default: the first row not trained on)")
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=512)
    parser.add_argument("--out_dir", type=Path, help="default: RUN_DIR/eval")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor, _, cfg = load_trained_policy(model_dir(args.run_dir), device)
    script = cfg["ScriptArguments"]
    reward_cfg = RewardConfig.from_object(argparse.Namespace(**script))
    source = resolve_dataset_source(args.dataset_name or script["dataset_name"], RECIPE_DIR)
    split = args.split or script["dataset_split"]
    if args.start is not None:
        start, held_out = args.start, None
    else:
        start, held_out = default_rows(source, split, script.get("max_samples"), len(load_split(source, split)))
    dataset = build_dataset(
        source,
        split=split,
        start=start,
        max_samples=args.max_samples,
        image_size=script["image_size"],
        reward_cfg=reward_cfg,
        system_prompt=script.get("system_prompt"),
    )

    records: list[dict[str, Any]] = []
    for first in range(0, len(dataset), args.batch_size):
        rows = [dataset[i] for i in range(first, min(first + args.batch_size, len(dataset)))]
        completions = generate_greedy(model, processor, rows, args.max_new_tokens)
        records += [score(row, text, reward_cfg) for row, text in zip(rows, completions, strict=True)]
        logger.info("evaluated %d/%d", len(records), len(dataset))

    metrics = summarise(records)
    out_dir = args.out_dir or args.run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    where = {"dataset": source, "split": split, "start": start, "held_out": held_out}
    (out_dir / "metrics.json").write_text(json.dumps({**metrics, **where}, indent=2))
    with open(out_dir / "predictions.jsonl", "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    plot_accuracy(metrics, out_dir / "accuracy.png")
    print(json.dumps({k: metrics[k] for k in ("num_samples", "accuracy", "format_rate", "solution_rate")}, indent=2))
    print(f"wrote {out_dir}/metrics.json, predictions.jsonl, accuracy.png")
    return metrics


if __name__ == "__main__":
    main()
