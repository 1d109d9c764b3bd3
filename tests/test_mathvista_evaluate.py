"""evaluate.py's scoring on literal completions: the same matching rules as the reward, grouped accuracy, rows."""

from __future__ import annotations

import pytest

from tests.helpers import load_recipe_module

E = load_recipe_module("mathvista", "evaluate")
CFG = E.RewardConfig()


def row(pid: str, answer: str, question_type: str = "free_form", answer_type: str = "integer", **extra) -> dict:
    base = {
        "pid": pid,
        "question": "q",
        "answer": answer,
        "choices": None,
        "precision": None,
        "unit": None,
        "question_type": question_type,
        "answer_type": answer_type,
        "task": "figure question answering",
        "grade": "elementary school",
    }
    return {**base, **extra}


def test_score_reads_the_solution_block_with_mathvista_rules():
    good = E.score(row("1", "14"), "<REASONING>12 + 2</REASONING><SOLUTION>14.0</SOLUTION>", CFG)
    assert good["prediction"] == "14.0" and good["correct"] and good["format_ok"]
    choice = row("2", "Yes", "multi_choice", "text", choices=["No", "Yes"])
    assert E.score(choice, "<REASONING>r</REASONING><SOLUTION>(B)</SOLUTION>", CFG)["correct"]
    no_reasoning = E.score(row("3", "14"), "<SOLUTION>14</SOLUTION>", CFG)
    assert no_reasoning["correct"] and not no_reasoning["format_ok"]
    twice = E.score(row("4", "14"), "<SOLUTION>14</SOLUTION><SOLUTION>15</SOLUTION>", CFG)
    assert twice["prediction"] is None and not twice["correct"]


def test_summary_groups_accuracy_by_type_task_and_grade():
    records = [
        E.score(row("1", "14"), "<REASONING>r</REASONING><SOLUTION>14</SOLUTION>", CFG),
        E.score(row("2", "3.5", answer_type="float", precision=1, grade="college"), "<SOLUTION>3.4</SOLUTION>", CFG),
        E.score(row("3", "7", task="math word problem"), "no blocks at all", CFG),
    ]
    metrics = E.summarise(records)
    assert metrics["num_samples"] == 3
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    assert metrics["format_rate"] == pytest.approx(1 / 3) and metrics["solution_rate"] == pytest.approx(2 / 3)
    assert metrics["accuracy_by_answer_type"] == {
        "float": {"accuracy": 0.0, "count": 1},
        "integer": {"accuracy": 0.5, "count": 2},
    }
    assert metrics["accuracy_by_grade"]["elementary school"] == {"accuracy": 0.5, "count": 2}
    assert set(metrics["accuracy_by_task"]) == {"figure question answering", "math word problem"}


def test_default_rows_are_the_ones_not_trained_on():
    assert E.default_rows("src", "testmini", trained=50, total=1000) == (50, True)
    assert E.default_rows("src", "testmini", trained=None, total=1000) == (0, False)
    assert E.default_rows("src", "testmini", trained=1000, total=1000) == (0, False)
