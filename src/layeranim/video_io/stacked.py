"""`mp4-stacked`: straight RGBA as an opaque MP4 twice as tall, colour on top and alpha as luma below.

The portable web answer for alpha video (Safari plays no VP9 alpha, Android no alpha at all): any
browser decodes the H.264 (or AV1) MP4, and a small WebGL shader takes colour from the top half and
alpha from the bottom half, the packing AVPro (Unity) and jakearchibald/stacked-alpha-video use.

File layout (one frame is `2·Hp` rows of `Wp` pixels; `H`×`W` is the clip's size):
- rows `0 … H-1`: the colour, **straight** alpha, edge-padded under alpha 0
  (`alpha.pad_color_under_transparent`), so that 4:2:0 chroma does not bleed into soft edges;
- rows `Hp … Hp+H-1`: the alpha as grey (R = G = B = alpha), i.e. luma with neutral chroma;
- the rest is padding: each half's size is rounded up to even (the last row/column repeated), then
  each half gets black rows up to `Hp`, a multiple of 16 at least 8 rows more than the clip. That
  black guard band sits between the colour and the alpha: without it, the codec's filters and motion
  compensation smear the colour's bottom rows into the alpha's top rows (alpha 3–4 instead of 0 along
  the clip's top edge, measured with H.264).
A player takes `Hp` = picture height / 2 and crops each half to `clip_width`×`clip_height`.
Both halves go through the same BT.709 limited-range conversion, tagged in the stream, so a player that
converts to RGB gets alpha back in any channel of the bottom half.

Container metadata (MP4 `mdta` keys, read by FFmpeg/ffprobe):
- `alpha_layout` = `stacked`: marks the file; `probe` reports `format="mp4-stacked"` and
  `alpha_layout="stacked"`, `read_video` returns RGBA;
- `clip_width`, `clip_height`: the clip's size before the even-size padding (crop each half to it);
- `alpha_mode`: `straight` (or `premultiplied` when written with `alpha_mode="premultiplied"`).

Axis legend: f frames, h height, w width, c channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from layeranim.video_io.formats import QualitySpec

LAYOUT_KEY = "alpha_layout"
LAYOUT_STACKED = "stacked"
WIDTH_KEY = "clip_width"
HEIGHT_KEY = "clip_height"
ALPHA_MODE_KEY = "alpha_mode"


@dataclass(frozen=True)
class StackedCodec:
    """One encoder `mp4-stacked` can use: its options and what `quality` means for it."""

    encoder: str
    options: dict[str, str] = field(default_factory=dict)
    quality: QualitySpec | None = None


STACKED_CODECS: dict[str, StackedCodec] = {
    "h264": StackedCodec(
        "libx264",
        {"preset": "medium", "profile": "high"},
        QualitySpec("crf", "CRF", 0, 51, 18, "lower"),
    ),
    "av1": StackedCodec(
        "libsvtav1",
        {"preset": "8"},
        QualitySpec("crf", "CRF", 0, 63, 30, "lower"),
    ),
}
DEFAULT_STACKED_CODEC = "h264"
STACKED_CODEC_ALIASES = {
    "avc": "h264",
    "x264": "h264",
    "libx264": "h264",
    "svtav1": "av1",
    "libsvtav1": "av1",
}


GUARD_ROWS = 8  # at least this many black rows between the colour and the alpha
ROW_MULTIPLE = 16  # each half's height: a multiple of H.264's macroblock


def half_size(height: int, width: int) -> tuple[int, int]:
    """(Hp, Wp): the size of each half for a clip of `height`×`width`."""
    even_height = height + height % 2
    half_height = -(-(even_height + GUARD_ROWS) // ROW_MULTIPLE) * ROW_MULTIPLE
    return half_height, width + width % 2


def stack(rgba_fhwc_uint8: np.ndarray) -> np.ndarray:
    """(f, h, w, 4) straight RGBA → (f, 2·Hp, Wp, 3) RGB: colour on top, alpha as grey below."""
    frames, height, width = rgba_fhwc_uint8.shape[:3]
    half_height, half_width = half_size(height, width)
    even_height = height + height % 2
    padded = np.pad(
        rgba_fhwc_uint8, ((0, 0), (0, even_height - height), (0, half_width - width), (0, 0)), mode="edge"
    )
    stacked_fhwc = np.zeros((frames, 2 * half_height, half_width, 3), np.uint8)  # guard bands: black
    stacked_fhwc[:, :even_height] = padded[..., :3]
    stacked_fhwc[:, half_height : half_height + even_height] = padded[..., 3:4]  # grey: R = G = B = alpha
    return stacked_fhwc


def metadata(height: int, width: int, alpha_mode: str) -> dict[str, str]:
    """The container tags that mark a stacked file and record the clip's own size."""
    return {
        LAYOUT_KEY: LAYOUT_STACKED,
        WIDTH_KEY: str(width),
        HEIGHT_KEY: str(height),
        ALPHA_MODE_KEY: alpha_mode,
    }


def clip_size(tags: dict[str, str], coded_height: int, coded_width: int) -> tuple[int, int]:
    """(height, width) of the clip in a stacked file: from its tags, else the top half's size."""
    try:
        height, width = int(tags[HEIGHT_KEY]), int(tags[WIDTH_KEY])
    except (KeyError, ValueError):
        return coded_height // 2, coded_width
    if 0 < height <= coded_height // 2 and 0 < width <= coded_width:
        return height, width
    return coded_height // 2, coded_width


def unstack(frame: Any, height: int, width: int) -> np.ndarray:
    """A decoded stacked frame → (height, width, 4) straight RGBA (alpha from the bottom half's luma)."""
    half = frame.height // 2
    rgb_hwc = frame.to_ndarray(format="rgb24")[:height, :width]
    # The luma plane, expanded from limited to full range by swscale: the alpha as written.
    gray_hw = frame.reformat(format="gray").to_ndarray()[half : half + height, :width]
    return np.concatenate([rgb_hwc, gray_hw[..., None]], axis=-1)


def is_stacked(tags: dict[str, str]) -> bool:
    return tags.get(LAYOUT_KEY) == LAYOUT_STACKED
