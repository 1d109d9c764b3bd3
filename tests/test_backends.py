"""Start-up checks of the training backends: a backend that cannot run here stops before data or weights load."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from trl import GRPOConfig

from core.training import backends
from core.training.backends import (
    BackendError,
    backend_problems,
    check_backend,
    unsloth_load_kwargs,
    unsloth_peft_kwargs,
    unsloth_standby_warning,
)
from core.training.config import VLMModelConfig
from tests.helpers import REPO_ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without a GPU")


class Args:
    """The GRPOConfig fields the checks read (a full GRPOConfig would validate bf16 against the machine)."""

    def __init__(self, use_vllm: bool = False, vllm_mode: str = "colocate") -> None:
        self.use_vllm = use_vllm
        self.vllm_mode = vllm_mode


def lora_model(**overrides) -> VLMModelConfig:
    """Model arguments of a LoRA run (the Unsloth backend trains LoRA only)."""
    return VLMModelConfig(**{"model_name_or_path": "m", "use_peft": True, **overrides})


def grpo_config(tmp_path, **overrides) -> GRPOConfig:
    """A real GRPOConfig (field names checked by TRL itself), with what the Unsloth loading reads."""
    values = {"output_dir": str(tmp_path), "bf16": False, "report_to": "none", "num_generations": 4}
    return GRPOConfig(**{**values, **overrides})


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
    assert problems == ["use_vllm: true needs vLLM: pip install -e '.[gpu]' (or set --use_vllm false)"]


def test_install_hints_name_the_extra_of_the_backend(monkeypatch) -> None:
    """Every install hint names an extra pyproject.toml has: [gpu] for transformers, [unsloth] for Unsloth."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # past the no-GPU refusals, to the install hints
    monkeypatch.setattr(backends, "_installed", lambda package: False)
    quant = lora_model(load_in_4bit=True)
    transformers = backend_problems("transformers", quant, Args(use_vllm=True))
    assert transformers == [
        "load_in_4bit/load_in_8bit need bitsandbytes: pip install -e '.[gpu]'",
        "use_vllm: true needs vLLM: pip install -e '.[gpu]' (or set --use_vllm false)",
    ]
    unsloth = backend_problems("unsloth", quant, Args(use_vllm=True))
    assert unsloth[0] == "backend: unsloth needs the unsloth package: pip install -e '.[unsloth]'"
    assert all("'.[unsloth]'" in p for p in unsloth if "pip install" in p) and len(unsloth) == 3
    extras = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert set(backends.EXTRAS.values()) <= extras


@pytest.mark.parametrize("backend", ["transformers", "unsloth"])
def test_vllm_serving_a_4bit_policy_needs_the_bitsandbytes_plugin(monkeypatch, backend: str) -> None:
    """vLLM >= 0.28 has no bitsandbytes of its own; vllm-bnb-plugin (in both GPU extras) brings it back."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(backends, "_installed", lambda package: package != "vllm_bnb_plugin")
    problems = backend_problems(backend, lora_model(load_in_4bit=True), Args(True))
    extra = backends.EXTRAS[backend]
    assert problems == [
        "use_vllm: true with load_in_4bit needs vllm-bnb-plugin (vLLM >= 0.28 serves bitsandbytes 4-bit only "
        f"through it): pip install -e '.[{extra}]' (or set --use_vllm false)"
    ]
    monkeypatch.setattr(backends, "_installed", lambda package: True)
    assert backend_problems(backend, lora_model(load_in_4bit=True), Args(True)) == []


def test_unsloth_refuses_before_loading_what_unsloth_refuses_after(monkeypatch) -> None:
    """Combinations Unsloth 2026.10.9 raises on only once the weights are loaded, named at start-up with the fix."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(backends, "_installed", lambda package: True)
    vision = lora_model(train_vision=True)
    problems = backend_problems("unsloth", vision, Args(use_vllm=True))
    assert len(problems) == 1 and "finetune_vision_layers with fast_inference" in problems[0]
    assert "--train_vision false" in problems[0] and "--use_vllm false" in problems[0]
    assert backend_problems("unsloth", vision, Args(use_vllm=False)) == []  # without vLLM Unsloth trains it
    eight_bit = backend_problems("unsloth", lora_model(load_in_8bit=True), Args(True))
    assert len(eight_bit) == 1 and "no bitsandbytes 8-bit path" in eight_bit[0]
    server = backend_problems("unsloth", lora_model(), Args(True, vllm_mode="server"))
    assert len(server) == 1 and "--vllm_mode colocate" in server[0]
    projector = backend_problems("unsloth", lora_model(train_projector=True), Args())
    assert len(projector) == 1 and "--train_projector false" in projector[0]
    # The transformers backend does all of these itself.
    both = lora_model(train_vision=True, train_projector=True)
    assert backend_problems("transformers", both, Args(True, vllm_mode="server")) == []


def test_unsloth_loads_with_its_own_vllm_and_no_standby(tmp_path, monkeypatch) -> None:
    """use_vllm -> fast_inference with the config's memory share and a LoRA slot of the trained rank; no standby."""
    monkeypatch.delenv("UNSLOTH_VLLM_STANDBY", raising=False)
    model_args = lora_model(model_name_or_path="unsloth/gemma-3-4b-it", dtype="bfloat16", load_in_4bit=True)
    args = grpo_config(tmp_path, use_vllm=True, vllm_gpu_memory_utilization=0.8, gradient_checkpointing=True)
    assert unsloth_load_kwargs(model_args, args, 2048) == {
        "model_name": "unsloth/gemma-3-4b-it",
        "max_seq_length": 2048,
        "dtype": torch.bfloat16,
        "load_in_4bit": True,
        "load_in_8bit": False,
        "use_gradient_checkpointing": "unsloth",
        "fast_inference": True,
        "random_state": args.seed,
        "gpu_memory_utilization": 0.8,
        "max_lora_rank": model_args.lora_r,
    }
    assert "UNSLOTH_VLLM_STANDBY" not in os.environ  # building the settings sets no environment
    peft = unsloth_peft_kwargs(model_args, args)
    assert (peft["finetune_language_layers"], peft["finetune_vision_layers"], peft["r"]) == (True, False, 16)
    no_vllm = unsloth_load_kwargs(model_args, grpo_config(tmp_path, gradient_checkpointing=False), 1024)
    assert no_vllm["fast_inference"] is False and no_vllm["use_gradient_checkpointing"] is False
    assert "gpu_memory_utilization" not in no_vllm and "max_lora_rank" not in no_vllm


def test_unsloth_standby_is_called_out_for_vision_models() -> None:
    assert unsloth_standby_warning({}) is None
    assert unsloth_standby_warning({"UNSLOTH_VLLM_STANDBY": "0"}) is None
    assert "turns standby off for vision models" in unsloth_standby_warning({"UNSLOTH_VLLM_STANDBY": "1"})
    forced = unsloth_standby_warning({"UNSLOTH_VLLM_STANDBY": "1", "UNSLOTH_VLLM_STANDBY_VISION": "1"})
    assert "unstable for multimodal models" in forced


def test_unknown_backend() -> None:
    with pytest.raises(BackendError, match="'jax' is not one of transformers, unsloth"):
        check_backend("jax", VLMModelConfig(model_name_or_path="m"), Args())


def test_use_vllm_with_video_prompts_or_a_text_encoder_policy_is_refused_with_the_fix() -> None:
    model_args = VLMModelConfig(model_name_or_path="m")
    video = backend_problems("transformers", model_args, Args(use_vllm=True), video=True)
    assert any(p.startswith("use_vllm: true with video prompts is not supported yet") for p in video)
    assert all("--use_vllm false" in p for p in video)
    encoder = backend_problems("transformers", model_args, Args(True, "server"), text_encoder_policy=True)
    assert any("diffusion pipeline's text encoder" in p and "--vllm_mode colocate" in p for p in encoder)
    colocated = backend_problems("transformers", model_args, Args(use_vllm=True), text_encoder_policy=True)
    assert not any("text encoder" in p for p in colocated)  # served from the folder the trainer assembles
    assert backend_problems("transformers", model_args, Args(), video=True, text_encoder_policy=True) == []


@pytest.mark.parametrize(
    ("recipe", "mode", "reason"),
    [
        ("video", "colocate", "with video prompts is not supported yet"),
        ("image_edit", "server", "vllm_mode server is not supported for a diffusion pipeline's text encoder"),
    ],
)
def test_recipe_with_use_vllm_that_cannot_work_stops_before_anything_loads(tmp_path, recipe, mode, reason) -> None:
    from tests.helpers import run_smoke_train

    out = tmp_path / "run"
    proc = run_smoke_train(recipe, "--output_dir", str(out), "--use_vllm", "true", "--vllm_mode", mode, timeout=300)
    assert proc.returncode == 2  # a start-up error (core.errors.USER_ERROR_EXIT): fix the input, do not retry
    assert "BackendError: cannot start training" in proc.stderr and reason in proc.stderr
    assert not out.exists()  # nothing written, no data or weights loaded
