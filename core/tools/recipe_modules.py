"""Import a recipe's script modules (`train.py`, `rewards.py`, ...) from Python, as the script itself would see them.

Recipes are scripts, not packages: `recipes/<task>/train.py` imports its siblings by plain name (`from data import
build_dataset`). Loaded into one process next to another recipe, `rewards` of one recipe would be served to the other
from `sys.modules`. `load_recipe_module` isolates that; `core.plan` (a config's own dataclasses) and the tests use it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]


def sibling_names(recipe_dir: Path) -> set[str]:
    """Top-level names a recipe's modules can import by plain name: its .py files and sub-packages."""
    names = {path.stem for path in recipe_dir.glob("*.py")}
    names |= {path.name for path in recipe_dir.iterdir() if (path / "__init__.py").is_file()}
    return names


def load_recipe_module(recipe_dir: str | Path, module: str) -> ModuleType:
    """Import `<recipe_dir>/<module>.py` as `f"{folder name}_{module}"`, the way the script would see its siblings.

    While the module executes, the recipe folder is first on sys.path and any cached modules with a sibling's name
    (e.g. another recipe's `rewards`) are set aside, so plain-name imports resolve to THIS recipe's files. Afterwards
    sys.path and sys.modules are restored; siblings imported on the way are kept under `f"{folder name}_{name}"`, so
    loading `rewards` afterwards returns the very module `data.py` imported (same classes). A repeated call for the
    same file returns the cached module. Raises FileNotFoundError when the file does not exist.
    """
    recipe_dir = Path(recipe_dir).resolve()
    path = recipe_dir / f"{module}.py"
    if not path.is_file():
        raise FileNotFoundError(f"no module {module!r} in recipe {recipe_dir.name!r}: {path} does not exist")
    prefix = recipe_dir.name
    name = f"{prefix}_{module}"
    cached = sys.modules.get(name)
    if cached is not None and Path(getattr(cached, "__file__", "") or "").resolve() == path:
        return cached

    if str(REPO_ROOT) not in sys.path:  # recipes import `core`
        sys.path.append(str(REPO_ROOT))
    siblings = sibling_names(recipe_dir)

    def is_sibling(module_name: str) -> bool:
        return module_name.split(".", 1)[0] in siblings

    set_aside = {key: sys.modules.pop(key) for key in list(sys.modules) if is_sibling(key)}
    sys.path.insert(0, str(recipe_dir))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded  # dataclasses look their module up while the class is built
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
                sys.modules[f"{prefix}_{key}"] = sys.modules.get(f"{prefix}_{key}", imported)
        sys.modules.update(set_aside)
    return loaded
