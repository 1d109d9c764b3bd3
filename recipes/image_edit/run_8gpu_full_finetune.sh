#!/usr/bin/env bash
# Launch: bash run_8gpu_full_finetune.sh [--flag value ...]   (from this folder, or give its path)
#   Full fine-tuning of the VLM (no LoRA) under DeepSpeed ZeRO-3; the DiT and VAE stay frozen as in the LoRA run.
#   The frozen DiT is offloaded between reward renders (--offload_dit true; pass --offload_dit false to keep it on the
#   GPUs): it waits in host RAM (~41 GB per rank) and is copied to the GPU for each render only.
#   Same environment variables as run_8gpu.sh (NUM_GPUS, NUM_MACHINES, MACHINE_RANK, MAIN_PROCESS_IP, RUN_NAME, ...).
#   PLAN_ONLY=1: print what each GPU needs (vlm-grpo plan) and exit without launching.
#   GPU_MEMORY_GB: the card size the plan is checked against (default: nvidia-smi's first GPU, else 80).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
vlm_grpo=$(command -v vlm-grpo || echo "$here/../../.venv/bin/vlm-grpo")  # as run_8gpu.sh finds it
export ACCELERATE_CONFIG=${ACCELERATE_CONFIG:-$here/deepspeed_zero3.yaml}
flags=(--use_peft false --learning_rate 1e-6 --offload_dit true)
num_gpus=$(( ${NUM_GPUS:-8} * ${NUM_MACHINES:-1} ))
gpu_gb=${GPU_MEMORY_GB:-}
if [[ -z "$gpu_gb" ]] && command -v nvidia-smi > /dev/null 2>&1; then
  mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2> /dev/null | head -n1 | tr -d ' ' || true)
  [[ "$mib" =~ ^[0-9]+$ ]] && gpu_gb=$(awk -v m="$mib" 'BEGIN { printf "%.1f", m / 1024 }')
fi
gpu_gb=${gpu_gb:-80}

# What one GPU needs, before anything loads. The planner reads the same config and flags train.py will get.
if [[ "${SMOKE:-0}" == "1" ]]; then
  echo "== per GPU: SMOKE=1 runs the tiny pipeline on CPU; for the real run: PLAN_ONLY=1 bash $0"
else
  echo "== per GPU, full fine-tune on $num_gpus GPU(s) of ${gpu_gb} GB (vlm-grpo plan; ZeRO-3, DiT offloaded):"
  if ! "$vlm_grpo" plan "${CONFIG:-$here/config.yaml}" --num_gpus "$num_gpus" --gpu_memory_gb "$gpu_gb" \
      --accelerate_config "$ACCELERATE_CONFIG" "${flags[@]}" "$@"; then
    # The planner could not run (not installed here, or a flag it does not know): the components, by arithmetic.
    awk -v n="$num_gpus" 'BEGIN {
      policy = 8.29e9; dit = 20.43e9; vae = 0.127e9
      printf "   (core.plan failed above; the components instead, GB = 1e9 bytes, arithmetic from parameter counts)\n"
      printf "   policy, Qwen2.5-VL-7B text encoder (%.2f B params), ZeRO-3 over %d GPUs:\n", policy / 1e9, n
      printf "     bf16 weights + bf16 gradients + fp32 master weights + AdamW m and v = 16 bytes/param / %d = %.1f GB\n", n, 16 * policy / n / 1e9
      printf "     + the whole bf16 policy, gathered while generating and for the reward forward: %.1f GB (transient)\n", 2 * policy / 1e9
      printf "   frozen Qwen-Image-Edit DiT (%.2f B params, bf16): %.1f GB, on the GPU only while rendering (offload_dit)\n", dit / 1e9, 2 * dit / 1e9
      printf "   frozen VAE (%.2f B params, bf16): %.2f GB\n", vae / 1e9, 2 * vae / 1e9
      printf "   + activations (gradient checkpointing), the generation KV cache and the render activations\n"
      printf "   peak ~ %.0f GB + render activations while rendering (shards + DiT + VAE), vs %.0f GB + activations\n", (16 * policy / n + 2 * dit + 2 * vae) / 1e9, (16 * policy / n + 2 * policy + 2 * dit + 2 * vae) / 1e9
      printf "   while generating if the DiT stayed on the GPU (--offload_dit false): that is what does not fit 80 GB cards\n"
    }'
  fi
fi
if [[ "${PLAN_ONLY:-0}" == "1" ]]; then
  exit 0
fi
exec bash "$here/run_8gpu.sh" "${flags[@]}" "$@"
