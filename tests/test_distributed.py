"""`SMOKE=1 bash recipes/grounding/run_8gpu.sh`: 2 CPU processes under DeepSpeed ZeRO-2, through the shared launcher."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.helpers import REPO_ROOT, load_recipe_module, subprocess_env

pytestmark = pytest.mark.slow


def test_smoke_launcher_runs_zero2_on_two_cpu_processes(tmp_path):
    sample = tmp_path / "sample"
    load_recipe_module("grounding", "sample").make_sample(sample, num_samples=20, num_eval=4, seed=1)
    out = tmp_path / "dist"
    # A cold tiny-model cache: both ranks resolve tiny:qwen2_5_vl at once with torch.distributed already up, where
    # save_pretrained writes weights on rank 0 only (a rank-1 build once published a checkpoint without weights).
    env = subprocess_env(SMOKE="1", MAIN_PROCESS_PORT="29519", VLM_GRPO_CACHE=str(tmp_path / "cold_cache"))
    env.pop("NUM_GPUS", None)
    proc = subprocess.run(
        [
            "bash",
            "recipes/grounding/run_8gpu.sh",
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--save_steps",
            "2",
            "--train_file",
            str(sample / "train.jsonl"),
            "--eval_file",
            str(sample / "eval.jsonl"),
            "--disable_tqdm",
            "true",
            "--log_level",
            "info",  # transformers' start-up report, with the global batch size (off on the console by default)
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = (out / "training.log").read_text() if (out / "training.log").exists() else proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "x 2 process(es)" in log
    # 2 processes x 4 prompts each: the global batch proves both ranks trained together.
    assert re.search(r"Total train batch size \(w\. parallel, distributed & accumulation\) = 8", log)
    # DeepSpeed's own checkpoint layout (not a DDP optimizer.pt) proves ZeRO ran, one rng state per rank.
    ckpt = out / "checkpoint-2"
    assert (ckpt / "global_step2").is_dir() and (ckpt / "latest").read_text().strip() == "global_step2"
    assert {p.name for p in ckpt.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert any((ckpt / "global_step2").glob("*zero_pp_rank_1*optim_states.pt"))
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert (out / "adapter_model.safetensors").is_file() and (out / "reward_curve.png").is_file()
    built = list((tmp_path / "cold_cache" / "tiny").glob("qwen2_5_vl-v*"))
    assert len(built) == 1 and (built[0] / "model.safetensors").is_file() and (built[0] / "config.json").is_file()
