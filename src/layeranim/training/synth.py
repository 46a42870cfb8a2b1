"""A synthetic RGBA video dataset for demos and tests: soft-edged sprites moving over transparency.

Each clip is one coloured shape (circle, square or diamond) with a soft alpha edge that moves in a
straight line across a fully transparent frame while it grows or shrinks a little; its caption says
what it is and where it goes ("a red circle moving to the right"). Clips are written as real alpha videos
through `video_io.write_video` (any alpha format), with captions as sidecar `.txt` files or one
`metadata.jsonl` (the Hugging Face folder convention), so `layeranim train` reads them like real data.

Axis legend: f frames, h height, w width, c channels (RGBA).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layeranim import safety, video_io
from layeranim.errors import UsageError

logger = logging.getLogger(__name__)

SHAPES = ("circle", "square", "diamond")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 57, 70),
    "green": (42, 157, 84),
    "blue": (38, 110, 220),
    "yellow": (244, 200, 40),
    "purple": (140, 70, 200),
    "orange": (247, 127, 0),
}
# direction name → unit motion (dx, dy) in image coordinates (y down)
DIRECTIONS: dict[str, tuple[float, float]] = {
    "to the right": (1.0, 0.0),
    "to the left": (-1.0, 0.0),
    "down": (0.0, 1.0),
    "up": (0.0, -1.0),
    "diagonally down and to the right": (0.7071, 0.7071),
    "diagonally up and to the left": (-0.7071, -0.7071),
}
CAPTION_STYLES = ("txt", "jsonl")
METADATA_FILE = "metadata.jsonl"


@dataclass(frozen=True)
class SpriteMotion:
    """One clip's sprite: what it is, where it starts and how far it travels (all in pixels)."""

    shape: str
    color: str
    direction: str
    center_x: float  # start position
    center_y: float
    travel: float  # distance covered over the clip
    radius: float  # half-size at the start
    growth: float  # radius multiplier at the end (0.8 … 1.25)

    @property
    def caption(self) -> str:
        article = "an" if self.color[0] in "aeiou" else "a"
        return f"{article} {self.color} {self.shape} moving {self.direction}"


@dataclass(frozen=True)
class SynthDataset:
    """What `make_synthetic_dataset` wrote."""

    folder: Path
    clips: list[Path]
    captions: list[str]


def sprite_alpha_hw_01(
    shape: str, center_x: float, center_y: float, radius: float, height: int, width: int, softness: float
) -> np.ndarray:
    """Soft-edged coverage (h, w) in [0, 1] of one shape: a linear ramp `softness` pixels wide at its edge."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = xs + 0.5 - center_x, ys + 0.5 - center_y
    if shape == "circle":
        distance = np.sqrt(dx * dx + dy * dy)
    elif shape == "square":
        distance = np.maximum(np.abs(dx), np.abs(dy))
    elif shape == "diamond":
        distance = (np.abs(dx) + np.abs(dy)) / np.sqrt(2.0)
    else:
        raise UsageError(f"shape {shape!r} is not one of {', '.join(SHAPES)}.")
    return np.clip((radius - distance) / max(softness, 1e-3) + 0.5, 0.0, 1.0)


def render_sprite_clip(motion: SpriteMotion, *, frames: int, width: int, height: int) -> np.ndarray:
    """The clip of one moving sprite as straight RGBA (f, h, w, 4) uint8; transparent around it."""
    if frames < 1 or width < 1 or height < 1:
        raise UsageError(f"clip size {frames} frames × {width}×{height} must be at least 1×1×1.")
    unit_x, unit_y = DIRECTIONS[motion.direction]
    red, green, blue = COLORS[motion.color]
    rgba_fhwc_uint8 = np.zeros((frames, height, width, 4), dtype=np.uint8)
    rgba_fhwc_uint8[..., 0], rgba_fhwc_uint8[..., 1], rgba_fhwc_uint8[..., 2] = red, green, blue
    for index in range(frames):
        progress = index / max(frames - 1, 1)
        radius = motion.radius * (1.0 + (motion.growth - 1.0) * progress)
        alpha_hw_01 = sprite_alpha_hw_01(
            motion.shape,
            motion.center_x + unit_x * motion.travel * progress,
            motion.center_y + unit_y * motion.travel * progress,
            radius,
            height,
            width,
            softness=max(1.5, 0.35 * radius),
        )
        rgba_fhwc_uint8[index, ..., 3] = np.rint(alpha_hw_01 * 255.0).astype(np.uint8)
    return rgba_fhwc_uint8


def random_motion(rng: np.random.Generator, width: int, height: int) -> SpriteMotion:
    """A sprite that stays mostly inside the frame while it moves (drawn from `rng`)."""
    direction = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
    unit_x, unit_y = DIRECTIONS[direction]
    size = min(width, height)
    radius = float(rng.uniform(0.12, 0.2) * size)
    travel = float(rng.uniform(0.3, 0.45) * size)
    # Start so that the whole path keeps the centre at least one radius inside the frame.
    low_x = radius + max(0.0, -unit_x * travel)
    high_x = width - radius - max(0.0, unit_x * travel)
    low_y = radius + max(0.0, -unit_y * travel)
    high_y = height - radius - max(0.0, unit_y * travel)
    return SpriteMotion(
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        color=list(COLORS)[int(rng.integers(len(COLORS)))],
        direction=direction,
        center_x=float(rng.uniform(low_x, max(low_x, high_x))),
        center_y=float(rng.uniform(low_y, max(low_y, high_y))),
        travel=travel,
        radius=radius,
        growth=float(rng.uniform(0.8, 1.25)),
    )


def make_synthetic_dataset(
    folder: str | Path,
    *,
    clips: int = 8,
    frames: int = 16,
    width: int = 64,
    height: int = 64,
    fps: float = 8.0,
    format: str = "webm",
    captions: str = "txt",
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthDataset:
    """Write `clips` sprite videos (+ captions) into `folder`, atomically (the folder appears when complete).

    An existing `folder` is replaced only with `overwrite=True`, and only when everything in it was written
    by layeranim (its `.layeranim-owned.json` lists it); a folder holding anything else is refused.

    `format` is a `video_io` format name or extension (webm, mov, mkv, apng, webp, …); `captions` is `txt`
    (a `clip_000.txt` beside each clip) or `jsonl` (one `metadata.jsonl`). The same seed gives the same clips.
    """
    if clips < 1:
        raise UsageError(f"clips={clips} must be at least 1.")
    if frames < 2:
        raise UsageError(f"frames={frames} must be at least 2.")
    if width < 8 or height < 8:
        raise UsageError(f"width={width}, height={height}: a clip must be at least 8×8 pixels.")
    if frames > safety.MAX_FRAMES:
        raise UsageError(f"frames={frames} is over the limit of {safety.MAX_FRAMES}; use fewer frames.")
    # One clip is in memory at a time (uint8 RGBA, plus the encoder's copies): refuse what cannot fit
    # before numpy tries to allocate it.
    safety.check_image_size(width, height, frames, option=None, max_side=safety.MAX_SIDE)
    if captions not in CAPTION_STYLES:
        raise UsageError(f"captions={captions!r} is not one of {', '.join(CAPTION_STYLES)}.")
    spec = _alpha_format(format)
    extension = spec.extensions[0]

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    written: list[Path] = []
    texts: list[str] = []
    # Only a folder that layeranim itself wrote (all of it) may be replaced: the user's own files survive.
    with safety.replace_folder_contents(folder, overwrite) as staging:
        metadata_lines: list[str] = []
        for index in range(clips):
            motion = random_motion(rng, width, height)
            rgba_fhwc_uint8 = render_sprite_clip(motion, frames=frames, width=width, height=height)
            name = f"clip_{index:03d}{extension}"
            video_io.write_video(staging / name, rgba_fhwc_uint8, fps, format=spec.name)
            if captions == "txt":
                (staging / f"clip_{index:03d}.txt").write_text(motion.caption + "\n", encoding="utf-8")
            else:
                metadata_lines.append(json.dumps({"file_name": name, "text": motion.caption}))
            written.append(folder / name)
            texts.append(motion.caption)
            if progress is not None:
                progress(index + 1, clips)
        if metadata_lines:
            (staging / METADATA_FILE).write_text("\n".join(metadata_lines) + "\n", encoding="utf-8")
    logger.info("wrote %d synthetic clips to %s", clips, folder)
    return SynthDataset(folder=folder, clips=written, captions=texts)


def _alpha_format(format: str) -> video_io.FormatSpec:
    """The video_io format called `format` (a name, alias or extension) that keeps full alpha in one file."""
    name = format.lower().removeprefix(".")
    try:
        spec = video_io.get_format(name)
    except UsageError:
        spec = video_io.resolve_output_format(f"clip.{name}")
    if spec.kind == "sequence":
        raise UsageError(f"format={format!r}: give a single-file format (webm, mov, mkv, apng, webp).")
    if spec.alpha != "full":
        raise UsageError(f"format={format!r} keeps only 1-bit alpha; use webm, mov, mkv, apng or webp.")
    return spec


__all__ = [
    "COLORS",
    "DIRECTIONS",
    "SHAPES",
    "SpriteMotion",
    "SynthDataset",
    "make_synthetic_dataset",
    "random_motion",
    "render_sprite_clip",
    "sprite_alpha_hw_01",
]
