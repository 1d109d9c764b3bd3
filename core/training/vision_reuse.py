"""Vision work once per unique image or clip per generation batch.

Why: GRPO repeats every prompt `num_generations` (G) times, and TRL 1.15's image path treats the G copies as G
different images: per step each unique image goes through the processor 2 x G times (prompt ids for generation, then
again for the log-prob forwards) and through the vision tower 3 x G times (generation, reference, policy; one more
for the old policy when `steps_per_generation` > 1). With LoRA on the language model only (the default) the vision
tower and projector are frozen, so every one of those passes returns the same features. This module keeps TRL's
path and makes the repeats free:

- `ProcessorReuse` wraps a processor's `image_processor` / `video_processor`: inside a `VisionReuse.scope()` the
  distinct inputs of a call (compared by pixel content) are processed once and their rows repeated, and inputs
  already processed in the scope are not processed again. The output is the same tensors, row for row.
- `FeatureReuse` wraps the model's `get_image_features` / `get_video_features`: inside a scope, the features of an
  input whose pixel rows (and grid, dtype, device and autocast state) equal those of an input already encoded are
  reused; only new inputs reach the vision tower, batched together. Reuse is on only while no vision or projector
  parameter requires a gradient (checked when each scope opens): with a trainable tower every forward runs it, so
  gradients are exactly TRL's. It is also off when the weights are sharded across ranks (ZeRO-3, FSDP), where a
  rank skipping the tower while another runs it would hang the collective weight gathering.

A scope is one generation batch: `core.training.trainer.VLMGRPOTrainer` opens one at each
`_generate_and_score_completions` and keeps it until the next, so the loss forwards of the later optimizer steps of
that batch reuse it too. Decoding once (the G repeated dataset rows share one decoded image) is
`core.data.decode_cache`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature

logger = logging.getLogger(__name__)

__all__ = ["FeatureReuse", "ProcessorReuse", "VisionReuse", "image_digest_of"]

# (processor attribute, its input keyword, its grid output key) for the inputs the trainers feed.
PROCESSOR_KINDS = (("image_processor", "images", "image_grid_thw"), ("video_processor", "videos", "video_grid_thw"))
FEATURE_METHODS = (("get_image_features", "image_grid_thw"), ("get_video_features", "video_grid_thw"))
# Processor options that hold one entry per input rather than one value for the call.
PER_INPUT_OPTIONS = ("video_metadata", "fps")


def image_digest_of(image: Image.Image) -> bytes:
    """Content key of one PIL image: mode, size and a BLAKE2b digest of its pixels."""
    digest = hashlib.blake2b(image.tobytes(), digest_size=16)
    digest.update(f"{image.mode}:{image.size}".encode())
    return digest.digest()


def _flatten(items: Any) -> list[Any] | None:
    """A processor's `images` argument (one image, a list, or a list per prompt) as a flat list; None if it holds
    something other than PIL images (arrays, tensors, URLs: left to the processor as they are)."""
    if isinstance(items, Image.Image):
        return [items]
    if not isinstance(items, (list, tuple)):
        return None
    flat: list[Any] = []
    for item in items:
        if isinstance(item, Image.Image):
            flat.append(item)
        elif isinstance(item, (list, tuple)) and all(isinstance(x, Image.Image) for x in item):
            flat.extend(item)
        else:
            return None
    return flat


def _video_list(videos: Any) -> list[list[Image.Image]] | None:
    """A processor's `videos` argument as a list of clips (lists of PIL frames); None for anything else."""
    if not isinstance(videos, (list, tuple)) or not videos:
        return None
    if all(isinstance(frame, Image.Image) for frame in videos):
        return [list(videos)]
    if all(
        isinstance(clip, (list, tuple)) and clip and all(isinstance(f, Image.Image) for f in clip) for clip in videos
    ):
        return [list(clip) for clip in videos]
    return None


def _split_rows(output: BatchFeature, count: int, grid_key: str) -> list[dict[str, Any]] | None:
    """One dict per input of a processor output: patch rows split by the grid where there is one (Qwen), else every
    per-input field indexed (Gemma-3's `pixel_values` and `num_crops`). None when a field fits neither."""
    sizes = output[grid_key].prod(-1).tolist() if grid_key in output else None
    parts: list[dict[str, Any]] = [{} for _ in range(count)]
    for key, value in output.items():
        if sizes is not None and isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == sum(sizes):
            pieces = list(torch.split(value, sizes))
        elif isinstance(value, (torch.Tensor, np.ndarray, list)) and len(value) == count:
            pieces = [value[i : i + 1] for i in range(count)]
        else:
            return None
        for part, piece in zip(parts, pieces, strict=True):
            part[key] = piece
    return parts


def _join(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The per-input rows back into one output. Rows cached from a call without `return_tensors` (lists, arrays) may
    meet rows of a call with it (tensors): then all become tensors."""
    joined: dict[str, Any] = {}
    for key in parts[0]:
        values = [part[key] for part in parts]
        if any(isinstance(v, torch.Tensor) for v in values):
            joined[key] = torch.cat(
                [torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for v in values]
            )
        elif any(isinstance(v, np.ndarray) for v in values):
            joined[key] = np.concatenate([np.asarray(v) for v in values])
        else:
            joined[key] = [item for value in values for item in value]
    return joined


class ProcessorReuse:
    """A processor's `image_processor` or `video_processor` that, while active, processes each distinct input once.

    `VisionReuse.scope` puts it in the processor's attribute for the scope only, so a processor saved, copied or
    used outside a generation batch is the real one. Every other attribute is the wrapped processor's, so the
    processor around it (and `fit_images_to_processor`, through `__wrapped__`) reads the same patch size, pixel
    bounds and merge size.
    """

    def __init__(self, inner: Any, argument: str, grid_key: str) -> None:
        self.inner, self.argument, self.grid_key = inner, argument, grid_key
        self.__wrapped__ = inner  # what core.data.vision reads the processor's type and bounds from
        self.active = False
        self.calls = 0  # inputs sent to the wrapped processor (tests, benchmark)
        self._rows: dict[tuple[bytes, str], dict[str, Any]] = {}
        self._digests: dict[int, tuple[Any, bytes]] = {}  # id -> (object kept alive, digest) within the scope
        self._refused: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def clear(self) -> None:
        self._rows.clear()
        self._digests.clear()

    def _digest(self, item: Any) -> bytes:
        known = self._digests.get(id(item))
        if known is not None and known[0] is item:
            return known[1]
        if isinstance(item, list):  # a clip
            digest = hashlib.blake2b(b"".join(image_digest_of(frame) for frame in item), digest_size=16).digest()
        else:
            digest = image_digest_of(item)
        self._digests[id(item)] = (item, digest)
        return digest

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.active:
            return self.inner(*args, **kwargs)
        positional = self.argument not in kwargs and bool(args)
        given = args[0] if positional else kwargs.get(self.argument)
        items = _video_list(given) if self.argument == "videos" else _flatten(given)
        rest = args[1:] if positional else args
        options = {k: v for k, v in kwargs.items() if k != self.argument}
        if not items:
            return self.inner(*args, **kwargs)
        # Options with one entry per input (a clip's sampling metadata) belong to that input: part of its key, and
        # only the new inputs' entries go to the processor with them.
        per_input = {k: list(v) for k, v in options.items() if k in PER_INPUT_OPTIONS and isinstance(v, (list, tuple))}
        if any(len(v) != len(items) for v in per_input.values()):
            return self._refuse(f"{sorted(per_input)} do not give one entry per input", args, kwargs)
        shared = {k: v for k, v in options.items() if k not in per_input}
        # return_tensors only changes the container of the same numbers (see _join), so it is not part of the key.
        signature = repr(sorted((k, v) for k, v in shared.items() if k != "return_tensors"))
        keys = [
            (self._digest(item), signature, repr([per_input[k][i] for k in sorted(per_input)]))
            for i, item in enumerate(items)
        ]
        new = {key: i for i, key in enumerate(keys) if key not in self._rows}
        if new:
            picked = list(new.values())
            chosen = {k: [v[i] for i in picked] for k, v in per_input.items()}
            output = self.inner(*rest, **{self.argument: [items[i] for i in picked]}, **shared, **chosen)
            parts = _split_rows(output, len(new), self.grid_key)
            if parts is None:
                return self._refuse(f"cannot split {sorted(output.keys())} per input", args, kwargs)
            self.calls += len(new)
            self._rows.update(zip(new, parts, strict=True))
        return BatchFeature(_join([self._rows[key] for key in keys]), tensor_type=kwargs.get("return_tensors"))

    def _refuse(self, why: str, args: tuple, kwargs: dict) -> Any:
        if why not in self._refused:
            self._refused.add(why)
            logger.warning("vision reuse off for %s: %s", type(self.inner).__name__, why)
        self.active = False
        return self.inner(*args, **kwargs)


def _vision_module(model: torch.nn.Module) -> torch.nn.Module | None:
    """The module whose `get_image_features` runs the vision tower (Qwen2.5-VL/Qwen3-VL/Gemma-3 `Model`, under
    any PEFT/DeepSpeed wrapping): the first one with that method and a `visual` or `vision_tower` child."""
    for module in model.modules():
        if hasattr(module, "get_image_features") and (hasattr(module, "visual") or hasattr(module, "vision_tower")):
            return module
    return None


class FeatureReuse:
    """`get_image_features` / `get_video_features` of a VLM answering repeated inputs from a per-scope cache.

    An input is one image's (or clip's) patch rows: `pixel_values` split by the grid's `prod(-1)` (Qwen), or one
    `pixel_values[i]` (Gemma-3). It matches a cached one when grid, shape, dtype, device and the autocast state are
    equal and the pixels are `torch.equal` (a sum and a weighted sum pick the candidate; equality decides), so a
    reused feature is always that of identical pixels. Output per input: its `pooler_output` rows and, for Qwen3-VL,
    its rows of every `deepstack_features` level.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.active = False
        self.encoded = 0  # inputs that reached the vision tower inside scopes (tests, benchmark)
        self._entries: dict[tuple, list[tuple[torch.Tensor, dict[str, Any]]]] = {}
        self._nested = False
        self._output_class: Any = None  # the tower's output type, for a call answered wholly from the cache
        self.originals: dict[str, Callable[..., Any]] = {}
        for name, grid_key in FEATURE_METHODS:
            original = getattr(module, name, None)
            if original is not None:
                self.originals[name] = original
                setattr(module, name, self._wrap(original, grid_key))

    def vision_trainable(self) -> bool:
        """Whether any parameter outside the language model (vision tower, projector) requires a gradient."""
        return any(
            p.requires_grad
            for n, p in self.module.named_parameters()
            if not n.startswith(("language_model.", "lm_head"))
        )

    def sharded(self) -> bool:
        """Whether the vision weights are sharded across ranks (DeepSpeed ZeRO-3, FSDP). Then every rank must run the
        tower in the same forwards (each module's weights are gathered collectively), and a cache hit on one rank
        while another misses would hang the job, so features are not reused there (processing still is)."""
        first = next(self.module.parameters(), None)
        if first is not None and hasattr(first, "ds_id"):
            return True
        return any(
            "FullyShardedDataParallel" in type(m).__name__ or "FSDP" in type(m).__name__ for m in self.module.modules()
        )

    def clear(self) -> None:
        self._entries.clear()

    def _wrap(self, original: Callable[..., Any], grid_key: str) -> Callable[..., Any]:
        def reusing(pixel_values: torch.Tensor, grid: torch.Tensor | None = None, **kwargs: Any) -> Any:
            if grid is None:
                grid = kwargs.pop(grid_key, None)
            if not self.active or self._nested:
                return original(pixel_values, grid, **kwargs) if grid is not None else original(pixel_values, **kwargs)
            self._nested = True  # Qwen3-VL's get_video_features calls get_image_features: cache once
            try:
                return self._features(original, pixel_values, grid, kwargs)
            finally:
                self._nested = False

        return reusing

    def _features(self, original: Callable[..., Any], pixel_values: torch.Tensor, grid: Any, kwargs: dict) -> Any:
        if grid is not None:
            items = list(torch.split(pixel_values, grid.prod(-1).tolist()))
            grids = [tuple(row) for row in grid.tolist()]
        else:
            items = list(pixel_values.split(1))
            grids = [tuple(item.shape) for item in items]
        device = pixel_values.device.type
        autocast = (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device) if device != "meta" else None)
        keys = [self._key(item, g, autocast) for item, g in zip(items, grids, strict=True)]
        found: list[dict[str, Any] | None] = [self._lookup(key, item) for key, item in zip(keys, items, strict=True)]
        missing = [i for i, hit in enumerate(found) if hit is None]
        first_of: dict[int, int] = {}  # repeats inside this call: encoded once, with the first
        unique: list[int] = []
        for i in missing:
            twin = next((j for j in unique if keys[j] == keys[i] and torch.equal(items[j], items[i])), None)
            if twin is None:
                unique.append(i)
            else:
                first_of[i] = twin
        template = None
        if unique:
            batch = torch.cat([items[i] for i in unique])
            if grid is not None:
                out = original(batch, grid[unique], **kwargs)
            else:
                out = original(batch, **kwargs)
            template = out
            for i, feature in zip(
                unique, self._per_input(out, [grids[i] for i in unique], grid is not None), strict=True
            ):
                self._entries.setdefault(keys[i], []).append((items[i], feature))
                found[i] = feature
            self.encoded += len(unique)
        for i, twin in first_of.items():
            found[i] = found[twin]
        return self._assemble(found, grid is not None, template, kwargs)

    @staticmethod
    def _key(item: torch.Tensor, grid: tuple, autocast: tuple) -> tuple:
        flat = item.detach().reshape(-1).double()
        weights = torch.arange(1, flat.numel() + 1, device=flat.device, dtype=torch.float64) % 97
        return (grid, tuple(item.shape), item.dtype, item.device, autocast, float(flat.sum()), float(flat @ weights))

    def _lookup(self, key: tuple, item: torch.Tensor) -> dict[str, Any] | None:
        for pixels, feature in self._entries.get(key, ()):
            if torch.equal(pixels, item):
                return feature
        return None

    def _per_input(self, out: Any, grids: list[tuple], has_grid: bool) -> list[dict[str, Any]]:
        pooled = out.pooler_output
        if has_grid:  # Qwen: already a tuple, one tensor of merged tokens per input
            merge = self._merge_size()
            tokens = [int(np.prod(g)) // merge**2 for g in grids]
            per_pooled = [p.detach() for p in pooled]
        else:  # Gemma-3: (inputs, tokens, hidden)
            tokens = None
            per_pooled = [p.detach() for p in pooled.split(1)]
        features = [{"pooler_output": p} for p in per_pooled]
        deepstack = getattr(out, "deepstack_features", None)
        if deepstack is not None and tokens is not None:
            levels = [level.detach().split(tokens) for level in deepstack]
            for i, feature in enumerate(features):
                feature["deepstack_features"] = [level[i] for level in levels]
        return features

    def _merge_size(self) -> int:
        visual = getattr(self.module, "visual", None)
        return int(
            getattr(visual, "spatial_merge_size", None)
            or getattr(getattr(visual, "config", None), "spatial_merge_size", 2)
        )

    def _assemble(self, found: list, has_grid: bool, template: Any, kwargs: dict) -> Any:
        pooled = [f["pooler_output"] for f in found]
        fields: dict[str, Any] = {"pooler_output": tuple(pooled) if has_grid else torch.cat(pooled)}
        if "deepstack_features" in found[0]:
            levels = len(found[0]["deepstack_features"])
            fields["deepstack_features"] = [
                torch.cat([f["deepstack_features"][k] for f in found]) for k in range(levels)
            ]
        output_class = type(template) if template is not None else self._output_class
        self._output_class = output_class
        output = output_class(**fields)
        return output.to_tuple() if kwargs.get("return_dict") is False else output


class VisionReuse:
    """What the trainer installs: processor reuse on the processing class, feature reuse on the model."""

    def __init__(self, model: torch.nn.Module, processing_class: Any) -> None:
        self.processing_class = processing_class
        self.processors: list[ProcessorReuse] = []
        self._attributes: list[str] = []
        for attribute, argument, grid_key in PROCESSOR_KINDS:
            inner = getattr(processing_class, attribute, None)
            if inner is not None:
                self.processors.append(ProcessorReuse(inner, argument, grid_key))
                self._attributes.append(attribute)
        module = _vision_module(model)
        self.features = FeatureReuse(module) if module is not None else None
        self.features_on = False

    def release(self) -> None:
        """End feature reuse until the next scope (training or evaluation over): nothing cached outlives the batches
        it was computed for, whatever later changes the weights (a loaded checkpoint, an unfrozen tower)."""
        if self.features is not None:
            self.features.active = False
            self.features.clear()
        self.features_on = False

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Processor reuse for the block (the wrappers are in the processor only inside it); feature reuse from here
        until the next scope opens (see module doc)."""
        for attribute, processor in zip(self._attributes, self.processors, strict=True):
            processor.clear()
            processor.active = True
            setattr(self.processing_class, attribute, processor)
        if self.features is not None:
            self.features.clear()
            self.features_on = not self.features.vision_trainable() and not self.features.sharded()
            self.features.active = self.features_on
        try:
            yield
        finally:
            for attribute, processor in zip(self._attributes, self.processors, strict=True):
                setattr(self.processing_class, attribute, processor.inner)
                processor.active = False
                processor.clear()
