"""Two GRPO steps with `use_vllm: true` (colocate) on a tiny model, the vLLM stand-in on PYTHONPATH, recording what
the rewards and the log-prob forwards receive. Run by tests/test_vllm_generation.py as a subprocess (TRL picks its
vLLM back end when it is imported, so the stand-in must be importable before anything imports TRL).

usage: python tests/stand_ins/vllm_contract_run.py FAMILY OUT_DIR IMAGE_WIDTH IMAGE_HEIGHT [MAX_PIXELS]
Writes OUT_DIR/contract.json: {"reward_completions": [[ids...]...], "logprob_input_ids": [[ids...]...],
"fitted": [w, h], "log_history": [...]} (ids per completion, in the order TRL produced them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from datasets import Dataset
from PIL import Image
from trl import GRPOConfig

from core.data.vision import model_image_size
from core.training.config import VLMModelConfig
from core.training.models import load_model_and_processor
from core.training.trainer import VLMGRPOTrainer


def main() -> None:
    family, out_dir, width, height = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    max_pixels = int(sys.argv[5]) if len(sys.argv) > 5 else None
    model_args = VLMModelConfig(model_name_or_path=f"tiny:{family}", dtype="float32", max_pixels=max_pixels)
    model, processor, _ = load_model_and_processor(model_args)
    image = Image.new("RGB", (width, height), (200, 30, 30))
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    dataset = Dataset.from_list([{"prompt": prompt, "image": image} for _ in range(2)])
    record: dict = {"reward_completions": [], "logprob_input_ids": []}

    def spy_reward(completions, completion_ids, **kwargs):
        record["reward_completions"] += [list(map(int, ids)) for ids in completion_ids]
        return [float(ids[0] % 2) for ids in completion_ids]  # varied: non-zero advantages, so weights move

    args = GRPOConfig(
        output_dir=str(out_dir),
        use_vllm=True,
        vllm_mode="colocate",
        vllm_max_model_length=512,
        bf16=False,
        learning_rate=5e-2,
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        beta=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        gradient_checkpointing=False,
        disable_tqdm=True,
    )
    trainer = VLMGRPOTrainer(
        model=model, reward_funcs=[spy_reward], args=args, train_dataset=dataset, processing_class=processor
    )
    forward = trainer._get_per_token_logps_and_entropies

    def spy_forward(model, input_ids, attention_mask, logits_to_keep, *a, **kw):
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            record["logprob_input_ids"].append(
                [int(t) for t, m in zip(ids[-logits_to_keep:], mask[-logits_to_keep:], strict=True) if m]
            )
        return forward(model, input_ids, attention_mask, logits_to_keep, *a, **kw)

    trainer._get_per_token_logps_and_entropies = spy_forward
    trainer.train()
    record["fitted"] = list(model_image_size(processor, width, height))
    record["log_history"] = trainer.state.log_history
    (out_dir / "contract.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
