"""Reading and probing: one scan per kind of source, shared by `read_video` and `probe`.

`probe` runs the scan without decoding; `read_video` runs the same scan and decodes the frames it
selects. So both agree on frame counts, fps (GIF/APNG delays snapped to common rates), truncation and
alpha, by construction.

- VP8/VP9 alpha is stored beside the colour (Matroska BlockAdditional); FFmpeg's native `vp8`/`vp9`
  decoders drop it, so those streams are decoded with the libvpx decoders, fed from the same demux.
- Animated WebP is read with Pillow (PyAV has no animated-WebP decoder).

Axis legend: f frames, h height, w width, c channels (RGBA).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from layeranim.errors import UsageError, VideoReadError
from layeranim.progress import Progress as ProgressCallback
from layeranim.video_io import stacked
from layeranim.video_io._inputs import (
    PIL_ERRORS,
    check_input_path,
    is_sequence_source,
    is_webp,
    read_error,
    webp_has_alpha,
)
from layeranim.video_io.formats import DEFAULT_SEQUENCE_FPS
from layeranim.video_io.sequences import scan_sequence


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
    alpha_layout: str | None = None  # "stacked" for mp4-stacked (colour on top, alpha below); else None

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values; `alpha_layout` only when the alpha is packed (stacked)."""
        out = asdict(self)
        out["path"] = str(self.path)
        if out["alpha_layout"] is None:
            del out["alpha_layout"]
        return out


@dataclass(frozen=True)
class _Range:
    """Frames `start`, `start + step`, … before `stop` (exclusive; None = to the end)."""

    start: int = 0
    stop: int | None = None
    step: int = 1

    def wants(self, index: int) -> bool:
        return index >= self.start and (index - self.start) % self.step == 0

    def count(self, total: int) -> int:
        return len(
            range(self.start, self.stop if self.stop is not None else max(total, self.start + 1), self.step)
        )


def _validate_range(start: int, stop: int | None, step: int) -> None:
    if not isinstance(start, int) or start < 0:
        raise UsageError(f"start {start!r} must be a frame index ≥ 0.")
    if stop is not None and (not isinstance(stop, int) or stop <= start):
        raise UsageError(f"stop {stop!r} must be greater than start ({start}); it is exclusive.")
    if not isinstance(step, int) or step < 1:
        raise UsageError(f"step {step!r} must be 1 or more.")


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


def _finish_clip(path: Path, frames: list[np.ndarray], fps: float, start: int, decoded: int) -> Clip:
    if decoded == 0:
        raise VideoReadError(f"input {str(path)!r} holds no frames that could be decoded.")
    if not frames:
        raise UsageError(f"start {start} is past the last frame of {str(path)!r} ({decoded} frames).")
    shapes = {frame.shape for frame in frames}
    if len(shapes) != 1:
        raise VideoReadError(f"input {str(path)!r} has frames of different sizes ({sorted(shapes)}).")
    return Clip(rgba_fhwc_uint8=np.stack(frames), fps=float(fps))


# ---------------------------------------------------------------------------------------------------
# PyAV sources (video files, APNG, GIF).


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
    except PIL_ERRORS:
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


@dataclass
class _AvScan:
    """What one pass over a container's first video stream found."""

    info: VideoInfo
    frames: list[np.ndarray] = field(default_factory=list)  # the selected frames (empty when probing)
    decoded: int = 0  # frames decoded (when reading)


def _decoded_frames(container: Any, stream: Any, codec_name: str, on_packet: Any) -> Iterator[Any]:
    """Every frame of `stream`, decoded from one demux; `on_packet(packet)` sees each packet first."""
    # FFmpeg's native vp8/vp9 decoders drop the alpha plane; libvpx reads it.
    decoder = None
    if codec_name in ("vp8", "vp9"):
        decoder = av.CodecContext.create("libvpx-vp9" if codec_name == "vp9" else "libvpx", "r")
    for packet in container.demux(stream):
        on_packet(packet)
        if decoder is not None:
            yield from decoder.decode(packet if packet.size else None)
        else:
            yield from packet.decode()


def _scan_av(path: Path, selection: _Range | None, progress: ProgressCallback | None) -> _AvScan:
    """One pass over a PyAV-readable file: probe it, and decode the frames `selection` picks (if any)."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise read_error(path, exc) from exc
    with container:
        if not container.streams.video:
            raise VideoReadError(f"input {str(path)!r} has no video stream; give a video or image file.")
        stream = container.streams.video[0]
        context = stream.codec_context
        codec_name = context.codec.canonical_name  # the codec, not the decoder (av1, not libdav1d)
        container_name = container.format.name
        tags = {key.lower(): value for key, value in container.metadata.items()}
        is_stacked = stacked.is_stacked(tags)
        height, width = int(context.height), int(context.width)
        if is_stacked:  # colour on top, alpha below: the clip is (about) the top half
            height, width = stacked.clip_size(tags, height, width)
        is_vpx = codec_name in ("vp8", "vp9")
        is_animation = container_name in ("gif", "apng")
        header_frames = int(stream.frames or 0)
        fps = _stream_fps(stream)
        expected, tolerance = _expected_frames(stream, container, fps)

        packets = 0
        packet_seconds = 0.0
        first_packet_has_alpha = False

        def on_packet(packet: Any) -> None:
            nonlocal packets, packet_seconds, first_packet_has_alpha
            if packet.size == 0:
                return
            if packets == 0 and is_vpx:
                first_packet_has_alpha = packet.has_sidedata("matroska_block_additional")
            if packet.duration and packet.time_base:
                packet_seconds += float(packet.duration * packet.time_base)
            packets += 1

        scan = _AvScan(info=None)  # type: ignore[arg-type]  # filled in below
        try:
            if selection is not None:
                wanted = selection.count(expected)
                for frame in _decoded_frames(container, stream, codec_name, on_packet):
                    if selection.stop is not None and scan.decoded >= selection.stop:
                        break
                    if selection.wants(scan.decoded):
                        scan.frames.append(
                            stacked.unstack(frame, height, width)
                            if is_stacked
                            else frame.to_ndarray(format="rgba")
                        )
                        if progress is not None:
                            progress(len(scan.frames), max(wanted, len(scan.frames)))
                    scan.decoded += 1
            elif header_frames == 0 or is_animation or is_vpx:
                # Probing: count packets when the header has no count (and sum GIF/APNG delays); VP8/VP9
                # need only their first packet, whose side data says whether alpha is stored.
                for packet in container.demux(stream):
                    on_packet(packet)
                    if header_frames and not is_animation and packets:
                        break
        except av.FFmpegError as exc:
            done = f"decoding failed after {scan.decoded} frames: " if selection is not None else ""
            raise VideoReadError(
                f"input {str(path)!r} is truncated or corrupt ({done}{exc}); re-export it."
            ) from exc

        if selection is not None:
            found, checked = scan.decoded, selection.stop is None
        else:
            found, checked = (header_frames or packets), header_frames == 0
        if checked and expected and found < expected - tolerance:
            raise VideoReadError(
                f"input {str(path)!r} is truncated: its header promises {expected} frames but it holds "
                f"only {found}; re-export it."
            )
        frames = header_frames or packets
        if is_animation and packets > 1 and packet_seconds > 0:
            fps = _snap_fps(packet_seconds / packets, 0.005 if container_name == "gif" else 0.0005)

        pix_fmt = context.format.name if context.format is not None else "unknown"
        if is_vpx:
            # Alpha lives beside the colour stream: the container says so and the packets carry it.
            metadata = {key.lower(): value for key, value in stream.metadata.items()}
            has_alpha = metadata.get("alpha_mode") == "1" and first_packet_has_alpha
            if has_alpha:  # the native decoder reports the colour planes only: name the stored format
                pix_fmt = _with_alpha_plane(pix_fmt)
        elif is_stacked:
            has_alpha = True
        elif container_name == "gif":  # a transparent palette entry; only probing asks (reading needs fps)
            has_alpha = selection is None and _gif_has_transparency(path)
        else:
            has_alpha = _format_has_alpha(pix_fmt)
        scan.info = VideoInfo(
            path=path,
            format="mp4-stacked"
            if is_stacked
            else _known_format_name(container_name, codec_name, str(context.codec_tag or ""), path),
            codec=codec_name,
            pix_fmt=pix_fmt,
            frames=frames,
            fps=round(fps, 3),
            width=width,
            height=height,
            has_alpha=bool(has_alpha),
            alpha_layout=stacked.LAYOUT_STACKED if is_stacked else None,
        )
        return scan


def _is_truncated_gif(path: Path) -> bool:
    """A GIF must end with the trailer byte `;` (0x3B); a cut-off download does not."""
    with open(path, "rb") as handle:
        if handle.read(4) != b"GIF8":
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b";"


# ---------------------------------------------------------------------------------------------------
# Pillow sources (animated WebP, which PyAV cannot decode).

_PIL_PIX_FMT = {"RGBA": "rgba", "RGB": "rgb24", "LA": "ya8", "L": "gray", "P": "pal8", "PA": "pal8"}


def _scan_pillow(path: Path, selection: _Range | None, progress: ProgressCallback | None) -> _AvScan:
    """One pass over an animated WebP: every frame's delay (Pillow fills it on load), the selected frames."""
    scan = _AvScan(info=None)  # type: ignore[arg-type]  # filled in below
    durations_ms: list[float] = []
    try:
        with Image.open(path) as image:
            total = getattr(image, "n_frames", 1)
            wanted = selection.count(total) if selection is not None else 0
            for index in range(total):
                if selection is not None and selection.stop is not None and index >= selection.stop:
                    break
                image.seek(index)
                image.load()  # Pillow fills a WebP frame's duration when it decodes it
                durations_ms.append(float(image.info.get("duration") or 0))
                if selection is not None and selection.wants(index):
                    scan.frames.append(np.asarray(image.convert("RGBA")).copy())
                    if progress is not None:
                        progress(len(scan.frames), max(wanted, len(scan.frames)))
                scan.decoded += 1
            width, height = image.size
            mode = image.mode
    except PIL_ERRORS as exc:
        raise read_error(path, exc) from exc
    mean_ms = sum(durations_ms) / len(durations_ms) if durations_ms else 0.0
    fps = _snap_fps(mean_ms / 1000.0, 0.0005) if mean_ms > 0 else DEFAULT_SEQUENCE_FPS
    has_alpha = webp_has_alpha(path)
    scan.info = VideoInfo(
        path=path,
        format="webp",
        codec="webp",
        pix_fmt="rgba" if has_alpha else _PIL_PIX_FMT.get(mode, mode.lower()),
        frames=total,
        fps=fps,
        width=width,
        height=height,
        has_alpha=has_alpha,
    )
    return scan


def _scan(
    path: str | Path, selection: _Range | None, progress: ProgressCallback | None
) -> tuple[Path, _AvScan]:
    """Dispatch one scan by the kind of source: PNG sequence, animated WebP, or anything PyAV opens."""
    source = check_input_path(path)
    if is_sequence_source(source):
        chosen = slice(selection.start, selection.stop, selection.step) if selection is not None else None
        found = scan_sequence(source, chosen, progress)
        info = VideoInfo(
            path=source,
            format="png-seq",
            codec="png",
            pix_fmt=_PIL_PIX_FMT.get(found.mode, found.mode.lower()),
            frames=len(found.files),
            fps=found.fps,
            width=found.width,
            height=found.height,
            has_alpha=found.has_alpha,
        )
        return source, _AvScan(info, found.frames, len(found.files))
    if is_webp(source):
        return source, _scan_pillow(source, selection, progress)
    if selection is not None and _is_truncated_gif(source):
        raise VideoReadError(
            f"input {str(source)!r} is a truncated GIF (it lacks the end-of-file trailer); re-export it."
        )
    return source, _scan_av(source, selection, progress)


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
    source, scan = _scan(path, _Range(start, stop, step), progress)
    return _finish_clip(source, scan.frames, scan.info.fps, start, scan.decoded)


_STILL_SUFFIXES = (".png", ".apng", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def probe(path: str | Path) -> VideoInfo:
    """Frame count, fps, size, codec, pixel format, and whether alpha is actually stored.

    A still image is decoded once (its header alone can look fine when the file is cut short), so a
    truncated or damaged file is a `VideoReadError`, never a 0×0 clip.
    """
    source, scan = _scan(path, None, None)
    info = scan.info
    if source.is_file() and source.suffix.lower() in _STILL_SUFFIXES:
        try:
            with Image.open(source) as image:
                image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise VideoReadError(
                f"input {str(source)!r} is truncated or damaged ({exc}); re-export or re-download it."
            ) from exc
    if info.width <= 0 or info.height <= 0:
        raise VideoReadError(
            f"input {str(source)!r} reports a size of {info.width}x{info.height}; it is truncated or damaged."
        )
    return info
