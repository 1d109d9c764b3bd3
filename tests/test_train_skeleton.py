"""Every recipe's train.py is one template (issue 16 item 3): the same sections in the same order, marked by the same
comment lines, and every resource (judge client, local judge server, sandbox) held by a `with` block, so it is closed
however the run ends."""

from __future__ import annotations

import ast
import re

import pytest

from tests.helpers import RECIPES_DIR

RECIPES = sorted(p.name for p in RECIPES_DIR.iterdir() if (p / "train.py").is_file())
SECTIONS = ["parse", "check", "data", "rewards", "model", "trainer", "train, save"]
# The recipes whose marker lines are compared word for word (image2code's train.py has its own owner; its sections
# and their order are checked like every other recipe's).
SAME_WORDING = ["grounding", "image_edit", "mathvista", "mmmg", "video"]
RESOURCES = {"JudgeClient", "start_local_judge_if_asked", "Sandbox"}  # each has close() / is a context manager
MARKER = re.compile(r"^\s*# ---- (.*)$")


def marker_lines(recipe: str) -> list[str]:
    lines = (RECIPES_DIR / recipe / "train.py").read_text().splitlines()
    return [m.group(1) for line in lines if (m := MARKER.match(line))]


@pytest.mark.parametrize("recipe", RECIPES)
def test_sections_in_the_one_order(recipe: str) -> None:
    names = [re.split(r"[:(]", text)[0].strip() for text in marker_lines(recipe)]
    assert names == SECTIONS, f"recipes/{recipe}/train.py: sections {names}, expected {SECTIONS}"


def test_the_section_markers_read_the_same_in_every_recipe() -> None:
    reference = marker_lines(SAME_WORDING[0])
    for recipe in SAME_WORDING[1:]:
        assert marker_lines(recipe) == reference, recipe


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


@pytest.mark.parametrize("recipe", RECIPES)
def test_resources_are_held_by_with_blocks(recipe: str) -> None:
    tree = ast.parse((RECIPES_DIR / recipe / "train.py").read_text())
    parents = _parents(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        assert _called(node) != "close", f"recipes/{recipe}/train.py line {node.lineno}: close() by hand"
        if _called(node) not in RESOURCES:
            continue
        held = node
        while isinstance(parents.get(held), (ast.BoolOp, ast.Call)) and not isinstance(parents[held], ast.withitem):
            held = parents[held]
            if isinstance(held, ast.Call) and _called(held) == "enter_context":
                break
        holder = parents.get(held)
        assert isinstance(holder, ast.withitem) or (isinstance(held, ast.Call) and _called(held) == "enter_context"), (
            f"recipes/{recipe}/train.py line {node.lineno}: {_called(node)}(...) outside a with block"
        )
