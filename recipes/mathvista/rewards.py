"""Rewards for MathVista: is the answer in the asked format, and is the solution right (by MathVista's own rules)?

The model answers `<REASONING>...</REASONING><SOLUTION>...</SOLUTION>` (delimiters and amounts: `RewardConfig`).

Rewards (TRL contract: `f(completions, **kwargs) -> list[float | None]`, dataset columns arrive as kwargs)
--------------------------------------------------------------------------------------------------------
* `formatting_reward` (as in the original project): + `formatting_reward` (1.0) when there is exactly one reasoning
  block and it is filled, + `formatting_reward` when there is exactly one solution block and it is filled,
  independently: 0, 1 or 2 by default. A duplicated block pays 0 for its half, so the policy cannot farm the reward
  by repeating tags; an empty block pays 0 too (the original paid 2.0 for `<REASONING></REASONING><SOLUTION>
  </SOLUTION>`). A block is filled when it holds a visible character (`core.rewards.contract.has_visible_text`: a
  letter,
  number, punctuation or symbol that is not a blank glyph such as the braille blank or a Hangul filler; whitespace,
  control characters, invisible format characters, lone combining marks and variation selectors do not count).
* `correctness_reward` (the original's 2.0 / 0.0 scale): `correctness_reward` when there is exactly one solution
  block and its content is right by `is_correct`, else 0.0. A missing or duplicated solution block is 0.0: with two
  solution blocks we cannot tell which one is the answer, and paying either would reward hedging. An empty solution
  reads as nothing (`normalize_prediction` gives None) and is wrong: 0.0.

"Exactly one block" means that the block's start delimiter and its end delimiter each occur exactly once in the
whole completion, the start first (`core.rewards.contract.single_block`; delimiters are literal). That one rule excludes
repeated blocks, nested ones (`<SOLUTION><SOLUTION>14</SOLUTION></SOLUTION>`, whose inner text "<SOLUTION>14" would
otherwise read as 14), stray delimiters and floods of them, and it is found in linear time: the obvious
`re.findall(re.escape(start) + "(.*?)" + re.escape(end), text, re.DOTALL)` is quadratic on degenerate repetitions
(80k characters of `<SOLUTION>` take ~3 s per completion), and RL policies do produce those. Because a delimiter
that occurs inside another (`**` and `**`, `SOL` and `/SOL`) would make every block count twice, such delimiters
are refused when a reward is built.

Answer normalisation (`normalize_prediction`, `is_correct`)
-----------------------------------------------------------
The original compared the solution text with the answer string exactly, so "14.0" or "14 cm" scored 0 against "14"
and GRPO punished right answers. We follow MathVista's evaluator (`normalize_extracted_answer` + `safe_equal` in
lupantech/MathVista `evaluation/calculate_score.py`), reading numbers leniently first. Each difference from the
official scorer is deliberate and listed with an example in the recipe README ("How it maps to MathVista's
evaluation"); tests/test_mathvista_official.py pins them against the official code's own values.

* numbers (`integer`, `float`, list items): LaTeX-ish wrappers (`\\boxed{14}`, `\\text{..}`, `$14$`, `\\(..\\)`),
  markdown `**..**`, the item's `unit` when the text ends with it ("14 cm", "14cm"), currency symbols ($ € £ ¥),
  "%", "°" / "^\\circ" / "degrees", unit powers ("cm^2", "cm²"), thousands separators ("1,234" -> 1234), a trailing
  period and surrounding whitespace are removed; "3/4" and "\\frac{3}{4}" read as 0.75. If what remains is still not
  a number but the text holds exactly one distinct number ("x = 14", "14 apples"), that number is the answer; two or
  more different numbers ("between 12 and 14") are not readable (0 reward, never a guess).
* `integer`: `int(float(x))` of prediction and answer, MathVista's rule. Note that this TRUNCATES: "14.7" reads as
  14 and is right for the answer "14". We keep it so training reward and benchmark score agree.
* `float`: both rounded to `precision` decimals (MathVista's rule; `precision` comes as 1.0, 2.0, ...). When the
  item has no precision (None or NaN), `math.isclose(rel_tol=1e-6, abs_tol=1e-9)` instead of guessing a number of
  places.
* `list`: the bracketed part parsed with `ast.literal_eval` ("1, 2, 3" without brackets is split on commas),
  compared item by item: numbers numerically (2 == 2.0, rounded to `precision` when given), strings
  case-insensitively; lengths must match.
* `text` (and any unknown answer type): case-insensitive, whitespace-collapsed equality, trailing period ignored.
* `multi_choice` (any answer type): `choices` are the option texts, lettered A, B, C, ... in order; `answer` is the
  option TEXT. As in MathVista's `calculate_score.py`, the first parenthesised letter ANYWHERE decides, either case:
  "(B)", "(b)", "The answer is (B).", "Answer: (B)", "(B) 4" (the letter wins over the text); a parenthesised letter
  beyond the options reads as nothing. Without one, a leading capital letter is read leniently (official: only the
  exact text "B"): "B", "B.", "B)", "B:", "B. Yes", "Option B" (a bare "a" is too likely a word). Otherwise the text
  must equal an option (case-insensitive, whitespace-collapsed, trailing period ignored) or, numerically, a numeric
  option ("3.50" is the option "3.5").
  Unlike MathVista's evaluator we do NOT fall back to the most similar option when nothing matches: for a benchmark
  score that is a mild convenience, as a reward it pays random text 1/n of the time (`evaluate.py` does fall back,
  to reproduce the official number).

Nothing here raises on model output: any text gives a float reward; unreadable answers are simply wrong.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from core.rewards.contract import RewardFunc, completion_text, has_visible_text, resolve_reward_funcs, single_block

REWARD_NAMES = ("formatting_reward", "correctness_reward")

__all__ = [
    "REWARD_NAMES",
    "CorrectnessReward",
    "FormattingReward",
    "RewardConfig",
    "build_reward_funcs",
    "block_content",
    "extract_solution",
    "format_ok",
    "is_correct",
    "normalize_prediction",
    "single_filled_block",
]


@dataclass(frozen=True)
class RewardConfig:
    """Delimiters the prompt asks for and the rewards look for, and what each reward pays (the original's values)."""

    reasoning_start: str = "<REASONING>"
    reasoning_end: str = "</REASONING>"
    solution_start: str = "<SOLUTION>"
    solution_end: str = "</SOLUTION>"
    formatting_reward: float = 1.0  # per block present exactly once and filled (reasoning, solution): at most 2x
    correctness_reward: float = 2.0  # when the single solution block holds the right answer

    @classmethod
    def from_object(cls, obj: Any) -> RewardConfig:
        """Pick the fields above from any object that has them (the parsed ScriptArguments)."""
        return cls(**{f.name: getattr(obj, f.name) for f in fields(cls) if hasattr(obj, f.name)})


_DELIMITERS = ("reasoning_start", "reasoning_end", "solution_start", "solution_end")


def _check_config(cfg: RewardConfig) -> RewardConfig:
    """Fail at start-up, not mid-training: an empty delimiter would match everywhere, and a delimiter that occurs
    inside another one occurs twice in every well-formed answer, so the block it belongs to could never count as
    exactly one (that half of the formatting reward, or the whole correctness reward, would silently pay 0)."""
    for name in _DELIMITERS:
        value = getattr(cfg, name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"RewardConfig.{name} must be a non-empty string, got {value!r}")
    for inner in _DELIMITERS:
        for outer in _DELIMITERS:
            inner_value, outer_value = getattr(cfg, inner), getattr(cfg, outer)
            if inner != outer and inner_value in outer_value:
                raise ValueError(
                    f"RewardConfig.{inner} {inner_value!r} occurs inside {outer} {outer_value!r}: every delimiter "
                    "must occur exactly once in a well-formed answer, so none may contain another"
                )
    return cfg


# ------------------------------------------------------------------------------------------------------------ blocks


def block_content(text: str, start: str, end: str) -> str | None:
    """The text between `start` and `end` when each occurs exactly once in `text`, the start first; None otherwise
    (missing, repeated, nested or stray delimiters). Literal delimiters, spanning newlines, linear time."""
    span = single_block(text, start, end)
    return None if span is None else text[span[0] : span[1]]


def extract_solution(text: str, cfg: RewardConfig) -> str | None:
    """The stripped content of the solution block when there is exactly one (`block_content`); None when it is
    missing, duplicated or nested (two answers are ambiguous, and paying for either would reward hedging)."""
    solution = block_content(text, cfg.solution_start, cfg.solution_end)
    return None if solution is None else solution.strip()


def single_filled_block(text: str, start: str, end: str) -> bool:
    """Exactly one start...end block (`block_content`), and it holds visible text: what earns one half of
    `formatting_reward`."""
    content = block_content(text, start, end)
    return content is not None and has_visible_text(content)


def format_ok(text: str, cfg: RewardConfig) -> bool:
    """Exactly one reasoning block and exactly one solution block, both holding content (full formatting reward)."""
    return single_filled_block(text, cfg.reasoning_start, cfg.reasoning_end) and single_filled_block(
        text, cfg.solution_start, cfg.solution_end
    )


# ----------------------------------------------------------------------------------------------------- normalisation

_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"  # "1,234.5" is one number
_NUM_RE = re.compile(_NUM)
_FRACTION_RE = re.compile(rf"({_NUM})\s*/\s*({_NUM})")
_LATEX_FRACTION_RE = re.compile(rf"\\[dt]?frac\s*\{{\s*({_NUM})\s*\}}\s*\{{\s*({_NUM})\s*\}}")
_WRAPPER_RE = re.compile(r"\\(?:boxed|fbox|text|textbf|textrm|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_DEGREES_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree|°|\bdegrees?\s*$", re.IGNORECASE)
_UNIT_POWER_RE = re.compile(r"\b(mm|cm|dm|m|km|in|ft|yd|mi|units?)\s*(?:\^\s*\{?\s*[23]\s*\}?|[²³])", re.IGNORECASE)
_CURRENCY = "$€£¥"
# MathVista's calculate_score reads the FIRST parenthesised letter anywhere in the answer, either case: "(B)",
# "The answer is (B).", "Answer: (b)", "(B) 3.5"; it decides, even when a bare letter comes first.
_PAREN_LETTER_RE = re.compile(r"\(([A-Za-z])\)")
# Our lenient reading of a leading bare capital (official: only the exact text "B"): "B", "B.", "B)", "B:", "B. Yes",
# "Option B"; the letter must be followed by the end or punctuation, else "A triangle" (an option text) would read
# as the letter A.
_LETTER_RE = re.compile(r"(?:(?i:option)\s*:?\s*)?([A-Z])(?=$|[.):])")
_LIST_RE = re.compile(r"\[([^\[\]]*)\]")


def _unwrap(text: str) -> str:
    """Remove LaTeX and markdown wrappers around an answer: \\boxed{..}, \\text{..}, \\(..\\), \\[..\\], **, `."""
    for _ in range(5):  # nested wrappers: \boxed{\text{14}}
        unwrapped = _WRAPPER_RE.sub(r"\1", text)
        if unwrapped == text:
            break
        text = unwrapped
    for token in ("\\(", "\\)", "\\[", "\\]", "**", "`"):
        text = text.replace(token, "")
    return text.strip()


def _norm_text(text: Any) -> str:
    """Case-insensitive, whitespace-collapsed text without a trailing period or surrounding quotes."""
    text = " ".join(_unwrap(str(text)).split()).casefold()
    text = text.rstrip(".").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _to_float(token: str) -> float | None:
    try:
        return _finite(float(token.replace(",", "")))
    except (ValueError, OverflowError):
        return None


def _clean_number_text(text: str, unit: Any) -> str:
    """The text with wrappers, the item's unit, currency, percent, degree signs and unit powers removed."""
    text = _unwrap(text).replace("\u2212", "-").replace("$", " ").strip().rstrip(".").strip()
    if isinstance(unit, str) and unit.strip():
        unit = unit.strip()
        if text.lower().endswith(unit.lower()):
            text = text[: -len(unit)].strip()
    for symbol in _CURRENCY:
        text = text.replace(symbol, "")
    text = text.replace("\\%", "").replace("%", "")
    text = _DEGREES_RE.sub("", text)
    text = _UNIT_POWER_RE.sub(r"\1", text)
    return text.replace("\\,", "").replace("\\!", "").strip().rstrip(".").strip()


def _strict_number(text: str) -> float | None:
    """A number when the whole (cleaned) text is one: "14", "1,234.5", "-3e2", "3/4", "\\frac{3}{4}"."""
    if _NUM_RE.fullmatch(text):
        return _to_float(text)
    fraction = _FRACTION_RE.fullmatch(text) or _LATEX_FRACTION_RE.fullmatch(text)
    if fraction:
        numerator, denominator = _to_float(fraction.group(1)), _to_float(fraction.group(2))
        if numerator is not None and denominator:
            return _finite(numerator / denominator)
    return None


def _read_number(text: Any, unit: Any = None, lenient: bool = True) -> float | None:
    """The number a text states (rules in the module docstring), or None. `lenient`: fall back to the single distinct
    number in the text ("x = 14"); several different numbers are not readable."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return _finite(float(text))
    cleaned = _clean_number_text(str(text), unit)
    value = _strict_number(cleaned)
    if value is not None or not lenient:
        return value
    values = {_to_float(match) for match in _NUM_RE.findall(cleaned)}
    if None in values or len(values) != 1:
        return None
    return values.pop()


def _precision(precision: Any) -> int | None:
    """Decimal places from MathVista's `precision` (1.0, 2.0, ...); None for None, NaN or junk."""
    try:
        value = float(precision)
    except (TypeError, ValueError):
        return None
    return int(value) if math.isfinite(value) else None


def _list_item(item: Any, unit: Any, places: int | None) -> float | str | None:
    """A list item: a number (rounded to `places`) when it reads as one, else normalised text."""
    if isinstance(item, bool):
        item = str(item)
    if isinstance(item, int | float):
        number = _finite(float(item))
    elif isinstance(item, str):
        number = _read_number(item.strip().strip("\"'"), unit, lenient=False)
    else:
        number = None
    if number is not None:
        return round(number, places) if places is not None else number
    if isinstance(item, float):  # NaN / inf
        return None
    text = _norm_text(item)
    return text or None


def _parse_list(text: Any, unit: Any, places: int | None) -> list[float | str] | None:
    """The list a text states: its one bracketed group (all equal groups count as one), else the comma-separated
    text; None when unreadable or when the text holds different lists."""
    if isinstance(text, list | tuple):
        raw_items: list[list[Any]] = [list(text)]
    else:
        text = _unwrap(str(text)).replace("$", "")
        groups = _LIST_RE.findall(text) or [text]
        raw_items = []
        for group in groups:
            try:
                parsed = ast.literal_eval(f"[{group}]")
            except Exception:  # not Python literals ("[a, b]", "[1 cm, 2 cm]"): split on commas
                parsed = [part for part in group.split(",") if part.strip()]
            raw_items.append(parsed)
    lists: list[list[float | str]] = []
    for items in raw_items:
        values = [_list_item(item, unit, places) for item in items]
        if not values or any(value is None for value in values):
            return None
        if values not in lists:
            lists.append(values)
    return lists[0] if len(lists) == 1 else None


def _choice_for(text: str, choices: Any, unit: Any) -> str | None:
    """The option a multiple-choice prediction names (rules in the module docstring), or None."""
    if choices is None or isinstance(choices, str | bytes):
        return None
    options = [str(choice) for choice in choices]
    if not options:
        return None
    paren = _PAREN_LETTER_RE.search(text)
    if paren:  # as official: the first "(x)" decides; a letter beyond the options reads as nothing (official: guess)
        index = ord(paren.group(1).upper()) - ord("A")
        return options[index] if index < len(options) else None
    text = _unwrap(text)
    letter_match = _LETTER_RE.match(text)
    if letter_match:
        index = ord(letter_match.group(1)) - ord("A")
        if index < len(options):
            return options[index]
    wanted = _norm_text(text)
    for option in options:
        if wanted and _norm_text(option) == wanted:
            return option
    number = _read_number(text, unit, lenient=False)
    if number is not None:
        for option in options:
            if _read_number(option, unit, lenient=False) == number:
                return option
    return None


def _normalize(
    value: Any, question_type: Any, answer_type: Any, choices: Any, precision: Any, unit: Any
) -> str | int | float | list[float | str] | None:
    if question_type == "multi_choice":
        return _choice_for(str(value), choices, unit)
    if answer_type == "integer":
        number = _read_number(value, unit)
        return int(number) if number is not None else None  # int(float(x)): MathVista's truncation
    if answer_type == "float":
        number = _read_number(value, unit)
        places = _precision(precision)
        if number is None or places is None:
            return number
        return round(number, places)
    if answer_type == "list":
        return _parse_list(value, unit, _precision(precision))
    text = _norm_text(value)
    return text or None


def normalize_prediction(
    text: Any,
    *,
    question_type: str | None,
    answer_type: str | None,
    choices: Sequence[Any] | None = None,
    precision: float | None = None,
    unit: str | None = None,
) -> str | int | float | list[float | str] | None:
    """The value a prediction states, in the form MathVista compares (module docstring), or None if unreadable.

    multi_choice: the chosen option's text; integer: an int (truncated); float: a float, rounded to `precision` when
    given; list: a list of numbers and normalised strings; text: the normalised string. Never raises.
    """
    try:
        return _normalize(text, question_type, answer_type, choices, precision, unit)
    except Exception:  # a reward must never take training down on a weird completion
        return None


def _same_number(a: float, b: float, places: int | None) -> bool:
    if places is not None:
        return round(a, places) == round(b, places)
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def is_correct(
    prediction_text: Any,
    answer: Any,
    *,
    question_type: str | None,
    answer_type: str | None,
    choices: Sequence[Any] | None = None,
    precision: float | None = None,
    unit: str | None = None,
) -> bool:
    """Whether the prediction states `answer` (a string as MathVista stores it, or a number), by the rules in the
    module docstring. Unreadable predictions or answers are wrong; never raises."""
    try:
        if question_type == "multi_choice":
            chosen = _choice_for(str(prediction_text), choices, unit)
            if chosen is None:
                return False
            if _norm_text(chosen) == _norm_text(answer):
                return True
            chosen_number = _read_number(chosen, unit, lenient=False)
            answer_number = _read_number(answer, unit, lenient=False)
            return chosen_number is not None and chosen_number == answer_number
        if answer_type == "float":
            places = _precision(precision)
            predicted, expected = _read_number(prediction_text, unit), _read_number(answer, unit)
            return predicted is not None and expected is not None and _same_number(predicted, expected, places)
        predicted = _normalize(prediction_text, question_type, answer_type, choices, precision, unit)
        expected = _normalize(answer, question_type, answer_type, choices, precision, unit)
        # Lists hold floats (2 == 2.0, already rounded to `precision`) and normalised strings; a float never equals a
        # string, and lists of different lengths are unequal.
        return predicted is not None and expected is not None and predicted == expected
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------------------- rewards


def _column(values: Any, name: str, n: int) -> list[Any]:
    """A dataset column with one value per completion (None when the dataset has no such column)."""
    if values is None:
        return [None] * n
    values = list(values)
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


class FormattingReward:
    """`formatting_reward` for exactly one filled reasoning block plus `formatting_reward` for exactly one filled
    solution block (empty, repeated, nested or flooded blocks pay nothing).

    The two halves are independent (0, 1 or 2 by default), as in the original project, so a completion that gets
    one block right is still better than one that gets none: a denser signal early in training."""

    def __init__(self, cfg: RewardConfig | None = None) -> None:
        self.cfg = _check_config(cfg or RewardConfig())
        self.__name__ = "formatting_reward"  # TRL logs rewards/<__name__>/mean

    def __repr__(self) -> str:
        return f"FormattingReward({self.cfg!r})"

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        cfg = self.cfg
        rewards: list[float | None] = []
        for completion in completions:
            text = completion_text(completion)
            score = 0.0
            if single_filled_block(text, cfg.reasoning_start, cfg.reasoning_end):
                score += cfg.formatting_reward
            if single_filled_block(text, cfg.solution_start, cfg.solution_end):
                score += cfg.formatting_reward
            rewards.append(float(score))
        return rewards


class CorrectnessReward:
    """`correctness_reward` when the single solution block states the answer (`is_correct`), else 0.0.

    Needs the dataset columns `answer`, `question_type`, `answer_type`; `choices`, `precision` and `unit` are used
    when present (MathVista has them all)."""

    def __init__(self, cfg: RewardConfig | None = None) -> None:
        self.cfg = _check_config(cfg or RewardConfig())
        self.__name__ = "correctness_reward"

    def __repr__(self) -> str:
        return f"CorrectnessReward({self.cfg!r})"

    def __call__(
        self,
        completions: Sequence[Any],
        answer: Sequence[Any],
        question_type: Sequence[Any],
        answer_type: Sequence[Any],
        choices: Sequence[Any] | None = None,
        precision: Sequence[Any] | None = None,
        unit: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        n = len(completions)
        answers = _column(answer, "answer", n)
        item_columns = {
            "question_type": _column(question_type, "question_type", n),
            "answer_type": _column(answer_type, "answer_type", n),
            "choices": _column(choices, "choices", n),
            "precision": _column(precision, "precision", n),
            "unit": _column(unit, "unit", n),
        }
        rewards: list[float | None] = []
        for i, completion in enumerate(completions):
            solution = extract_solution(completion_text(completion), self.cfg)
            item = {name: values[i] for name, values in item_columns.items()}
            right = solution is not None and is_correct(solution, answers[i], **item)
            rewards.append(float(self.cfg.correctness_reward) if right else 0.0)
        return rewards


def reference_full_marks(cfg: RewardConfig | None = None) -> dict[str, float]:
    """What a reference answer must earn at the start-up check: both formatting blocks, and correctness."""
    cfg = cfg or RewardConfig()
    return {"formatting_reward": 2 * cfg.formatting_reward, "correctness_reward": cfg.correctness_reward}


def reference_completion(cfg: RewardConfig | None = None) -> Callable[[Mapping[str, Any]], str]:
    """A well-formed answer holding the row's reference answer between the configured delimiters, as the prompt asks
    for it (the option's letter for multiple choice), for
    `core.rewards.contract.check_rewards_can_score` at start-up."""
    cfg = _check_config(cfg or RewardConfig())

    def write(row: Mapping[str, Any]) -> str:
        answer = row["answer"]
        if row.get("question_type") == "multi_choice" and answer in (row.get("choices") or []):
            answer = chr(ord("A") + list(row["choices"]).index(answer))  # option i is lettered as in the prompt
        reasoning = f"{cfg.reasoning_start}Reading the figure gives the answer.{cfg.reasoning_end}"
        return f"{reasoning}{cfg.solution_start}{answer}{cfg.solution_end}"

    return write


def build_reward_funcs(names: Sequence[str], cfg: RewardConfig | None = None) -> list[RewardFunc]:
    """Reward callables for `names`, in order: built-ins (`REWARD_NAMES`) configured by `cfg`, or user rewards given
    as an import path `package.module:function` (or `file.py:function`). An unknown name raises ValueError."""
    cfg = _check_config(cfg or RewardConfig())
    factories: dict[str, Callable[[], RewardFunc]] = {
        "formatting_reward": lambda: FormattingReward(cfg),
        "correctness_reward": lambda: CorrectnessReward(cfg),
    }
    return resolve_reward_funcs(names, factories)
