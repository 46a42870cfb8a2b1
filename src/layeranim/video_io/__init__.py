"""Reading and writing straight-alpha RGBA clips: PyAV for video, Pillow where PyAV cannot.

A clip is `rgba_fhwc_uint8`: (frames, height, width, 4) uint8, **straight** alpha, plus its fps.

The package, one job per module:
- `formats`: the one table of writable formats (`FORMATS`) and how a path or name resolves to a row.
- `write`: `write_video` and `check_output`: validate, plan encoder settings, encode.
- `read`: `read_video` and `probe`, which share one scan of each source.
- `sequences`: PNG-sequence folders and `frame_%05d.png` patterns.
- `images`: single RGBA images (the stage-one PNG).
- `previews`: opaque checkerboard previews.
- `atomic`: `atomic_output`, the one helper for writing a file or folder atomically.

Axis legend: f frames, h height, w width, c channels (RGBA).
"""

from __future__ import annotations

from layeranim.progress import Progress as ProgressCallback
from layeranim.video_io.atomic import atomic_output
from layeranim.video_io.formats import (
    ALPHA_MODES,
    DEFAULT_SEQUENCE_FPS,
    FORMATS,
    SEQUENCE_FILE_PATTERN,
    AlphaMode,
    FormatSpec,
    QualitySpec,
    format_names,
    get_format,
    is_sequence_path,
    resolve_output_format,
)
from layeranim.video_io.images import image_has_alpha, read_image, write_image
from layeranim.video_io.previews import h264_available, preview_path, write_preview
from layeranim.video_io.read import Clip, VideoInfo, probe, read_video
from layeranim.video_io.write import check_output, write_video
from layeranim.video_io.write import fps_fraction as _fps_fraction  # noqa: F401  (tests use the old name)

__all__ = [
    "ALPHA_MODES",
    "DEFAULT_SEQUENCE_FPS",
    "FORMATS",
    "SEQUENCE_FILE_PATTERN",
    "AlphaMode",
    "Clip",
    "FormatSpec",
    "ProgressCallback",
    "QualitySpec",
    "VideoInfo",
    "atomic_output",
    "check_output",
    "format_names",
    "get_format",
    "h264_available",
    "image_has_alpha",
    "is_sequence_path",
    "preview_path",
    "probe",
    "read_image",
    "read_video",
    "resolve_output_format",
    "write_image",
    "write_preview",
    "write_video",
]
