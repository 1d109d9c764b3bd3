"""The MMMG judge protocol, as the official evaluation computes it: knowledge-graph checks by a VLM judge, scored by
graph edit distance.

Official source: github.com/MMMGBench/MMMG (commit 98bb915a645d6d575dea3700a391966bd317c83a):
`mmmg_eval/step1_knowledge_integrity.py` (the judge request), `mmmg_eval/utils/stat_knowledge.py` (reading the judge's
reply), `mmmg_eval/step3_stat.py` (graphs, GED, the report), `mmmg_eval/step2_readability.py` (SAM2 readability).
This module is the project's own implementation of those rules; tests/test_mmmg_official.py holds values computed by
running the official code. The rules:

* **Reply reading** (`read_checklist`): after removing `**` and turning `[yes]` / `[no]` into `yes` / `no`, a line
  counts when it starts (after whitespace, an optional `*`, `-`, `•` or `12.` bullet and backticks) with a key of the
  knowledge graph (case-insensitively; elements first, then dependencies, in graph order), then backticks, `:` or the
  full-width `：`, then `yes` / `no` (or a single letter of them, read as no) ending at a word boundary. Whitespace in
  these gaps may span lines. A later answer to a key overrides an earlier one; unanswered keys are no; a reply with
  no such line is all no (score 0).
* **Dependencies** (`split_dependency`, `dependency_edges`): the relation is the text before the first `(` (NOT
  stripped: `Requires (a, b)` is an unknown relation), a trailing `)` is dropped, the endpoints split at the first
  `, ` and are lower-cased but not stripped; `change(x)` names x. `Requires(a, b)` is the edge b -> a,
  `Defines(a, b)` both a -> b and b -> a, every other relation a -> b. Without `(` a dependency is skipped.
* **Graphs** (`build_graphs`): nodes are the lower-cased names of the elements judged yes (the reference graph:
  all elements); an edge of a dependency judged yes is added only if both endpoints match a node - exactly, else a
  unique candidate among the nodes that contain the endpoint or (when the endpoint has a space) that the endpoint
  contains. Matching is against the yes-nodes only, so a dependency never brings nodes of its own.
* **Knowledge fidelity** (`knowledge_fidelity`): 1 - GED / (|V1| + |V2| + |E1| + |E2|), GED the FIRST value of
  networkx's `optimize_graph_edit_distance` (no node or edge matching, no timeout), which is often larger than the
  exact distance; an empty reference graph scores 0.
* **Report** (`report`): R x fidelity per sample, averaged over the samples of each education level and of each
  discipline, with R = 1 for at most 70 SAM2 regions, else max((160 - regions) / 90, 0), and R = 1 when readability
  is not measured (as official for a sample without a region count).

Where the official code crashes, this module decides (documented in the README): a dependency without `, ` (the
official fallback raises TypeError) splits at its single comma, or is skipped with none or several; an empty
endpoint list (`Causes(`) is skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
from PIL import Image

from core.rewards.judge import JudgeRequest

PROMPT_FILE = Path(__file__).resolve().parent / "judge_prompt.txt"
RELATIONS = ("Defines", "Contains", "Requires", "Entails", "Causes", "TemporalOrder")
READABLE_REGIONS = 70  # at most this many SAM2 regions: R = 1
UNREADABLE_REGIONS = 160  # R falls linearly from 1 (70 regions) to 0 (160 regions)

# SAM2 settings of the official readability step (step2_readability.py): model config and automatic mask generator.
SAM2_MODEL_CFG = "configs/sam2.1/sam2.1_hiera_l.yaml"
SAM2_GENERATOR_SETTINGS: dict[str, Any] = {
    "points_per_side": 32,
    "points_per_batch": 256,
    "pred_iou_thresh": 0.7,
    "stability_score_thresh": 0.95,
    "stability_score_offset": 0.7,
    "crop_n_layers": 1,
    "box_nms_thresh": 0.6,
    "crop_n_points_downscale_factor": 2,
    "min_mask_region_area": 0.0,
    "use_m2m": True,
}


# ------------------------------------------------------------------------------------------------ knowledge graphs
def split_dependency(dependency: str) -> tuple[str, str, str] | None:
    """(relation, source, target) of `Relation(source, target)` read as the official scorer reads it; None: skipped.

    The relation keeps its spacing (`Requires (a, b)` has relation `Requires `), endpoints are lower-cased, not
    stripped. See the module docstring for the cases the official code crashes on.
    """
    if not isinstance(dependency, str) or "(" not in dependency:
        return None
    relation, inner = dependency.split("(", 1)
    if not inner:
        return None
    if inner.endswith(")"):
        inner = inner[:-1]
    if ", " in inner:
        source, target = inner.split(", ", 1)
    elif inner.count(",") == 1:
        source, target = inner.split(",", 1)
    else:
        return None
    source, target = source.lower(), target.lower()
    if "change(" in source:
        source = source.strip(")").split("change(")[-1]
    if "change(" in target:
        target = target.strip(")").split("change(")[-1]
    return relation, source, target


def dependency_edges(dependency: str) -> list[tuple[str, str, str]]:
    """The directed edges (source, target, relation) a dependency stands for; [] if it cannot be read."""
    parsed = split_dependency(dependency)
    if parsed is None:
        return []
    relation, source, target = parsed
    if relation.lower() == "requires":
        return [(target, source, relation)]
    if relation.lower() == "defines":
        return [(source, target, relation), (target, source, relation)]
    return [(source, target, relation)]


def parse_dependency(dependency: str) -> tuple[str, str, str] | None:
    """Alias of `split_dependency`, kept for callers of the old name."""
    return split_dependency(dependency)


def kg_problems(kg: Any) -> list[str]:
    """Everything wrong with a parsed knowledge graph (empty list: usable)."""
    if not isinstance(kg, dict):
        return [f"knowledge graph must be a JSON object, got {type(kg).__name__}"]
    problems = []
    elements = kg.get("elements")
    dependencies = kg.get("dependencies")
    if not isinstance(elements, list):
        problems.append(f"'elements' must be a list, got {type(elements).__name__}")
    else:
        bad = [e for e in elements if not isinstance(e, str) or not e.strip()]
        if bad:
            problems.append(f"'elements' must be non-empty strings, got {bad[:3]!r}")
    if not isinstance(dependencies, list):
        problems.append(f"'dependencies' must be a list, got {type(dependencies).__name__}")
    else:
        bad = [d for d in dependencies if split_dependency(d) is None]
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


def _match(endpoint: str, graph: nx.DiGraph) -> str | None:
    """The node an endpoint names: itself if a node, else the one candidate (see the module docstring), else None."""
    if endpoint in graph:
        return endpoint
    candidates = [n for n in graph.nodes if endpoint in n and endpoint != n]
    if " " in endpoint:
        candidates += [n for n in graph.nodes if n in endpoint and n != endpoint]
    return candidates[0] if len(candidates) == 1 else None


def _graph(elements: Mapping[str, bool], dependencies: Mapping[str, bool]) -> nx.DiGraph:
    graph = nx.DiGraph()
    for element, yes in elements.items():
        if yes:
            graph.add_node(element.lower())
    edges = [edge for dependency, yes in dependencies.items() if yes for edge in dependency_edges(dependency)]
    for source, target, relation in edges:
        u, v = _match(source, graph), _match(target, graph)
        if u is not None and v is not None:
            graph.add_edge(u, v, label=relation)
    return graph


def build_graphs(kg: Mapping[str, Any], judged: Mapping[str, bool]) -> tuple[nx.DiGraph, nx.DiGraph]:
    """(reference graph, predicted graph); `judged` maps element names / dependency strings to yes (True).

    Node and edge insertion order follows the official code (it decides the first GED value networkx yields).
    """
    elements = dict.fromkeys(kg.get("elements") or [], True)
    dependencies = dict.fromkeys(kg.get("dependencies") or [], True)
    reference = _graph(elements, dependencies)
    predicted = _graph(
        {e: bool(judged.get(e, False)) for e in elements}, {d: bool(judged.get(d, False)) for d in dependencies}
    )
    return reference, predicted


def graph_edit_distance(g1: nx.DiGraph, g2: nx.DiGraph) -> float:
    """The FIRST value networkx's `optimize_graph_edit_distance` yields (no matching functions, no timeout)."""
    for cost in nx.optimize_graph_edit_distance(g1, g2):
        return float(cost)
    return 0.0  # as official (StopIteration); networkx always yields at least one value without an upper bound


def knowledge_fidelity(kg: Mapping[str, Any], judged: Mapping[str, bool]) -> float:
    """1 - GED / (|V1| + |V2| + |E1| + |E2|); 0.0 for an empty reference graph (normalised GED := 1, as official)."""
    reference, predicted = build_graphs(kg, judged)
    denominator = (
        reference.number_of_nodes()
        + predicted.number_of_nodes()
        + reference.number_of_edges()
        + predicted.number_of_edges()
    )
    if denominator == 0:
        return 0.0
    return 1.0 - graph_edit_distance(reference, predicted) / denominator


# ------------------------------------------------------------------------------------------------ judge request
def load_template(path: str | Path = PROMPT_FILE) -> str:
    return Path(path).read_text(encoding="utf-8")


def _kg_text(knowledge_graph: str | Mapping[str, Any]) -> str:
    return knowledge_graph if isinstance(knowledge_graph, str) else json.dumps(dict(knowledge_graph))


def format_prompt(knowledge_graph: str | Mapping[str, Any], annotation: str, template: str | None = None) -> str:
    """The judge prompt (our own wording): as official, the knowledge graph JSON exactly as the dataset stores it, a
    newline and the annotation; then a `KEYS:` line (the keys once more, for the project's local judge server)."""
    template = load_template() if template is None else template
    raw = _kg_text(knowledge_graph)
    kg = json.loads(raw)
    prompt = template.format(knowledge=f"{raw}\n{annotation or ''}")
    keys = [*(kg.get("elements") or []), *(kg.get("dependencies") or [])]
    return f"{prompt.rstrip()}\n\nKEYS: {' | '.join(keys)}"


def judge_request(
    image: Image.Image, knowledge_graph: str | Mapping[str, Any], annotation: str, template: str | None = None
) -> JudgeRequest:
    """One judge query as official: the prompt text first, then the generated image."""
    return JudgeRequest(prompt=format_prompt(knowledge_graph, annotation, template), images=(image,), text_first=True)


# ------------------------------------------------------------------------------------------------ reply parsing
def _clean_key(raw: str) -> str:
    key = raw.strip()
    key = re.sub(r"^[*`]+", "", key)
    key = re.sub(r"[*`]+$", "", key)
    key = re.sub(r"[:\uff1a]$", "", key)
    return key.strip()


def read_checklist(reply: str, kg: Mapping[str, Any]) -> dict[str, bool]:
    """{key: yes} for the keys the reply answers, by the official reading (module docstring); later lines win."""
    elements = list(dict.fromkeys(kg.get("elements") or []))
    dependencies = list(dict.fromkeys(kg.get("dependencies") or []))
    if not isinstance(reply, str):
        return {}
    text = reply.replace("**", "").replace("[yes]", "yes").replace("[no]", "no")
    alternatives = "|".join(re.escape(k) for k in [*(kg.get("elements") or []), *(kg.get("dependencies") or [])])
    line = re.compile(
        rf"^\s*(?:[*\-\u2022]|\d+\.)?\s*`*\s*({alternatives})`*\s*[:\uff1a]\s*(yes|no|[yesno])\b",
        re.IGNORECASE | re.MULTILINE,
    )
    answers: dict[str, bool] = {}
    for raw, value in line.findall(text):
        key = _clean_key(raw)
        found = key if key in elements or key in dependencies else None
        if found is None:
            found = next((k for k in [*elements, *dependencies] if k.lower() == key.lower()), None)
        if found is not None:
            answers[found] = value.strip().lower() == "yes"
    return answers


def official_judgement(reply: str, kg: Mapping[str, Any]) -> dict[str, bool]:
    """Every key of `kg` -> yes, as the official evaluation reads `reply` (unanswered: no; nothing readable: all no)."""
    answers = read_checklist(reply, kg)
    keys = [*(kg.get("elements") or []), *(kg.get("dependencies") or [])]
    return {key: answers.get(key, False) for key in keys}


def parse_judge_reply(reply: str, kg: Mapping[str, Any], require_all: bool = False) -> dict[str, bool] | None:
    """`official_judgement`, or None if the reply answers no key at all.

    `require_all` (the training reward's reading, a deliberate departure documented in the README): None unless
    EVERY key is answered: a reply cut at max_tokens, a mis-copied key or an answer other than yes/no is a failed
    judge call, not a verdict of "no" on the rest. Whenever it gives a dict, the dict is the official one, so the
    reward never pays more than the official score for the same reply.
    """
    answers = read_checklist(reply, kg)
    keys = [*(kg.get("elements") or []), *(kg.get("dependencies") or [])]
    if not answers or (require_all and any(key not in answers for key in keys)):
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

    The official settings: SAM2.1 hiera-large (`SAM2_MODEL_CFG`), `apply_postprocessing=False`, the generator with
    `SAM2_GENERATOR_SETTINGS`. Not the whole official step: it then merges the masks with PaddleOCR text lines
    (drops masks overlapping a line box, adds one region per line), which this project does not do (README).
    Not exercised offline (no SAM2 weights here).
    """
    if checkpoint is None or not Path(checkpoint).is_file():
        raise ReadabilityUnavailable(f"SAM2 checkpoint not found: {checkpoint!r}")
    try:
        import numpy as np
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        from sam2.build_sam import build_sam2
    except ImportError as err:
        raise ReadabilityUnavailable(f"the sam2 package is not installed ({err})") from err
    model = build_sam2(model_cfg or SAM2_MODEL_CFG, str(checkpoint), apply_postprocessing=False)
    masks = SAM2AutomaticMaskGenerator(model, **SAM2_GENERATOR_SETTINGS).generate(np.asarray(image.convert("RGB")))
    return len(masks)


def mmmg_score(fidelity: float, region_count: int | None = None) -> float:
    """R x fidelity when a region count is given (readability on), the fidelity alone otherwise (the default)."""
    return fidelity if region_count is None else readability(region_count) * fidelity


def report(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The official report (step3_stat.py): mean `score` (R x fidelity) per education level and per discipline.

    Each record has `level`, `discipline` and `score`; records with `score` None (judge call failed: the official
    pipeline has no reply file for them) are left out, as official. Both averages are over samples (a level's mean
    weights its disciplines by their sample counts). `overall` (the mean over all samples) is the project's own.
    """
    by_level: dict[str, list[float]] = {}
    by_discipline: dict[str, list[float]] = {}
    scores = []
    for record in records:
        if record.get("score") is None:
            continue
        scores.append(float(record["score"]))
        by_level.setdefault(record["level"], []).append(float(record["score"]))
        by_discipline.setdefault(record["discipline"], []).append(float(record["score"]))
    return {
        "overall": sum(scores) / len(scores) if scores else float("nan"),
        "per_level": {k: sum(v) / len(v) for k, v in by_level.items()},
        "per_discipline": {k: sum(v) / len(v) for k, v in by_discipline.items()},
        "count_per_level": {k: len(v) for k, v in by_level.items()},
        "count_per_discipline": {k: len(v) for k, v in by_discipline.items()},
    }
