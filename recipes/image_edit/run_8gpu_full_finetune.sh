#!/usr/bin/env bash
# Launch: bash recipes/image_edit/run_8gpu_full_finetune.sh [--flag value ...]
#   Full fine-tuning of the VLM (no LoRA) under DeepSpeed ZeRO-2 (optimizer states and gradients sharded; the 7B VLM
#   fits beside the frozen pipeline on 80+ GB GPUs); the DiT and VAE stay frozen as in the LoRA run. ZeRO-3 is refused
#   by train.py for now: the reward's forward of the policy outside the engine breaks its next backward.
#   Same environment variables as run_8gpu.sh (NUM_GPUS, NUM_MACHINES, MACHINE_RANK, MAIN_PROCESS_IP, RUN_NAME, ...).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-$here/deepspeed_zero2.yaml}
exec bash "$here/run_8gpu.sh" --use_peft false --learning_rate 1e-6 "$@"
