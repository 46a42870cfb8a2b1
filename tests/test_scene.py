"""The scene library: the TOML model, region masks, the blended-latent callback, "over", PSD import."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler
from PIL import Image

from layeranim.errors import UsageError
from layeranim.scene import (
    Box,
    LayerClip,
    SceneError,
    composite,
    feather_weights,
    latent_region_mask,
    load_scene,
    make_region_callback,
    region_mask,
    resample_nearest,
    restore_outside,
    scene_from_psd,
    scheduler_step_callback,
)


def write_rgba(
    path: Path, width: int, height: int, value: tuple[int, int, int, int] = (200, 30, 30, 255)
) -> Path:
    Image.fromarray(np.full((height, width, 4), value, np.uint8)).save(path)
    return path


def write_scene(folder: Path, text: str) -> Path:
    path = folder / "scene.toml"
    path.write_text("[canvas]\nwidth = 64\nheight = 64\nframes = 4\nfps = 8\n\n" + text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------
# The model.


def test_scene_reads_layers_bottom_to_top_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    write_rgba(tmp_path / "sky.png", 64, 64)
    write_rgba(tmp_path / "kite.png", 32, 24)
    path = write_scene(
        tmp_path,
        '[[layer]]\nname = "sky"\nimage = "sky.png"\n\n'
        '[[layer]]\nname = "kite"\nimage = "kite.png"\nposition = [40, -4]\nmotion = "flutter"\n'
        "region = [44, 0, 80, 10]\nseed = 7\nopacity = 0.5\n\n"
        '[[layer]]\nprompt = "a title"\nsize = [64, 16]\nvisible = false\n',
    )
    scene = load_scene(path)
    assert scene.canvas.background is None and scene.canvas.frames == 4
    sky, kite, title = scene.layers
    assert sky.image == tmp_path / "sky.png" and not sky.dynamic
    assert (kite.width, kite.height, kite.position) == (32, 24, (40, -4))
    assert kite.region == Box(44, 0, 80, 10) and kite.seed == 7 and kite.opacity == 0.5 and kite.dynamic
    assert title.name == "layer3" and (title.width, title.height) == (64, 16) and not title.visible
    assert kite.slug == "02-kite"


@pytest.mark.parametrize(
    ("layer_text", "key"),
    [
        ('image = "a.png"\nspeed = 3\n', "speed"),
        ('image = "missing.png"\n', "image"),
        ('image = "rgb.png"\n', "image"),
        ('image = "a.png"\nmotion = "m"\nregion = [100, 100, 120, 120]\n', "region"),
        ('image = "a.png"\nregion = [0, 0, 8, 8]\n', "region"),
        ('image = "a.png"\nopacity = 2\n', "opacity"),
        ('image = "a.png"\nprompt = "p"\n', "prompt"),
        ('image = "a.png"\nposition = [1]\n', "position"),
    ],
)
def test_bad_layers_name_the_layer_and_the_key(tmp_path: Path, layer_text: str, key: str) -> None:
    write_rgba(tmp_path / "a.png", 32, 32)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    path = write_scene(tmp_path, f'[[layer]]\nname = "kite"\n{layer_text}')
    with pytest.raises(SceneError) as info:
        load_scene(path)
    assert info.value.key == key and info.value.layer == "kite"
    assert '"kite"' in str(info.value) and key in str(info.value)
    assert isinstance(info.value, UsageError)


def test_zero_layers_and_unknown_tables_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SceneError, match="zero layers"):
        load_scene(write_scene(tmp_path, ""))
    with pytest.raises(SceneError, match="unknown table 'extra'"):
        load_scene(write_scene(tmp_path, "[extra]\na = 1\n"))


# ---------------------------------------------------------------------------------------------------
# Regions.


def test_box_region_is_cropped_to_the_layer_in_layer_coordinates(tmp_path: Path) -> None:
    write_rgba(tmp_path / "k.png", 32, 16)
    path = write_scene(
        tmp_path, '[[layer]]\nimage = "k.png"\nposition = [10, 20]\nmotion = "m"\nregion = [0, 24, 18, 64]\n'
    )
    layer = load_scene(path).layers[0]
    mask = region_mask(layer, load_scene(path).canvas)
    expected = np.zeros((16, 32), bool)
    expected[4:16, 0:8] = True  # canvas x 10..18, y 24..36 → layer x 0..8, y 4..16
    assert (mask == expected).all()


def test_mask_image_region_uses_canvas_coordinates(tmp_path: Path) -> None:
    write_rgba(tmp_path / "k.png", 16, 16)
    canvas_mask = np.zeros((64, 64), np.uint8)
    canvas_mask[30:34, 40:44] = 255
    Image.fromarray(canvas_mask).save(tmp_path / "mask.png")
    path = write_scene(
        tmp_path, '[[layer]]\nimage = "k.png"\nposition = [32, 24]\nmotion = "m"\nregion = "mask.png"\n'
    )
    scene = load_scene(path)
    mask = region_mask(scene.layers[0], scene.canvas)
    assert mask.sum() == 16 and mask[6:10, 8:12].all()


def test_latent_mask_marks_every_cell_touched_by_the_region() -> None:
    mask = np.zeros((24, 40), bool)
    mask[9:10, 17:30] = True  # row 9 → cell row 1; columns 17..29 → cell columns 2, 3
    cells = latent_region_mask(mask)
    assert cells.shape == (3, 5)
    expected = torch.zeros(3, 5)
    expected[1, 2:4] = 1
    assert torch.equal(cells, expected)


def test_feathered_restore_is_the_still_beyond_the_margin_and_the_frame_inside() -> None:
    rng = np.random.default_rng(0)
    still = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    frames = rng.integers(0, 256, (3, 32, 32, 4), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[10:20, 12:18] = True
    weight = feather_weights(mask, margin=4)
    out = restore_outside(frames, still, weight)
    assert (out[:, mask] == frames[:, mask]).all()
    yy, xx = np.mgrid[0:32, 0:32]
    dy = np.maximum(np.maximum(10 - yy, yy - 19), 0)
    dx = np.maximum(np.maximum(12 - xx, xx - 17), 0)
    far = np.hypot(dy, dx) > 4
    assert (out[:, far] == still[far]).all()
    between = ~far & ~mask
    assert (weight[between] > 0).all() and (weight[between] < 1).all()


# ---------------------------------------------------------------------------------------------------
# The blended-latent callback (diffusers' callback_on_step_end contract), with real schedulers.


def _setup(scheduler: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scheduler.set_timesteps(4)  # type: ignore[attr-defined]
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(1, 4, 3, 5, generator=gen)
    noise = torch.randn(1, 4, 3, 5, generator=gen)
    mask = torch.zeros(3, 5)
    mask[1:, 2:] = 1
    return base, noise, mask


def test_region_callback_noises_the_base_to_the_next_ddim_timestep_outside_the_region() -> None:
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear")
    base, noise, mask = _setup(scheduler)
    callback = make_region_callback(base, mask, scheduler, noise, clean_frame=1)
    latents = torch.randn(1, 4, 3, 3, 5, generator=torch.Generator().manual_seed(1))
    out = callback(None, 0, scheduler.timesteps[0], {"latents": latents.clone()})["latents"]
    # DDIM's forward process q(x_t | x_0) = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε at the *next* timestep.
    abar = scheduler.alphas_cumprod[int(scheduler.timesteps[1])]
    expected = abar.sqrt() * base + (1 - abar).sqrt() * noise
    outside = mask == 0
    for f in (0, 2):
        assert torch.allclose(out[0, :, f][:, outside], expected[0][:, outside], atol=1e-5)
        assert torch.equal(out[0, :, f][:, ~outside], latents[0, :, f][:, ~outside])
    assert torch.equal(out[:, :, 1], latents[:, :, 1])  # the clean base frame is left alone
    last = callback(None, 3, scheduler.timesteps[3], {"latents": latents.clone()})["latents"]
    assert torch.equal(last[0, :, 0][:, outside], base[0][:, outside])  # clean after the last step


def test_region_callback_with_euler_uses_the_next_sigma() -> None:
    scheduler = EulerAncestralDiscreteScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear")
    base, noise, mask = _setup(scheduler)
    callback = make_region_callback(base, mask, scheduler, noise)
    latents = torch.randn(1, 4, 2, 3, 5)
    out = callback(None, 1, scheduler.timesteps[1], {"latents": latents})["latents"]
    t_next = int(scheduler.timesteps[2])
    abar = scheduler.alphas_cumprod[t_next]
    sigma = ((1 - abar) / abar).sqrt()  # Karras et al. 2022: x = x_0 + σ ε in the sigma parametrisation
    outside = mask == 0
    assert torch.allclose(out[0, :, 1][:, outside], (base + sigma * noise)[0][:, outside], atol=1e-4)


def test_scheduler_step_hook_runs_the_callback_after_every_step_and_unwinds() -> None:
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(3)
    seen = []

    def callback(pipe: object, step: int, t: object, kwargs: dict) -> dict:
        seen.append(step)
        return {"latents": torch.zeros_like(kwargs["latents"])}

    class Pipe:
        pass

    pipe = Pipe()
    pipe.scheduler = scheduler  # type: ignore[attr-defined]
    sample = torch.ones(1, 4, 2, 2)
    with scheduler_step_callback(pipe, callback):
        for t in scheduler.timesteps:
            out = scheduler.step(torch.ones_like(sample), t, sample).prev_sample
            assert torch.equal(out, torch.zeros_like(sample))
    assert seen == [0, 1, 2]
    assert "step" not in vars(scheduler)
    assert not torch.equal(
        scheduler.step(torch.ones_like(sample), scheduler.timesteps[0], sample).prev_sample, 0 * sample
    )


# ---------------------------------------------------------------------------------------------------
# Compositing.


def naive_over(layers: list[tuple[np.ndarray, int, int, float]], height: int, width: int) -> np.ndarray:
    """Per-pixel loop-free re-derivation: premultiplied accumulate, then divide (Porter-Duff "over")."""
    premul = np.zeros((height, width, 3))
    alpha = np.zeros((height, width))
    for rgba, x, y, opacity in layers:
        h, w = rgba.shape[:2]
        canvas_layer = np.zeros((height, width, 4))
        ys, xs = slice(max(y, 0), min(y + h, height)), slice(max(x, 0), min(x + w, width))
        canvas_layer[ys, xs] = rgba[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x] / 255.0
        a = canvas_layer[..., 3] * opacity
        premul = canvas_layer[..., :3] * a[..., None] + premul * (1 - a[..., None])
        alpha = a + alpha * (1 - a)
    rgb = np.divide(premul, alpha[..., None], out=np.zeros_like(premul), where=alpha[..., None] > 0)
    return np.rint(np.concatenate([rgb, alpha[..., None]], -1) * 255).astype(np.uint8)


def test_composite_matches_a_premultiplied_rederivation_with_clipping_and_opacity() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (1, 20, 30, 4), dtype=np.uint8)
    b = rng.integers(0, 256, (1, 12, 16, 4), dtype=np.uint8)
    out = composite(
        [LayerClip(a, (-5, 4)), LayerClip(b, (18, -3), opacity=0.6)], width=24, height=18, frames=1
    )
    expected = naive_over([(a[0], -5, 4, 1.0), (b[0], 18, -3, 0.6)], 18, 24)
    assert np.abs(out[0].astype(int) - expected.astype(int)).max() <= 1
    assert (out[0, :4, :, 3][:, :18] == 0).all()  # nothing there: stays transparent


def test_background_colour_makes_the_composite_opaque() -> None:
    layer = np.zeros((1, 4, 4, 4), np.uint8)
    layer[..., :3] = (255, 0, 0)
    layer[..., 3] = 128
    out = composite([LayerClip(layer)], width=4, height=4, frames=1, background=(0, 0, 255))
    assert (out[..., 3] == 255).all()
    assert tuple(out[0, 0, 0, :3]) == (128, 0, 127)


def test_hold_loop_and_start() -> None:
    clip = np.zeros((3, 1, 1, 4), np.uint8)
    clip[:, 0, 0, 3] = 255
    clip[:, 0, 0, 0] = [10, 20, 30]
    hold = composite([LayerClip(clip, start=1)], width=1, height=1, frames=6)
    loop = composite([LayerClip(clip, start=1)], width=1, height=1, frames=6, repeat="loop")
    assert list(hold[:, 0, 0, 3]) == [0, 255, 255, 255, 255, 255]
    assert list(hold[1:, 0, 0, 0]) == [10, 20, 30, 30, 30]
    assert list(loop[1:, 0, 0, 0]) == [10, 20, 30, 10, 20]


def test_resample_nearest_keeps_duration() -> None:
    clip = np.arange(6, dtype=np.uint8).reshape(6, 1, 1, 1).repeat(4, axis=-1)
    assert list(resample_nearest(clip, 12, 24)[:, 0, 0, 0]) == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5]
    assert list(resample_nearest(clip, 12, 6)[:, 0, 0, 0]) == [0, 2, 4]


# ---------------------------------------------------------------------------------------------------
# PSD import.


def make_psd(path: Path) -> None:
    from psd_tools import PSDImage
    from psd_tools.api.layers import PixelLayer

    psd = PSDImage.new("RGBA", (96, 64))
    sky = np.zeros((64, 96, 4), np.uint8)
    sky[..., 2] = 200
    sky[..., 3] = 255
    kite = np.zeros((20, 30, 4), np.uint8)
    kite[..., 0] = 250
    kite[..., 3] = 180
    psd.append(PixelLayer.frompil(Image.fromarray(sky), psd, name="sky", top=0, left=0))
    psd.append(PixelLayer.frompil(Image.fromarray(kite), psd, name="Red Kite", top=10, left=50))
    psd.save(path)


def test_psd_becomes_a_scene_with_positions_sizes_and_pixels(tmp_path: Path) -> None:
    make_psd(tmp_path / "poster.psd")
    result = scene_from_psd(tmp_path / "poster.psd")
    (tmp_path / "scene.toml").write_text(result.toml, encoding="utf-8")
    scene = load_scene(tmp_path / "scene.toml")
    assert (scene.canvas.width, scene.canvas.height) == (96, 64)
    sky, kite = scene.layers
    assert (sky.name, sky.position, sky.width, sky.height) == ("sky", (0, 0), 96, 64)
    assert (kite.name, kite.position, kite.width, kite.height) == ("Red Kite", (50, 10), 30, 20)
    assert not kite.dynamic and not sky.dynamic
    pixels = np.asarray(Image.open(kite.image))
    assert pixels.shape == (20, 30, 4) and (pixels[..., 3] == 180).all() and (pixels[..., 0] == 250).all()
    with pytest.raises(UsageError, match="overwrite"):
        scene_from_psd(tmp_path / "poster.psd")
