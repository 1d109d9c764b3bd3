"""A stand-in for vLLM's offline engine (`vllm.LLM`), for testing on machines without CUDA what TRL and core send it.

vLLM needs a CUDA GPU; this package takes its place on `PYTHONPATH` (tests/test_vllm_generation.py) and keeps its
contract as TRL 1.15's `VLLMGeneration` uses it (colocate mode):
- `LLM(model=folder, **engine_kwargs)` loads the model *and the processor* from `folder`, as vLLM does: a folder with
  no tokenizer/processor fails here as it fails there. `mm_processor_kwargs` min/max pixels are applied to that
  processor, as vLLM passes them to the Hugging Face processor.
- `generate([{"prompt_token_ids", "multi_modal_data"}], SamplingParams)`: each image is processed by the engine's
  processor, and a prompt whose run of image tokens differs from the count that processor gives is rejected (vLLM
  rejects such prompts too). Completions are sampled from the tiny Hugging Face model with the sampling parameters,
  `logit_bias` applied, and returned as vLLM `RequestOutput`s with each sampled token's processed log-prob.
- weights pushed by TRL (`...model_runner.model.load_weights([(name, tensor)])`) are copied into that model; an
  unknown name raises, as in vLLM.
Everything received is appended as JSON lines to `$VLLM_STAND_IN_LOG` for the test to read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch

__version__ = "0.31.0"


def _log(event: str, **payload: Any) -> None:
    path = os.environ.get("VLLM_STAND_IN_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"event": event, **payload}, default=str) + "\n")


class SamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.n = kwargs.pop("n", 1)
        self.temperature = kwargs.pop("temperature", 1.0)
        self.top_p = kwargs.pop("top_p", 1.0)
        self.top_k = kwargs.pop("top_k", 0)
        self.min_p = kwargs.pop("min_p", 0.0)
        self.repetition_penalty = kwargs.pop("repetition_penalty", 1.0)
        self.max_tokens = kwargs.pop("max_tokens", 16)
        self.logprobs = kwargs.pop("logprobs", None)
        self.logit_bias = {int(k): float(v) for k, v in (kwargs.pop("logit_bias", None) or {}).items()}
        self.extra = kwargs

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()}


@dataclass
class Logprob:
    logprob: float
    rank: int = 1
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None
    text: str = ""


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


class _Weights:
    """`llm.llm_engine.model_executor.driver_worker.model_runner.model`, as TRL reaches it to push weights."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._params = dict(model.named_parameters())
        self._params.update(dict(model.named_buffers()))
        self.loaded: dict[str, str] = {}

    def load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> set[str]:
        for name, tensor in weights:
            if name not in self._params:
                raise KeyError(f"vLLM stand-in: no parameter named {name!r} in the served model")
            with torch.no_grad():
                self._params[name].copy_(tensor.to(self._params[name].dtype))
            digest = hashlib.sha256(tensor.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]
            self.loaded[name] = digest
        return {n for n, _ in weights}


def _ns(**kwargs: Any) -> Any:
    return type("NS", (), kwargs)()


class LLM:
    def __init__(self, model: str, **engine_kwargs: Any) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model_path = model
        self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32).eval()
        self.processor = AutoProcessor.from_pretrained(model)  # vLLM builds its multimodal processor from the folder
        bounds = engine_kwargs.get("mm_processor_kwargs") or {}
        image_processor = getattr(self.processor, "image_processor", None)
        if bounds and image_processor is not None:
            size = dict(image_processor.size)
            size["shortest_edge"] = bounds.get("min_pixels", size.get("shortest_edge"))
            size["longest_edge"] = bounds.get("max_pixels", size.get("longest_edge"))
            image_processor.size = size
        self.weights = _Weights(self.model)
        runner = _ns(model=self.weights)
        self.llm_engine = _ns(
            model_executor=_ns(driver_worker=_ns(model_runner=runner)),
            model_config=_ns(max_model_len=engine_kwargs.get("max_model_len") or 4096),
        )
        self.generator = torch.Generator().manual_seed(int(engine_kwargs.get("seed", 0)))
        _log(
            "init", model=model, engine_kwargs={k: v for k, v in engine_kwargs.items()}, files=sorted(os.listdir(model))
        )

    def reset_prefix_cache(self) -> None:  # TRL calls it after each weight sync
        _log(
            "sync",
            loaded=len(self.weights.loaded),
            digest=hashlib.sha256(json.dumps(sorted(self.weights.loaded.items())).encode()).hexdigest()[:16],
        )

    def sleep(self, level: int = 1) -> None:
        _log("sleep", level=level)

    def wake_up(self, tags: list[str] | None = None) -> None:
        _log("wake_up", tags=tags)

    # ------------------------------------------------------------------------------------------------ generation
    def _image_inputs(self, ids: list[int], images: list[Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        config = self.model.config
        image_token_id = config.image_token_id
        runs, count = [], 0
        for token in [*ids, None]:
            if token == image_token_id:
                count += 1
            elif count:
                runs.append(count)
                count = 0
        processed = self.processor.image_processor(images=images, return_tensors="pt")
        merge = getattr(self.processor.image_processor, "merge_size", 1)
        if "image_grid_thw" in processed:
            expected = [int(g.prod()) // merge**2 for g in processed["image_grid_thw"]]
        else:  # fixed-size processors: the processor's own count per image
            expected = [int(self.processor.image_seq_length)] * len(images)
        record = {"image_sizes": [list(im.size) for im in images], "image_token_runs": runs, "expected": expected}
        if runs != expected:
            raise ValueError(
                f"vLLM stand-in: the prompt holds image-token runs {runs} but the engine's processor makes {expected} "
                f"tokens for images of sizes {record['image_sizes']}"
            )
        return dict(processed), record

    def generate(self, prompts: list[dict[str, Any]], sampling_params: SamplingParams, use_tqdm: bool = False):
        params = sampling_params
        outputs = []
        generator = self.generator
        for prompt in prompts:
            ids = list(prompt["prompt_token_ids"])
            mm = prompt.get("multi_modal_data") or {}
            if "video" in mm:
                raise NotImplementedError("vLLM stand-in: video input is not part of the tested contract")
            images = mm.get("image")
            images = [images] if images is not None and not isinstance(images, list) else images
            inputs: dict[str, Any] = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids))}
            record: dict[str, Any] = {"image_sizes": [], "image_token_runs": [], "expected": []}
            if images:
                image_inputs, record = self._image_inputs(ids, images)
                inputs.update(image_inputs)
                token_types = (inputs["input_ids"] == self.model.config.image_token_id).long()
                inputs["mm_token_type_ids"] = token_types
                inputs["token_type_ids"] = token_types
            completions = [self._sample(inputs, params, generator) for _ in range(params.n)]
            outputs.append(
                RequestOutput(
                    prompt_token_ids=ids,
                    outputs=[
                        CompletionOutput(index=i, token_ids=tokens, logprobs=lps)
                        for i, (tokens, lps) in enumerate(completions)
                    ],
                )
            )
            _log(
                "generate",
                prompt_token_ids=ids,
                **record,
                sampling=params.as_dict(),
                completion_ids=[c[0] for c in completions],
            )
        return outputs

    @torch.no_grad()
    def _sample(self, inputs: dict[str, Any], params: SamplingParams, generator: torch.Generator):
        import inspect

        accepted = inspect.signature(self.model.forward).parameters
        model_inputs = {k: v for k, v in inputs.items() if k in accepted}
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        tokens: list[int] = []
        logprobs: list[dict[int, Logprob]] = []
        ids = model_inputs.pop("input_ids")
        mask = model_inputs.pop("attention_mask")
        extra = dict(model_inputs)
        for _ in range(params.max_tokens):
            step = {"input_ids": ids, "attention_mask": mask, **extra}
            logits = self.model(**step).logits[0, -1].float()
            for token_id, bias in params.logit_bias.items():
                logits[token_id] += bias
            logits = logits / max(params.temperature, 1e-6)
            logp = torch.log_softmax(logits, dim=-1)
            token = int(torch.multinomial(logp.exp(), 1, generator=generator))
            tokens.append(token)
            logprobs.append({token: Logprob(logprob=float(logp[token]))})
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            mask = torch.cat([mask, torch.ones(1, 1)], dim=1)
            for key in ("mm_token_type_ids", "token_type_ids"):
                if key in extra:
                    extra[key] = torch.cat([extra[key], torch.zeros(1, 1, dtype=extra[key].dtype)], dim=1)
            if token in eos:
                break
        return tokens, logprobs


__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput", "Logprob"]
