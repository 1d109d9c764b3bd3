"""Per-GPU memory of a GRPO run from its config alone: `python -m core.plan CONFIG` (core.plan.memory)."""
