"""Test helpers shared by all test files.

Recipes are scripts, not packages: `recipes/<task>/train.py` imports its siblings by plain name (`from data import
build_dataset`). Loading them in one pytest process therefore needs care, or `rewards` of one recipe would be
served to another from `sys.modules`. `load_recipe_module` isolates that.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = REPO_ROOT / "recipes"


def _sibling_names(recipe_dir: Path) -> set[str]:
    """Top-level names a recipe's modules can import by plain name: its .py files and sub-packages."""
    names = {path.stem for path in recipe_dir.glob("*.py")}
    names |= {path.name for path in recipe_dir.iterdir() if (path / "__init__.py").is_file()}
    return names


def load_recipe_module(recipe: str, module: str) -> ModuleType:
    """Import `recipes/<recipe>/<module>.py` as `f"{recipe}_{module}"`, the way the script would see its siblings.

    While the module executes, the recipe folder is first on sys.path and any cached modules with a sibling's name
    (e.g. another recipe's `rewards`) are set aside, so plain-name imports resolve to THIS recipe's files. Afterwards
    sys.path and sys.modules are restored; siblings imported on the way are kept under `f"{recipe}_{name}"`, so
    `load_recipe_module(recipe, "rewards")` returns the very module `data.py` imported (same classes). Repeated calls
    return the cached module.
    """
    name = f"{recipe}_{module}"
    if name in sys.modules:
        return sys.modules[name]
    recipe_dir = RECIPES_DIR / recipe
    path = recipe_dir / f"{module}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no module {module!r} in recipe {recipe!r}: {path} does not exist")

    if str(REPO_ROOT) not in sys.path:  # recipes import `core`
        sys.path.append(str(REPO_ROOT))
    siblings = _sibling_names(recipe_dir)

    def is_sibling(module_name: str) -> bool:
        return module_name.split(".", 1)[0] in siblings

    set_aside = {key: sys.modules.pop(key) for key in list(sys.modules) if is_sibling(key)}
    sys.path.insert(0, str(recipe_dir))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    try:
        spec.loader.exec_module(loaded)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(str(recipe_dir))
        for key in [key for key in sys.modules if is_sibling(key)]:
            imported = sys.modules.pop(key)
            if "." not in key:
                sys.modules.setdefault(f"{recipe}_{key}", imported)
        sys.modules.update(set_aside)
    return loaded


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a test's child process (a recipe script or `core/launch.sh`): this interpreter as `PYTHON`
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
