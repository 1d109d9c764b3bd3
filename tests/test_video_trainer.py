"""Video through the one core trainer: the log-probs GRPO optimises must be those of the model seeing the clip.

TRL 1.15 alone drops the video tensors from its log-prob forwards. These tests compare the trainer's per-token
log-probs with a direct model forward on the same video (to 1e-4), after generation and after TRL's shuffle/split
into micro-batches, and check that a video training step moves the weights.
"""

from __future__ import annotations

import datasets
import pytest
import torch
from PIL import Image
from trl import GRPOConfig

from core.training.config import VLMModelConfig
from core.training.models import load_model_and_processor
from core.training.trainer import VIDEO_KEYS, VLMGRPOTrainer
from tests.fixtures.toy_rewards import even_token_fraction

pytestmark = pytest.mark.slow


def clip(seed: int, n: int = 4) -> list[Image.Image]:
    g = torch.Generator().manual_seed(seed)
    return [
        Image.fromarray(torch.randint(0, 256, (48, 64, 3), generator=g, dtype=torch.uint8).numpy()) for _ in range(n)
    ]


def video_dataset() -> datasets.Dataset:
    questions = ["What happens in the clip?", "Which actions do you see, in order?"]
    rows = {
        "prompt": [[{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": q}]}] for q in questions],
        "video": [clip(0), clip(1, n=6)],
    }
    features = datasets.Features(
        {
            "prompt": [
                {
                    "role": datasets.Value("string"),
                    "content": [{"type": datasets.Value("string"), "text": datasets.Value("string")}],
                }
            ],
            "video": datasets.List(datasets.Image()),
        }
    )
    return datasets.Dataset.from_dict(rows, features=features)


def make_trainer(tmp_path, **overrides) -> VLMGRPOTrainer:
    model_args = VLMModelConfig(model_name_or_path="tiny:qwen2_5_vl", dtype="float32")
    model, processor, _ = load_model_and_processor(model_args)
    args = GRPOConfig(
        **{
            "output_dir": str(tmp_path / "out"),
            "bf16": False,
            "per_device_train_batch_size": 4,
            "num_generations": 2,
            "max_completion_length": 6,
            "beta": 0.0,
            "report_to": "none",
            "seed": 0,
            "gradient_checkpointing": False,
            "logging_steps": 1,
            "save_strategy": "no",
            "disable_tqdm": True,
            **overrides,
        }
    )
    return VLMGRPOTrainer(
        model=model,
        reward_funcs=[even_token_fraction],
        args=args,
        train_dataset=video_dataset(),
        processing_class=processor,
    )


def direct_completion_logps(trainer, prompt, frames, completion: list[int]) -> torch.Tensor:
    """Log-probs of `completion` from a plain forward of the model on the processor's encoding of prompt + video."""
    enc = trainer.encode_video_prompts([prompt], [frames])
    ids = torch.cat([enc["input_ids"], torch.tensor([completion])], dim=1)
    mm = torch.cat([enc["mm_token_type_ids"], torch.zeros(1, len(completion), dtype=torch.long)], dim=1)
    with torch.no_grad():
        logits = trainer.model(
            input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=mm, **{k: enc[k] for k in VIDEO_KEYS}
        ).logits
    p = enc["input_ids"].size(1)
    logps = torch.log_softmax(logits[0, p - 1 : p - 1 + len(completion)].float(), dim=-1)
    return logps.gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1)


def completion_of(output, i) -> list[int]:
    return output["completion_ids"][i][output["completion_mask"][i].bool()].tolist()


def test_logps_after_generation_match_a_direct_video_forward(tmp_path):
    # num_iterations=2 makes TRL compute the old-policy log-probs for the whole generation batch.
    trainer = make_trainer(tmp_path, num_iterations=2)
    ds = trainer.train_dataset
    rows = [ds[0], ds[0], ds[1], ds[1]]
    trainer.model.train()
    output = trainer._generate_and_score_completions(rows)
    assert "old_per_token_logps" in output
    assert [g.tolist() for g in output["video_grid_thw"]] == [[[2, 4, 4]]] * 2 + [[[3, 4, 4]]] * 2

    worst, gap_wrong_video = 0.0, 0.0
    for i, row in enumerate(rows):
        completion = completion_of(output, i)
        got = output["old_per_token_logps"][i][: len(completion)]
        expected = direct_completion_logps(trainer, row["prompt"], row["video"], completion)
        worst = max(worst, (got - expected).abs().max().item())
        other = rows[(i + 2) % 4]["video"]  # same prompt, the other clip
        if len(other) == len(row["video"]):
            continue
        wrong = direct_completion_logps(trainer, row["prompt"], clip(7, n=len(row["video"])), completion)
        gap_wrong_video = max(gap_wrong_video, (got - wrong).abs().max().item())
    assert worst < 1e-4, f"trainer log-probs differ from the video-conditioned forward by {worst}"
    assert gap_wrong_video > 1e-3, "the comparison cannot tell videos apart, so it proves nothing"


def test_video_tensors_follow_their_rows_through_shuffle_and_split(tmp_path):
    trainer = make_trainer(tmp_path, gradient_accumulation_steps=2, per_device_train_batch_size=2)
    ds = trainer.train_dataset
    rows = [ds[0], ds[0], ds[1], ds[1]]
    trainer.model.train()
    torch.manual_seed(3)
    micro_batches = [trainer._prepare_inputs(rows)]
    trainer._step += 1
    micro_batches.append(trainer._prepare_inputs(rows))  # the buffered second micro-batch, no new generation
    seen = 0
    for inputs in micro_batches:
        assert len(inputs["pixel_values_videos"]) == inputs["prompt_ids"].size(0) == 2
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        c = inputs["completion_ids"].size(1)
        with torch.no_grad(), trainer.video_rows({k: inputs[k] for k in VIDEO_KEYS}):
            logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, c, batch_size=1)
        for r in range(2):
            # Which source row is this? Its video tensor says; its prompt ids must belong to the same row.
            src = 0 if inputs["video_grid_thw"][r][0, 0].item() == 2 else 1
            frames, prompt = ds[src]["video"], ds[src]["prompt"]
            enc = trainer.encode_video_prompts([prompt], [frames])
            assert inputs["prompt_ids"][r][inputs["prompt_mask"][r].bool()].tolist() == enc["input_ids"][0].tolist()
            assert torch.equal(inputs["pixel_values_videos"][r], enc["pixel_values_videos"])
            completion = inputs["completion_ids"][r][inputs["completion_mask"][r].bool()].tolist()
            expected = direct_completion_logps(trainer, prompt, frames, completion)
            assert (logps[r][: len(completion)] - expected).abs().max().item() < 1e-4
            seen += 1
    assert seen == 4


def test_video_placeholder_is_never_sampled(tmp_path):
    trainer = make_trainer(tmp_path)
    assert trainer.model.config.video_token_id in trainer.generation_config.suppress_tokens
    assert trainer.model.config.image_token_id in trainer.generation_config.suppress_tokens


def test_training_on_video_updates_parameters(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2, learning_rate=1e-2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert any("language_model" in n for n in changed)
    rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    assert len(rewards) == 2
