"""MMMG judge protocol: graph construction, GED-based knowledge fidelity, reply parsing, prompt, readability."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.helpers import load_recipe_module

P = load_recipe_module("mmmg", "protocol")

KG = {
    "elements": ["Photosynthesis", "sunlight", "glucose"],
    "dependencies": ["Requires(photosynthesis, sunlight)", "Causes(photosynthesis, glucose)"],
}


def judged(kg, yes=()):
    keys = [*kg["elements"], *kg["dependencies"]]
    return {k: k in yes for k in keys}


def test_all_yes_is_one():
    assert P.knowledge_fidelity(KG, judged(KG, yes=KG["elements"] + KG["dependencies"])) == 1.0


def test_all_no_is_zero():
    # reference: V1 = 3 nodes, E1 = 2 edges; prediction: V2 = 0, E2 = 0.
    # GED = delete 3 nodes + 2 edges = 5; denominator = 3 + 0 + 2 + 0 = 5; fidelity = 1 - 5/5 = 0.
    assert P.knowledge_fidelity(KG, judged(KG)) == 0.0


def test_partial_by_hand():
    # yes: Photosynthesis, sunlight, Requires(...). Reference V1 = 3, E1 = 2; prediction V2 = 2, E2 = 1.
    # The exact GED is 2 (delete node glucose + edge photosynthesis->glucose), but the official score takes the
    # FIRST value networkx's optimize_graph_edit_distance yields (no node matching): 4 here; 1 - 4/8 = 0.5.
    import networkx as nx

    yes = ["Photosynthesis", "sunlight", "Requires(photosynthesis, sunlight)"]
    ref, pred = P.build_graphs(KG, judged(KG, yes))
    assert nx.graph_edit_distance(ref, pred) == 2.0 and P.graph_edit_distance(ref, pred) == 4.0
    assert P.knowledge_fidelity(KG, judged(KG, yes)) == pytest.approx(0.5)


def test_defines_counts_two_edges_by_hand():
    kg = {"elements": ["slope", "line"], "dependencies": ["Defines(slope, line)"]}
    # only the two elements judged yes: V1 = 2, E1 = 2 (both directions); V2 = 2, E2 = 0.
    # GED = 2 edge deletions; denominator = 2 + 2 + 2 + 0 = 6; fidelity = 1 - 2/6 = 2/3
    assert P.knowledge_fidelity(kg, judged(kg, ["slope", "line"])) == pytest.approx(2 / 3)


def test_edge_needs_both_endpoints_judged_yes():
    # dependency yes, elements no: the official graph has no nodes to attach it to -> empty prediction, fidelity 0
    # (it used to bring its own endpoints and score 1.0: an exploitable reward).
    kg = {"elements": ["a", "b"], "dependencies": ["Causes(a, b)"]}
    ref, pred = P.build_graphs(kg, judged(kg, ["Causes(a, b)"]))
    assert pred.number_of_nodes() == 0 and pred.number_of_edges() == 0
    assert P.knowledge_fidelity(kg, judged(kg, ["Causes(a, b)"])) == 0.0


def test_direction_rules():
    kg = {
        "elements": ["A", "B", "C", "D", "E", "F", "G"],
        "dependencies": [
            "Requires(A, B)",
            "Defines(C, D)",
            "Contains(A, C)",
            "Entails(B, E)",
            "Causes(E, F)",
            "TemporalOrder(F, G)",
        ],
    }
    ref, pred = P.build_graphs(kg, judged(kg))
    assert set(ref.edges) == {("b", "a"), ("c", "d"), ("d", "c"), ("a", "c"), ("b", "e"), ("e", "f"), ("f", "g")}
    assert ref.is_directed()
    assert pred.number_of_nodes() == 0 and pred.number_of_edges() == 0


def test_endpoint_substring_matching():
    kg = {
        "elements": ["cell membrane", "nucleus", "red blood cell", "white blood cell"],
        "dependencies": ["Contains(membrane, nucleus)", "Causes(blood cell, Nucleus)", "Causes(the nucleus, x)"],
    }
    ref, _ = P.build_graphs(kg, {})
    # "membrane" is in exactly one element -> that element; "blood cell" is in two -> unmatched, edge dropped;
    # "the nucleus" (has a space) contains exactly one element -> nucleus, but "x" matches nothing -> edge dropped.
    assert list(ref.edges) == [("cell membrane", "nucleus")]
    assert list(ref.nodes) == ["cell membrane", "nucleus", "red blood cell", "white blood cell"]


def test_empty_graph():
    kg = {"elements": [], "dependencies": []}
    # denominator 0 -> normalised GED set to 1 -> fidelity 0 (nothing to check, no reward signal)
    assert P.knowledge_fidelity(kg, {}) == 0.0


def test_dependency_parsing():
    # As official: relation unstripped, split at the first ", ", endpoints lower-cased but not stripped.
    assert P.split_dependency("Requires( a , b )") == ("Requires", " a ", "b ")
    assert P.split_dependency("Causes(X, y, z)") == ("Causes", "x", "y, z")
    assert P.split_dependency("Requires (a, b)") == ("Requires ", "a", "b")
    assert P.dependency_edges("Requires (a, b)") == [("a", "b", "Requires ")]  # not "requires": forward edge
    assert P.split_dependency("not a relation") is None
    assert P.split_dependency("Causes(x)") is None
    with pytest.raises(ValueError, match="JSON"):
        P.parse_kg("{oops")
    with pytest.raises(ValueError, match="unparseable"):
        P.parse_kg(json.dumps({"elements": ["a"], "dependencies": ["a -> b"]}))
    assert P.parse_kg(json.dumps(KG)) == KG


def test_reply_parsing_messy():
    reply = """The image shows a leaf in the sun with an arrow to a sugar molecule.
Photosynthesis: maybe partially, discussed below.

ANSWERS:
- **Photosynthesis**: YES
* `sunlight`: no - the sun is not drawn
1. glucose: Yes
**Requires(photosynthesis,sunlight)**: yes
"""
    out = P.parse_judge_reply(reply, KG)
    assert out == {
        "Photosynthesis": True,
        "sunlight": False,
        "glucose": True,
        "Requires(photosynthesis, sunlight)": False,  # key not copied exactly (space) -> not read -> no
        "Causes(photosynthesis, glucose)": False,  # not answered -> no
    }


def test_reply_last_answer_wins_and_none_when_nothing():
    reply = "sunlight: yes\nlater, final block:\nsunlight: no\nglucose: yes"
    out = P.parse_judge_reply(reply, KG)
    assert out["sunlight"] is False and out["glucose"] is True and out["Photosynthesis"] is False
    assert P.parse_judge_reply("I cannot see anything useful here. Overall: no.", KG) is None
    assert P.parse_judge_reply("", KG) is None
    assert P.parse_judge_reply("glucose: perhaps", KG) is None


def test_reply_must_answer_every_key_when_required():
    """The reward's reading: a checklist answered in part is no verdict (None), not "no" for the rest."""
    keys = [*KG["elements"], *KG["dependencies"]]
    complete = "ANSWERS:\n" + "\n".join(f"{k}: {'yes' if i % 2 else 'no'}" for i, k in enumerate(keys))
    assert P.parse_judge_reply(complete, KG, require_all=True) == {k: bool(i % 2) for i, k in enumerate(keys)}
    cut = complete.rsplit("\n", 1)[0]  # the last key's line lost (a reply cut at max_tokens)
    assert P.parse_judge_reply(cut, KG)["Causes(photosynthesis, glucose)"] is False  # protocol default: no
    assert P.parse_judge_reply(cut, KG, require_all=True) is None
    unsure = complete.replace("glucose: no", "glucose: maybe")
    assert "glucose: maybe" in unsure and P.parse_judge_reply(unsure, KG, require_all=True) is None
    twice = {"elements": ["sunlight", "Sunlight"], "dependencies": []}  # two keys, one normalised name: one line
    # As official, a line answers the one key it names (exact spelling first), so "Sunlight" stays unanswered.
    assert P.parse_judge_reply("sunlight: yes", twice) == {"sunlight": True, "Sunlight": False}
    assert P.parse_judge_reply("sunlight: yes", twice, require_all=True) is None


def test_prompt_and_request_with_real_kg():
    raw = json.dumps(KG)
    text = P.format_prompt(raw, "How plants make sugar.")
    assert f"{raw}\nHow plants make sugar." in text  # as official: the graph's JSON, a newline, the annotation
    assert "KEYS: " + " | ".join([*KG["elements"], *KG["dependencies"]]) in text
    image = Image.new("RGB", (8, 8), "white")
    request = P.judge_request(image, raw, "How plants make sugar.")
    assert request.prompt == text and request.images == (image,) and request.text_first
    # a reply in the format the prompt asks for round-trips
    reply = "A diagram.\nANSWERS:\n" + "\n".join(f"{k}: yes" for k in [*KG["elements"], *KG["dependencies"]])
    assert P.knowledge_fidelity(KG, P.parse_judge_reply(reply, KG)) == 1.0


def test_readability():
    assert P.readability(0) == 1.0 and P.readability(70) == 1.0
    assert P.readability(115) == pytest.approx(0.5)  # (160 - 115) / 90
    assert P.readability(160) == 0.0 and P.readability(500) == 0.0
    assert P.mmmg_score(0.8) == 0.8  # readability off by default
    assert P.mmmg_score(0.8, region_count=115) == pytest.approx(0.4)
    with pytest.raises(P.ReadabilityUnavailable):
        P.count_regions(Image.new("RGB", (8, 8)), checkpoint=None)
