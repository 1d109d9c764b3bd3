"""Ask a trained adapter a question about a new image and stream its answer as it is generated.

Usage:  python recipes/mathvista/infer.py outputs/mathvista/final_model --image chart.png \
            --question "What is the value of the tallest bar?" --answer_type integer [--unit kg]
        multiple choice: --choices Yes No     (the answer is then the option letter)
The folder is what train.py writes to OUTPUT_DIR/final_model/ (adapter, processor, run_config.yaml); the prompt is
built exactly as in training (same delimiters, same per-answer-type hint, same image resize). Works for adapters
trained with either backend: Unsloth saves standard PEFT adapters.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from data import ANSWER_TYPES, build_prompt_text, prepare_image
from PIL import Image
from rewards import RewardConfig, extract_solution
from transformers import TextStreamer

from core.data.records import image_prompt
from core.evaluation.loading import generate_greedy, load_trained_policy


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="OUTPUT_DIR/final_model (or OUTPUT_DIR, or a checkpoint-*)")
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--question", required=True)
    parser.add_argument("--choices", nargs="+", help="options of a multiple-choice question, in order")
    parser.add_argument("--answer_type", choices=ANSWER_TYPES, default="text", help="shapes the hint in the prompt")
    parser.add_argument("--precision", type=int, help="decimal places of a float answer")
    parser.add_argument("--unit", help="unit the answer is measured in")
    parser.add_argument("--max_new_tokens", type=int, default=512)
    args = parser.parse_args(argv)

    run_dir = args.model_dir
    if (run_dir / "final_model" / "run_config.yaml").is_file():
        run_dir = run_dir / "final_model"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, processor, _, cfg = load_trained_policy(run_dir, device)
    script = cfg["ScriptArguments"]
    reward_cfg = RewardConfig.from_object(argparse.Namespace(**script))

    text = build_prompt_text(
        args.question,
        question_type="multi_choice" if args.choices else "free_form",
        answer_type=args.answer_type,
        choices=args.choices,
        precision=args.precision,
        unit=args.unit,
        reward_cfg=reward_cfg,
    )
    with Image.open(args.image) as image:
        picture = prepare_image(image, script["image_size"])
    row = {"prompt": image_prompt(text, script.get("system_prompt")), "image": picture}
    streamer = TextStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    print(f"Q: {args.question}\nA: ", end="", flush=True)
    answer = generate_greedy(model, processor, [row], args.max_new_tokens, streamer=streamer)[0]
    solution = extract_solution(answer, reward_cfg)
    print(f"\nfinal answer: {solution if solution is not None else '(no single solution block)'}", file=sys.stderr)
    return answer


if __name__ == "__main__":
    main()
