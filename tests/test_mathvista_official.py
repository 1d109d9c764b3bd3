"""MathVista scoring against the official scorer's own values.

Every `official` value below was computed by running MathVista's official code, not ours:
`evaluation/calculate_score.py` of https://github.com/lupantech/MathVista at commit
53d525874bdde205128e6b160b7357a88277d479 (`normalize_extracted_answer(extraction, choices, question_type,
answer_type, precision)` with the default `ignore_empty_extractions=False`, then `safe_equal(prediction, answer)`),
with the `Levenshtein` package 0.27.5 it imports, outside this project. Only the values are committed here.

`evaluate.py` must give exactly the official prediction and true/false for each case. The reward (`is_correct`)
may differ only by the departures listed in recipes/mathvista/README.md ("How it maps to MathVista's evaluation");
each row that differs names its departure.
"""

from __future__ import annotations

import pytest
from helpers import load_recipe_module

E = load_recipe_module("mathvista", "evaluate")
R = load_recipe_module("mathvista", "rewards")

MC = ["2", "3.5", "4", "Yes"]  # lettered A, B, C, D
DEG = ["145°", "135°", "35°", "55°"]

# (extraction, answer, question_type, answer_type, choices, precision, official prediction, official true/false,
#  reward's is_correct)
CASES = [
    # a parenthesised letter anywhere counts; the first one decides; either case
    ("The answer is (B).", "3.5", "multi_choice", "text", MC, None, "3.5", True, True),
    ("Answer: (B)", "3.5", "multi_choice", "text", MC, None, "3.5", True, True),
    ("(b)", "3.5", "multi_choice", "text", MC, None, "3.5", True, True),
    ("B", "3.5", "multi_choice", "text", MC, None, "3.5", True, True),
    ("(A) is wrong, (B) is right", "3.5", "multi_choice", "text", MC, None, "2", False, False),
    ("(C) 145°", "145°", "multi_choice", "text", DEG, None, "35°", False, False),  # the letter beats the text
    # official most-similar-option fallback (Levenshtein, first on ties); the reward does not guess
    ("(E)", "2", "multi_choice", "text", MC, None, "2", True, False),  # departure: no most-similar fallback
    ("", "2", "multi_choice", "text", MC, None, "2", True, False),  # departure: no most-similar fallback
    ("B.", "2", "multi_choice", "text", MC, None, "2", True, False),  # departure: no fallback + lenient letter
    ("B.", "3.5", "multi_choice", "text", MC, None, "2", False, True),  # departure: lenient letter reading
    ("b", "3.5", "multi_choice", "text", MC, None, "2", False, False),
    ("3.50", "3.5", "multi_choice", "text", MC, None, "3.5", True, True),
    ("yes", "Yes", "multi_choice", "text", MC, None, "Yes", True, True),
    ("145", "145°", "multi_choice", "text", DEG, None, "145°", True, True),
    ("A", "3", "multi_choice", "integer", ["3", "4"], None, "3", True, True),  # multi_choice wins over answer_type
    # integer: str(int(float(x))), so integers written as floats count and decimals truncate
    ("14", "14", "free_form", "integer", None, None, "14", True, True),
    ("14.0", "14", "free_form", "integer", None, None, "14", True, True),
    ("14.7", "14", "free_form", "integer", None, None, "14", True, True),
    ("1.4e1", "14", "free_form", "integer", None, None, "14", True, True),
    ("-0.5", "0", "free_form", "integer", None, None, "0", True, True),
    ("1_4", "14", "free_form", "integer", None, None, "14", True, False),  # departure: no Python digit separators
    ("inf", "14", "free_form", "integer", None, None, None, False, False),
    ("14 cm", "14", "free_form", "integer", None, None, None, False, True),  # departure: lenient number reading
    ("25%", "25", "free_form", "integer", None, None, None, False, True),  # departure: lenient number reading
    ("x = 14", "14", "free_form", "integer", None, None, None, False, True),  # departure: lenient number reading
    # float: str(round(float(x), int(precision))) == answer, a string comparison after Python's rounding
    ("1.5", "1.5", "free_form", "float", None, 1.0, "1.5", True, True),
    ("1.50", "1.5", "free_form", "float", None, 1.0, "1.5", True, True),
    ("1.549", "1.5", "free_form", "float", None, 1.0, "1.5", True, True),
    ("1.45", "1.5", "free_form", "float", None, 1.0, "1.4", False, False),  # binary 1.45 rounds down
    ("1.45", "1.4", "free_form", "float", None, 1.0, "1.4", True, True),
    ("0.125", "0.12", "free_form", "float", None, 2.0, "0.12", True, True),
    ("2", "2.0", "free_form", "float", None, 1.0, "2.0", True, True),
    ("2", "2", "free_form", "float", None, 1.0, "2.0", False, True),  # departure: floats compared as numbers
    ("0.5", "0.50", "free_form", "float", None, 2.0, "0.5", False, True),  # departure: floats compared as numbers
    ("1.5", "1.5", "free_form", "float", None, None, None, False, True),  # departure: no precision -> isclose
    ("1.5 cm", "1.5", "free_form", "float", None, 1.0, None, False, True),  # departure: lenient number reading
    ("25.0%", "25.0", "free_form", "float", None, 1.0, None, False, True),  # departure: lenient number reading
    # list: str(x) == answer, exact text
    ("[1, 2, 3]", "[1, 2, 3]", "free_form", "list", None, None, "[1, 2, 3]", True, True),
    ("[1,2,3]", "[1, 2, 3]", "free_form", "list", None, None, "[1,2,3]", False, True),  # departure: lists parsed
    ("1, 2, 3", "[1, 2, 3]", "free_form", "list", None, None, "1, 2, 3", False, True),  # departure: lists parsed
    ("[1.0, 2.0, 3.0]", "[1, 2, 3]", "free_form", "list", None, None, "[1.0, 2.0, 3.0]", False, True),  # parsed
]


def item(question_type, answer_type, choices, precision) -> dict:
    return {"question_type": question_type, "answer_type": answer_type, "choices": choices, "precision": precision}


@pytest.mark.parametrize(("extraction", "answer", "qt", "at", "choices", "precision", "pred", "official", "_"), CASES)
def test_evaluate_reproduces_the_official_scorer(extraction, answer, qt, at, choices, precision, pred, official, _):
    kwargs = item(qt, at, choices, precision)
    assert E.official_prediction(extraction, **kwargs) == pred
    assert E.official_correct(extraction, answer, **kwargs) is official


@pytest.mark.parametrize(("extraction", "answer", "qt", "at", "choices", "precision", "_", "__", "reward"), CASES)
def test_reward_keeps_only_the_documented_departures(extraction, answer, qt, at, choices, precision, _, __, reward):
    assert R.is_correct(extraction, answer, **item(qt, at, choices, precision)) is reward


def test_evaluate_scores_completions_officially_and_records_the_reward_view():
    row = {
        "pid": "1",
        "question": "q",
        "answer": "2",
        "choices": MC,
        "precision": None,
        "unit": None,
        "question_type": "multi_choice",
        "answer_type": "text",
        "task": "t",
        "grade": "g",
    }
    cfg = R.RewardConfig()
    empty = E.score(row, "<REASONING>r</REASONING><SOLUTION> </SOLUTION>", cfg)  # official: "" is nearest to "2"
    assert empty["official_prediction"] == "2" and empty["correct"] is True and empty["reward_correct"] is False
    missing = E.score(row, "the answer is 2", cfg)  # no solution block: no extraction, wrong (documented)
    assert missing["official_prediction"] is None and missing["correct"] is False
    metrics = E.summarise([empty, missing])
    assert metrics["accuracy"] == 0.5 and metrics["reward_accuracy"] == 0.0


def test_undefined_official_inputs_are_handled():
    # free-form text: the official normalize_extracted_answer raises UnboundLocalError (computed at the same commit)
    assert E.official_correct("cat", "cat", **item("free_form", "text", None, None)) is True
    assert E.official_correct("Cat", "cat", **item("free_form", "text", None, None)) is False
    # multiple choice without options: the official fallback raises on min([]); we score it wrong
    assert E.official_prediction("A", **item("multi_choice", "text", [], None)) is None
    assert E.official_correct(None, "14", **item("free_form", "integer", None, None)) is False


@pytest.mark.parametrize(
    ("a", "b", "distance"), [("kitten", "sitting", 3), ("", "abc", 3), ("145", "145°", 1), ("B.", "3.5", 2)]
)
def test_levenshtein(a, b, distance):
    assert E.levenshtein(a, b) == distance == E.levenshtein(b, a)
