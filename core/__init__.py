"""Shared library behind every recipe: config, model loading, LoRA, data helpers, the GRPO trainer, tiny models."""
