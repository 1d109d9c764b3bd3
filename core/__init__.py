"""Shared library behind every recipe, in layers (a layer imports only the layers above it in this list):

- `core.errors`, `core.ranges`: errors a person can act on, allowed values of config fields (no heavy imports).
- `core.data`: records, images, video, the model's view of an image size; nothing task-specific.
- `core.rewards`: the reward contract and user rewards, the judge client and the local judge server, the sandbox.
- `core.training`: config parsing, model loading, LoRA, the GRPO trainer, run start-up and wrap-up, back ends.
- `core.diffusion`: Qwen-Image(-Edit) as a frozen renderer for the recipes that train its text encoder.
- `core.evaluation`: loading a finished run back, the shared evaluate.py command line.
- `core.plan`: per-GPU memory of a run from its config (`python -m core.plan CONFIG`).
- `core.tools`: the `vlm-grpo` command, launcher, reward plots, log monitor, recipe module loading.
- `core.testing`: the tiny offline checkpoints tests and smoke configs use; imported only when a `tiny:` id is.

Nothing here imports a recipe.
"""
