"""Training: one config path, model and processor loading, LoRA, the GRPO trainer, run start-up and wrap-up, the
transformers / Unsloth back ends, vLLM generation, the CPU log-prob path, the tiny-model warm start."""
