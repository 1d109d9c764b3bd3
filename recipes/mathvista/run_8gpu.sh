#!/usr/bin/env bash
# bash run_8gpu.sh [--flag value ...]: this recipe on 8 GPUs (config.yaml, DeepSpeed ZeRO-2); flags override the
# config. SMOKE=1: CPU smoke run (config_smoke.yaml, 2 processes; makes the sample data first). NUM_GPUS,
# NUM_MACHINES, ACCELERATE_CONFIG, RUN_NAME, ...: see core/tools/launch.sh. Same as: vlm-grpo train <this folder>
# --backend transformers --load_in_4bit false --vllm_gpu_memory_utilization 0.35 (`vlm-grpo train` alone would start
# config.yaml's one-GPU Unsloth back end on 8 processes, which train.py refuses). The flags below: across GPUs, transformers + PEFT in bf16 with TRL's vLLM colocated (config.yaml alone is the
# original's one-GPU Unsloth run: python train.py --config config.yaml). Flags given here still win.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$(command -v vlm-grpo || echo "$here/../../.venv/bin/vlm-grpo")" train "$here" \
  --backend transformers --load_in_4bit false --vllm_gpu_memory_utilization 0.35 "$@"
