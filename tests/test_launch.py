"""Which interpreter `core/launch.sh` runs: `PYTHON` if set, else the repository's `.venv`, else `python3` on PATH.

The tests that drive the launcher pass `PYTHON=sys.executable` (tests.helpers.subprocess_env), so they run in the
suite's own environment wherever it lives. Here each candidate interpreter is a small script that records that it
was called and with what, so the choice is checked without starting accelerate.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO_ROOT, subprocess_env


def fake_python(path: Path, record: Path) -> Path:
    """An executable at `path` that appends its own name and arguments to `record` and exits 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{path} $*" >> "{record}"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def launcher_copy(root: Path) -> Path:
    """`core/launch.sh` in a repository-shaped folder `root` (no .venv), with a one-file recipe beside it."""
    (root / "core").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "core" / "launch.sh", root / "core" / "launch.sh")
    (root / "recipes" / "toy").mkdir(parents=True)
    (root / "recipes" / "toy" / "train.py").write_text("")
    return root


def launch(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**env, "NUM_GPUS": "1"}
    return subprocess.run(
        ["bash", str(root / "core" / "launch.sh"), str(root / "recipes" / "toy"), "--output_dir", str(root / "out")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_suite_environment_passes_its_own_interpreter():
    assert subprocess_env()["PYTHON"] == sys.executable


def test_python_variable_wins_over_the_repository_venv(tmp_path):
    root = launcher_copy(tmp_path / "repo")
    record = tmp_path / "calls.txt"
    fake_python(root / ".venv" / "bin" / "python", record)
    chosen = fake_python(tmp_path / "chosen" / "python", record)
    proc = launch(root, {**os.environ, "PYTHON": str(chosen)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = record.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith(f"{chosen} -m accelerate.commands.launch")
    assert f"{root / 'recipes' / 'toy' / 'train.py'} --config {root / 'recipes' / 'toy' / 'config.yaml'}" in calls[0]


def test_without_python_variable_the_repository_venv_is_used(tmp_path):
    root = launcher_copy(tmp_path / "repo")
    record = tmp_path / "calls.txt"
    venv_python = fake_python(root / ".venv" / "bin" / "python", record)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    proc = launch(root, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert record.read_text().split()[0] == str(venv_python)


def test_without_python_variable_or_venv_python3_on_path_is_used(tmp_path):
    root = launcher_copy(tmp_path / "repo")
    record = tmp_path / "calls.txt"
    on_path = fake_python(tmp_path / "bin" / "python3", record)
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env["PATH"] = f"{on_path.parent}{os.pathsep}{env['PATH']}"
    proc = launch(root, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert record.read_text().split()[0] == str(on_path)
    log = (root / "out" / "training.log").read_text()
    assert f"== {on_path} -m accelerate.commands.launch" not in log  # the log names the command as run: python3
    assert "== python3 -m accelerate.commands.launch" in log
