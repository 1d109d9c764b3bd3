"""Every recipe is a template: `vlm-grpo new my_<r> --from <r> --dest DIR` outside this repository makes a copy that
names only itself and runs from there: its sample data (`vlm-grpo sample`) and one training step of its smoke config,
with the installed `core` (no PYTHONPATH) and the working directory outside the repository.

"Names only itself": no text file of the copy has the original recipe's name as a word (any case) except where the
word is bound to something outside the recipe and renaming it would break the copy (core.tools.recipe_copy.is_bound):
the last part of a hub id, URL or module path (`AI4Math/MathVista`, `core.data.video`), a file name (`video.mp4`),
a flag (`--video-root`), a tag (`<video>`), a quoted string that is exactly the name (`"video"`, a data column the
code reads), a Python name in code (`video=True`, a keyword of core's API) or a Python string literal that is not a
docstring (prompt text the model is trained on, metric and benchmark names: values, not prose). The checks below
restate that rule independently of the implementation.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import yaml

from tests.helpers import RECIPES_DIR, REPO_ROOT

pytestmark = pytest.mark.slow
VLM_GRPO = Path(sys.executable).with_name("vlm-grpo")
RECIPES = sorted(p.name for p in RECIPES_DIR.iterdir() if (p / "train.py").is_file())
# Recipes whose name is bound nowhere: their copies do not contain it at all.
UNBOUND_NAMES = ("grounding",)


def environment() -> dict[str, str]:
    """The suite's environment without PYTHONPATH: the copy must import the installed core."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONUNBUFFERED": "1"}


def code_name_spans(source: str) -> list[tuple[int, int]]:
    """Character spans of the NAME tokens (identifiers and keywords in code) and of the string literals that are not
    docstrings (values the code uses) of Python source."""
    starts = [0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    spans, previous = [], None
    for t in tokenize.generate_tokens(io.StringIO(source).readline):
        docstring = t.type == tokenize.STRING and previous in {None, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
        if t.type == tokenize.NAME or (t.type == tokenize.STRING and not docstring):
            spans.append((starts[t.start[0] - 1] + t.start[1], starts[t.end[0] - 1] + t.end[1]))
        if t.type not in (tokenize.NL, tokenize.COMMENT):
            previous = t.type
    return spans


def is_bound(text: str, start: int, end: int) -> bool:
    before, after = text[start - 1 : start], text[end : end + 1]
    if before and before in "/.<-@\\" or after and after in ">\\":
        return True
    if after == "." and re.match(r"\w", text[end + 1 : end + 2]):
        return True
    return bool(before) and before in "\"'" and after == before


def mentions(folder: Path, name: str) -> tuple[list[str], list[str]]:
    """(unbound, bound) whole-word mentions of `name` in the text files under `folder`, as `file:line: text`."""
    unbound, bound = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        names = code_name_spans(text) if path.suffix == ".py" else []
        for match in re.finditer(rf"\b{re.escape(name)}\b", text, re.IGNORECASE):
            line_no = text.count("\n", 0, match.start()) + 1
            where = f"{path.relative_to(folder)}:{line_no}: {text.splitlines()[line_no - 1].strip()}"
            in_code = any(s <= match.start() and match.end() <= e for s, e in names)
            (bound if in_code or is_bound(text, match.start(), match.end()) else unbound).append(where)
    return unbound, bound


@pytest.mark.parametrize("recipe", RECIPES)
def test_new_copy_outside_the_repository_names_only_itself_and_trains(recipe, tmp_path):
    work = tmp_path / "work"  # the working directory of every command: outside the repository
    work.mkdir()
    new_name = f"my_{recipe}"
    copy = tmp_path / "elsewhere" / new_name
    made = subprocess.run(
        [str(VLM_GRPO), "new", new_name, "--from", recipe, "--dest", str(copy)],
        cwd=work,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert f"vlm-grpo train {copy} --smoke" in made.stdout  # the next commands, with the copy's path
    assert not (copy / "data").exists() and not list(copy.rglob("__pycache__"))
    assert {p.name for p in copy.iterdir()} >= {"train.py", "data.py", "sample.py", "evaluate.py", "run_8gpu.sh"}

    unbound, bound = mentions(copy, recipe)
    assert unbound == [], "\n".join(unbound)
    if recipe in UNBOUND_NAMES:
        assert bound == [], "\n".join(bound)
    for path in copy.glob("*.sh"):  # the launch lines name no recipe at all
        assert not re.search(rf"\b{recipe}\b", path.read_text(), re.IGNORECASE), path
    assert str(REPO_ROOT) not in (copy / "config_smoke.yaml").read_text()

    sample = subprocess.run(
        [str(VLM_GRPO), "sample", str(copy)], cwd=work, env=environment(), capture_output=True, text=True, timeout=300
    )
    assert sample.returncode == 0, sample.stdout + sample.stderr
    assert (copy / "data" / "sample" / "sample.json").is_file()  # config_smoke.yaml's data, in the copy

    out = tmp_path / "run"
    flags = ["--max_steps", "1", "--warm_start_steps", "0", "--max_completion_length", "16", "--disable_tqdm", "true"]
    trained = subprocess.run(
        [sys.executable, str(copy / "train.py"), "--config", str(copy / "config_smoke.yaml"), "--output_dir", str(out)]
        + flags,
        cwd=work,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = trained.stdout + trained.stderr
    assert trained.returncode == 0, log[-4000:]
    assert list(out.rglob("adapter_model.safetensors")) or list(out.rglob("model*.safetensors")), sorted(out.rglob("*"))
    assert (out / "trainer_state.json").is_file()
    record = yaml.safe_load((out / "run_config.yaml").read_text())
    assert record["Run"]["recipe_dir"] == str(copy)  # `vlm-grpo eval` finds the copy's evaluate.py
    assert str(RECIPES_DIR / recipe) not in log  # nothing was read from the original recipe
