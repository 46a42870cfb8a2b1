"""GIF through libavfilter: one `palettegen` palette for the clip, `paletteuse` to map (and dither) frames.

GIF stores 1-bit alpha: a pixel is either one of 255 colours or the palette's reserved transparent entry.
Pixels with alpha below `alpha_threshold` become transparent. The palette is generated from the
**visible** pixels only (those at or above the threshold, across all frames): `palettegen` counts every
pixel it is given, so the colour under transparent pixels would otherwise take palette entries. The
frames themselves go to `paletteuse` as straight RGBA, which maps them to that palette with the chosen
dithering and marks pixels below the threshold transparent. `benchmarks/bench_gif.py` compares the
dithering modes with the Pillow writer this replaced.

Axis legend: f frames, h height, w width, c channels (RGBA); n pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av
import numpy as np

from layeranim.errors import UsageError

GIF_DITHERS: tuple[str, ...] = (
    "bayer",
    "heckbert",
    "floyd_steinberg",
    "sierra2",
    "sierra2_4a",
    "sierra3",
    "burkes",
    "atkinson",
    "none",
)
# No dithering by default: closer to the source than the old writer at the same size or smaller.
# FFmpeg's error-diffusion modes look smoother on gradients but grow such files 2-2.7x and leave a
# few stray pixels up to 190 levels off; `bayer` is ordered, bounded, and also larger (bench_gif.py).
DEFAULT_GIF_DITHER = "none"
DEFAULT_GIF_ALPHA_THRESHOLD = 128
_SAMPLE_WIDTH = 256  # the visible pixels go to palettegen as rows of this many pixels


def check_gif_options(alpha_threshold: int, dither: str, bayer_scale: int) -> None:
    if not isinstance(alpha_threshold, int) or not 1 <= alpha_threshold <= 255:
        raise UsageError(
            f"alpha_threshold {alpha_threshold!r} must be 1–255: pixels with alpha below it become "
            f"transparent in a GIF (default {DEFAULT_GIF_ALPHA_THRESHOLD})."
        )
    if dither not in GIF_DITHERS:
        raise UsageError(f"dither {dither!r} is unknown; choose one of {', '.join(GIF_DITHERS)}.")
    if not isinstance(bayer_scale, int) or not 0 <= bayer_scale <= 5:
        raise UsageError(
            f"dither bayer:{bayer_scale}: the Bayer scale must be 0–5 (e.g. bayer:3; default 2)."
        )


def _drain(sink: Any) -> Iterator[av.VideoFrame]:
    while True:
        try:
            yield sink.pull()
        except (av.BlockingIOError, av.EOFError):
            return


def _palette(rgba_fhwc_uint8: np.ndarray, alpha_threshold: int) -> av.VideoFrame:
    """`palettegen` over the visible pixels of every frame: 255 colours + the reserved transparent one."""
    visible_n3 = rgba_fhwc_uint8[..., :3][rgba_fhwc_uint8[..., 3] >= alpha_threshold]
    if len(visible_n3) == 0:
        visible_n3 = np.zeros((1, 3), np.uint8)
    rows = -(-len(visible_n3) // _SAMPLE_WIDTH)
    filler = np.resize(visible_n3, (rows * _SAMPLE_WIDTH - len(visible_n3), 3))  # repeats a few pixels
    sample_hwc = np.concatenate([visible_n3, filler]).reshape(rows, _SAMPLE_WIDTH, 3)
    graph = av.filter.Graph()
    source = graph.add_buffer(width=_SAMPLE_WIDTH, height=rows, format="rgb24", time_base=Fraction(1, 1))
    palettegen = graph.add("palettegen", "max_colors=256:reserve_transparent=1:stats_mode=full")
    sink = graph.add("buffersink")
    source.link_to(palettegen)
    palettegen.link_to(sink)
    graph.configure()
    source.push(av.VideoFrame.from_ndarray(np.ascontiguousarray(sample_hwc), format="rgb24"))
    source.push(None)
    return next(_drain(sink))


def gif_frames(
    rgba_fhwc_uint8: np.ndarray,
    time_base: Fraction,
    *,
    alpha_threshold: int = DEFAULT_GIF_ALPHA_THRESHOLD,
    dither: str = DEFAULT_GIF_DITHER,
    bayer_scale: int = 2,
) -> Iterator[av.VideoFrame]:
    """Straight RGBA frames → pal8 frames on one palette for the clip, transparent below the threshold.

    `time_base` is one frame's duration (1/fps): the frames come out numbered in it.
    """
    check_gif_options(alpha_threshold, dither, bayer_scale)
    palette = _palette(rgba_fhwc_uint8, alpha_threshold)
    height, width = rgba_fhwc_uint8.shape[1:3]
    graph = av.filter.Graph()
    video = graph.add_buffer(
        width=width, height=height, format="rgba", time_base=Fraction(1, 1), name="video"
    )
    palette_in = graph.add_buffer(
        width=palette.width, height=palette.height, format=palette.format.name, time_base=Fraction(1, 1)
    )
    options = f"dither={dither}:alpha_threshold={alpha_threshold}"
    if dither == "bayer":
        options += f":bayer_scale={bayer_scale}"
    paletteuse = graph.add("paletteuse", options)
    sink = graph.add("buffersink")
    video.link_to(paletteuse, 0, 0)
    palette_in.link_to(paletteuse, 0, 1)
    paletteuse.link_to(sink)
    graph.configure()
    palette.pts = 0
    palette_in.push(palette)
    palette_in.push(None)  # one palette for the whole clip
    for index, rgba_hwc_uint8 in enumerate(rgba_fhwc_uint8):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba_hwc_uint8), format="rgba")
        frame.pts = index
        video.push(frame)
        yield from _timed(_drain(sink), time_base)
    video.push(None)
    yield from _timed(_drain(sink), time_base)


def _timed(frames: Iterator[av.VideoFrame], time_base: Fraction) -> Iterator[av.VideoFrame]:
    """The buffersink hands frames out without their time base; give them the input's back."""
    for frame in frames:
        frame.time_base = time_base
        yield frame
