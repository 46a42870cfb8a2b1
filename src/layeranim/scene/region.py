"""Motion confined to a region of a layer: blended latent diffusion, then the still restored outside.

Two guards keep the pixels outside a layer's `region` equal to its still:

1. In latent space, after every denoising step, the latents outside the region (the region's mask on the
   latent grid) are replaced by the still's clean latent noised to the *next* timestep
   (`scheduler.add_noise(base, noise, t_next)`; clean after the last step). This is blended latent
   diffusion (Avrahami et al., "Blended Latent Diffusion", SIGGRAPH 2023, Alg. 1) and the same blend
   diffusers' inpainting pipelines do: the motion module sees a static surround and moves only the region.
2. In pixel space, after decoding, the still's pixels are put back with a weight that is 1 inside the
   region and falls to 0 across a feathered `margin` (pixels). Beyond the margin the frames are therefore
   byte-identical to the still; the VAE's small drift there is hidden.

`make_region_callback` returns guard 1 with diffusers' `callback_on_step_end(pipe, step, t, kwargs)`
signature. Pipelines that take that callback run it directly; `scheduler_step_callback` runs the same
callable after every `scheduler.step` for a pipeline that does not (the seam is the scheduler instance,
which every stage-two call builds afresh).

Axes: b = video, c = latent channels, f = frame, h/w = height/width (latent cells or pixels, as named).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange, reduce

from layeranim.scene.model import LATENT_FACTOR, Box, Canvas, Layer

StepCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]
"""diffusers' callback_on_step_end: (pipe, step index, timestep, {"latents": …}) -> {"latents": …}."""


# ---------------------------------------------------------------------------------------------------
# Masks.


def region_mask(layer: Layer, canvas: Canvas, region: Box | Path | None = None) -> np.ndarray:
    """The layer's motion region in the layer's own pixels: (h, w) bool, True where motion may happen.

    `region` defaults to the layer's; a box and a mask image (white = motion) are both in canvas
    coordinates and are cropped to where the layer lies. No region: the whole layer.
    """
    region = layer.region if region is None else region
    mask_hw = np.zeros((layer.height, layer.width), dtype=bool)
    if region is None:
        mask_hw[:] = True
        return mask_hw
    x, y = layer.position
    if isinstance(region, Box):
        x0, x1 = max(region.x0 - x, 0), min(region.x1 - x, layer.width)
        y0, y1 = max(region.y0 - y, 0), min(region.y1 - y, layer.height)
        if x1 > x0 and y1 > y0:
            mask_hw[y0:y1, x0:x1] = True
        return mask_hw
    from PIL import Image

    with Image.open(region) as image:
        canvas_mask_hw = np.asarray(image.convert("L")) > 127  # (canvas h, canvas w)
    # The part of the canvas-sized mask that the layer covers (the layer may extend past the canvas).
    cx0, cy0 = max(x, 0), max(y, 0)
    cx1, cy1 = min(x + layer.width, canvas.width), min(y + layer.height, canvas.height)
    if cx1 > cx0 and cy1 > cy0:
        mask_hw[cy0 - y : cy1 - y, cx0 - x : cx1 - x] = canvas_mask_hw[cy0:cy1, cx0:cx1]
    return mask_hw


def latent_region_mask(mask_hw: np.ndarray, factor: int = LATENT_FACTOR) -> torch.Tensor:
    """A pixel mask → the latent grid's (h/8, w/8) float mask: a cell is free if any of its pixels is."""
    height, width = mask_hw.shape
    padded_hw = np.zeros((-(-height // factor) * factor, -(-width // factor) * factor), dtype=bool)
    padded_hw[:height, :width] = mask_hw
    cells_hw = reduce(padded_hw, "(h p) (w q) -> h w", "max", p=factor, q=factor)
    return torch.from_numpy(cells_hw.astype(np.float32))


def feather_weights(mask_hw: np.ndarray, margin: int) -> np.ndarray:
    """(h, w) float32 weight of the generated frame: 1 in the region, falling linearly to 0 at `margin`
    pixels from it, exactly 0 beyond (where the still is restored byte for byte)."""
    if mask_hw.all():
        return np.ones(mask_hw.shape, dtype=np.float32)
    if margin <= 0:
        return mask_hw.astype(np.float32)
    import cv2

    # Euclidean distance of every pixel to the nearest region pixel (0 inside the region).
    outside_u8 = (~mask_hw).astype(np.uint8)
    distance_hw = cv2.distanceTransform(outside_u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    weight_hw = np.clip(1.0 - distance_hw / float(margin + 1), 0.0, 1.0).astype(np.float32)
    weight_hw[distance_hw > margin] = 0.0
    return weight_hw


def restore_outside(
    frames_fhwc_uint8: np.ndarray, still_hwc_uint8: np.ndarray, weight_hw: np.ndarray
) -> np.ndarray:
    """Put the still back where `weight` < 1: `still·(1−w) + frame·w`, and the still's bytes where w = 0.

    Straight RGBA is blended as premultiplied colour (so a fading edge does not drag in the colour under
    transparent pixels), then unpremultiplied: the named boundary of this function.
    """
    frame_f = frames_fhwc_uint8.astype(np.float32) / 255.0
    still_f = still_hwc_uint8.astype(np.float32)[None] / 255.0
    w = weight_hw[None, :, :, None]
    premul_frame = np.concatenate([frame_f[..., :3] * frame_f[..., 3:], frame_f[..., 3:]], axis=-1)
    premul_still = np.concatenate([still_f[..., :3] * still_f[..., 3:], still_f[..., 3:]], axis=-1)
    mixed = premul_still * (1.0 - w) + premul_frame * w
    alpha = mixed[..., 3:]
    rgb = np.where(alpha > 0, mixed[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    out = np.clip(np.rint(np.concatenate([rgb, alpha], axis=-1) * 255.0), 0, 255).astype(np.uint8)
    out = np.where((weight_hw >= 1.0)[None, :, :, None], frames_fhwc_uint8, out)
    return np.where((weight_hw <= 0.0)[None, :, :, None], still_hwc_uint8[None], out)


# ---------------------------------------------------------------------------------------------------
# Blended latent diffusion as a step callback.


def make_region_callback(
    base_latent_b4hw: torch.Tensor,
    mask_latent_hw: torch.Tensor,
    scheduler: Any,
    noise_b4hw: torch.Tensor,
    *,
    clean_frame: int | None = None,
) -> StepCallback:
    """Blended latent diffusion (Avrahami et al. 2023, Alg. 1) as a diffusers `callback_on_step_end`.

    `base_latent` (b, c, h, w) and `noise` (b, c, h, w) in the UNet's space; `mask_latent` (h, w), or
    (b, h, w) with one mask per video of a batched call, 1 where motion may happen.

    After step `i` the latents are at timestep `timesteps[i+1]`; outside the region (mask 0) they become
    `scheduler.add_noise(base, noise, timesteps[i+1])`, and after the last step the clean `base`. `noise`
    is drawn once and shared by every frame (the surround is one still). `clean_frame` (stage two's base
    frame, already clean) is left untouched whatever order the pipeline runs its own replacement in.
    """
    if mask_latent_hw.ndim == 2:
        mask_b1fhw = rearrange(mask_latent_hw.float(), "h w -> 1 1 1 h w")
    else:  # one mask per video of a batched call
        mask_b1fhw = rearrange(mask_latent_hw.float(), "b h w -> b 1 1 h w")
    base_bcfhw = rearrange(base_latent_b4hw.float(), "b c h w -> b c 1 h w")
    noise_bcfhw = rearrange(noise_b4hw.float(), "b c h w -> b c 1 h w")

    def callback(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        latents_bcfhw = callback_kwargs["latents"]
        timesteps = scheduler.timesteps
        device = latents_bcfhw.device
        base = base_bcfhw.to(device)
        if step < len(timesteps) - 1:
            t_next = timesteps[step + 1 : step + 2].to(device)
            known = scheduler.add_noise(base, noise_bcfhw.to(device), t_next)
        else:
            known = base
        mask = mask_b1fhw.to(device)
        blended = known * (1.0 - mask) + latents_bcfhw.float() * mask  # (b, c, f, h, w)
        blended = blended.to(latents_bcfhw.dtype)
        if clean_frame is not None:
            blended[:, :, clean_frame] = latents_bcfhw[:, :, clean_frame]
        return {**callback_kwargs, "latents": blended}

    return callback


@contextmanager
def scheduler_step_callback(pipe: Any, callback: StepCallback) -> Iterator[None]:
    """Run `callback` after every `pipe.scheduler.step`, for pipelines without `callback_on_step_end`.

    The scheduler instance's `step` is wrapped for the duration of the block: the callback sees
    `{"latents": prev_sample}` and what it returns becomes the step's output. Nothing else changes.
    """
    scheduler = pipe.scheduler
    original_step = scheduler.step
    counter = itertools.count()

    def step(
        model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any, **kwargs: Any
    ) -> Any:
        out = original_step(model_output, timestep, sample, *args, **kwargs)
        index = next(counter)
        if isinstance(out, tuple):
            latents = callback(pipe, index, timestep, {"latents": out[0]})["latents"]
            return (latents, *out[1:])
        out.prev_sample = callback(pipe, index, timestep, {"latents": out.prev_sample})["latents"]
        return out

    scheduler.step = step
    try:
        yield
    finally:
        del scheduler.step  # back to the class's method
