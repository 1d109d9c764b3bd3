"""`core/tools/launch.sh`: which interpreter it runs (`PYTHON` if set, else the repository's `.venv`, else `python3` on
PATH), that SMOKE=1 makes the recipe's sample data first (and says so), that a recipe folder outside the repository
launches the same way, and that a SIGKILLed launcher leaves no worker behind.

The tests that drive the launcher pass `PYTHON=sys.executable` (tests.helpers.subprocess_env), so they run in the
suite's own environment wherever it lives. Here each candidate interpreter is a small script that records that it
was called and with what, so the choice is checked without starting accelerate.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, load_recipe_module, subprocess_env


def fake_python(path: Path, record: Path) -> Path:
    """An executable at `path` that appends its own name and arguments to `record` and exits 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{path} $*" >> "{record}"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def launcher_copy(root: Path) -> Path:
    """`core/tools/launch.sh` in a repository-shaped folder `root` (no .venv), with a one-file recipe beside it."""
    (root / "core" / "tools").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "core" / "tools" / "launch.sh", root / "core" / "tools" / "launch.sh")
    (root / "recipes" / "toy").mkdir(parents=True)
    (root / "recipes" / "toy" / "train.py").write_text("")
    return root


def launch(root: Path, env: dict[str, str], recipe: Path | None = None) -> subprocess.CompletedProcess:
    env = {**env, "NUM_GPUS": "1"}
    recipe = recipe or root / "recipes" / "toy"
    return subprocess.run(
        ["bash", str(root / "core" / "tools" / "launch.sh"), str(recipe), "--output_dir", str(root / "out")],
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


def test_smoke_makes_the_sample_data_first_and_says_so_in_one_line(tmp_path):
    root = launcher_copy(tmp_path / "repo")
    (root / "recipes" / "toy" / "sample.py").write_text("")
    record = tmp_path / "calls.txt"
    chosen = fake_python(tmp_path / "chosen" / "python", record)
    with chosen.open("a") as script:  # what sample.py prints (core.data.cli.sample_main)
        script.write(
            'case "$1" in *sample.py) printf "wrote data/sample:\\n  train: data/sample/train.jsonl" ;; esac\n'
        )
    env = {**os.environ, "PYTHON": str(chosen), "SMOKE": "1", "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    proc = launch(root, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sample_call, train_call = record.read_text().splitlines()
    assert sample_call == f"{chosen} {root / 'recipes' / 'toy' / 'sample.py'}"  # its default OUT_DIR: data/sample
    assert train_call.startswith(f"{chosen} -m accelerate.commands.launch")
    assert f"--config {root / 'recipes' / 'toy' / 'config_smoke.yaml'}" in train_call
    said = [line for line in proc.stdout.splitlines() if "data/sample" in line]
    assert said == ["== sample data: wrote data/sample"]  # one line; sample.py's whole output is in the log
    assert "  train: data/sample/train.jsonl" in (root / "out" / "training.log").read_text()


def test_smoke_stops_when_the_sample_cannot_be_made(tmp_path):
    root = launcher_copy(tmp_path / "repo")
    (root / "recipes" / "toy" / "sample.py").write_text("")
    failing = tmp_path / "bin" / "python"
    failing.parent.mkdir()
    failing.write_text('#!/bin/sh\necho "FileExistsError: data/sample holds files sample.py did not write"\nexit 1\n')
    failing.chmod(0o755)
    env = {**os.environ, "PYTHON": str(failing), "SMOKE": "1", "TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")}
    proc = launch(root, env)
    assert proc.returncode == 1
    assert "FileExistsError: data/sample holds files sample.py did not write" in proc.stderr
    assert "sample.py failed (status 1), see above; not training" in proc.stdout
    assert "accelerate" not in proc.stdout.split("== sample data:")[1]


def test_without_smoke_no_sample_is_made(tmp_path):
    root = launcher_copy(tmp_path / "repo")
    (root / "recipes" / "toy" / "sample.py").write_text("")
    record = tmp_path / "calls.txt"
    chosen = fake_python(tmp_path / "chosen" / "python", record)
    proc = launch(root, {**os.environ, "PYTHON": str(chosen)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sample.py" not in record.read_text() and "== sample data" not in proc.stdout


def test_a_recipe_folder_outside_the_repository_launches_the_same_way(tmp_path):
    root = launcher_copy(tmp_path / "repo")
    elsewhere = tmp_path / "work" / "my_task"
    elsewhere.mkdir(parents=True)
    (elsewhere / "train.py").write_text("")
    record = tmp_path / "calls.txt"
    venv_python = fake_python(root / ".venv" / "bin" / "python", record)  # the repository's, as before
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "PYTHONPATH")}
    proc = launch(root, env, recipe=elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    call = record.read_text()
    assert call.startswith(f"{venv_python} -m accelerate.commands.launch")
    assert f"{elsewhere / 'train.py'} --config {elsewhere / 'config.yaml'}" in call
    assert f"== {time.strftime('%Y')}" in proc.stdout and " my_task on 1 machine(s)" in proc.stdout


def processes_naming(text: str) -> dict[int, str]:
    """Live (not zombie) processes whose command line contains `text`, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found[int(entry.name)] = cmdline
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigkill_of_the_launcher_stops_its_workers(tmp_path):
    """`kill -9` of the launcher shell alone (no trap can run): within ~2 s neither accelerate nor a worker is left."""
    sample = tmp_path / "sample"
    load_recipe_module("grounding", "sample").make_sample(sample, num_samples=10, num_eval=2, seed=0)
    out = tmp_path / "run"
    flags = ["--dataset_name", str(sample / "train.jsonl"), "--eval_dataset_name", "", "--output_dir", str(out)]
    flags += ["--max_steps", "200", "--save_strategy", "no"]
    with open(tmp_path / "console.txt", "w") as sink:
        launcher = subprocess.Popen(
            ["bash", str(REPO_ROOT / "recipes" / "grounding" / "run_8gpu.sh"), *flags],
            cwd=REPO_ROOT,
            env=subprocess_env(SMOKE="1", NUM_GPUS="2"),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = {}
    try:
        deadline = time.monotonic() + 300
        log = out / "training.log"
        # rank 0 logs this after parse_config, which both ranks pass before it (the process group's rendezvous)
        while not (log.is_file() and "resolved config written" in log.read_text()):
            assert launcher.poll() is None and time.monotonic() < deadline, (tmp_path / "console.txt").read_text()
            time.sleep(0.5)
        started = processes_naming(str(out))
        workers = [pid for pid, cmd in started.items() if "train.py" in cmd and "accelerate" not in cmd]
        assert len(workers) == 2, started
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        time.sleep(2.0)
        survivors = {pid: cmd for pid, cmd in processes_naming(str(out)).items() if pid in started}
        assert {pid: cmd for pid, cmd in survivors.items() if "python" in cmd} == {}  # accelerate and the workers
        deadline = time.monotonic() + 5  # the watchdog and the log's tee follow once nothing writes
        while survivors and time.monotonic() < deadline:
            time.sleep(0.2)
            survivors = {pid: cmd for pid, cmd in processes_naming(str(out)).items() if pid in started}
        assert survivors == {}, survivors
    finally:
        for pid in processes_naming(str(out)):
            if pid in started:
                os.kill(pid, signal.SIGKILL)
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()


def test_first_cpu_deepspeed_launch_says_it_compiles_an_extension_once(tmp_path):
    root = launcher_copy(tmp_path / "repo")
    chosen = fake_python(tmp_path / "chosen" / "python", tmp_path / "calls.txt")
    extensions = tmp_path / "torch_extensions"
    env = {**os.environ, "PYTHON": str(chosen), "SMOKE": "1", "TORCH_EXTENSIONS_DIR": str(extensions)}
    note = "== first DeepSpeed launch on CPU: DeepSpeed compiles its CPU extension once (about a minute); later"
    first = launch(root, env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.splitlines()[0] == f"{note} launches reuse it."
    (extensions / "py311_cpu" / "deepspeed_shm_comm").mkdir(parents=True)  # what DeepSpeed builds on first use
    again = launch(root, env)
    assert again.returncode == 0 and note not in again.stdout
