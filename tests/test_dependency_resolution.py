"""One dependency set (issue 13): the GPU extras resolve, and on the versions the CPU suite runs on.

pyproject.toml pins trl, transformers and datasets exactly in the base dependencies, so `pip install -e .` (what the
CPU tests run on) and `pip install -e '.[gpu]'` / `'.[unsloth]'` (what a GPU user installs) give the same three. The
slow tests ask pip's own resolver (`--dry-run --ignore-installed`: it reads package metadata from the index and
installs nothing; the large GPU wheels are not downloaded) to resolve each extra from scratch, as a fresh GPU machine
would, and compare its report with the interpreter running this test. A pin that breaks resolution fails here, with
pip's reason, instead of on the cluster.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import version as installed_version

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.helpers import REPO_ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PINNED_WITH_THE_CPU_SUITE = ("trl", "transformers", "datasets")
VLLM = "0.31.0"  # the newest vLLM that trl 1.15 allows (trl's own vllm<=0.31.0); it pins torch
TORCH = "2.13.0"
UNSLOTH = "2026.10.9"  # unsloth and unsloth_zoo: trl<=1.15.0, transformers<=5.17.0, datasets<5, torch<2.15

# pip could not reach the index at all: that says nothing about the pins, so the resolution tests skip.
_NO_INDEX = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|ConnectTimeoutError|ReadTimeoutError"
)


# pip's line for every package it looks at (and for a missing local find-links folder): not the reason it failed.
_NOISE = re.compile(
    r"\s*(WARNING: Location .* is ignored|Collecting|Obtaining|Processing|Downloading|Using cached|Checking|Getting"
    r"|Preparing|Installing build|Requirement already)\b"
)


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolve(extra: str, tmp_path) -> dict[str, str]:
    """{normalised name: version} of everything pip would install for `-e <repo>[extra]` on an empty environment."""
    report = tmp_path / "report.json"
    # Not --quiet: pip names the conflicting requirements ("The conflict is caused by: ...") at its normal level.
    cmd = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--progress-bar", "off",
        "--disable-pip-version-check", "--report", str(report), "-e", f"{REPO_ROOT}[{extra}]",
    ]  # fmt: skip
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    if proc.returncode != 0:
        lines = [line for line in proc.stdout.strip().splitlines() if not _NOISE.match(line)]
        if _NO_INDEX.search(proc.stdout) and "ResolutionImpossible" not in proc.stdout:
            pytest.skip(f"the package index is unreachable: {lines[-1] if lines else proc.returncode}")
        tail = "\n".join(lines[-30:])
        pytest.fail(f"pip cannot resolve .[{extra}] (exit {proc.returncode}):\n{tail}", pytrace=False)
    installs = json.loads(report.read_text())["install"]
    return {_name(item["metadata"]["name"]): item["metadata"]["version"] for item in installs}


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["gpu", "unsloth", "gpu,unsloth"])
def test_gpu_extras_resolve_to_the_versions_the_cpu_suite_runs_on(extra: str, tmp_path) -> None:
    resolved = resolve(extra, tmp_path)
    assert resolved.get("vllm") == VLLM
    # Compared without a local label: an index may offer a CPU or CUDA build (2.13.0+cpu, 2.13.0+cu130).
    assert "torch" in resolved and Version(resolved["torch"]).public == TORCH
    for package in PINNED_WITH_THE_CPU_SUITE:
        assert resolved.get(package) == installed_version(package), (
            f"{package}: .[{extra}] resolves {resolved.get(package)}, this interpreter has "
            f"{installed_version(package)}: the CPU suite would not test what a GPU user runs"
        )
    assert "vllm-bnb-plugin" in resolved  # vLLM >= 0.28 serves a load_in_4bit policy only through the plugin
    if "unsloth" in extra:
        assert (resolved.get("unsloth"), resolved.get("unsloth-zoo")) == (UNSLOTH, UNSLOTH)
    if "gpu" in extra:
        assert "deepspeed" in resolved and "bitsandbytes" in resolved
    assert "flash-attn" not in resolved  # sdist only: building it needs torch and nvcc at resolve time


def test_base_pins_are_exact_and_equal_the_installed_versions() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = {_name(req.name): req for req in map(Requirement, project["dependencies"])}
    for package in PINNED_WITH_THE_CPU_SUITE:
        specifiers = list(requirements[package].specifier)
        assert [s.operator for s in specifiers] == ["=="], f"{package} must be pinned with ==, is {specifiers}"
        assert specifiers[0].version == installed_version(package), (
            f"pyproject.toml pins {package}=={specifiers[0].version}, this interpreter has "
            f"{installed_version(package)}: reinstall (pip install -e '.[dev]')"
        )
    extras = project["optional-dependencies"]
    for extra in ("gpu", "unsloth"):
        pins = {_name(r.name): str(r.specifier) for r in map(Requirement, extras[extra])}
        assert pins["vllm"] == f"=={VLLM}", extra
    unsloth = {_name(r.name): str(r.specifier) for r in map(Requirement, extras["unsloth"])}
    assert unsloth["unsloth"] == unsloth["unsloth-zoo"] == f"=={UNSLOTH}"
