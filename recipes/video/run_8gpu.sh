#!/usr/bin/env bash
# bash run_8gpu.sh [--flag value ...]: this recipe on 8 GPUs (config.yaml, DeepSpeed ZeRO-2); flags override the
# config. SMOKE=1: CPU smoke run (config_smoke.yaml, 2 processes; makes the sample data first). NUM_GPUS,
# NUM_MACHINES, ACCELERATE_CONFIG, RUN_NAME, ...: see core/tools/launch.sh. Same as: vlm-grpo train <this folder>
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$(command -v vlm-grpo || echo "$here/../../.venv/bin/vlm-grpo")" train "$here" "$@"
