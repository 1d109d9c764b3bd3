"""image_edit's judge protocol against the official Complex-Edit evaluation, case by case.

Expected values come from running the OFFICIAL code, outside this project: UCSC-VLAA/Complex-Edit at commit
3502eaa9e81bc99623bd995106df48c0f921af31, `complex_edit/eval/alignment.py` (`eval_one_alignment`, `CoTAlignment`),
`complex_edit/eval/quality.py` (`eval_one_quality`, `PerceptualQuality`), `complex_edit/utils/dict_op.py`
(`dict_mean`) and `eval.py` (the per-sample overall: the merged alignment and quality means summed and divided by
their count), with the evaluators configured as `eval.py` does (alignment: rubric + chain of thought; quality:
rubric, no chain of thought). The official functions ran with the openai SDK's own `beta.chat.completions.parse`
against a local HTTP server that answered the replies below (n choices per call, m = 5); a reply the official
validator rejects raised (the official code would retry it forever) and is `None` here. Only the resulting VALUES are
kept in this file; no official code or prompt wording is.

Departures, documented in recipes/image_edit/README.md and tested here: JSON integers (7 for "7") and a ```json
fenced reply are accepted with the same score (the official schema rejects them; an endpoint without schema
enforcement writes them); a sample with any unusable reply is unscored instead of retried forever.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from core.rewards.judge import JudgeArguments, JudgeClient, _DiskCache, request_key
from core.rewards.judge_server import criterion_score, score_images, start_judge_server
from tests.helpers import load_recipe_module

JUDGING = load_recipe_module("image_edit", "judging")
EVALUATE = load_recipe_module("image_edit", "evaluate")

# (case, judge reply, official (instruction_following, identity_preservation) or None = the official code rejects it)
ALIGNMENT_CASES = [
    ("official_strings", '{"reasoning": "ok", "instruction_following": "7", "identity_preservation": "8"}', (7, 8)),
    ("bounds", '{"reasoning": "x", "instruction_following": "10", "identity_preservation": "0"}', (10, 0)),
    ("above_scale", '{"reasoning": "x", "instruction_following": "11", "identity_preservation": "8"}', None),
    ("negative", '{"reasoning": "x", "instruction_following": "-1", "identity_preservation": "8"}', None),
    ("decimal_string", '{"reasoning": "x", "instruction_following": "7.5", "identity_preservation": "8"}', None),
    ("float", '{"reasoning": "x", "instruction_following": 7.5, "identity_preservation": 8}', None),
    ("missing_reasoning", '{"instruction_following": "7", "identity_preservation": "8"}', None),
    ("missing_identity", '{"reasoning": "x", "instruction_following": "7"}', None),
    (
        "extra_key",
        '{"reasoning": "x", "instruction_following": "3", "identity_preservation": "9", "note": "n"}',
        (3, 9),
    ),
    ("padded_string", '{"reasoning": "x", "instruction_following": " 7", "identity_preservation": "8"}', None),
    ("prose_around", 'Scores: {"reasoning": "x", "instruction_following": "7", "identity_preservation": "8"}', None),
    ("bool", '{"reasoning": "x", "instruction_following": true, "identity_preservation": "8"}', None),
    ("reasoning_not_string", '{"reasoning": 5, "instruction_following": "7", "identity_preservation": "8"}', None),
    ("leading_zero", '{"reasoning": "x", "instruction_following": "07", "identity_preservation": "8"}', None),
    (
        "whitespace_around",
        '  \n{"reasoning": "x", "instruction_following": "4", "identity_preservation": "5"}\n ',
        (4, 5),
    ),
]
QUALITY_CASES = [
    ("official_string", '{"perceptual_quality": "6"}', 6),
    ("with_reasoning", '{"reasoning": "fine", "perceptual_quality": "9"}', 9),
    ("above_scale", '{"perceptual_quality": "12"}', None),
    ("decimal_string", '{"perceptual_quality": "6.0"}', None),
    ("missing", '{"quality": "6"}', None),
    ("not_json", "six out of ten", None),
]
# Official rejects these; the project accepts them with the score they spell (documented departure).
EXTENSION_CASES = [
    ("json_ints", '{"reasoning": "x", "instruction_following": 7, "identity_preservation": 8}', (7, 8)),
    ("fenced", '```json\n{"reasoning": "x", "instruction_following": "7", "identity_preservation": "8"}\n```', (7, 8)),
]

# Per-sample draws (IF, IP, PQ per draw) -> the official per-sample means and overall (eval.py), exact floats.
AGGREGATION = [
    (
        [7, 4, 10, 8, 10, 5, 2, 6, 0, 5, 7, 4, 10, 7, 9, 3, 8, 0, 10, 9],
        [2, 7, 5, 2, 5, 3, 0, 9, 3, 1, 8, 10, 5, 10, 6, 1, 0, 0, 10, 8],
        [3, 1, 6, 7, 1, 10, 6, 2, 8, 5, 9, 8, 2, 0, 8, 2, 8, 1, 6, 9],
        {
            "instruction_following": 6.2,
            "identity_preservation": 4.75,
            "perceptual_quality": 5.1,
            "overall": 5.349999999999999,
        },
    ),
    (
        [6, 10, 9, 7, 7, 9, 6, 8, 0, 10, 1, 3, 10, 4, 5, 5, 6, 10, 4, 1],
        [4, 3, 5, 5, 5, 8, 9, 8, 2, 0, 6, 6, 0, 8, 0, 3, 10, 6, 0, 6],
        [3, 9, 1, 8, 3, 2, 1, 4, 0, 6, 4, 7, 5, 9, 10, 0, 8, 7, 5, 3],
        {
            "instruction_following": 6.05,
            "identity_preservation": 4.7,
            "perceptual_quality": 4.75,
            "overall": 5.166666666666667,
        },
    ),
    (
        [5, 4, 7, 7, 7, 3, 2, 7, 8, 5, 2, 3, 3, 9, 0, 4, 5, 2, 3, 0],
        [8, 0, 3, 9, 1, 5, 8, 8, 2, 0, 5, 10, 4, 10, 1, 3, 8, 8, 7, 7],
        [10, 5, 4, 10, 7, 2, 7, 4, 9, 0, 4, 5, 8, 10, 7, 3, 4, 8, 4, 0],
        {
            "instruction_following": 4.3,
            "identity_preservation": 5.35,
            "perceptual_quality": 5.55,
            "overall": 5.066666666666666,
        },
    ),
    (
        [10, 0, 0, 2, 8, 4, 6],
        [2, 3, 3, 6, 7, 0, 8],
        [9, 9, 4, 0, 6, 6, 9],
        {
            "instruction_following": 4.285714285714286,
            "identity_preservation": 4.142857142857143,
            "perceptual_quality": 6.142857142857143,
            "overall": 4.857142857142858,
        },
    ),
    (
        [1, 6, 3],
        [9, 8, 5],
        [5, 10, 6],
        {
            "instruction_following": 3.3333333333333335,
            "identity_preservation": 7.333333333333333,
            "perceptual_quality": 7.0,
            "overall": 5.888888888888888,
        },
    ),
    (
        [9],
        [2],
        [0],
        {
            "instruction_following": 9.0,
            "identity_preservation": 2.0,
            "perceptual_quality": 0.0,
            "overall": 3.6666666666666665,
        },
    ),
]
# dict_mean over the six samples above, in this order.
OFFICIAL_FINAL = {
    "overall": 4.999338624338624,
    "perceptual_quality": 4.757142857142857,
    "identity_preservation": 4.712698412698413,
    "instruction_following": 5.528174603174603,
}


@pytest.mark.parametrize(("case", "reply", "official"), ALIGNMENT_CASES, ids=[c[0] for c in ALIGNMENT_CASES])
def test_alignment_reply_parses_as_official(case: str, reply: str, official: tuple[int, int] | None) -> None:
    assert JUDGING.parse_alignment(reply) == official


@pytest.mark.parametrize(("case", "reply", "official"), QUALITY_CASES, ids=[c[0] for c in QUALITY_CASES])
def test_quality_reply_parses_as_official(case: str, reply: str, official: int | None) -> None:
    assert JUDGING.parse_quality(reply) == official


@pytest.mark.parametrize(("case", "reply", "score"), EXTENSION_CASES, ids=[c[0] for c in EXTENSION_CASES])
def test_documented_extensions_read_the_score_they_spell(case: str, reply: str, score: tuple[int, int]) -> None:
    assert JUDGING.parse_alignment(reply) == score
    assert JUDGING.parse_quality(reply.replace('"instruction_following"', '"perceptual_quality"')) == score[0]


def flat(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (16, 16), color)


def judge_for(url: str, cache: Path | None = None, **kw: Any) -> JudgeClient:
    return JudgeClient(
        JudgeArguments(
            judge_base_url=url,
            judge_model="local-judge",
            judge_max_retries=0,
            judge_breaker_failures=0,
            judge_cache_dir=None if cache is None else str(cache),
            **kw,
        )
    )


def test_draws_aggregate_to_the_official_means_and_overall(tmp_path: Path) -> None:
    """The judge's draws (stored replies in the real disk cache, read back by the real client) -> per-sample means,
    overall and the benchmark means, equal to the official floats to the last bit."""
    prompts = JUDGING.load_prompts(None)
    args = JudgeArguments(judge_model="local-judge")
    cache = _DiskCache(tmp_path / "cache")
    per_sample: list[dict[str, Any]] = []
    with start_judge_server() as server, judge_for(server.url, tmp_path / "cache") as judge:
        for index, (ifs, ips, pqs, official) in enumerate(AGGREGATION):
            original, edited, instruction = flat((0, 0, 0)), flat((index * 30, 0, 0)), f"edit {index}"
            for draw, (f, i, q) in enumerate(zip(ifs, ips, pqs, strict=True)):
                for request, reply in (
                    (
                        JUDGING.alignment_request(original, edited, instruction, prompts, draw),
                        json.dumps(
                            {"reasoning": "r", "instruction_following": str(f), "identity_preservation": str(i)}
                        ),
                    ),
                    (JUDGING.quality_request(edited, prompts, draw), json.dumps({"perceptual_quality": str(q)})),
                ):
                    key = request_key(request, args.judge_model, args.judge_temperature, args.judge_max_tokens)
                    cache.put(key, reply, args.judge_model)
            scores = JUDGING.score_edits(judge, [original], [edited], [instruction], prompts, len(ifs))
            sample = {c: scores[c][0] for c in JUDGING.CRITERIA}
            sample["overall"] = JUDGING.overall(sample)
            assert sample == official
            per_sample.append(sample)
        assert server.stats.total == 0  # every draw came from the stored replies
    final = JUDGING.benchmark_means(per_sample)
    assert {k: final[k] for k in OFFICIAL_FINAL} == OFFICIAL_FINAL
    assert final["overall_scored"] == len(AGGREGATION)


def fake_official_repo(root: Path) -> Path:
    """A folder laid out like UCSC-VLAA/Complex-Edit, with made-up wording (a git repository, for the commit)."""
    evaldir = root / "complex_edit" / "eval"
    evaldir.mkdir(parents=True)
    (evaldir / "prompt_alignment.py").write_text(
        'ALIGNMENT_PROMPT_WO_RUBRIC = """decoy without rubric"""\n'
        'ALIGNMENT_PROMPT_W_RUBRIC = """FAKE-ALIGN rubric: rate two things."""\n'
        'PROMPT_TEMPLATE = """FAKE-TEMPLATE before/after; task:\\n{instruction}\\n"""\n'
    )
    (evaldir / "alignment.py").write_text(
        "def get_system_prompt(if_rubric, if_cot):\n"
        "    system_prompt = 'x'\n"
        "    if if_cot:\n"
        '        system_prompt += "\\nFAKE-COT think first."\n'
        "    return system_prompt\n"
    )
    (evaldir / "prompt_quality.py").write_text(
        'PERCEPTUAL_QUALITY_PROMPT_W_RUBRIC_W_INST = """decoy with instruction"""\n'
        'PERCEPTUAL_QUALITY_PROMPT_W_RUBRIC_WO_INST = """FAKE-QUALITY rubric: rate one image."""\n'
    )
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "fake"], check=True)
    return root


def test_one_alignment_call_and_an_image_only_quality_call_through_the_local_judge(tmp_path: Path) -> None:
    repo = fake_official_repo(tmp_path / "Complex-Edit")
    prompts = JUDGING.load_prompts(repo)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert (prompts.source, prompts.official_commit) == ("official", commit.strip())
    original = Image.new("RGB", (32, 32), "white")
    edited = original.copy()
    ImageDraw.Draw(edited).rectangle((0, 0, 15, 31), fill="black")  # half changed
    samples = 3
    with start_judge_server() as server, judge_for(server.url, judge_temperature=1.0, judge_max_tokens=512) as judge:
        scores = JUDGING.score_edits(judge, [original], [edited], ["paint the left half"], prompts, samples)
        bodies = list(server.stats.recent)
        assert server.stats.total == 2 * samples  # per draw: ONE alignment call + one quality call
    alignment = [b for b in bodies if b["response_format"]["json_schema"]["name"] == "CoTAlignment"]
    quality = [b for b in bodies if b["response_format"]["json_schema"]["name"] == "PerceptualQuality"]
    assert len(alignment) == len(quality) == samples
    body = alignment[0]
    assert (body["temperature"], body["max_tokens"]) == (1.0, 512)
    assert body["messages"][0] == {
        "role": "system",
        "content": "FAKE-ALIGN rubric: rate two things.\nFAKE-COT think first.",
    }
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert all(p["image_url"]["detail"] == "high" for p in parts[:2])
    assert parts[2]["text"] == "FAKE-TEMPLATE before/after; task:\npaint the left half\n"
    schema = body["response_format"]["json_schema"]
    assert schema["strict"] and list(schema["schema"]["properties"]) == [
        "reasoning",
        "instruction_following",
        "identity_preservation",
    ]
    assert schema["schema"]["properties"]["instruction_following"]["enum"] == [str(i) for i in range(11)]
    body = quality[0]
    assert body["messages"][0] == {"role": "system", "content": "FAKE-QUALITY rubric: rate one image."}
    assert [p["type"] for p in body["messages"][1]["content"]] == ["image_url"]  # the output image alone, no text
    # The local judge's deterministic answers (means of draws): IP = similarity, PQ = contrast,
    # IF = 10 - the statistic with its own dither.
    similarity, contrast = score_images([original, edited])[0], score_images([edited])[0]
    assert scores == {
        "instruction_following": [float(criterion_score("instruction_following", [original, edited]))],
        "identity_preservation": [float(similarity)],
        "perceptual_quality": [float(contrast)],
    }


def test_prompts_default_to_own_wording_and_metrics_say_not_comparable(tmp_path: Path) -> None:
    own = JUDGING.load_prompts(None)
    assert own.source == "own" and "{instruction}" in own.alignment_user
    args = type("A", (), {"judge_samples": 20, "judge_temperature": 1.0, "judge_max_tokens": 512})()
    record = EVALUATE.protocol_record(own, args, JUDGING.OFFICIAL_JUDGE_MODEL)
    assert record["prompts"] == "own" and record["comparable_with_published"] is False
    assert record["judge_samples"] == 20
    official = JUDGING.load_prompts(fake_official_repo(tmp_path / "repo"))
    assert EVALUATE.protocol_record(official, args, JUDGING.OFFICIAL_JUDGE_MODEL)["comparable_with_published"]
    assert not EVALUATE.protocol_record(official, args, "gpt-4.1-mini")["comparable_with_published"]
    greedy = type("A", (), {"judge_samples": 1, "judge_temperature": 0.0, "judge_max_tokens": 512})()
    record = EVALUATE.protocol_record(official, greedy, JUDGING.OFFICIAL_JUDGE_MODEL)
    assert record["comparable_with_published"] is False  # one greedy draw is another estimator than 20 at T=1
    assert "1 draw(s) at temperature 0 (published: 20 at 1): not comparable" in record["note"]


def test_prompts_from_a_folder_without_the_official_files_fails_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="prompt_alignment.py"):
        JUDGING.load_prompts(tmp_path)
