"""GroupNorm in the motion UNet as the released AnimateDiff checkpoints were trained.

diffusers' `UNetMotionModel` normalises differently from guoyww/AnimateDiff in two places:

- **Temporal transformers.** The original `TemporalTransformer3DModel.forward` folds frames into the
  batch before its GroupNorm, so statistics are per frame: `(b f) c h w`. diffusers'
  `AnimateDiffTransformer3D.norm` normalises `b c f h w`, i.e. over all frames at once. Every released
  motion module (v1, v2, v3) was trained per frame.
- **Spatial ResNets** (and `conv_norm_out`). The original `UNet3DConditionModel` uses `InflatedGroupNorm`
  (per frame) when `use_inflated_groupnorm: true` (v2, v3 inference configs) and a plain GroupNorm on the
  5-D tensor, which spans all frames, when it is false (v1). diffusers is always per frame.

`apply_motion_norm` swaps the affected `nn.GroupNorm` modules for subclasses that compute the original
statistics. Their parameters are the same `weight`/`bias` tensors, so the state-dict keys do not change
and no UNet code is forked. `mode="diffusers"` puts plain GroupNorms back, for adapters trained with
diffusers (e.g. fine-tuned with its training scripts).

Spatial ResNets see the frame-folded batch `(b f) c h w`; a frame-spanning GroupNorm needs the frame
count to unfold it. A forward pre-hook on the UNet reads it from the `(b, c, f, h, w)` sample before
every call (as Inter-Frame Attention's context does) into a `FrameCount` the norms share.

Axis legend: b videos, c channels, f frames, h/w height/width.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from einops import rearrange
from torch import nn
from torch.utils.hooks import RemovableHandle

from layeranim.errors import UsageError

logger = logging.getLogger(__name__)

MOTION_NORM_MODES = ("original", "diffusers")
MOTION_MODULE_VERSIONS = ("v1", "v2", "v3")
_FRAMES_ATTRIBUTE = "_layeranim_motion_norm_frames"


@dataclass
class FrameCount:
    """Frames per video of the UNet call in progress; filled by a forward pre-hook on the UNet."""

    frames: int | None = None
    hook_handle: RemovableHandle | None = field(default=None, repr=False, compare=False)


class PerFrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame of a `(b, c, f, h, w)` input (AnimateDiff's temporal transformer).

    4-D input is normalised as `nn.GroupNorm` does (each row is one frame already).
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.ndim != 5:
            return super().forward(hidden_states)
        frames = hidden_states.shape[2]
        per_frame = rearrange(hidden_states, "b c f h w -> (b f) c h w")
        return rearrange(super().forward(per_frame), "(b f) c h w -> b c f h w", f=frames)


class FrameSpanningGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics over all frames of each video, on frame-folded `(b f) c h w` input.

    What v1 motion modules were trained with (a plain GroupNorm on the 5-D tensor of the original UNet3D).
    The frame count comes from the shared `FrameCount`; without one (a call that did not go through the
    UNet's hook) it raises rather than normalising the wrong way silently.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float, affine: bool, count: FrameCount):
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)
        self.count = count  # a plain object: not a submodule, not in the state dict

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        frames = self.count.frames
        if frames is None:
            raise UsageError(
                "FrameSpanningGroupNorm ran outside a UNetMotionModel call, so the frame count is unknown; "
                "call the UNet with a (batch, channels, frames, height, width) sample."
            )
        video = rearrange(hidden_states, "(b f) c h w -> b c f h w", f=frames)
        return rearrange(super().forward(video), "b c f h w -> (b f) c h w")


def motion_module_version(adapter_config: Mapping[str, Any]) -> str:
    """'v1', 'v2' or 'v3' from a MotionAdapter config, by diffusers' single-file detection rules.

    A motion mid block means v2; a 24-frame positional table (`motion_max_seq_length == 24`) means v1;
    anything else is treated as v3. Adapters converted by `load_motion_adapter` from original files get
    their config from the same tensors (mid-block keys, `pos_encoder.pe` length), so this agrees with
    `detect_motion_module_version` on them.
    """
    if adapter_config.get("use_motion_mid_block"):
        return "v2"
    if adapter_config.get("motion_max_seq_length") == 24:
        return "v1"
    return "v3"


def _record_frames(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Forward pre-hook: the UNet's `(b, c, f, h, w)` sample gives the frame count (looked up at call time,
    so a deep copy of the UNet fills its own count)."""
    count = getattr(module, _FRAMES_ATTRIBUTE, None)
    sample = kwargs.get("sample", args[0] if args else None)
    if count is not None and isinstance(sample, torch.Tensor) and sample.ndim == 5:
        count.frames = sample.shape[2]


def _swap(parent: nn.Module, name: str, make: type[nn.GroupNorm], **extra: Any) -> None:
    """Replace `parent.<name>` (a GroupNorm) by a `make` that shares its weight and bias Parameters."""
    old = getattr(parent, name)
    new = make(old.num_groups, old.num_channels, eps=old.eps, affine=old.affine, **extra)
    if old.affine:
        new.weight, new.bias = old.weight, old.bias  # same Parameters: same keys, gradients, optimizer
    new.train(old.training)
    setattr(parent, name, new)


def _spatial_norm_slots(unet: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every spatial ResNet GroupNorm and of `conv_norm_out`."""
    from diffusers.models.resnet import ResnetBlock2D

    slots = [
        (module, attr)
        for module in unet.modules()
        if isinstance(module, ResnetBlock2D)
        for attr in ("norm1", "norm2")
    ]
    if isinstance(getattr(unet, "conv_norm_out", None), nn.GroupNorm):
        slots.append((unet, "conv_norm_out"))
    return slots


def motion_norm_mode(unet: nn.Module) -> str:
    """Which `apply_motion_norm` mode `unet` runs: "original" once any norm was swapped, else "diffusers"."""
    swapped = any(isinstance(m, (PerFrameGroupNorm, FrameSpanningGroupNorm)) for m in unet.modules())
    return "original" if swapped else "diffusers"


def apply_motion_norm(
    unet: nn.Module, version: str | Mapping[str, Any], mode: str = "original"
) -> dict[str, int]:
    """Make `unet`'s GroupNorms compute the statistics the motion module was trained with.

    `version` is 'v1' / 'v2' / 'v3' or a MotionAdapter config to detect it from (`motion_module_version`).
    `mode="original"`: temporal transformers per frame; spatial ResNets and `conv_norm_out` across frames
    for v1, per frame (diffusers' own behaviour) for v2/v3. `mode="diffusers"`: diffusers' behaviour
    everywhere (plain GroupNorms back). Idempotent. Returns how many norms of each kind were set.
    """
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    if mode not in MOTION_NORM_MODES:
        raise UsageError(
            f"motion_norm {mode!r} is not one of {', '.join(MOTION_NORM_MODES)}; pick one of those."
        )
    if not isinstance(version, str):
        version = motion_module_version(version)
    if version not in MOTION_MODULE_VERSIONS:
        raise UsageError(
            f"motion module version {version!r} is not one of {', '.join(MOTION_MODULE_VERSIONS)}."
        )

    temporal = [module for module in unet.modules() if isinstance(module, AnimateDiffTransformer3D)]
    temporal_class = PerFrameGroupNorm if mode == "original" else nn.GroupNorm
    for module in temporal:
        _swap(module, "norm", temporal_class)

    span_frames = mode == "original" and version == "v1"
    spatial = _spatial_norm_slots(unet)
    count: FrameCount | None = getattr(unet, _FRAMES_ATTRIBUTE, None)
    if span_frames:
        if count is None:
            count = FrameCount()
            setattr(unet, _FRAMES_ATTRIBUTE, count)
            count.hook_handle = unet.register_forward_pre_hook(_record_frames, with_kwargs=True)
        for parent, name in spatial:
            _swap(parent, name, FrameSpanningGroupNorm, count=count)
    else:
        for parent, name in spatial:
            if isinstance(getattr(parent, name), FrameSpanningGroupNorm):
                _swap(parent, name, nn.GroupNorm)
        if count is not None:
            if count.hook_handle is not None:
                count.hook_handle.remove()
            delattr(unet, _FRAMES_ATTRIBUTE)
    logger.info(
        "motion norm %s for a %s motion module: %d temporal per-frame, %d spatial frame-spanning",
        mode,
        version,
        len(temporal) if mode == "original" else 0,
        len(spatial) if span_frames else 0,
    )
    return {
        "temporal_per_frame": len(temporal) if mode == "original" else 0,
        "spatial_frame_spanning": len(spatial) if span_frames else 0,
    }


__all__ = [
    "MOTION_NORM_MODES",
    "FrameCount",
    "FrameSpanningGroupNorm",
    "PerFrameGroupNorm",
    "apply_motion_norm",
    "motion_module_version",
]
