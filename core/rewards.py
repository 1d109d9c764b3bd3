"""Reward plumbing shared by recipes: user rewards named by import path next to a recipe's built-in ones.

A recipe lists its own rewards by name; anything else in `reward_funcs` of the form `package.module:function` (or
`path/to/file.py:function`) is imported, so a user adds a reward without editing the recipe. Every reward keeps
TRL's contract: `f(completions, **kwargs) -> list[float | None]`.
"""

from __future__ import annotations

import importlib
import importlib.util
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
