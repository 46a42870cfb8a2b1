"""Reading and writing straight-alpha RGBA clips: PyAV for video, Pillow where PyAV cannot.

A clip is `rgba_fhwc_uint8`: (frames, height, width, 4) uint8, **straight** alpha, plus its fps.

Every writable format is one row of `FORMATS`. The facts behind the rows (measured on this wheel):
- VP8/VP9 alpha is stored beside the colour (Matroska BlockAdditional, `alpha_mode=1`); FFmpeg's
  native `vp8`/`vp9` decoders drop it, so those streams are decoded with the libvpx decoders fed from
  `container.demux()`.
- Encoders that want `yuva*` get planar `gbrap` frames: the packed `rgba` path shifts alpha by one
  level in FFmpeg 8.1's swscale, `gbrap` copies it bit-exactly.
- Colour under alpha 0 is edge-padded before 4:2:0 encodes, or opaque edges pick up its colour.
- MP4 (and H.264/HEVC/AV1 in anything) cannot carry alpha with this FFmpeg: refused, never written.
- Animated WebP is written by `libwebp_anim` and read with Pillow (PyAV has no animated-WebP decoder).
- GIF has 1-bit alpha: a palette index marks transparency, soft edges are thresholded at 128.

Axis legend: f frames, h height, w width, c channels (RGBA).
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from layeranim import alpha as alpha_ops
from layeranim.errors import (
    LayerAnimError,
    OutputExistsError,
    UnsupportedFormatError,
    UsageError,
    VideoReadError,
)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (frames done, frames total)
AlphaMode = Literal["straight", "premultiplied"]
ALPHA_MODES: tuple[str, ...] = ("straight", "premultiplied")

DEFAULT_SEQUENCE_FPS = 24.0
SEQUENCE_FILE_PATTERN = "frame_%05d.png"
_FPS_TEXT_KEY = "layeranim:fps"  # PNG tEXt chunk that carries the fps of a written sequence

# FFmpeg colour tags (AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic / AVColorRange).
_CS_BT709, _CS_SMPTE170M = 1, 6
_PRI_BT709 = 1
_TRC_BT709, _TRC_SRGB = 1, 13
_RANGE_TV = 1


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

_FORMATS_BY_NAME: dict[str, FormatSpec] = {
    key: spec for spec in FORMATS for key in (spec.name, *spec.aliases)
}
_DEFAULT_FORMAT_FOR_EXTENSION = {
    ".webm": "webm",
    ".mkv": "mkv",
    ".mov": "mov",
    ".apng": "apng",
    ".png": "apng",  # a `.png` path with no %d pattern is one animated PNG
    ".webp": "webp",
    ".gif": "gif",
}
_MUXER_FOR_EXTENSION = {
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
    "use .webm (VP9 with alpha) for the web or .mov (ProRes 4444) for editors; "
    "add --preview for an opaque MP4 to look at"
)
# What Pillow raises for files it cannot read (a bomb-sized header included).
_PIL_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)
_STILL_IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Clip:
    """Decoded frames (straight alpha) and their frame rate."""

    rgba_fhwc_uint8: np.ndarray
    fps: float


@dataclass(frozen=True)
class VideoInfo:
    """What a clip file holds; `has_alpha` means an alpha channel is actually *stored* in it."""

    path: Path
    format: str
    codec: str
    pix_fmt: str
    frames: int
    fps: float
    width: int
    height: int
    has_alpha: bool

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


# ---------------------------------------------------------------------------------------------------
# Format resolution.


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
    if key not in _FORMATS_BY_NAME:
        raise UnsupportedFormatError(
            f"format {name!r} is not one layeranim writes; choose one of {', '.join(format_names())}."
        )
    return _FORMATS_BY_NAME[key]


def is_sequence_path(path: str | Path) -> bool:
    """True for a PNG-sequence target: a `%d` pattern, a path ending in `/`, or a path without extension."""
    text = str(path)
    return (
        bool(_PATTERN_RE.search(Path(text).name)) or text.endswith(("/", os.sep)) or Path(text).suffix == ""
    )


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
        return _FORMATS_BY_NAME["png-seq"]
    if suffix in _ALPHA_DROPPING:
        raise UnsupportedFormatError(
            f"output {str(path)!r}: {_ALPHA_DROPPING[suffix]} cannot store alpha with this FFmpeg "
            f"(H.264/HEVC/AV1 and VP9-in-MP4 all drop it); {_ALPHA_FIX}."
        )
    if suffix in _DEFAULT_FORMAT_FOR_EXTENSION:
        return _FORMATS_BY_NAME[_DEFAULT_FORMAT_FOR_EXTENSION[suffix]]
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


# ---------------------------------------------------------------------------------------------------
# Atomic output.


def _check_directory_writable(directory: Path) -> None:
    if not directory.exists():
        raise UsageError(f"output directory {str(directory)!r} does not exist; create it first.")
    if not directory.is_dir():
        raise UsageError(f"output directory {str(directory)!r} is not a directory; choose another path.")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise LayerAnimError(
            f"output directory {str(directory)!r} is not writable; choose another directory or fix "
            "its permissions."
        )


def _check_output_target(target: Path, overwrite: bool, directory: bool = False) -> None:
    """Fail before any work if the target cannot (or must not) be written."""
    _check_directory_writable(target.parent)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise OutputExistsError(
                f"output {str(target)!r} already exists; pass --overwrite (overwrite=True) to replace "
                "it, or choose another name."
            )
        if directory != target.is_dir():
            kind = "a directory" if target.is_dir() else "a file"
            raise UsageError(
                f"output {str(target)!r} exists and is {kind}; remove it or choose another name."
            )


def _temp_name(target: Path) -> Path:
    """A hidden name beside the target, with the target's extension so muxers pick the same format."""
    return target.parent / f".{target.stem}.{secrets.token_hex(4)}.partial{target.suffix}"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


@contextmanager
def atomic_output(path: str | Path, overwrite: bool = False, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place when the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary file or directory is removed and
    nothing at `path` changes. An existing `path` is replaced only with `overwrite=True`. With
    `directory=True` a temporary directory is yielded and renamed to `path` at the end.
    """
    target = Path(path)
    _check_output_target(target, overwrite, directory)
    temp = _temp_name(target)
    try:
        if directory:
            temp.mkdir()
        else:
            open(temp, "xb").close()  # fail here, with a clear message, if the directory refuses files
    except OSError as exc:
        raise LayerAnimError(f"cannot write in {str(target.parent)!r}: {exc.strerror or exc}.") from exc
    try:
        yield temp
        if not (temp.exists() or temp.is_symlink()):
            raise LayerAnimError(f"nothing was written for {str(target)!r}.")
        if (target.exists() or target.is_symlink()) and not overwrite:
            raise OutputExistsError(
                f"output {str(target)!r} appeared while writing; pass --overwrite to replace it."
            )
        if directory and target.is_dir():
            old = target.parent / f".{target.name}.{secrets.token_hex(4)}.old"
            os.replace(target, old)
            os.replace(temp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, target)
    except BaseException:
        _remove(temp)
        raise


# ---------------------------------------------------------------------------------------------------
# Writing.


def _validate_clip(rgba_fhwc_uint8: np.ndarray, fps: float) -> None:
    if not isinstance(rgba_fhwc_uint8, np.ndarray):
        raise UsageError(f"frames must be a numpy array, got {type(rgba_fhwc_uint8).__name__}.")
    if rgba_fhwc_uint8.dtype != np.uint8 or rgba_fhwc_uint8.ndim != 4 or rgba_fhwc_uint8.shape[-1] != 4:
        raise UsageError(
            f"frames must be uint8 (frames, height, width, 4) straight RGBA, got {rgba_fhwc_uint8.dtype} "
            f"{tuple(rgba_fhwc_uint8.shape)}."
        )
    if min(rgba_fhwc_uint8.shape[:3]) < 1:
        raise UsageError(f"frames must hold at least one 1x1 frame, got {tuple(rgba_fhwc_uint8.shape)}.")
    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise UsageError(f"fps {fps!r} must be a positive number (e.g. 24).")


def _fps_fraction(fps: float) -> Fraction:
    """24 → 24/1, 29.97 → 30000/1001, 23.976 → 2997/125."""
    return Fraction(fps).limit_denominator(1001)


def _encoder_threads() -> int:
    """libvpx with 2 threads collapses on a loaded 2-core machine; one thread is faster there (§5)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return 1 if cpus <= 2 else min(cpus, 8)


@dataclass(frozen=True)
class _EncodePlan:
    spec: FormatSpec
    pix_fmt: str
    codec_options: dict[str, str]
    muxer_options: dict[str, str]
    chroma_420: bool
    lossless: bool


def _plan_encode(
    spec: FormatSpec,
    quality: int | None,
    lossless: bool | None,
    loop: int,
    codec_options: dict[str, str] | None,
) -> _EncodePlan:
    """Turn the caller's quality/lossless/loop into encoder and muxer options, refusing what cannot apply."""
    options = dict(spec.codec_options)
    muxer_options: dict[str, str] = {}
    pix_fmt = spec.pix_fmt
    chroma_420 = spec.chroma_420
    is_lossless = spec.lossless

    if lossless is not None and spec.lossless_option is None:
        if lossless and not spec.lossless:
            raise UsageError(
                f"format {spec.name!r} has no lossless mode; use mkv (FFV1), mov-png, apng, webp or png-seq."
            )
        if not lossless and spec.lossless:
            raise UsageError(
                f"format {spec.name!r} is always lossless; use webm, webp (lossy) or mov for smaller files."
            )
    if spec.lossless_option == "webp":
        is_lossless = not (lossless is False or (lossless is None and quality is not None))
        if lossless and quality is not None:
            raise UsageError("quality applies to lossy WebP only; drop it, or pass lossless=False / --lossy.")
        if is_lossless:
            options["lossless"] = "1"
        else:
            options["lossless"] = "0"
            pix_fmt, chroma_420 = "yuva420p", True
    if spec.lossless_option == "vp9" and lossless:
        if quality is not None:
            raise UsageError("quality (CRF) and lossless exclude each other for VP9; pass only one.")
        options["lossless"] = "1"
        # Planar RGB + alpha (VP9 profile 1) so RGB is bit-exact too: 4:2:0 YUV would not be. libvpx asks
        # for strict=experimental to accept it. FFmpeg and editors read it; not every browser does.
        options["strict"] = "experimental"
        pix_fmt, chroma_420, is_lossless = "gbrap", False, True

    if quality is not None:
        qspec = spec.quality
        if qspec is None:
            raise UsageError(
                f"format {spec.name!r} has no quality setting; drop it (quality applies to webm, webm-vp8 "
                "and lossy webp)."
            )
        if not isinstance(quality, int) or not qspec.low <= quality <= qspec.high:
            raise UsageError(
                f"quality {quality!r} is out of range for {spec.name}: its {qspec.label} runs "
                f"{qspec.low}–{qspec.high}, {qspec.better} is better (default {qspec.default})."
            )
        options[qspec.option] = str(quality)
    elif spec.quality is not None and not (spec.lossless_option == "vp9" and lossless) and not is_lossless:
        options[spec.quality.option] = str(spec.quality.default)

    if not isinstance(loop, int) or loop < 0:
        raise UsageError(f"loop {loop!r} must be 0 (forever) or a positive number of plays.")
    if spec.loops:
        if spec.codec == "apng":
            muxer_options["plays"] = str(loop)
        elif spec.codec == "libwebp_anim":
            muxer_options["loop"] = str(loop)
        elif spec.codec == "gif":  # the GIF muxer counts repeats after the first play; -1 = play once
            muxer_options["loop"] = "0" if loop == 0 else str(loop - 1 if loop > 1 else -1)
    elif loop != 0:
        raise UsageError(
            f"format {spec.name!r} has no loop count; drop it (loop applies to apng, webp and gif)."
        )

    for key, value in (codec_options or {}).items():
        if not isinstance(key, str):
            raise UsageError(f"codec option name {key!r} must be a string.")
        options[key] = str(value)
    return _EncodePlan(spec, pix_fmt, options, muxer_options, chroma_420, is_lossless)


def _configure_stream(stream: Any, plan: _EncodePlan, width: int, height: int) -> None:
    stream.width, stream.height, stream.pix_fmt = width, height, plan.pix_fmt
    context = stream.codec_context
    if plan.spec.codec in ("libvpx", "libvpx-vp9"):
        context.thread_count = _encoder_threads()
    elif plan.spec.codec != "gif":
        context.thread_type = "AUTO"
    if plan.pix_fmt.startswith("yuv"):
        matrix = plan.spec.matrix or "bt601"
        context.colorspace = _CS_BT709 if matrix == "bt709" else _CS_SMPTE170M
        context.color_range = _RANGE_TV
        context.color_primaries = _PRI_BT709
        # sRGB input: tagged as sRGB for the web formats; editors expect BT.709 on ProRes.
        context.color_trc = _TRC_BT709 if matrix == "bt709" else _TRC_SRGB


def _to_av_frame(rgba_hwc_uint8: np.ndarray, plan: _EncodePlan) -> av.VideoFrame:
    """One straight RGBA frame → an av.VideoFrame in the encoder's pixel format, alpha bit-exact."""
    if plan.pix_fmt.startswith("yuv"):
        # Planar gbrap keeps alpha exact on the way to yuva (packed rgba shifts it, §2.3).
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba_hwc_uint8), format="gbrap")
        matrix = "itu709" if plan.spec.matrix == "bt709" else "itu601"
        return frame.reformat(format=plan.pix_fmt, dst_colorspace=matrix, dst_color_range=_RANGE_TV)
    if plan.pix_fmt == "gbrap":  # PyAV takes gbrap frames in R, G, B, A order
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba_hwc_uint8), format="gbrap")
    if plan.pix_fmt == "bgra":
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba_hwc_uint8[..., [2, 1, 0, 3]]), "bgra")
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba_hwc_uint8), format="rgba")


class _GifPalette:
    """One global 255-colour palette for a clip, plus index 255 for transparent pixels."""

    TRANSPARENT_INDEX = 255

    def __init__(self, rgba_fhwc_uint8: np.ndarray, sample_limit: int = 1 << 20) -> None:
        opaque_n3 = rgba_fhwc_uint8[..., :3][rgba_fhwc_uint8[..., 3] >= 128]
        if len(opaque_n3) == 0:
            opaque_n3 = np.zeros((1, 3), np.uint8)
        if len(opaque_n3) > sample_limit:
            opaque_n3 = opaque_n3[:: math.ceil(len(opaque_n3) / sample_limit)]
        sample = Image.fromarray(np.ascontiguousarray(opaque_n3[None]))
        quantized = sample.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        colours_k3 = np.asarray(quantized.getpalette()[: 255 * 3], dtype=np.uint8).reshape(-1, 3)
        used = max(1, len(colours_k3))
        palette_rgb = np.empty((256, 3), np.uint8)
        palette_rgb[:used] = colours_k3[:used]
        palette_rgb[used:] = colours_k3[used - 1]  # duplicates of the last colour, never chosen uniquely
        self.last_colour_index = used - 1
        self.reference = Image.new("P", (1, 1))
        self.reference.putpalette(palette_rgb.reshape(-1).tolist())
        self.argb_256x4 = np.zeros((256, 4), np.uint8)  # PyAV's pal8 palette order: A, R, G, B
        self.argb_256x4[:, 0] = 255
        self.argb_256x4[:, 1:] = palette_rgb
        self.argb_256x4[self.TRANSPARENT_INDEX] = 0

    def frame(self, rgba_hwc_uint8: np.ndarray) -> av.VideoFrame:
        rgb = Image.fromarray(np.ascontiguousarray(rgba_hwc_uint8[..., :3]))
        index_hw = np.array(rgb.quantize(palette=self.reference, dither=Image.Dither.NONE), dtype=np.uint8)
        index_hw[index_hw > self.last_colour_index] = self.last_colour_index
        index_hw[rgba_hwc_uint8[..., 3] < 128] = self.TRANSPARENT_INDEX
        return av.VideoFrame.from_ndarray((index_hw, self.argb_256x4), format="pal8")


def _encode_av(
    temp: Path,
    rgba_fhwc_uint8: np.ndarray,
    fps: float,
    plan: _EncodePlan,
    muxer: str,
    progress: ProgressCallback | None,
) -> None:
    total, height, width = rgba_fhwc_uint8.shape[:3]
    gif_palette = _GifPalette(rgba_fhwc_uint8) if plan.pix_fmt == "pal8" else None
    with av.open(str(temp), "w", format=muxer, options=plan.muxer_options) as container:
        stream = container.add_stream(plan.spec.codec, rate=_fps_fraction(fps), options=plan.codec_options)
        _configure_stream(stream, plan, width, height)
        for index, rgba_hwc_uint8 in enumerate(rgba_fhwc_uint8):
            if gif_palette is not None:
                frame = gif_palette.frame(rgba_hwc_uint8)
            else:
                if plan.chroma_420:
                    rgba_hwc_uint8 = alpha_ops.pad_color_under_transparent(rgba_hwc_uint8)
                frame = _to_av_frame(rgba_hwc_uint8, plan)
            for packet in stream.encode(frame):
                container.mux(packet)
            if progress is not None:
                progress(index + 1, total)
        for packet in stream.encode(None):
            container.mux(packet)


def _write_sequence_files(
    directory: Path,
    file_pattern: str,
    rgba_fhwc_uint8: np.ndarray,
    fps: float,
    progress: ProgressCallback | None,
) -> list[Path]:
    info = PngImagePlugin.PngInfo()
    info.add_text(_FPS_TEXT_KEY, repr(float(fps)))
    written = []
    total = len(rgba_fhwc_uint8)
    for index, rgba_hwc_uint8 in enumerate(rgba_fhwc_uint8):
        path = directory / (file_pattern % index)
        Image.fromarray(np.ascontiguousarray(rgba_hwc_uint8)).save(
            path, format="PNG", pnginfo=info, compress_level=4
        )
        written.append(path)
        if progress is not None:
            progress(index + 1, total)
    return written


_PATTERN_RE = re.compile(r"%0?(\d*)d")


def _pattern_regex(file_pattern: str) -> re.Pattern[str]:
    """`frame_%05d.png` → a regex matching `frame_00012.png` with the number as group 1."""
    match = _PATTERN_RE.search(file_pattern)
    if match is None:
        raise UsageError(f"pattern {file_pattern!r} has no %d placeholder; use e.g. {SEQUENCE_FILE_PATTERN}.")
    head, tail = file_pattern[: match.start()], file_pattern[match.end() :]
    return re.compile(f"^{re.escape(head)}(\\d+){re.escape(tail)}$", re.IGNORECASE)


def _write_sequence(
    target: str | Path,
    rgba_fhwc_uint8: np.ndarray,
    fps: float,
    overwrite: bool,
    progress: ProgressCallback | None,
) -> Path:
    """Write a PNG sequence; returns the directory (or, for a pattern, the pattern path)."""
    target_path = Path(str(target).rstrip("/" + os.sep) or ".")
    if not _PATTERN_RE.search(target_path.name):
        directory = target_path
        if directory.is_dir() and overwrite:
            strangers = [p.name for p in directory.iterdir() if p.suffix.lower() != ".png"]
            if strangers:
                raise UsageError(
                    f"will not replace directory {str(directory)!r}: it holds files that are not PNG frames "
                    f"({', '.join(sorted(strangers)[:3])}); choose an empty or new directory."
                )
        with atomic_output(directory, overwrite, directory=True) as temp_dir:
            _write_sequence_files(temp_dir, SEQUENCE_FILE_PATTERN, rgba_fhwc_uint8, fps, progress)
        return directory

    directory, file_pattern = target_path.parent, target_path.name
    if not directory.exists():
        with atomic_output(directory, overwrite, directory=True) as temp_dir:
            _write_sequence_files(temp_dir, file_pattern, rgba_fhwc_uint8, fps, progress)
        return target_path
    # The directory exists: write into a temporary directory inside it, then move each frame in.
    _check_directory_writable(directory)
    name_re = _pattern_regex(file_pattern)
    existing = [p for p in directory.iterdir() if name_re.match(p.name)]
    if existing and not overwrite:
        raise OutputExistsError(
            f"output {str(target_path)!r} already has {len(existing)} matching frame(s) in "
            f"{str(directory)!r}; pass --overwrite (overwrite=True) to replace them, or choose another "
            "pattern."
        )
    temp_dir = directory / f".{secrets.token_hex(4)}.partial-frames"
    try:
        temp_dir.mkdir()
        written = _write_sequence_files(temp_dir, file_pattern, rgba_fhwc_uint8, fps, progress)
        for stale in existing:
            stale.unlink()
        for path in written:
            os.replace(path, directory / path.name)
    except OSError as exc:
        raise LayerAnimError(f"cannot write frames into {str(directory)!r}: {exc.strerror or exc}.") from exc
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return target_path


def check_output(path: str | Path, *, format: str | None = None, overwrite: bool = False) -> FormatSpec:
    """Resolve the output format and check that the target may be written, before any expensive work."""
    spec = resolve_output_format(path, format)
    target = Path(str(path).rstrip("/" + os.sep) or ".")
    if spec.kind != "sequence":
        _check_output_target(target, overwrite)
    elif not _PATTERN_RE.search(target.name):
        _check_output_target(target, overwrite, directory=True)
    elif not target.parent.exists():
        _check_output_target(target.parent, overwrite, directory=True)
    else:
        _check_directory_writable(target.parent)
        name_re = _pattern_regex(target.name)
        existing = sum(1 for p in target.parent.iterdir() if name_re.match(p.name))
        if existing and not overwrite:
            raise OutputExistsError(
                f"output {str(target)!r} already has {existing} matching frame(s) in "
                f"{str(target.parent)!r}; pass --overwrite (overwrite=True) to replace them, or choose "
                "another pattern."
            )
    return spec


def write_video(
    path: str | Path,
    rgba_fhwc_uint8: np.ndarray,
    fps: float,
    *,
    format: str | None = None,
    quality: int | None = None,
    lossless: bool | None = None,
    alpha_mode: AlphaMode = "straight",
    loop: int = 0,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    codec_options: dict[str, str] | None = None,
) -> VideoInfo:
    """Write a straight-alpha RGBA clip with its alpha; returns the probe of the written file.

    `format` is a name from `FORMATS` (default: chosen by the extension). `quality` is the CRF for
    VP8/VP9 (lower is better) or the quality of lossy WebP (higher is better). `lossless` switches
    VP9 (lossless YUVA) and WebP (lossless is its default). `alpha_mode="premultiplied"` multiplies
    colour by alpha at this boundary, for consumers that expect it. `loop` is the play count of
    animated images (0 = forever). The file appears only when complete; an existing one is replaced
    only with `overwrite=True`. `progress(done, total)` is called after each frame.
    """
    # 1. Check the inputs and the target before doing any work.
    _validate_clip(rgba_fhwc_uint8, fps)
    spec = resolve_output_format(path, format)
    if alpha_mode not in ALPHA_MODES:
        raise UsageError(f"alpha mode {alpha_mode!r} is unknown; use 'straight' or 'premultiplied'.")
    plan = _plan_encode(spec, quality, lossless, loop, codec_options)

    # 2. Convert at the named boundary.
    if alpha_mode == "premultiplied":
        rgba_fhwc_uint8 = alpha_ops.premultiply_uint8(rgba_fhwc_uint8)
        plan = _EncodePlan(
            plan.spec, plan.pix_fmt, plan.codec_options, plan.muxer_options, False, plan.lossless
        )  # colour under alpha 0 is already 0, which is right for premultiplied consumers
    if spec.alpha == "1-bit":
        alpha = rgba_fhwc_uint8[..., 3]
        if np.any((alpha > 0) & (alpha < 255)):
            logger.warning(
                "GIF stores 1-bit alpha: soft edges (alpha 1–254) are thresholded at 128. Use webp, "
                "apng or webm to keep them."
            )

    # 3. Encode into a temporary file (or directory) beside the target, then move it into place.
    if spec.kind == "sequence":
        written = _write_sequence(path, rgba_fhwc_uint8, fps, overwrite, progress)
        return probe(written)
    target = Path(path)
    muxer = _MUXER_FOR_EXTENSION[target.suffix.lower()]
    with atomic_output(target, overwrite) as temp:
        try:
            _encode_av(temp, rgba_fhwc_uint8, fps, plan, muxer, progress)
        except av.FFmpegError as exc:
            raise LayerAnimError(f"encoding {str(target)!r} as {spec.name} failed: {exc}.") from exc
        except OSError as exc:
            raise LayerAnimError(f"cannot write {str(target)!r}: {exc.strerror or exc}.") from exc
    return probe(target)


# ---------------------------------------------------------------------------------------------------
# Reading.

_COMMON_FPS = (
    8.0,
    10.0,
    12.0,
    12.5,
    15.0,
    20.0,
    24000 / 1001,
    24.0,
    25.0,
    30000 / 1001,
    30.0,
    48.0,
    50.0,
    60.0,
)


def _snap_fps(frame_seconds: float, tolerance_seconds: float) -> float:
    """Frame duration → fps, snapped to a common rate when delays were rounded (GIF: 1/100 s, WebP: 1 ms)."""
    if frame_seconds <= 0:
        return DEFAULT_SEQUENCE_FPS
    best = min(_COMMON_FPS, key=lambda rate: abs(1.0 / rate - frame_seconds))
    if abs(1.0 / best - frame_seconds) <= tolerance_seconds:
        return round(best, 3)
    return round(1.0 / frame_seconds, 3)


def _check_input_path(path: str | Path) -> Path:
    source = Path(path)
    if is_sequence_path(source) and (source.is_dir() or _PATTERN_RE.search(source.name)):
        return source
    if not source.exists():
        raise UsageError(f"input {str(path)!r} does not exist; check the path.")
    if source.is_dir():
        return source
    if source.stat().st_size == 0:
        raise VideoReadError(f"input {str(path)!r} is empty (0 bytes); re-export or re-download it.")
    return source


def _is_webp(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(12)
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def _webp_has_alpha(path: Path) -> bool:
    """Whether a WebP stores alpha: the VP8X alpha flag, or the VP8L header's alpha hint."""
    with open(path, "rb") as handle:
        head = handle.read(30)
    chunk = head[12:16]
    if chunk == b"VP8X":
        return bool(head[20] & 0x10)
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return bool((bits >> 28) & 1)
    return False


def _read_error(path: Path, exc: BaseException) -> VideoReadError:
    return VideoReadError(
        f"input {str(path)!r} is not a readable image or video ({exc}); check that the file is complete "
        "and in a supported format."
    )


def _select(index: int, start: int, step: int) -> bool:
    return index >= start and (index - start) % step == 0


def _validate_range(start: int, stop: int | None, step: int) -> None:
    if not isinstance(start, int) or start < 0:
        raise UsageError(f"start {start!r} must be a frame index ≥ 0.")
    if stop is not None and (not isinstance(stop, int) or stop <= start):
        raise UsageError(f"stop {stop!r} must be greater than start ({start}); it is exclusive.")
    if not isinstance(step, int) or step < 1:
        raise UsageError(f"step {step!r} must be 1 or more.")


def _finish_clip(path: Path, frames: list[np.ndarray], fps: float, start: int, decoded: int) -> Clip:
    if decoded == 0:
        raise VideoReadError(f"input {str(path)!r} holds no frames that could be decoded.")
    if not frames:
        raise UsageError(f"start {start} is past the last frame of {str(path)!r} ({decoded} frames).")
    shapes = {frame.shape for frame in frames}
    if len(shapes) != 1:
        raise VideoReadError(f"input {str(path)!r} has frames of different sizes ({sorted(shapes)}).")
    return Clip(rgba_fhwc_uint8=np.stack(frames), fps=float(fps))


def _stream_seconds(stream: Any, container: Any) -> float | None:
    """The stream's duration from its header (Matroska's per-stream DURATION tag counts), if known."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = {key.lower(): value for key, value in stream.metadata.items()}.get("duration")
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            pass
    if len(container.streams) == 1 and container.duration is not None:
        return container.duration / av.time_base
    return None


def _expected_frames(stream: Any, container: Any, fps: float) -> tuple[int, int]:
    """(frames the header promises, how many fewer are tolerated): exact counts, or ±1 from a duration."""
    if stream.frames:
        return int(stream.frames), 0
    seconds = _stream_seconds(stream, container)
    return (max(0, round(seconds * fps)), 1) if seconds else (0, 0)


def _stream_fps(stream: Any) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return DEFAULT_SEQUENCE_FPS


def _read_av(path: Path, start: int, stop: int | None, step: int, progress: ProgressCallback | None) -> Clip:
    frames: list[np.ndarray] = []
    decoded = 0
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise _read_error(path, exc) from exc
    with container:
        if not container.streams.video:
            raise VideoReadError(f"input {str(path)!r} has no video stream; give a video or image file.")
        stream = container.streams.video[0]
        codec_name = stream.codec_context.name
        fps = _stream_fps(stream)
        expected, tolerance = _expected_frames(stream, container, fps)
        wanted = len(range(start, stop if stop is not None else max(expected, start + 1), step))
        packet_seconds = 0.0
        try:
            if codec_name in ("vp8", "vp9"):
                # FFmpeg's native vp8/vp9 decoders drop the alpha plane; libvpx reads it (§2.1).
                decoder = av.CodecContext.create("libvpx-vp9" if codec_name == "vp9" else "libvpx", "r")
                frame_iter: Iterator[Any] = (
                    frame
                    for packet in container.demux(stream)
                    for frame in decoder.decode(packet if packet.size else None)
                )
            else:
                frame_iter = container.decode(stream)
            for frame in frame_iter:
                if stop is not None and decoded >= stop:
                    break
                if _select(decoded, start, step):
                    frames.append(frame.to_ndarray(format="rgba"))
                    if progress is not None:
                        progress(len(frames), max(wanted, len(frames)))
                frame_duration = getattr(frame, "duration", None)
                if frame_duration and frame.time_base:
                    packet_seconds += float(frame_duration * frame.time_base)
                decoded += 1
        except av.FFmpegError as exc:
            raise VideoReadError(
                f"input {str(path)!r} is truncated or corrupt (decoding failed after {decoded} frames: "
                f"{exc}); re-export it."
            ) from exc
        if stop is None and expected and decoded < expected - tolerance:
            raise VideoReadError(
                f"input {str(path)!r} is truncated: its header promises {expected} frames but only "
                f"{decoded} could be decoded; re-export it."
            )
        if container.format.name in ("gif", "apng") and decoded > 1 and packet_seconds > 0:
            tolerance = 0.005 if container.format.name == "gif" else 0.0005
            fps = _snap_fps(packet_seconds / decoded, tolerance)
    return _finish_clip(path, frames, fps, start, decoded)


def _read_pillow_animation(
    path: Path, start: int, stop: int | None, step: int, progress: ProgressCallback | None
) -> Clip:
    """Animated WebP (which PyAV cannot decode) through Pillow."""
    frames: list[np.ndarray] = []
    durations_ms: list[float] = []
    decoded = 0
    try:
        with Image.open(path) as image:
            total = getattr(image, "n_frames", 1)
            wanted = len(range(start, stop if stop is not None else total, step))
            for index in range(total):
                if stop is not None and index >= stop:
                    break
                image.seek(index)
                image.load()  # Pillow fills a WebP frame's duration when it decodes it
                durations_ms.append(float(image.info.get("duration") or 0))
                if _select(index, start, step):
                    frames.append(np.asarray(image.convert("RGBA")).copy())
                    if progress is not None:
                        progress(len(frames), max(wanted, len(frames)))
                decoded += 1
    except _PIL_ERRORS as exc:
        raise _read_error(path, exc) from exc
    mean_ms = sum(durations_ms) / len(durations_ms) if durations_ms else 0.0
    fps = _snap_fps(mean_ms / 1000.0, 0.0005) if mean_ms > 0 else DEFAULT_SEQUENCE_FPS
    return _finish_clip(path, frames, fps, start, decoded)


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _sequence_files(path: Path) -> list[Path]:
    """The frames of a PNG sequence (a directory, or a `%d` pattern), in numeric order."""
    if _PATTERN_RE.search(path.name):
        directory = path.parent if str(path.parent) else Path(".")
        if not directory.is_dir():
            raise UsageError(f"input directory {str(directory)!r} of pattern {str(path)!r} does not exist.")
        name_re = _pattern_regex(path.name)
        matched = [(int(m.group(1)), p) for p in directory.iterdir() if (m := name_re.match(p.name))]
        files = [p for _, p in sorted(matched)]
        if not files:
            raise VideoReadError(f"no files in {str(directory)!r} match the pattern {path.name!r}.")
        return files
    files = sorted(
        (p for p in path.iterdir() if p.suffix.lower() == ".png" and p.is_file()), key=_natural_key
    )
    if not files:
        raise VideoReadError(f"directory {str(path)!r} holds no .png frames; give a directory of PNG frames.")
    return files


def _sequence_fps(first: Path) -> float:
    try:
        with Image.open(first) as image:
            text = image.info.get(_FPS_TEXT_KEY)
        return float(text) if text else DEFAULT_SEQUENCE_FPS
    except _PIL_ERRORS:
        return DEFAULT_SEQUENCE_FPS


def _read_sequence(
    path: Path, start: int, stop: int | None, step: int, progress: ProgressCallback | None
) -> Clip:
    files = _sequence_files(path)
    chosen = files[start:stop:step]
    frames = []
    for index, file in enumerate(chosen):
        frames.append(read_image(file))
        if progress is not None:
            progress(index + 1, len(chosen))
    return _finish_clip(path, frames, _sequence_fps(files[0]), start, len(files))


def read_video(
    path: str | Path,
    *,
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
    progress: ProgressCallback | None = None,
) -> Clip:
    """Read any supported clip (video, animated image, still image, PNG sequence) as straight RGBA.

    Frames `start`, `start + step`, … up to `stop` (exclusive) are kept. Files without alpha come back
    opaque (alpha 255); use `probe(path).has_alpha` to tell. `progress(done, total)` after each frame.
    """
    _validate_range(start, stop, step)
    source = _check_input_path(path)
    if source.is_dir() or (_PATTERN_RE.search(source.name) and not source.is_file()):
        return _read_sequence(source, start, stop, step, progress)
    if _is_webp(source):
        return _read_pillow_animation(source, start, stop, step, progress)
    if _is_truncated_gif(source):
        raise VideoReadError(
            f"input {str(source)!r} is a truncated GIF (it lacks the end-of-file trailer); re-export it."
        )
    return _read_av(source, start, stop, step, progress)


def _is_truncated_gif(path: Path) -> bool:
    """A GIF must end with the trailer byte `;` (0x3B); a cut-off download does not."""
    with open(path, "rb") as handle:
        if handle.read(4) != b"GIF8":
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b";"


# ---------------------------------------------------------------------------------------------------
# Probing.


def _known_format_name(container_name: str, codec_name: str, codec_tag: str, path: Path) -> str:
    """The table's name for a file layeranim could have written, else the extension or demuxer name."""
    if codec_name == "vp9" and "matroska" in container_name:
        return "webm"
    if codec_name == "vp8" and "matroska" in container_name:
        return "webm-vp8"
    if codec_name == "prores" and container_name.startswith("mov"):
        return "mov-xq" if codec_tag == "ap4x" else "mov"
    if codec_name == "png" and container_name.startswith("mov"):
        return "mov-png"
    if codec_name == "ffv1" and "matroska" in container_name:
        return "mkv"
    if container_name in ("apng", "gif"):
        return container_name
    return path.suffix.lower().lstrip(".") or container_name.split(",")[0]


def _gif_has_transparency(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            for index in range(getattr(image, "n_frames", 1)):
                image.seek(index)
                if "transparency" in image.info:
                    return True
    except _PIL_ERRORS:
        return False
    return False


def _with_alpha_plane(pix_fmt: str) -> str:
    """yuv420p → yuva420p, gbrp → gbrap: the pixel format of a VP8/VP9 stream plus its alpha plane."""
    if pix_fmt.startswith(("yuva", "gbrap")):
        return pix_fmt
    if pix_fmt.startswith("gbrp"):
        return "gbrap" + pix_fmt[4:]
    if pix_fmt.startswith("yuv"):
        return "yuva" + pix_fmt[3:]
    return pix_fmt


def _format_has_alpha(pix_fmt: str) -> bool:
    try:
        return any(component.is_alpha for component in av.VideoFormat(pix_fmt).components)
    except (ValueError, av.FFmpegError):
        return False


def _probe_av(path: Path) -> VideoInfo:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise _read_error(path, exc) from exc
    with container:
        if not container.streams.video:
            raise VideoReadError(f"input {str(path)!r} has no video stream; give a video or image file.")
        stream = container.streams.video[0]
        context = stream.codec_context
        codec_name = context.name
        pix_fmt = context.format.name if context.format is not None else "unknown"
        container_name = container.format.name
        metadata = {key.lower(): value for key, value in stream.metadata.items()}
        frames = int(stream.frames or 0)
        fps = _stream_fps(stream)
        first_packet_has_alpha = False
        packet_seconds = 0.0
        count = 0
        needs_scan = frames == 0 or container_name in ("gif", "apng") or codec_name in ("vp8", "vp9")
        try:
            if needs_scan:
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue
                    if count == 0 and codec_name in ("vp8", "vp9"):
                        first_packet_has_alpha = packet.has_sidedata("matroska_block_additional")
                    if packet.duration and packet.time_base:
                        packet_seconds += float(packet.duration * packet.time_base)
                    count += 1
                    if frames and container_name not in ("gif", "apng"):
                        break  # only the first packet was needed
        except av.FFmpegError as exc:
            raise VideoReadError(
                f"input {str(path)!r} is truncated or corrupt ({exc}); re-export it."
            ) from exc
        if not frames:
            expected, tolerance = _expected_frames(stream, container, fps)
            if expected and count < expected - tolerance:
                raise VideoReadError(
                    f"input {str(path)!r} is truncated: its header promises {expected} frames but it "
                    f"holds only {count}; re-export it."
                )
            frames = count
        if container_name in ("gif", "apng") and count > 1 and packet_seconds > 0:
            fps = _snap_fps(packet_seconds / count, 0.005 if container_name == "gif" else 0.0005)
        if codec_name in ("vp8", "vp9"):
            # Alpha lives beside the colour stream: the container says so and the packets carry it.
            has_alpha = metadata.get("alpha_mode") == "1" and first_packet_has_alpha
            if has_alpha:  # the native decoder reports the colour planes only: name the stored format
                pix_fmt = _with_alpha_plane(pix_fmt)
        elif container_name == "gif":
            has_alpha = _gif_has_transparency(path)
        else:
            has_alpha = _format_has_alpha(pix_fmt)
        return VideoInfo(
            path=path,
            format=_known_format_name(container_name, codec_name, str(context.codec_tag or ""), path),
            codec=codec_name,
            pix_fmt=pix_fmt,
            frames=frames,
            fps=round(fps, 3),
            width=int(context.width),
            height=int(context.height),
            has_alpha=bool(has_alpha),
        )


_PIL_PIX_FMT = {"RGBA": "rgba", "RGB": "rgb24", "LA": "ya8", "L": "gray", "P": "pal8", "PA": "pal8"}


def _probe_pillow(path: Path) -> VideoInfo:
    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            durations = []
            for index in range(frames):
                image.seek(index)
                image.load()  # Pillow fills a WebP frame's duration when it decodes it
                durations.append(float(image.info.get("duration") or 0))
            width, height = image.size
            mode = image.mode
    except _PIL_ERRORS as exc:
        raise _read_error(path, exc) from exc
    mean_ms = sum(durations) / len(durations) if durations else 0.0
    fps = _snap_fps(mean_ms / 1000.0, 0.0005) if mean_ms > 0 else DEFAULT_SEQUENCE_FPS
    has_alpha = _webp_has_alpha(path)
    return VideoInfo(
        path=path,
        format="webp",
        codec="webp",
        pix_fmt="rgba" if has_alpha else _PIL_PIX_FMT.get(mode, mode.lower()),
        frames=frames,
        fps=fps,
        width=width,
        height=height,
        has_alpha=has_alpha,
    )


def _probe_sequence(path: Path) -> VideoInfo:
    files = _sequence_files(path)
    try:
        with Image.open(files[0]) as image:
            width, height = image.size
            mode = image.mode
            has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    except _PIL_ERRORS as exc:
        raise _read_error(files[0], exc) from exc
    return VideoInfo(
        path=path,
        format="png-seq",
        codec="png",
        pix_fmt=_PIL_PIX_FMT.get(mode, mode.lower()),
        frames=len(files),
        fps=_sequence_fps(files[0]),
        width=width,
        height=height,
        has_alpha=has_alpha,
    )


def probe(path: str | Path) -> VideoInfo:
    """Frame count, fps, size, codec, pixel format, and whether alpha is actually stored."""
    source = _check_input_path(path)
    if source.is_dir() or (_PATTERN_RE.search(source.name) and not source.is_file()):
        return _probe_sequence(source)
    if _is_webp(source):
        return _probe_pillow(source)
    return _probe_av(source)


# ---------------------------------------------------------------------------------------------------
# Previews.


def h264_available() -> bool:
    """Whether this PyAV build can encode H.264 (needed for MP4 previews)."""
    try:
        av.Codec("libx264", "w")
    except (av.FFmpegError, ValueError):
        return False
    return True


def preview_path(output: str | Path) -> Path:
    """Where the preview of `output` goes: `NAME.preview.mp4` beside it (`.gif` without H.264)."""
    target = Path(str(output).rstrip("/" + os.sep) or ".")
    name = target.name
    match = _PATTERN_RE.search(name)
    if match is not None:  # frames/frame_%05d.png → frames/frame.preview.mp4
        stem = name[: match.start()].rstrip("_-. ") or target.parent.name or "frames"
    elif target.is_dir() or target.suffix == "":
        stem = name
    else:
        stem = target.stem
    return target.parent / f"{stem}.preview{'.mp4' if h264_available() else '.gif'}"


def write_preview(
    output: str | Path, rgba_fhwc_uint8: np.ndarray, fps: float, *, overwrite: bool = False
) -> Path:
    """Write an opaque checkerboard-composited preview beside `output` (MP4 H.264, else GIF); its path."""
    _validate_clip(rgba_fhwc_uint8, fps)
    path = preview_path(output)
    rgb_fhwc_uint8 = alpha_ops.composite_over_checkerboard(rgba_fhwc_uint8)
    opaque_fhwc_uint8 = np.concatenate(
        [rgb_fhwc_uint8, np.full((*rgb_fhwc_uint8.shape[:-1], 1), 255, np.uint8)], axis=-1
    )
    if path.suffix == ".gif":
        spec = _FORMATS_BY_NAME["gif"]
        plan = _plan_encode(spec, None, None, 0, None)
        muxer = "gif"
    else:
        # H.264 4:2:0 needs even sizes: repeat the last row/column when odd.
        height, width = opaque_fhwc_uint8.shape[1:3]
        opaque_fhwc_uint8 = np.pad(
            opaque_fhwc_uint8, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge"
        )
        spec = FormatSpec(
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
        plan = _EncodePlan(spec, "yuv420p", {"crf": "20", "preset": "veryfast"}, {}, False, False)
        muxer = "mp4"
    with atomic_output(path, overwrite) as temp:
        try:
            _encode_av(temp, opaque_fhwc_uint8, fps, plan, muxer, None)
        except av.FFmpegError as exc:
            raise LayerAnimError(f"writing the preview {str(path)!r} failed: {exc}.") from exc
    return path


# ---------------------------------------------------------------------------------------------------
# Single images (the stage-one PNG).

_IMAGE_FORMATS = {".png": "PNG", ".webp": "WEBP", ".jpg": "JPEG", ".jpeg": "JPEG"}


def read_image(path: str | Path) -> np.ndarray:
    """Read an image (PNG, WebP, JPEG, …; the first frame if animated) as straight RGBA (h, w, 4) uint8.

    Images without alpha come back opaque; `image_has_alpha(path)` tells whether alpha was stored.
    """
    source = _check_input_path(path)
    if source.is_dir():
        raise UsageError(f"input {str(path)!r} is a directory; give an image file.")
    try:
        with Image.open(source) as image:
            image.seek(0)
            return np.asarray(image.convert("RGBA")).copy()
    except _PIL_ERRORS as exc:
        raise _read_error(source, exc) from exc


def image_has_alpha(path: str | Path) -> bool:
    """Whether an image file stores alpha (an alpha channel, or a transparent palette entry)."""
    source = _check_input_path(path)
    try:
        with Image.open(source) as image:
            if image.format == "WEBP":
                return _webp_has_alpha(source)
            return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    except _PIL_ERRORS as exc:
        raise _read_error(source, exc) from exc


def write_image(path: str | Path, rgba_hwc_uint8: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write one straight RGBA image: PNG, lossless WebP, or JPEG (only if fully opaque). Atomic."""
    if (
        not isinstance(rgba_hwc_uint8, np.ndarray)
        or rgba_hwc_uint8.dtype != np.uint8
        or rgba_hwc_uint8.ndim != 3
        or rgba_hwc_uint8.shape[-1] != 4
    ):
        raise UsageError("image must be a uint8 (height, width, 4) straight RGBA array.")
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in _IMAGE_FORMATS:
        raise UnsupportedFormatError(
            f"image extension {suffix or '(none)'!r} of {str(path)!r} is not supported; use .png or .webp."
        )
    pil_format = _IMAGE_FORMATS[suffix]
    if pil_format == "JPEG" and np.any(rgba_hwc_uint8[..., 3] < 255):
        raise UnsupportedFormatError(f"JPEG cannot store alpha; write {target.with_suffix('.png')} instead.")
    image = Image.fromarray(np.ascontiguousarray(rgba_hwc_uint8))
    with atomic_output(target, overwrite) as temp:
        if pil_format == "JPEG":
            image.convert("RGB").save(temp, format="JPEG", quality=95)
        elif pil_format == "WEBP":
            image.save(temp, format="WEBP", lossless=True, exact=True)
        else:
            image.save(temp, format="PNG")
    return target
