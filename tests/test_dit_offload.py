"""Memory switches of the Qwen-Image recipes (issue 14, item 4) on the tiny pipelines, on CPU: the frozen DiT kept in
host memory and lent to the render device only for a render (`HostOffload`, `PolicyRenderer(offload_dit=True)`),
and diffusers' VAE tiling/slicing (`configure_vae`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from core.diffusion.pipeline import HostOffload, PolicyRenderer, condition_images, configure_vae, load_pipeline

AREA = 64 * 64


@pytest.fixture(scope="module")
def edit_pipe() -> Any:
    return load_pipeline("tiny:qwen_image_edit")


@pytest.fixture(scope="module")
def t2i_pipe() -> Any:
    return load_pipeline("tiny:qwen_image")


def frozen_linear() -> torch.nn.Module:
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))  # parameters and buffers
    return module.requires_grad_(False).eval()


def storage(module: torch.nn.Module) -> dict[str, tuple[torch.device, int]]:
    """Device and storage address of every parameter and buffer."""
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    return {name: (t.device, t.data_ptr()) for name, t in tensors.items()}


def test_host_offload_lends_the_weights_and_takes_them_back() -> None:
    module = frozen_linear()
    before = {name: t.clone() for name, t in module.state_dict().items()}
    offload = HostOffload(module, pin_memory=False)
    home = storage(module)
    assert offload.lent_to is None and {device.type for device, _ in home.values()} == {"cpu"}
    # "meta" stands in for an accelerator this machine lacks: the move itself is the same code.
    with offload.lent("meta") as lent:
        assert lent is module and offload.lent_to == torch.device("meta")
        assert {t.device.type for t in (*module.parameters(), *module.buffers())} == {"meta"}
        with offload.lent("meta"):  # a nested loan to the same device reuses the outer one
            pass
        with pytest.raises(RuntimeError, match="already lent"), offload.lent("cpu"):
            pass
    assert storage(module) == home and offload.lent_to is None  # the very same host tensors, nothing copied back
    assert all(torch.equal(module.state_dict()[name], value) for name, value in before.items())


def test_host_offload_returns_the_weights_after_an_exception() -> None:
    module = frozen_linear()
    offload = HostOffload(module, pin_memory=False)
    home = storage(module)
    with pytest.raises(ValueError, match="boom"), offload.lent("meta"):
        raise ValueError("boom")
    assert storage(module) == home and offload.lent_to is None


def test_host_offload_refuses_a_trainable_module() -> None:
    with pytest.raises(ValueError, match="frozen modules"):
        HostOffload(torch.nn.Linear(2, 2))


def render_inputs(pipe: Any, edit: bool) -> tuple[list[str], list[list[int]], list[Image.Image] | None]:
    instructions = ["make the square blue", "make the square blue"]
    tokenizer = pipe.processor.tokenizer if edit else pipe.tokenizer
    completion_ids = [tokenizer("A blue square.")["input_ids"], tokenizer("Blue, please.")["input_ids"]]
    if not edit:
        return instructions, [list(ids) for ids in completion_ids], None
    image = Image.new("RGB", (64, 64), (240, 240, 240))
    image.paste((220, 30, 30), (16, 16, 48, 48))
    return instructions, [list(ids) for ids in completion_ids], condition_images(pipe, [image, image], AREA)


@pytest.mark.parametrize("edit", [True, False], ids=["edit", "t2i"])
def test_offloaded_dit_is_on_the_render_device_only_inside_the_render(
    edit: bool, edit_pipe: Any, t2i_pipe: Any
) -> None:
    pipe = edit_pipe if edit else t2i_pipe
    instructions, completion_ids, images = render_inputs(pipe, edit)
    processor = pipe.processor if edit else pipe.tokenizer
    common = {"height": 64, "width": 64, **({"condition_area": AREA} if edit else {})}
    reference = PolicyRenderer(pipe, processor, 2, 0, **common).render(
        instructions, completion_ids, images, model=pipe.text_encoder
    )

    renderer = PolicyRenderer(pipe, processor, 2, 0, **common, offload_dit=True)
    dit = pipe.transformer
    home = storage(dit)
    seen: list[dict[str, Any]] = []

    def record(module: Any, args: Any) -> None:  # every DiT forward (one per denoising step)
        now = storage(module)
        seen.append(
            {
                "devices": {device for device, _ in now.values()},
                "copies": all(now[name][1] != home[name][1] for name in home),
                "lent_to": renderer.dit_offload.lent_to,
            }
        )

    handle = dit.register_forward_pre_hook(record)
    try:
        assert storage(dit) == home and renderer.dit_offload.lent_to is None  # before: on the host copies
        rendered = renderer.render(instructions, completion_ids, images, model=pipe.text_encoder)
    finally:
        handle.remove()
    device = renderer.render_device(pipe.text_encoder)
    assert len(seen) == 2  # two denoising steps, one call for both images
    for call in seen:
        # during: every tensor of the DiT is a fresh copy on the render device, lent for the render
        assert call["devices"] == {device} and call["copies"] and call["lent_to"] == device
    assert storage(dit) == home and renderer.dit_offload.lent_to is None  # after: back on the very same host tensors
    assert [np.asarray(a).tolist() for a in rendered] == [np.asarray(b).tolist() for b in reference]


def test_load_pipeline_keeps_the_dit_home_with_offload() -> None:
    pipe = load_pipeline("tiny:qwen_image", offload_dit=True, vae_slicing=True)
    assert {p.device.type for p in pipe.transformer.parameters()} == {"cpu"}
    assert pipe.vae.use_slicing and not pipe.vae.use_tiling


def test_configure_vae_switches_and_refusals(edit_pipe: Any) -> None:
    vae = edit_pipe.vae
    try:
        configure_vae(edit_pipe, tiling=True)
        assert vae.use_tiling and (vae.tile_sample_min_height, vae.tile_sample_stride_height) == (256, 192)
        configure_vae(edit_pipe, tiling=True, slicing=True, tile_size=32)
        assert vae.use_slicing and (vae.tile_sample_min_width, vae.tile_sample_stride_width) == (32, 24)
        with pytest.raises(ValueError, match="multiple of 8"):
            configure_vae(edit_pipe, tiling=True, tile_size=36)
        with pytest.raises(ValueError, match="vae_tiling is off"):
            configure_vae(edit_pipe, tile_size=32)
        configure_vae(edit_pipe)
        assert not vae.use_tiling and not vae.use_slicing
    finally:
        configure_vae(edit_pipe)
        vae.enable_tiling(256, 256, 192, 192)  # the defaults back for the other tests
        vae.disable_tiling()

    class NoSwitches:
        vae = torch.nn.Identity()

    with pytest.raises(ValueError, match="does not support VAE tiling"):
        configure_vae(NoSwitches(), tiling=True)
    with pytest.raises(ValueError, match="does not support VAE slicing"):
        configure_vae(NoSwitches(), slicing=True)


def test_vae_slicing_gives_the_same_images_and_tiling_runs_the_tiled_path(edit_pipe: Any, monkeypatch) -> None:
    vae = edit_pipe.vae
    x = torch.rand(3, 3, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    calls: list[str] = []
    for name in ("tiled_encode", "tiled_decode"):
        original = getattr(vae, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(vae, name, counted)
    try:
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.mode()
            plain = vae.decode(latents).sample
            configure_vae(edit_pipe, slicing=True)
            sliced = vae.decode(latents).sample
            configure_vae(edit_pipe, tiling=True, slicing=True, tile_size=32)
            assert calls == []
            tiled_latents = vae.encode(x).latent_dist.mode()
            tiled = vae.decode(latents).sample
    finally:
        configure_vae(edit_pipe)
        vae.enable_tiling(256, 256, 192, 192)
        vae.disable_tiling()
    assert torch.allclose(sliced, plain, atol=1e-5)  # slicing: the same images, one at a time
    # tiling: per image one tiled encode and decode (slicing on), same shapes; values differ where tiles are blended
    assert calls == ["tiled_encode"] * 3 + ["tiled_decode"] * 3
    assert tiled_latents.shape == latents.shape and tiled.shape == plain.shape
