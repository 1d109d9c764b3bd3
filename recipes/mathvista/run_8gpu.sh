#!/usr/bin/env bash
# Launch: bash recipes/mathvista/run_8gpu.sh [--flag value ...]
#   8 GPUs, config.yaml, DeepSpeed ZeRO-2; flags override the config (e.g. --output_dir outputs/mine --max_steps 50).
#   SMOKE=1 bash recipes/mathvista/run_8gpu.sh      CPU smoke run (config_smoke.yaml, 2 processes)
#   NUM_GPUS=4 | NUM_MACHINES=2 MACHINE_RANK=0 MAIN_PROCESS_IP=10.0.0.1 | ACCELERATE_CONFIG=.../deepspeed_zero3.yaml
# One GPU, as the original (Unsloth, 4-bit, vLLM): python recipes/mathvista/train.py --config recipes/mathvista/config.yaml
# config.yaml is that one-GPU Unsloth setup (pip install -e '.[unsloth]'). Across GPUs the same settings run on
# transformers + PEFT in bf16 (Unsloth is one process; bitsandbytes 4-bit under DeepSpeed ZeRO buys nothing on 80 GB
# cards), generating with TRL's vLLM colocated in every process (config.yaml's use_vllm: true, vllm_mode: colocate;
# pip install -e '.[gpu]'), given less memory because every GPU also trains. Flags given here still win (argparse
# keeps the last value). SMOKE=1 keeps config_smoke.yaml's use_vllm: false (CPU, no vLLM).
# Everything else is in core/tools/launch.sh, shared by all recipes; this file names no recipe, so a copy works as is.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/../../core/tools/launch.sh" "$here" \
  --backend transformers --load_in_4bit false --vllm_gpu_memory_utilization 0.35 "$@"
