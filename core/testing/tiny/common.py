"""What every tiny checkpoint shares: the seed, the 2-layer text model's dimensions, seeded initialisation, saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SEED = 1234

TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
TEXT_KV_HEADS = 2
HEAD_DIM = 16  # 64 / 4
MROPE_SECTION = [2, 3, 3]  # temporal/height/width rotary dims; must sum to head_dim / 2


def save_model(model: Any, generation_kwargs: dict, out: Path) -> None:
    """Save weights + generation config; weights are random but seeded, hence reproducible."""
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(**generation_kwargs)
    model.save_pretrained(out, safe_serialization=True)


def init_model(model_cls: Any, config: Any) -> Any:
    import torch

    torch.manual_seed(SEED)
    return fill_zero_matrices(model_cls(config)).eval()


def fill_zero_matrices(model: Any) -> Any:
    """Re-draw all-zero weight matrices (uses the global torch RNG, so call right after seeding and building).

    Some weights start at zero by design in real checkpoints' init (e.g. Gemma-3's mm_input_projection_weight);
    left at zero in a random model they cut the image out of the computation and its gradients. Matrices only:
    norms and biases keep their init.
    """
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2 and param.is_floating_point() and not param.any():
                param.normal_(0.0, 0.02)
    return model
