"""Shared fixtures: one tiny-model cache per test session, outside the user's cache."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    # Set before any test module imports core: tiny checkpoints are built once per machine into this cache.
    os.environ.setdefault("VLM_GRPO_CACHE", str(ROOT / ".cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
