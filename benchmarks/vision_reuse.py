"""Seconds per GRPO step with and without vision reuse (core.training.vision_reuse, core.data.decode_cache), and the
share of each step spent on vision work: decoding images, the image processor and the vision tower.

    python benchmarks/vision_reuse.py [--family qwen2_5_vl --max_pixels 200704 --rounds 3 --steps 4]

Both arms run the same trainer (`VLMGRPOTrainer`, tiny random checkpoint, LoRA on the language model, CPU, fp32) on
the same PNG files (one 448x448 noise image per prompt: 200k pixels, as many as the budget keeps), the same seeds and
the same config (4 prompts x G=4 completions per step, 16 new tokens, beta 0.04 so the reference forward runs,
steps_per_generation 2 so the old-policy forward runs); the only difference is `reuse_vision`. Arms alternate within
each round (order flipped every round); a round trains `--steps` optimizer steps per arm from a fresh model, after
one untimed generation batch (start-up), and each generation batch's two steps count as one sample (their mean). Vision
time is measured inside the step by timing the decoder (`core.data.images.open_image`), the image processor and the
model's `get_image_features` (the tower and projector) where they are called. The first step of each run is
dropped (start-up). The tiny checkpoint's language model is small, so its vision share is an upper bound of a real
model's; the ratio of vision calls is the same at any size. CPU-only figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import core.data.images as images_module  # noqa: E402
from core.data.decode_cache import decode_cache  # noqa: E402

G = 4
PROMPTS = 4
CYCLE = 2  # steps_per_generation: one generation batch feeds two optimizer steps


class Timers:
    """Seconds per vision part, accumulated while a step runs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, part: str, func: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start
                self.calls[part] += 1

        return timed


class TimedProcessor:
    """The image processor with its calls timed (every other attribute the real one's)."""

    def __init__(self, inner: Any, timers: Timers) -> None:
        self.__dict__.update(inner=inner, timed=timers.wrap("processor", inner))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.timed(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["inner"], name)


def write_images(folder: Path, side: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(PROMPTS):
        path = folder / f"image{i}.png"
        Image.fromarray((rng.random((side, side, 3)) * 255).astype("uint8")).save(path)
        paths.append(str(path))
    return paths


def run_arm(reuse: bool, paths: list[str], args: argparse.Namespace, out: Path) -> tuple[list[float], list[float]]:
    """(seconds per step, vision seconds per step), one value per generation batch after the first (its two
    optimizer steps averaged: the first generates, the second reuses the batch), for one fresh training run."""
    import datasets
    import torch
    from transformers import TrainerCallback

    from core.data.images import NormalizedImage
    from core.training.config import VLMGRPOConfig, VLMModelConfig
    from core.training.lora import build_lora_config
    from core.training.models import load_model_and_processor, set_pixel_bounds
    from core.training.trainer import VLMGRPOTrainer
    from core.training.vision_reuse import _vision_module

    timers = Timers()
    decode_cache.clear()
    torch.manual_seed(0)
    model_args = VLMModelConfig(model_name_or_path=f"tiny:{args.family}", dtype="float32", use_peft=True)
    model, processor, _ = load_model_and_processor(model_args)
    set_pixel_bounds(processor, None, args.max_pixels)
    processor.image_processor = TimedProcessor(processor.image_processor, timers)
    vision = _vision_module(model)
    vision.get_image_features = timers.wrap("tower", vision.get_image_features)
    original_open = images_module.open_image
    images_module.open_image = timers.wrap("decode", original_open)
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    dataset = datasets.Dataset.from_dict({"prompt": [prompt] * PROMPTS, "image": paths})
    dataset = dataset.cast_column("image", NormalizedImage())

    steps: list[float] = []
    vision_steps: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self.start, self.vision = time.perf_counter(), sum(timers.seconds.values())

        def on_step_end(self, *_: Any, **__: Any) -> None:
            steps.append(time.perf_counter() - self.start)
            vision_steps.append(sum(timers.seconds.values()) - self.vision)

    config = VLMGRPOConfig(
        output_dir=str(out / f"run-{reuse}"),
        overwrite_output_dir=True,
        bf16=False,
        max_steps=args.steps + CYCLE,
        per_device_train_batch_size=PROMPTS * G // 2,
        steps_per_generation=CYCLE,
        num_generations=G,
        max_completion_length=16,
        beta=0.04,
        report_to="none",
        save_strategy="no",
        logging_steps=1000,
        seed=0,
        disable_tqdm=True,
        reuse_vision=reuse,
    )
    trainer = VLMGRPOTrainer(
        model=model,
        reward_funcs=[lambda completions, **_: [float(len(c[0]["content"]) % 3) for c in completions]],
        args=config,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=build_lora_config(model, model_args),
        callbacks=[StepClock()],
    )
    try:
        trainer.train()
    finally:
        images_module.open_image = original_open
    per_cycle = [
        (sum(steps[i : i + CYCLE]) / CYCLE, sum(vision_steps[i : i + CYCLE]) / CYCLE)
        for i in range(CYCLE, len(steps) - CYCLE + 1, CYCLE)
    ]
    return [s for s, _ in per_cycle], [v for _, v in per_cycle]


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):6.3f}  (min {min(values):.3f}, max {max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="qwen2_5_vl", choices=["qwen2_5_vl", "qwen3_vl", "gemma3"])
    parser.add_argument("--max_pixels", type=int, default=200_704, help="processor budget per image (256 x 28 x 28)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per arm and round (even)")
    args = parser.parse_args()
    import logging

    logging.disable(logging.WARNING)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    vision: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), side=int(args.max_pixels**0.5))
        for round_index in range(args.rounds):
            for reuse in (False, True) if round_index % 2 == 0 else (True, False):
                steps, vision_steps = run_arm(reuse, paths, args, Path(tmp))
                seconds[reuse] += steps
                vision[reuse] += vision_steps
    shares = {arm: [v / s for v, s in zip(vision[arm], seconds[arm], strict=True)] for arm in (False, True)}
    print(
        f"{args.family}, {args.max_pixels} pixels per image, {PROMPTS} prompts x G={G} per step, "
        f"{args.rounds} rounds x {args.steps} steps per arm, CPU"
    )
    for arm, name in ((False, "TRL's path (reuse_vision false)"), (True, "vision reuse (reuse_vision true)")):
        print(f"  {name:34s} s/step {spread(seconds[arm])}   vision+processor share {spread(shares[arm])}")
    speedup = statistics.median(seconds[False]) / statistics.median(seconds[True])
    print(
        f"ratios: step time x{speedup:.2f} faster with reuse; vision+processor share "
        f"{statistics.median(shares[False]):.0%} -> {statistics.median(shares[True]):.0%} (goal <= 15%)"
    )


if __name__ == "__main__":
    main()
