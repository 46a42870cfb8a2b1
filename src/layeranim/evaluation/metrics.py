"""Transparency metrics on straight-RGBA clips: pure functions, one definition each.

Every function takes straight-alpha frames `rgba_fhwc_uint8` (f, h, w, 4) uint8 and returns plain floats
or small numpy arrays. Alpha is measured in [0, 1] (alpha / 255), so "a mean |Δalpha| of 0.1" means one
tenth of full opacity per pixel on average. Colour differences are measured on *premultiplied* colour,
so the colour hidden under alpha 0 (meaningless in straight alpha) never counts, except in `colour_leak`,
whose whole point is to measure it.

Axis legend: f frames, h height, w width, c channels (RGBA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from layeranim.alpha import pad_color_under_transparent
from layeranim.errors import UsageError
from layeranim.evaluation._opencv import cv2_module

# pad_color_under_transparent's default reach: the band of alpha-0 pixels it fills from their neighbours.
COLOUR_PAD_ITERATIONS = 4


def check_clip(rgba_fhwc_uint8: np.ndarray, *, name: str = "rgba_fhwc_uint8", min_frames: int = 1) -> None:
    """Raise `UsageError` unless `rgba_fhwc_uint8` is an (f, h, w, 4) uint8 array with f ≥ min_frames."""
    if not isinstance(rgba_fhwc_uint8, np.ndarray) or rgba_fhwc_uint8.dtype != np.uint8:
        raise UsageError(f"{name} must be a uint8 numpy array (f, h, w, 4) of straight RGBA frames.")
    if rgba_fhwc_uint8.ndim != 4 or rgba_fhwc_uint8.shape[-1] != 4:
        raise UsageError(
            f"{name} has shape {tuple(rgba_fhwc_uint8.shape)}; expected (frames, height, width, 4) RGBA."
        )
    if rgba_fhwc_uint8.shape[0] < min_frames:
        raise UsageError(
            f"{name} has {rgba_fhwc_uint8.shape[0]} frame(s); this measure needs at least {min_frames}."
        )


def alpha_01(rgba_fhwc_uint8: np.ndarray) -> np.ndarray:
    """The alpha channel as float32 in [0, 1]: (f, h, w)."""
    return rgba_fhwc_uint8[..., 3].astype(np.float32) / 255.0


def premultiplied_01(rgba_fhwc_uint8: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA as float32 in [0, 1] (colour × alpha, alpha): what a viewer actually sees."""
    rgba_f32 = rgba_fhwc_uint8.astype(np.float32) / 255.0
    return np.concatenate([rgba_f32[..., :3] * rgba_f32[..., 3:4], rgba_f32[..., 3:4]], axis=-1)


# ---------------------------------------------------------------------------------------------------
# Alpha over time.


def alpha_coverage(rgba_fhwc_uint8: np.ndarray) -> np.ndarray:
    """Per-frame alpha coverage: the mean of alpha over the frame, in [0, 1]; shape (f,)."""
    check_clip(rgba_fhwc_uint8)
    return alpha_01(rgba_fhwc_uint8).mean(axis=(1, 2))


def alpha_change(rgba_fhwc_uint8: np.ndarray) -> np.ndarray:
    """Per-step raw alpha change: mean over pixels of |alpha_t − alpha_{t−1}|, t = 1..f−1; shape (f−1,)."""
    check_clip(rgba_fhwc_uint8, min_frames=2)
    alpha_fhw = alpha_01(rgba_fhwc_uint8)
    return np.abs(np.diff(alpha_fhw, axis=0)).mean(axis=(1, 2))


def warp_backward(image_hw: np.ndarray, flow_hw2: np.ndarray) -> np.ndarray:
    """Sample `image_hw` at x + flow(x) (bilinear, edge replicated): the earlier frame moved onto this one.

    `flow_hw2` is the backward flow of a frame pair (from frame t to frame t−1, OpenCV's convention:
    frame_t(x) ≈ frame_{t−1}(x + flow(x))), so the result is frame t−1 aligned with frame t.
    """
    cv2 = cv2_module()
    height, width = image_hw.shape
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    map_x = grid_x + flow_hw2[..., 0].astype(np.float32)
    map_y = grid_y + flow_hw2[..., 1].astype(np.float32)
    return cv2.remap(
        image_hw.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def motion_compensated_alpha_change(
    rgba_fhwc_uint8: np.ndarray, backward_flow_fhw2: np.ndarray
) -> np.ndarray:
    """Per-step alpha change after motion compensation: mean |alpha_t − warp(alpha_{t−1}, flow_t)|; (f−1,).

    `backward_flow_fhw2[t − 1]` is the flow from frame t to frame t−1 (see `warp_backward`). Alpha that
    only moves with the content scores about 0; alpha that flickers in place scores like the raw change.
    """
    check_clip(rgba_fhwc_uint8, min_frames=2)
    alpha_fhw = alpha_01(rgba_fhwc_uint8)
    frames = alpha_fhw.shape[0]
    if backward_flow_fhw2.shape != (frames - 1, *alpha_fhw.shape[1:], 2):
        raise UsageError(
            f"backward_flow_fhw2 has shape {tuple(backward_flow_fhw2.shape)}; expected "
            f"{(frames - 1, *alpha_fhw.shape[1:], 2)} (one flow per consecutive frame pair)."
        )
    return np.array(
        [
            np.abs(alpha_fhw[t] - warp_backward(alpha_fhw[t - 1], backward_flow_fhw2[t - 1])).mean()
            for t in range(1, frames)
        ],
        dtype=np.float32,
    )


def alpha_coverage_drift(rgba_fhwc_uint8: np.ndarray, still_index: int) -> float | None:
    """Largest relative change of alpha coverage from the still frame: max_t |c_t − c_s| / c_s.

    c_t is `alpha_coverage` of frame t and s the still (base) frame. 0 means every frame covers as much
    as the still; 0.2 means some frame gained or lost a fifth of the still's coverage. None when the still
    is fully transparent (the ratio has no meaning).
    """
    coverage_f = alpha_coverage(rgba_fhwc_uint8)
    if not 0 <= still_index < len(coverage_f):
        raise UsageError(f"still_index {still_index} is outside the clip's frames 0..{len(coverage_f) - 1}.")
    still = float(coverage_f[still_index])
    if still == 0.0:
        return None
    return float(np.abs(coverage_f - still).max() / still)


def soft_edge_fraction(rgba_fhwc_uint8: np.ndarray) -> float:
    """Share of the visible pixels that are partly transparent: #(0 < alpha < 255) / #(alpha > 0), all frames.

    0 for a hard cut-out; large for hair, smoke, glass or a blurry matte. 0 when nothing is visible.
    """
    check_clip(rgba_fhwc_uint8)
    alpha_fhw = rgba_fhwc_uint8[..., 3]
    visible = int(np.count_nonzero(alpha_fhw))
    if visible == 0:
        return 0.0
    return float(np.count_nonzero(alpha_fhw < 255) - np.count_nonzero(alpha_fhw == 0)) / visible


def colour_leak(rgba_fhwc_uint8: np.ndarray, band: int = COLOUR_PAD_ITERATIONS) -> float:
    """Hidden colour near the edges: mean |rgb − edge-padded rgb| / 255 over the alpha-0 pixels of the band.

    The band is the alpha-0 pixels within `band` steps (4-neighbourhood) of a visible pixel: the colour
    that bilinear filtering, mipmaps, 4:2:0 chroma or a premultiplying resize pulls into visible edges.
    The reference is `alpha.pad_color_under_transparent` (what layeranim's writers store there), so a clip
    whose hidden colour is the edge padding scores exactly 0, and black or stray colour under alpha 0
    scores above 0. 0 when the clip has no alpha-0 pixel next to a visible one.
    """
    check_clip(rgba_fhwc_uint8)
    alpha_fhw = rgba_fhwc_uint8[..., 3]
    cv2 = cv2_module()
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    band_fhw = np.stack(
        [cv2.dilate((frame > 0).astype(np.uint8), cross, iterations=band) > 0 for frame in alpha_fhw]
    )
    band_fhw &= alpha_fhw == 0
    if not band_fhw.any():
        return 0.0
    padded = pad_color_under_transparent(rgba_fhwc_uint8)  # the whole clip, as the writers pad it
    diff = np.abs(rgba_fhwc_uint8[..., :3].astype(np.float32) - padded[..., :3].astype(np.float32))
    return float(diff[band_fhw].mean() / 255.0)


# ---------------------------------------------------------------------------------------------------
# The still frame and the loop.


@dataclass(frozen=True)
class Fidelity:
    """How exactly the clip's still frame reproduces the input still (premultiplied RGBA, 8-bit levels)."""

    psnr_db: float  # math.inf when identical
    max_diff: float  # largest absolute difference of one channel, in 8-bit levels (0..255)

    @property
    def identical(self) -> bool:
        return self.max_diff == 0.0


def base_frame_fidelity(frame_hwc_uint8: np.ndarray, still_hwc_uint8: np.ndarray) -> Fidelity:
    """PSNR (peak 255) and maximum difference of premultiplied RGBA between a frame and the input still.

    Premultiplied, so colour hidden under alpha 0 (which writers may pad) does not count. PSNR is ∞ when
    the two are identical.
    """
    if frame_hwc_uint8.shape != still_hwc_uint8.shape:
        raise UsageError(
            f"still has size {still_hwc_uint8.shape[1]}x{still_hwc_uint8.shape[0]} but the clip's frames are "
            f"{frame_hwc_uint8.shape[1]}x{frame_hwc_uint8.shape[0]}; give the still this clip was made from."
        )
    diff = np.abs(premultiplied_01(frame_hwc_uint8[None]) - premultiplied_01(still_hwc_uint8[None])) * 255.0
    mse = float(np.mean(np.square(diff)))
    psnr = math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)
    return Fidelity(psnr_db=psnr, max_diff=float(diff.max()))


def frame_difference(a_hwc_uint8: np.ndarray, b_hwc_uint8: np.ndarray) -> float:
    """Mean absolute difference of premultiplied RGBA between two frames, in [0, 1]."""
    return float(np.abs(premultiplied_01(a_hwc_uint8[None]) - premultiplied_01(b_hwc_uint8[None])).mean())


def loop_seam_score(rgba_fhwc_uint8: np.ndarray) -> float:
    """Last→first frame difference over the median consecutive-frame difference (`frame_difference`).

    About 1 for a seamless loop (the wrap-around step looks like any other step), large for a jump cut.
    A clip that never changes scores 1; a clip whose only change is at the seam scores ∞.
    """
    check_clip(rgba_fhwc_uint8, min_frames=2)
    steps = [
        frame_difference(rgba_fhwc_uint8[t - 1], rgba_fhwc_uint8[t]) for t in range(1, len(rgba_fhwc_uint8))
    ]
    seam = frame_difference(rgba_fhwc_uint8[-1], rgba_fhwc_uint8[0])
    median = float(np.median(steps))
    if median == 0.0:
        return 1.0 if seam == 0.0 else math.inf
    return seam / median
