"""Shared library behind every recipe: config, model loading, LoRA, data helpers, the GRPO trainer, tiny models."""

import os


def _interpret_triton_without_accelerator() -> None:
    """Run TRL's Triton kernels in Triton's interpreter on machines without a GPU.

    TRL 1.15 (the newest TRL that Unsloth allows, see pyproject.toml) computes GRPO's per-token log-probs with a
    Triton-only fused LM-head kernel (`trl/kernels/chunked_logprob.py`); with no CUDA/XPU device Triton has no driver
    and every training step fails ("0 active drivers"). Triton's interpreter (`TRITON_INTERPRET=1`, read when the
    kernels are decorated, i.e. when TRL is imported) runs the same kernels on CPU tensors, so CPU runs and tests use
    TRL's own log-prob code rather than a substitute. GPU machines are left untouched, and so is a value the user set.
    """
    if "TRITON_INTERPRET" in os.environ:
        return
    import torch

    if torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()):
        return
    os.environ["TRITON_INTERPRET"] = "1"


_interpret_triton_without_accelerator()


def check_triton_runs_here() -> None:
    """Raise RuntimeError, with the fix, when TRL's Triton kernels cannot run in this process: no GPU, and Triton was
    imported before `core` set its interpreter (see `_interpret_triton_without_accelerator`)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    try:
        import triton.language as tl
    except ImportError:
        return
    if type(tl.max).__name__ == "JITFunction":
        raise RuntimeError(
            "Triton was imported before core, so TRL's log-prob kernels cannot run on this machine without a GPU: "
            "import core before trl/transformers in your script, or set TRITON_INTERPRET=1 in the environment."
        )
