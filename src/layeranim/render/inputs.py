"""What a render starts from: an RGBA still, a latent sidecar (`NAME.latent.safetensors`), or a stage-one
render (an image next to the sidecar that belongs to it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layeranim.errors import UsageError, VideoReadError
from layeranim.render.outputs import LATENT_FORMAT, Notify, latent_sidecar_path, rgba_digest

LATENT_FILE_SUFFIX = ".safetensors"


@dataclass
class AnimationInput:
    """An animate request's start: the RGBA still (None for a bare latent), the stage-one latent if any
    (1, 4, h, w) in the UNet's space, and which file it came from."""

    rgba_hwc_uint8: np.ndarray | None
    latent_b4hw: object | None  # torch.Tensor; typed loosely so this module does not import torch
    origin: str


def load_latent(path: Path) -> tuple[object, dict[str, str]]:
    """Read a sidecar written by `save_latent`: (latent (1, c, h, w) float32 tensor, metadata)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:
        raise VideoReadError(
            f"{path}: not a readable safetensors latent ({exc}); pass a sidecar that save_latent wrote "
            "(an image request with save_latent=True)."
        ) from exc
    if meta.get("format") != LATENT_FORMAT or "latent" not in tensors:
        raise VideoReadError(
            f"{path}: not a layeranim adjusted latent (format {meta.get('format')!r}); pass a sidecar that "
            "save_latent wrote (an image request with save_latent=True)."
        )
    return tensors["latent"].float(), meta


def load_animation_input(
    image: Path,
    *,
    width: int | None = None,
    height: int | None = None,
    notify: Notify | None = None,
) -> AnimationInput:
    """`image` → an RGBA still (encoded by stage two) or a stage-one latent (used as is).

    A `.safetensors` file is a latent sidecar. An RGBA image is resized to `width`/`height` when given
    (one of them keeps the aspect ratio); with neither, its `NAME.latent.safetensors` is used when its
    recorded `image_sha256` matches the image's pixels.
    """
    from layeranim.alpha import resize_rgba
    from layeranim.video_io import image_has_alpha, read_image

    image = Path(image)
    if not image.exists():
        raise UsageError(
            f"image={str(image)!r} does not exist; give an RGBA .png/.webp or a .latent.safetensors.",
            argument="image",
        )
    if image.suffix.lower() == LATENT_FILE_SUFFIX:
        if width is not None or height is not None:
            raise UsageError(
                "width and height resize an input image; a latent has its own size. Drop them.",
                argument="width",
            )
        latent, _ = load_latent(image)
        return AnimationInput(None, latent, str(image))
    if not image_has_alpha(image):
        raise UsageError(
            f"image={str(image)!r} has no alpha channel: layeranim animates transparent images. Give an "
            "RGBA PNG or WebP (e.g. from an image request), or cut the subject out first.",
            argument="image",
        )
    rgba = read_image(image)
    if width is not None or height is not None:
        h, w = rgba.shape[:2]
        new_w = width if width is not None else round(w * (height or h) / h)
        new_h = height if height is not None else round(h * (width or w) / w)
        rgba = resize_rgba(rgba, new_w, new_h)
    sidecar = latent_sidecar_path(image)
    if sidecar.exists() and width is None and height is None:
        latent, meta = load_latent(sidecar)
        if meta.get("image_sha256") == rgba_digest(rgba):
            if notify is not None:
                notify(f"starting from the stage-one latent {sidecar}")
            return AnimationInput(rgba, latent, str(sidecar))
        if notify is not None:
            notify(f"ignoring {sidecar}: it belongs to another version of {image.name}")
    return AnimationInput(rgba, None, str(image))
