"""The one table of writable formats, and how a path or a name resolves to a row of it.

Every writable format is one `FormatSpec` in `FORMATS`: container, encoder, pixel format, options and
what it keeps. The facts behind the rows (measured on the PyAV 18.1 wheel, bundled FFmpeg 8.1):
- VP8/VP9 alpha is stored beside the colour (Matroska BlockAdditional, `alpha_mode=1`).
- Colour under alpha 0 is edge-padded before 4:2:0 encodes, or opaque edges pick up its colour.
- MP4 (and H.264/HEVC/AV1 in anything) cannot carry an alpha plane with this FFmpeg: refused, never
  written as such.
- GIF has 1-bit alpha: a palette index marks transparency, soft edges are thresholded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from layeranim.errors import UnsupportedFormatError

AlphaMode = Literal["straight", "premultiplied"]
ALPHA_MODES: tuple[str, ...] = ("straight", "premultiplied")

DEFAULT_SEQUENCE_FPS = 24.0
SEQUENCE_FILE_PATTERN = "frame_%05d.png"
PATTERN_RE = re.compile(r"%0?(\d*)d")  # the `%d` / `%05d` placeholder of a sequence pattern


@dataclass(frozen=True)
class QualitySpec:
    """What `quality` means for a format: an encoder option, its range and default."""

    option: str  # encoder option it sets
    label: str  # how to talk about it ("CRF", "quality")
    low: int
    high: int
    default: int
    better: Literal["lower", "higher"]


@dataclass(frozen=True)
class FormatSpec:
    """One writable format: container, codec, pixel format and options; and what it keeps."""

    name: str
    description: str
    extensions: tuple[str, ...]  # the first one is the format's own; a path may use any of them
    codec: str  # encoder ("" for PNG sequences, written by Pillow)
    pix_fmt: str
    lossless: bool  # default mode round-trips RGB (where alpha > 0) and alpha bit-exactly
    alpha: Literal["full", "1-bit"]
    kind: Literal["video", "animation", "sequence"]
    codec_options: dict[str, str] = field(default_factory=dict)
    quality: QualitySpec | None = None
    lossless_option: Literal["vp9", "webp"] | None = None  # how `lossless=` switches mode, if it can
    chroma_420: bool = False  # 4:2:0 colour: pad the colour under alpha 0 first
    matrix: Literal["bt601", "bt709"] | None = None  # RGB→YUV matrix used (and tagged), if YUV
    loops: bool = False  # has a loop count (animated images)
    aliases: tuple[str, ...] = ()
    alpha_layout: Literal["stacked"] | None = None  # alpha packed into the picture, not in its own plane


_VP9_QUALITY = QualitySpec("crf", "CRF", 0, 63, 30, "lower")
_VP8_QUALITY = QualitySpec("crf", "CRF", 4, 63, 10, "lower")
_WEBP_QUALITY = QualitySpec("quality", "quality", 0, 100, 90, "higher")

FORMATS: tuple[FormatSpec, ...] = (
    FormatSpec(
        name="webm",
        description="WebM VP9 with alpha (plays with transparency in browsers)",
        extensions=(".webm", ".mkv"),
        codec="libvpx-vp9",
        pix_fmt="yuva420p",
        lossless=False,
        alpha="full",
        kind="video",
        codec_options={"b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"},
        quality=_VP9_QUALITY,
        lossless_option="vp9",
        chroma_420=True,
        matrix="bt601",
        aliases=("vp9", "webm-vp9"),
    ),
    FormatSpec(
        name="webm-vp8",
        description="WebM VP8 with alpha (older browsers and players)",
        extensions=(".webm", ".mkv"),
        codec="libvpx",
        pix_fmt="yuva420p",
        lossless=False,
        alpha="full",
        kind="video",
        codec_options={"b": "2M", "auto-alt-ref": "0", "deadline": "good", "cpu-used": "4"},
        quality=_VP8_QUALITY,
        chroma_420=True,
        matrix="bt601",
        aliases=("vp8",),
    ),
    FormatSpec(
        name="mov",
        description="QuickTime ProRes 4444 with alpha (for video editors)",
        extensions=(".mov",),
        codec="prores_ks",
        pix_fmt="yuva444p10le",
        lossless=False,
        alpha="full",
        kind="video",
        codec_options={"profile": "4444"},
        matrix="bt709",
        aliases=("prores", "prores4444", "mov-prores"),
    ),
    FormatSpec(
        name="mov-xq",
        description="QuickTime ProRes 4444 XQ with alpha (highest-quality ProRes)",
        extensions=(".mov",),
        codec="prores_ks",
        pix_fmt="yuva444p10le",
        lossless=False,
        alpha="full",
        kind="video",
        codec_options={"profile": "4444xq"},
        matrix="bt709",
        aliases=("prores-xq", "prores4444xq"),
    ),
    FormatSpec(
        name="mov-png",
        description="QuickTime with PNG frames (lossless, RGBA)",
        extensions=(".mov",),
        codec="png",
        pix_fmt="rgba",
        lossless=True,
        alpha="full",
        kind="video",
        aliases=("png-mov",),
    ),
    FormatSpec(
        name="mkv",
        description="Matroska FFV1 (lossless RGBA intermediate)",
        extensions=(".mkv",),
        codec="ffv1",
        pix_fmt="bgra",
        lossless=True,
        alpha="full",
        kind="video",
        aliases=("ffv1", "mkv-ffv1"),
    ),
    FormatSpec(
        name="apng",
        description="Animated PNG (lossless, loops forever by default, plays in browsers)",
        extensions=(".apng", ".png"),
        codec="apng",
        pix_fmt="rgba",
        lossless=True,
        alpha="full",
        kind="animation",
        loops=True,
    ),
    FormatSpec(
        name="webp",
        description="Animated WebP (lossless by default; lossy with a quality)",
        extensions=(".webp",),
        codec="libwebp_anim",
        pix_fmt="bgra",
        lossless=True,
        alpha="full",
        kind="animation",
        quality=_WEBP_QUALITY,
        lossless_option="webp",
        loops=True,
    ),
    FormatSpec(
        name="gif",
        description="GIF (1-bit alpha: soft edges are thresholded)",
        extensions=(".gif",),
        codec="gif",
        pix_fmt="pal8",
        lossless=False,
        alpha="1-bit",
        kind="animation",
        loops=True,
    ),
    FormatSpec(
        name="mp4-stacked",
        description="MP4 H.264 (or AV1), colour on top and alpha as luma below, for WebGL players",
        extensions=(".mp4",),
        codec="libx264",  # the default of `video_io.stacked.STACKED_CODECS`; codec="av1" picks SVT-AV1
        pix_fmt="yuv420p",
        lossless=False,
        alpha="full",
        kind="video",
        quality=QualitySpec("crf", "CRF", 0, 51, 18, "lower"),
        chroma_420=True,
        matrix="bt709",
        aliases=("stacked", "stacked-mp4", "mp4-stacked-alpha"),
        alpha_layout="stacked",
    ),
    FormatSpec(
        name="png-seq",
        description=f"PNG sequence: a directory, or a pattern like {SEQUENCE_FILE_PATTERN}",
        extensions=(".png",),
        codec="png",
        pix_fmt="rgba",
        lossless=True,
        alpha="full",
        kind="sequence",
        aliases=("png-sequence", "sequence", "frames"),
    ),
)

FORMATS_BY_NAME: dict[str, FormatSpec] = {key: spec for spec in FORMATS for key in (spec.name, *spec.aliases)}
_DEFAULT_FORMAT_FOR_EXTENSION = {
    ".webm": "webm",
    ".mkv": "mkv",
    ".mov": "mov",
    ".apng": "apng",
    ".png": "apng",  # a `.png` path with no %d pattern is one animated PNG
    ".webp": "webp",
    ".gif": "gif",
}
MUXER_FOR_EXTENSION = {
    ".mp4": "mp4",  # only with format="mp4-stacked": a plain .mp4 path is refused above
    ".webm": "webm",
    ".mkv": "matroska",
    ".mov": "mov",
    ".apng": "apng",
    ".png": "apng",
    ".webp": "webp",
    ".gif": "gif",
}
_ALPHA_DROPPING = {
    "mp4": "MP4",
    ".mp4": "MP4",
    "m4v": "MP4",
    ".m4v": "MP4",
    "h264": "H.264",
    "avc": "H.264",
    "x264": "H.264",
    "hevc": "HEVC",
    "h265": "HEVC",
    "x265": "HEVC",
    "av1": "AV1",
    "vp9-mp4": "VP9 in MP4",
}
_ALPHA_FIX = (
    "use .webm (VP9 with alpha) for the web or .mov (ProRes 4444) for editors, or format "
    "mp4-stacked for an MP4 with colour and alpha stacked for WebGL players; "
    "add preview=True for an opaque MP4 to look at"
)
_STILL_IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def format_names() -> list[str]:
    """The names `format=` accepts (without aliases)."""
    return [spec.name for spec in FORMATS]


def get_format(name: str) -> FormatSpec:
    """Look a format up by name or alias; UnsupportedFormatError for an unknown or alpha-dropping one."""
    key = name.strip().lower()
    if key in _ALPHA_DROPPING:
        raise UnsupportedFormatError(
            f"format {name!r} cannot store alpha ({_ALPHA_DROPPING[key]} would drop it); {_ALPHA_FIX}."
        )
    if key not in FORMATS_BY_NAME:
        raise UnsupportedFormatError(
            f"format {name!r} is not one layeranim writes; choose one of {', '.join(format_names())}."
        )
    return FORMATS_BY_NAME[key]


def is_sequence_path(path: str | Path) -> bool:
    """True for a PNG-sequence target: a `%d` pattern, a path ending in `/`, or a path without extension."""
    text = str(path)
    return bool(PATTERN_RE.search(Path(text).name)) or text.endswith(("/", os.sep)) or Path(text).suffix == ""


def resolve_output_format(path: str | Path, format: str | None = None) -> FormatSpec:
    """Pick the output format from `format` or the path's extension; refuse formats that would drop alpha."""
    target = Path(path)
    suffix = target.suffix.lower()
    if format is not None:
        spec = get_format(format)
        if spec.kind == "sequence":
            if not is_sequence_path(target):
                raise UnsupportedFormatError(
                    f"output {str(path)!r} is not a PNG-sequence target for format png-seq; give a "
                    f"directory (e.g. frames/) or a pattern (e.g. frames/{SEQUENCE_FILE_PATTERN})."
                )
            return spec
        if suffix not in spec.extensions:
            raise UnsupportedFormatError(
                f"output extension {suffix or '(none)'!r} does not fit format {spec.name!r}; "
                f"name the output with {' or '.join(spec.extensions)}."
            )
        return spec
    if is_sequence_path(target):
        return FORMATS_BY_NAME["png-seq"]
    if suffix in _ALPHA_DROPPING:
        raise UnsupportedFormatError(
            f"output {str(path)!r}: {_ALPHA_DROPPING[suffix]} cannot store alpha with this FFmpeg "
            f"(H.264/HEVC/AV1 and VP9-in-MP4 all drop it); {_ALPHA_FIX}."
        )
    if suffix in _DEFAULT_FORMAT_FOR_EXTENSION:
        return FORMATS_BY_NAME[_DEFAULT_FORMAT_FOR_EXTENSION[suffix]]
    known = ", ".join(sorted(_DEFAULT_FORMAT_FOR_EXTENSION))
    if suffix in _STILL_IMAGE_EXTENSIONS:
        raise UnsupportedFormatError(
            f"output {str(path)!r} is a still-image type; for a clip use one of {known}, a directory "
            f"or a pattern like {SEQUENCE_FILE_PATTERN}."
        )
    raise UnsupportedFormatError(
        f"output extension {suffix!r} of {str(path)!r} is unknown; use one of {known}, a directory "
        f"or a pattern like {SEQUENCE_FILE_PATTERN} (or pass a format)."
    )
