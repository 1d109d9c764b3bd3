#!/usr/bin/env bash
# Shared launcher behind `vlm-grpo train` and every recipes/<task>/run_8gpu.sh (which runs `vlm-grpo train`):
#   bash core/tools/launch.sh RECIPE_DIR [train.py flags ...]
# RECIPE_DIR may be anywhere (a copy made by `vlm-grpo new --dest DIR` too): `core` is imported from the installed
# package (or this repository, put on PYTHONPATH), the recipe's files from RECIPE_DIR.
# Environment:
#   NUM_GPUS           processes per machine (default 8; 2 with SMOKE=1)
#   NUM_MACHINES       machines (default 1); MACHINE_RANK (default 0); MAIN_PROCESS_IP; MAIN_PROCESS_PORT (29500 across
#                      machines; on one machine a free port, so two runs on one node do not collide)
#   SMOKE=1            CPU run of the recipe's config_smoke.yaml under the same launcher and DeepSpeed config; first
#                      runs the recipe's sample.py (idempotent: an up-to-date sample is left as is), so the synthetic
#                      data config_smoke.yaml reads exists on a fresh clone, and says so in one line
#   CONFIG             training YAML (default RECIPE_DIR/config.yaml, or config_smoke.yaml with SMOKE=1)
#   ACCELERATE_CONFIG  accelerate/DeepSpeed file (default RECIPE_DIR/deepspeed_zero2.yaml)
#   RUN_NAME           output folder name under outputs/ (default <recipe>-<timestamp>); --output_dir DIR wins
#   PYTHON             interpreter that runs accelerate and train.py. Unset: the repository's .venv/bin/python (what
#                      `make install` builds) if it exists, else python3 on PATH. Set it to run from any other
#                      environment (conda, a cluster module); `vlm-grpo train` sets it to its own interpreter (the
#                      environment it is installed in), and so does the test suite.
# The log is appended (tee -a) to OUTPUT_DIR/training.log, so a resumed run keeps what came before.
# A start-up error (bad data, config, missing file; core/errors.py) is printed once, as the last lines, without a
# traceback (the traceback is in training.log), and the launcher exits with status 2: fix the input and rerun.
# Any other failure exits with the workers' status. Killing the launcher (TERM, INT, HUP, or even KILL) stops its
# workers: a signal is forwarded to the accelerate process group, and a watchdog stops that group within a second
# when the launcher itself is gone (workers also die with their parent, core/errors.die_with_parent).
set -euo pipefail

recipe_dir=$(cd "${1:?usage: launch.sh RECIPE_DIR [flags]}" && pwd)
shift
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
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
  if ! compgen -G "${TORCH_EXTENSIONS_DIR:-$HOME/.cache/torch_extensions}/*/deepspeed_*" >/dev/null; then
    echo "== first DeepSpeed launch on CPU: DeepSpeed compiles its CPU extension once (about a minute); later" \
      "launches reuse it."
  fi
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
# Workers write a start-up error's message here (core/errors.py); it is printed last. An old one is stale.
error_file="$output_dir/error.txt"
rm -f "$error_file"
export VLM_GRPO_ERROR_FILE="$(cd "$output_dir" && pwd)/error.txt" VLM_GRPO_LOG="$(cd "$output_dir" && pwd)/training.log"

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

# SMOKE=1 on a fresh clone: config_smoke.yaml reads the recipe's synthetic sample (data/sample), made here once.
# Its first line (wrote DIR / DIR already holds this sample) is the summary; all its output goes to the log.
if [[ "${SMOKE:-0}" == "1" ]]; then
  if [[ -f "$recipe_dir/sample.py" ]]; then
    sample_status=0
    sample_err=$(mktemp)
    sample_out=$("$PYTHON" "$recipe_dir/sample.py" 2>"$sample_err") || sample_status=$?
    { printf '%s\n' "$sample_out"; cat "$sample_err"; } >>"$log"
    if [[ $sample_status -ne 0 ]]; then
      { printf '%s\n' "$sample_out"; cat "$sample_err"; } >&2
      rm -f "$sample_err"
      echo "== sample data: $recipe_dir/sample.py failed (status $sample_status), see above; not training" | tee -a "$log"
      exit "$sample_status"
    fi
    rm -f "$sample_err"
    summary=$(printf '%s\n' "$sample_out" | grep -v '^[[:space:]]*$' | head -n 1 || true)
    echo "== sample data: ${summary%:}" | tee -a "$log"
  else
    echo "== sample data: $recipe_dir has no sample.py; config_smoke.yaml's data must exist already" | tee -a "$log"
  fi
fi

# accelerate runs in the background so that a signal to this shell is handled at once: TERM, INT and HUP are
# forwarded to it, and torch's elastic agent inside stops the workers (each in a session of its own). A watchdog
# covers SIGKILL of this shell, which no trap sees: it sends TERM to accelerate once the shell is gone (KILL 1 s
# later), and the workers die with accelerate (core.errors.die_with_parent). The log is written by a tee on fd 3.
exec 3> >(tee -a "$log")
tee_pid=$!
set +e
"${cmd[@]}" >&3 2>&1 &
agent=$!
for sig in TERM INT HUP; do trap "kill -$sig $agent 2>/dev/null" "$sig"; done
launcher=$$
alive() {  # a killed process stays a zombie until its parent reaps it (or never, under some PID 1s): not alive
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || { [[ ! -d /proc/self ]] && kill -0 "$1" 2>/dev/null; return; }
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}
(
  while alive "$launcher"; do sleep 0.25; done
  alive "$agent" || exit 0
  kill -TERM "$agent" 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do sleep 0.1; alive "$agent" || exit 0; done
  kill -KILL "$agent" 2>/dev/null  # its workers die with it (PR_SET_PDEATHSIG, core.errors.die_with_parent)
) </dev/null >/dev/null 2>&1 3>&- &
watchdog=$!
status=0
wait "$agent" || status=$?
while kill -0 "$agent" 2>/dev/null; do  # `wait` returns early when a trapped signal arrives: wait for the exit
  status=0
  wait "$agent" || status=$?
done
kill "$watchdog" 2>/dev/null
exec 3>&-
for _ in $(seq 100); do kill -0 "$tee_pid" 2>/dev/null || break; sleep 0.1; done  # the log complete before the end
set -e
if [[ $status -ne 0 && -s "$error_file" ]]; then
  echo "== the training processes exited with status $status; full log with the traceback: $log" | tee -a "$log"
  echo "== the run stopped on this error; fix it and launch again:" | tee -a "$log"
  tee -a "$log" <"$error_file"
  exit 2
fi
echo "== exit $status; log: $log" | tee -a "$log"
exit "$status"
