"""Tiny Gemma 3: a byte-fallback BPE tokenizer trained offline on a built-in synthetic corpus, saved with the family's
real tokenizer class and special tokens; Gemma 3's prompt format; a 2-layer text model and a 2-layer SigLIP tower."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from core.testing.tiny.common import HEAD_DIM, SEED, TEXT, TEXT_KV_HEADS, init_model, save_model

_BPE_VOCAB_SIZE = 1280  # trained pieces incl. the initial alphabet; special tokens come on top

# Synthetic corpus for the Gemma tokenizer: what the recipes emit (numbers, boxes, tags, JSON, code), tokenized sanely.
_COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "gray", "pink", "brown", "cyan"]
_SHAPES = ["circle", "square", "triangle", "rectangle", "star", "hexagon", "line", "dot", "arrow", "cube", "box"]
_POSITIONS = ["left of", "right of", "above", "below", "next to", "inside", "on top of", "behind", "in front of"]
_REGIONS = ["top left", "top right", "bottom left", "bottom right", "center", "middle", "top", "bottom", "edge"]
_NOUNS = ["image", "picture", "chart", "table", "diagram", "photo", "screen", "button", "window", "icon", "graph"]
_VERBS = ["shows", "contains", "has", "displays", "includes", "depicts"]
_WORDS = (
    "the a an of to in is are was were be it that this these those and or not with for as on at by from which what "
    "how many much where when who why answer question image count total first second third final result step "
    "reason think look find compute check because therefore so then first next finally correct wrong option choice "
    "number value point box coordinate label object size width height area length angle degree percent sum "
    "difference product ratio average largest smallest more less than equal yes no true false none all each "
    "user assistant system model helpful you your i we they he she there here have has had do does did can could "
    "will would should may might must shall about above after again against before between both during into "
    "through under until up down out over only own same some such very just also most other new old good great "
    "small large big long short high low left right near far full empty open close start end top bottom center "
    "side front back time year day way thing man woman child people world life hand part place case week company "
    "system group problem fact person point home water room mother area money story month lot right study book "
    "eye job word business issue side kind head house service friend father power hour game line end member law "
    "car city community name president team minute idea kid body information back parent face others level office "
    "door health art war history party result change morning reason research girl guy moment air teacher force "
    "education foot boy age policy music market sense nation plan college interest death experience effect use "
    "class control care field development role effort rate heart drug show leader light voice wife police mind "
    "price report decision son view relationship town road arm difference thanks value building action model "
    "season society tax director position player record paper space ground form event official matter center "
    "couple site project activity star table need court oil situation cost industry figure street video image"
).split()
_CHAT_LINES = [
    "You are a helpful assistant.",
    "You are a helpful assistant. Think step by step.",
    "user",
    "assistant",
    "system",
    "model",
    "Picture 1: Picture 2: Video 1:",
    "Output the final answer in <answer> </answer> tags.",
    "First think about the reasoning process in <think> </think> tags, then give the answer.",
]


def _corpus_lines() -> list[str]:
    """Deterministic varied English-ish lines (fixed seed, sorted) used to train the tiny Gemma tokenizer."""
    rng = random.Random(SEED)
    lines: list[str] = []

    def num(hi: int = 1000) -> int:
        return rng.randrange(0, hi)

    for _ in range(4000):
        c1, c2 = rng.choice(_COLORS), rng.choice(_COLORS)
        s1, s2 = rng.choice(_SHAPES), rng.choice(_SHAPES)
        kind = rng.randrange(16)
        if kind == 0:
            line = f"The {c1} {s1} is {rng.choice(_POSITIONS)} the {c2} {s2}."
        elif kind == 1:
            line = f"There are {num(20)} {s1}s in the {rng.choice(_NOUNS)}. How many are {c1}?"
        elif kind == 2:
            line = f"The answer is ({num()}, {num()})."
        elif kind == 3:
            box = [num(), num(), num(), num()]
            line = json.dumps({"bbox_2d": box, "label": f"{c1} {s1}"})
        elif kind == 4:
            line = f"[{num()}, {num()}, {num()}, {num()}]"
        elif kind == 5:
            line = (
                f"<think>I see a {c1} {s1} in the {rng.choice(_REGIONS)}. It is {rng.choice(_POSITIONS)} "
                f"the {c2} {s2}, so the count is {num(10)}.</think><answer>{num(10)}</answer>"
            )
        elif kind == 6:
            line = f"<answer>({num()}, {num()})</answer>"
        elif kind == 7:
            a, b = num(100), num(100)
            op = rng.choice(["+", "-", "*", "/"])
            result = {"+": a + b, "-": a - b, "*": a * b, "/": a / max(b, 1)}[op]
            line = f"{a} {op} {b} = {result:.2f}" if op == "/" else f"{a} {op} {b} = {result}"
        elif kind == 8:
            line = f"def area_{s1}(w, h):\n    return w * h  # {c1}\nx = [{num(10)}, {num(10)}, {num(10)}]"
        elif kind == 9:
            opts = rng.sample(_COLORS, 4)
            choices = "\n".join(f"{k}. {o}" for k, o in zip("ABCD", opts, strict=True))
            line = f"Which color is the {s1}?\n{choices}"
            line += f"\nAnswer: {rng.choice('ABCD')}"
        elif kind == 10:
            line = f"Question: What is the {rng.choice(_WORDS)} of the {s1}? Answer: {num(100)}"
        elif kind == 11:
            line = f'{{"point_2d": [{num()}, {num()}], "label": "{rng.choice(_NOUNS)}"}}'
        elif kind == 12:
            line = f"The {rng.choice(_NOUNS)} {rng.choice(_VERBS)} {num(50)} {c1} {s1}s and {num(50)} {c2} {s2}s."
        elif kind == 13:
            line = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(5, 15))).capitalize() + "."
        elif kind == 14:
            line = f"Step {num(10)}: {rng.choice(_WORDS)} = {num(100)}.{num(100):02d}; total: {num(1000)}"
        else:
            line = f"Click the {c1} {rng.choice(_NOUNS)} at ({num(1920)}, {num(1080)}). Width: {num(640)}px."
        lines.append(line)
    lines.extend(_CHAT_LINES * 20)
    lines.sort()
    return lines


_GEMMA_HEAD = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
_GEMMA_IMAGE = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]


def _train_bpe(pre_tokenizer: Any, normalizer: Any, alphabet: list[str], lines: list[str]) -> tuple[dict, list]:
    """Train a BPE model on ``lines`` and return (vocab, merges) ordered by id.

    The trainer breaks count ties by the pair itself, so with a fixed, sorted corpus the result is identical across
    runs and thread counts (checked by the determinism test via the saved ``tokenizer.json``).
    """
    from tokenizers import Tokenizer, models, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE, min_frequency=2, initial_alphabet=alphabet, show_progress=False, special_tokens=[]
    )
    tok.train_from_iterator(lines, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(sorted(model["vocab"].items(), key=lambda kv: kv[1]))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return vocab, merges


def _gemma_tokenizer(chat_template: str) -> Any:
    """SentencePiece-style BPE (``▁`` for spaces, byte fallback) saved as ``GemmaTokenizer`` like Gemma 3.

    ``GemmaTokenizer`` rebuilds its normalizer/pre-tokenizer on load and keeps only vocab + merges, so the pieces are
    trained under the same normalisation (spaces -> ``▁``); the training-only split keeps merges inside words and
    digits single, as in the real Gemma vocabulary.
    """
    from tokenizers import normalizers, pre_tokenizers
    from transformers import AddedToken, GemmaTokenizer

    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("▁", behavior="merged_with_next"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Split("\n", behavior="isolated"),
        ]
    )
    alphabet = [chr(c) for c in range(33, 127)] + ["▁", "\n"]
    trained, merges = _train_bpe(pre, normalizers.Replace(" ", "▁"), alphabet, _corpus_lines())
    vocab: dict[str, int] = {}
    for tok in _GEMMA_HEAD + [f"<0x{b:02X}>" for b in range(256)] + list(trained) + _GEMMA_IMAGE:
        vocab.setdefault(tok, len(vocab))
    tokenizer = GemmaTokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        mask_token="<mask>",
        add_bos_token=True,
        add_eos_token=False,
        boi_token="<start_of_image>",
        eoi_token="<end_of_image>",
        image_token="<image_soft_token>",
        model_max_length=131072,
        spaces_between_special_tokens=False,
    )
    specials = _GEMMA_HEAD + _GEMMA_IMAGE
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials], special_tokens=True)
    tokenizer.chat_template = chat_template
    return tokenizer


# Written from Gemma 3's documented prompt format.
GEMMA3_CHAT_TEMPLATE = """\
{%- macro render(content) -%}
{%- if content is string -%}{{ content | trim }}
{%- else -%}{%- for part in content -%}
{%- if part.type == 'image' or 'image' in part or 'image_url' in part -%}<start_of_image>
{%- elif 'text' in part -%}{{ part.text | trim }}
{%- endif -%}
{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{{ bos_token }}
{%- if messages | length > 0 and messages[0].role == 'system' -%}
{%- set system_prefix = render(messages[0].content) + '\n\n' -%}
{%- set turns = messages[1:] -%}
{%- else -%}
{%- set system_prefix = '' -%}
{%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
<start_of_turn>{{ 'model' if message.role == 'assistant' else message.role }}
{% if loop.first %}{{ system_prefix }}{% endif %}{{ render(message.content) }}<end_of_turn>
{% endfor -%}
{%- if add_generation_prompt -%}
<start_of_turn>model
{% endif -%}
"""


_GEMMA_IMAGE_SIZE = 64
_GEMMA_PATCH = 16
_GEMMA_MM_TOKENS = 4  # 4x4 patches average-pooled to 2x2


def build(out: Path) -> None:
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    tokenizer = _gemma_tokenizer(GEMMA3_CHAT_TEMPLATE)
    tid = tokenizer.convert_tokens_to_ids
    text_config = Gemma3TextConfig(
        **TEXT,
        num_key_value_heads=TEXT_KV_HEADS,
        head_dim=HEAD_DIM,
        query_pre_attn_scalar=HEAD_DIM,
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
        },
        pad_token_id=tid("<pad>"),
        bos_token_id=tid("<bos>"),
        eos_token_id=[tid("<eos>"), tid("<end_of_turn>")],
    )
    vision_config = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=_GEMMA_IMAGE_SIZE,
        patch_size=_GEMMA_PATCH,
        vision_use_head=False,
    )
    config = Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=_GEMMA_MM_TOKENS,
        boi_token_index=tid("<start_of_image>"),
        eoi_token_index=tid("<end_of_image>"),
        image_token_index=tid("<image_soft_token>"),
        tie_word_embeddings=True,
        dtype="float32",
    )
    model = init_model(Gemma3ForConditionalGeneration, config)
    generation = {
        "bos_token_id": tid("<bos>"),
        "eos_token_id": [tid("<end_of_turn>"), tid("<eos>")],
        "pad_token_id": tid("<pad>"),
        "do_sample": True,
        "top_k": 64,
        "top_p": 0.95,
    }
    save_model(model, generation, out)

    image_processor = Gemma3ImageProcessor(
        size={"height": _GEMMA_IMAGE_SIZE, "width": _GEMMA_IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pan_and_scan=False,
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=_GEMMA_MM_TOKENS,
    )
    processor.save_pretrained(out)
