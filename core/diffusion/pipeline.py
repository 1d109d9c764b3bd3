"""Qwen-Image(-Edit) as a frozen renderer for GRPO on its Qwen2.5-VL text encoder.

The image-editing (``QwenImageEditPipeline``) and text-to-image (``QwenImagePipeline``) recipes train only the VLM that
the pipeline uses as text encoder; the DiT (``transformer``) and the ``vae`` stay frozen. A GRPO step then goes:

1. the policy samples completions for the *pipeline's own* encoding prompt (:func:`pipeline_prompt_messages` renders,
   through the VLM's chat template, to exactly ``pipeline.prompt_template_encode.format(instruction)``);
2. :func:`completion_prompt_embeds` runs the VLM over that prompt followed by the sampled completion ids and applies
   the pipeline's own post-processing (last hidden states, system turn dropped, padded with a mask), so with an empty
   completion it reproduces ``pipeline.encode_prompt`` exactly (for the edit pipeline: as it encodes with the image's
   3-D positions, see :func:`completion_prompt_embeds`);
3. :func:`run_edit` / :func:`run_t2i` render images from those embeddings with the frozen pipeline (no text encoding
   inside the pipeline), deterministically per seed, for a judge to score.

The number of leading tokens the pipeline drops is hard-coded in diffusers (``prompt_template_encode_start_idx``: 64
for the edit template, 34 for text-to-image, valid for the real Qwen2.5-VL tokenizer only); here it is computed from
the tokenizer (:func:`system_token_count`) and :func:`load_pipeline` corrects the pipeline attribute if they differ
(they do for the tiny offline pipelines, whose tokenizer is not Qwen's).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from diffusers import DiffusionPipeline, QwenImageEditPipeline, QwenImagePipeline
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions
from PIL import Image
from trl.models import unwrap_model_for_generation

from core.ranges import NON_NEGATIVE, Range
from core.testing.tiny import resolve_model_path

logger = logging.getLogger(__name__)

SYSTEM_TURN = "<|im_start|>system\n"
USER_TURN = "<|im_start|>user\n"
END_TURN = "<|im_end|>\n"
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
# QwenImageEditPipeline.__call__ sizes the condition image to this many pixels (aspect ratio kept, sides rounded to 32).
DEFAULT_CONDITION_AREA = 1024 * 1024
# QwenImagePipeline refuses max_sequence_length > 1024 and truncates prompt embeddings to it.
MAX_T2I_SEQUENCE_LENGTH = 1024
# Processor outputs with one value per token (the rest, e.g. pixel_values / image_grid_thw, are per image): re-laid out
# with the ids when a completion is appended. The names TRL's GRPOTrainer extends over the completion the same way.
PER_TOKEN_FIELDS = ("mm_token_type_ids", "token_type_ids")
# Model ids of real-size architectures with random weights (core.training.architectures), e.g.
# random:Qwen/Qwen-Image-Edit.
RANDOM_PREFIX = "random:"

# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class RenderMemoryArguments:
    """Memory switches of the reward renderer (VAE tiling/slicing, DiT offload) and the rendered-image log, shared by
    the recipes that render with a Qwen-Image pipeline (image_edit, mmmg); every field is a YAML key and a `--flag`."""

    vae_tiling: bool = field(
        default=False,
        metadata={
            "help": "Encode/decode with the VAE tile by tile (256 px tiles, 64 px blended overlap; diffusers' "
            "AutoencoderKLQwenImage.enable_tiling): VAE memory stops growing with the image area."
        },
    )
    vae_slicing: bool = field(
        default=False, metadata={"help": "Encode/decode one image of a batch at a time (same images, less memory)."}
    )
    vae_tile_size: int | None = field(
        default=None,
        metadata={
            "range": Range(8, None),
            "help": "VAE tile side in pixels (multiple of 8; stride 3/4 of it). Default: diffusers' 256.",
        },
    )
    offload_dit: bool = field(
        default=False,
        metadata={
            "help": "Keep the frozen DiT (~41 GB bf16) in host memory and copy it to the GPU for each reward render "
            "only: frees it while the policy generates and trains, costs one host-to-device copy per render and "
            "~41 GB of host RAM per rank."
        },
    )
    log_images_steps: int = field(
        default=10,
        metadata={
            "range": NON_NEGATIVE,
            "help": "Every N optimizer steps, rank 0 writes a grid of the images it rendered to "
            "<output_dir>/samples/step-XXXXX.png (+ .json with the completions) and to TensorBoard when report_to "
            "includes it. 0: off.",
        },
    )


def load_pipeline(
    name_or_path: str,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    edit: bool | None = None,
    *,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    vae_tile_size: int | None = None,
    offload_dit: bool = False,
    **components: Any,
) -> DiffusionPipeline:
    """Load a Qwen-Image(-Edit) pipeline (``tiny:qwen_image_edit`` / ``tiny:qwen_image`` resolve offline;
    ``random:Qwen/Qwen-Image-Edit`` / ``random:Qwen/Qwen-Image`` build the real-size architecture with random weights
    directly on ``device``) with the DiT and VAE frozen (``requires_grad_(False)``, eval) and the progress bar off,
    since it only renders rewards.

    ``edit``: ``True`` loads ``QwenImageEditPipeline``, ``False`` ``QwenImagePipeline``, ``None`` the class named in
    ``model_index.json``. ``components`` go to ``from_pretrained``: e.g. ``text_encoder=None`` skips loading the
    pipeline's own VLM copy when the trainer holds the policy (the tokenizer/processor still load).

    The pipeline's ``text_encoder`` is put in eval mode but not frozen: whether it is the policy is the caller's call.
    ``prompt_template_encode_start_idx`` is checked against the tokenizer and corrected on a mismatch
    (:func:`check_drop_count`), so the pipeline's own ``encode_prompt`` stays right for non-Qwen tokenizers too.

    Memory (issue 14: the real DiT is ~41 GB in bf16): ``vae_tiling`` / ``vae_slicing`` / ``vae_tile_size`` go to
    :func:`configure_vae`; ``offload_dit`` leaves the DiT in host memory instead of moving it to ``device`` (every
    other component moves), for a ``PolicyRenderer(offload_dit=True)`` that lends it to the GPU for each render only.
    """
    if name_or_path.startswith(RANDOM_PREFIX):
        pipeline = _random_pipeline(name_or_path, dtype, device, edit, components)
    else:
        pipeline_cls: type[DiffusionPipeline]
        if edit is None:
            pipeline_cls = DiffusionPipeline
        else:
            pipeline_cls = QwenImageEditPipeline if edit else QwenImagePipeline
        pipeline = pipeline_cls.from_pretrained(resolve_model_path(name_or_path), dtype=dtype, **components)
    if not hasattr(pipeline, "prompt_template_encode"):
        raise ValueError(f"{name_or_path} is a {type(pipeline).__name__}, not a Qwen-Image(-Edit) pipeline")
    if offload_dit:
        for name, component in pipeline.components.items():
            if isinstance(component, torch.nn.Module):
                component.to("cpu" if name == "transformer" else device)
    else:
        pipeline.to(device)
    for name in ("transformer", "vae"):
        getattr(pipeline, name).requires_grad_(False).eval()
    if getattr(pipeline, "text_encoder", None) is not None:
        pipeline.text_encoder.eval()
    pipeline.set_progress_bar_config(disable=True)
    configure_vae(pipeline, tiling=vae_tiling, slicing=vae_slicing, tile_size=vae_tile_size)
    check_drop_count(pipeline, on_mismatch="fix")
    return pipeline


def _random_pipeline(
    name: str, dtype: torch.dtype, device: str | torch.device, edit: bool | None, components: dict[str, Any]
) -> DiffusionPipeline:
    """``random:Qwen/Qwen-Image(-Edit)``: the real-size pipeline with random weights, built directly on ``device``
    by ``core.training.architectures.build_pipeline`` (no download; for measuring memory and step time on a GPU)."""
    from core.training.architectures import architecture, build_pipeline

    facts = architecture(name)
    wanted = {None: None, True: "QwenImageEditPipeline", False: "QwenImagePipeline"}[edit]
    if facts.get("kind") != "pipeline" or (wanted is not None and facts["pipeline_class"] != wanted):
        raise ValueError(f"{name} is not a {wanted or 'Qwen-Image(-Edit) pipeline'}")
    if components:
        raise ValueError(f"{name}: component overrides ({', '.join(components)}) are not supported for random weights")
    return build_pipeline(name, device=device, dtype=dtype)


def configure_vae(pipeline: Any, tiling: bool = False, slicing: bool = False, tile_size: int | None = None) -> None:
    """Switch the pipeline VAE's memory savers on or off (both off: diffusers' default, what the pipeline does).

    diffusers 0.42's ``AutoencoderKLQwenImage`` implements both, for encoding (the edit pipeline VAE-encodes the
    condition image) and decoding (every rendered image):

    * ``tiling``: images larger than a tile (default 256 x 256 pixels, stride 192, i.e. tiles overlapping by 64
      pixels and blended) are encoded/decoded tile by tile, so the VAE's activation memory no longer grows with the
      image area (at 1024 x 1024: 25 tiles of 256 x 256 instead of one 1024 x 1024 pass). The result differs slightly
      from the untiled one where tiles are blended. ``tile_size`` (pixels, a multiple of the VAE's 8x downsampling;
      the stride is 3/4 of it) sets another tile size, e.g. 32 for the tiny 64 x 64 smoke renders so that the tiled
      code path runs on CPU.
    * ``slicing``: a batch is encoded/decoded one image at a time (same result, activation memory of one image).

    A VAE without these switches is refused with a ValueError rather than silently left as it is.
    """
    vae = pipeline.vae
    for wanted, flag, what in ((tiling, "use_tiling", "tiling"), (slicing, "use_slicing", "slicing")):
        if wanted and not hasattr(vae, flag):
            raise ValueError(f"{type(vae).__name__} does not support VAE {what} (no '{flag}' switch in diffusers)")
    if tile_size is not None and not tiling:
        raise ValueError("vae_tile_size is set but vae_tiling is off; set vae_tiling: true or drop vae_tile_size")
    if tiling:
        if tile_size is None:
            vae.enable_tiling()
        else:
            ratio = int(getattr(vae, "spatial_compression_ratio", 8))
            if tile_size < 2 * ratio or tile_size % ratio:
                raise ValueError(
                    f"vae_tile_size must be a multiple of {ratio} and at least {2 * ratio}, got {tile_size}"
                )
            stride = max(ratio, (tile_size * 3 // 4) // ratio * ratio)
            parameters = inspect.signature(vae.enable_tiling).parameters
            if "tile_sample_min_height" not in parameters:
                raise ValueError(f"{type(vae).__name__}.enable_tiling takes no tile size; leave vae_tile_size unset")
            vae.enable_tiling(
                tile_sample_min_height=tile_size,
                tile_sample_min_width=tile_size,
                tile_sample_stride_height=stride,
                tile_sample_stride_width=stride,
            )
    elif hasattr(vae, "use_tiling"):
        vae.disable_tiling()
    if slicing:
        vae.enable_slicing()
    elif hasattr(vae, "use_slicing"):
        vae.disable_slicing()


class HostOffload:
    """A frozen module whose weights live in host memory and are lent to a device only for the duration of
    :meth:`lent` (the DiT between reward renders: ~41 GB of GPU memory freed while the policy trains).

    Entering ``lent(device)`` puts a copy of every parameter and buffer on ``device`` in its place (non-blocking from
    pinned memory); leaving it puts the original host tensors back, which were never released or changed, and drops
    the device copies (the CUDA cache is emptied, so vLLM and the training step get the memory back). Nothing is
    copied back: the module is frozen, so the host copy is still exact (a module with a trainable parameter is
    refused). On CPU the loan is a plain copy (pointless there, but the same code path; the smoke configs run it).

    ``pin_memory`` (default: when CUDA is available) page-locks the host copies once, which makes each loan a fast
    DMA (~2 s for 41 GB at ~25 GB/s on PCIe 5); if the OS refuses to pin that much, a warning and unpinned copies.
    Every rank holds its own host copy: 8 ranks x 41 GB of host RAM for the real DiT.
    """

    def __init__(self, module: torch.nn.Module, pin_memory: bool | None = None) -> None:
        trainable = [name for name, p in module.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError(f"HostOffload is for frozen modules; {len(trainable)} trainable, e.g. {trainable[0]}")
        module.to("cpu")
        self.module = module
        if torch.cuda.is_available() if pin_memory is None else pin_memory:
            try:
                for tensor in {id(t): t for t in (*module.parameters(), *module.buffers())}.values():
                    tensor.data = tensor.data.pin_memory()
            except RuntimeError as error:  # e.g. the locked-memory limit
                logger.warning("could not pin the offloaded module's host memory (%s); loans will be slower", error)
        # Every (submodule, "_parameters" | "_buffers", name, host tensor) slot; the loan swaps what the slots hold.
        self._slots = [
            (submodule, kind, name, tensor)
            for submodule in module.modules()
            for kind in ("_parameters", "_buffers")
            for name, tensor in getattr(submodule, kind).items()
            if tensor is not None
        ]
        self._lent_to: torch.device | None = None

    @property
    def lent_to(self) -> torch.device | None:
        """The device the module is lent to right now (inside :meth:`lent`), else None."""
        return self._lent_to

    @contextlib.contextmanager
    def lent(self, device: str | torch.device) -> Iterator[torch.nn.Module]:
        """The module with its weights on ``device`` for the duration; its own host tensors back afterwards, also on
        an exception. Nested loans to the same device reuse the outer one."""
        device = torch.device(device)
        if self._lent_to is not None:
            if self._lent_to != device:
                raise RuntimeError(f"module already lent to {self._lent_to}, cannot lend it to {device} as well")
            yield self.module
            return
        copies: dict[int, torch.Tensor] = {}  # tied weights: one copy each
        try:
            for submodule, kind, name, home in self._slots:
                if id(home) not in copies:
                    data = home.detach().to(device, non_blocking=home.is_pinned(), copy=True)
                    copies[id(home)] = torch.nn.Parameter(data, requires_grad=False) if kind == "_parameters" else data
                getattr(submodule, kind)[name] = copies[id(home)]
            self._lent_to = device
            yield self.module
        finally:
            for submodule, kind, name, home in self._slots:
                getattr(submodule, kind)[name] = home
            self._lent_to = None
            copies.clear()
            if device.type == "cuda":
                torch.cuda.empty_cache()


def is_edit_pipeline(pipeline_or_template: Any) -> bool:
    """Whether the encoding template feeds an input image to the text encoder (Qwen-Image-Edit) or not."""
    return IMAGE_PLACEHOLDER in _template(pipeline_or_template)


# ---------------------------------------------------------------------------------------------------------------------
# Template, system prompt and the dropped-token count
# ---------------------------------------------------------------------------------------------------------------------


def _template(pipeline_or_template: Any) -> str:
    template = (
        pipeline_or_template
        if isinstance(pipeline_or_template, str)
        else getattr(pipeline_or_template, "prompt_template_encode", None)
    )
    if not isinstance(template, str) or "{}" not in template:
        raise ValueError(
            f"no encoding template ('prompt_template_encode' with a '{{}}' slot) in {pipeline_or_template!r}"
        )
    if not template.startswith(SYSTEM_TURN) or END_TURN + USER_TURN not in template:
        raise ValueError(f"encoding template is not '<|im_start|>system ... <|im_start|>user ...': {template!r}")
    return template


def _tokenizer(pipeline: Any) -> Any:
    """The tokenizer the pipeline encodes with: the processor's for the edit pipeline, else ``pipeline.tokenizer``."""
    processor = getattr(pipeline, "processor", None)
    tokenizer = getattr(processor, "tokenizer", None) or getattr(pipeline, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"{type(pipeline).__name__} has neither a processor with a tokenizer nor a tokenizer")
    return tokenizer


def template_system_prompt(pipeline_or_template: Any) -> str:
    """The system text of the pipeline's encoding template, so the GRPO prompt can carry the very same system turn."""
    template = _template(pipeline_or_template)
    return template[len(SYSTEM_TURN) : template.index(END_TURN + USER_TURN)]


def system_token_count(pipeline: Any) -> int:
    """Number of leading tokens ``_get_qwen_prompt_embeds`` must drop: the system turn plus the user-turn header.

    Computed with the pipeline's tokenizer from the template text up to and including ``<|im_start|>user\\n`` (what
    stays starts with the user content: the image placeholder for the edit template, the instruction for
    text-to-image). For the real Qwen2.5-VL tokenizer this must be 64 for Qwen-Image-Edit and 34 for Qwen-Image, the
    values diffusers hard-codes in ``prompt_template_encode_start_idx``. ``pipeline`` may be any object with
    ``prompt_template_encode`` and a ``tokenizer`` (or ``processor.tokenizer``).

    The prefix is tokenized on its own and checked to be a prefix of the tokenized template, which holds because the
    split falls right after the ``\\n`` that ends a turn header (special tokens cut BPE merges there).
    """
    template = _template(pipeline)
    tokenizer = _tokenizer(pipeline)
    end = template.index(USER_TURN) + len(USER_TURN)
    prefix = tokenizer(template[:end])["input_ids"]
    full = tokenizer(template.format(""))["input_ids"]
    if list(full[: len(prefix)]) != list(prefix):
        raise ValueError("the template's system turn does not tokenize the same alone and inside the template")
    return len(prefix)


def check_drop_count(pipeline: Any, on_mismatch: Literal["fix", "warn", "raise"] = "raise") -> int:
    """Compare :func:`system_token_count` with the pipeline's hard-coded ``prompt_template_encode_start_idx``.

    A mismatch means the pipeline's own ``encode_prompt`` drops the wrong tokens (a different tokenizer or template
    than diffusers assumed): ``"raise"`` a ValueError, ``"warn"`` and keep it, or ``"fix"``: warn and set the
    attribute to the computed count. Returns the computed count.
    """
    computed = system_token_count(pipeline)
    hard_coded = getattr(pipeline, "prompt_template_encode_start_idx", None)
    if hard_coded != computed:
        message = (
            f"{type(pipeline).__name__}.prompt_template_encode_start_idx is {hard_coded}, but its tokenizer gives "
            f"{computed} tokens for the template's system turn + '<|im_start|>user\\n'"
        )
        if on_mismatch == "raise":
            raise ValueError(message)
        if on_mismatch == "fix":
            logger.warning("%s; using %d (expected for tokenizers other than Qwen2.5-VL's)", message, computed)
            pipeline.prompt_template_encode_start_idx = computed
        else:
            logger.warning(message)
    return computed


# ---------------------------------------------------------------------------------------------------------------------
# GRPO prompts
# ---------------------------------------------------------------------------------------------------------------------


def edit_prompt_messages(instruction: str, system: str) -> list[dict[str, Any]]:
    """Conversational GRPO prompt whose chat-template rendering (``add_generation_prompt=True``) is exactly
    ``QwenImageEditPipeline.prompt_template_encode.format(instruction)`` when ``system`` is
    :func:`template_system_prompt` of it: the completions are then sampled in the context the pipeline encodes."""
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]},
    ]


def t2i_prompt_messages(prompt: str, system: str) -> list[dict[str, Any]]:
    """Text-to-image counterpart of :func:`edit_prompt_messages` (no image part), for ``QwenImagePipeline``."""
    return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]


def pipeline_prompt_messages(pipeline_or_template: Any, instruction: str) -> list[dict[str, Any]]:
    """:func:`edit_prompt_messages` or :func:`t2i_prompt_messages`, whichever the pipeline's template calls for,
    with the template's own system prompt."""
    system = template_system_prompt(pipeline_or_template)
    if is_edit_pipeline(pipeline_or_template):
        return edit_prompt_messages(instruction, system)
    return t2i_prompt_messages(instruction, system)


def condition_images(pipeline: Any, images: Sequence[Image.Image], target_area: int | None = None) -> list[Image.Image]:
    """The input images as ``QwenImageEditPipeline.__call__`` hands a single PIL image to the text encoder: resized
    (the pipeline's VaeImageProcessor, Lanczos) to ``calculate_dimensions(target_area, width / height)``, i.e. about
    ``target_area`` pixels with sides rounded to 32 (``None``: the pipeline's 1024 * 1024).

    Pass these to :func:`completion_prompt_embeds` so the VLM sees what it sees inside the pipeline; :func:`run_edit`
    takes the original images (the pipeline resizes them itself, to the same size for the VAE). The processor then
    applies its own pixel bounds on top (for the real model: up to ~1370 vision tokens at 1024 * 1024).
    """
    area = DEFAULT_CONDITION_AREA if target_area is None else target_area
    resized = []
    for image in images:
        width, height, _ = calculate_dimensions(area, image.size[0] / image.size[1])
        resized.append(pipeline.image_processor.resize(image, height, width))
    return resized


# ---------------------------------------------------------------------------------------------------------------------
# Prompt embeddings from GRPO completions
# ---------------------------------------------------------------------------------------------------------------------


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def completion_prompt_embeds(
    text_encoder: Any,
    processor: Any,
    pipeline_template: str,
    drop_idx: int,
    instructions: Sequence[str],
    images: Sequence[Image.Image] | None,
    completion_ids: Sequence[Sequence[int] | torch.Tensor],
    *,
    logits_to_keep: int | None = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``prompt_embeds`` and ``prompt_embeds_mask`` for the pipeline from GRPO's own completions (never regenerated).

    One forward of ``text_encoder`` over ``pipeline_template.format(instruction)`` tokens (with the image inputs the
    processor builds for ``images``, as ``_get_qwen_prompt_embeds`` does; pass :func:`condition_images` for the edit
    pipeline, ``None`` for text-to-image) followed by ``completion_ids`` (unpadded, as generated), with
    ``output_hidden_states=True``; then exactly the pipeline's post-processing: last hidden states split per sample by
    the attention mask, the first ``drop_idx`` tokens (:func:`system_token_count`) dropped, zero-padded to the batch
    maximum with a 0/1 ``long`` mask. With empty completions this equals ``pipeline.encode_prompt`` (mask all ones is
    returned as a tensor, where the pipeline returns ``None``); a completion of n tokens appends n positions and, the
    model being causal, leaves the prefix unchanged.

    The forward gets every field the processor returned, as the policy's own forwards in TRL's GRPOTrainer do, so the
    hidden states are the policy's for what it sampled. That includes ``mm_token_type_ids``, from which transformers 5
    builds the image's 3-D (M-RoPE) positions (transformers 4 found the image tokens in the ids); diffusers 0.42's
    edit pipelines do not pass it (huggingface/diffusers#14194), so their own ``encode_prompt`` there gives the image
    sequential positions and differs from this (and from what the real DiT was trained with). Text-only prompts are
    unaffected: their positions are 1-D either way.

    ``processor``: the edit pipeline's processor, or for text-to-image a processor or the tokenizer. No decorator:
    gradients flow when called with grad enabled (call it under ``torch.no_grad()`` for rewards). ``logits_to_keep=1``
    spares the full-vocabulary logits the hidden states do not need (``None``: do not pass it, for a forward that
    rejects it). Outputs are in the text encoder's dtype, on its device; the pipeline's ``tokenizer_max_length``
    truncation (1024 tokens after the drop, text-to-image only) is not applied.
    """
    n = len(instructions)
    if len(completion_ids) != n or (images is not None and len(images) != n):
        raise ValueError(
            f"{n} instructions, {len(completion_ids)} completions and "
            f"{'no' if images is None else len(images)} images: one of each per sample is needed"
        )
    tokenizer = getattr(processor, "tokenizer", processor)
    config = getattr(text_encoder, "config", None)
    media_ids = {getattr(config, key, None) for key in ("image_token_id", "video_token_id")} - {None}
    completions = [torch.as_tensor(ids, dtype=torch.long).flatten().cpu() for ids in completion_ids]
    for i, ids in enumerate(completions):
        if media_ids and torch.isin(ids, torch.tensor(sorted(media_ids))).any():
            raise ValueError(
                f"completion {i} contains an image/video placeholder token, which the text encoder would try to fill "
                "with vision features; suppress those tokens during generation"
            )

    texts = [pipeline_template.format(instruction) for instruction in instructions]
    kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
    if images is not None:
        kwargs["images"] = list(images)
    inputs = processor(**kwargs)
    prompt_mask = inputs["attention_mask"].bool()
    rows = [
        torch.cat([ids[mask], completion.to(ids.dtype)])
        for ids, mask, completion in zip(inputs["input_ids"], prompt_mask, completions, strict=True)
    ]
    too_short = [i for i, row in enumerate(rows) if row.numel() <= drop_idx]
    if too_short:
        raise ValueError(f"samples {too_short} have no tokens left after dropping the first {drop_idx}")

    # Re-pad prompt + completion on the tokenizer's side, as the pipeline's own call pads the prompt alone.
    longest = max(row.numel() for row in rows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((n, longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, longest), dtype=torch.long)
    spans = [
        slice(longest - row.numel(), longest) if tokenizer.padding_side == "left" else slice(0, row.numel())
        for row in rows
    ]
    for i, (row, span) in enumerate(zip(rows, spans, strict=True)):
        input_ids[i, span] = row
        attention_mask[i, span] = 1

    device = _model_device(text_encoder)
    forward: dict[str, Any] = {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "output_hidden_states": True,
    }
    # Everything else the processor returned goes to the forward, as TRL's GRPOTrainer passes it to the policy's:
    # image tensors as they are, per-token fields re-laid out with the ids. Qwen2.5-VL needs `mm_token_type_ids` for
    # the image's 3-D (M-RoPE) positions: without it transformers 5 silently falls back to sequential positions
    # (Qwen2_5_VLModel.compute_3d_position_ids), i.e. a different conditioning than the one the policy sampled under.
    for key, value in inputs.items():
        if key in ("input_ids", "attention_mask") or value is None:
            continue
        if key in PER_TOKEN_FIELDS:
            value = _relayout_per_token(value, prompt_mask, completions, spans, longest)
        forward[key] = value.to(device) if isinstance(value, torch.Tensor) else value
    if logits_to_keep is not None:
        forward["logits_to_keep"] = logits_to_keep
    hidden_states = text_encoder(**forward).hidden_states[-1]
    return _masked_hidden_to_embeds(hidden_states, forward["attention_mask"], drop_idx)


def _relayout_per_token(
    values: torch.Tensor,
    prompt_mask: torch.Tensor,
    completions: Sequence[torch.Tensor],
    spans: Sequence[slice],
    longest: int,
) -> torch.Tensor:
    """A per-token processor field (``mm_token_type_ids``: 0 text, 1 image, 2 video) laid out like the re-padded ids:
    each prompt's valid entries, then 0 (text) for every completion token (as TRL's GRPOTrainer extends it over the
    completion), 0 on padding."""
    out = values.new_zeros((len(completions), longest))
    for i, (row, mask, completion, span) in enumerate(zip(values, prompt_mask, completions, spans, strict=True)):
        out[i, span] = torch.cat([row[mask], row.new_zeros(completion.numel())])
    return out


def _masked_hidden_to_embeds(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor, drop_idx: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``QwenImagePipeline._get_qwen_prompt_embeds`` after the forward (``_extract_masked_hidden`` and the padding),
    written out because it is a method of a pipeline this function does not need; the tests compare the two."""
    bool_mask = attention_mask.bool()
    selected = hidden_states[bool_mask]
    split = torch.split(selected, bool_mask.sum(dim=1).tolist(), dim=0)
    split = [sample[drop_idx:] for sample in split]
    longest = max(sample.size(0) for sample in split)
    prompt_embeds = torch.stack([torch.cat([u, u.new_zeros(longest - u.size(0), u.size(1))]) for u in split])
    mask = torch.stack(
        [
            torch.cat([u.new_ones(u.size(0), dtype=torch.long), u.new_zeros(longest - u.size(0), dtype=torch.long)])
            for u in split
        ]
    )
    return prompt_embeds, mask


# ---------------------------------------------------------------------------------------------------------------------
# Rendering with the frozen pipeline
# ---------------------------------------------------------------------------------------------------------------------

_AREA_LOCK = threading.Lock()


@contextlib.contextmanager
def _condition_area(pipeline: Any, area: int) -> Iterator[None]:
    """Make ``QwenImageEditPipeline.__call__`` size the condition image to ``area`` pixels instead of 1024 * 1024.

    The pipeline offers no argument for it: it calls the module-level ``calculate_dimensions(1024 * 1024, ratio)``.
    That global is swapped for one with the other area for the duration of the call (under a lock, restored after);
    the pipeline's VAE encoding, its DiT positions (``img_shapes``) and the text encoder image then all follow.
    """
    if area == DEFAULT_CONDITION_AREA:
        yield
        return
    namespace = inspect.unwrap(type(pipeline).__call__).__globals__
    original = namespace.get("calculate_dimensions")
    if original is None:
        raise ValueError(
            f"{type(pipeline).__name__}.__call__ does not size its condition image with calculate_dimensions"
        )
    with _AREA_LOCK:
        namespace["calculate_dimensions"] = lambda _area, ratio: original(area, ratio)
        try:
            yield
        finally:
            namespace["calculate_dimensions"] = original


def _generators(seed: int | Sequence[int], indices: Sequence[int], count: int) -> list[torch.Generator]:
    """One CPU generator per sample: the initial noise depends only on the sample's seed, not on the batch or device
    (an int seed gives every sample the same noise, so a GRPO group differs only by its prompt embeddings)."""
    seeds = [seed] * count if isinstance(seed, int) else list(seed)
    if len(seeds) != count:
        raise ValueError(f"{len(seeds)} seeds for {count} samples")
    return [torch.Generator(device="cpu").manual_seed(int(seeds[i])) for i in indices]


def _select(embeds: torch.Tensor | None, mask: torch.Tensor | None, indices: list[int], pipeline: Any) -> tuple:
    """Rows ``indices``, trimmed to their longest valid length, detached, in the DiT's dtype and device."""
    if embeds is None:
        return None, None
    device, dtype = pipeline._execution_device, pipeline.transformer.dtype
    embeds = embeds[indices].detach()
    if mask is not None:
        mask = mask[indices].detach()
        valid = mask.bool().any(dim=0).nonzero()
        length = int(valid.max()) + 1 if valid.numel() else 1
        embeds, mask = embeds[:, :length], mask[:, :length].to(device)
    return embeds.to(device=device, dtype=dtype), mask


def _check_batch(prompt_embeds: torch.Tensor, mask: torch.Tensor | None, count: int, what: str) -> None:
    if prompt_embeds.dim() != 3 or prompt_embeds.shape[0] != count:
        raise ValueError(f"{what} must be (batch={count}, seq, hidden), got {tuple(prompt_embeds.shape)}")
    if mask is not None and tuple(mask.shape) != tuple(prompt_embeds.shape[:2]):
        raise ValueError(f"{what}_mask {tuple(mask.shape)} does not match {what} {tuple(prompt_embeds.shape)}")


def _cfg_check(true_cfg_scale: float, negative_prompt_embeds: torch.Tensor | None) -> None:
    if true_cfg_scale > 1 and negative_prompt_embeds is None:
        # The pipeline would only warn and silently run without guidance.
        raise ValueError("true_cfg_scale > 1 needs negative_prompt_embeds (encode a negative prompt the same way)")


def run_edit(
    pipeline: Any,
    images: Sequence[Image.Image],
    prompt_embeds: torch.Tensor,
    prompt_embeds_mask: torch.Tensor | None,
    num_inference_steps: int = 2,
    height: int | None = None,
    width: int | None = None,
    seed: int | Sequence[int] = 0,
    true_cfg_scale: float = 1.0,
    *,
    target_area: int | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds_mask: torch.Tensor | None = None,
) -> list[Image.Image]:
    """Edit ``images`` with the frozen ``QwenImageEditPipeline`` driven by precomputed ``prompt_embeds`` (the pipeline
    encodes no text), one output image per row, deterministic for ``seed`` (see :func:`_generators`).

    ``height``/``width``: output size (``None``: the condition size; rounded down to multiples of 16 by the pipeline).
    ``target_area``: pixels of the condition image the pipeline VAE-encodes and places next to the output latents
    (``None``: the pipeline's hard-coded 1024 * 1024, about 4096 extra DiT tokens per image; e.g. ``64 * 64`` for the
    tiny pipeline or cheap smoke runs); embeddings must then come from :func:`condition_images` with the same area.
    Samples are rendered in one pipeline call per condition size, because the pipeline sizes every image of a call
    from the first one's aspect ratio.
    """
    _check_batch(prompt_embeds, prompt_embeds_mask, len(images), "prompt_embeds")
    if negative_prompt_embeds is not None:
        _check_batch(negative_prompt_embeds, negative_prompt_embeds_mask, len(images), "negative_prompt_embeds")
    _cfg_check(true_cfg_scale, negative_prompt_embeds)
    area = DEFAULT_CONDITION_AREA if target_area is None else target_area
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        width_c, height_c, _ = calculate_dimensions(area, image.size[0] / image.size[1])
        groups.setdefault((width_c, height_c), []).append(i)
    results: list[Image.Image | None] = [None] * len(images)
    with _condition_area(pipeline, area):
        for indices in groups.values():
            embeds, mask = _select(prompt_embeds, prompt_embeds_mask, indices, pipeline)
            neg, neg_mask = _select(negative_prompt_embeds, negative_prompt_embeds_mask, indices, pipeline)
            output = pipeline(
                image=[images[i] for i in indices],
                prompt_embeds=embeds,
                prompt_embeds_mask=mask,
                negative_prompt_embeds=neg,
                negative_prompt_embeds_mask=neg_mask,
                true_cfg_scale=true_cfg_scale,
                height=height,
                width=width,
                num_inference_steps=num_inference_steps,
                generator=_generators(seed, indices, len(images)),
                output_type="pil",
            )
            for i, image in zip(indices, output.images, strict=True):
                results[i] = image
    return [image for image in results if image is not None]


def run_t2i(
    pipeline: Any,
    prompt_embeds: torch.Tensor,
    prompt_embeds_mask: torch.Tensor | None,
    num_inference_steps: int = 2,
    height: int | None = None,
    width: int | None = None,
    seed: int | Sequence[int] = 0,
    true_cfg_scale: float = 1.0,
    *,
    negative_prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds_mask: torch.Tensor | None = None,
) -> list[Image.Image]:
    """Text-to-image counterpart of :func:`run_edit` for ``QwenImagePipeline`` (``height``/``width`` ``None``: the
    pipeline's 1024 x 1024). The pipeline truncates embeddings to 1024 tokens (its ``max_sequence_length`` limit);
    longer ones are truncated here too, with a warning, instead of failing."""
    count = prompt_embeds.shape[0]
    _check_batch(prompt_embeds, prompt_embeds_mask, count, "prompt_embeds")
    if negative_prompt_embeds is not None:
        _check_batch(negative_prompt_embeds, negative_prompt_embeds_mask, count, "negative_prompt_embeds")
    _cfg_check(true_cfg_scale, negative_prompt_embeds)
    indices = list(range(count))
    embeds, mask = _select(prompt_embeds, prompt_embeds_mask, indices, pipeline)
    neg, neg_mask = _select(negative_prompt_embeds, negative_prompt_embeds_mask, indices, pipeline)
    longest = max(t.shape[1] for t in (embeds, neg) if t is not None)
    if longest > MAX_T2I_SEQUENCE_LENGTH:
        logger.warning("prompt embeddings of %d tokens truncated to %d", longest, MAX_T2I_SEQUENCE_LENGTH)
    output = pipeline(
        prompt_embeds=embeds,
        prompt_embeds_mask=mask,
        negative_prompt_embeds=neg,
        negative_prompt_embeds_mask=neg_mask,
        true_cfg_scale=true_cfg_scale,
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        generator=_generators(seed, indices, count),
        max_sequence_length=min(longest, MAX_T2I_SEQUENCE_LENGTH),
        output_type="pil",
    )
    return list(output.images)


class PolicyRenderer:
    """Images for the batch at hand, rendered once from the policy's CURRENT weights and shared by every reward of
    the batch (TRL calls reward functions one after another with the same completions).

    Edit pipelines render from `images` (the condition images the policy saw while generating, already resized with
    :func:`condition_images`, so the embedding forward sees the same image tokens as generation); text-to-image
    pipelines take `images=None`.

    `offload_dit`: the DiT stays in host memory (:class:`HostOffload`) and is lent to the render device for each
    render only, so between renders (generation, the policy's forward/backward, the optimizer step) its ~41 GB are
    free; each render then pays one host-to-device copy of the DiT.

    `log_images_steps` > 0: while training, the process of global rank 0 writes a grid of what it rendered (per row:
    the condition image for edits, then the images of one prompt's completions) as
    ``<output_dir>/samples/step-XXXXX.png`` (with the instructions and decoded completions in ``step-XXXXX.json``),
    and to TensorBoard (``samples/rendered``, ``samples/completions``) when ``report_to`` includes tensorboard, at the
    first render and then at the first render of every later block of `log_images_steps` optimizer steps
    (:class:`core.tools.plots.SampleGridLog`). Other ranks render other prompts; only rank 0's are shown.
    """

    def __init__(
        self,
        pipeline: Any,
        processor: Any,
        num_inference_steps: int,
        seed: int,
        height: int | None = None,
        width: int | None = None,
        true_cfg_scale: float = 1.0,
        condition_area: int | None = None,
        *,
        offload_dit: bool = False,
        log_images_steps: int = 0,
    ) -> None:
        self.pipeline, self.processor = pipeline, processor
        self.num_inference_steps, self.seed = num_inference_steps, seed
        self.height, self.width, self.true_cfg_scale = height, width, true_cfg_scale
        self.condition_area = condition_area
        self.trainer: Any = None
        self._key: tuple | None = None
        self._images: list[Image.Image] = []
        self.dit_offload = HostOffload(pipeline.transformer) if offload_dit else None
        if log_images_steps < 0:
            raise ValueError(f"log_images_steps must be >= 0 (0: off), got {log_images_steps}")
        self.sample_log: Any = None
        if log_images_steps:
            from core.tools.plots import SampleGridLog

            self.sample_log = SampleGridLog(log_images_steps)

    def bind(self, trainer: Any) -> None:
        """Attach the trainer whose model is the policy; the frozen VAE (and the DiT unless it is offloaded) move to
        its device."""
        self.trainer = trainer
        self.pipeline.vae.to(trainer.accelerator.device)
        if self.dit_offload is None:
            self.pipeline.transformer.to(trainer.accelerator.device)

    def render_device(self, model: Any = None) -> torch.device:
        """Where the pipeline renders: the bound trainer's device, else `model`'s (evaluation), else the VAE's."""
        if self.trainer is not None:
            return torch.device(self.trainer.accelerator.device)
        if model is not None:
            return _model_device(model)
        return _model_device(self.pipeline.vae)

    def _embeddings(
        self,
        model: Any,
        instructions: Sequence[str],
        completion_ids: Sequence[Sequence[int]],
        images: Sequence[Image.Image] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        was_training = model.training
        model.eval()  # no dropout in the conditioning we score
        try:
            return completion_prompt_embeds(
                model,
                self.processor,
                self.pipeline.prompt_template_encode,
                self.pipeline.prompt_template_encode_start_idx,
                list(instructions),
                None if images is None else list(images),
                [list(ids) for ids in completion_ids],
            )
        finally:
            model.train(was_training)

    @torch.no_grad()
    def render(
        self,
        instructions: Sequence[str],
        completion_ids: Sequence[Sequence[int]],
        images: Sequence[Image.Image] | None = None,
        model: Any = None,
    ) -> list[Image.Image]:
        """`model`: render with this text encoder instead of the bound trainer's policy (evaluation)."""
        digests = tuple(hashlib.blake2b(img.tobytes(), digest_size=8).hexdigest() for img in images or ())
        key = (tuple(instructions), tuple(tuple(ids) for ids in completion_ids), digests)
        if key == self._key:
            return self._images
        if model is not None:
            embeds, mask = self._embeddings(model, instructions, completion_ids, images)
        elif self.trainer is None:
            raise RuntimeError("PolicyRenderer.bind(trainer) must be called before training")
        else:
            trainer = self.trainer
            # TRL's own generation context: under ZeRO-3 it gathers the full weights and lifts DeepSpeed's hooks for
            # the duration, so this forward outside the engine does not disturb the partitioned forward/backward.
            with unwrap_model_for_generation(
                trainer.model_wrapped,
                trainer.accelerator,
                gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
            ) as policy:
                embeds, mask = self._embeddings(policy, instructions, completion_ids, images)
        common = {
            "num_inference_steps": self.num_inference_steps,
            "height": self.height,
            "width": self.width,
            "seed": self.seed,
            "true_cfg_scale": self.true_cfg_scale,
        }
        # The DiT comes to the GPU only now, after the policy's gathered weights (ZeRO-3) were released above.
        lend = self.dit_offload is not None
        dit = self.dit_offload.lent(self.render_device(model)) if lend else contextlib.nullcontext()
        with dit:
            if images is None:
                rendered = run_t2i(self.pipeline, embeds, mask, **common)
            else:
                rendered = run_edit(
                    self.pipeline, list(images), embeds, mask, target_area=self.condition_area, **common
                )
        self._key, self._images = key, rendered
        if model is None:
            self._log_samples(instructions, completion_ids, images, rendered, digests)
        return rendered

    def _log_samples(
        self,
        instructions: Sequence[str],
        completion_ids: Sequence[Sequence[int]],
        images: Sequence[Image.Image] | None,
        rendered: Sequence[Image.Image],
        digests: Sequence[str],
    ) -> None:
        """The grid of this training render (see the class docstring), when one is due."""
        trainer = self.trainer
        if self.sample_log is None or trainer is None or not trainer.is_world_process_zero():
            return
        step = trainer.state.global_step + 1  # the optimizer step this generation feeds, numbered as the logs do
        if not self.sample_log.due(step):
            return
        from core.tools.plots import tensorboard_writer

        rows: list[dict[str, Any]] = []
        previous = None
        for i, (instruction, ids, image) in enumerate(zip(instructions, completion_ids, rendered, strict=True)):
            group = (instruction, digests[i] if digests else None)
            if group != previous:  # TRL puts a prompt's generations next to each other
                condition = None if images is None else images[i]
                rows.append({"instruction": instruction, "condition": condition, "images": [], "completions": []})
                previous = group
            rows[-1]["images"].append(image)
            rows[-1]["completions"].append(self.processor.decode(list(ids), skip_special_tokens=True))
        self.sample_log.write(trainer.args.output_dir, step, rows, tensorboard_writer(trainer))
