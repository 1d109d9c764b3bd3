"""MMMG scoring against the OFFICIAL evaluation: values computed by running the official scorer, not by hand.

Source: github.com/MMMGBench/MMMG at commit 98bb915a645d6d575dea3700a391966bd317c83a, files
`mmmg_eval/utils/stat_knowledge.py` (`parse_output_to_checklist`: judge reply -> yes/no per element and dependency)
and `mmmg_eval/step3_stat.py` (`build_graph`, `normalized_ged`, `calc_weighting`, `process_data`), run outside this
project with networkx 3.4.2 (the official environment.yaml's pin), scipy 1.17.1, numpy 2.4.6. For every case below the
official code gave the judged-yes keys, the edge lists (in insertion order) of the reference graph (everything yes)
and of the predicted graph, the first value of `optimize_graph_edit_distance`, and the score 1 - GED-normalised;
`test_report_matches_official_process_data` holds `process_data`'s SchoolAVG / DisciplineAVG `K-score(w)`.
Only the values are copied here; the project's implementation (recipes/mmmg/protocol.py) is its own.
"""

from __future__ import annotations

import json
from functools import partial

import pytest
from PIL import Image

from tests.helpers import load_recipe_module

P = load_recipe_module("mmmg", "protocol")

# ruff: noqa: E501  (the official cases are data: long replies stay on one line)
# (name, knowledge graph, judge reply) -> official yes keys, graph nodes/edges, first GED value, score
CASES = [
    {
        "name": "all_yes",
        "kg": {
            "elements": ["Sun", "Water", "Evaporation"],
            "dependencies": ["Causes(Sun, Evaporation)", "Requires(Evaporation, Water)"],
        },
        "reply": "* Sun: yes\n* Water: yes\n* Evaporation: yes\n* Causes(Sun, Evaporation): yes\n* Requires(Evaporation, Water): yes",
        "yes": ["Sun", "Water", "Evaporation", "Causes(Sun, Evaporation)", "Requires(Evaporation, Water)"],
        "ref_edges": [("sun", "evaporation"), ("water", "evaporation")],
        "pred_edges": [("sun", "evaporation"), ("water", "evaporation")],
        "ref_nodes": ["sun", "water", "evaporation"],
        "pred_nodes": ["sun", "water", "evaporation"],
        "first_ged": 0.0,
        "score": 1.0,
    },
    {
        "name": "all_no",
        "kg": {
            "elements": ["Sun", "Water", "Evaporation"],
            "dependencies": ["Causes(Sun, Evaporation)", "Requires(Evaporation, Water)"],
        },
        "reply": "* Sun: no\n* Water: no\n* Evaporation: no\n* Causes(Sun, Evaporation): no\n* Requires(Evaporation, Water): no",
        "yes": [],
        "ref_edges": [("sun", "evaporation"), ("water", "evaporation")],
        "pred_edges": [],
        "ref_nodes": ["sun", "water", "evaporation"],
        "pred_nodes": [],
        "first_ged": 5.0,
        "score": 0.0,
    },
    {
        "name": "exploit_elements_no_dependency_yes",
        "kg": {
            "elements": ["Sun", "Water", "Evaporation"],
            "dependencies": ["Causes(Sun, Evaporation)", "Requires(Evaporation, Water)"],
        },
        "reply": "* Sun: no\n* Water: no\n* Evaporation: no\n* Causes(Sun, Evaporation): yes\n* Requires(Evaporation, Water): yes",
        "yes": ["Causes(Sun, Evaporation)", "Requires(Evaporation, Water)"],
        "ref_edges": [("sun", "evaporation"), ("water", "evaporation")],
        "pred_edges": [],
        "ref_nodes": ["sun", "water", "evaporation"],
        "pred_nodes": [],
        "first_ged": 5.0,
        "score": 0.0,
    },
    {
        "name": "dependency_with_a_no_endpoint",
        "kg": {
            "elements": ["Sun", "Water", "Evaporation"],
            "dependencies": ["Causes(Sun, Evaporation)", "Requires(Evaporation, Water)"],
        },
        "reply": "* Sun: yes\n* Water: no\n* Evaporation: yes\n* Causes(Sun, Evaporation): yes\n* Requires(Evaporation, Water): yes",
        "yes": ["Sun", "Evaporation", "Causes(Sun, Evaporation)", "Requires(Evaporation, Water)"],
        "ref_edges": [("sun", "evaporation"), ("water", "evaporation")],
        "pred_edges": [("sun", "evaporation")],
        "ref_nodes": ["sun", "water", "evaporation"],
        "pred_nodes": ["sun", "evaporation"],
        "first_ged": 4.0,
        "score": 0.5,
    },
    {
        "name": "substring_endpoint_inside_element",
        "kg": {"elements": ["Water cycle", "Rain"], "dependencies": ["Causes(water, rain)"]},
        "reply": "* Water cycle: yes\n* Rain: yes\n* Causes(water, rain): yes",
        "yes": ["Water cycle", "Rain", "Causes(water, rain)"],
        "ref_edges": [("water cycle", "rain")],
        "pred_edges": [("water cycle", "rain")],
        "ref_nodes": ["water cycle", "rain"],
        "pred_nodes": ["water cycle", "rain"],
        "first_ged": 0.0,
        "score": 1.0,
    },
    {
        "name": "substring_element_inside_endpoint_with_space",
        "kg": {"elements": ["Water", "Rain"], "dependencies": ["Causes(the water, rain)"]},
        "reply": "* Water: yes\n* Rain: yes\n* Causes(the water, rain): yes",
        "yes": ["Water", "Rain", "Causes(the water, rain)"],
        "ref_edges": [("water", "rain")],
        "pred_edges": [("water", "rain")],
        "ref_nodes": ["water", "rain"],
        "pred_nodes": ["water", "rain"],
        "first_ged": 0.0,
        "score": 1.0,
    },
    {
        "name": "substring_element_inside_endpoint_without_space",
        "kg": {"elements": ["Cat", "Dog"], "dependencies": ["Chases(cats, dog)"]},
        "reply": "* Cat: yes\n* Dog: yes\n* Chases(cats, dog): yes",
        "yes": ["Cat", "Dog", "Chases(cats, dog)"],
        "ref_edges": [],
        "pred_edges": [],
        "ref_nodes": ["cat", "dog"],
        "pred_nodes": ["cat", "dog"],
        "first_ged": 0.0,
        "score": 1.0,
    },
    {
        "name": "ambiguous_substring_endpoint",
        "kg": {"elements": ["Water cycle", "Water vapor", "Rain"], "dependencies": ["Causes(water, rain)"]},
        "reply": "* Water cycle: yes\n* Water vapor: yes\n* Rain: yes\n* Causes(water, rain): yes",
        "yes": ["Water cycle", "Water vapor", "Rain", "Causes(water, rain)"],
        "ref_edges": [],
        "pred_edges": [],
        "ref_nodes": ["water cycle", "water vapor", "rain"],
        "pred_nodes": ["water cycle", "water vapor", "rain"],
        "first_ged": 0.0,
        "score": 1.0,
    },
    {
        "name": "substring_match_among_yes_elements_only",
        "kg": {"elements": ["Water", "Water cycle", "Rain"], "dependencies": ["Causes(water, rain)"]},
        "reply": "* Water: no\n* Water cycle: yes\n* Rain: yes\n* Causes(water, rain): yes",
        "yes": ["Water cycle", "Rain", "Causes(water, rain)"],
        "ref_edges": [("water", "rain")],
        "pred_edges": [("water cycle", "rain")],
        "ref_nodes": ["water", "water cycle", "rain"],
        "pred_nodes": ["water cycle", "rain"],
        "first_ged": 3.0,
        "score": 0.5714285714285714,
    },
    {
        "name": "whitespace_before_parenthesis",
        "kg": {"elements": ["A", "B", "C"], "dependencies": ["Requires (b, a)", "Requires(b, c)"]},
        "reply": "* A: yes\n* B: yes\n* C: yes\n* Requires (b, a): yes\n* Requires(b, c): yes",
        "yes": ["A", "B", "C", "Requires (b, a)", "Requires(b, c)"],
        "ref_edges": [("b", "a"), ("c", "b")],
        "pred_edges": [("b", "a"), ("c", "b")],
        "ref_nodes": ["a", "b", "c"],
        "pred_nodes": ["a", "b", "c"],
        "first_ged": 0.0,
        "score": 1.0,
    },
    {
        "name": "requires_reversed_defines_both_ways",
        "kg": {"elements": ["X", "Y", "Z"], "dependencies": ["Requires(x, y)", "Defines(y, z)"]},
        "reply": "* X: yes\n* Y: yes\n* Z: yes\n* Requires(x, y): yes\n* Defines(y, z): yes",
        "yes": ["X", "Y", "Z", "Requires(x, y)", "Defines(y, z)"],
        "ref_edges": [("y", "x"), ("y", "z"), ("z", "y")],
        "pred_edges": [("y", "x"), ("y", "z"), ("z", "y")],
        "ref_nodes": ["x", "y", "z"],
        "pred_nodes": ["x", "y", "z"],
        "first_ged": 0.0,
        "score": 1.0,
    },
    {
        "name": "first_ged_not_exact_small",
        "kg": {"elements": ["e0", "e1", "e2", "e3"], "dependencies": ["Entails(e3, e0)", "Causes(e0, e2)"]},
        "reply": "- e0: yes\n- e1: no\n- e2: no\n- e3: yes\n- Entails(e3, e0): yes\n- Causes(e0, e2): yes",
        "yes": ["e0", "e3", "Entails(e3, e0)", "Causes(e0, e2)"],
        "ref_edges": [("e0", "e2"), ("e3", "e0")],
        "pred_edges": [("e3", "e0")],
        "ref_nodes": ["e0", "e1", "e2", "e3"],
        "pred_nodes": ["e0", "e3"],
        "first_ged": 5.0,
        "score": 0.4444444444444444,
    },
    {
        "name": "first_ged_not_exact_defines",
        "kg": {
            "elements": ["e0", "e1", "e2", "e3", "e4", "e5"],
            "dependencies": [
                "Defines(e5, e3)",
                "Requires(e4, e1)",
                "Defines(e3, e4)",
                "Requires(e0, e1)",
                "Defines(e2, e5)",
            ],
        },
        "reply": "- e0: no\n- e1: no\n- e2: yes\n- e3: no\n- e4: yes\n- e5: yes\n- Defines(e5, e3): no\n- Requires(e4, e1): yes\n- Defines(e3, e4): yes\n- Requires(e0, e1): yes\n- Defines(e2, e5): yes",
        "yes": ["e2", "e4", "e5", "Requires(e4, e1)", "Defines(e3, e4)", "Requires(e0, e1)", "Defines(e2, e5)"],
        "ref_edges": [
            ("e1", "e4"),
            ("e1", "e0"),
            ("e2", "e5"),
            ("e3", "e5"),
            ("e3", "e4"),
            ("e4", "e3"),
            ("e5", "e3"),
            ("e5", "e2"),
        ],
        "pred_edges": [("e2", "e5"), ("e5", "e2")],
        "ref_nodes": ["e0", "e1", "e2", "e3", "e4", "e5"],
        "pred_nodes": ["e2", "e4", "e5"],
        "first_ged": 13.0,
        "score": 0.3157894736842105,
    },
    {
        "name": "reply_format_variants",
        "kg": {
            "elements": ["Sun", "Water", "Evaporation", "Cloud", "Rain"],
            "dependencies": [
                "Causes(Sun, Evaporation)",
                "Requires(Evaporation, Water)",
                "Causes(Evaporation, Cloud)",
                "TemporalOrder(Cloud, Rain)",
            ],
        },
        "reply": "**Image Description:**\nA sun over a lake.\n** Element Evaluation: **\n*   **Sun**: yes\n• `Water`： [yes]\n1. evaporation: YES - arrows rise\n- Cloud: [no]\n+ Rain: yes\n** Dependency Evaluation: **\n*   Causes(Sun, Evaporation): Yes  The sun heats the lake.\n*   requires(evaporation, water): yes\n*   Causes(Evaporation, Cloud): yesterday\n*   TemporalOrder(Cloud, Rain): y",
        "yes": ["Sun", "Water", "Evaporation", "Causes(Sun, Evaporation)", "Requires(Evaporation, Water)"],
        "ref_edges": [("sun", "evaporation"), ("water", "evaporation"), ("evaporation", "cloud"), ("cloud", "rain")],
        "pred_edges": [("sun", "evaporation"), ("water", "evaporation")],
        "ref_nodes": ["sun", "water", "evaporation", "cloud", "rain"],
        "pred_nodes": ["sun", "water", "evaporation"],
        "first_ged": 6.0,
        "score": 0.5714285714285714,
    },
    {
        "name": "unparseable_reply",
        "kg": {
            "elements": ["Sun", "Water", "Evaporation", "Cloud", "Rain"],
            "dependencies": [
                "Causes(Sun, Evaporation)",
                "Requires(Evaporation, Water)",
                "Causes(Evaporation, Cloud)",
                "TemporalOrder(Cloud, Rain)",
            ],
        },
        "reply": "The image shows a sun over a lake; every element is clearly drawn. Verdict: all yes.",
        "yes": [],
        "ref_edges": [("sun", "evaporation"), ("water", "evaporation"), ("evaporation", "cloud"), ("cloud", "rain")],
        "pred_edges": [],
        "ref_nodes": ["sun", "water", "evaporation", "cloud", "rain"],
        "pred_nodes": [],
        "first_ged": 9.0,
        "score": 0.0,
    },
    {
        "name": "last_answer_wins",
        "kg": {
            "elements": ["Sun", "Water", "Evaporation", "Cloud", "Rain"],
            "dependencies": [
                "Causes(Sun, Evaporation)",
                "Requires(Evaporation, Water)",
                "Causes(Evaporation, Cloud)",
                "TemporalOrder(Cloud, Rain)",
            ],
        },
        "reply": "* Sun: yes\n* Water: yes\n* Evaporation: yes\n* Cloud: yes\n* Rain: yes\n* Causes(Sun, Evaporation): yes\n* Requires(Evaporation, Water): yes\n* Causes(Evaporation, Cloud): yes\n* TemporalOrder(Cloud, Rain): yes\n* Sun: no\n* Causes(Sun, Evaporation): no",
        "yes": [
            "Water",
            "Evaporation",
            "Cloud",
            "Rain",
            "Requires(Evaporation, Water)",
            "Causes(Evaporation, Cloud)",
            "TemporalOrder(Cloud, Rain)",
        ],
        "ref_edges": [("sun", "evaporation"), ("water", "evaporation"), ("evaporation", "cloud"), ("cloud", "rain")],
        "pred_edges": [("water", "evaporation"), ("evaporation", "cloud"), ("cloud", "rain")],
        "ref_nodes": ["sun", "water", "evaporation", "cloud", "rain"],
        "pred_nodes": ["water", "evaporation", "cloud", "rain"],
        "first_ged": 4.0,
        "score": 0.75,
    },
    {
        "name": "numbered_paren_and_plus_bullets_not_read",
        "kg": {
            "elements": ["Sun", "Water", "Evaporation", "Cloud", "Rain"],
            "dependencies": [
                "Causes(Sun, Evaporation)",
                "Requires(Evaporation, Water)",
                "Causes(Evaporation, Cloud)",
                "TemporalOrder(Cloud, Rain)",
            ],
        },
        "reply": "1) Sun: yes\n+ Water: yes\n- Evaporation: yes\n- Causes(Sun, Evaporation): yes\n- Requires(Evaporation, Water): yes",
        "yes": ["Evaporation", "Causes(Sun, Evaporation)", "Requires(Evaporation, Water)"],
        "ref_edges": [("sun", "evaporation"), ("water", "evaporation"), ("evaporation", "cloud"), ("cloud", "rain")],
        "pred_edges": [],
        "ref_nodes": ["sun", "water", "evaporation", "cloud", "rain"],
        "pred_nodes": ["evaporation"],
        "first_ged": 8.0,
        "score": 0.19999999999999996,
    },
    {
        "name": "change_endpoint",
        "kg": {"elements": ["Temperature", "Pressure"], "dependencies": ["Causes(change(Temperature), Pressure)"]},
        "reply": "* Temperature: yes\n* Pressure: yes\n* Causes(change(Temperature), Pressure): yes",
        "yes": ["Temperature", "Pressure", "Causes(change(Temperature), Pressure)"],
        "ref_edges": [("temperature", "pressure")],
        "pred_edges": [("temperature", "pressure")],
        "ref_nodes": ["temperature", "pressure"],
        "pred_nodes": ["temperature", "pressure"],
        "first_ged": 0.0,
        "score": 1.0,
    },
    {
        "name": "elements_equal_up_to_case_merge",
        "kg": {"elements": ["Water", "water", "Ice"], "dependencies": ["Causes(Water, Ice)"]},
        "reply": "* Water: yes\n* water: yes\n* Ice: yes\n* Causes(Water, Ice): yes",
        "yes": ["Water", "water", "Ice", "Causes(Water, Ice)"],
        "ref_edges": [("water", "ice")],
        "pred_edges": [("water", "ice")],
        "ref_nodes": ["water", "ice"],
        "pred_nodes": ["water", "ice"],
        "first_ged": 0.0,
        "score": 1.0,
    },
    {
        "name": "odd_dependencies",
        "kg": {
            "elements": ["A", "B", "C"],
            "dependencies": ["Causes(a,  b)", "Causes(b, c", "Causes b c", "Causes(a, zzz)"],
        },
        "reply": "* A: yes\n* B: yes\n* C: yes\n* Causes(a,  b): yes\n* Causes(b, c: yes\n* Causes b c: yes\n* Causes(a, zzz): yes",
        "yes": ["A", "B", "C", "Causes(a,  b)", "Causes(b, c", "Causes b c", "Causes(a, zzz)"],
        "ref_edges": [("a", "b"), ("b", "c")],
        "pred_edges": [("a", "b"), ("b", "c")],
        "ref_nodes": ["a", "b", "c"],
        "pred_nodes": ["a", "b", "c"],
        "first_ged": 0.0,
        "score": 1.0,
    },
    {
        "name": "no_whitespace_normalisation",
        "kg": {"elements": ["Water  cycle", "Rain"], "dependencies": ["Causes(Water cycle, Rain)"]},
        "reply": "* Water  cycle: yes\n* Rain: yes\n* Causes(Water cycle, Rain): yes",
        "yes": ["Water  cycle", "Rain", "Causes(Water cycle, Rain)"],
        "ref_edges": [],
        "pred_edges": [],
        "ref_nodes": ["water  cycle", "rain"],
        "pred_nodes": ["water  cycle", "rain"],
        "first_ged": 0.0,
        "score": 1.0,
    },
    {
        "name": "empty_graph",
        "kg": {"elements": [], "dependencies": []},
        "reply": "nothing",
        "yes": [],
        "ref_edges": [],
        "pred_edges": [],
        "ref_nodes": [],
        "pred_nodes": [],
        "first_ged": 0.0,
        "score": 0.0,
    },
    {
        "name": "dependency_only_half_answered",
        "kg": {"elements": ["A", "B"], "dependencies": ["Causes(a, b)", "Causes(b, a)"]},
        "reply": "* A: yes\n* B: yes\n* Causes(a, b): yes",
        "yes": ["A", "B", "Causes(a, b)"],
        "ref_edges": [("a", "b"), ("b", "a")],
        "pred_edges": [("a", "b")],
        "ref_nodes": ["a", "b"],
        "pred_nodes": ["a", "b"],
        "first_ged": 1.0,
        "score": 0.8571428571428572,
    },
]
BY_NAME = {case["name"]: case for case in CASES}


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_judge_reply_reading_matches_official(case):
    judged = P.official_judgement(case["reply"], case["kg"])
    assert [key for key, yes in judged.items() if yes] == case["yes"]
    assert set(judged) == {*case["kg"]["elements"], *case["kg"]["dependencies"]}


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_graphs_match_official(case):
    reference, predicted = P.build_graphs(case["kg"], P.official_judgement(case["reply"], case["kg"]))
    assert list(reference.nodes) == case["ref_nodes"] and list(predicted.nodes) == case["pred_nodes"]
    assert list(reference.edges) == [tuple(e) for e in case["ref_edges"]]
    assert list(predicted.edges) == [tuple(e) for e in case["pred_edges"]]
    assert P.graph_edit_distance(reference, predicted) == case["first_ged"]


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_score_matches_official(case):
    judged = P.official_judgement(case["reply"], case["kg"])
    assert P.knowledge_fidelity(case["kg"], judged) == pytest.approx(case["score"], abs=1e-12)


def test_exploit_dependencies_yes_elements_no_scores_zero():
    """A yes dependency between no-elements adds nothing: 0, in evaluation and in the reward (it paid 1.0)."""
    case = BY_NAME["exploit_elements_no_dependency_yes"]
    kg = case["kg"]
    judged = P.parse_judge_reply(case["reply"], kg, require_all=True)  # every key answered: the reward's reading
    assert judged is not None and P.knowledge_fidelity(kg, judged) == 0.0
    ref, pred = P.build_graphs(kg, judged)
    assert pred.number_of_nodes() == 0 and pred.number_of_edges() == 0


def test_first_ged_value_is_used_even_when_not_exact():
    """The official score takes the FIRST value networkx yields, here larger than the exact distance."""
    case = BY_NAME["first_ged_not_exact_small"]
    ref, pred = P.build_graphs(case["kg"], P.official_judgement(case["reply"], case["kg"]))
    import networkx as nx

    assert nx.graph_edit_distance(ref, pred) == 3.0 < P.graph_edit_distance(ref, pred) == 5.0
    assert P.knowledge_fidelity(case["kg"], P.official_judgement(case["reply"], case["kg"])) == pytest.approx(4 / 9)


def test_unparseable_reply_zero_in_evaluation_none_in_reward():
    case = BY_NAME["unparseable_reply"]
    assert P.knowledge_fidelity(case["kg"], P.official_judgement(case["reply"], case["kg"])) == 0.0
    assert P.parse_judge_reply(case["reply"], case["kg"]) is None
    assert P.parse_judge_reply(case["reply"], case["kg"], require_all=True) is None


def test_reward_reading_requires_every_key_and_never_pays_more():
    """Deliberate departure (README): the reward needs every key answered; a partial reply is None, not 'no'."""
    for case in CASES:
        reward_view = P.parse_judge_reply(case["reply"], case["kg"], require_all=True)
        if reward_view is None:
            continue
        assert P.knowledge_fidelity(case["kg"], reward_view) == pytest.approx(case["score"], abs=1e-12)
    half = BY_NAME["dependency_only_half_answered"]
    assert P.parse_judge_reply(half["reply"], half["kg"], require_all=True) is None
    assert P.knowledge_fidelity(half["kg"], P.official_judgement(half["reply"], half["kg"])) == pytest.approx(6 / 7)


def test_dependency_the_official_code_crashes_on():
    """`Causes(a,b)` (no ', '): the official parser raises TypeError; we split at the single comma (its intent)."""
    kg = {"elements": ["A", "B"], "dependencies": ["Causes(a,b)", "Causes(a,b,c)"]}
    judged = P.official_judgement("\n".join(f"- {k}: yes" for k in kg["elements"] + kg["dependencies"]), kg)
    ref, pred = P.build_graphs(kg, judged)
    assert list(ref.edges) == [("a", "b")] == list(pred.edges)  # two commas: skipped, as unparseable
    assert P.knowledge_fidelity(kg, judged) == 1.0


def test_report_matches_official_process_data():
    """R x (1 - GED-normalised), averaged per education level and per discipline over samples, as official."""
    samples = [  # (level, discipline, case, SAM2 region count or None = readability not measured: R = 1)
        ("preschool", "Biology", "all_yes", 10),
        ("preschool", "Biology", "dependency_with_a_no_endpoint", 100),
        ("preschool", "Math", "first_ged_not_exact_small", None),
        ("PhD", "Biology", "last_answer_wins", 130),
        ("PhD", "Biology", "all_yes", 200),
        ("PhD", "Math", "reply_format_variants", 70),
    ]
    records = []
    for level, discipline, name, regions in samples:
        case = BY_NAME[name]
        fidelity = P.knowledge_fidelity(case["kg"], P.official_judgement(case["reply"], case["kg"]))
        records.append({"level": level, "discipline": discipline, "score": P.mmmg_score(fidelity, regions)})
    report = P.report(records)
    assert report["per_level"] == pytest.approx({"preschool": 0.5925925925925926, "PhD": 0.2738095238095238})
    assert report["per_discipline"] == pytest.approx({"Biology": 0.3958333333333333, "Math": 0.5079365079365079})
    assert report["count_per_level"] == {"preschool": 3, "PhD": 3}
    assert report["count_per_discipline"] == {"Biology": 4, "Math": 2}


def test_judge_request_as_official():
    """Official request: the knowledge graph JSON string as in the dataset, a newline, the annotation; text first."""
    raw = json.dumps(BY_NAME["all_yes"]["kg"])
    image = Image.new("RGB", (8, 8), "white")
    request = P.judge_request(image, raw, "How water evaporates.")
    assert f"{raw}\nHow water evaporates." in request.prompt
    assert request.images == (image,) and request.text_first is True
    from core.rewards.judge import build_messages

    content = build_messages(request)[0]["content"]
    assert [part["type"] for part in content] == ["text", "image_url"]
    reply = "\n".join(
        f"* {k}: yes" for k in [*BY_NAME["all_yes"]["kg"]["elements"], *BY_NAME["all_yes"]["kg"]["dependencies"]]
    )
    assert partial(P.parse_judge_reply, kg=json.loads(raw), require_all=True)(reply) is not None


def test_recipe_judge_settings_pass_a_reasoning_model_check():
    """config.yaml's judge settings against a local judge that, like o3, rejects max_tokens and temperature: the
    start-up check and a scoring request pass; the old settings (max_tokens, temperature 0) are refused at start-up."""
    import yaml

    from core.rewards.judge import JudgeArguments, JudgeClient, JudgeUnavailable
    from core.rewards.judge_server import start_judge_server

    config = yaml.safe_load((P.PROMPT_FILE.parent / "config.yaml").read_text())
    settings = {
        k: v for k, v in config.items() if k.startswith("judge_") and k not in ("judge_base_url", "judge_cache_dir")
    }
    assert settings["judge_model"] == "o3" and settings["judge_max_tokens"] == 2048  # the official step1's limit
    case = BY_NAME["all_yes"]
    raw = json.dumps(case["kg"])
    with start_judge_server("o3", unsupported_params=("max_tokens", "temperature")) as server:
        args = JudgeArguments(**{**settings, "judge_base_url": server.url, "judge_max_retries": 0})
        with JudgeClient(args) as client:
            client.check()
            request = P.judge_request(Image.new("RGB", (16, 16), (200, 30, 30)), raw, "")
            [judged] = client.score([request], partial(P.parse_judge_reply, kg=case["kg"], require_all=True))
        assert judged is not None and set(judged) == {*case["kg"]["elements"], *case["kg"]["dependencies"]}
        old = {**settings, "judge_max_tokens_field": "max_tokens", "judge_temperature": 0.0}
        with JudgeClient(JudgeArguments(**{**old, "judge_base_url": server.url, "judge_max_retries": 0})) as client:
            with pytest.raises(JudgeUnavailable, match="Unsupported parameter"):
                client.check()
