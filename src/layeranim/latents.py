"""The adjusted-latent sidecar: stage one's latent (UNet space) saved beside its image, for stage two.

Pipelines return latents and write nothing; the render layer calls `save_latent` / `load_latent`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from layeranim.errors import UsageError, VideoReadError

LATENT_FORMAT = "layeranim.adjusted_latent.v1"


def save_latent(
    path: Path, latent_b4hw: torch.Tensor, metadata: dict[str, Any], *, overwrite: bool = True
) -> Path:
    """Write one adjusted latent (1, c, h, w) as a safetensors sidecar, atomically; returns `path`.

    Non-string metadata values are stored as JSON; the format and the layeranim version are added.
    """
    from layeranim import __version__  # at call time: the package root imports lazily
    from layeranim.video_io import atomic_output

    if latent_b4hw.ndim != 4 or latent_b4hw.shape[0] != 1:
        raise UsageError(
            f"latent_b4hw has shape {tuple(latent_b4hw.shape)}; save_latent takes one latent (1, c, h, w)."
        )
    meta = {"format": LATENT_FORMAT, "layeranim_version": __version__}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    with atomic_output(path, overwrite=overwrite) as tmp:
        save_file({"latent": latent_b4hw.detach().float().cpu().contiguous()}, str(tmp), metadata=meta)
    return Path(path)


def load_latent(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    """Read a sidecar written by `save_latent`: (latent (1, c, h, w) float32, metadata)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:
        raise VideoReadError(
            f"{path}: not a readable safetensors latent ({exc}); pass a sidecar that save_latent wrote."
        ) from exc
    if meta.get("format") != LATENT_FORMAT or "latent" not in tensors:
        raise VideoReadError(
            f"{path}: not a layeranim adjusted latent (format {meta.get('format')!r}); pass a sidecar "
            "that save_latent wrote."
        )
    return tensors["latent"].float(), meta
