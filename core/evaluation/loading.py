"""Loading a finished (or checkpointed) run back for evaluation, the same way in every recipe's evaluate.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoProcessor

from core.training.config import VLMModelConfig, load_resolved_config
from core.training.models import load_model, model_family, set_pixel_bounds
from core.training.prompts import VIDEO_COLUMN, encode_prompts, encode_video_rows

logger = logging.getLogger(__name__)


def _has_model(folder: Path) -> bool:
    """Whether `folder` holds saved weights: a LoRA adapter or full weights (safetensors, shards or torch .bin)."""
    return (folder / "adapter_config.json").is_file() or any(
        any(folder.glob(pattern)) for pattern in ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")
    )


def _checkpoints(folder: Path) -> list[Path]:
    """The folder's checkpoint-<step> folders, oldest first."""
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def check_run_dir(run_dir: str | Path) -> Path:
    """`run_dir` when it holds a model to evaluate; else FileNotFoundError saying what to pass instead.

    Shared by every evaluate.py: a mistyped folder is named as typed (not its parent, where the config lookup would
    go next), and a run killed before its final save (checkpoints only) points at its newest checkpoint instead of
    failing inside transformers with "Unrecognized model ... model_type".
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file, not a folder" if run_dir.exists() else "no such folder"
        raise FileNotFoundError(
            f"{run_dir}: {what}. Pass a training output folder (its --output_dir) or one of its checkpoint-* folders."
        )
    if _has_model(run_dir):
        return run_dir
    checkpoints = [c for c in _checkpoints(run_dir) if _has_model(c)]
    if checkpoints:
        raise FileNotFoundError(
            f"{run_dir} holds no final model: the run stopped before saving it. Evaluate its latest checkpoint "
            f"instead: {checkpoints[-1]} (or resume training with --resume_from_checkpoint true)."
        )
    raise FileNotFoundError(
        f"{run_dir} holds no model (no adapter_config.json or weights) and no checkpoint-* folder: pass a training "
        "output folder after training, or one of its checkpoint-* folders."
    )


def _config_dir(run_dir: Path) -> Path:
    """Where the run's resolved config is: the folder itself or, for a checkpoint, its parent."""
    return run_dir if (run_dir / "run_config.yaml").is_file() else run_dir.parent


def load_trained_policy(run_dir: str | Path, device: str) -> tuple[Any, Any, str, dict]:
    """The trained policy (base + LoRA adapter merged, or full weights), its processor, family and resolved config.

    `run_dir` is a training output folder or one of its checkpoint-* folders (`check_run_dir`); the resolved config
    is read from the folder itself or, for a checkpoint, from its parent.
    """
    run_dir = check_run_dir(run_dir)
    cfg_dir = _config_dir(run_dir)
    cfg = load_resolved_config(cfg_dir)
    model_args = VLMModelConfig(**cfg["VLMModelConfig"])
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not torch.cuda.is_available():
        # A run trained in 4-bit on a GPU can still be evaluated here: bitsandbytes needs CUDA, the adapter does not.
        logger.warning("no CUDA GPU: loading the base model unquantised (the run used bitsandbytes quantisation)")
        model_args.load_in_4bit = model_args.load_in_8bit = False
    family = model_family(model_args.model_name_or_path)
    if (run_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        # the adapter was trained on the warm-started tiny model (core/training/warm_start.py)
        if model_args.warm_start_steps:
            adapter_config = json.loads((run_dir / "adapter_config.json").read_text())
            model_args.model_name_or_path = adapter_config["base_model_name_or_path"]
            if not Path(model_args.model_name_or_path).is_dir():
                raise FileNotFoundError(
                    f"{run_dir} was trained on the warm-started tiny model {model_args.model_name_or_path}, which is "
                    "no longer there (a cleared or other cache): run the same training command again to rebuild it "
                    "(the warm start is deterministic), then evaluate"
                )

        model = PeftModel.from_pretrained(load_model(model_args), str(run_dir)).merge_and_unload()
    else:
        model_args.model_name_or_path = str(run_dir)
        model = load_model(model_args)
    processor = AutoProcessor.from_pretrained(str(run_dir), padding_side="left")
    set_pixel_bounds(processor, model_args.min_pixels, model_args.max_pixels)
    return model.to(device).eval(), processor, family, cfg


@torch.no_grad()
def generate_greedy(
    model: Any,
    processor: Any,
    rows: list[dict],
    max_new_tokens: int,
    streamer: Any = None,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> list[str]:
    """Greedy completions for dataset rows as the recipes build them: a conversational `prompt` with an `image` (or
    `images`), or with a `video` (sampled frames, optionally `video_fps`).

    The model inputs are the training ones (`encode_rows`): one `<bos>` for Gemma-3, not the two a
    rendered-then-retokenised template gives, and a clip's frame rate as in training. Greedy, so an evaluation is
    repeatable; `streamer` (e.g. transformers' TextStreamer) sees tokens as they come; `chat_template_kwargs` are the
    run's, if it set any.
    """
    inputs = encode_rows(processor, rows, **(chat_template_kwargs or {})).to(model.device)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer)
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


@torch.no_grad()
def generate_completion_ids(
    model: Any,
    processor: Any,
    prompts: list[list[dict]],
    images: list[Any] | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 8,
) -> list[list[int]]:
    """Greedy completion token ids (pad tokens dropped) of a pipeline's text-encoder policy for conversational
    `prompts`, each with its one condition image when `images` is given, `batch_size` prompts at a time: what the
    pipeline's renderer embeds, as in training (`core.training.prompts.encode_prompts`).

    `processor`: the pipeline's processor (edit pipelines) or tokenizer (text-to-image). Batched generation pads on
    the left; the tokenizer's own padding side is restored right after encoding, since the embeddings the renderer
    computes pad as the pipeline does.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    completion_ids: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            pictures = None if images is None else [[image] for image in images[chunk]]
            inputs = encode_prompts(processor, prompts[chunk], images=pictures).to(model.device)
        finally:
            tokenizer.padding_side = side
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        completion_ids += [
            [t for t in seq.tolist() if t != tokenizer.pad_token_id] for seq in out[:, inputs["input_ids"].shape[1] :]
        ]
        logger.info("generated %d/%d", min(start + batch_size, len(prompts)), len(prompts))
    return completion_ids


def encode_rows(processor: Any, rows: list[dict], **chat_template_kwargs: Any) -> Any:
    """`core.training.prompts.encode_prompts` for dataset rows, their media read from the columns the trainer reads
    them from:
    TRL 1.15's `GRPOTrainer._generate_and_score_completions` for `images`/`image` (a None image: a text-only prompt),
    `VLMGRPOTrainer._generate_and_score_completions` for `video` and `video_fps` (the rate only when every row has
    one, else the processor's default)."""
    if VIDEO_COLUMN in rows[0]:
        return encode_video_rows(processor, rows, **chat_template_kwargs)
    prompts = [r["prompt"] for r in rows]
    if "images" in rows[0]:
        images = [r.get("images") for r in rows]
    elif "image" in rows[0]:
        images = [[r["image"]] if r.get("image") is not None else None for r in rows]
    else:
        images = None
    if images is not None and all(not imgs for imgs in images):
        images = None
    return encode_prompts(processor, prompts, images=images, **chat_template_kwargs)


def load_trained_pipeline(run_dir: str | Path, device: str, edit: bool) -> tuple[Any, dict]:
    """A Qwen-Image(-Edit) pipeline whose text encoder is the trained policy (LoRA adapter merged, or the full
    weights saved in `run_dir`), with the run's resolved config."""
    from core.diffusion.pipeline import load_pipeline
    from core.training.models import torch_dtype

    run_dir = check_run_dir(run_dir)
    cfg = load_resolved_config(_config_dir(run_dir))
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
