"""Image-edit recipe end to end on CPU: tiny Qwen-Image-Edit pipeline, the local judge server over real HTTP, GRPO
steps through train.py and the launchers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from safetensors.torch import load_file
from trl import GRPOConfig

from core.diffusion.pipeline import condition_images, load_pipeline, template_system_prompt
from core.rewards.judge import JudgeArguments, JudgeClient
from core.rewards.judge_server import start_judge_server
from core.training.config import VLMModelConfig
from core.training.lora import build_lora_config
from core.training.trainer import VLMGRPOTrainer
from tests.fixtures.toy_rewards import even_token_fraction
from tests.helpers import REPO_ROOT, load_recipe_module, subprocess_env

RECIPE = REPO_ROOT / "recipes" / "image_edit"
TOY = "tests.fixtures.toy_rewards:even_token_fraction"
pytestmark = pytest.mark.slow


def env(**extra: str) -> dict[str, str]:
    return subprocess_env(**extra)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    sample = load_recipe_module("image_edit", "sample")
    return sample.make_sample(tmp_path_factory.mktemp("ce") / "s", num_samples=5, num_syn=1)["dataset"]


def train(out: Path, dataset: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        str(RECIPE / "train.py"),
        "--config",
        str(RECIPE / "config_smoke.yaml"),
        "--dataset",
        str(dataset),
        "--output_dir",
        str(out),
        "--disable_tqdm",
        "true",
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def logged_steps(out: Path) -> list[dict]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [e for e in state["log_history"] if "reward" in e]


def test_two_grpo_steps_with_the_local_judge(tmp_path, sample):
    out = tmp_path / "run"
    train(out, sample, "--reward_funcs", "instruction_following", "identity_preservation", "perceptual_quality", TOY)
    steps = logged_steps(out)
    assert [e["step"] for e in steps] == [1, 2]
    for e in steps:
        for criterion in ("instruction_following", "identity_preservation", "perceptual_quality"):
            assert 0.0 <= e[f"rewards/{criterion}/mean"] <= 1.0
            assert e[f"judge/requests/{criterion}"] > 0 and e[f"judge/failures/{criterion}"] == 0
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert sum(float(w.norm()) for n, w in weights.items() if "lora_B" in n) > 0  # the VLM moved
    assert not any("transformer_blocks" in n or "decoder" in n for n in weights)  # nothing of the DiT/VAE saved

    cmd = [sys.executable, str(RECIPE / "evaluate.py"), str(out), "--max_samples", "3", "--max_new_tokens", "8"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["num_samples"] == 3 and metrics["overall_scored"] == 3
    assert all(0 <= metrics[c] <= 10 for c in ("instruction_following", "identity_preservation", "perceptual_quality"))
    assert len((out / "eval" / "predictions.jsonl").read_text().splitlines()) == 3
    assert (out / "eval" / "predictions.png").stat().st_size > 1000


def test_judge_500s_and_garbage_are_skipped_and_counted(tmp_path, sample):
    dd = datasets.load_from_disk(str(sample))

    def poison(row, i):
        marker = ["[judge:500] ", "[judge:garbage] ", "", ""][i % 4]
        levels = [
            {**lvl, "compound_instruction": marker + lvl["compound_instruction"]} for lvl in row["edit"]["compound"]
        ]
        return {"edit": {"atom": row["edit"]["atom"], "compound": levels}}

    poisoned = tmp_path / "poisoned"
    datasets.DatasetDict({"test_real": dd["test_real"].map(poison, with_indices=True)}).save_to_disk(str(poisoned))
    out = tmp_path / "run"
    # 2 prompts x 2 generations per step; the breaker is kept out of the way here (tests/test_judge.py covers it).
    train(
        out,
        poisoned,
        "--judge_max_retries",
        "0",
        "--complexities",
        "1",
        "--num_generations",
        "2",
        "--judge_breaker_failures",
        "1000",
    )
    steps = logged_steps(out)
    assert [e["step"] for e in steps] == [1, 2]
    failures = sum(e["judge/failures/instruction_following"] + e["judge/failures/identity_preservation"] for e in steps)
    assert failures > 0
    assert all(e["judge/failures/perceptual_quality"] == 0 for e in steps)  # its prompt has no instruction
    # ... and yet a poisoned sample's perceptual_quality is dropped with the rest of it: a sample is scored whole.
    # Rows 0 and 1 of 4 are poisoned, so each step (2 prompts x 2 generations) loses 0, 2 or 4 of its 4 samples.
    unscored = [e["image_edit/unscored"] for e in steps]
    assert all(u in (0.0, 0.5, 1.0) for u in unscored) and sum(unscored) > 0
    assert (out / "reward_curve.png").is_file() and (out / "adapter_model.safetensors").is_file()


def test_misconfigured_judge_fails_before_any_model_loads(tmp_path, sample):
    cmd = [
        sys.executable,
        str(RECIPE / "train.py"),
        "--config",
        str(RECIPE / "config_smoke.yaml"),
        "--dataset",
        str(sample),
        "--output_dir",
        str(tmp_path / "o"),
        "--judge_base_url",
        "http://127.0.0.1:9/v1",
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "127.0.0.1:9" in proc.stderr and "JudgeUnavailable" in proc.stderr
    assert "loaded" not in proc.stdout and not (tmp_path / "o").exists()


def test_dit_and_vae_stay_frozen_while_the_vlm_trains(tmp_path, sample):
    R = load_recipe_module("image_edit", "rewards")
    D = load_recipe_module("image_edit", "data")
    pipeline = load_pipeline("tiny:qwen_image_edit")
    frozen_before = {
        f"{part}.{n}": p.detach().clone()
        for part in ("transformer", "vae")
        for n, p in getattr(pipeline, part).named_parameters()
    }
    model, processor = pipeline.text_encoder, pipeline.processor
    data = D.build_dataset(str(sample), template_system_prompt(pipeline), complexities=[1], max_samples=4)
    data = data.map(lambda row: {"image": condition_images(pipeline, [row["image"]], 4096)[0]})
    with start_judge_server() as server:
        judge = JudgeClient(JudgeArguments(judge_base_url=server.url, judge_model="local-judge"))
        renderer = R.EditRenderer(pipeline, processor, 2, 0, 64, 64, condition_area=4096)
        args = GRPOConfig(
            output_dir=str(tmp_path / "o"),
            bf16=False,
            per_device_train_batch_size=4,
            num_generations=4,
            max_completion_length=8,
            max_steps=2,
            learning_rate=1e-2,
            report_to="none",
            gradient_checkpointing=False,
            save_strategy="no",
            disable_tqdm=True,
            logging_steps=1,
        )
        model_args = VLMModelConfig(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0)
        trainer = VLMGRPOTrainer(
            model=model,
            args=args,
            train_dataset=data,
            processing_class=processor,
            reward_funcs=[*R.build_reward_funcs(["perceptual_quality"], renderer, judge), even_token_fraction],
            peft_config=build_lora_config(model, model_args),
        )
        renderer.bind(trainer)
        lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        trainer.train()
        judge.close()
    assert not any(p.requires_grad for part in ("transformer", "vae") for p in getattr(pipeline, part).parameters())
    for name, before in frozen_before.items():
        part, rest = name.split(".", 1)
        assert torch.equal(getattr(pipeline, part).get_parameter(rest), before), name
    moved = [n for n, p in trainer.model.named_parameters() if n in lora_before and not torch.equal(p, lora_before[n])]
    assert moved and all("lora_" in n for n in moved)
    assert pipeline.text_encoder is trainer.model.get_base_model()  # the pipeline renders with the policy itself


def test_monitor_and_run_finishes_a_smoke_run_and_prints_rewards(tmp_path, sample):
    proc = subprocess.run(
        ["bash", str(RECIPE / "monitor_and_run.sh"), "mon", "--dataset", str(sample), "--disable_tqdm", "true"],
        cwd=REPO_ROOT,
        env=env(SMOKE="1", NUM_GPUS="1", OUTPUT_ROOT=str(tmp_path), MAIN_PROCESS_PORT="29531"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("step     1 | reward") for line in lines)
    assert any(line.startswith("step     2 | reward") for line in lines)
    assert f"== mon finished: {tmp_path}/mon" in proc.stdout
    assert "instruction_following" in (tmp_path / "mon" / "training.log").read_text()
    resolved = yaml.safe_load((tmp_path / "mon" / "run_config.yaml").read_text())
    assert resolved["ScriptArguments"]["judge_base_url"].startswith("http://127.0.0.1:")


def test_full_finetune_launcher_trains_under_zero3(tmp_path, sample):
    # The reward runs the policy outside the DeepSpeed engine; without TRL's gathering context ZeRO-3's next
    # backward failed on partitioned parameters. Two CPU processes, ZeRO-3, full fine-tuning, one step.
    out = tmp_path / "full"
    proc = subprocess.run(
        [
            "bash",
            str(RECIPE / "run_8gpu_full_finetune.sh"),
            "--output_dir",
            str(out),
            "--dataset",
            str(sample),
            "--max_steps",
            "1",
            "--disable_tqdm",
            "true",
        ],
        cwd=REPO_ROOT,
        env=env(SMOKE="1", MAIN_PROCESS_PORT="29533"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = (out / "training.log").read_text()
    assert proc.returncode == 0, log[-4000:]
    assert "deepspeed_zero3.yaml" in log and "x 2 process(es)" in log
    assert "trainable params" in log and "language/full" in log
    assert [e["step"] for e in logged_steps(out)] == [1]
    assert (out / "model.safetensors").is_file() or any(out.glob("model*.safetensors"))
