"""benchmarks/gpu_check.sh (issue 14, item 5) where there is no GPU: it parses, and stops at once with a clear message
and exit status 77 (skipped) without measuring or writing anything. And the full fine-tune launcher says what each
GPU needs (PLAN_ONLY=1 prints it without launching)."""

from __future__ import annotations

import subprocess

from tests.helpers import REPO_ROOT, subprocess_env

GPU_CHECK = REPO_ROOT / "benchmarks" / "gpu_check.sh"
FULL_FINETUNE = REPO_ROOT / "recipes" / "image_edit" / "run_8gpu_full_finetune.sh"


def test_scripts_parse() -> None:
    for script in (GPU_CHECK, FULL_FINETUNE):
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_gpu_check_without_cuda_stops_with_a_message_and_exit_77(tmp_path) -> None:
    out = tmp_path / "gpu_check"
    proc = subprocess.run(
        ["bash", str(GPU_CHECK)],
        cwd=tmp_path,
        env=subprocess_env(CUDA_VISIBLE_DEVICES="", GPU_CHECK_OUT=str(out)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 77, proc.stdout + proc.stderr
    assert "gpu_check: no CUDA device here (torch.cuda.is_available() is False" in proc.stderr
    assert "nothing was measured" in proc.stderr and "exit 77: skipped" in proc.stderr
    assert proc.stdout == "" and not out.exists()


def test_full_finetune_launcher_prints_what_a_gpu_needs_without_launching(tmp_path) -> None:
    proc = subprocess.run(
        ["bash", str(FULL_FINETUNE), "--output_dir", str(tmp_path / "run")],
        cwd=REPO_ROOT,
        env=subprocess_env(PLAN_ONLY="1", GPU_MEMORY_GB="80", NUM_GPUS="8"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "== per GPU, full fine-tune on 8 GPU(s) of 80 GB" in proc.stdout
    # core.plan.memory's table, or (when the planner cannot run) the components by arithmetic
    assert "verdict:" in proc.stdout or "frozen Qwen-Image-Edit DiT (20.43 B params, bf16): 40.9 GB" in proc.stdout
    assert "DiT" in proc.stdout and not (tmp_path / "run").exists()  # nothing launched
