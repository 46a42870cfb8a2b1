"""HEVC with alpha for Apple platforms, which only Apple's VideoToolbox encoder writes.

FFmpeg's libx265 in the PyAV wheels is built without alpha-layer support ("Loaded libx265 does not
support alpha layer encoding"), so the only encoder is `hevc_videotoolbox`, present in PyAV's macOS
builds. It takes BGRA frames; `alpha_quality` > 0 makes it store the alpha layer. The stream is tagged
`hvc1`, the sample entry Safari and QuickTime require.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from layeranim import video_io
from layeranim.errors import LayerAnimError

ENCODER = "hevc_videotoolbox"
ALTERNATIVES = (
    "use target 'web' (VP9 WebM for Chromium/Firefox plus a stacked-alpha MP4 that Safari plays through "
    "WebGL), target 'premiere' (ProRes 4444 .mov, which Apple's apps read), or run this on macOS"
)


def hevc_alpha_available() -> bool:
    """Whether this PyAV build has Apple's VideoToolbox HEVC encoder."""
    return ENCODER in av.codecs_available


def require_hevc_alpha() -> None:
    """Raise the one clear error (exit 1) when HEVC with alpha cannot be written here."""
    if not hevc_alpha_available():
        raise LayerAnimError(
            f"target 'apple' needs HEVC with alpha, which only Apple's VideoToolbox encoder ({ENCODER}, in "
            f"PyAV on macOS) writes, and this PyAV has no {ENCODER}; {ALTERNATIVES}."
        )


def write_hevc_alpha(
    path: str | Path, rgba_fhwc_uint8: np.ndarray, fps: float, *, overwrite: bool = False
) -> Path:
    """Write straight RGBA frames as HEVC with alpha in a QuickTime .mov (macOS only). Atomic."""
    require_hevc_alpha()
    target = Path(path)
    height, width = rgba_fhwc_uint8.shape[1:3]
    # 4:2:0 HEVC wants even sizes: repeat the last row/column when odd.
    padded = np.pad(rgba_fhwc_uint8, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    with video_io.atomic_output(target, overwrite) as temp:
        try:
            with av.open(str(temp), "w", format="mov") as container:
                stream = container.add_stream(
                    ENCODER, rate=Fraction(fps).limit_denominator(1001), options={"alpha_quality": "0.75"}
                )
                stream.width, stream.height, stream.pix_fmt = padded.shape[2], padded.shape[1], "bgra"
                stream.codec_context.codec_tag = "hvc1"
                for rgba_hwc_uint8 in padded:
                    bgra = np.ascontiguousarray(rgba_hwc_uint8[..., [2, 1, 0, 3]])
                    for packet in stream.encode(av.VideoFrame.from_ndarray(bgra, format="bgra")):
                        container.mux(packet)
                for packet in stream.encode(None):
                    container.mux(packet)
        except av.FFmpegError as exc:
            raise LayerAnimError(f"encoding {str(target)!r} as HEVC with alpha failed: {exc}.") from exc
    return target
