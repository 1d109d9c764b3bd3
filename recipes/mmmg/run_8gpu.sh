#!/usr/bin/env bash
# Launch: bash recipes/mmmg/run_8gpu.sh [--flag value ...]
#   8 GPUs, config.yaml, DeepSpeed ZeRO-2; flags override the config (e.g. --output_dir outputs/mine --max_steps 50).
#   SMOKE=1 bash recipes/mmmg/run_8gpu.sh      CPU smoke run (config_smoke.yaml, 2 processes)
#   NUM_GPUS=4 | NUM_MACHINES=2 MACHINE_RANK=0 MAIN_PROCESS_IP=10.0.0.1 | ACCELERATE_CONFIG=.../deepspeed_zero3.yaml
# Everything else is in core/tools/launch.sh, shared by all recipes; this file names no recipe, so a copy works as is.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/../../core/tools/launch.sh" "$here" "$@"
