"""Clips longer than the motion window: overlapping context windows, FreeNoise noise, seamless loops.

Stage two denoises a long clip window by window (each window one UNet call, at most the motion module's
trained length), and blends the windows' noise predictions frame by frame with flat or pyramid weights
(FreeNoise, Qiu et al. 2023, eq. 9; the weights are diffusers' `FreeNoiseTransformerBlock` ones). The
initial noise is FreeNoise's "shuffle_context" rescheduling (diffusers' `AnimateDiffFreeNoiseMixin`), so
windows start from noise that agrees. diffusers applies FreeNoise inside the temporal transformer blocks
only; here the window is the whole UNet call, so Inter-Frame Attention (spatial self-attention) and the
motion modules both see the same frames, and **every call holds the clean base frame**: inside the window
when it falls there, else as one extra anchor position at the window's edge nearer to it.

With `seamless=True` the windows wrap around the end of the clip (frame indices modulo F), so the last
frames are denoised together with the first and the clip loops. `seam_score` measures the result.

Axes: b = video, c = latent channels, f = frame, h/w = latent height/width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from diffusers.models.attention import FreeNoiseTransformerBlock
from diffusers.pipelines.free_noise_utils import AnimateDiffFreeNoiseMixin

from layeranim.errors import UsageError

DEFAULT_CONTEXT_LENGTH = 16
"""The trained length of the AnimateDiff v1–v3 motion modules."""
WEIGHTINGS = ("flat", "pyramid")
BASE_POSITIONS = ("middle", "start", "end")


def resolve_base_position(base_position: str | int, num_frames: int) -> int:
    """`"middle"` → (F − 1) // 2 (the paper's clean middle frame), `"start"` → 0, `"end"` → F − 1, or an
    index in 0..F − 1 (negative indices count from the end, as in Python)."""
    if isinstance(base_position, str):
        if base_position == "middle":
            return (num_frames - 1) // 2
        if base_position == "start":
            return 0
        if base_position == "end":
            return num_frames - 1
        raise UsageError(
            f"base_position={base_position!r} is not one of {', '.join(BASE_POSITIONS)} or a frame index."
        )
    if isinstance(base_position, bool) or not isinstance(base_position, (int, np.integer)):
        raise UsageError(
            f"base_position={base_position!r} must be 'middle', 'start', 'end' or a frame index."
        )
    index = int(base_position)
    if not -num_frames <= index < num_frames:
        raise UsageError(
            f"base_position={index} is outside the clip's frames 0..{num_frames - 1}; pick a frame in it."
        )
    return index % num_frames


@dataclass(frozen=True)
class ContextSchedule:
    """How one clip is cut into UNet calls.

    `windows[i]` lists the clip frames of call i (in temporal order, wrapping past the end when seamless);
    `calls[i]` is what the UNet gets: the window, plus the base frame inserted at `anchors[i]` when the
    window does not hold it (`inserted[i]`). `anchors[i]` is where the base frame sits in call i, in both
    cases: Inter-Frame Attention attends to that position.
    """

    num_frames: int
    base_index: int
    stride: int  # frames between window starts (the last linear window may sit closer, flush with the end)
    windows: tuple[tuple[int, ...], ...]
    calls: tuple[tuple[int, ...], ...]
    anchors: tuple[int, ...]
    inserted: tuple[bool, ...]


def window_starts(num_frames: int, length: int, stride: int, *, seamless: bool) -> list[int]:
    """Window starts every `stride` frames; linear windows end with one flush with the clip's end, wrapped
    windows keep going until a window has crossed the end."""
    if seamless:
        return list(range(0, num_frames, stride))
    starts = list(range(0, num_frames - length + 1, stride))
    if starts[-1] + length < num_frames:
        starts.append(num_frames - length)
    return starts


def context_schedule(
    num_frames: int,
    base_index: int,
    *,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    context_overlap: int | None = None,
    seamless: bool = False,
) -> ContextSchedule:
    """The windows covering every frame of a clip, each call holding the clean base frame.

    Windows are `min(context_length, num_frames)` long and overlap by `context_overlap` frames (default a
    quarter of the window). A clip no longer than one window gets a single window, the whole clip, unless
    it is seamless: then the windows are rotations of the clip, so that one of them joins the last frame to
    the first.
    """
    length = min(context_length, num_frames)
    overlap = length // 4 if context_overlap is None else min(context_overlap, length - 1)
    if seamless:
        overlap = max(overlap, 1)  # some window must run across the end
    stride = max(1, length - overlap)
    windows = [
        tuple((start + k) % num_frames for k in range(length))
        for start in window_starts(num_frames, length, stride, seamless=seamless)
    ]
    calls, anchors, inserted = [], [], []
    for window in windows:
        if base_index in window:
            calls.append(window)
            anchors.append(window.index(base_index))
            inserted.append(False)
        elif _comes_before(base_index, window, num_frames, seamless=seamless):
            calls.append((base_index, *window))
            anchors.append(0)
            inserted.append(True)
        else:
            calls.append((*window, base_index))
            anchors.append(len(window))
            inserted.append(True)
    return ContextSchedule(
        num_frames, base_index, stride, tuple(windows), tuple(calls), tuple(anchors), tuple(inserted)
    )


def _comes_before(index: int, window: Sequence[int], num_frames: int, *, seamless: bool) -> bool:
    """Whether `index` lies before the window: earlier in the clip, or on a loop nearer its start."""
    if not seamless:
        return index < window[0]
    to_start = (window[0] - index) % num_frames
    from_end = (index - window[-1]) % num_frames
    return to_start <= from_end


def window_weights(length: int, weighting: str) -> torch.Tensor:
    """Blending weights over a window's frames: "flat" (all 1) or "pyramid" (1, 2, …, 2, 1), FreeNoise's
    eq. 9 as diffusers implements it."""
    if weighting not in WEIGHTINGS:
        raise UsageError(f"context_weighting={weighting!r} is not one of {', '.join(WEIGHTINGS)}.")
    # A plain function in all but name: it reads nothing from `self`.
    weights = FreeNoiseTransformerBlock._get_frame_weights(None, length, weighting)  # type: ignore[arg-type]
    return torch.tensor(weights, dtype=torch.float32)


def free_noise_latents(
    shape: tuple[int, int, int, int, int],
    *,
    context_length: int,
    context_stride: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """FreeNoise's rescheduled noise (b, c, f, h, w) in float32: fresh noise for the first window, then
    each further stride a shuffled copy of the frames one window earlier (diffusers' "shuffle_context")."""
    batch, channels, frames, height, width = shape
    host = SimpleNamespace(  # what AnimateDiffFreeNoiseMixin reads from `self`
        _free_noise_context_length=context_length,
        _free_noise_context_stride=context_stride,
        _free_noise_noise_type="shuffle_context",
        vae_scale_factor=1,  # `height`/`width` below are latent sizes already
    )
    return AnimateDiffFreeNoiseMixin._prepare_latents_free_noise(
        host,  # type: ignore[arg-type]
        batch,
        channels,
        frames,
        height,
        width,
        torch.float32,
        device,
        generator,
    )


# ---------------------------------------------------------------------------------------------------
# The seam of a loop


def _premultiplied_float(frames_fhwc: np.ndarray | torch.Tensor) -> np.ndarray:
    """RGBA frames (f, h, w, 4), uint8 or float in [0, 1], straight alpha → premultiplied float64 in
    [0, 1]: the named boundary where colour under transparent pixels stops counting."""
    array = (
        frames_fhwc.detach().cpu().numpy()
        if isinstance(frames_fhwc, torch.Tensor)
        else np.asarray(frames_fhwc)
    )
    if array.ndim != 4 or array.shape[-1] != 4:
        raise UsageError(f"frames has shape {array.shape}; give RGBA frames (frames, height, width, 4).")
    rgba = array.astype(np.float64) / (255.0 if array.dtype == np.uint8 else 1.0)
    rgba[..., :3] *= rgba[..., 3:]
    return rgba


def frame_difference(a_hwc: np.ndarray, b_hwc: np.ndarray) -> float:
    """Mean absolute difference of two premultiplied RGBA frames."""
    return float(np.abs(a_hwc - b_hwc).mean())


class SeamMeter:
    """`seam_score` over frames that arrive in chunks (a streamed decode): keeps the first and the last
    frame seen and one difference per step, never the clip."""

    def __init__(self) -> None:
        self._first: np.ndarray | None = None
        self._last: np.ndarray | None = None
        self._steps: list[float] = []

    def update(self, frames_fhwc: np.ndarray | torch.Tensor) -> None:
        """Add the next frames (f, h, w, 4), RGBA uint8 or float in [0, 1], straight alpha."""
        for frame in _premultiplied_float(frames_fhwc):
            if self._first is None:
                self._first = frame
            else:
                assert self._last is not None
                self._steps.append(frame_difference(self._last, frame))
            self._last = frame

    @property
    def value(self) -> float:
        """The seam score of the frames so far (see `seam_score`)."""
        if self._first is None or self._last is None or not self._steps:
            frames = 0 if self._first is None else 1
            raise UsageError(f"frames holds {frames} frame(s); a seam needs at least 2.")
        seam = frame_difference(self._last, self._first)
        typical = float(np.median(self._steps))
        if typical == 0.0:
            return 1.0 if seam == 0.0 else float("inf")
        return seam / typical


def seam_score(frames_fhwc: np.ndarray | torch.Tensor) -> float:
    """The last→first frame difference over the median difference between consecutive frames.

    About 1 means the loop's seam looks like any other frame step; well above 1, a visible jump. A clip
    that does not move at all scores 1 (no seam to see). Differences are mean absolute differences of
    premultiplied RGBA, so colour under fully transparent pixels does not count.
    """
    meter = SeamMeter()
    meter.update(frames_fhwc)
    return meter.value
