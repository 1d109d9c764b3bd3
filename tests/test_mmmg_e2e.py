"""MMMG recipe end to end on CPU: tiny Qwen-Image pipeline, the local judge answering the knowledge checklist over
real HTTP, 2 GRPO steps through train.py, then evaluate.py; and the t2i embeddings against the pipeline's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from core.diffusion.pipeline import completion_prompt_embeds, load_pipeline
from tests.helpers import REPO_ROOT, load_recipe_module

RECIPE = REPO_ROOT / "recipes" / "mmmg"
TOY = "tests.fixtures.toy_rewards:even_token_fraction"
pytestmark = pytest.mark.slow


def test_embeddings_equal_the_pipelines_own_for_an_empty_completion():
    pipeline = load_pipeline("tiny:qwen_image", edit=False)
    prompts = ["A diagram of the water cycle", "Photosynthesis: light, water and CO2 make sugar"]
    expected, expected_mask = pipeline.encode_prompt(prompt=prompts, device="cpu")
    with torch.no_grad():
        got, mask = completion_prompt_embeds(
            pipeline.text_encoder,
            pipeline.tokenizer,
            pipeline.prompt_template_encode,
            pipeline.prompt_template_encode_start_idx,
            prompts,
            None,
            [[], []],
        )
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    if expected_mask is not None:
        assert torch.equal(mask.bool(), expected_mask.bool())


def test_two_grpo_steps_then_evaluate(tmp_path):
    sample = load_recipe_module("mmmg", "sample").make_sample(tmp_path / "sample")["dataset"]
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [
        sys.executable,
        str(RECIPE / "train.py"),
        "--config",
        str(RECIPE / "config_smoke.yaml"),
        "--dataset",
        str(sample),
        "--output_dir",
        str(out),
        "--reward_funcs",
        "knowledge_fidelity",
        TOY,
        "--disable_tqdm",
        "true",
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    steps = [e for e in state["log_history"] if "reward" in e]
    assert [e["step"] for e in steps] == [1, 2]
    for e in steps:
        assert 0.0 <= e["rewards/knowledge_fidelity/mean"] <= 1.0  # the local judge answered every checklist
        assert e["judge/failures"] == 0 and e["judge/requests"] > 0 and e["mmmg/unscored"] == 0
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert sum(float(w.norm()) for n, w in weights.items() if "lora_B" in n) > 0

    cmd = [sys.executable, str(RECIPE / "evaluate.py"), str(out), "--max_per_config", "1", "--max_new_tokens", "8"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["num_samples"] == 3 and metrics["num_scored"] == 3  # 3 sample configs x 1
    assert 0.0 <= metrics["mmmg_score"] <= 1.0
    assert metrics["per_level"] and metrics["per_discipline"]
    protocol = metrics["protocol"]  # which protocol produced the numbers
    assert "MMMGBench/MMMG@98bb915a645d6d575dea3700a391966bd317c83a" in protocol["scorer"]
    assert protocol["readability"] is None and protocol["judge_model"] == "local-judge"
    assert "project's own wording" in protocol["judge_prompt"] and protocol["comparable_with_published"] is False
    assert "| group | n | MMMG score |" in (out / "eval" / "tables.md").read_text()
    assert (out / "eval" / "images.png").stat().st_size > 500
