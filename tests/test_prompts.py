"""Evaluation generates from the very prompt ids training generates from, for every model family.

Training's ids come from TRL 1.15's own `GRPOTrainer._generate_and_score_completions` (its `_tokenize_prompts`) run
by a `VLMGRPOTrainer` on the tiny model; evaluation's are what `core.evaluation.loading.generate_greedy` (used by every
recipe's evaluate.py and by mathvista's infer.py) hands the model, read by a forward pre-hook on the real model's
first (prefill) forward. The bug these tests pin: rendering Gemma-3's template to text (it starts with `<bos>`) and
tokenising it again with special tokens gave evaluation `<bos><bos>`. The video tests pin the same for the video
recipe, whose evaluation once encoded clips without their frame rate (Qwen2.5-VL's temporal positions and Qwen3-VL's
timestamp text follow it).
"""

from __future__ import annotations

from typing import Any

import datasets
import pytest
import torch
from PIL import Image
from trl import GRPOConfig

from core.data.records import image_prompt
from core.data.video import video_prompt
from core.evaluation.loading import generate_greedy
from core.training.config import VLMModelConfig
from core.training.models import load_model_and_processor
from core.training.trainer import VLMGRPOTrainer
from tests.fixtures.toy_rewards import even_token_fraction

FAMILIES = ("qwen2_5_vl", "qwen3_vl", "gemma3")


def picture(seed: int, size: tuple[int, int]) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy())


def image_rows() -> list[dict[str, Any]]:
    """Two rows as the image recipes build them (core.data.records.image_prompt + an `image` column), different
    lengths."""
    return [
        {"prompt": image_prompt("Where is the red box?", "Answer briefly."), "image": picture(0, (64, 48))},
        {"prompt": image_prompt("How many bars are taller than five?", None), "image": picture(1, (48, 64))},
    ]


def video_rows() -> list[dict[str, Any]]:
    """Two rows as the video recipe builds them: sampled frames and the rate they were sampled at."""
    return [
        {
            "prompt": video_prompt("Which actions happen, in order?", "Be brief."),
            "video": [picture(10 + i, (64, 48)) for i in range(4)],
            "video_fps": 2.0,
        },
        {
            "prompt": video_prompt("What happens?", None),
            "video": [picture(20 + i, (64, 48)) for i in range(6)],
            "video_fps": 0.5,
        },
    ]


def make_trainer(family: str, rows: list[dict[str, Any]], tmp_path) -> VLMGRPOTrainer:
    model, processor, _ = load_model_and_processor(VLMModelConfig(model_name_or_path=f"tiny:{family}", dtype="float32"))
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        bf16=False,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=2,
        beta=0.0,
        report_to="none",
        seed=0,
        gradient_checkpointing=False,
        save_strategy="no",
        disable_tqdm=True,
    )
    return VLMGRPOTrainer(
        model=model,
        reward_funcs=[even_token_fraction],
        args=args,
        train_dataset=datasets.Dataset.from_list([{"prompt": r["prompt"]} for r in rows]),
        processing_class=processor,
    )


def training_inputs(trainer: VLMGRPOTrainer, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """TRL's real generation step on each row twice (one group of num_generations=2 per row)."""
    trainer.model.train()
    return trainer._generate_and_score_completions([rows[0], rows[0], rows[1], rows[1]])


def training_prompt_ids(output: dict[str, Any], i: int) -> list[int]:
    return output["prompt_ids"][i][output["prompt_mask"][i].bool()].tolist()


def evaluation_inputs(trainer: VLMGRPOTrainer, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The keyword arguments of the model's prefill forward inside `generate_greedy` (batched, left-padded). The
    vision tower has run by then (transformers 5 passes its outputs on), so ids and timing are what is left to see."""
    seen: list[dict[str, Any]] = []

    def record(module, args, kwargs):
        if not seen:
            seen.append(dict(kwargs))

    model = trainer.model.eval()
    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        generate_greedy(model, trainer.processing_class, rows, max_new_tokens=1)
    finally:
        handle.remove()
    return seen[0]


def evaluation_prompt_ids(inputs: dict[str, Any], i: int) -> list[int]:
    return inputs["input_ids"][i][inputs["attention_mask"][i].bool()].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_evaluation_prompt_ids_equal_training_ids(family, tmp_path):
    rows = image_rows()
    trainer = make_trainer(family, rows, tmp_path)
    train = training_inputs(trainer, rows)
    evaluated = evaluation_inputs(trainer, rows)
    tokenizer = trainer.processing_class.tokenizer
    image_token = trainer.model.config.image_token_id
    for i, t in ((0, 0), (1, 2)):
        expected, got = training_prompt_ids(train, t), evaluation_prompt_ids(evaluated, i)
        assert got == expected, f"{family} row {i}: evaluation {tokenizer.decode(got[:8])!r}... != training"
        assert image_token in got  # the image made it into both
        if tokenizer.bos_token_id is not None:  # Gemma-3: exactly one <bos>, first
            assert got.count(tokenizer.bos_token_id) == 1 and got[0] == tokenizer.bos_token_id
    assert evaluation_prompt_ids(evaluated, 0) != evaluation_prompt_ids(evaluated, 1)  # rows stayed apart


def test_tiny_gemma3_template_holds_the_bos():
    """The premise of the <bos> check above: Gemma-3's rendered template already starts with <bos>."""
    _, processor, _ = load_model_and_processor(VLMModelConfig(model_name_or_path="tiny:gemma3", dtype="float32"))
    text = processor.apply_chat_template(image_prompt("Hi", None), add_generation_prompt=True, tokenize=False)
    assert processor.tokenizer.bos_token == "<bos>" and text.startswith("<bos>")


@pytest.mark.slow
@pytest.mark.parametrize("family", ("qwen2_5_vl", "qwen3_vl"))
def test_video_evaluation_inputs_equal_training_inputs(family, tmp_path):
    rows = video_rows()
    trainer = make_trainer(family, rows, tmp_path)
    train = training_inputs(trainer, rows)
    evaluated = evaluation_inputs(trainer, rows)
    for i, t in ((0, 0), (1, 2)):
        assert evaluation_prompt_ids(evaluated, i) == training_prompt_ids(train, t), f"{family} row {i}"
    if family == "qwen2_5_vl":  # time between temporal patches, from the clip's frame rate: the rotary positions
        expected = [train["second_per_grid_ts"][t].item() for t in (0, 2)]
        assert torch.as_tensor(evaluated["second_per_grid_ts"]).flatten().tolist() == pytest.approx(expected)
        assert expected[0] != expected[1]  # the two rates differ, so a default rate could not pass
