"""Warm start for tiny test models: a few supervised steps on each row's reference answer before GRPO.

Why: GRPO learns only from reward differences inside a group of completions. A randomly initialised tiny model
samples near-uniformly over the 151,936-token Qwen vocabulary (its logits span about +-1.3, entropy ~ln V), so no
completion ever parses, every group scores the same, every advantage is 0 and a smoke run never produces a gradient:
a person who edits a reward cannot see whether it gives signal. DeepSeek-R1 calls the fix a "cold start" (supervised
steps on well-formed answers before RL, arXiv:2501.12948 section 2.3.1); here it is a test fixture: the smoke configs
set `warm_start_steps`, the tiny policy learns the answer FORMAT from `reference_completion` (the same answers the
start-up reward check scores), and its samples then differ in the parts the reward judges (the numbers, the option,
the program), so groups have reward variance and LoRA gets a gradient.

Tiny models only: the loss is a sampled softmax (the answers' own tokens plus `NEGATIVES` random other ids, with the
log-Q correction of Jean et al. 2015, arXiv:1412.2007) so no step builds a [tokens, 151,936] logit matrix (about
0.1 s a step on 2 idle CPU cores); a real model needs real SFT (TRL's SFTTrainer), and
`core.training.config.parse_config`
refuses one. The result is cached under the tiny-model cache by the inputs' hash, so the suite's many smoke runs pay
it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_model

from core.evaluation.loading import encode_rows
from core.training.model_ids import cache_dir as tiny_cache_dir

logger = logging.getLogger(__name__)

NEGATIVES = 4096  # random non-answer ids per step in the sampled softmax
LEARNING_RATE = 5e-3
BATCH_SIZE = 4
_MAX_ROWS = 64
_WEIGHTS = "model.safetensors"
WARM_START_VERSION = 1  # part of the cache key: a change to the loss or the steps must not reuse older folders


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / _WEIGHTS).is_file()


def _eos_id(model: Any, tokenizer: Any) -> int:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(eos, (list, tuple)):
        eos = eos[0]
    return int(eos if eos is not None else tokenizer.eos_token_id)


def _batches(
    model: Any, processor: Any, rows: list[dict[str, Any]], answers: list[str], batch_size: int, kwargs: dict
) -> list[dict[str, Any]]:
    """Prompt (as TRL encodes it) + answer + EOS per row, with labels only on the answer and the EOS."""
    tokenizer = getattr(processor, "tokenizer", processor)
    eos = _eos_id(model, tokenizer)
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk, texts = rows[start : start + batch_size], answers[start : start + batch_size]
        enc = dict(encode_rows(processor, chunk, **kwargs))  # the ids the trainer and evaluation use
        answer_ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts]
        width = max(map(len, answer_ids))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        tail = torch.full((len(chunk), width), pad, dtype=torch.long)
        tail_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, ids in enumerate(answer_ids):
            tail[i, : len(ids)], tail_mask[i, : len(ids)] = torch.tensor(ids), 1
        prompt_len = enc["input_ids"].shape[1]
        enc["input_ids"] = torch.cat([enc["input_ids"], tail], dim=1)
        enc["attention_mask"] = torch.cat([enc["attention_mask"], tail_mask], dim=1)
        if "mm_token_type_ids" in enc:  # answer tokens are text (type 0)
            enc["mm_token_type_ids"] = torch.cat([enc["mm_token_type_ids"], torch.zeros_like(tail)], dim=1)
        if "token_type_ids" in enc:
            enc["token_type_ids"] = torch.cat([enc["token_type_ids"], torch.zeros_like(tail)], dim=1)
        labels = torch.where(tail_mask.bool(), tail, torch.full_like(tail, -100))
        batches.append({"inputs": enc, "labels": labels, "prompt_len": prompt_len})
    return batches


def _sampled_softmax_loss(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Cross-entropy of `labels` [n] from `hidden` [n, d] against the output embedding `weight` [V, d], over the
    labels' own ids plus NEGATIVES random others whose logits carry log((V - |targets|) / NEGATIVES), so the sampled
    partition function estimates the full one."""
    vocab = weight.shape[0]
    targets = torch.unique(labels)
    negatives = torch.randint(0, vocab, (NEGATIVES,), generator=generator)
    negatives = negatives[~torch.isin(negatives, targets)]
    ids = torch.cat([targets, negatives])
    logits = hidden @ weight[ids].T
    correction = math.log(max(vocab - len(targets), 1) / max(len(negatives), 1))
    logits[:, len(targets) :] += correction
    position = torch.searchsorted(targets, labels)
    return torch.nn.functional.cross_entropy(logits, position)


def _last_hidden(model: Any, inputs: dict[str, Any]) -> torch.Tensor:
    out = model.model(**inputs, use_cache=False)
    return out.last_hidden_state


def _cache_key(model: Any, batches: list[dict[str, Any]], steps: int, learning_rate: float, seed: int) -> str:
    digest = hashlib.sha256()
    digest.update(
        json.dumps([WARM_START_VERSION, steps, learning_rate, seed, NEGATIVES, model.config.to_json_string()]).encode()
    )
    for name, param in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().numpy().tobytes())
    for batch in batches:
        for key in sorted(batch["inputs"]):
            value = batch["inputs"][key]
            if isinstance(value, torch.Tensor):
                digest.update(key.encode())
                digest.update(value.detach().float().cpu().numpy().tobytes())
        digest.update(batch["labels"].numpy().tobytes())
    return digest.hexdigest()[:20]


def _warm_start(
    model: Any,
    batches: list[dict[str, Any]],
    *,
    steps: int,
    learning_rate: float,
    seed: int,
) -> float:
    """AdamW steps on every weight of `model` outside the vision tower (Gemma-3's projector included), in place;
    returns the last loss."""
    trained = []
    for name, param in model.named_parameters():  # the vision tower frozen: backward stops at its output
        param.requires_grad_("visual" not in name and "vision" not in name)
        if param.requires_grad:
            trained.append(param)
    generator = torch.Generator().manual_seed(seed)
    weight = model.get_output_embeddings().weight
    model.train()
    optimizer = torch.optim.AdamW(trained, lr=learning_rate, weight_decay=0.0)
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        batch = batches[step % len(batches)]
        hidden = _last_hidden(model, batch["inputs"])[:, batch["prompt_len"] - 1 : -1]
        mask = batch["labels"] != -100
        loss = _sampled_softmax_loss(hidden[mask], weight, batch["labels"][mask], generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    model.requires_grad_(True)
    return float(loss.item())


def warm_start_checkpoint(
    model_args: Any,
    processor: Any,
    rows: Sequence[Mapping[str, Any]],
    write_answer: Callable[[Mapping[str, Any]], str],
    *,
    chat_template_kwargs: dict[str, Any] | None = None,
    learning_rate: float = LEARNING_RATE,
    batch_size: int = BATCH_SIZE,
    seed: int = 0,
) -> None:
    """With `model_args.warm_start_steps` > 0: the tiny policy after that many supervised steps on the first rows'
    prompts followed by `write_answer(row)` and EOS (labels: the answer and EOS), saved as a checkpoint folder
    `<tiny cache>/warm_start/<hash of weights, inputs and settings>/`, built once and then reused; sets
    `model_args.model_name_or_path` to it, so `load_model` loads it and the LoRA adapter records it as its base
    (evaluation loads that base). `rows` are the GRPO dataset's rows (`prompt`, plus `image`/`images`/`video` as TRL
    reads them). No-op when warm_start_steps is 0."""
    from core.training.models import (
        load_model,  # core.training.models imports the tiny-model fixtures; keep this module light
    )

    steps = model_args.warm_start_steps
    if not steps:
        return
    if not rows:
        raise ValueError("--warm_start_steps needs at least one training row")
    model = load_model(model_args)
    source = Path(model.config.name_or_path)
    rows = [dict(rows[i]) for i in range(min(len(rows), _MAX_ROWS))]
    answers = [write_answer(row) for row in rows]
    batches = _batches(model, processor, rows, answers, batch_size, chat_template_kwargs or {})
    folder = tiny_cache_dir() / "warm_start" / _cache_key(model, batches, steps, learning_rate, seed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # One builder per folder: the ranks of a launch (and parallel test workers) wait on the lock, and the first one
    # in builds; the others then find the complete folder. The weights are written with safetensors directly, not
    # save_pretrained, which writes nothing on a rank other than 0 once torch.distributed is up.
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_complete(folder):
            logger.info("warm start: %d steps on the reference answers, reusing %s", steps, folder)
        else:
            loss = _warm_start(model, batches, steps=steps, learning_rate=learning_rate, seed=seed)
            tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete folder of an older build
            # the tiny folder's tokenizer and processor files, then this model's config and weights
            shutil.copytree(source, tmp, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.pt"))
            model.config.save_pretrained(tmp)
            model.generation_config.save_pretrained(tmp)
            save_model(model, str(tmp / _WEIGHTS))
            for entry in tmp.rglob("*"):  # a shared cache: readable by every user, as core.testing.tiny's folders
                entry.chmod(0o755 if entry.is_dir() else 0o644)
            tmp.chmod(0o755)
            tmp.rename(folder)
            logger.info(
                "warm start: %d steps on %d reference answers (last loss %.3f) -> %s", steps, len(rows), loss, folder
            )
    model_args.model_name_or_path = str(folder)
