"""Start-up checks of the training backends: a backend that cannot run here stops before data or weights load."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from core.backends import BackendError, backend_problems, check_backend
from core.config import VLMModelConfig

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without a GPU")


class Args:
    """The two GRPOConfig fields the checks read (a full GRPOConfig would validate bf16 against the machine)."""

    def __init__(self, use_vllm: bool = False) -> None:
        self.use_vllm = use_vllm


@needs_no_gpu
def test_unsloth_without_a_gpu_names_the_alternative() -> None:
    with pytest.raises(BackendError) as err:
        check_backend("unsloth", VLMModelConfig(model_name_or_path="m"), Args())
    message = str(err.value)
    assert "backend: unsloth needs an NVIDIA GPU" in message and "--backend transformers" in message


@needs_no_gpu
def test_every_problem_is_listed_at_once(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "8")
    problems = backend_problems("unsloth", VLMModelConfig(model_name_or_path="m", use_peft=False), Args())
    assert len(problems) == 3
    assert "one process on one GPU" in problems[1] and "full fine-tuning" in problems[2]


@needs_no_gpu
def test_bitsandbytes_quantisation_needs_a_gpu_on_the_transformers_backend() -> None:
    problems = backend_problems("transformers", VLMModelConfig(model_name_or_path="m", load_in_4bit=True), Args())
    assert problems and "--load_in_4bit false" in problems[0]
    assert backend_problems("transformers", VLMModelConfig(model_name_or_path="m"), Args()) == []


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_use_vllm_without_vllm_says_how_to_install_or_turn_it_off() -> None:
    problems = backend_problems("transformers", VLMModelConfig(model_name_or_path="m"), Args(use_vllm=True))
    assert problems == ["use_vllm: true needs vLLM: pip install -e '.[vllm]' (or set --use_vllm false)"]


def test_unknown_backend() -> None:
    with pytest.raises(BackendError, match="'jax' is not one of transformers, unsloth"):
        check_backend("jax", VLMModelConfig(model_name_or_path="m"), Args())


def test_use_vllm_with_video_prompts_or_a_text_encoder_policy_is_refused_with_the_fix() -> None:
    model_args = VLMModelConfig(model_name_or_path="m")
    video = backend_problems("transformers", model_args, Args(use_vllm=True), video=True)
    assert any(p.startswith("use_vllm: true with video prompts is not supported yet") for p in video)
    assert all("--use_vllm false" in p for p in video)
    encoder = backend_problems("transformers", model_args, Args(use_vllm=True), text_encoder_policy=True)
    assert any("diffusion pipeline's text encoder" in p and "no tokenizer" in p for p in encoder)
    assert backend_problems("transformers", model_args, Args(), video=True, text_encoder_policy=True) == []


@pytest.mark.parametrize(
    ("recipe", "reason"),
    [("video", "with video prompts is not supported yet"), ("image_edit", "diffusion pipeline's text encoder")],
)
def test_recipe_with_use_vllm_that_cannot_work_stops_before_anything_loads(tmp_path, recipe: str, reason: str) -> None:
    from tests.helpers import run_smoke_train

    out = tmp_path / "run"
    proc = run_smoke_train(recipe, "--output_dir", str(out), "--use_vllm", "true", timeout=300)
    assert proc.returncode == 1
    assert "BackendError: cannot start training" in proc.stderr and reason in proc.stderr
    assert not out.exists()  # nothing written, no data or weights loaded
