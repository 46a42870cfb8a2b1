"""Writing an RGBA clip in each alpha format of `layeranim.video_io`: speed, size and error, side by side.

One synthetic 64-frame 256×256 straight-alpha clip (a moving, textured disc with a soft edge and a
half-transparent shadow on a transparent background) is written with `video_io.write_video` in every format,
interleaved in one run. Reported: median seconds, frames per second, speed relative to the fastest format,
and file size relative to the smallest. Encoding runs on the CPU whatever the machine; libvpx uses one thread
on machines with ≤ 2 cores (see `video_io.write._encoder_threads`).

Then the same frames are written by the `ffmpeg` command-line tool with the **same settings** (encoder,
pixel format, every encoder option `write_video` sets, libvpx's thread count, bitexact muxing), fed as raw
RGBA on stdin, interleaved with `write_video`. For each format: median seconds of both and the CLI's
time over ours (> 1× means write_video is faster); for libvpx also a bare PyAV loop with the same
encoder settings (no padding, no atomic rename, no probe), the floor for any PyAV program; both file
sizes; and both files' error against the source once decoded by `video_io.read_video` (alpha max;
colour error weighted by alpha, mean and max, in 8-bit levels). The CLI is the system's ffmpeg, whose
FFmpeg and libvpx versions may differ from PyAV's bundled ones; both are printed. `--no-cli` skips it.

    .venv/bin/python benchmarks/bench_video_io.py              # ~1.5 min on a 2-core machine
    .venv/bin/python benchmarks/bench_video_io.py --formats webm --size 512   # the issue's VP9 case
    .venv/bin/python benchmarks/bench_video_io.py --formats webm,mov,gif --frames 32
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch
from _util import compare, print_header, print_table, usage_error

from layeranim import video_io
from layeranim.errors import LayerAnimError
from layeranim.video_io.formats import FORMATS_BY_NAME, MUXER_FOR_EXTENSION
from layeranim.video_io.write import _encoder_threads, plan_encode

DEFAULT_FORMATS = ("webm", "webm-vp8", "mov", "mov-png", "mkv", "apng", "webp", "gif", "mp4-stacked")
FPS = 8.0


def synthetic_clip(frames: int, size: int, seed: int = 0) -> np.ndarray:
    """(f, h, w, 4) uint8 straight RGBA: a soft-edged textured disc over a shadow; alpha 0 elsewhere."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    texture_hw3 = rng.normal(0.0, 0.04, (size, size, 3)).astype(np.float32)  # fixed grain, like real detail
    clip_fhwc = np.zeros((frames, size, size, 4), np.float32)
    for index in range(frames):
        phase = 2 * np.pi * index / frames
        cx, cy = 0.5 + 0.2 * np.cos(phase), 0.45 + 0.15 * np.sin(2 * phase)
        distance = np.hypot(x - cx, y - cy)
        disc = np.clip((0.22 - distance) / 0.03, 0, 1)  # soft edge ~8 px wide
        shadow = 0.5 * np.clip((0.25 - np.hypot((x - cx) / 1.6, (y - 0.85) / 0.3)) / 0.1, 0, 1)
        colour = np.stack([0.9 * x + 0.1, 0.5 + 0.4 * np.sin(6 * y + phase), 1.0 - 0.8 * x], axis=-1)
        colour = np.clip(colour + texture_hw3, 0, 1)
        alpha = np.maximum(disc, shadow * (1 - disc))
        rgb = np.where(disc[..., None] > 0, colour, 0.0)  # the shadow is black; colour under alpha 0 is black
        clip_fhwc[index, ..., :3] = rgb
        clip_fhwc[index, ..., 3] = alpha
    return (clip_fhwc * 255 + 0.5).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--formats", default=",".join(DEFAULT_FORMATS), help="comma-separated format names")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels")
    parser.add_argument("--repeats", type=int, default=5, help="timed writes per format (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed writes per format (default 1)")
    parser.add_argument("--no-cli", action="store_true", help="skip the comparison with the ffmpeg CLI")
    args = parser.parse_args()
    formats = [name.strip() for name in args.formats.split(",") if name.strip()]
    for name in formats:
        try:
            video_io.get_format(name)  # an unknown name fails here, before any work
        except LayerAnimError as error:
            usage_error(f"--formats: {error}")

    # GIF's 1-bit alpha warning would repeat on every write of the soft-edged clip; it is expected here.
    logging.getLogger(video_io.__name__).setLevel(logging.ERROR)
    print_header(
        "Writing RGBA clips with video_io.write_video",
        torch.device("cpu"),
        None,
        f"{args.frames} frames of {args.size}×{args.size} RGBA at {FPS:g} fps, formats {', '.join(formats)}; "
        f"{args.warmup} warm-up and {args.repeats} interleaved timed writes per format",
    )
    rgba_fhwc_uint8 = synthetic_clip(args.frames, args.size)
    soft = np.mean((rgba_fhwc_uint8[..., 3] > 0) & (rgba_fhwc_uint8[..., 3] < 255))
    print(f"clip: {np.mean(rgba_fhwc_uint8[..., 3] > 0):.0%} of pixels visible, {soft:.1%} with soft alpha")

    with tempfile.TemporaryDirectory(prefix="layeranim-bench-") as folder:
        paths = {
            name: Path(folder) / f"clip-{name}{video_io.get_format(name).extensions[0]}" for name in formats
        }

        def writer(name: str) -> Callable[[], object]:
            return lambda: video_io.write_video(
                paths[name], rgba_fhwc_uint8, FPS, format=name, overwrite=True
            )

        timings = compare({name: writer(name) for name in formats}, warmup=args.warmup, repeats=args.repeats)
        sizes = {name: paths[name].stat().st_size for name in formats}

    fastest = min(timing.median for timing in timings.values())
    smallest = min(sizes.values())
    rows = []
    for name, timing in sorted(timings.items(), key=lambda item: item[1].median):
        spec = video_io.get_format(name)
        rows.append(
            (
                name,
                f"{spec.codec} {spec.pix_fmt}",
                "lossless" if spec.lossless else "lossy",
                f"{timing.median:.3f}",
                f"{args.frames / timing.median:.0f}",
                f"{timing.spread:.0%}",
                f"{timing.median / fastest:.2f}×",
                f"{sizes[name] / 1024:.0f}",
                f"{sizes[name] / smallest:.1f}×",
            )
        )
    header = ("format", "codec", "mode", "s (median)", "frames/s", "spread", "time vs fastest", "KiB")
    print_table((*header, "size vs smallest"), rows)

    if args.no_cli:
        return
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        print("\nffmpeg CLI not on PATH: skipping the side-by-side comparison (apt-get install ffmpeg).")
        return
    compare_with_cli(ffmpeg, rgba_fhwc_uint8, formats, args.warmup, args.repeats)


# ---------------------------------------------------------------------------------------------------
# Side by side with the ffmpeg CLI, at the same settings.

_CLI_OPTION = {"b": "-b:v", "profile": "-profile:v"}  # write_video's codec options → CLI flags


def cli_command(ffmpeg: str, name: str, size: tuple[int, int], output: Path) -> list[str]:
    """The ffmpeg command that encodes raw RGBA from stdin like `write_video(format=name)` does."""
    spec = video_io.get_format(name)
    plan = plan_encode(spec, None, None, 0, None)
    height, width = size
    command = [ffmpeg, "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgba"]
    command += ["-s", f"{width}x{height}", "-r", f"{FPS:g}", "-i", "-"]
    if spec.codec == "gif":  # the CLI's GIF at its best: one palette for the clip, a transparent entry
        command += ["-filter_complex", "split[a][b];[a]palettegen=reserve_transparent=1[p];[b][p]paletteuse"]
    else:
        command += ["-pix_fmt", plan.pix_fmt]
    command += ["-c:v", spec.codec]
    for key, value in plan.codec_options.items():
        command += [_CLI_OPTION.get(key, f"-{key}"), value]
    if spec.codec in ("libvpx", "libvpx-vp9"):
        command += ["-threads", str(_encoder_threads())]
    for key, value in plan.muxer_options.items():
        command += [f"-{key}", value]
    command += ["-f", MUXER_FOR_EXTENSION[spec.extensions[0]], str(output)]
    return command


def errors(path: Path, source_fhwc_uint8: np.ndarray) -> tuple[float, float, float]:
    """(alpha max, alpha-weighted colour error mean, its max) of a file against the source, 8-bit levels."""
    decoded = video_io.read_video(path).rgba_fhwc_uint8.astype(np.float64)
    source = source_fhwc_uint8.astype(np.float64)
    weighted = np.abs(decoded[..., :3] - source[..., :3]) * source[..., 3:4] / 255.0
    return (
        float(np.abs(decoded[..., 3] - source[..., 3]).max()),
        float(weighted.mean()),
        float(weighted.max()),
    )


def bare_pyav_loop(path: Path, name: str, rgba_fhwc_uint8: np.ndarray) -> None:
    """The least a PyAV program can do for this format: convert each frame, encode, mux. No padding,
    no atomic rename, no probe; the same encoder options and threads as write_video."""
    spec = video_io.get_format(name)
    plan = plan_encode(spec, None, None, 0, None)
    height, width = rgba_fhwc_uint8.shape[1:3]
    with av.open(str(path), "w", format="webm") as container:
        stream = container.add_stream(spec.codec, rate=int(FPS), options=plan.codec_options)
        stream.width, stream.height, stream.pix_fmt = width, height, plan.pix_fmt
        stream.codec_context.thread_count = _encoder_threads()
        for rgba_hwc_uint8 in rgba_fhwc_uint8:
            frame = av.VideoFrame.from_ndarray(rgba_hwc_uint8, format="rgba").reformat(format=plan.pix_fmt)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def compare_with_cli(
    ffmpeg: str, rgba_fhwc_uint8: np.ndarray, formats: list[str], warmup: int, repeats: int
) -> None:
    version = subprocess.run([ffmpeg, "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    print()
    print("## write_video against the ffmpeg CLI, same frames, same settings")
    print(f"CLI: {version}; PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info})")
    print(f"libvpx threads (both): {_encoder_threads()}; the CLI reads the frames as raw RGBA from a pipe")
    raw = np.ascontiguousarray(rgba_fhwc_uint8).tobytes()
    rows = []
    with tempfile.TemporaryDirectory(prefix="layeranim-bench-cli-") as folder:
        for name in formats:
            spec = FORMATS_BY_NAME[video_io.get_format(name).name]
            if spec.kind == "sequence" or spec.alpha_layout is not None:
                continue  # no one-command CLI equivalent at the same settings
            ours = Path(folder) / f"ours-{spec.name}{spec.extensions[0]}"
            theirs = Path(folder) / f"cli-{spec.name}{spec.extensions[0]}"
            command = cli_command(ffmpeg, spec.name, rgba_fhwc_uint8.shape[1:3], theirs)

            def run_cli(command: list[str] = command) -> None:
                subprocess.run(command, input=raw, check=True)

            def run_ours(path: Path = ours, name: str = spec.name) -> None:
                video_io.write_video(path, rgba_fhwc_uint8, FPS, format=name, overwrite=True)

            cases: dict[str, Callable[[], object]] = {"ours": run_ours, "cli": run_cli}
            if spec.codec in ("libvpx", "libvpx-vp9"):  # where the CLI's libvpx is not PyAV's: the floor
                cases["pyav"] = lambda name=spec.name: bare_pyav_loop(
                    Path(folder) / "bare.webm", name, rgba_fhwc_uint8
                )
            timings = compare(cases, warmup=warmup, repeats=repeats)
            ours_err, cli_err = errors(ours, rgba_fhwc_uint8), errors(theirs, rgba_fhwc_uint8)
            rows.append(
                (
                    spec.name,
                    f"{timings['ours'].median:.3f}",
                    f"{timings['cli'].median:.3f}",
                    f"{timings['cli'].median / timings['ours'].median:.2f}×",
                    f"{timings['pyav'].median / timings['ours'].median:.2f}×" if "pyav" in timings else "",
                    f"{ours.stat().st_size / 1024:.0f} / {theirs.stat().st_size / 1024:.0f}",
                    f"{ours_err[0]:.0f} / {cli_err[0]:.0f}",
                    f"{ours_err[1]:.2f} / {cli_err[1]:.2f}",
                    f"{ours_err[2]:.0f} / {cli_err[2]:.0f}",
                )
            )
    header = (
        "format",
        "ours s",
        "CLI s",
        "CLI time / ours",
        "bare PyAV loop / ours",
        "KiB ours / CLI",
        "α max ours / CLI",
        "α-weighted RGB mean",
        "α-weighted RGB max",
    )
    print_table(header, rows)


if __name__ == "__main__":
    main()
