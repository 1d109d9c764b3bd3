"""A sample whose judge scoring is incomplete is unscored as a whole, in every recipe with a judge reward.

TRL turns a reward's None into NaN and sums a sample's weighted rewards with `nansum`: if one of image_edit's three
criteria failed and the other two were kept, the failed one would count as 0 and a judge outage would LOWER the
reward. So: any part of a sample's judge scoring missing (HTTP error, unparseable or truncated reply, a checklist key
left unanswered) -> None for every reward of that sample. Real parts only: the tiny pipelines render the images
(once, through the renderer's per-batch cache, as in a training step), the local judge server answers over HTTP and
fails exactly the request a marker in the sample's text targets (`[judge:KIND~TEXT]`, see core.rewards.judge_server).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from PIL import Image, ImageDraw

from core.diffusion.pipeline import PolicyRenderer, condition_images, load_pipeline
from core.rewards.judge import JudgeArguments, JudgeClient
from core.rewards.judge_server import answer_keys, criterion_score, score_images, start_judge_server
from tests.fixtures.toy_rewards import even_token_fraction
from tests.helpers import load_recipe_module

pytestmark = pytest.mark.slow

EDIT = load_recipe_module("image_edit", "rewards")
MMMG = load_recipe_module("mmmg", "rewards")
PROTOCOL = load_recipe_module("mmmg", "protocol")
TOY = "tests.fixtures.toy_rewards:even_token_fraction"


def judge_for(url: str) -> JudgeClient:
    """No retries (an injected 500 fails at once), breaker off (failures here are meant, not an outage)."""
    return JudgeClient(
        JudgeArguments(judge_base_url=url, judge_model="local-judge", judge_max_retries=0, judge_breaker_failures=0)
    )


def shapes(color: str) -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((8, 8, 30, 30), fill=color)
    draw.ellipse((34, 30, 58, 54), fill="black")
    return image


class Metrics(dict):
    """TRL's `log_metric(name, value)`, keeping every value logged under a name."""

    def __call__(self, name: str, value: float) -> None:
        self.setdefault(name, []).append(value)


def call_all(funcs: list[Any], **columns: Any) -> dict[str, list[float | None]]:
    """Each reward called as TRL calls them: one after another, with the same batch."""
    return {getattr(f, "__name__", "?"): f(**columns) for f in funcs}


# ---------------------------------------------------------------------------------------------------- image_edit
@pytest.fixture(scope="module")
def edit_batch() -> dict[str, Any]:
    pipeline = load_pipeline("tiny:qwen_image_edit")
    renderer = EDIT.EditRenderer(pipeline, pipeline.processor, 2, 0, 64, 64, condition_area=4096)
    originals = [condition_images(pipeline, [shapes(c)], 4096)[0] for c in ("red", "green", "blue")]
    instructions = [
        "make the square blue",
        "[judge:500] make the square red",  # its alignment request fails (HTTP 500); quality sees no text
        "[judge:truncated] remove the circle",  # its alignment reply is cut in half; its quality reply is whole
    ]
    completion_ids = [[11, 12, 13], [14, 15], [16]]
    # The renderer keeps the batch it rendered last: the rewards below get these very images, as in a GRPO step.
    edited = renderer.render(instructions, completion_ids, originals, model=pipeline.text_encoder)
    columns = {
        "completions": ["a", "b", "c"],
        "completion_ids": completion_ids,
        "image": originals,
        "instruction": instructions,
    }
    return {"renderer": renderer, "originals": originals, "edited": edited, "columns": columns}


def test_one_failed_criterion_unscores_the_sample_in_every_criterion(edit_batch: dict[str, Any]) -> None:
    originals, edited = edit_batch["originals"], edit_batch["edited"]
    with start_judge_server() as server, judge_for(server.url) as judge:
        funcs = EDIT.build_reward_funcs(list(EDIT.CRITERIA), edit_batch["renderer"], judge)
        metrics = Metrics()
        rewards = call_all(funcs, **edit_batch["columns"], log_metric=metrics)
        # Complex-Edit's structure: per sample ONE alignment call (both alignment criteria) + one quality call.
        assert server.stats.total == 6
        again = call_all(funcs, **edit_batch["columns"], log_metric=metrics)  # the next step, same batch: asked anew
        assert server.stats.total == 12 and again == rewards

    pair = score_images([originals[0], edited[0]])[0]  # the server's rule on the images it was sent
    assert rewards == {
        "instruction_following": [criterion_score("instruction_following", [originals[0], edited[0]]) / 10, None, None],
        "identity_preservation": [pair / 10, None, None],
        "perceptual_quality": [score_images([edited[0]])[0] / 10, None, None],
    }
    # The alignment call's counters, under each criterion it serves: the 500 of sample 2, the truncation of sample 3.
    assert metrics["judge/failures/identity_preservation"] == [2.0, 2.0]
    assert metrics["judge/failures/instruction_following"] == [2.0, 2.0]
    assert metrics["judge/parse_failures/instruction_following"] == [1.0, 1.0]
    assert metrics["judge/failures/perceptual_quality"] == [0.0, 0.0]  # answered for all, and still dropped
    assert metrics["image_edit/unscored"] == [2 / 3, 2 / 3]

    # The rule spans the criteria in use: perceptual_quality alone (beside a user reward) scores all three samples.
    with start_judge_server() as server, judge_for(server.url) as judge:
        funcs = EDIT.build_reward_funcs(["perceptual_quality", TOY], edit_batch["renderer"], judge)
        alone = call_all(funcs, **edit_batch["columns"])
        assert server.stats.total == 3
    assert alone == {
        "perceptual_quality": [score_images([image])[0] / 10 for image in edited],
        "even_token_fraction": even_token_fraction(**edit_batch["columns"]),
    }


# ---------------------------------------------------------------------------------------------------------- mmmg
KG = {
    "elements": ["Photosynthesis", "sunlight", "glucose", "water"],
    "dependencies": ["Requires(Photosynthesis, sunlight)", "Causes(Photosynthesis, glucose)"],
}


def test_mmmg_sample_with_a_partly_answered_checklist_is_none() -> None:
    pipeline = load_pipeline("tiny:qwen_image", edit=False)
    renderer = PolicyRenderer(pipeline, pipeline.tokenizer, 2, 0, 64, 64)
    texts = ["How plants make sugar"] * 3
    completion_ids = [[11, 12], [13], [14, 15, 16]]
    images = renderer.render(texts, completion_ids, model=pipeline.text_encoder)
    # sample 2: the reply is cut in half (max_tokens hit), sample 3: the judge answers 500
    annotations = ["A leaf in the sun.", "[judge:truncated] A leaf in the sun.", "[judge:500] A leaf in the sun."]
    columns = {
        "completions": ["a", "b", "c"],
        "completion_ids": completion_ids,
        "text": texts,
        "knowledge_graph": [json.dumps(KG)] * 3,
        "annotation": annotations,
    }
    with start_judge_server() as server, judge_for(server.url) as judge:
        (reward,) = MMMG.build_reward_funcs(["knowledge_fidelity"], renderer, judge)
        metrics = Metrics()
        scores = reward(**columns, log_metric=metrics)

    full = answer_keys([images[0]], PROTOCOL.format_prompt(KG, annotations[0]))
    assert scores == [PROTOCOL.knowledge_fidelity(KG, PROTOCOL.parse_judge_reply(full, KG)), None, None]
    # What the truncated reply looked like: some keys answered, so reading the rest as "no" would score it.
    cut = answer_keys([images[1]], PROTOCOL.format_prompt(KG, annotations[1]))
    cut = cut[: len(cut) // 2]
    partial = PROTOCOL.parse_judge_reply(cut, KG)
    assert partial is not None and len([line for line in cut.splitlines() if line.endswith(("yes", "no"))]) < 6
    assert metrics["judge/parse_failures"] == [1.0] and metrics["judge/failures"] == [2.0]
    assert metrics["mmmg/unscored"] == [2 / 3]
