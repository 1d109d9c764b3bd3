"""The MMMG judge protocol: knowledge-graph checks by a VLM judge, scored by graph edit distance.

MMMG gives every prompt a knowledge graph `{"elements": [...], "dependencies": ["Relation(src, tgt)", ...]}`. A VLM
judge sees the generated image, the graph and the annotation (`judge_prompt.txt`), describes the image and answers
yes/no for every element and every dependency: is it directly, clearly and unambiguously visualised? The answers
give a predicted graph, compared with the reference graph:

* **Graphs** (`build_graphs`, networkx DiGraphs, node names lower-cased and stored as the `name` attribute): the
  reference graph has every element and every dependency, the predicted graph the elements and dependencies judged
  yes (a dependency judged yes brings its two endpoints, as `add_edge` does). Edge directions: `Requires(a, b)` is
  b -> a (b is needed for a), `Defines(a, b)` adds a -> b and b -> a, every other relation (Contains, Entails,
  Causes, TemporalOrder, unknown names) src -> tgt. Endpoints are matched to element names exactly
  (case-insensitively), else by a unique substring (first an element containing the endpoint, then an element
  the endpoint contains; exactly one candidate needed), else kept as a node of their own.
* **Knowledge fidelity** (`knowledge_fidelity`): ``1 - GED / (|V1| + |V2| + |E1| + |E2|)`` with GED the FIRST value
  yielded by networkx's anytime edit-distance search (`optimize_edit_paths`, the generator behind
  `optimize_graph_edit_distance`) with node_match comparing names: taking only the first value (a complete,
  greedy-ordered edit path; later values only refine it) bounds the time, and a timeout (`ged_timeout_s`) bounds
  it further. Should the timeout pass before any value, the exact distance is used, which is known in closed form
  here because the predicted graph is a subgraph of the reference: (|V1| - |V2|) + (|E1| - |E2|).
  If the denominator is 0 (empty reference graph, so empty prediction too) the protocol sets the normalised
  GED to 1, i.e. fidelity 0: a prompt with nothing to check gives no reward signal. All yes gives 1, all no 0.
* **Readability** (optional, off by default): MMMG multiplies by R = 1 if SAM2 segments the image into at most 70
  regions, else max((160 - regions) / 90, 0). `readability(count)` is the formula; counting regions needs SAM2 and
  its weights (`count_regions`, raises `ReadabilityUnavailable` without them); `mmmg_score` is R x fidelity when a
  region count is given, fidelity alone otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import networkx as nx
from PIL import Image

from core.judge import JudgeRequest

PROMPT_FILE = Path(__file__).resolve().parent / "judge_prompt.txt"
RELATIONS = ("Defines", "Contains", "Requires", "Entails", "Causes", "TemporalOrder")
DEFAULT_GED_TIMEOUT_S = 10.0
READABLE_REGIONS = 70  # at most this many SAM2 regions: R = 1
UNREADABLE_REGIONS = 160  # R falls linearly from 1 (70 regions) to 0 (160 regions)

_DEPENDENCY_RE = re.compile(r"\A\s*([A-Za-z_][A-Za-z0-9_ ]*?)\s*\((.*)\)\s*\Z", re.DOTALL)
_BULLET_RE = re.compile(r"\A\s*(?:[-*+\u2022]|\d+[.)]|\(\d+\))\s+")
_ANSWER_RE = re.compile(r"\A[\s\"'`*_]*(yes|no)(?![A-Za-z])", re.IGNORECASE)
_QUOTES = "\"'`"


# ------------------------------------------------------------------------------------------------ knowledge graphs
def parse_dependency(dependency: str, elements: list[str] | None = None) -> tuple[str, str, str] | None:
    """`"Relation(src, tgt)"` as (relation, src, tgt), stripped; None if it is not of that shape.

    An endpoint may itself contain commas: when `elements` is given, the split whose sides are both element names
    (case-insensitively) wins, then one where one side is; otherwise the first comma splits.
    """
    if not isinstance(dependency, str):
        return None
    match = _DEPENDENCY_RE.match(dependency)
    if not match:
        return None
    relation, inner = match.group(1).strip(), match.group(2)
    cuts = [i for i, char in enumerate(inner) if char == ","]
    splits = [(inner[:i].strip(), inner[i + 1 :].strip()) for i in cuts]
    splits = [(a, b) for a, b in splits if a and b]
    if not splits:
        return None
    if elements and len(splits) > 1:
        names = {e.strip().lower() for e in elements}
        splits.sort(key=lambda ab: -((ab[0].lower() in names) + (ab[1].lower() in names)))  # stable: first comma
    return relation, splits[0][0], splits[0][1]


def kg_problems(kg: Any) -> list[str]:
    """Everything wrong with a parsed knowledge graph (empty list: usable)."""
    if not isinstance(kg, dict):
        return [f"knowledge graph must be a JSON object, got {type(kg).__name__}"]
    problems = []
    elements = kg.get("elements")
    dependencies = kg.get("dependencies")
    if not isinstance(elements, list):
        problems.append(f"'elements' must be a list, got {type(elements).__name__}")
        elements = []
    else:
        bad = [e for e in elements if not isinstance(e, str) or not e.strip()]
        if bad:
            problems.append(f"'elements' must be non-empty strings, got {bad[:3]!r}")
    if not isinstance(dependencies, list):
        problems.append(f"'dependencies' must be a list, got {type(dependencies).__name__}")
    else:
        names = [e for e in elements if isinstance(e, str)]
        bad = [d for d in dependencies if parse_dependency(d, names) is None]
        if bad:
            problems.append(f"unparseable dependencies (expected 'Relation(source, target)'): {bad[:3]!r}")
    return problems


def parse_kg(raw: str | Mapping[str, Any]) -> dict[str, list[str]]:
    """The knowledge graph from MMMG's `Knowledge_Graph` JSON string (or an already parsed dict); ValueError if bad."""
    if isinstance(raw, Mapping):
        kg: Any = dict(raw)
    else:
        try:
            kg = json.loads(raw)
        except (TypeError, ValueError) as err:
            raise ValueError(f"knowledge graph is not valid JSON ({err})") from err
    problems = kg_problems(kg)
    if problems:
        raise ValueError("; ".join(problems))
    return {"elements": list(kg["elements"]), "dependencies": list(kg["dependencies"])}


def _node(name: str) -> str:
    return " ".join(name.split()).lower()


def resolve_endpoint(endpoint: str, element_nodes: list[str]) -> str:
    """The element node an endpoint names: exact match, else a unique substring match, else the endpoint itself."""
    node = _node(endpoint)
    if node in element_nodes:
        return node
    for candidates in ([e for e in element_nodes if node in e], [e for e in element_nodes if e in node]):
        unique = set(candidates)
        if len(unique) == 1:
            return unique.pop()
        if len(unique) > 1:
            return node  # ambiguous: keep the endpoint as its own node
    return node


def _edges(relation: str, src: str, tgt: str) -> list[tuple[str, str]]:
    if relation.lower() == "requires":
        return [(tgt, src)]
    if relation.lower() == "defines":
        return [(src, tgt), (tgt, src)]
    return [(src, tgt)]


def _add_edge(graph: nx.DiGraph, u: str, v: str, relation: str) -> None:
    for node in (u, v):
        if node not in graph:
            graph.add_node(node, name=node)
    graph.add_edge(u, v, relation=relation)


def build_graphs(kg: Mapping[str, Any], judged: Mapping[str, bool]) -> tuple[nx.DiGraph, nx.DiGraph]:
    """(reference graph, predicted graph); `judged` maps element names / dependency strings to yes (True)."""
    elements = list(kg.get("elements") or [])
    element_nodes = list(dict.fromkeys(_node(e) for e in elements))
    reference, predicted = nx.DiGraph(), nx.DiGraph()
    for element in elements:
        node = _node(element)
        reference.add_node(node, name=node)
        if judged.get(element, False):
            predicted.add_node(node, name=node)
    for dependency in kg.get("dependencies") or []:
        parsed = parse_dependency(dependency, elements)
        if parsed is None:
            continue  # data.py rejects such rows; a hand-made kg just loses the edge
        relation, src, tgt = parsed
        u, v = resolve_endpoint(src, element_nodes), resolve_endpoint(tgt, element_nodes)
        for a, b in _edges(relation, u, v):
            _add_edge(reference, a, b, relation)
            if judged.get(dependency, False):
                _add_edge(predicted, a, b, relation)
    return reference, predicted


def _same_name(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return a.get("name") == b.get("name")


def graph_edit_distance(g1: nx.DiGraph, g2: nx.DiGraph, timeout_s: float | None = DEFAULT_GED_TIMEOUT_S) -> float:
    """The first GED value networkx's anytime search yields (see the module docstring for the bound)."""
    for _nodes, _edges_path, cost in nx.optimize_edit_paths(g1, g2, node_match=_same_name, timeout=timeout_s):
        return float(cost)
    is_subgraph = all(n in g1 for n in g2) and all(g1.has_edge(u, v) for u, v in g2.edges)
    if is_subgraph:
        return float(g1.number_of_nodes() - g2.number_of_nodes() + g1.number_of_edges() - g2.number_of_edges())
    # Not reached for graphs from build_graphs; the trivial upper bound (delete everything, insert everything).
    return float(g1.number_of_nodes() + g2.number_of_nodes() + g1.number_of_edges() + g2.number_of_edges())


def knowledge_fidelity(
    kg: Mapping[str, Any], judged: Mapping[str, bool], ged_timeout_s: float | None = DEFAULT_GED_TIMEOUT_S
) -> float:
    """1 - GED / (|V1| + |V2| + |E1| + |E2|); 0.0 for an empty reference graph (normalised GED := 1)."""
    reference, predicted = build_graphs(kg, judged)
    denominator = (
        reference.number_of_nodes()
        + predicted.number_of_nodes()
        + reference.number_of_edges()
        + predicted.number_of_edges()
    )
    if denominator == 0:
        return 0.0
    ged = graph_edit_distance(reference, predicted, ged_timeout_s)
    return max(0.0, min(1.0, 1.0 - ged / denominator))


# ------------------------------------------------------------------------------------------------ judge request
def load_template(path: str | Path = PROMPT_FILE) -> str:
    return Path(path).read_text(encoding="utf-8")


def format_prompt(kg: Mapping[str, Any], annotation: str, template: str | None = None) -> str:
    """The judge prompt: the template with the element list, the dependency list and the annotation filled in."""
    template = load_template() if template is None else template
    elements = "\n".join(f"- {e}" for e in kg.get("elements") or []) or "(none)"
    dependencies = "\n".join(f"- {d}" for d in kg.get("dependencies") or []) or "(none)"
    prompt = template.format(elements=elements, dependencies=dependencies, annotation=(annotation or "").strip() or "-")
    # The keys once more on one machine-readable line: a judge can copy them exactly, and the project's local judge
    # server answers such checklist prompts (`KEYS: k1 | k2 | ...`) for the smoke runs and tests.
    keys = [*(kg.get("elements") or []), *(kg.get("dependencies") or [])]
    return f"{prompt.rstrip()}\n\nKEYS: {' | '.join(keys)}"


def judge_request(
    image: Image.Image, kg: Mapping[str, Any], annotation: str, template: str | None = None
) -> JudgeRequest:
    """One judge query: the generated image, then the filled-in `judge_prompt.txt`."""
    return JudgeRequest(prompt=format_prompt(kg, annotation, template), images=(image,))


# ------------------------------------------------------------------------------------------------ reply parsing
def _normalise_key(key: str) -> str:
    key = key.replace("**", "").replace("__", "").strip().strip(_QUOTES).strip()
    key = " ".join(key.split()).lower()
    return re.sub(r"\s*([(),])\s*", r"\1", key)


def parse_judge_reply(reply: str, kg: Mapping[str, Any], require_all: bool = False) -> dict[str, bool] | None:
    """{element or dependency string exactly as in `kg`: judged yes}, or None if no `key: yes|no` line is found.

    Lines are `key: yes|no`, case-insensitive, with markdown bullets (`-`, `*`, `1.`), `**bold**`, quotes and
    backticks tolerated, and whitespace inside the key (around brackets and commas) ignored. Text after the answer
    is ignored (`yes - the arrow shows it`). Lines whose key is not in the graph are prose. When a key is answered
    several times the LAST answer wins (the final block comes after the description). Keys never answered are no,
    unless `require_all`: then a reply that leaves any key unanswered is None. The training reward sets it: a
    checklist answered in part (a reply cut at max_tokens, a mis-copied key, an answer other than yes/no) is a
    failed judge call, not a verdict of "no" on the rest.
    """
    if not isinstance(reply, str):
        return None
    keys = [*(kg.get("elements") or []), *(kg.get("dependencies") or [])]
    lookup: dict[str, list[str]] = {}
    for key in keys:
        lookup.setdefault(_normalise_key(key), []).append(key)
    answers: dict[str, bool] = {}
    for line in reply.splitlines():
        text = _BULLET_RE.sub("", line).replace("**", "").strip()
        for colon in [i for i, char in enumerate(text) if char == ":"]:
            originals = lookup.get(_normalise_key(text[:colon]))
            if not originals:
                continue
            match = _ANSWER_RE.match(text[colon + 1 :])
            if match:
                for original in originals:
                    answers[original] = match.group(1).lower() == "yes"
                break
    if not answers or (require_all and len(answers) < len(set(keys))):
        return None
    return {key: answers.get(key, False) for key in keys}


# ------------------------------------------------------------------------------------------------ readability
class ReadabilityUnavailable(RuntimeError):
    """SAM2 (the `sam2` package and a checkpoint) is not available, so regions cannot be counted."""


def readability(region_count: int) -> float:
    """MMMG's R: 1 for at most 70 regions, else max((160 - regions) / 90, 0)."""
    if region_count < 0:
        raise ValueError(f"region_count must be >= 0, got {region_count}")
    if region_count <= READABLE_REGIONS:
        return 1.0
    return max((UNREADABLE_REGIONS - region_count) / (UNREADABLE_REGIONS - READABLE_REGIONS), 0.0)


def count_regions(image: Image.Image, checkpoint: str | Path | None, model_cfg: str | None = None) -> int:
    """Regions SAM2's automatic mask generator segments `image` into; ReadabilityUnavailable without SAM2.

    Not exercised offline (no SAM2 weights here): pass the checkpoint of a SAM2 release and its config name.
    """
    if checkpoint is None or not Path(checkpoint).is_file():
        raise ReadabilityUnavailable(f"SAM2 checkpoint not found: {checkpoint!r}")
    try:
        import numpy as np
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        from sam2.build_sam import build_sam2
    except ImportError as err:
        raise ReadabilityUnavailable(f"the sam2 package is not installed ({err})") from err
    model = build_sam2(model_cfg or "configs/sam2.1/sam2.1_hiera_l.yaml", str(checkpoint))
    masks = SAM2AutomaticMaskGenerator(model).generate(np.asarray(image.convert("RGB")))
    return len(masks)


def mmmg_score(fidelity: float, region_count: int | None = None) -> float:
    """R x fidelity when a region count is given (readability on), the fidelity alone otherwise (the default)."""
    return fidelity if region_count is None else readability(region_count) * fidelity
