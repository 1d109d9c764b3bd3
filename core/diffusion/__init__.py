"""Qwen-Image(-Edit) as a frozen renderer for GRPO on the VLM that the pipeline uses as its text encoder."""
