"""Test helpers shared by all test files.

Recipes are scripts, not packages: `recipes/<task>/train.py` imports its siblings by plain name (`from data import
build_dataset`). Loading them in one pytest process therefore needs care, or `rewards` of one recipe would be
served to another from `sys.modules`. `load_recipe_module` isolates that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from core.tools.recipe_modules import load_recipe_module as core_load_recipe_module

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = REPO_ROOT / "recipes"


def load_recipe_module(recipe: str, module: str) -> ModuleType:
    """`recipes/<recipe>/<module>.py` through `core.tools.recipe_modules.load_recipe_module` (imported as
    `f"{recipe}_{module}"`, siblings isolated, cached)."""
    return core_load_recipe_module(RECIPES_DIR / recipe, module)


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a test's child process (a recipe script or `core/tools/launch.sh`): this interpreter as `PYTHON`
    (the launcher would otherwise pick the repo's `.venv`, or `python3` on PATH, which need not be the environment the
    suite runs in), the repository on `PYTHONPATH`, unbuffered output; `extra` on top."""
    return {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def run_smoke_train(recipe: str, *flags: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python recipes/<recipe>/train.py --config config_smoke.yaml FLAGS...` as a user runs it (a real subprocess,
    this interpreter, `subprocess_env`), output captured; the caller asserts on the exit code and messages."""
    recipe_dir = RECIPES_DIR / recipe
    return subprocess.run(
        [sys.executable, str(recipe_dir / "train.py"), "--config", str(recipe_dir / "config_smoke.yaml"), *flags],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
