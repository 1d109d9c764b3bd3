"""Loading a Qwen-Image(-Edit) pipeline as a frozen renderer, and its memory switches (VAE tiling/slicing, the DiT
kept in host memory between renders)."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import DiffusionPipeline, QwenImageEditPipeline, QwenImagePipeline

from core.diffusion.prompts import check_drop_count
from core.ranges import NON_NEGATIVE, Range
from core.training.model_ids import is_random, resolve_model_path

logger = logging.getLogger(__name__)


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

    def pipeline_memory_kwargs(self) -> dict[str, Any]:
        """The switches `load_pipeline` takes, so every recipe passes all of them and a new one reaches each."""
        return {
            "vae_tiling": self.vae_tiling,
            "vae_slicing": self.vae_slicing,
            "vae_tile_size": self.vae_tile_size,
            "offload_dit": self.offload_dit,  # the DiT is not moved to the GPU at all; the renderer lends it
        }


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
    if is_random(name_or_path):
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
