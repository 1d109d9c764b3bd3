"""Prompt token ids, built one way for training, evaluation and inference.

A policy evaluated on ids other than those it was trained on is evaluated on a different task. The classic slip:
render the chat template to text (Gemma-3's already starts with `<bos>`), then tokenise that text with the
tokenizer's special tokens on, and every prompt starts `<bos><bos>`. So every place that turns conversational
prompts into model inputs calls `encode_prompts`:

- images or text only: the exact call TRL 1.15's `GRPOTrainer._tokenize_prompts` makes (the prompt's image
  placeholders filled by `trl.data_utils.prepare_multimodal_messages`, as its `_generate_and_score_completions` does,
  then `processor.apply_chat_template(..., tokenize=True, return_dict=True)`), so an image row's ids here are TRL's
  training ids; `tests/test_prompts.py` checks that against TRL's own method for every model family.
- video (which TRL 1.15 does not handle; `core.training.trainer.VLMGRPOTrainer` encodes it through this function): the
  template rendered to text and the processor called on it with the already sampled frames, adding the tokenizer's
  special tokens only when the rendered text does not already start with `<bos>` — the rule transformers'
  `ProcessorMixin.apply_chat_template(tokenize=True)` applies, so both paths agree on special tokens.
"""

from __future__ import annotations

from typing import Any

from transformers import ProcessorMixin
from transformers.video_utils import VideoMetadata
from trl.data_utils import apply_chat_template, prepare_multimodal_messages

VIDEO_COLUMN = "video"  # a row's sampled frames (a list of PIL images), as the video recipe's dataset holds them
VIDEO_FPS_COLUMN = "video_fps"  # optional per-row sampling rate of the frames (Qwen2.5-VL's temporal positions)


def encode_video_rows(processor: Any, rows: list[dict[str, Any]], **chat_template_kwargs: Any) -> Any:
    """`encode_prompts` for dataset rows with a `video` column, read the one way training and evaluation share: the
    per-row `video_fps` only when every row has one (else the processor's default rate)."""
    fps = [row.get(VIDEO_FPS_COLUMN) for row in rows]
    return encode_prompts(
        processor,
        [row["prompt"] for row in rows],
        videos=[row[VIDEO_COLUMN] for row in rows],
        fps=fps if all(f is not None for f in fps) else None,
        **chat_template_kwargs,
    )


def encode_prompts(
    processor: Any,
    prompts: list[list[dict[str, Any]]],
    images: list[list[Any] | None] | None = None,
    videos: list[list[Any]] | None = None,
    fps: list[float] | None = None,
    **chat_template_kwargs: Any,
) -> Any:
    """The processor output (left- or right-padded as `processor` is set, PyTorch tensors) for a batch of
    conversational `prompts`, ready for `model.generate(**out)` or a forward.

    `images`: per prompt, the images that fill its `{"type": "image"}` placeholders in order (or None for a prompt
    without images), as TRL fills them from an `image`/`images` column. `videos`: per prompt, one clip as a list of
    frames already sampled by the recipe (the processor must not sample again), with `fps` the per-clip rate of the
    sampled frames when known (Qwen2.5-VL's temporal positions follow it). `processor` may also be a plain tokenizer
    (text-only prompts, as the text encoder of Qwen-Image is trained). `chat_template_kwargs` are the trainer's
    (`GRPOConfig.chat_template_kwargs`).
    """
    if videos is not None:
        if images is not None:
            raise ValueError("prompts with both a video and images are not supported; use one or the other")
        return _encode_video_prompts(processor, prompts, videos, fps, **chat_template_kwargs)
    if images is not None:  # TRL's _generate_and_score_completions: the dataset's images into the placeholders
        prompts = [prepare_multimodal_messages(p, images=imgs) for p, imgs in zip(prompts, images, strict=True)]
    if isinstance(processor, ProcessorMixin):  # TRL's _tokenize_prompts: string contents into content blocks
        prompts = [prepare_multimodal_messages(p) for p in prompts]
    # TRL passes tools=self.tools or None and its chat_template (set only with tools); the recipes use no tools.
    return processor.apply_chat_template(
        conversation=prompts,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        padding=True,
        return_tensors="pt",
        **chat_template_kwargs,
    )


def _encode_video_prompts(
    processor: Any, prompts: list, videos: list, fps: list | None, **chat_template_kwargs: Any
) -> Any:
    texts = [apply_chat_template({"prompt": p}, processor, **chat_template_kwargs)["prompt"] for p in prompts]
    bos = processor.tokenizer.bos_token
    videos_kwargs: dict[str, Any] = {"do_sample_frames": False}
    if fps is not None:
        videos_kwargs["video_metadata"] = [
            VideoMetadata(total_num_frames=len(v), fps=f, frames_indices=list(range(len(v))))
            for v, f in zip(videos, fps, strict=True)
        ]
    return processor(
        text=texts,
        videos=videos,
        padding=True,
        return_tensors="pt",
        add_special_tokens=not (bos is not None and texts[0].startswith(bos)),
        videos_kwargs=videos_kwargs,
    )
