"""Loading a finished (or checkpointed) run back for evaluation, the same way in every recipe's evaluate.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoProcessor

from core.config import VLMModelConfig, load_resolved_config
from core.models import load_model, model_family, set_pixel_bounds


def load_trained_policy(run_dir: str | Path, device: str) -> tuple[Any, Any, str, dict]:
    """The trained policy (base + LoRA adapter merged, or full weights), its processor, family and resolved config.

    `run_dir` is a training output folder or one of its checkpoint-* folders; the resolved config is read from the
    folder itself or, for a checkpoint, from its parent.
    """
    run_dir = Path(run_dir)
    cfg_dir = run_dir if (run_dir / "run_config.yaml").is_file() else run_dir.parent
    cfg = load_resolved_config(cfg_dir)
    model_args = VLMModelConfig(**cfg["VLMModelConfig"])
    family = model_family(model_args.model_name_or_path)
    if (run_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_model(model_args), str(run_dir)).merge_and_unload()
    else:
        model_args.model_name_or_path = str(run_dir)
        model = load_model(model_args)
    processor = AutoProcessor.from_pretrained(str(run_dir), padding_side="left")
    set_pixel_bounds(processor, model_args.min_pixels, model_args.max_pixels)
    return model.to(device).eval(), processor, family, cfg


def load_trained_pipeline(run_dir: str | Path, device: str, edit: bool) -> tuple[Any, dict]:
    """A Qwen-Image(-Edit) pipeline whose text encoder is the trained policy (LoRA adapter merged, or the full
    weights saved in `run_dir`), with the run's resolved config."""
    from core.diffusion import load_pipeline
    from core.models import torch_dtype

    run_dir = Path(run_dir)
    cfg = load_resolved_config(run_dir)
    model_cfg = cfg["VLMModelConfig"]
    pipeline = load_pipeline(
        model_cfg["model_name_or_path"], dtype=torch_dtype(model_cfg["dtype"]), device=device, edit=edit
    )
    if (run_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        pipeline.text_encoder = PeftModel.from_pretrained(pipeline.text_encoder, str(run_dir)).merge_and_unload()
    else:
        from transformers import AutoModelForImageTextToText

        pipeline.text_encoder = AutoModelForImageTextToText.from_pretrained(str(run_dir)).to(device)
    pipeline.text_encoder.eval()
    return pipeline, cfg
