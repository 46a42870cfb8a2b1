"""Sprite sheets: frames packed into one straight-alpha PNG, with the JSON that 2D engines read.

A sheet is a grid of equal cells, row-major, frame 0 at the top left; frames are neither trimmed nor
rotated, so every rectangle is the whole frame. Two descriptions are written next to it:
- TexturePacker's "JSON (Hash)": `frames{name: {frame, rotated, trimmed, spriteSourceSize, sourceSize}}`
  and `meta{app, version, image, format, size, scale}` (Phaser, PixiJS, Cocos, Defold importers);
- Aseprite's JSON export (array form): `frames[{filename, frame, …, duration}]` with each frame's
  duration in milliseconds, and `meta.frameTags` naming the animation.

Axis legend: f frames, h height, w width, c channels (RGBA).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from layeranim._version import __version__
from layeranim.errors import UsageError

APP_NAME = "layeranim"


@dataclass(frozen=True)
class SpriteRect:
    """Where one frame sits in a sheet, in pixels from the sheet's top-left corner."""

    name: str
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class SpriteSheet:
    """A packed sheet (`rgba_hwc_uint8`, straight alpha) and one rectangle per frame, in frame order."""

    rgba_hwc_uint8: np.ndarray
    rects: tuple[SpriteRect, ...]
    fps: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the sheet."""
        return int(self.rgba_hwc_uint8.shape[1]), int(self.rgba_hwc_uint8.shape[0])


def grid_columns(frames: int, frame_width: int, frame_height: int) -> int:
    """Columns that make the sheet closest to square (fewer texture-size surprises in engines)."""
    best = 1
    best_score = math.inf
    for columns in range(1, frames + 1):
        rows = math.ceil(frames / columns)
        width, height = columns * frame_width, rows * frame_height
        score = max(width, height) / min(width, height) + (columns * rows - frames) * 1e-3
        if score < best_score:
            best, best_score = columns, score
    return best


def pack_sheet(
    rgba_fhwc_uint8: np.ndarray,
    fps: float,
    *,
    columns: int | None = None,
    padding: int = 0,
    name: str = "frame",
) -> SpriteSheet:
    """Pack frames into a grid sheet; `padding` transparent pixels between cells; names `{name}_00000.png`."""
    if rgba_fhwc_uint8.ndim != 4 or rgba_fhwc_uint8.shape[-1] != 4 or rgba_fhwc_uint8.dtype != np.uint8:
        raise UsageError(
            f"frames must be uint8 (frames, height, width, 4) straight RGBA, got {rgba_fhwc_uint8.dtype} "
            f"{tuple(rgba_fhwc_uint8.shape)}."
        )
    frames, height, width = rgba_fhwc_uint8.shape[:3]
    if columns is None:
        columns = grid_columns(frames, width + padding, height + padding)
    if not isinstance(columns, int) or columns < 1:
        raise UsageError(f"columns {columns!r} must be a positive integer (or None to choose).")
    if not isinstance(padding, int) or padding < 0:
        raise UsageError(f"padding {padding!r} must be 0 or more pixels.")
    columns = min(columns, frames)
    rows = math.ceil(frames / columns)
    sheet_hwc = np.zeros(
        (rows * height + (rows - 1) * padding, columns * width + (columns - 1) * padding, 4), np.uint8
    )
    rects = []
    for index in range(frames):
        row, column = divmod(index, columns)
        x, y = column * (width + padding), row * (height + padding)
        sheet_hwc[y : y + height, x : x + width] = rgba_fhwc_uint8[index]
        rects.append(SpriteRect(f"{name}_{index:05d}.png", x, y, width, height))
    return SpriteSheet(sheet_hwc, tuple(rects), float(fps))


def frame_durations_ms(frames: int, fps: float) -> list[int]:
    """Whole-millisecond durations whose running sum stays within 0.5 ms of the true timeline."""
    edges = [round(index * 1000.0 / fps) for index in range(frames + 1)]
    return [max(1, end - begin) for begin, end in itertools.pairwise(edges)]


def _rect_dict(rect: SpriteRect) -> dict[str, int]:
    return {"x": rect.x, "y": rect.y, "w": rect.w, "h": rect.h}


def _frame_entry(rect: SpriteRect) -> dict[str, Any]:
    return {
        "frame": _rect_dict(rect),
        "rotated": False,
        "trimmed": False,
        "spriteSourceSize": {"x": 0, "y": 0, "w": rect.w, "h": rect.h},
        "sourceSize": {"w": rect.w, "h": rect.h},
    }


def texturepacker_json(sheet: SpriteSheet, image_name: str) -> dict[str, Any]:
    """TexturePacker "JSON (Hash)" for `sheet`, whose PNG is `image_name` (relative to the JSON)."""
    width, height = sheet.size
    return {
        "frames": {rect.name: _frame_entry(rect) for rect in sheet.rects},
        "meta": {
            "app": APP_NAME,
            "version": __version__,
            "image": image_name,
            "format": "RGBA8888",
            "size": {"w": width, "h": height},
            "scale": "1",
        },
    }


def aseprite_json(sheet: SpriteSheet, image_name: str, *, tag: str = "default") -> dict[str, Any]:
    """Aseprite's JSON export (array form): per-frame durations in ms and one forward frame tag."""
    width, height = sheet.size
    durations = frame_durations_ms(len(sheet.rects), sheet.fps)
    return {
        "frames": [
            {"filename": rect.name, **_frame_entry(rect), "duration": duration}
            for rect, duration in zip(sheet.rects, durations, strict=True)
        ],
        "meta": {
            "app": APP_NAME,
            "version": __version__,
            "image": image_name,
            "format": "RGBA8888",
            "size": {"w": width, "h": height},
            "scale": "1",
            "frameTags": [{"name": tag, "from": 0, "to": len(sheet.rects) - 1, "direction": "forward"}],
            "layers": [{"name": tag, "opacity": 255, "blendMode": "normal"}],
            "slices": [],
        },
    }
