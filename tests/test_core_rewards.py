"""User rewards by import path, alongside a recipe's built-ins; the shared format-reward helpers (visible text, one
block of a kind)."""

import random
import time

import pytest

from core.rewards.contract import has_visible_text, load_object, resolve_reward_funcs, single_block


def test_builtin_and_import_path_in_order(tmp_path):
    reward_file = tmp_path / "my_reward.py"
    reward_file.write_text("def short(completions, **kw):\n    return [1.0 / (1 + len(c)) for c in completions]\n")
    funcs = resolve_reward_funcs(
        ["builtin", "tests.fixtures.toy_rewards:even_token_fraction", f"{reward_file}:short"],
        {"builtin": lambda: lambda completions, **kw: [0.5] * len(completions)},
    )
    assert funcs[0](["a"]) == [0.5]
    assert funcs[1](["x", "y"], completion_ids=[[2, 4, 3], [1]]) == [2 / 3, 0.0]
    assert funcs[2](["abc"]) == [0.25]


def test_unknown_name_lists_builtins():
    with pytest.raises(ValueError, match="unknown reward 'acc'; built-in rewards: a, b"):
        resolve_reward_funcs(["acc"], {"a": lambda: None, "b": lambda: None})


def test_bad_import_paths_are_named(tmp_path):
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        load_object("tests.fixtures.toy_rewards:nope")
    with pytest.raises(FileNotFoundError, match="missing.py"):
        load_object(f"{tmp_path}/missing.py:f")
    with pytest.raises(ModuleNotFoundError):
        load_object("no_such_module_xyz:f")


# Blank to the eye, but not whitespace: each once slipped through a format reward's "is this block filled" check.
INVISIBLE = [
    "\u2800",  # braille pattern blank (So)
    "\u3164",  # Hangul filler (Lo)
    "\u115f",  # Hangul choseong filler (Lo)
    "\u1160",  # Hangul jungseong filler (Lo)
    "\uffa0",  # halfwidth Hangul filler (Lo)
    "\u034f",  # combining grapheme joiner (Mn)
    "\ufe0f",  # variation selector-16 (Mn)
    "\U000e0100",  # variation selector-17 (Mn)
    "\u0301",  # a lone combining acute accent (Mn)
    "\u20dd",  # a lone combining enclosing circle (Me)
    "\x00",  # NUL (Cc)
    "\x07\x1b\x7f\x85",  # other control characters (Cc)
    "\u200b\ufeff\u00ad\u2060",  # zero-width space, BOM, soft hyphen, word joiner (Cf)
    " \t\n\u00a0\u3000\u2028",  # whitespace and separators (Z*)
    "\ue000",  # private use (Co)
    "",
]


def test_has_visible_text_refuses_blank_characters() -> None:
    for text in INVISIBLE:
        assert has_visible_text(text) is False, ascii(text)
    assert has_visible_text("".join(INVISIBLE)) is False


def test_has_visible_text_accepts_letters_numbers_punctuation_symbols() -> None:
    for text in ("a", "7", "?", "-", "+", "€", "中", "é", "e\u0301", "\u2800x", "\u00bd", "\U0001f600", "\u0660"):
        assert has_visible_text(text) is True, ascii(text)


def _starts(text: str, delimiter: str, fold: bool) -> list[int]:
    """Every occurrence of `delimiter`, overlapping ones included: the definition single_block implements."""
    haystack, needle = (text.lower(), delimiter.lower()) if fold else (text, delimiter)
    return [i for i in range(len(haystack)) if haystack.startswith(needle, i)]


def test_single_block_needs_each_delimiter_exactly_once() -> None:
    assert single_block("x<a>hi</a>y", "<a>", "</a>") == (4, 6)
    assert single_block("<a></a>", "<a>", "</a>") == (3, 3)  # empty, but one block: the caller judges the content
    for text in (
        "",
        "<a>hi",  # unclosed
        "hi</a>",
        "</a>hi<a>",  # end before start
        "<a>x</a><a>y</a>",  # repeated
        "<a><a>x</a></a>",  # nested
        "<a>x</a></a>",  # a stray end
        "<a>" * 3 + "x" + "</a>" * 3,  # a small flood
    ):
        assert single_block(text, "<a>", "</a>") is None, text
    assert single_block("<A>x</a>", "<a>", "</a>") is None  # literal, case-sensitive by default
    assert single_block("<A>x</a>", "<a>", "</a>", ignore_case=True) == (3, 4)
    assert single_block("<A>x</a><a>", "<a>", "</a>", ignore_case=True) is None
    assert single_block("[a+b]", "[", "]") == (1, 4)  # regex syntax in a delimiter is literal
    assert single_block("aaa b", "aa", "b") is None  # "aa" occurs twice in "aaa" (overlapping)
    with pytest.raises(ValueError, match="non-empty"):
        single_block("x", "", "</a>")


def test_single_block_matches_its_definition_on_random_text() -> None:
    rng = random.Random(0)
    delimiters = [("<S>", "</S>"), ("aa", "a"), ("ab", "ba"), ("(", ")"), ("x", "x")]
    for _ in range(1500):
        text = "".join(rng.choice(["<S>", "</S>", "<s>", "a", "b", "x", "(", ")"]) for _ in range(rng.randint(0, 12)))
        for start, end in delimiters:
            for fold in (False, True):
                starts, ends = _starts(text, start, fold), _starts(text, end, fold)
                ok = len(starts) == 1 and len(ends) == 1 and starts[0] + len(start) <= ends[0]
                expected = (starts[0] + len(start), ends[0]) if ok else None
                assert single_block(text, start, end, ignore_case=fold) == expected, (text, start, end, fold)


def test_single_block_is_linear_on_delimiter_floods() -> None:
    # Degenerate completions RL policies produce: 200k nested delimiters (single_block stops at the second hit), and
    # one opening tag before 2M characters of text with no closing one.
    flood = "<REASONING>" * 200_000 + "x" + "</REASONING>" * 200_000
    unclosed = "<think>" + "x" * 2_000_000
    start = time.perf_counter()
    assert single_block(flood, "<REASONING>", "</REASONING>") is None
    assert single_block(unclosed, "<think>", "</think>", ignore_case=True) is None
    assert time.perf_counter() - start < 5  # hang guard, not a speed target (quadratic: minutes)
