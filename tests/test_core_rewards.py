"""User rewards by import path, alongside a recipe's built-ins."""

import pytest

from core.rewards import load_object, resolve_reward_funcs


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
