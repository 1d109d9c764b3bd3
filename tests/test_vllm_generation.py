"""vLLM generation (`use_vllm: true`, colocate) receives exactly what the trainer's log-prob forwards receive.

vLLM needs CUDA, so these tests put a stand-in for it on PYTHONPATH (tests/stand_ins/vllm, see its docstring): it keeps
vLLM's contract as TRL 1.15 uses it — the engine loads model *and processor* from a folder, rejects a prompt whose
image-token run differs from what its processor makes of the image, samples with the given parameters and returns
processed log-probs — and logs every call. A real vLLM step per recipe needs a GPU (benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from transformers import AutoProcessor

from core.data.vision import model_image_size
from core.testing.tiny import resolve_model_path
from core.training.models import set_pixel_bounds
from core.training.vllm_generation import (
    PLACEHOLDER_LOGIT_BIAS,
    fit_images_to_processor,
    needs_policy_folder,
    suppress_placeholders,
    write_policy_folder,
)
from tests.helpers import REPO_ROOT, load_recipe_module, subprocess_env

STAND_IN = REPO_ROOT / "tests" / "stand_ins"


def image_tokens(processor, image: Image.Image) -> int:
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"]
    return int(grid.prod()) // processor.image_processor.merge_size**2


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_an_image_above_max_pixels_gets_the_same_tokens_from_the_trainer_and_from_a_processor_with_other_bounds(
    family: str,
) -> None:
    path = resolve_model_path(f"tiny:{family}")
    trainer_processor = AutoProcessor.from_pretrained(path)
    set_pixel_bounds(trainer_processor, None, 12_544)  # the config's max_pixels: a 112x112 budget
    served = AutoProcessor.from_pretrained(path)  # what a vLLM server started from the checkpoint folder uses
    set_pixel_bounds(served, None, 1_000_000)
    image = Image.new("RGB", (400, 300), (10, 200, 10))
    assert image_tokens(trainer_processor, image) != image_tokens(served, image)  # the bug, unfitted

    [row] = fit_images_to_processor(trainer_processor, [{"image": image, "prompt": "p"}])
    fitted = row["image"]
    assert fitted.size == model_image_size(trainer_processor, 400, 300) and fitted.size != image.size
    assert fitted.size[0] * fitted.size[1] <= 12_544
    tokens = image_tokens(trainer_processor, image)
    assert image_tokens(trainer_processor, fitted) == image_tokens(served, fitted) == tokens
    assert image.size == (400, 300)  # the dataset's row is not modified


def test_fixed_size_processors_get_their_images_unchanged() -> None:
    processor = AutoProcessor.from_pretrained(resolve_model_path("tiny:gemma3"))
    image = Image.new("RGB", (400, 300))
    [row] = fit_images_to_processor(processor, [{"images": [image]}])
    assert row["images"][0] is image


def test_placeholders_are_biased_out_and_a_users_own_bias_is_kept() -> None:
    config = type("C", (), {"image_token_id": 7, "video_token_id": 9})()
    kwargs = suppress_placeholders({"logit_bias": {"7": 5.0}, "seed": 3}, config)
    assert kwargs == {"logit_bias": {7: 5.0, 9: PLACEHOLDER_LOGIT_BIAS}, "seed": 3}
    assert suppress_placeholders(None, type("T", (), {})()) == {}


@pytest.mark.parametrize("pipeline", ["qwen_image_edit", "qwen_image"])
def test_a_text_encoder_policy_is_served_from_a_folder_with_tokenizer_processor_and_template(tmp_path, pipeline):
    from core.diffusion.pipeline import load_pipeline

    pipe = load_pipeline(f"tiny:{pipeline}")
    processing_class = getattr(pipe, "processor", None) or pipe.tokenizer
    assert needs_policy_folder(pipe.text_encoder)
    out = write_policy_folder(pipe.text_encoder, processing_class, tmp_path / "vllm_policy")
    source = Path(resolve_model_path(f"tiny:{pipeline}")) / "text_encoder"
    weights = sorted(p.name for p in out.iterdir() if p.name.endswith(".safetensors"))
    assert weights and all((out / w).is_symlink() and (out / w).resolve() == (source / w).resolve() for w in weights)
    served = AutoProcessor.from_pretrained(out)  # what vLLM loads; a bare text_encoder/ folder has no tokenizer
    assert served.tokenizer("a red cube")["input_ids"] == pipe.tokenizer("a red cube")["input_ids"]
    assert served.image_processor is not None
    if pipeline == "qwen_image_edit":
        assert served.chat_template == processing_class.chat_template
        assert dict(served.image_processor.size) == dict(processing_class.image_processor.size)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == pipe.text_encoder.config.model_type
    assert not needs_policy_folder(load_tiny_model("qwen2_5_vl"))  # a checkpoint folder is served as it is


def load_tiny_model(family: str):
    from core.training.config import VLMModelConfig
    from core.training.models import load_model

    return load_model(VLMModelConfig(model_name_or_path=f"tiny:{family}", dtype="float32"))


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def stand_in_env(log: Path) -> dict[str, str]:
    env = subprocess_env(VLLM_STAND_IN_LOG=str(log))
    env["PYTHONPATH"] = os.pathsep.join([str(STAND_IN), env.get("PYTHONPATH", str(REPO_ROOT))])
    return env


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "gemma3"])
def test_vllm_completions_flow_unchanged_into_rewards_and_log_probs(tmp_path, family: str) -> None:
    log = tmp_path / "vllm.jsonl"
    max_pixels = [] if family == "gemma3" else ["12544"]  # Gemma-3 resizes every image to 896x896 (here 32x32)
    driver = [sys.executable, str(STAND_IN / "vllm_contract_run.py"), family, str(tmp_path / "run"), "400", "300"]
    proc = subprocess.run(
        [*driver, *max_pixels],
        cwd=REPO_ROOT,
        env=stand_in_env(log),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "contract.json").read_text())
    events = read_log(log)
    [init] = [e for e in events if e["event"] == "init"]
    generated = [e for e in events if e["event"] == "generate"]
    syncs = [e for e in events if e["event"] == "sync"]
    model = load_tiny_model(family)

    # the engine: TRL's settings, the trainer's pixel bounds, the configured max model length
    assert init["engine_kwargs"]["max_model_len"] == 512
    if family != "gemma3":
        assert init["engine_kwargs"]["mm_processor_kwargs"]["max_pixels"] == 12544
    # what vLLM received: the image at the trainer processor's size, as many image tokens as its processor makes
    assert len(generated) == 8  # 2 steps x 4 completions, one prompt each in colocate mode
    for event in generated:
        if family != "gemma3":
            assert event["image_sizes"] == [record["fitted"]] and record["fitted"] != [400, 300]
        assert event["image_token_runs"] == event["expected"] and len(event["expected"]) == 1
        bias = {int(k): v for k, v in event["sampling"]["logit_bias"].items()}
        placeholders = [getattr(model.config, k, None) for k in ("image_token_id", "video_token_id")]
        assert bias == {t: -100.0 for t in placeholders if t is not None}
        assert event["sampling"]["max_tokens"] == 8 and event["sampling"]["temperature"] == 1.0
    # what came back: the same ids reach the reward and the log-prob forwards, in order
    sampled = [ids for e in generated for ids in e["completion_ids"]]
    assert record["reward_completions"] == sampled
    forwards = record["logprob_input_ids"]  # per step: the old-policy pass at generation, then the loss pass
    assert len(forwards) == 16 and forwards[0:4] == sampled[0:4] and forwards[8:12] == sampled[4:8]
    assert sorted(forwards[4:8]) == sorted(sampled[0:4]) and sorted(forwards[12:16]) == sorted(sampled[4:8])
    # the trainer's log-probs of vLLM's samples agree with vLLM's own: same inputs on both sides
    for entry in (e for e in record["log_history"] if "sampling/sampling_logp_difference/max" in e):
        assert entry["sampling/sampling_logp_difference/max"] < 0.05  # measured: <= 0.002 (Qwen), 0.011 (Gemma-3)
    # weights pushed before each generation batch, and the update of step 1 reached the engine for step 2
    assert len(syncs) == 2 and syncs[0]["loaded"] == syncs[1]["loaded"] > 0
    assert syncs[0]["digest"] != syncs[1]["digest"]


def recipe_run(recipe: str, tmp_path: Path, *flags: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    recipe_dir = REPO_ROOT / "recipes" / recipe
    log = tmp_path / "vllm.jsonl"
    cmd = [sys.executable, str(recipe_dir / "train.py"), "--config", str(recipe_dir / "config_smoke.yaml")]
    cmd += [*flags, "--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--use_vllm", "true"]
    cmd += ["--vllm_max_model_length", "1024", "--disable_tqdm", "true"]
    # The vLLM contract, not learning: no warm start, short answers (test_smoke_learns covers them; CI time).
    cmd += ["--warm_start_steps", "0", "--max_completion_length", "24"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=stand_in_env(log), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc, read_log(log)


def recipe_data(recipe: str, tmp_path: Path) -> list[str]:
    data = load_recipe_module(recipe, "sample")
    if recipe == "grounding":
        data.make_sample(tmp_path / "d", num_samples=10, num_eval=2, seed=0)
        return ["--train_file", str(tmp_path / "d" / "train.jsonl"), "--eval_file", str(tmp_path / "d" / "eval.jsonl")]
    if recipe == "image2code":
        splits = data.make_sample(tmp_path / "d", num_samples=8, seed=0, num_eval=2, num_test=0)
        return ["--train_file", str(splits["train"]), "--eval_file", str(splits["eval"])]
    if recipe == "mathvista":
        return ["--dataset_name", str(data.make_sample(tmp_path / "d", num_samples=8, seed=3)["dataset"])]
    if recipe == "image_edit":
        return ["--dataset", str(data.make_sample(tmp_path / "d", num_samples=5, num_syn=1)["dataset"])]
    mmmg = data.make_sample(tmp_path / "d")["dataset"]
    return ["--dataset", str(mmmg), "--reward_funcs", "knowledge_fidelity"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["grounding", "image2code", "mathvista", "image_edit", "mmmg"])
def test_each_recipe_trains_a_step_with_vllm_generation(tmp_path, recipe: str) -> None:
    _, events = recipe_run(recipe, tmp_path, *recipe_data(recipe, tmp_path))
    [init] = [e for e in events if e["event"] == "init"]
    generated = [e for e in events if e["event"] == "generate"]
    assert generated and [e["event"] for e in events].count("sync") == 1
    assert init["engine_kwargs"]["max_model_len"] == 1024
    files = set(init["files"])
    assert {"tokenizer_config.json", "config.json"} <= files and any(f.endswith(".safetensors") for f in files)
    if recipe in ("image_edit", "mmmg"):  # the pipeline's text encoder, served from the assembled folder
        assert Path(init["model"]) == tmp_path / "run" / "vllm_policy"
    for event in generated:
        assert event["image_token_runs"] == event["expected"]
        assert len(event["image_sizes"]) == (0 if recipe == "mmmg" else 1)  # Qwen-Image's t2i prompt is text only
        assert all(v == -100.0 for v in event["sampling"]["logit_bias"].values()) and event["sampling"]["logit_bias"]


def test_the_policy_folder_is_reused_when_in_place_and_rebuilt_for_other_weights(tmp_path) -> None:
    from core.diffusion.pipeline import load_pipeline

    edit, t2i = load_pipeline("tiny:qwen_image_edit"), load_pipeline("tiny:qwen_image")
    out = tmp_path / "vllm_policy"
    write_policy_folder(edit.text_encoder, edit.processor, out)
    marker = out / "config.json"
    first = marker.stat().st_mtime_ns
    write_policy_folder(edit.text_encoder, edit.processor, out)  # a second rank: the folder in place is kept
    assert marker.stat().st_mtime_ns == first
    assert [p.name for p in tmp_path.iterdir()] == ["vllm_policy"]  # no staging folder left behind
    write_policy_folder(t2i.text_encoder, t2i.tokenizer, out)  # a start with other weights: rebuilt
    source = Path(resolve_model_path("tiny:qwen_image")) / "text_encoder"
    assert {p.resolve().parent for p in out.iterdir() if p.is_symlink()} == {source.resolve()}
