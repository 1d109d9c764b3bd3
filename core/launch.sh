#!/usr/bin/env bash
# Shared launcher behind every recipes/<task>/run_8gpu.sh:
#   bash core/launch.sh RECIPE_DIR [train.py flags ...]
# Environment:
#   NUM_GPUS           processes per machine (default 8; 2 with SMOKE=1)
#   NUM_MACHINES       machines (default 1); MACHINE_RANK (default 0); MAIN_PROCESS_IP; MAIN_PROCESS_PORT (29500 across
#                      machines; on one machine a free port, so two runs on one node do not collide)
#   SMOKE=1            CPU run of the recipe's config_smoke.yaml under the same launcher and DeepSpeed config
#   CONFIG             training YAML (default RECIPE_DIR/config.yaml, or config_smoke.yaml with SMOKE=1)
#   ACCELERATE_CONFIG  accelerate/DeepSpeed file (default RECIPE_DIR/deepspeed_zero2.yaml)
#   RUN_NAME           output folder name under outputs/ (default <recipe>-<timestamp>); --output_dir DIR wins
#   PYTHON             interpreter that runs accelerate and train.py. Unset: the repository's .venv/bin/python (what
#                      `make install` builds) if it exists, else python3 on PATH. Set it to run from any other
#                      environment (conda, a cluster module); the test suite sets it to its own interpreter.
# The log is appended (tee -a) to OUTPUT_DIR/training.log, so a resumed run keeps what came before.
set -euo pipefail

recipe_dir=$(cd "${1:?usage: launch.sh RECIPE_DIR [flags]}" && pwd)
shift
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
recipe=$(basename "$recipe_dir")

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi

extra=()
train_extra=()
if [[ "${SMOKE:-0}" == "1" ]]; then
  config=${CONFIG:-$recipe_dir/config_smoke.yaml}
  num_gpus=${NUM_GPUS:-2}
  # DeepSpeed on CPU: its CPU accelerator, the gloo backend (accelerate would otherwise count one process), and no
  # bf16 mixed precision. Not --cpu: that makes accelerate drop DeepSpeed for plain multi-CPU DDP.
  export DS_ACCELERATOR=cpu
  extra+=(--mixed_precision no)
  train_extra+=(--ddp_backend gloo)
else
  config=${CONFIG:-$recipe_dir/config.yaml}
  num_gpus=${NUM_GPUS:-8}
fi
accelerate_config=${ACCELERATE_CONFIG:-$recipe_dir/deepspeed_zero2.yaml}
num_machines=${NUM_MACHINES:-1}
machine_rank=${MACHINE_RANK:-0}
main_ip=${MAIN_PROCESS_IP:-127.0.0.1}
if [[ -n "${MAIN_PROCESS_PORT:-}" ]]; then
  main_port=$MAIN_PROCESS_PORT
elif [[ "$num_machines" == "1" ]]; then  # a port nothing listens on now, as torchrun --standalone picks one
  main_port=$((20000 + RANDOM % 40000))
  while (: <"/dev/tcp/127.0.0.1/$main_port") 2>/dev/null; do main_port=$((20000 + RANDOM % 40000)); done
else
  main_port=29500
fi

# --output_dir given on the command line wins over RUN_NAME and the config (argparse keeps the last value).
output_dir=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --output_dir) output_dir=${args[$((i + 1))]:-} ;;
    --output_dir=*) output_dir=${args[$i]#--output_dir=} ;;
  esac
done
if [[ -z "$output_dir" ]]; then
  output_dir=outputs/${RUN_NAME:-$recipe-$(date +%Y%m%d-%H%M%S)}
  args=(--output_dir "$output_dir" "${args[@]}")
fi
mkdir -p "$output_dir"
log="$output_dir/training.log"

cmd=("$PYTHON" -m accelerate.commands.launch
  --config_file "$accelerate_config"
  --num_processes $((num_gpus * num_machines))
  --num_machines "$num_machines"
  --machine_rank "$machine_rank"
  --main_process_ip "$main_ip"
  --main_process_port "$main_port"
  "${extra[@]}"
  "$recipe_dir/train.py" --config "$config" "${train_extra[@]}" "${args[@]}")

export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
{
  echo "== $(date '+%F %T') $recipe on $num_machines machine(s) x $num_gpus process(es), rank $machine_rank"
  echo "== ${cmd[*]}"
} | tee -a "$log"
set +e
"${cmd[@]}" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
set -e
echo "== exit $status; log: $log" | tee -a "$log"
exit "$status"
