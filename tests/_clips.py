"""A small synthetic straight-alpha clip that exercises what alpha encoders get wrong.

- a transparent background (alpha 0, RGB 0: black under transparency, the worst case for 4:2:0);
- an opaque rectangle whose R runs along x, G along y and B changes every frame;
- a moving azure disc (0, 160, 255) with an opaque core and a linear soft edge;
- an orange bar (255, 128, 0) whose alpha ramps 0 → 255 across x (constant colour: the straight-alpha check).
"""

from __future__ import annotations

import numpy as np

FRAMES, HEIGHT, WIDTH = 8, 64, 96
ORANGE = (255, 128, 0)
AZURE = (0, 160, 255)
BAR_ROWS = slice(48, 60)
RECT_ROWS, RECT_COLS = slice(6, 38), slice(6, 46)


def synthetic_clip(frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """(frames, height, width, 4) uint8 straight RGBA with soft edges, an alpha ramp and motion."""
    yy, xx = np.mgrid[0:height, 0:width]
    clip = np.zeros((frames, height, width, 4), np.uint8)
    for f in range(frames):
        frame = clip[f]
        frame[RECT_ROWS, RECT_COLS, 0] = (xx[RECT_ROWS, RECT_COLS] * 5) % 256
        frame[RECT_ROWS, RECT_COLS, 1] = (yy[RECT_ROWS, RECT_COLS] * 6) % 256
        frame[RECT_ROWS, RECT_COLS, 2] = (f * 30) % 256
        frame[RECT_ROWS, RECT_COLS, 3] = 255
        # A disc moving right: opaque core of radius 8, soft edge out to radius 14.
        distance = np.hypot(xx - (60 + 2 * f), yy - 24)
        coverage = np.clip((14.0 - distance) / 6.0, 0.0, 1.0)
        disc = coverage > 0
        frame[disc, :3] = AZURE
        frame[disc, 3] = np.rint(coverage[disc] * 255).astype(np.uint8)
        # The constant-colour alpha ramp.
        frame[BAR_ROWS, :, :3] = ORANGE
        frame[BAR_ROWS, :, 3] = np.rint(np.linspace(0, 255, width)).astype(np.uint8)[None, :]
    return clip


def interior_mask(rgba_fhwc_uint8: np.ndarray, radius: int = 3) -> np.ndarray:
    """Opaque pixels whose whole (2r+1)² neighbourhood is opaque: free of 4:2:0 edge effects."""
    opaque = rgba_fhwc_uint8[..., 3] == 255
    interior = opaque.copy()
    height, width = opaque.shape[1:]
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = np.zeros_like(opaque)
            ys, yd = slice(max(dy, 0), height + min(dy, 0)), slice(max(-dy, 0), height + min(-dy, 0))
            xs, xd = slice(max(dx, 0), width + min(dx, 0)), slice(max(-dx, 0), width + min(-dx, 0))
            shifted[:, yd, xd] = opaque[:, ys, xs]
            interior &= shifted
    return interior


def errors(decoded: np.ndarray, source: np.ndarray) -> dict[str, float]:
    """Alpha and colour error measures between a decoded clip and its source (8-bit levels)."""
    diff = np.abs(decoded.astype(np.int16) - source.astype(np.int16))
    visible = source[..., 3] > 0
    interior = interior_mask(source)
    return {
        "alpha_max": float(diff[..., 3].max()),
        "alpha_mean": float(diff[..., 3].mean()),
        "rgb_visible_max": float(diff[..., :3][visible].max()),
        "rgb_visible_mean": float(diff[..., :3][visible].mean()),
        "rgb_interior_max": float(diff[..., :3][interior].max()),
    }
