"""Model ids that name no hub checkpoint, and the cache the checkpoints behind them live in.

* `tiny:<family>`: a tiny, randomly initialised but architecturally real checkpoint generated offline (the tests and
  smoke configs use them; see core.testing.tiny);
* `random:<hub id>`: the real-size architecture of that checkpoint with random weights (core.training.architectures).

Production code checks and resolves these ids here, so loading a model never imports the tiny-checkpoint generator
(a test fixture): `core.testing.tiny` is imported only inside :func:`resolve_model_path`, when a `tiny:` id is
actually resolved.
"""

from __future__ import annotations

import os
from pathlib import Path

TINY_PREFIX = "tiny:"
RANDOM_PREFIX = "random:"


def is_tiny(name: str | None) -> bool:
    """True for `tiny:<anything>` names, which never refer to the Hugging Face hub."""
    return isinstance(name, str) and name.startswith(TINY_PREFIX)


def is_random(name: str | None) -> bool:
    """True for `random:<hub id>` names: the architecture of that checkpoint with random weights."""
    return isinstance(name, str) and name.startswith(RANDOM_PREFIX)


def cache_dir() -> Path:
    """Cache root of generated checkpoints and warm starts: `$VLM_GRPO_CACHE` if set (tests point it at a temp dir),
    else `~/.cache/vlm-grpo`."""
    env = os.environ.get("VLM_GRPO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vlm-grpo"


def resolve_model_path(name_or_path: str) -> str:
    """`tiny:<family>` -> the folder of its generated checkpoint (built on first use); anything else as is."""
    if not is_tiny(name_or_path):
        return name_or_path
    from core.testing.tiny import resolve_model_path as resolve_tiny

    return resolve_tiny(name_or_path)
