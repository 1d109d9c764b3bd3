#!/usr/bin/env bash
# Launch: bash monitor_and_run.sh RUN_NAME [flags for run_8gpu.sh ...]   (from this folder, or give its path)
#   Runs training into outputs/RUN_NAME, prints the reward of every logged step from its training.log, and, if the
#   run dies before finishing, relaunches it from its last checkpoint (at most MAX_RESTARTS times, default 3).
#   LAUNCHER=.../run_8gpu_full_finetune.sh monitors the full fine-tuning launcher instead.
#   A run stopped by a start-up error (bad data, config or flag: the launcher exits 2 and leaves the message in
#   $out/error.txt, see core/errors.py) is not relaunched, since it cannot succeed until the input is fixed: the
#   message is printed and this script exits 2. After any other failure the last lines of the log are printed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
vlm_grpo=$(command -v vlm-grpo || echo "$here/../../.venv/bin/vlm-grpo")  # as run_8gpu.sh finds it
run_name=${1:?usage: monitor_and_run.sh RUN_NAME [flags]}
shift
out=${OUTPUT_ROOT:-outputs}/$run_name
launcher=${LAUNCHER:-$here/run_8gpu.sh}
max_restarts=${MAX_RESTARTS:-3}
# The log monitor (core.tools.monitor) runs in the environment vlm-grpo is installed in.
python=${PYTHON:-$([[ -x $(dirname "$vlm_grpo")/python ]] && echo "$(dirname "$vlm_grpo")/python" || echo python3)}

launches=0
while true; do
  if [[ -f "$out/train_results.json" ]]; then
    echo "== $run_name finished: $out"
    exit 0
  fi
  if ((launches > max_restarts)); then
    echo "== $run_name died $launches times; giving up (see $out/training.log)" >&2
    exit 1
  fi
  args=(--output_dir "$out")
  first_step=1
  if compgen -G "$out/checkpoint-*" >/dev/null; then
    args+=(--resume_from_checkpoint true)
    last=$(ls -d "$out"/checkpoint-* | sed 's/.*checkpoint-//' | sort -n | tail -1)
    first_step=$((last + 1))
    echo "== relaunching $run_name from checkpoint-$last"
  fi
  offset=$(stat -c %s "$out/training.log" 2>/dev/null || echo 0)
  # The launcher tees everything into $out/training.log; here only the per-step summary is shown.
  bash "$launcher" "${args[@]}" "$@" >/dev/null 2>&1 &
  pid=$!
  "$python" -m core.tools.monitor "$out/training.log" --follow --pid "$pid" --offset "$offset" --first-step "$first_step" || true
  status=0
  wait "$pid" || status=$?
  launches=$((launches + 1))
  ((status == 0)) && continue
  if [[ $status -eq 2 && -s "$out/error.txt" ]]; then
    echo "== $run_name stopped on an error in its input; not relaunching (it cannot succeed until this is fixed):" >&2
    cat "$out/error.txt" >&2
    echo "== full log: $out/training.log" >&2
    exit 2
  fi
  echo "== training exited with status $status; last lines of $out/training.log:" >&2
  tail -c +"$((offset + 1))" "$out/training.log" 2>/dev/null | tail -n "${TAIL_LINES:-20}" >&2
done
