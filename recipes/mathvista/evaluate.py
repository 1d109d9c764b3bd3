"""MathVista accuracy of a trained adapter, by MathVista's official scoring: overall and per question type, answer
type, task and grade.

Usage:  python recipes/mathvista/evaluate.py RUN_DIR [--dataset_name D --split S --start N --max_samples N]
            [--batch_size 8] [--max_new_tokens 512] [--grid_size 16] [--out_dir DIR]   (core/evaluation/cli.py)
RUN_DIR is a training output folder (its final_model/ is used), final_model/ itself or a checkpoint-* folder.
By default it scores the rows of the run's split (dataset_train_split) that the run did NOT train on (those after
max_train_samples); with no such rows it falls back to the training rows and says so.
Writes RUN_DIR/eval/ (or --out_dir): metrics.json, predictions.jsonl, accuracy.png (bars per group, each labelled
"accuracy (right/count)") and examples.png (the first --grid_size items: image, question, options, answer, prediction,
framed green when right and red when wrong).

Scoring. `accuracy` is the value of MathVista's `evaluation/calculate_score.py` (lupantech/MathVista, commit
53d5258; `normalize_extracted_answer` then `safe_equal`, default `ignore_empty_extractions=False`), with the
stripped content of the single solution block as the official `extraction` (the official pipeline gets it from a
GPT extractor; our prompt asks the model to write only the final answer there, and the extractor's rule-based
shortcuts, `int(response)`, `float(response)`, `response in choices`, do not change the score). Re-implemented
here (`official_prediction`, `official_correct`), pinned by tests/test_mathvista_official.py:

* multiple choice: the first parenthesised letter anywhere, upper-cased, replaces the text; a text that is exactly
  a letter of an option picks that option; ANY other text picks the option at the smallest Levenshtein distance
  (first one on ties), so "" picks the shortest option and "B." may pick option A;
* integer: `str(int(float(x)))`; float: `str(round(float(x), int(precision)))`; list: `str(x)`; each then compared
  with the answer string by `==` (so "[1,2]" is not "[1, 2]", and a float answer "2" with precision 1 can never be
  matched: the prediction reads "2.0"); unreadable numbers are wrong.

Where the official code is undefined we decide (README, "How it maps to MathVista's evaluation"): no single
solution block is wrong (there is no extraction; the official pipeline would ask GPT to extract one from the whole
response); a multiple-choice row without options is wrong (official: crashes on `min([])`); a free-form `text`
answer (official: `UnboundLocalError`) is right when `str(extraction) == answer`, as for lists.

`reward_accuracy` is the same completions scored by the reward's lenient rules (`rewards.is_correct`), so the gap
between what training paid and what the benchmark counts is visible.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from data import build_dataset, load_split
from PIL import Image
from rewards import RewardConfig, extract_solution, format_ok, is_correct

from core.errors import install_error_hook
from core.evaluation.cli import (
    batches,
    data_source,
    eval_device,
    eval_parser,
    output_dir,
    parse_eval_args,
    report,
    write_results,
)
from core.evaluation.loading import generate_greedy, load_trained_policy
from core.tools.plots import BLACK, GREY, RIGHT, WRONG, CaptionLine, panel, panel_sheet

RECIPE_DIR = Path(__file__).resolve().parent
GROUPS = ("question_type", "answer_type", "task", "grade")
PROTOCOL = (
    "accuracy: MathVista official calculate_score (lupantech/MathVista 53d5258) on the solution block as extraction, "
    "no GPT extraction; reward_accuracy: the reward's lenient rules"
)
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


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, cost 1 each, over code points): the metric of the
    `Levenshtein` package's `distance`, which MathVista's official most-similar-option fallback uses."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def official_prediction(
    extraction: str, *, question_type: Any, answer_type: Any, choices: Any, precision: Any
) -> str | None:
    """What MathVista's official `normalize_extracted_answer` makes of `extraction` (rules in the module
    docstring): the chosen option's text, or the number or list as a string, or None when it reads as nothing.

    A free-form `text` answer (official: crash) reads as `str(extraction)`; a multiple-choice row without options
    (official: crash) as None."""
    if question_type == "multi_choice":
        options = list(choices) if choices is not None and not isinstance(choices, str | bytes) else []
        if not options:
            return None
        text = str(extraction).strip()
        paren = re.search(r"\(([a-zA-Z])\)", text)
        if paren:
            text = paren.group(1).upper()
        letters = [chr(ord("A") + i) for i in range(len(options))]
        if text in letters:
            return options[letters.index(text)]
        distances = [levenshtein(text, str(option)) for option in options]
        return options[distances.index(min(distances))]
    try:  # Python's own float()/int()/round()/str(): the official semantics ("1_4", " 14 ", "1e1", inf, nan)
        if answer_type == "integer":
            return str(int(float(extraction)))
        if answer_type == "float":
            return str(round(float(extraction), int(precision)))
    except Exception:  # the official code catches everything here too: unreadable reads as None, i.e. wrong
        return None
    return str(extraction)  # list (official), text and unknown types (official: undefined)


def official_correct(
    extraction: str | None, answer: Any, *, question_type: Any, answer_type: Any, choices: Any, precision: Any
) -> bool:
    """MathVista's official true/false for one extraction: `official_prediction(...) == answer` (`safe_equal`).
    None (no single solution block) is wrong."""
    if extraction is None:
        return False
    prediction = official_prediction(
        extraction, question_type=question_type, answer_type=answer_type, choices=choices, precision=precision
    )
    return prediction is not None and prediction == answer


def score(row: dict[str, Any], completion: str, reward_cfg: RewardConfig) -> dict[str, Any]:
    """One prediction record: the row's identity and groups, the extracted solution, its official normalisation,
    right or wrong by the official scorer (`correct`) and by the reward's rules (`reward_correct`), format."""
    prediction = extract_solution(completion, reward_cfg)
    item = {key: row[key] for key in ("question_type", "answer_type", "choices", "precision")}
    return {
        **{k: row[k] for k in ("pid", "question", "answer", "choices", *GROUPS)},
        "prediction": prediction,
        "official_prediction": None if prediction is None else official_prediction(prediction, **item),
        "correct": official_correct(prediction, row["answer"], **item),
        "reward_correct": prediction is not None and is_correct(prediction, row["answer"], **item, unit=row["unit"]),
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
        "reward_accuracy": sum(r["reward_correct"] for r in records) / n,
        "format_rate": sum(r["format_ok"] for r in records) / n,
        "solution_rate": sum(r["prediction"] is not None for r in records) / n,
        **{f"accuracy_by_{key}": accuracy_by(records, key) for key in GROUPS},
    }


def bar_label(row: dict[str, float]) -> str:
    """A bar's label, "accuracy (right/count)": a group at 0 reads "0.00 (0/5)" instead of as a missing bar."""
    return f"{row['accuracy']:.2f} ({round(row['accuracy'] * row['count'])}/{row['count']})"


def plot_accuracy(metrics: dict[str, Any], path: Path) -> None:
    """One horizontal bar panel per grouping, overall accuracy as a dashed line, each bar with its `bar_label`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(GROUPS), figsize=(4.2 * len(GROUPS), 3.6), sharex=True)
    for ax, key in zip(axes, GROUPS, strict=True):
        table = metrics[f"accuracy_by_{key}"]
        labels = [f"{name}\n(n={row['count']})" for name, row in table.items()]
        values = [row["accuracy"] for row in table.values()]
        ax.barh(labels, values, color="#4c72b0")
        for y, row in enumerate(table.values()):
            ax.text(min(row["accuracy"], 0.62) + 0.02, y, bar_label(row), va="center", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.axvline(metrics["accuracy"], color="k", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_title(key)
        ax.invert_yaxis()
    fig.suptitle(
        f"accuracy {metrics['accuracy']:.3f} over {metrics['num_samples']} items (dashed: overall; examples.png shows "
        "the items)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _choices_text(choices: Any) -> str:
    if choices is None or isinstance(choices, str | bytes) or not list(choices):
        return ""
    return "  ".join(f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices))


def example_caption(record: dict[str, Any]) -> list[CaptionLine]:
    """Under one example: right/wrong (official), the question, the options, the answer, and what the model wrote
    in its solution block with the official reading of it (a letter becomes the option's text), or its completion's
    start when there was no single solution block."""
    verdict = "right" if record["correct"] else "wrong"
    lines = [
        CaptionLine(
            f"{verdict}  (pid {record['pid']}, {record['question_type']}, {record['answer_type']})",
            RIGHT if record["correct"] else WRONG,
        ),
        CaptionLine(f"Q: {record['question']}", BLACK, max_lines=4),
    ]
    if choices := _choices_text(record.get("choices")):
        lines.append(CaptionLine(choices, GREY, max_lines=2))
    lines.append(CaptionLine(f"answer: {record['answer']}", BLACK, max_lines=2))
    if record["prediction"] is None:
        text = f"prediction: no single solution block in {record['completion']!r}"
        lines.append(CaptionLine(text, WRONG, max_lines=3))
    else:
        read = record["official_prediction"]
        shown = record["prediction"] if read == record["prediction"] else f"{record['prediction']!r} read as {read!r}"
        lines.append(CaptionLine(f"prediction: {shown}", RIGHT if record["correct"] else WRONG, max_lines=3))
    return lines


def draw_examples(
    records: list[dict[str, Any]], images: list[Image.Image], path: Path, cell: int = 256, columns: int = 4
) -> list[tuple[int, int, int, int]]:
    """examples.png: one panel per scored item (image, question, options, answer, prediction), framed green when
    right and red when wrong by the official scorer. Returns the panels' boxes."""
    panels = [
        panel(image, example_caption(rec), width=cell, border=RIGHT if rec["correct"] else WRONG)
        for rec, image in zip(records, images, strict=True)
    ]
    right = sum(rec["correct"] for rec in records)
    title = f"MathVista: {right}/{len(records)} right (official scoring) in these examples"
    sheet, boxes = panel_sheet(panels, columns, title=title, legend=[("right", RIGHT), ("wrong", WRONG)])
    sheet.save(path)
    return boxes


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = eval_parser(__doc__, batch_size=8, max_new_tokens=512, data_help="default: the run's dataset_name")
    parser.add_argument("--split", help="default: the run's dataset_train_split")
    parser.add_argument("--start", type=int, help="first row to score (default: the first row not trained on)")
    parser.add_argument("--grid_size", type=int, default=16, help="examples drawn in examples.png")
    args = parse_eval_args(parser, argv)

    model, processor, _, cfg = load_trained_policy(model_dir(args.run_dir), eval_device())
    script = cfg["ScriptArguments"]
    reward_cfg = RewardConfig.from_object(argparse.Namespace(**script))
    source = data_source(args, script, RECIPE_DIR)
    split = args.split or script["dataset_train_split"]
    if args.start is not None:
        start, held_out = args.start, None
    else:
        trained = script.get("max_train_samples")
        start, held_out = default_rows(source, split, trained, len(load_split(source, split)))
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
    images: list[Image.Image] = []
    for rows in batches(dataset, args.batch_size):
        completions = generate_greedy(model, processor, rows, args.max_new_tokens)
        records += [score(row, text, reward_cfg) for row, text in zip(rows, completions, strict=True)]
        images += [row["image"] for row in rows][: max(0, args.grid_size - len(images))]

    metrics = summarise(records)
    out_dir = output_dir(args)
    where = {"dataset": source, "split": split, "start": start, "held_out": held_out, "protocol": PROTOCOL}
    written = write_results(out_dir, metrics, records, where)
    plot_accuracy(metrics, out_dir / "accuracy.png")
    draw_examples(records[: len(images)], images, out_dir / "examples.png")
    report(metrics, [*written, out_dir / "accuracy.png", out_dir / "examples.png"])
    return metrics


if __name__ == "__main__":
    install_error_hook()  # a wrong folder or a killed run: one message, exit 2, no traceback
    main()
