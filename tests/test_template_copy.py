"""`cp -r recipes/grounding recipes/my_task` is the template: the copy must run unchanged and read its own files."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow
ORIGINAL = "grounding"


def code_strings(path: Path) -> list[str]:
    """Names and non-docstring string constants of a Python file: what the code uses, not what it says."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found.append(node.value)
        elif isinstance(node, ast.Name):
            found.append(node.id)
        elif isinstance(node, ast.Attribute):
            found.append(node.attr)
        elif isinstance(node, ast.alias):
            found.append(node.name)
    return found


def test_no_file_in_the_recipe_points_at_its_own_name():
    recipe = REPO_ROOT / "recipes" / ORIGINAL
    offenders = []
    for path in recipe.glob("*.py"):
        offenders += [f"{path.name}: {s!r}" for s in code_strings(path) if ORIGINAL in s.lower()]
    for path in recipe.glob("*.yaml"):
        values = yaml.safe_dump(yaml.safe_load(path.read_text()))  # comments dropped, values kept
        if ORIGINAL in values.lower():
            offenders.append(f"{path.name}: {values}")
    for path in recipe.glob("*.sh"):
        code = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        offenders += [f"{path.name}: {line}" for line in code if ORIGINAL in line.lower()]
    assert not offenders, offenders


def test_copied_recipe_runs_unchanged_on_its_own_data(tmp_path):
    # A repo-shaped tree: the real core, a copy of the recipe under a new name.
    root = tmp_path / "repo"
    (root / "recipes").mkdir(parents=True)
    os.symlink(REPO_ROOT / "core", root / "core")
    copy = root / "recipes" / "my_task"
    shutil.copytree(REPO_ROOT / "recipes" / ORIGINAL, copy, ignore=shutil.ignore_patterns("data", "__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(root)}

    subprocess.run(
        [
            sys.executable,
            "recipes/my_task/data.py",
            "--make-sample",
            "recipes/my_task/data/sample",
            "--n-train",
            "8",
            "--n-eval",
            "4",
        ],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
    )
    proc = subprocess.run(
        [
            sys.executable,
            "recipes/my_task/train.py",
            "--config",
            "recipes/my_task/config_smoke.yaml",
            "--output_dir",
            "outputs/copy",
            "--max_steps",
            "1",
            "--max_train_samples",
            "8",
            "--disable_tqdm",
            "true",
        ],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    resolved = yaml.safe_load((root / "outputs" / "copy" / "run_config.yaml").read_text())
    # The config's relative data paths resolved into the copy, not into the original recipe.
    assert resolved["ScriptArguments"]["train_file"] == "data/sample/train.jsonl"
    log = proc.stdout + proc.stderr
    assert str(copy / "data" / "sample" / "train.jsonl") in log
    assert str(REPO_ROOT / "recipes" / ORIGINAL) not in log
