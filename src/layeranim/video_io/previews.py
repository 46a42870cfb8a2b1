"""Previews: an opaque, checkerboard-composited copy of a clip that any player shows (MP4, else GIF)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from layeranim import alpha as alpha_ops
from layeranim.errors import LayerAnimError
from layeranim.video_io.atomic import atomic_output
from layeranim.video_io.formats import FORMATS_BY_NAME, PATTERN_RE, FormatSpec
from layeranim.video_io.write import (
    EncodePlan,
    FrameSource,
    encode_av,
    iter_chunks,
    plan_encode,
    validate_clip,
    validate_fps,
)


def h264_available() -> bool:
    """Whether this PyAV build can encode H.264 (needed for MP4 previews)."""
    try:
        av.Codec("libx264", "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


def _h264_available() -> bool:
    # Looked up on the package, so that replacing `video_io.h264_available` (tests do) is seen here.
    from layeranim import video_io

    return video_io.h264_available()


def preview_path(output: str | Path) -> Path:
    """Where the preview of `output` goes: `NAME.preview.mp4` beside it (`.gif` without H.264)."""
    target = Path(str(output).rstrip("/" + os.sep) or ".")
    name = target.name
    match = PATTERN_RE.search(name)
    if match is not None:  # frames/frame_%05d.png → frames/frame.preview.mp4
        stem = name[: match.start()].rstrip("_-. ") or target.parent.name or "frames"
    elif target.is_dir() or target.suffix == "":
        stem = name
    else:
        stem = target.stem
    return target.parent / f"{stem}.preview{'.mp4' if _h264_available() else '.gif'}"


_PREVIEW_MP4 = FormatSpec(
    name="preview-mp4",
    description="opaque H.264 preview",
    extensions=(".mp4",),
    codec="libx264",
    pix_fmt="yuv420p",
    lossless=False,
    alpha="full",
    kind="video",
    matrix="bt601",
)


def write_preview(
    output: str | Path, rgba_fhwc_uint8: FrameSource, fps: float, *, overwrite: bool = False
) -> Path:
    """Write an opaque checkerboard-composited preview beside `output` (MP4 H.264, else GIF); its path.

    `rgba_fhwc_uint8` is an array or an iterable of chunks/frames, as for `write_video`.
    """
    if isinstance(rgba_fhwc_uint8, np.ndarray):
        validate_clip(rgba_fhwc_uint8, fps)
    else:
        validate_fps(fps)
    path = preview_path(output)
    if path.suffix == ".gif":
        plan = plan_encode(FORMATS_BY_NAME["gif"], None, None, 0, None)
        muxer = "gif"
    else:
        plan = EncodePlan(_PREVIEW_MP4, "yuv420p", {"crf": "20", "preset": "veryfast"}, {}, False, False)
        muxer = "mp4"
    chunks = (_opaque(chunk, even=muxer == "mp4") for chunk in iter_chunks(rgba_fhwc_uint8))
    with atomic_output(path, overwrite) as temp:
        try:
            encode_av(temp, chunks, fps, plan, muxer, 0, None)
        except av.FFmpegError as exc:
            raise LayerAnimError(f"writing the preview {str(path)!r} failed: {exc}.") from exc
    return path


def _opaque(rgba_fhwc_uint8: np.ndarray, even: bool) -> np.ndarray:
    """Straight RGBA over the checkerboard, alpha 255; `even` repeats the last row/column to even sizes."""
    rgb_fhwc_uint8 = alpha_ops.composite_over_checkerboard(rgba_fhwc_uint8)
    opaque_fhwc_uint8 = np.concatenate(
        [rgb_fhwc_uint8, np.full((*rgb_fhwc_uint8.shape[:-1], 1), 255, np.uint8)], axis=-1
    )
    if even:  # H.264 4:2:0 needs even sizes
        height, width = opaque_fhwc_uint8.shape[1:3]
        opaque_fhwc_uint8 = np.pad(
            opaque_fhwc_uint8, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge"
        )
    return opaque_fhwc_uint8
