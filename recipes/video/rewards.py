"""Rewards for ordering the actions seen in a video clip.

The answer format is `<answer>(1) first action (2) second action ...</answer>`, preceded by the reasoning in
`<think>...</think>`.

Parsing (`parse_actions`)
-------------------------
Only the LAST `<answer>...</answer>` counts: an answer outside the tags is not an answer (the format reward and the
accuracy reward then agree on what was answered). Inside it the text is split at the `(n)` markers, in the order
they appear in the text (the numbers themselves are separators, not re-sorted); text before the first marker is
ignored, and an answer with no marker has no actions. Each action is normalised: lower-cased, whitespace collapsed,
leading/trailing punctuation and a trailing connective ("and", "then", "and then") stripped, so
`(1) The red circle moves LEFT, then (2) ...` gives `the red circle moves left`. Empty actions are dropped.

Rewards (TRL contract: `f(completions, **kwargs) -> list[float | None]`, dataset columns arrive as kwargs)
--------------------------------------------------------------------------------------------------------
* `format_reward` = 0.3 * [exactly one filled think block] + 0.3 * [exactly one filled answer block]
  + 0.4 * [both of those, the think block ending before the answer block starts]; in {0, 0.3, 0.6, 1.0}.
  "Exactly one" means that the block's opening tag and its closing tag each occur exactly once in the whole
  completion (case-insensitively), the opening one first: a repeated block, a nested one (`<think><think>a</think>
  </think>`), a stray closing tag or a flood of tags earns nothing for its part nor the order part
  (`core.rewards.contract.single_block`, linear-time). A block is filled when it holds a visible character
  (`core.rewards.contract.has_visible_text`: a letter, number, punctuation or symbol that is not a blank glyph such as
  the
  braille blank or a Hangul filler; whitespace, control characters, invisible format characters, lone combining
  marks and variation selectors do not count). So the empty skeleton `<think></think><answer></answer>` scores
  0.0: structure is paid only for one filled block of each kind, the rule the grounding recipe's `format_reward`
  follows ("exactly one <answer> holding a box").
* `accuracy_reward` (the original project's), with P the predicted action list and T the true one (the `actions`
  column, or the parsed `solution` column when `actions` is absent):

      1.0                         if P == T (same actions, same order)
      |set(P) ∩ set(T)| / |set(P) ∪ set(T)|     otherwise (the IoU of the action sets)
      0.0                         when P is empty (no tags, no markers, garbage)
      None                        when T is empty (the row cannot be scored; TRL then ignores this reward)

  Note what this pays: the right actions in the wrong order have IoU 1.0, exactly as much as the right answer.
* `ordered_accuracy_reward` (ours, opt-in): 1.0 if P == T, otherwise IoU * (0.5 + 0.4 * tau), where tau is the
  fraction of the pairs of shared actions that P orders as T does (1.0 when fewer than 2 are shared); 0.0 / None as
  above. Any non-exact answer scores at most 0.9: the right set reversed 0.5, one swap among three
  0.5 + 0.4 * 2/3 = 0.77, two of three actions in order 2/3 * 0.9 = 0.6. Use it when order is what must be learnt:
  `reward_funcs: [format_reward, ordered_accuracy_reward]` (it takes `accuracy_reward_weight`).

Matching is exact on the normalised text (no synonyms).

The original project's weights are `DEFAULT_WEIGHTS` (format 0.3, accuracy 0.7); the trainer applies them through
`reward_weights`. Parsing never raises: a weird completion scores 0.0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations
from typing import Any

from core.rewards.contract import completion_text, has_visible_text, resolve_reward_funcs, single_block

REWARD_NAMES = ("format_reward", "accuracy_reward", "ordered_accuracy_reward")
DEFAULT_WEIGHTS = {"format_reward": 0.3, "accuracy_reward": 0.7, "ordered_accuracy_reward": 0.7}

# Tempered: a match cannot contain another <answer>, which keeps repeated unclosed tags linear instead of quadratic.
_ANSWER_RE = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL | re.IGNORECASE)
_MARKER_RE = re.compile(r"\(\s*\d+\s*\)")
_EDGE_PUNCT = " \t\n\r.,;:!?-–—\"'`*"
_TRAILING_CONNECTIVE_RE = re.compile(r"(?:[\s,;.:!?]+|\b(?:and|then)\b)+$")


def normalise_action(text: str) -> str:
    """Lower-case, collapse whitespace, strip edge punctuation and a trailing 'and' / 'then'."""
    action = " ".join(text.lower().split())
    action = _TRAILING_CONNECTIVE_RE.sub("", action)
    return action.strip(_EDGE_PUNCT)


def parse_actions(text: Any) -> list[str]:
    """The normalised actions of the last `<answer>...</answer>`, in text order; [] when there are none."""
    try:
        answers = _ANSWER_RE.findall(completion_text(text))
        if not answers:
            return []
        pieces = _MARKER_RE.split(answers[-1])[1:]  # [0] is whatever precedes the first marker
        return [action for action in (normalise_action(piece) for piece in pieces) if action]
    except Exception:  # a reward must never take training down on a weird completion
        return []


def _single_filled(text: str, tag: str) -> tuple[int, int] | None:
    """The (begin, stop) offsets of the `<tag>` block's content when the opening and the closing tag each occur once
    (case-insensitively) and the content is visible; None when the block is missing, empty, repeated or nested
    (repeating a block must not pay, as in the grounding recipe's format_reward)."""
    span = single_block(text, f"<{tag}>", f"</{tag}>", ignore_case=True)
    return span if span is not None and has_visible_text(text[span[0] : span[1]]) else None


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """0.3 for one filled think block, 0.3 for one filled answer block, 0.4 when both and the think block comes first
    (max 1.0); empty, repeated, nested or flooded blocks earn nothing (module doc)."""
    rewards: list[float | None] = []
    for completion in completions:
        text = completion_text(completion)
        think = _single_filled(text, "think")
        answer = _single_filled(text, "answer")
        score = 0.0
        if think:
            score += 0.3
        if answer:
            score += 0.3
        # the think block's closing tag ends before the answer block's opening tag starts
        if think and answer and think[1] + len("</think>") <= answer[0] - len("<answer>"):
            score += 0.4
        rewards.append(round(score, 10))
    return rewards


def _order_agreement(predicted: list[str], truth: list[str]) -> float:
    """Fraction of pairs of shared actions that `predicted` orders as `truth` does (first occurrences); 1.0 if < 2."""
    seen = set(predicted)
    shared = [action for action in dict.fromkeys(truth) if action in seen]
    if len(shared) < 2:
        return 1.0
    first = {action: predicted.index(action) for action in shared}
    pairs = list(combinations(shared, 2))  # each pair in truth order
    return sum(first[a] < first[b] for a, b in pairs) / len(pairs)


def action_score(predicted: Sequence[str], truth: Sequence[str], ordered: bool = False) -> float | None:
    """`accuracy_reward` (or, with `ordered`, `ordered_accuracy_reward`) of the module doc for two action lists."""
    predicted, truth = list(predicted), list(truth)
    if not truth:
        return None
    if not predicted:
        return 0.0
    if predicted == truth:
        return 1.0
    p, t = set(predicted), set(truth)
    iou = len(p & t) / len(p | t)
    return iou * (0.5 + 0.4 * _order_agreement(predicted, truth)) if ordered else iou


def _truths(kwargs: dict[str, Any], n: int) -> list[list[str]]:
    actions = kwargs.get("actions")
    if actions is not None:
        if len(actions) != n:
            raise ValueError(f"column 'actions' has {len(actions)} values for {n} completions")
        return [[normalise_action(str(a)) for a in (row or [])] for row in actions]
    solutions = kwargs.get("solution")
    if solutions is None:
        raise ValueError("accuracy_reward needs the dataset column 'actions' or 'solution' (build it with data.py)")
    if len(solutions) != n:
        raise ValueError(f"column 'solution' has {len(solutions)} values for {n} completions")
    return [parse_actions(solution) for solution in solutions]


def accuracy_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """The original's: 1.0 for the exact ordered action list, else the IoU of the action sets (module doc)."""
    truths = _truths(kwargs, len(completions))
    return [action_score(parse_actions(c), t) for c, t in zip(completions, truths, strict=True)]


def ordered_accuracy_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 for the exact ordered list, else IoU * (0.5 + 0.4 * order agreement): wrong order never pays 1.0."""
    truths = _truths(kwargs, len(completions))
    return [action_score(parse_actions(c), t, ordered=True) for c, t in zip(completions, truths, strict=True)]


# What a reference answer must earn at the start-up check (core.rewards.contract.check_rewards_can_score): every
# reward's 1.0.
REFERENCE_FULL_MARKS = dict.fromkeys(REWARD_NAMES, 1.0)


def reference_completion(row: Mapping[str, Any]) -> str:
    """A well-formed answer holding the row's reference actions (its `solution`), for
    `core.rewards.contract.check_rewards_can_score` at start-up."""
    return f"<think>The clip shows these actions in this order.</think>{row['solution']}"


def build_reward_funcs(names: Sequence[str]) -> list[Callable[..., list[float | None]]]:
    """Reward callables for `names`: built-ins (see REWARD_NAMES) or user rewards `package.module:function`."""
    factories: dict[str, Callable[[], Callable[..., list[float | None]]]] = {
        "format_reward": lambda: format_reward,
        "accuracy_reward": lambda: accuracy_reward,
        "ordered_accuracy_reward": lambda: ordered_accuracy_reward,
    }
    return resolve_reward_funcs(names, factories)
