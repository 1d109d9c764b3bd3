"""The MMMG reward: render the image the policy's completion conditions, let a judge check the knowledge graph.

For a batch, `core.diffusion.pipeline.PolicyRenderer` turns each completion into Qwen-Image's conditioning — one
forward of
the CURRENT policy over [system + user(prompt) + assistant + completion], the system tokens dropped as the
pipeline's `encode_prompt` drops them — and runs the frozen DiT/VAE. The judge then answers yes/no for every element
and dependency of the prompt's knowledge graph (`judge_prompt.txt`), and the reward is MMMG's knowledge fidelity
(`protocol.knowledge_fidelity`: 1 − GED / (|V1| + |V2| + |E1| + |E2|) between the reference graph and the graph of
what the judge saw), times the readability term R when it is switched on. A sample is scored whole or not at all:
when the judge call fails (HTTP error after retries, timeout, open breaker) or its reply leaves ANY element or
dependency without a yes/no answer (cut at max_tokens, a mis-copied key, "maybe"), the sample gets `None` (TRL
leaves it out), never a 0 and never a partial score that reads the unanswered keys as "no". That is the one
deliberate departure from the official scorer (which reads unanswered keys as no, and a reply with no readable line
as all no: 0); for every reply the reward scores, it pays exactly the official score (README mapping table).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from protocol import judge_request, knowledge_fidelity, parse_judge_reply

from core.diffusion.pipeline import PolicyRenderer
from core.rewards.contract import resolve_reward_funcs
from core.rewards.judge import JudgeClient


class KnowledgeFidelityReward:
    """TRL reward `knowledge_fidelity` (its log name); `readability` maps an image to R, or None to leave R out."""

    __name__ = "knowledge_fidelity"

    def __init__(
        self, renderer: PolicyRenderer, judge: JudgeClient, readability: Callable[[Any], float] | None = None
    ) -> None:
        self.renderer, self.judge, self.readability = renderer, judge, readability

    def __call__(
        self,
        completions: Sequence[Any],
        completion_ids: Sequence[Sequence[int]],
        text: Sequence[str],
        knowledge_graph: Sequence[str],
        annotation: Sequence[str],
        log_metric: Any = None,
        **kwargs: Any,
    ) -> list[float | None]:
        images = self.renderer.render(text, completion_ids)
        graphs = [json.loads(kg) for kg in knowledge_graph]
        # As official: the knowledge graph JSON string as the dataset stores it, then the annotation.
        requests = [
            judge_request(img, raw, ann or "")
            for img, raw, ann in zip(images, knowledge_graph, annotation, strict=True)
        ]
        # Each reply parsed against its own graph at the client: one that does not answer every key is a parse
        # failure there (counted, never cached, retried on the next identical request) and the sample is None.
        parsers = [partial(parse_judge_reply, kg=kg, require_all=True) for kg in graphs]
        verdicts = self.judge.score(requests, parsers)
        rewards: list[float | None] = []
        for judged, kg, img in zip(verdicts, graphs, images, strict=True):
            if judged is None:
                rewards.append(None)
                continue
            score = knowledge_fidelity(kg, judged)
            rewards.append(score * self.readability(img) if self.readability is not None else score)
        if log_metric is not None:
            for name, value in self.judge.pop_metrics().items():
                log_metric(name, value)
            log_metric("mmmg/unscored", sum(r is None for r in rewards) / max(len(rewards), 1))
        return rewards


def build_reward_funcs(
    names: Sequence[str],
    renderer: PolicyRenderer,
    judge: JudgeClient,
    readability: Callable[[Any], float] | None = None,
) -> list[Any]:
    """`knowledge_fidelity` by name, or user rewards `package.module:function`."""
    return resolve_reward_funcs(
        names, {"knowledge_fidelity": lambda: KnowledgeFidelityReward(renderer, judge, readability)}
    )
