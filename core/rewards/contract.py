"""Reward plumbing shared by recipes: user rewards named by import path next to a recipe's built-in ones.

A recipe lists its own rewards by name; anything else in `reward_funcs` of the form `package.module:function` (or
`path/to/file.py:function`) is imported, so a user adds a reward without editing the recipe. Every reward keeps
TRL's contract: `f(completions, **kwargs) -> list[float | None]`.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

RewardFunc = Callable[..., list[float | None]]


def completion_text(completion: Any) -> str:
    """The assistant text of a TRL completion: a plain string or a list of messages (content str or parts).

    Rewards must never crash a training step, so anything else reads as empty text."""
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    texts: list[str] = []
    try:
        for message in completion:
            if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
                continue
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(part.get("text") or "" for part in content if isinstance(part, dict))
    except TypeError:
        return ""
    return "\n".join(texts)


def load_object(spec: str) -> Any:
    """Import `module.path:attr` or `file.py:attr`."""
    if ":" not in spec:
        raise ValueError(f"{spec!r} is not an import path; use 'package.module:function' or 'file.py:function'")
    target, attr = spec.rsplit(":", 1)
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"reward {spec!r}: {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"user_reward_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        module = importlib.import_module(target)
    try:
        return getattr(module, attr)
    except AttributeError as err:
        raise ValueError(f"reward {spec!r}: {target} has no attribute {attr!r}") from err


def resolve_reward_funcs(names: Sequence[str], builtins: Mapping[str, Callable[[], RewardFunc]]) -> list[RewardFunc]:
    """Built-in rewards by name (each built by its factory) and user rewards by import path, in the given order."""
    funcs: list[RewardFunc] = []
    for name in names:
        if name in builtins:
            funcs.append(builtins[name]())
        elif ":" in name:
            func = load_object(name)
            if not callable(func):
                raise ValueError(f"reward {name!r} is not callable")
            funcs.append(func)
        else:
            raise ValueError(
                f"unknown reward {name!r}; built-in rewards: {', '.join(builtins)}; or give an import "
                "path 'package.module:function'"
            )
    return funcs


def reward_name(func: Any) -> str:
    """The name TRL logs a reward under (`rewards/<name>/mean`): `__name__`, else the class name."""
    return getattr(func, "__name__", None) or type(func).__name__


def check_rewards_can_score(
    reward_funcs: Sequence[RewardFunc],
    dataset: Any,
    reference_completion: Callable[[Mapping[str, Any]], str | None],
    num_rows: int = 8,
    source: str | None = None,
    full_marks: Mapping[str, float] | None = None,
) -> dict[str, list[float | None]]:
    """Score every reward on the reference answers of up to `num_rows` rows spread over `dataset`, before any model
    loads, and raise `core.data.records.DataError` naming the reward and rows when a reward cannot score this data at
    all.

    A reward that returns None for every completion contributes nothing, and a reward set that can score nothing
    trains nothing while the run looks healthy (loss 0, unchanged weights): grounding's `iou_reward` on point
    answers is the classic case. A reward that raises would crash the first training step after the model loaded.
    Both are refused here. A reward that scores some rows and returns None for others (boxes and points mixed) passes.
    `full_marks` names rewards whose maximum a reference answer must earn (e.g. an accuracy reward's 1.0): a row whose
    reference scores less is a row the reward can never pay for (an answer it cannot parse), refused with its score.

    `reference_completion(row)` writes a row's reference answer in the form the recipe's rewards read (None: the row
    has no reference, skipped). Rewards are called as TRL calls them: `prompts`, `completions` (conversational when
    the prompt is), `completion_ids` (empty lists: there are no sampled ids), every other dataset column, and
    `trainer_state=None`, `log_extra`/`log_metric` that discard what they get. Returns the scores per reward name.
    """
    from core.data.records import (  # here: core.data.records pulls in `datasets`, which reward code need not
        DataError,
        describe_row,
    )

    n, count = len(dataset), min(num_rows, len(dataset))
    indices = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)})  # first, last, evenly between
    checked, completions = [], []
    for index in indices:
        row = dataset[index]
        reference = reference_completion(row)
        if reference is not None:
            checked.append((index, row))
            prompt = row.get("prompt")
            conversational = isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict)
            completions.append([{"role": "assistant", "content": reference}] if conversational else reference)
    if not checked:
        return {}
    rows = [row for _, row in checked]
    columns = {key: [row.get(key) for row in rows] for key in rows[0] if key not in ("prompt", "completion")}
    labels = ", ".join(describe_row(i, row.get("id", row.get("pid"))) for i, row in checked)
    problems: list[str] = []
    scores: dict[str, list[float | None]] = {}
    for func in reward_funcs:
        name = reward_name(func)
        try:
            values = func(
                prompts=[row.get("prompt") for row in rows],
                completions=completions,
                completion_ids=[[] for _ in rows],
                trainer_state=None,
                log_extra=lambda *args, **kwargs: None,
                log_metric=lambda *args, **kwargs: None,
                **columns,
            )
        except Exception as err:  # any failure of user code is reported with the rows it ran on
            problems.append(f"reward {name!r} raised {type(err).__name__}: {err} (reference answers of {labels})")
            continue
        values = list(values) if values is not None else []
        if len(values) != len(rows):
            problems.append(f"reward {name!r} returned {len(values)} values for {len(rows)} completions ({labels})")
            continue
        scores[name] = values
        if name in (full_marks or {}):
            for (index, row), completion, value in zip(checked, completions, values, strict=True):
                if value is not None and value < full_marks[name] - 1e-6:
                    problems.append(
                        f"{describe_row(index, row.get('id', row.get('pid')))}: reward {name!r} gives the reference "
                        f"answer {completion_text(completion)!r} {value:g}, not its full {full_marks[name]:g}, so it "
                        "can never pay for this row; fix the row's answer or drop the row"
                    )
        if all(value is None for value in values):
            problems.append(
                f"reward {name!r} returned None (cannot score) for the reference answer of every row checked: "
                f"{labels}. It cannot score this data; drop it from reward_funcs or fix the data"
            )
    if problems:
        raise DataError(problems, source=source)
    return scores


# Characters of a visible category (letters, symbols) that nevertheless render as blank space. Models and users emit
# them to look like "something" to a filter that only strips whitespace: the braille pattern blank (So), the Hangul
# fillers (Lo: choseong/jungseong fillers, the compatibility filler and its halfwidth form).
BLANK_GLYPHS = frozenset("\u2800\u115f\u1160\u3164\uffa0")


def has_visible_text(text: str) -> bool:
    """Whether `text` holds at least one visible character, i.e. whether an answer block is really filled.

    A character counts only when its Unicode general category is a letter, number, punctuation or symbol (L*, N*,
    P*, S*) and it is not one of the known blank glyphs (`BLANK_GLYPHS`). So whitespace and separators (Z*), control
    characters and NUL (Cc), invisible format characters such as the zero-width space, BOM or soft hyphen (Cf),
    lone combining marks and variation selectors such as U+034F or U+FE0F (M*: they decorate a character, alone they
    show nothing), private-use and unassigned code points (Co, Cn) and the blank glyphs do not. Why it matters: a
    format reward that pays for an empty-looking block teaches GRPO to emit the bare tag skeleton, and the policy
    finds any invisible filler the check lets through.
    """
    return any(unicodedata.category(char)[0] in "LNPS" and char not in BLANK_GLYPHS for char in text)


def _occurrences(text: str, delimiter: str, ignore_case: bool, limit: int) -> list[int]:
    """Start offsets of up to `limit` occurrences of the literal `delimiter`, overlapping ones included ("aa" is in
    "aaa" twice). Linear in len(text): a zero-width lookahead per position, stopped after `limit` hits."""
    pattern = re.compile(f"(?={re.escape(delimiter)})", re.IGNORECASE if ignore_case else 0)
    found: list[int] = []
    for match in pattern.finditer(text):
        found.append(match.start())
        if len(found) == limit:
            break
    return found


def single_block(text: str, start: str, end: str, *, ignore_case: bool = False) -> tuple[int, int] | None:
    """The (begin, stop) offsets of the content between `start` and `end` when each delimiter occurs exactly once
    in `text` and `start` ends before `end` begins, else None; the content is `text[begin:stop]`.

    This is what a format reward pays for: one block of a kind. Counting each delimiter over the whole text excludes
    repeated blocks (`<a>x</a><a>y</a>`), nested ones (`<a><a>x</a></a>`), stray delimiters and floods of them alike,
    which a block-matching regex does not (it finds one clean block inside the nest), and it is linear-time where the
    obvious regex is quadratic on degenerate repetitions (RL policies do produce those). Delimiters are literal;
    `ignore_case` matches them case-insensitively (`<THINK>` is `<think>`).
    """
    if not start or not end:
        raise ValueError("block delimiters must be non-empty strings")
    starts = _occurrences(text, start, ignore_case, limit=2)
    ends = _occurrences(text, end, ignore_case, limit=2)
    if len(starts) != 1 or len(ends) != 1:
        return None
    begin, stop = starts[0] + len(start), ends[0]
    return (begin, stop) if begin <= stop else None
