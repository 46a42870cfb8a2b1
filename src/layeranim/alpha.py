"""Pure RGBA math: straight/premultiplied alpha, compositing, colour padding, alpha-correct resizing.

Everything inside layeranim is **straight** (non-premultiplied) alpha. `premultiply` / `unpremultiply`
are the one named boundary for consumers that want premultiplied colour.

Axis legend: f frames, h height, w width, c channels (RGBA order). `_01` arrays are floats in [0, 1];
`_uint8` arrays are 0..255. The float helpers use only arithmetic and `.clip`, so they work unchanged
on numpy arrays and torch tensors.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from PIL import Image, ImageColor

from layeranim.errors import UsageError

ArrayT = TypeVar("ArrayT")  # numpy.ndarray or torch.Tensor

# Checkerboard used for previews: two light grays, like image editors show transparency.
CHECKER_LIGHT_UINT8 = 204
CHECKER_DARK_UINT8 = 153


def premultiply(rgb_01: ArrayT, alpha_01: ArrayT) -> ArrayT:
    """Straight colour → premultiplied colour: `rgb * a` (alpha broadcasts over the channel axis)."""
    return rgb_01 * alpha_01  # type: ignore[operator]


def unpremultiply(rgb_premul_01: ArrayT, alpha_01: ArrayT, eps: float = 1e-6) -> ArrayT:
    """Premultiplied colour → straight colour: `rgb / a` where a > 0, 0 where a == 0, clipped to [0, 1]."""
    straight = rgb_premul_01 / alpha_01.clip(min=eps)  # type: ignore[attr-defined,operator]
    return straight.clip(0.0, 1.0)  # type: ignore[no-any-return]


def composite_over_gray(rgb_01: ArrayT, alpha_01: ArrayT) -> ArrayT:
    """Straight RGBA over 50 % gray: `0.5 + (rgb - 0.5) * a` (the models' RGB convention)."""
    return 0.5 + (rgb_01 - 0.5) * alpha_01  # type: ignore[operator]


def composite_over_color(
    rgb_01: ArrayT, alpha_01: ArrayT, color_01: tuple[float, float, float] | ArrayT
) -> ArrayT:
    """Straight RGBA over an opaque colour: `bg + (rgb - bg) * a` (the "over" operator, Porter-Duff)."""
    if isinstance(color_01, tuple):
        color_01 = np.asarray(color_01, dtype=np.float32)  # type: ignore[assignment]
    return color_01 + (rgb_01 - color_01) * alpha_01  # type: ignore[operator]


def premultiply_uint8(rgba_hwc_uint8: np.ndarray) -> np.ndarray:
    """Straight RGBA uint8 → premultiplied RGBA uint8 (alpha unchanged, colour rounded). Any leading axes."""
    rgba_f32 = rgba_hwc_uint8.astype(np.float32)
    out = rgba_hwc_uint8.copy()
    out[..., :3] = np.rint(rgba_f32[..., :3] * rgba_f32[..., 3:4] / 255.0).astype(np.uint8)
    return out


def unpremultiply_uint8(rgba_premul_hwc_uint8: np.ndarray) -> np.ndarray:
    """Premultiplied RGBA uint8 → straight RGBA uint8 (colour 0 where alpha is 0). Any leading axes."""
    rgba_f32 = rgba_premul_hwc_uint8.astype(np.float32)
    alpha = rgba_f32[..., 3:4]
    straight = np.where(alpha > 0, rgba_f32[..., :3] * 255.0 / np.maximum(alpha, 1.0), 0.0)
    out = rgba_premul_hwc_uint8.copy()
    out[..., :3] = np.clip(np.rint(straight), 0, 255).astype(np.uint8)
    return out


def flatten_onto_color(rgba_fhwc_uint8: np.ndarray, color_rgb_uint8: tuple[int, int, int]) -> np.ndarray:
    """Composite straight RGBA over an opaque colour; returns opaque RGBA (alpha 255). Any leading axes."""
    rgb_01 = rgba_fhwc_uint8[..., :3].astype(np.float32) / 255.0
    alpha_01 = rgba_fhwc_uint8[..., 3:4].astype(np.float32) / 255.0
    bg_01 = np.asarray(color_rgb_uint8, dtype=np.float32) / 255.0
    rgb_out_01 = composite_over_color(rgb_01, alpha_01, bg_01)
    out = np.empty_like(rgba_fhwc_uint8)
    out[..., :3] = np.clip(np.rint(rgb_out_01 * 255.0), 0, 255).astype(np.uint8)
    out[..., 3] = 255
    return out


def checkerboard_uint8(height: int, width: int, square: int = 8) -> np.ndarray:
    """A (height, width) light/dark gray checkerboard, uint8."""
    yy, xx = np.mgrid[0:height, 0:width]
    dark = ((yy // square) + (xx // square)) % 2 == 1
    return np.where(dark, CHECKER_DARK_UINT8, CHECKER_LIGHT_UINT8).astype(np.uint8)


def composite_over_checkerboard(rgba_fhwc_uint8: np.ndarray, square: int = 8) -> np.ndarray:
    """Straight RGBA frames over a gray checkerboard → opaque RGB frames (f, h, w, 3) uint8, for previews."""
    height, width = rgba_fhwc_uint8.shape[-3:-1]
    board_hw1_01 = checkerboard_uint8(height, width, square)[..., None].astype(np.float32) / 255.0
    rgb_01 = rgba_fhwc_uint8[..., :3].astype(np.float32) / 255.0
    alpha_01 = rgba_fhwc_uint8[..., 3:4].astype(np.float32) / 255.0
    rgb_out_01 = board_hw1_01 + (rgb_01 - board_hw1_01) * alpha_01
    return np.clip(np.rint(rgb_out_01 * 255.0), 0, 255).astype(np.uint8)


def pad_color_under_transparent(rgba_fhwc_uint8: np.ndarray) -> np.ndarray:
    """Fill RGB under alpha 0 with nearby visible colour (edge padding), so 4:2:0 chroma does not bleed.

    A push-pull pyramid over all frames at once. Push: halve the frames level by level, summing
    alpha-weighted colour and alpha over 2×2 blocks. Pull: walking back up, a block with visible
    pixels takes their alpha-weighted mean colour; a block without takes (from the 4×4-pixel level
    up) the mean over its 3×3 neighbourhood of blocks at the same level if that holds visible
    pixels, else its parent's colour.
    So a transparent pixel gets the colour of visible pixels about as near as the nearest ones: a 2×2
    block that mixes visible and transparent pixels (what one 4:2:0 chroma sample covers) keeps the
    visible pixels' own mean, pixels next to an edge take that edge's colour, and far away the fill is
    the mean of ever larger blocks, flat and cheap to encode. Alpha is unchanged; pixels with alpha > 0
    are unchanged; a frame with nothing visible is returned as it was. Accepts (h, w, 4) or
    (f, h, w, 4). Works on planes (c, f, h, w) so every pass runs over contiguous rows.
    """
    single = rgba_fhwc_uint8.ndim == 3
    rgba = rgba_fhwc_uint8[None] if single else rgba_fhwc_uint8
    out = rgba.copy()
    frames, height, width = rgba.shape[:3]
    fill_fhw = rgba[..., 3] == 0
    if not fill_fhw.any():
        return out[0] if single else out

    # 1. Push: sums of (r·a, g·a, b·a, a) over 2x2 blocks, level by level down to one pixel per frame.
    premul_cfhw = np.empty((4, frames, height, width), np.float32)
    premul_cfhw[3] = rgba[..., 3]
    for channel in range(3):
        np.multiply(rgba[..., channel], premul_cfhw[3], out=premul_cfhw[channel])
    pyramid = [_sum_2x2(premul_cfhw)]  # level 1 (half size) first
    while max(pyramid[-1].shape[-2:]) > 1:
        pyramid.append(_sum_2x2(pyramid[-1]))
    fill_fhw &= (pyramid[-1][3] > 0)[:, :1, :1]  # a frame with nothing visible stays as it was

    # 2. Pull: a block's own mean colour where it has weight; else, from level 2 up, its 3x3
    # neighbourhood's (a 12x12-pixel window at level 2, so edges reach their neighbours); else its parent's.
    colour_cfhw = _mean_colour(pyramid[-1])
    for level, level_cfhw in reversed(list(enumerate(pyramid[:-1], start=1))):
        level_height, level_width = level_cfhw.shape[-2:]
        colour_cfhw = colour_cfhw.repeat(2, axis=-2).repeat(2, axis=-1)[..., :level_height, :level_width]
        if level >= 2:
            around_cfhw = _sum_3x3(level_cfhw)
            np.copyto(colour_cfhw, _mean_colour(around_cfhw), where=around_cfhw[3] > 0)
        np.copyto(colour_cfhw, _mean_colour(level_cfhw), where=level_cfhw[3] > 0)

    # 3. Level 0 keeps its own colour wherever alpha > 0; each transparent pixel takes its 2x2 block's.
    colour_cfhw_uint8 = np.clip(np.rint(colour_cfhw), 0, 255).astype(np.uint8)
    for dy in (0, 1):
        for dx in (0, 1):
            fill_sub_fhw = fill_fhw[:, dy::2, dx::2]
            sub_height, sub_width = fill_sub_fhw.shape[-2:]
            for channel in range(3):
                np.copyto(
                    out[:, dy::2, dx::2, channel],
                    colour_cfhw_uint8[channel, :, :sub_height, :sub_width],
                    where=fill_sub_fhw,
                )
    return out[0] if single else out


def _sum_2x2(planes: np.ndarray) -> np.ndarray:
    """(..., h, w) → (..., ⌈h/2⌉, ⌈w/2⌉): sums over 2x2 blocks; an odd last row/column is summed with 0."""
    height, width = planes.shape[-2:]
    if height % 2 or width % 2:
        planes = np.pad(planes, [(0, 0)] * (planes.ndim - 2) + [(0, height % 2), (0, width % 2)])
    rows = planes[..., 0::2, :] + planes[..., 1::2, :]
    return rows[..., 0::2] + rows[..., 1::2]


def _sum_3x3(planes: np.ndarray) -> np.ndarray:
    """(..., h, w) → (..., h, w): each element's sum over its 3x3 neighbourhood (zeros beyond the edge)."""
    padded = np.pad(planes, [(0, 0)] * (planes.ndim - 2) + [(1, 1), (1, 1)])
    rows = padded[..., :-2, :] + padded[..., 1:-1, :] + padded[..., 2:, :]
    return rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]


def _mean_colour(premul_cfhw: np.ndarray) -> np.ndarray:
    """Sums of (r·a, g·a, b·a, a) → the alpha-weighted mean colour (3, f, h, w); 0 where a sums to 0."""
    return premul_cfhw[:3] / np.maximum(premul_cfhw[3], 1e-12)


def resize_rgba(rgba_hwc_uint8: np.ndarray, width: int, height: int) -> np.ndarray:
    """Alpha-correct resize of one straight RGBA image: resize premultiplied (float), then unpremultiply.

    Resizing straight colour would drag the (meaningless) colour under alpha 0 into visible edges;
    premultiplying first weights every colour by its coverage. Lanczos, with overshoot clipped.
    Accepts (h, w, 4).
    """
    if width < 1 or height < 1:
        raise UsageError(f"resize: size {width}x{height} must be at least 1x1.")
    if rgba_hwc_uint8.shape[:2] == (height, width):
        return rgba_hwc_uint8.copy()
    rgba_f32 = rgba_hwc_uint8.astype(np.float32) / 255.0
    alpha_01 = rgba_f32[..., 3:4]
    premul_hwc_01 = np.concatenate([premultiply(rgba_f32[..., :3], alpha_01), alpha_01], axis=-1)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(premul_hwc_01[..., c]), mode="F").resize(
                (width, height), Image.Resampling.LANCZOS
            )
        )
        for c in range(4)
    ]
    resized_01 = np.stack(channels, axis=-1)
    # Divide by the unclipped alpha so Lanczos overshoot scales colour and alpha alike, then clip.
    rgb_out_01 = unpremultiply(resized_01[..., :3], resized_01[..., 3:4].clip(min=0.0))
    out = np.concatenate([rgb_out_01, resized_01[..., 3:4].clip(0.0, 1.0)], axis=-1)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def resize_rgba_frames(rgba_fhwc_uint8: np.ndarray, width: int, height: int) -> np.ndarray:
    """`resize_rgba` on every frame of an (f, h, w, 4) clip."""
    return np.stack([resize_rgba(frame, width, height) for frame in rgba_fhwc_uint8])


def parse_color(text: str) -> tuple[int, int, int]:
    """Parse a colour: `#rrggbb`, `#rgb`, a CSS name (white, black, gray, …) or `r,g,b` (0–255 each)."""
    value = text.strip()
    if "," in value and not value.lower().startswith(("rgb", "hsl", "hsv")):
        parts = [p.strip() for p in value.split(",")]
        if len(parts) == 3 and all(p.isdigit() for p in parts) and all(0 <= int(p) <= 255 for p in parts):
            return int(parts[0]), int(parts[1]), int(parts[2])
        raise UsageError(
            f"colour {text!r} is not valid; give r,g,b with three integers 0–255 (e.g. 255,255,255), "
            "#rrggbb or a name like white."
        )
    try:
        rgb = ImageColor.getrgb(value)
    except ValueError:
        raise UsageError(
            f"colour {text!r} is not valid; give #rrggbb (e.g. #00ff00), r,g,b (e.g. 0,255,0) "
            "or a name like white, black or gray."
        ) from None
    return int(rgb[0]), int(rgb[1]), int(rgb[2])
