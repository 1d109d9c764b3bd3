"""Copy a recipe under a new name so that the copy names only itself (`vlm-grpo new`).

The copy is a template for another task: keeping the old recipe's name in its comments, launch lines and run folders
would point a reader (and `outputs/<old>` runs) at the original. So every text file is rewritten: `recipes/<old>`
paths become the copy's path, `outputs/<old>` run folders `outputs/<new>`, and the old name as a whole word becomes
the new one in the case style it is written in. Where the old name is bound to something outside the recipe, renaming
would break the copy, so it stays (`is_bound`): e.g. the video recipe's `"video"` data column, `core.data.video`,
mathvista's hub id `AI4Math/MathVista`; in Python code only comments and strings are rewritten (names are API).
"""

from __future__ import annotations

import re
import shutil
import tokenize
from io import StringIO
from pathlib import Path

# Not copied: the data (sample.py makes it again), runs and caches.
NOT_COPIED_AT_TOP = {"data", "outputs"}
NOT_COPIED = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}
# The fallback in every run_8gpu.sh when vlm-grpo is not on PATH: this repository's .venv, seen from recipes/<name>/.
VENV_FALLBACK = '"$here/../../.venv/bin/vlm-grpo"'


def name_pattern(old: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(old)}\b", re.IGNORECASE)


def in_case_of(found: str, new: str) -> str:
    """`new` written in the case style of `found`: lower, UPPER, or Capitalised (for Title and mixed case)."""
    if found.islower() or not any(c.isalpha() for c in found):
        return new
    if found.isupper():
        return new.upper()
    return new[:1].upper() + new[1:]


def is_bound(text: str, start: int, end: int) -> bool:
    """Whether the name at text[start:end] is bound to something outside the recipe and must stay: the last part of
    a hub id, URL or module path (`AI4Math/MathVista`, `core.data.video`), a file name (`video.mp4`), a flag
    (`--video-root`), a tag (`<video>`), or a quoted string that is exactly the name (`"video"`: a data column or
    other value the code reads)."""
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    if before in "/.<-@\\" or after in ">\\":
        return True
    if after == "." and end + 1 < len(text) and (text[end + 1].isalnum() or text[end + 1] == "_"):
        return True
    return before in "\"'" and after == before


def rename_in_text(text: str, old: str, new: str) -> str:
    """Every whole-word `old` (any case) that is not bound (`is_bound`) -> `new` in its case style."""
    return name_pattern(old).sub(
        lambda m: m.group(0) if is_bound(m.string, m.start(), m.end()) else in_case_of(m.group(0), new), text
    )


def rename_in_python(source: str, old: str, new: str) -> str:
    """`rename_in_text` applied to the comments and docstrings of Python source only. Names in the code (variables,
    keyword arguments, imports) are API, and other string literals are values the code uses (prompt text the model
    is trained on, column names, metric names, benchmark names in messages): renaming them would change the task."""
    try:
        tokens = list(tokenize.generate_tokens(StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return rename_in_text(source, old, new)
    line_starts = [0]
    for line in source.splitlines(keepends=True):
        line_starts.append(line_starts[-1] + len(line))
    statement_start = {None, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}
    out, position, previous = [], 0, None
    for tok in tokens:
        is_docstring = tok.type == tokenize.STRING and previous in statement_start
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            previous = tok.type
        if tok.type != tokenize.COMMENT and not is_docstring:
            continue
        start = line_starts[tok.start[0] - 1] + tok.start[1]
        end = line_starts[tok.end[0] - 1] + tok.end[1]
        out += [source[position:start], rename_in_text(source[start:end], old, new)]
        position = end
    return "".join(out) + source[position:]


def copy_recipe(
    source: Path, dest: Path, new_name: str, recipes_path: str, executable: str | None = None
) -> list[Path]:
    """Copy `source` to `dest` without its data, runs and caches, then rewrite every text file so that it names the
    copy: `recipes/<old>` paths -> `recipes_path` (how the copy is reached, e.g. `recipes/my_task` or its own path),
    `outputs/<old>` run folders -> `outputs/<new_name>`, the old name as a whole word -> `new_name` (Python: in
    comments and strings only; see `is_bound` for what stays), and, when `executable` is given (a copy outside this
    repository's recipes/), the launcher fallback `$here/../../.venv/bin/vlm-grpo` -> `executable`. Returns the files
    copied."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in NOT_COPIED or n.endswith(".pyc")}
        return skip | ({n for n in names if n in NOT_COPIED_AT_TOP} if Path(folder) == source else set())

    shutil.copytree(source, dest, ignore=ignore, dirs_exist_ok=True)
    old = source.name
    paths = {"recipes": recipes_path, "outputs": f"outputs/{new_name}"}
    old_path = re.compile(rf"(?<![\w-])(recipes|outputs)/{re.escape(old)}(?![\w-])")
    written = []
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        if b"\0" in raw[:8192]:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        changed = old_path.sub(lambda m: paths[m.group(1)], text)
        if old.lower() != new_name.lower():
            rename = rename_in_python if path.suffix == ".py" else rename_in_text
            changed = rename(changed, old, new_name)
        if executable and path.suffix == ".sh":
            changed = changed.replace(VENV_FALLBACK, f'"{executable}"')
        if changed != text:
            path.write_text(changed)
        written.append(path)
    return written
