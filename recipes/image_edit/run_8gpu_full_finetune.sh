#!/usr/bin/env bash
# Launch: bash recipes/image_edit/run_8gpu_full_finetune.sh [--flag value ...]
#   Full fine-tuning of the VLM (no LoRA) under DeepSpeed ZeRO-3; the DiT and VAE stay frozen as in the LoRA run.
#   Same environment variables as run_8gpu.sh (NUM_GPUS, NUM_MACHINES, MACHINE_RANK, MAIN_PROCESS_IP, RUN_NAME, ...).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-$here/deepspeed_zero3.yaml}
exec bash "$here/run_8gpu.sh" --use_peft false --learning_rate 1e-6 "$@"
