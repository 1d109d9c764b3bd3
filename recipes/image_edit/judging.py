"""Complex-Edit's judge protocol (UCSC-VLAA/Complex-Edit, `complex_edit/eval/alignment.py`, `quality.py`, `eval.py`
at commit 3502eaa9e81bc99623bd995106df48c0f921af31), shared by the reward and `evaluate.py`.

What the official evaluation does, and what this module does the same way:

* **Two calls per sample.** Alignment: a system prompt (rubric + a chain-of-thought line), then the user turn with
  the input image, the output image and the instruction in a template; the judge answers a JSON object with
  `reasoning`, then `instruction_following` and `identity_preservation`. Perceptual quality: a system prompt, then the
  output image ALONE (no instruction, no text); the answer is `perceptual_quality`. Both ask for structured output (a
  strict JSON schema whose scores are the strings "0".."10"), images as data URLs with `detail: high`.
* **Scores**: integers 0..10 (the official schema's enum); each criterion of a sample is the mean of `n` judge samples
  (official: n = 20 at temperature 1.0, 512 completion tokens, judge gpt-4o-2024-11-20); the sample's overall score
  is the mean of the three criterion means, and a benchmark number the mean over samples.
* **Wording**: the official prompts are read from a local copy of the official repository (`judge_prompts_from`),
  never copied into this project; without one, the project's own wording (`rubric/*.txt`) is used and the numbers
  are not comparable with published ones.

Where this differs, on inputs the official code cannot score: the official client retries a sample forever until
every one of its n replies validates; here a sample with any unusable reply is unscored (None in every criterion).
The reply parser also accepts two shapes the official validator rejects but whose score is unambiguous - JSON
integers (7 for "7") and a reply fenced as ```json ... ``` - for endpoints that do not enforce the schema; it
rejects everything else the official validator rejects (numbers outside 0..10, decimals, "07", " 7", booleans,
missing keys, prose around the object).
"""

from __future__ import annotations

import ast
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from core.rewards.judge import JudgeClient, JudgeRequest, all_or_none, parse_json_object

RUBRIC_DIR = Path(__file__).resolve().parent / "rubric"
CRITERIA = ("instruction_following", "identity_preservation", "perceptual_quality")
ALIGNMENT = ("instruction_following", "identity_preservation")  # judged together, in one call

# The official evaluation's settings (complex_edit/utils/openai.py `completion_retry`, eval.py's `-n` default).
OFFICIAL_JUDGE_MODEL = "gpt-4o-2024-11-20"
OFFICIAL_TEMPERATURE = 1.0
OFFICIAL_MAX_TOKENS = 512
OFFICIAL_SAMPLES = 20
OFFICIAL_REPO = "UCSC-VLAA/Complex-Edit"
IMAGE_DETAIL = "high"

_SCALE = [str(i) for i in range(11)]


def _score_property(title: str) -> dict[str, Any]:
    return {"enum": list(_SCALE), "title": title, "type": "string"}


def _schema(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    """OpenAI structured-output `response_format`, in the shape the official pydantic models produce."""
    schema = {
        "properties": properties,
        "required": list(properties),
        "title": name,
        "type": "object",
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"schema": schema, "name": name, "strict": True}}


ALIGNMENT_FORMAT = _schema(
    "CoTAlignment",
    {
        "reasoning": {"title": "Reasoning", "type": "string"},
        "instruction_following": _score_property("Instruction Following"),
        "identity_preservation": _score_property("Identity Preservation"),
    },
)
QUALITY_FORMAT = _schema("PerceptualQuality", {"perceptual_quality": _score_property("Perceptual Quality")})


# ------------------------------------------------------------------------------------------------------ prompts
@dataclass(frozen=True)
class JudgePrompts:
    """The three prompt texts of the protocol and where they came from."""

    alignment_system: str
    alignment_user: str  # a template with {instruction}
    quality_system: str
    source: str  # "official" or "own"
    official_path: str | None = None
    official_commit: str | None = None

    def describe(self) -> dict[str, Any]:
        """What metrics.json records about the wording."""
        return {
            "prompts": self.source,
            "official_prompts_path": self.official_path,
            "official_prompts_commit": self.official_commit,
        }


def _module_strings(path: Path) -> tuple[dict[str, str], ast.Module]:
    """Top-level `NAME = "string"` assignments of a Python file, read without running it (ast, literals only)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"judge_prompts_from: {path} is missing; point judge_prompts_from at a checkout of {OFFICIAL_REPO}"
        )
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found, tree


def _need(strings: dict[str, str], name: str, path: Path) -> str:
    if name not in strings:
        raise ValueError(f"judge_prompts_from: {path} defines no string {name}; is it a checkout of {OFFICIAL_REPO}?")
    return strings[name]


def _cot_suffix(path: Path) -> str:
    """The line the official `get_system_prompt` appends to the alignment system prompt for chain of thought (the
    string added with `system_prompt += ...`), read from the official file."""
    _, tree = _module_strings(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "get_system_prompt":
            for inner in ast.walk(node):
                value = getattr(inner, "value", None)
                if isinstance(inner, ast.AugAssign) and isinstance(value, ast.Constant):
                    if isinstance(value.value, str):
                        return value.value
    raise ValueError(f"judge_prompts_from: no chain-of-thought line in get_system_prompt of {path}")


def _git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def load_prompts(judge_prompts_from: str | Path | None = None) -> JudgePrompts:
    """The official prompts from a local copy of the official repository, or the project's own wording.

    Official (as `eval.py` configures its evaluators: rubric and chain of thought for alignment, rubric without
    instruction and without chain of thought for quality): `ALIGNMENT_PROMPT_W_RUBRIC` + the chain-of-thought line
    of `alignment.get_system_prompt`, `PROMPT_TEMPLATE` of `prompt_alignment.py`, and
    `PERCEPTUAL_QUALITY_PROMPT_W_RUBRIC_WO_INST` of `prompt_quality.py`, all under `complex_edit/eval/`.
    """
    if judge_prompts_from is None or str(judge_prompts_from) == "":
        return JudgePrompts(
            alignment_system=(RUBRIC_DIR / "alignment_system.txt").read_text(encoding="utf-8"),
            alignment_user=(RUBRIC_DIR / "alignment_user.txt").read_text(encoding="utf-8"),
            quality_system=(RUBRIC_DIR / "perceptual_quality_system.txt").read_text(encoding="utf-8"),
            source="own",
        )
    root = Path(judge_prompts_from).expanduser().resolve()
    evaldir = root / "complex_edit" / "eval"
    alignment_path, quality_path = evaldir / "prompt_alignment.py", evaldir / "prompt_quality.py"
    alignment, _ = _module_strings(alignment_path)
    quality, _ = _module_strings(quality_path)
    return JudgePrompts(
        alignment_system=_need(alignment, "ALIGNMENT_PROMPT_W_RUBRIC", alignment_path)
        + _cot_suffix(evaldir / "alignment.py"),
        alignment_user=_need(alignment, "PROMPT_TEMPLATE", alignment_path),
        quality_system=_need(quality, "PERCEPTUAL_QUALITY_PROMPT_W_RUBRIC_WO_INST", quality_path),
        source="official",
        official_path=str(root),
        official_commit=_git_commit(root),
    )


# ------------------------------------------------------------------------------------------------------ parsing
def official_int(value: Any) -> int | None:
    """A score on the official scale: the strings "0".."10" exactly (the official schema's enum), or - for endpoints
    that do not enforce the schema - a JSON integer 0..10. Anything else (decimals, "07", " 7", booleans): None."""
    if isinstance(value, str):
        return int(value) if value in _SCALE else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10:
        return value
    return None


def parse_alignment(reply: str) -> tuple[int, int] | None:
    """(instruction_following, identity_preservation) of an alignment reply; None unless it has a string
    `reasoning` and both scores on the official scale (the official `CoTAlignment` model's fields)."""
    score = (str, int)
    obj = parse_json_object(reply, {"reasoning": str, "instruction_following": score, "identity_preservation": score})
    if obj is None:
        return None
    following, preservation = official_int(obj["instruction_following"]), official_int(obj["identity_preservation"])
    return None if following is None or preservation is None else (following, preservation)


def parse_quality(reply: str) -> int | None:
    """`perceptual_quality` of a quality reply on the official scale (other keys ignored, as the official model)."""
    obj = parse_json_object(reply, {"perceptual_quality": (str, int)})
    return None if obj is None else official_int(obj["perceptual_quality"])


# ------------------------------------------------------------------------------------------------------ scoring
def mean(values: Sequence[float]) -> float:
    """The official `dict_mean`: sum in order, divided by the count."""
    return sum(values) / len(values)


def overall(scores: Mapping[str, float]) -> float:
    """The official per-sample overall: the mean of the three criterion means (eval.py sums the merged alignment and
    quality results, then divides by 3)."""
    return (scores["instruction_following"] + scores["identity_preservation"] + scores["perceptual_quality"]) / 3


def benchmark_means(per_sample: Sequence[Mapping[str, float | None]]) -> dict[str, Any]:
    """The reported numbers: each criterion and `overall` averaged over the samples that have it (the official
    `dict_mean` over samples; here unscored samples are left out and counted), with `<key>_scored` counts."""
    result: dict[str, Any] = {}
    for key in (*CRITERIA, "overall"):
        valid = [row[key] for row in per_sample if row.get(key) is not None]
        result[key] = mean(valid) if valid else float("nan")
        result[f"{key}_scored"] = len(valid)
    return result


def alignment_request(
    original: Image.Image, edited: Image.Image, instruction: str, prompts: JudgePrompts, draw: int = 0
) -> JudgeRequest:
    return JudgeRequest(
        prompt=prompts.alignment_user.format(instruction=instruction),
        images=(original, edited),
        system=prompts.alignment_system,
        response_format=ALIGNMENT_FORMAT,
        image_detail=IMAGE_DETAIL,
        draw=draw,
    )


def quality_request(edited: Image.Image, prompts: JudgePrompts, draw: int = 0) -> JudgeRequest:
    return JudgeRequest(
        prompt="",  # the output image alone, as official
        images=(edited,),
        system=prompts.quality_system,
        response_format=QUALITY_FORMAT,
        image_detail=IMAGE_DETAIL,
        draw=draw,
    )


@dataclass(frozen=True)
class _Call:
    """One of the protocol's two judge calls: its metrics label, reply parser, the criteria it serves, its request."""

    label: str
    parse: Callable[[str], Any]
    criteria: tuple[str, ...]
    request: Callable[[Image.Image, Image.Image, str, int], JudgeRequest]


def _calls(criteria: Sequence[str], prompts: JudgePrompts) -> list[_Call]:
    """The calls `criteria` need: alignment for instruction_following / identity_preservation, quality for
    perceptual_quality."""
    calls = []
    alignment = tuple(c for c in ALIGNMENT if c in criteria)
    if alignment:
        calls.append(
            _Call(
                "alignment",
                parse_alignment,
                alignment,
                lambda orig, out, instr, draw: alignment_request(orig, out, instr, prompts, draw),
            )
        )
    if "perceptual_quality" in criteria:
        calls.append(
            _Call(
                "quality",
                parse_quality,
                ("perceptual_quality",),
                lambda orig, out, instr, draw: quality_request(out, prompts, draw),
            )
        )
    return calls


def score_edits(
    judge: JudgeClient,
    originals: Sequence[Image.Image],
    edited: Sequence[Image.Image],
    instructions: Sequence[str],
    prompts: JudgePrompts,
    samples: int,
    criteria: Sequence[str] = CRITERIA,
    log_metric: Any = None,
) -> dict[str, list[float | None]]:
    """Each criterion's mean over `samples` judge draws per edit, on the official 0..10 scale.

    None in EVERY criterion for an edit with any draw of any call unusable (all or none: a partial mean would be a
    different estimator, a partial set of criteria a different total). Only the calls the criteria need are made:
    alignment for instruction_following / identity_preservation, quality for perceptual_quality. Every call of
    every edit of the batch goes to the judge in ONE `JudgeClient.score` (a parser per request), so they are in
    flight together and the batch waits one judge latency, not one per call; an edit's calls are adjacent, so its
    edited image is encoded once for both and soon dropped. `log_metric` gets the judge's counters per call under
    each criterion it serves (both alignment criteria share the one call's).
    """
    if samples < 1:
        raise ValueError(f"judge samples must be >= 1, got {samples}")
    calls = _calls(criteria, prompts)
    asked = [
        (call, call.request(orig, out, instr, draw))
        for orig, out, instr in zip(originals, edited, instructions, strict=True)
        for call in calls
        for draw in range(samples)
    ]
    values = judge.score(
        [request for _, request in asked], [call.parse for call, _ in asked], [call.label for call, _ in asked]
    )
    per_edit = len(calls) * samples
    draws: dict[str, list[list[Any]]] = {call.label: [[] for _ in edited] for call in calls}
    for index, ((call, _), value) in enumerate(zip(asked, values, strict=True)):
        draws[call.label][index // per_edit].append(value)
    raw: dict[str, list[float | None]] = {}
    for index, criterion in enumerate(ALIGNMENT):
        if criterion in criteria:
            raw[criterion] = [None if None in d else mean([pair[index] for pair in d]) for d in draws["alignment"]]
    if "perceptual_quality" in criteria:
        raw["perceptual_quality"] = [None if None in d else mean(d) for d in draws["quality"]]
    if log_metric is not None:
        by_call = judge.pop_labelled_metrics()
        for call in calls:
            for name, value in by_call.get(call.label, {}).items():
                for criterion in call.criteria:
                    log_metric(f"{name}/{criterion}", value)
    return all_or_none(raw)
