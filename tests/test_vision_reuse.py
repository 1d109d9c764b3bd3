"""Vision work once per unique input (core.training.vision_reuse, core.data.decode_cache) changes no number.

The reference is TRL 1.15's own path: the same trainer with `reuse_vision=False`. For each family on images, and for
the two Qwen families on video (one with per-clip sampling rates), one generation batch of 2 prompts x G=4
completions is generated with the same seeds both ways; everything the batch carries into the loss (ids, old and
reference log-probs, pixel tensors) and the loss's gradients must agree within 1e-5, while the reuse path sends each
unique input to the processor and the vision tower once. With a trainable vision tower the features are never
reused and the gradients still agree.
"""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from core.data.decode_cache import DecodeCache, decode_cache
from core.data.images import NormalizedImage
from core.data.video import to_video_dataset
from core.training.config import VLMGRPOConfig, VLMModelConfig
from core.training.lora import build_lora_config
from core.training.models import load_model_and_processor
from core.training.prompts import VIDEO_FPS_COLUMN
from core.training.trainer import VLMGRPOTrainer
from core.training.vision_reuse import ProcessorReuse
from tests.fixtures.toy_rewards import even_token_fraction

pytestmark = pytest.mark.slow

G = 4
TOLERANCE = 1e-5


def noise(seed: int, height: int, width: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8"))


def image_rows() -> list[dict]:
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]}]
    return [{"prompt": prompt, "image": noise(seed, 48 + 8 * seed)} for seed in range(2)]


def video_rows() -> list[dict]:
    prompt = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    return [{"prompt": prompt, "video": [noise(10 * seed + k, 32) for k in range(4 + 2 * seed)]} for seed in range(2)]


def one_batch(tmp_path, family: str, rows: list[dict], reuse: bool, train_vision: bool = False):
    """(trainer, the generation batch's output, loss, gradients by name) for 2 prompts x G completions."""
    torch.manual_seed(0)
    model_args = VLMModelConfig(
        model_name_or_path=f"tiny:{family}", dtype="float32", use_peft=True, lora_dropout=0.0, train_vision=train_vision
    )
    model, processor, _ = load_model_and_processor(model_args)
    args = VLMGRPOConfig(
        output_dir=str(tmp_path / f"out-{reuse}"),
        bf16=False,
        max_steps=1,
        per_device_train_batch_size=2 * G,
        steps_per_generation=2,  # old-policy log-probs are computed too
        num_generations=G,
        max_completion_length=6,
        beta=0.04,  # reference log-probs too (adapter disabled)
        report_to="none",
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        reuse_vision=reuse,
    )
    dataset = datasets.Dataset.from_list(rows)
    trainer = VLMGRPOTrainer(
        model=model,
        reward_funcs=[even_token_fraction],
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=build_lora_config(model, model_args),
    )
    inputs = [dict(rows[i // G]) for i in range(2 * G)]
    torch.manual_seed(1)
    output = trainer._generate_and_score_completions(inputs)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, which this test does not run
    loss = trainer.compute_loss(trainer.model, output)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return trainer, output, loss.detach(), grads


def assert_same_batch(reference, reused) -> None:
    (_, out_a, loss_a, grads_a), (_, out_b, loss_b, grads_b) = reference, reused
    assert set(out_a) == set(out_b)
    for key, a in out_a.items():
        b = out_b[key]
        if isinstance(a, list) and a and isinstance(a[0], torch.Tensor):  # video rows: per-row tensors
            assert len(a) == len(b) and all(
                torch.allclose(x, y, atol=TOLERANCE, rtol=0) for x, y in zip(a, b, strict=True)
            ), key
        elif isinstance(a, list):
            assert a == b, key
        elif isinstance(a, torch.Tensor) and a.is_floating_point():
            assert a.shape == b.shape and float((a - b).abs().max()) <= TOLERANCE, key
        elif isinstance(a, torch.Tensor):
            assert torch.equal(a, b), key
    for key in ("old_per_token_logps", "ref_per_token_logps"):
        assert key in out_a, f"{key} not computed: the comparison would not cover that forward"
    assert abs(float(loss_a) - float(loss_b)) <= TOLERANCE
    assert set(grads_a) == set(grads_b) and grads_a
    assert max(float((grads_a[n] - grads_b[n]).abs().max()) for n in grads_a) <= TOLERANCE


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "gemma3"])
def test_image_batch_equals_trl_path_and_encodes_each_image_once(tmp_path, family: str) -> None:
    reference = one_batch(tmp_path, family, image_rows(), reuse=False)
    reused = one_batch(tmp_path, family, image_rows(), reuse=True)
    assert_same_batch(reference, reused)
    reuse = reused[0].vision_reuse
    # 2 unique images: processed once each (not 2 x G x 2), encoded once each for generation, old, ref and policy.
    assert [p.calls for p in reuse.processors if p.argument == "images"] == [2]
    assert reuse.features_on and reuse.features.encoded == 2
    assert reference[0].vision_reuse is None


def test_video_batch_equals_trl_path_and_encodes_each_clip_once(tmp_path) -> None:
    reference = one_batch(tmp_path, "qwen2_5_vl", video_rows(), reuse=False)
    reused = one_batch(tmp_path, "qwen2_5_vl", video_rows(), reuse=True)
    assert_same_batch(reference, reused)
    reuse = reused[0].vision_reuse
    assert [p.calls for p in reuse.processors if p.argument == "videos"] == [2]
    assert reuse.features.encoded == 2


def test_video_with_sampling_rates_is_processed_once_per_clip(tmp_path) -> None:
    """The video recipe gives every row a `video_fps`: the processor then gets one metadata entry per clip, which
    must follow its clip (a clip's rate changes its temporal positions), not be handed whole to a smaller call.
    Qwen3-VL here, Qwen2.5-VL in the test above: each video family is compared with TRL's path once."""
    rows = [{**row, VIDEO_FPS_COLUMN: fps} for row, fps in zip(video_rows(), (1.0, 4.0), strict=True)]
    reference = one_batch(tmp_path, "qwen3_vl", rows, reuse=False)
    reused = one_batch(tmp_path, "qwen3_vl", rows, reuse=True)
    assert_same_batch(reference, reused)
    assert [p.calls for p in reused[0].vision_reuse.processors if p.argument == "videos"] == [2]
    assert all(p.active is False for p in reused[0].vision_reuse.processors)  # out of the processor after the batch
    assert reused[0].vision_reuse.features.encoded == 2


def test_nothing_cached_outlives_training(tmp_path) -> None:
    trainer, *_ = one_batch(tmp_path, "qwen2_5_vl", image_rows(), reuse=True)
    assert trainer.vision_reuse.features.active and trainer.vision_reuse.features._entries
    trainer.train()
    assert not trainer.vision_reuse.features.active and not trainer.vision_reuse.features._entries
    assert type(trainer.processing_class.image_processor).__name__ != "ProcessorReuse"


def test_trainable_vision_tower_is_encoded_every_time_and_gradients_match(tmp_path) -> None:
    reference = one_batch(tmp_path, "qwen2_5_vl", image_rows(), reuse=False, train_vision=True)
    reused = one_batch(tmp_path, "qwen2_5_vl", image_rows(), reuse=True, train_vision=True)
    assert_same_batch(reference, reused)
    reuse = reused[0].vision_reuse
    assert not reuse.features_on and reuse.features.encoded == 0
    assert any(".visual." in n and "lora_B" in n for n in reused[3]), "no vision LoRA gradient was compared"


@pytest.mark.parametrize("family", ["qwen2_5_vl", "gemma3"])
def test_processor_reuse_returns_the_processors_own_rows(family: str) -> None:
    _, processor, _ = load_model_and_processor(VLMModelConfig(model_name_or_path=f"tiny:{family}"))
    images = [noise(0, 40), noise(1, 56), noise(0, 40)]
    plain = processor.image_processor(images=images, return_tensors="pt")
    wrapper = ProcessorReuse(processor.image_processor, "images", "image_grid_thw")
    wrapper.active = True
    reused = wrapper(images=[images[2], images[1], images[0]], return_tensors="pt")
    again = wrapper(images=images, return_tensors="pt")  # all seen in this scope: nothing processed
    assert wrapper.calls == 2
    order = [2, 1, 0]
    if "image_grid_thw" in plain:
        rows = list(torch.split(plain["pixel_values"], plain["image_grid_thw"].prod(-1).tolist()))
        assert torch.equal(reused["pixel_values"], torch.cat([rows[i] for i in order]))
        assert torch.equal(reused["image_grid_thw"], plain["image_grid_thw"][order])
    else:
        assert torch.equal(reused["pixel_values"], plain["pixel_values"][order])
    for key in plain:
        assert torch.equal(torch.as_tensor(again[key]), torch.as_tensor(plain[key])), key
    wrapper.active = False
    wrapper.calls = 0
    wrapper(images=images, return_tensors="pt")  # outside a scope: straight through
    assert wrapper.calls == 0


def test_image_column_is_decoded_once_for_repeated_rows(tmp_path) -> None:
    path = tmp_path / "a.png"
    noise(3, 40).save(path)
    dataset = datasets.Dataset.from_dict({"image": [str(path)]}).cast_column("image", NormalizedImage())
    decode_cache.clear()
    before = decode_cache.decodes
    first, second = dataset[[0, 0, 0, 0]]["image"][:2]
    assert decode_cache.decodes - before == 1 and first is second
    noise(4, 40).save(path)  # the file changed: decoded again, new pixels
    changed = dataset[0]["image"]
    assert decode_cache.decodes - before == 2 and changed.tobytes() != first.tobytes()


def test_video_column_is_decoded_once_for_repeated_rows(tmp_path) -> None:
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(8):
            for packet in stream.encode(av.VideoFrame.from_image(noise(k, 48))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    dataset = to_video_dataset([{"video": str(path), "frame_indices": [0, 3, 6]}])
    decode_cache.clear()
    before = decode_cache.decodes
    clips = dataset[[0, 0, 0]]["video"]
    assert decode_cache.decodes - before == 1 and len(clips[0]) == 3
    assert clips[0] is not clips[1] and all(a is b for a, b in zip(clips[0], clips[1], strict=True))


def test_decode_cache_keeps_within_its_byte_budget() -> None:
    cache = DecodeCache(budget_bytes=3 * 10 * 10 * 3)
    for key in range(5):
        cache.get(key, lambda: Image.new("RGB", (10, 10)))
    assert cache.decodes == 5
    cache.get(4, lambda: Image.new("RGB", (10, 10)))  # newest kept
    cache.get(0, lambda: Image.new("RGB", (10, 10)))  # oldest dropped
    assert cache.decodes == 6


def test_features_are_not_reused_when_weights_are_sharded_across_ranks() -> None:
    """Under ZeRO-3 every rank gathers each module's weights collectively: a rank answering from the cache while
    another runs the tower would hang. DeepSpeed marks its partitioned parameters with `ds_id`."""
    from core.training.vision_reuse import VisionReuse

    model, processor, _ = load_model_and_processor(VLMModelConfig(model_name_or_path="tiny:qwen2_5_vl"))
    model.requires_grad_(False)
    reuse = VisionReuse(model, processor)
    with reuse.scope():
        assert reuse.features_on
    next(reuse.features.module.parameters()).ds_id = 0
    with reuse.scope():
        assert not reuse.features_on and not reuse.features.active
        assert reuse.processors and all(p.active for p in reuse.processors)  # processing is still reused
