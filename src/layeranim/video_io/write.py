"""Writing straight-alpha RGBA clips: validate, plan the encoder settings from the format table, encode.

- Frames go in as (f, h, w, 4) chunks, from one array or from any iterable, and are encoded as they
  arrive (GIF excepted: `gif.py` needs the whole clip for its palette).
- `yuva` encoders get packed RGBA converted by one reused swscale context, and then the exact source
  alpha copied into the alpha plane: swscale's packed path shifts alpha by up to one level (FFmpeg
  8.1); its planar `gbrap` path does not, but building gbrap frames costs more than the encode saves.
- Colour under alpha 0 is edge-padded before 4:2:0 encodes (`alpha.pad_color_under_transparent`), or
  opaque edges pick up its colour; `mp4-stacked` pictures are built by `stacked.py`. Both run on a
  helper thread, one group of frames ahead of the encoder.

Axis legend: f frames, h height, w width, c channels (RGBA).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from layeranim import alpha as alpha_ops
from layeranim.errors import LayerAnimError, UsageError
from layeranim.progress import Progress as ProgressCallback
from layeranim.video_io import stacked
from layeranim.video_io.atomic import atomic_output, check_output_target
from layeranim.video_io.formats import (
    ALPHA_MODES,
    MUXER_FOR_EXTENSION,
    AlphaMode,
    FormatSpec,
    QualitySpec,
    resolve_output_format,
)
from layeranim.video_io.gif import (
    DEFAULT_GIF_ALPHA_THRESHOLD,
    DEFAULT_GIF_DITHER,
    check_gif_options,
    gif_frames,
)
from layeranim.video_io.read import VideoInfo, probe
from layeranim.video_io.sequences import check_sequence_output, write_sequence
from layeranim.video_io.stacked import DEFAULT_STACKED_CODEC, STACKED_CODEC_ALIASES, STACKED_CODECS

logger = logging.getLogger(__name__)

# FFmpeg colour tags (AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic / AVColorRange).
_CS_BT709, _CS_SMPTE170M = 1, 6
_PRI_BT709 = 1
_TRC_BT709, _TRC_SRGB = 1, 13
_RANGE_TV = 1


FrameSource = np.ndarray | Iterable[np.ndarray]
"""A clip to write: one (f, h, w, 4) array, or an iterable of such chunks and/or single (h, w, 4) frames."""

_CHUNK_PIXELS = 1 << 21  # frames per internal chunk of an array: about 2 Mpixel (8 frames at 512²)
_PAD_PIXELS = 1 << 18  # colour padding runs on groups this size: the pyramid stays in the CPU cache


def validate_fps(fps: float) -> None:
    if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise UsageError(f"fps {fps!r} must be a positive number (e.g. 24).")


def _check_chunk(chunk: Any, name: str) -> np.ndarray:
    """A frame (h, w, 4) or chunk (f, h, w, 4) of uint8 straight RGBA → (f, h, w, 4); UsageError otherwise."""
    if not isinstance(chunk, np.ndarray):
        raise UsageError(f"{name} must be a numpy array, got {type(chunk).__name__}.")
    if chunk.ndim == 3:
        chunk = chunk[None]
    if chunk.dtype != np.uint8 or chunk.ndim != 4 or chunk.shape[-1] != 4:
        raise UsageError(
            f"{name} must be uint8 (frames, height, width, 4) or (height, width, 4) straight RGBA, got "
            f"{chunk.dtype} {tuple(chunk.shape)}."
        )
    if min(chunk.shape[1:3]) < 1:
        raise UsageError(f"{name} must hold frames of at least 1x1 pixels, got {tuple(chunk.shape)}.")
    return chunk


def validate_clip(rgba_fhwc_uint8: np.ndarray, fps: float) -> None:
    """Check a whole clip given as one array (and its fps) before any work."""
    if not isinstance(rgba_fhwc_uint8, np.ndarray):
        raise UsageError(f"frames must be a numpy array, got {type(rgba_fhwc_uint8).__name__}.")
    if rgba_fhwc_uint8.dtype != np.uint8 or rgba_fhwc_uint8.ndim != 4 or rgba_fhwc_uint8.shape[-1] != 4:
        raise UsageError(
            f"frames must be uint8 (frames, height, width, 4) straight RGBA, got {rgba_fhwc_uint8.dtype} "
            f"{tuple(rgba_fhwc_uint8.shape)}."
        )
    if min(rgba_fhwc_uint8.shape[:3]) < 1:
        raise UsageError(f"frames must hold at least one 1x1 frame, got {tuple(rgba_fhwc_uint8.shape)}.")
    validate_fps(fps)


def iter_chunks(frames: FrameSource) -> Iterator[np.ndarray]:
    """The clip as (f, h, w, 4) uint8 chunks, each checked as it arrives; all frames the same size.

    An array is cut into chunks of about `_CHUNK_PIXELS`; an iterable's items are passed on as they come,
    so a generator is never held whole. Raises UsageError for a bad item or an empty clip.
    """
    if isinstance(frames, np.ndarray):
        step = max(1, _CHUNK_PIXELS // max(1, frames.shape[1] * frames.shape[2]))
        for begin in range(0, len(frames), step):
            yield frames[begin : begin + step]
        return
    if isinstance(frames, str | bytes) or not isinstance(frames, Iterable):
        raise UsageError(
            f"frames must be a numpy array or an iterable of RGBA frames, got {type(frames).__name__}."
        )
    size: tuple[int, int] | None = None
    count = 0
    for index, item in enumerate(frames):
        chunk = _check_chunk(item, f"frames item {index}")
        if size is None:
            size = chunk.shape[1:3]
        elif chunk.shape[1:3] != size:
            raise UsageError(
                f"frames item {index} is {chunk.shape[2]}x{chunk.shape[1]} but the clip is "
                f"{size[1]}x{size[0]}; every frame must have the same size."
            )
        count += len(chunk)
        if len(chunk):
            yield chunk
    if count == 0:
        raise UsageError("frames held no frame; give at least one (height, width, 4) RGBA frame.")


def fps_fraction(fps: float) -> Fraction:
    """24 → 24/1, 29.97 → 30000/1001, 23.976 → 2997/125."""
    return Fraction(fps).limit_denominator(1001)


def _cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _encoder_threads() -> int:
    """libvpx with 2 threads collapses on a loaded 2-core machine; one thread is faster there (§5)."""
    cpus = _cpus()
    return 1 if cpus <= 2 else min(cpus, 8)


@dataclass(frozen=True)
class GifOptions:
    """How GIF maps RGBA to its palette: alpha below the threshold is transparent; the dithering."""

    alpha_threshold: int = DEFAULT_GIF_ALPHA_THRESHOLD
    dither: str = DEFAULT_GIF_DITHER
    bayer_scale: int = 2


@dataclass(frozen=True)
class EncodePlan:
    spec: FormatSpec
    pix_fmt: str
    codec_options: dict[str, str]
    muxer_options: dict[str, str]
    chroma_420: bool
    lossless: bool
    gif: GifOptions | None = None  # set for GIF: frames go through palettegen/paletteuse
    encoder: str = ""  # the encoder to open ("" = the format's own, spec.codec)
    alpha_mode: str = "straight"  # recorded in mp4-stacked's tags

    @property
    def codec(self) -> str:
        return self.encoder or self.spec.codec


def _gif_options(spec: FormatSpec, alpha_threshold: int | None, dither: str | None) -> GifOptions | None:
    """GIF's options from `alpha_threshold` and `dither` (a name, or `bayer:N` with a Bayer scale N)."""
    if spec.alpha != "1-bit":
        if alpha_threshold is not None or dither is not None:
            given = "alpha_threshold" if alpha_threshold is not None else "dither"
            raise UsageError(f"{given} applies to GIF only (format {spec.name!r} keeps full alpha); drop it.")
        return None
    name, _, scale = (dither or DEFAULT_GIF_DITHER).partition(":")
    if scale and (name != "bayer" or not scale.isdigit()):
        raise UsageError(
            f"dither {dither!r}: only bayer takes a scale, as bayer:N with N 0–5 (e.g. bayer:3)."
        )
    options = GifOptions(
        DEFAULT_GIF_ALPHA_THRESHOLD if alpha_threshold is None else alpha_threshold,
        name,
        int(scale) if scale else 2,
    )
    check_gif_options(options.alpha_threshold, options.dither, options.bayer_scale)
    return options


def plan_encode(
    spec: FormatSpec,
    quality: int | None,
    lossless: bool | None,
    loop: int,
    codec_options: dict[str, str] | None,
    *,
    alpha_threshold: int | None = None,
    dither: str | None = None,
    codec: str | None = None,
) -> EncodePlan:
    """Turn the caller's quality/lossless/loop into encoder and muxer options, refusing what cannot apply."""
    encoder, codec_defaults, qspec_for_codec = _codec_choice(spec, codec)
    options = dict(codec_defaults)
    # Reproducible files: no random segment/track UIDs, no date, no library version in the header.
    muxer_options: dict[str, str] = {"fflags": "+bitexact"}
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
            raise UsageError("quality applies to lossy WebP only; drop it, or pass lossless=False.")
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

    if spec.alpha_layout == "stacked":
        # Web players want the index first; arbitrary keys (alpha_layout, clip size) need mdta tags.
        muxer_options["movflags"] = "+faststart+use_metadata_tags"
    if quality is not None:
        qspec = qspec_for_codec
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
    elif qspec_for_codec is not None and not (spec.lossless_option == "vp9" and lossless) and not is_lossless:
        options[qspec_for_codec.option] = str(qspec_for_codec.default)

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
    gif = _gif_options(spec, alpha_threshold, dither)
    return EncodePlan(spec, pix_fmt, options, muxer_options, chroma_420, is_lossless, gif, encoder)


def _codec_choice(spec: FormatSpec, codec: str | None) -> tuple[str, dict[str, str], QualitySpec | None]:
    """(encoder, its default options, its quality setting): the format's own, or `codec` for mp4-stacked."""
    if spec.alpha_layout != "stacked":
        if codec is not None:
            raise UsageError(
                f"codec {codec!r} applies to mp4-stacked only (h264 or av1); format {spec.name!r} has "
                "one codec. Drop it."
            )
        return spec.codec, spec.codec_options, spec.quality
    key = (codec or DEFAULT_STACKED_CODEC).strip().lower()
    key = STACKED_CODEC_ALIASES.get(key, key)
    if key not in STACKED_CODECS:
        raise UsageError(
            f"codec {codec!r} is not one mp4-stacked writes; choose {' or '.join(STACKED_CODECS)} "
            f"(default {DEFAULT_STACKED_CODEC})."
        )
    choice = STACKED_CODECS[key]
    try:
        av.Codec(choice.encoder, "w")
    except (av.FFmpegError, ValueError):
        raise UsageError(
            f"codec {key!r}: this PyAV build has no {choice.encoder} encoder; choose another codec."
        ) from None
    return choice.encoder, choice.options, choice.quality


def _configure_stream(stream: Any, plan: EncodePlan, width: int, height: int) -> None:
    stream.width, stream.height, stream.pix_fmt = width, height, plan.pix_fmt
    context = stream.codec_context
    if plan.codec in ("libvpx", "libvpx-vp9"):
        context.thread_count = _encoder_threads()
    elif plan.codec != "gif":
        context.thread_type = "AUTO"
    if plan.pix_fmt.startswith("yuv"):
        matrix = plan.spec.matrix or "bt601"
        context.colorspace = _CS_BT709 if matrix == "bt709" else _CS_SMPTE170M
        context.color_range = _RANGE_TV
        context.color_primaries = _PRI_BT709
        # sRGB input: tagged as sRGB for the web formats; editors expect BT.709 on ProRes.
        context.color_trc = _TRC_BT709 if matrix == "bt709" else _TRC_SRGB


class _FrameMaker:
    """Straight RGBA frames → av.VideoFrames in the encoder's pixel format, alpha bit-exact.

    One swscale context serves the whole clip (building one per frame costs more than converting).
    """

    def __init__(self, plan: EncodePlan) -> None:
        self.pix_fmt = plan.pix_fmt
        self.matrix = "itu709" if plan.spec.matrix == "bt709" else "itu601"
        self.reformatter = VideoReformatter()

    def __call__(self, rgba_hwc_uint8: np.ndarray) -> av.VideoFrame:
        rgba_hwc_uint8 = np.ascontiguousarray(rgba_hwc_uint8)
        if rgba_hwc_uint8.shape[-1] == 3:  # opaque pictures (mp4-stacked)
            return self._reformat(av.VideoFrame.from_ndarray(rgba_hwc_uint8, format="rgb24"))
        if self.pix_fmt in ("yuva420p", "yuva444p", "yuva444p10le"):
            # Packed RGBA is the fast way in; swscale shifts its alpha by up to one level on the way to
            # yuva (FFmpeg 8.1), so the alpha plane is then overwritten with the exact source alpha
            # (10-bit: shifted up by 2, as swscale's planar path does and its 10 → 8-bit path undoes).
            frame = av.VideoFrame.from_ndarray(rgba_hwc_uint8, format="rgba")
            yuva = self._reformat(frame)
            plane = yuva.planes[3]
            alpha_hw = rgba_hwc_uint8[..., 3]
            if self.pix_fmt.endswith("10le"):
                rows = np.frombuffer(plane, "<u2").reshape(plane.height, plane.line_size // 2)
                alpha_hw = alpha_hw.astype(np.uint16) << 2
            else:
                rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            rows[:, : plane.width] = alpha_hw
            return yuva
        if self.pix_fmt.startswith("yuv"):  # other YUV formats: planar gbrap keeps alpha exact
            return self._reformat(av.VideoFrame.from_ndarray(rgba_hwc_uint8, format="gbrap"))
        if self.pix_fmt == "gbrap":  # PyAV takes gbrap frames in R, G, B, A order
            return av.VideoFrame.from_ndarray(rgba_hwc_uint8, format="gbrap")
        if self.pix_fmt == "bgra":
            return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba_hwc_uint8[..., [2, 1, 0, 3]]), "bgra")
        return av.VideoFrame.from_ndarray(rgba_hwc_uint8, format="rgba")

    def _reformat(self, frame: av.VideoFrame) -> av.VideoFrame:
        return self.reformatter.reformat(
            frame, format=self.pix_fmt, dst_colorspace=self.matrix, dst_color_range=_RANGE_TV
        )


def _groups(chunk_fhwc: np.ndarray, pixels: int | None) -> Iterator[np.ndarray]:
    """The chunk in groups of frames of about `pixels` pixels (at least one frame); whole when None."""
    if pixels is None:
        yield chunk_fhwc
        return
    step = max(1, pixels // (chunk_fhwc.shape[1] * chunk_fhwc.shape[2]))
    for begin in range(0, len(chunk_fhwc), step):
        yield chunk_fhwc[begin : begin + step]


def encode_av(
    temp: Path,
    chunks: Iterable[np.ndarray],
    fps: float,
    plan: EncodePlan,
    muxer: str,
    total: int,
    progress: ProgressCallback | None,
) -> int:
    """Encode (f, h, w, 4) chunks as they come into `temp`; the stream is sized by the first chunk.

    Returns the number of frames written. `progress(done, total)` after each frame.
    """
    if plan.gif is not None:  # one palette for the whole clip: GIF needs every frame first
        whole = np.concatenate(list(chunks))
        frames: Iterator[av.VideoFrame] = gif_frames(
            whole,
            1 / fps_fraction(fps),
            alpha_threshold=plan.gif.alpha_threshold,
            dither=plan.gif.dither,
            bayer_scale=plan.gif.bayer_scale,
        )
        # The first frame only sizes the stream; the frames come ready from the filter graph.
        return _mux(temp, [whole[:1]], fps, plan, muxer, total, progress, frames)
    return _mux(temp, chunks, fps, plan, muxer, total, progress, None)


def _pictures(rgba_fhwc_uint8: np.ndarray, plan: EncodePlan) -> np.ndarray:
    """What the encoder is given for these frames: padded RGBA, or for mp4-stacked the stacked RGB."""
    if plan.chroma_420:
        rgba_fhwc_uint8 = alpha_ops.pad_color_under_transparent(rgba_fhwc_uint8)
    if plan.spec.alpha_layout == "stacked":
        return stacked.stack(rgba_fhwc_uint8)  # (f, 2·Hp, Wp, 3)
    return rgba_fhwc_uint8


def _mux(
    temp: Path,
    chunks: Iterable[np.ndarray],
    fps: float,
    plan: EncodePlan,
    muxer: str,
    total: int,
    progress: ProgressCallback | None,
    ready_frames: Iterator[av.VideoFrame] | None,
) -> int:
    """Encode the chunks' frames (or `ready_frames`, already in the encoder's format) and mux them.

    Padding and conversion of the next group of frames run on a helper thread while the encoder works
    on the current one (both release the GIL), so on two or more CPUs they cost no wall time.
    """
    make_frame = _FrameMaker(plan)

    def prepare(group_fhwc: np.ndarray) -> list[av.VideoFrame]:
        return [make_frame(picture_hwc_uint8) for picture_hwc_uint8 in _pictures(group_fhwc, plan)]

    groups = (group for chunk in chunks for group in _groups(chunk, _PAD_PIXELS if plan.chroma_420 else None))
    done = 0
    with (
        av.open(str(temp), "w", format=muxer, options=plan.muxer_options) as container,
        ThreadPoolExecutor(1, thread_name_prefix="layeranim-encode") as helper,
    ):
        if ready_frames is not None:
            batches: Iterator[tuple[np.ndarray, Iterable[av.VideoFrame]]] = iter(
                [(next(iter(chunks)), ready_frames)]
            )
        else:
            batches = _one_ahead(groups, prepare, helper if _cpus() > 1 else None)
        stream = None
        for group, frames in batches:
            if stream is None:
                height, width = group.shape[1:3]
                if plan.spec.alpha_layout == "stacked":
                    container.metadata.update(stacked.metadata(height, width, plan.alpha_mode))
                    height, width = stacked.half_size(height, width)
                    height *= 2  # colour on top, alpha below
                if plan.codec == "libsvtav1":
                    # SVT-AV1 prints a 20-line banner to stderr at every open unless told to log errors
                    # only; the library must not print. A value the user set is kept.
                    os.environ.setdefault("SVT_LOG", "1")
                stream = container.add_stream(plan.codec, rate=fps_fraction(fps), options=plan.codec_options)
                _configure_stream(stream, plan, width=width, height=height)
            for frame in frames:
                for packet in stream.encode(frame):
                    container.mux(packet)
                done += 1
                if progress is not None:
                    progress(done, total)
        if stream is not None:
            for packet in stream.encode(None):
                container.mux(packet)
    return done


def _one_ahead(
    items: Iterator[np.ndarray], work: Callable[[np.ndarray], list[av.VideoFrame]], helper: Executor | None
) -> Iterator[tuple[np.ndarray, list[av.VideoFrame]]]:
    """(item, work(item)) in order, with the next item's work started on `helper` before this one is used."""
    if helper is None:
        for item in items:
            yield item, work(item)
        return
    pending: tuple[np.ndarray, Future[list[av.VideoFrame]]] | None = None
    for item in items:
        future = helper.submit(work, item)
        if pending is not None:
            yield pending[0], pending[1].result()
        pending = (item, future)
    if pending is not None:
        yield pending[0], pending[1].result()


def check_output(
    path: str | Path,
    *,
    format: str | None = None,
    overwrite: bool = False,
    codec: str | None = None,
    dither: str | None = None,
    alpha_threshold: int | None = None,
) -> FormatSpec:
    """Resolve the output format and check that the target may be written, before any expensive work.

    `codec`, `dither` and `alpha_threshold` are checked against the format as `write_video` would.
    """
    spec = resolve_output_format(path, format)
    plan_encode(spec, None, None, 0, None, alpha_threshold=alpha_threshold, dither=dither, codec=codec)
    target = Path(str(path).rstrip("/" + os.sep) or ".")
    if spec.kind == "sequence":
        check_sequence_output(target, overwrite)
    else:
        check_output_target(target, overwrite)
    return spec


def write_video(
    path: str | Path,
    rgba_fhwc_uint8: FrameSource,
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
    frame_count: int | None = None,
    alpha_threshold: int | None = None,
    dither: str | None = None,
    codec: str | None = None,
) -> VideoInfo:
    """Write a straight-alpha RGBA clip with its alpha; returns the probe of the written file.

    `rgba_fhwc_uint8` is one (f, h, w, 4) uint8 array, or an iterable (a generator, say) of such
    chunks or of single (h, w, 4) frames: those are encoded as they arrive and never held whole (except
    for GIF, whose one palette needs every frame first). Both give the same file.

    `format` is a name from `FORMATS` (default: chosen by the extension). `quality` is the CRF for
    VP8/VP9 (lower is better) or the quality of lossy WebP (higher is better). `lossless` switches
    VP9 (lossless YUVA) and WebP (lossless is its default). `alpha_mode="premultiplied"` multiplies
    colour by alpha at this boundary, for consumers that expect it. `loop` is the play count of
    animated images (0 = forever). The file appears only when complete; an existing one is replaced
    only with `overwrite=True`. `progress(done, total)` is called after each frame; `total` is the
    array's length, or `frame_count` for an iterable (0 when not given).

    `mp4-stacked` only: `codec` is `h264` (libx264, the default) or `av1` (SVT-AV1); `quality` is its
    CRF. The layout and its tags are described in `video_io.stacked`.

    GIF only: pixels with alpha below `alpha_threshold` (default 128) become transparent, the rest
    map to one 255-colour palette for the clip, dithered by `dither` (default `none`; `bayer` or
    `bayer:N` with a scale N 0–5, `sierra2_4a`, `floyd_steinberg`, … see `GIF_DITHERS`).
    """
    # 1. Check the inputs and the target before doing any work.
    if isinstance(rgba_fhwc_uint8, np.ndarray):
        validate_clip(rgba_fhwc_uint8, fps)
        total = len(rgba_fhwc_uint8)
    else:
        validate_fps(fps)
        total = frame_count or 0
    if frame_count is not None and (not isinstance(frame_count, int) or frame_count < 0):
        raise UsageError(f"frame_count {frame_count!r} must be the number of frames the iterable yields.")
    spec = resolve_output_format(path, format)
    if alpha_mode not in ALPHA_MODES:
        raise UsageError(f"alpha mode {alpha_mode!r} is unknown; use 'straight' or 'premultiplied'.")
    plan = plan_encode(
        spec,
        quality,
        lossless,
        loop,
        codec_options,
        alpha_threshold=alpha_threshold,
        dither=dither,
        codec=codec,
    )
    if alpha_mode == "premultiplied":
        # Colour under alpha 0 becomes 0, which is right for premultiplied consumers: no padding.
        plan = replace(plan, chroma_420=False, alpha_mode=alpha_mode)
    chunks = _converted(iter_chunks(rgba_fhwc_uint8), plan, alpha_mode)

    # 2. Encode into a temporary file (or directory) beside the target, then move it into place.
    if spec.kind == "sequence":
        frames = (rgba_hwc_uint8 for chunk in chunks for rgba_hwc_uint8 in chunk)
        written = write_sequence(path, frames, fps, overwrite, total, progress)
        return probe(written)
    target = Path(path)
    muxer = MUXER_FOR_EXTENSION[target.suffix.lower()]
    with atomic_output(target, overwrite) as temp:
        try:
            encode_av(temp, chunks, fps, plan, muxer, total, progress)
        except av.FFmpegError as exc:
            raise LayerAnimError(f"encoding {str(target)!r} as {spec.name} failed: {exc}.") from exc
        except OSError as exc:
            raise LayerAnimError(f"cannot write {str(target)!r}: {exc.strerror or exc}.") from exc
    return probe(target)


def _converted(chunks: Iterator[np.ndarray], plan: EncodePlan, alpha_mode: AlphaMode) -> Iterator[np.ndarray]:
    """Apply the named straight → premultiplied boundary per chunk; warn once where GIF drops soft alpha."""
    warned = False
    for chunk in chunks:
        if alpha_mode == "premultiplied":
            chunk = alpha_ops.premultiply_uint8(chunk)
        if plan.gif is not None and not warned:
            alpha = chunk[..., 3]
            if np.any((alpha > 0) & (alpha < 255)):
                logger.warning(
                    "GIF stores 1-bit alpha: soft edges (alpha 1–254) are thresholded at "
                    f"{plan.gif.alpha_threshold}. Use webp, apng or webm to keep them."
                )
                warned = True
        yield chunk
