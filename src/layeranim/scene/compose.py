"""Compositing layers into one clip: straight-alpha "over" in float, placed, clipped, timed.

The operator is Porter-Duff "over" on straight (non-premultiplied) colour, with the output alpha
(Porter & Duff, "Compositing Digital Images", SIGGRAPH 1984):

    a_out   = a_s + a_d · (1 − a_s)
    rgb_out = (rgb_s · a_s + rgb_d · a_d · (1 − a_s)) / a_out      (0 where a_out = 0)

so a transparent canvas stays transparent where no layer covers it, and a coloured canvas (a_d = 1) gives
an opaque result. A layer's `opacity` scales its alpha. Layers keep their own size; where they extend
past the canvas they are clipped.

Time: every layer is shown from canvas frame `start`; a clip shorter than the canvas holds its last
frame (`repeat="hold"`) or starts over (`repeat="loop"`); a still is the same frame throughout. Clips
must share the canvas's frame rate, or be resampled to it by nearest frame (`resample_nearest`).

Axes: f frames, h height, w width, c channels (RGBA order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from layeranim.errors import UsageError
from layeranim.scene.model import Canvas, Scene, SceneError

Repeat = Literal["hold", "loop"]
REPEAT_MODES = ("hold", "loop")


@dataclass(frozen=True)
class LayerClip:
    """One layer to composite: its frames (a still has one), where, how strongly, and from when."""

    rgba_fhwc_uint8: np.ndarray
    position: tuple[int, int] = (0, 0)
    opacity: float = 1.0
    start: int = 0  # first canvas frame the layer appears in
    fps: float | None = None  # None: a still (no frame rate of its own)
    name: str = ""

    @property
    def frames(self) -> int:
        return int(self.rgba_fhwc_uint8.shape[0])


def over(
    dst_rgb: np.ndarray, dst_a: np.ndarray, src_rgb: np.ndarray, src_a: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Straight-alpha "over" (Porter & Duff 1984) in float [0, 1] → (rgb_out, a_out); alpha is (…, 1)."""
    out_a = src_a + dst_a * (1.0 - src_a)
    premul = src_rgb * src_a + dst_rgb * dst_a * (1.0 - src_a)
    out_rgb = np.where(out_a > 0, premul / np.maximum(out_a, 1e-12), 0.0)
    return out_rgb, out_a


def frame_index(canvas_frame: int, clip: LayerClip, repeat: Repeat) -> int | None:
    """Which of the clip's frames shows at `canvas_frame` (None: not yet started)."""
    local = canvas_frame - clip.start
    if local < 0:
        return None
    if clip.frames == 1:
        return 0
    if local < clip.frames:
        return local
    return clip.frames - 1 if repeat == "hold" else local % clip.frames


def composite(
    clips: Sequence[LayerClip],
    *,
    width: int,
    height: int,
    frames: int,
    background: tuple[int, int, int] | None = None,
    repeat: Repeat = "hold",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Composite `clips` (bottom to top) onto a canvas → (frames, height, width, 4) uint8 straight RGBA.

    `background` None keeps the canvas transparent; an RGB colour makes it opaque. Frames are computed one
    at a time in float64.
    """
    if repeat not in REPEAT_MODES:
        raise UsageError(f"repeat {repeat!r} is not one of {', '.join(REPEAT_MODES)}.")
    if width < 1 or height < 1 or frames < 1:
        raise UsageError(f"canvas {width}x{height}, {frames} frames: every size must be at least 1.")
    out = np.empty((frames, height, width, 4), dtype=np.uint8)
    for k in range(frames):
        rgb = np.zeros((height, width, 3), dtype=np.float64)
        alpha = np.zeros((height, width, 1), dtype=np.float64)
        if background is not None:
            rgb[:] = np.asarray(background, dtype=np.float64) / 255.0
            alpha[:] = 1.0
        for clip in clips:
            index = frame_index(k, clip, repeat)
            if index is None or clip.opacity <= 0.0:
                continue
            _place_over(rgb, alpha, clip.rgba_fhwc_uint8[index], clip.position, clip.opacity)
        out[k, ..., :3] = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
        out[k, ..., 3] = np.clip(np.rint(alpha[..., 0] * 255.0), 0, 255).astype(np.uint8)
        if progress is not None:
            progress(k + 1, frames)
    return out


def _place_over(
    rgb: np.ndarray, alpha: np.ndarray, layer_hwc_uint8: np.ndarray, position: tuple[int, int], opacity: float
) -> None:
    """Composite one layer frame over the canvas in place, clipped to the canvas."""
    canvas_h, canvas_w = alpha.shape[:2]
    layer_h, layer_w = layer_hwc_uint8.shape[:2]
    x, y = position
    cx0, cy0 = max(x, 0), max(y, 0)
    cx1, cy1 = min(x + layer_w, canvas_w), min(y + layer_h, canvas_h)
    if cx1 <= cx0 or cy1 <= cy0:
        return  # entirely off the canvas
    src = layer_hwc_uint8[cy0 - y : cy1 - y, cx0 - x : cx1 - x].astype(np.float64) / 255.0
    src_a = src[..., 3:] * opacity
    region = (slice(cy0, cy1), slice(cx0, cx1))
    rgb[region], alpha[region] = over(rgb[region], alpha[region], src[..., :3], src_a)


def resample_nearest(rgba_fhwc_uint8: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """A clip at `src_fps` → the same duration at `dst_fps`, each output frame the nearest source frame."""
    if src_fps <= 0 or dst_fps <= 0:
        raise UsageError(f"frame rates must be positive; got {src_fps} and {dst_fps}.")
    count = rgba_fhwc_uint8.shape[0]
    if math.isclose(src_fps, dst_fps, rel_tol=1e-6):
        return rgba_fhwc_uint8
    out_count = max(1, round(count * dst_fps / src_fps))
    # Output frame k shows at time k / dst; the nearest source frame is round(k · src / dst).
    index = np.minimum(np.floor(np.arange(out_count) * src_fps / dst_fps + 0.5).astype(np.int64), count - 1)
    return rgba_fhwc_uint8[index]


def conform_fps(
    clips: Sequence[LayerClip], fps: float | None, *, what: str = "input"
) -> tuple[list[LayerClip], float]:
    """Give every clip one frame rate: `fps` when given (clips resampled by nearest frame), else theirs.

    Without `fps`, clips with different frame rates are refused: silently dropping or doubling frames
    changes their timing. Stills have no frame rate and take any.
    """
    rates = [(clip.name, clip.fps) for clip in clips if clip.fps is not None]
    if fps is None:
        distinct = sorted({rate for _, rate in rates})
        if len(distinct) > 1:
            listing = ", ".join(f"{name} at {rate:g} fps" for name, rate in rates)
            raise UsageError(
                f"the {what}s have different frame rates ({listing}); pass fps=<rate> (the output rate) "
                "to resample them by nearest frame."
            )
        out_fps = distinct[0] if distinct else None
        if out_fps is None:
            raise UsageError(f"every {what} is a still, so there is no frame rate; pass fps=<rate>.")
        return list(clips), out_fps
    conformed = [
        clip
        if clip.fps is None
        else LayerClip(
            resample_nearest(clip.rgba_fhwc_uint8, clip.fps, fps),
            clip.position,
            clip.opacity,
            clip.start,
            fps,
            clip.name,
        )
        for clip in clips
    ]
    return conformed, fps


# ---------------------------------------------------------------------------------------------------
# Inputs: files and scenes.


def read_layer_clip(
    path: Path, *, position: tuple[int, int] = (0, 0), opacity: float = 1.0, start: int = 0, name: str = ""
) -> LayerClip:
    """Read a still or a clip (any format layeranim reads) as a `LayerClip` (a still has `fps=None`)."""
    from layeranim.video_io import probe, read_video

    if not 0.0 <= opacity <= 1.0:
        raise UsageError(f"opacity {opacity} of {str(path)!r} must be from 0 to 1.")
    if start < 0:
        raise UsageError(f"start {start} of {str(path)!r} must be 0 or more (a canvas frame).")
    info = probe(path)
    clip = read_video(path)
    still = info.frames <= 1 and Path(path).is_file() and Path(path).suffix.lower() in _STILL_SUFFIXES
    return LayerClip(
        clip.rgba_fhwc_uint8,
        position=position,
        opacity=opacity,
        start=start,
        fps=None if still else clip.fps,
        name=name or Path(path).name,
    )


_STILL_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def scene_layer_clips(scene: Scene, files: dict[str, Path] | None = None) -> list[LayerClip]:
    """The visible layers of a scene as clips: each layer's `video` or `image` (or `files[name]`, e.g. the
    layer videos `layers` rendered). A layer that still needs rendering (prompt or motion) without a file
    is refused."""
    clips = []
    for layer in scene.layers:
        if not layer.visible:
            continue
        path = (files or {}).get(layer.name)
        if path is None:
            if layer.prompt is not None or layer.motion is not None:
                key = "motion" if layer.motion is not None else "prompt"
                raise SceneError(
                    f"{layer.label}: {key} needs rendering, which compositing does not do; render the scene "
                    "(render_scene, the `layers` command: it writes the composite too), or point the layer "
                    "at a video.",
                    layer=layer.name,
                    key=key,
                )
            path = layer.video if layer.video is not None else layer.image
        assert path is not None
        clips.append(
            read_layer_clip(
                path, position=layer.position, opacity=layer.opacity, start=layer.start, name=layer.name
            )
        )
    return clips


def compose_scene(
    scene: Scene,
    *,
    fps: float | None = None,
    repeat: Repeat = "hold",
    files: dict[str, Path] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Composite a scene whose layers are files (stills or clips) → the canvas's frames, uint8 RGBA.

    Clips must run at the canvas's fps unless `fps` is given, which then replaces the canvas's and every
    clip is resampled to it by nearest frame.
    """
    clips = scene_layer_clips(scene, files)
    canvas = scene.canvas
    if fps is None:
        for clip in clips:
            if clip.fps is not None and not math.isclose(clip.fps, canvas.fps, rel_tol=1e-6):
                layer = next(layer for layer in scene.layers if layer.name == clip.name)
                key = "video" if layer.video is not None else "image"
                raise SceneError(
                    f"{layer.label}: {key} runs at {clip.fps:g} fps but the canvas at {canvas.fps:g} fps; "
                    "pass fps=<rate> (the output rate) to resample every clip by nearest frame, or "
                    "make the rates equal.",
                    layer=layer.name,
                    key=key,
                )
        out_fps = canvas.fps
    else:
        clips, out_fps = conform_fps(clips, fps, what="layer")
    frames = canvas.frames if fps is None else max(1, round(canvas.frames * out_fps / canvas.fps))
    return composite(
        clips,
        width=canvas.width,
        height=canvas.height,
        frames=frames,
        background=canvas.background,
        repeat=repeat,
        progress=progress,
    )


def inline_canvas(
    clips: Sequence[LayerClip],
    fps: float,
    *,
    width: int | None = None,
    height: int | None = None,
    frames: int | None = None,
    background: tuple[int, int, int] | None = None,
) -> Canvas:
    """The canvas for inline inputs: given sizes, else one that reaches every layer's right/bottom edge;
    as many frames as the longest clip (counting its start)."""
    if width is None:
        width = max(clip.position[0] + clip.rgba_fhwc_uint8.shape[2] for clip in clips)
    if height is None:
        height = max(clip.position[1] + clip.rgba_fhwc_uint8.shape[1] for clip in clips)
    if width < 1 or height < 1:
        raise UsageError(f"the canvas would be {width}x{height}; give width=<pixels> and height=<pixels>.")
    if frames is None:
        frames = max(clip.start + clip.frames for clip in clips)
    return Canvas(width=width, height=height, frames=frames, fps=fps, background=background)
