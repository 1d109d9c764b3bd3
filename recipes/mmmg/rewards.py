"""The MMMG reward: render the image the policy's completion conditions, let a judge check the knowledge graph.

For a batch, `core.diffusion.PolicyRenderer` turns each completion into Qwen-Image's conditioning — one forward of
the CURRENT policy over [system + user(prompt) + assistant + completion], the system tokens dropped as the
pipeline's `encode_prompt` drops them — and runs the frozen DiT/VAE. The judge then answers yes/no for every element
and dependency of the prompt's knowledge graph (`judge_prompt.txt`), and the reward is MMMG's knowledge fidelity
(`protocol.knowledge_fidelity`: 1 − GED / (|V1| + |V2| + |E1| + |E2|) between the reference graph and the graph of
what the judge saw), times the readability term R when it is switched on. A sample the judge cannot score gets
`None` (TRL leaves it out), never a 0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from protocol import judge_request, knowledge_fidelity, parse_judge_reply

from core.diffusion import PolicyRenderer
from core.judge import JudgeClient
from core.rewards import resolve_reward_funcs

ANSWER_LINE = re.compile(r"^[\s*\-\d.`'\"]*[^:\n]+?\**\s*:\s*\**\s*(yes|no)\b", re.IGNORECASE | re.MULTILINE)


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
        requests = [judge_request(img, kg, ann or "") for img, kg, ann in zip(images, graphs, annotation, strict=True)]
        # Strict at the client: a reply with no `key: yes|no` line is a failure (never cached, scored None).
        replies = self.judge.score(requests, lambda reply: reply if ANSWER_LINE.search(reply) else None)
        rewards: list[float | None] = []
        for reply, kg, img in zip(replies, graphs, images, strict=True):
            judged = None if reply is None else parse_judge_reply(reply, kg)
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
