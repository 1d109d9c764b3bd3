#!/usr/bin/env bash
# GPU check (issue 14, item 5): measured peak GPU memory and step time of real training runs, next to core.plan.memory's
# prediction, on one CUDA GPU in at most ~10 minutes (an H200 was the target).
#
#   bash benchmarks/gpu_check.sh                        every recipe's smoke config in bf16, 2 GRPO steps each, then
#                                                       one real-size random-weight step for grounding and image_edit
#   RECIPES="grounding image_edit" REAL_SIZE=0 bash benchmarks/gpu_check.sh      a subset, smoke runs only
#
# Each run is the recipe's own train.py, executed in a measuring wrapper (same process): peak memory is
# torch.cuda.max_memory_allocated() over the whole run (weights, generation, rewards, training), step time the median
# wall time of the optimizer steps after the first (the first includes warm-up), synchronised. The prediction is
# core.plan.memory's per-GPU peak for the same config and flags on 1 GPU without DeepSpeed (what a single `python train.py`
# is). Smoke runs use the tiny models (bf16: --bf16 true --dtype bfloat16); the real-size runs use random:<hub id>
# models (core.training.architectures: the real architecture with random weights, no download) with the smoke data and
# lengths. GB = 2**30 bytes, as core.plan.memory and torch report.
#
# Environment: PYTHON (default: the repository's .venv, else python3), GPU_CHECK_OUT (default
# outputs/gpu_check-<time>), GPU_CHECK_BUDGET_S (default 570: runs that would start later are skipped),
# RECIPES (default: all six), REAL_SIZE (default 1), GPU_CHECK_CPU=1 (run on CPU in fp32 anyway: tests the plumbing,
# no memory figures).
# Exit status: 0 all runs passed; 1 a run failed or timed out (the table still prints); 77 no CUDA device (nothing run).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then PYTHON="$root/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
budget=${GPU_CHECK_BUDGET_S:-570}
cpu_mode=${GPU_CHECK_CPU:-0}

if [[ "$cpu_mode" != "1" ]]; then
  if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2> /dev/null; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False with $PYTHON): nothing was measured." >&2
    echo "gpu_check: run it on a machine with an NVIDIA GPU and a CUDA build of torch (exit 77: skipped)." >&2
    exit 77
  fi
fi

out=${GPU_CHECK_OUT:-outputs/gpu_check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
recipes=(${RECIPES:-grounding image2code image_edit mathvista mmmg video})
real_size=${REAL_SIZE:-1}
log="$out/gpu_check.log"
echo "== gpu_check: $(date '+%F %T'), results in $out" | tee "$log"

# --- the measuring wrapper: runs a recipe's train.py in this process and records memory and step times -------------
cat > "$out/measure.py" << 'EOF'
import json, os, runpy, statistics, sys, time

import torch
import transformers

result_path, script, *args = sys.argv[1:]
cuda = torch.cuda.is_available()
sync = torch.cuda.synchronize if cuda else (lambda: None)
steps = []


class StepTimer(transformers.TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        sync()
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        steps.append(time.perf_counter() - self.started)


original_init = transformers.Trainer.__init__


def init_with_timer(self, *a, **k):  # every trainer the recipe builds gets the timer
    original_init(self, *a, **k)
    self.add_callback(StepTimer())


transformers.Trainer.__init__ = init_with_timer
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # recipes import their siblings by plain name
sys.argv = [script, *args]
result = {"ok": False, "device": torch.cuda.get_device_name(0) if cuda else "cpu"}
began = time.perf_counter()
try:
    runpy.run_path(script, run_name="__main__")
    result["ok"] = True
except SystemExit as exit_:
    result["ok"] = exit_.code in (0, None)
    result["error"] = None if result["ok"] else f"SystemExit({exit_.code})"
except BaseException as error:  # recorded, then re-raised for the log
    result["error"] = f"{type(error).__name__}: {error}"[:500]
    raise
finally:
    GiB = 1024**3
    result["wall_s"] = time.perf_counter() - began
    result["steps_s"] = steps
    later = steps[1:] or steps
    result["step_s"] = statistics.median(later) if later else None
    if cuda:
        result["peak_allocated_gb"] = torch.cuda.max_memory_allocated() / GiB
        result["peak_reserved_gb"] = torch.cuda.max_memory_reserved() / GiB
        result["gpu_memory_gb"] = torch.cuda.get_device_properties(0).total_memory / GiB
    with open(result_path, "w") as f:
        json.dump(result, f)
EOF

# --- core.plan.memory's prediction for the same config and flags (1 GPU, no DeepSpeed) ------------------------------------
cat > "$out/predict.py" << 'EOF'
import json, sys

result_path, config, *flags = sys.argv[1:]
prediction = {}
try:
    import torch
    from core.plan.memory import Launch, parse_recipe_config, plan_run

    gb = torch.cuda.get_device_properties(0).total_memory / 1024**3 if torch.cuda.is_available() else 80.0
    script_args, training_args, model_args = parse_recipe_config(config, flags, num_gpus=1)
    plan = plan_run(script_args, training_args, model_args, Launch(num_gpus=1, zero_stage=0, gpu_memory_gb=gb))
    # The plan's fixed CUDA-context allowance is memory torch's allocator never sees: compared without it.
    context = sum(item.gb for item in plan.items if item.name.startswith("CUDA context"))
    prediction = {"peak_gb": plan.total_gb, "context_gb": context, "phase": plan.peak_phase,
                  "phases": plan.phase_totals()}
    print(plan.format())
except Exception as error:  # the planner is advisory here: no prediction, the measurement still counts
    prediction = {"error": f"{type(error).__name__}: {error}"[:300]}
    print(f"core.plan.memory: {prediction['error']}")
with open(result_path, "w") as f:
    json.dump(prediction, f)
EOF

remaining() { echo $((budget - ($(date +%s) - start))); }
failed=0
runs=()

# One run: NAME CAP_SECONDS RECIPE FLAGS... (train.py flags on top of the recipe's smoke config)
run() {
  local name=$1 cap=$2 recipe=$3
  shift 3
  local left
  left=$(remaining)
  runs+=("$name")
  if ((left < 30)); then
    echo "== $name: skipped (${left}s of the ${budget}s budget left)" | tee -a "$log"
    echo '{"ok": false, "error": "skipped: time budget"}' > "$out/$name.json"
    return
  fi
  ((cap > left)) && cap=$left
  local config="recipes/$recipe/config_smoke.yaml"
  local flags=(--output_dir "$out/$name" --max_steps 2 --save_strategy no --report_to none --disable_tqdm true
    --logging_steps 1 "$@")
  if [[ "$cpu_mode" == "1" ]]; then flags+=(--bf16 false --dtype float32); else flags+=(--bf16 true --dtype bfloat16); fi
  echo "== $name: python recipes/$recipe/train.py --config $config ${flags[*]}  (limit ${cap}s)" | tee -a "$log"
  timeout 120 "$PYTHON" "$out/predict.py" "$out/$name.plan.json" "$config" "${flags[@]}" > "$out/$name.plan.txt" 2>&1 ||
    echo "   (core.plan.memory did not finish: see $out/$name.plan.txt)" | tee -a "$log"
  local status=0
  timeout --kill-after=10 "$cap" "$PYTHON" "$out/measure.py" "$out/$name.json" "recipes/$recipe/train.py" \
    --config "$config" "${flags[@]}" > "$out/$name.log" 2>&1 || status=$?
  if ((status != 0)); then
    failed=1
    [[ -s "$out/$name.json" ]] || echo "{\"ok\": false, \"error\": \"exit $status (124: over ${cap}s)\"}" > "$out/$name.json"
    echo "   FAILED (exit $status); last lines of $out/$name.log:" | tee -a "$log"
    tail -n 15 "$out/$name.log" | sed 's/^/   | /' | tee -a "$log"
  fi
}

# --- sample data the smoke configs read (recipes/<r>/data/sample, as `make demo` writes it) -------------------------
for recipe in "${recipes[@]}"; do
  sample="recipes/$recipe/data/sample"
  [[ -e "$sample" ]] && continue
  echo "== sample data: $sample" | tee -a "$log"
  "$PYTHON" "recipes/$recipe/sample.py" "$sample" >> "$log" 2>&1
done

# --- every recipe's smoke config in bf16 ----------------------------------------------------------------------------
for recipe in "${recipes[@]}"; do
  run "smoke-$recipe" 110 "$recipe"
done

# --- one real-size random-weight GRPO step (when core.training.architectures knows the ids) ----------------------------------
if [[ "$real_size" == "1" ]]; then
  if "$PYTHON" -c 'import core.training.architectures' 2> /dev/null; then
    # grounding's real model; LoRA as in its real config, the smoke data and lengths, one optimizer step
    [[ " ${recipes[*]} " == *" grounding "* ]] &&
      run "real-grounding" 200 grounding --model_name_or_path random:Qwen/Qwen2.5-VL-7B-Instruct --max_steps 1 \
        --gradient_checkpointing true
    # image_edit's real pipeline (20.4 B DiT + VAE + 7B text encoder, built with random weights on the GPU); the DiT
    # stays there (the smoke config would offload it: 41 GB of pinned host RAM); 64 x 64 renders as in the smoke
    [[ " ${recipes[*]} " == *" image_edit "* ]] &&
      run "real-image_edit" 240 image_edit --model_name_or_path random:Qwen/Qwen-Image-Edit --max_steps 1 \
        --gradient_checkpointing true --offload_dit false
  else
    echo "== real-size runs skipped: core.training.architectures (random:<hub id> models) is not in this checkout" | tee -a "$log"
  fi
fi

# --- the table -------------------------------------------------------------------------------------------------------
"$PYTHON" - "$out" "${runs[@]}" << 'EOF' | tee -a "$log"
import json, sys
from pathlib import Path

out, names = Path(sys.argv[1]), sys.argv[2:]
def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
def num(value, fmt):
    return format(value, fmt) if isinstance(value, (int, float)) else "-"
rows = []
for name in names:
    m, p = load(out / f"{name}.json"), load(out / f"{name}.plan.json")
    measured, predicted = m.get("peak_allocated_gb"), p.get("peak_gb")
    allocator = predicted - p.get("context_gb", 0.0) if predicted is not None else None
    ratio = measured / allocator if measured and allocator else None
    status = "ok" if m.get("ok") else (m.get("error") or "failed")
    rows.append([name, status[:40], num(measured, ".2f"), num(m.get("peak_reserved_gb"), ".2f"), num(predicted, ".2f"),
                 num(allocator, ".2f"), num(ratio, ".2f"), p.get("phase", "-"), num(m.get("step_s"), ".2f"),
                 num(m.get("wall_s"), ".0f")])
head = ["run", "status", "peak alloc GB", "peak reserved GB", "core.plan.memory GB", "plan w/o CUDA ctx", "measured/plan",
        "plan's peak phase", "step s", "run s"]
device = next((load(out / f"{n}.json").get("device") for n in names if load(out / f"{n}.json").get("device")), "?")
print(f"\ngpu_check on {device} (GB = 2**30 bytes; peak alloc: torch.cuda.max_memory_allocated over the run;"
      " measured/plan: against the plan without its fixed CUDA-context allowance, which the allocator does not see;"
      " step s: median optimizer step after the first, generation and rewards included)\n")
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for row in rows:
    print("| " + " | ".join(row) + " |")
missing = [n for n in names if load(out / f"{n}.plan.json").get("error")]
if missing:
    print(f"\nno core.plan.memory prediction for {', '.join(missing)} (see <run>.plan.txt)")
EOF
echo "== gpu_check: $(($(date +%s) - start))s; table and logs in $out" | tee -a "$log"
exit "$failed"
