"""Writing an RGBA clip in each alpha format of `layeranim.video_io`: speed and file size, side by side.

One synthetic 64-frame 256×256 straight-alpha clip (a moving, textured disc with a soft edge and a
half-transparent shadow on a transparent background) is written with `video_io.write_video` in every format,
interleaved in one run. Reported: median seconds, frames per second, speed relative to the fastest format,
and file size relative to the smallest. Encoding runs on the CPU whatever the machine; libvpx uses one thread
on machines with ≤ 2 cores (see `video_io._encoder_threads`).

    .venv/bin/python benchmarks/bench_video_io.py              # ~1 min on a 2-core machine
    .venv/bin/python benchmarks/bench_video_io.py --formats webm,mov,gif --frames 32
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _util import compare, print_header, print_table, usage_error

from layeranim import video_io
from layeranim.errors import LayerAnimError

DEFAULT_FORMATS = ("webm", "webm-vp8", "mov", "mov-png", "mkv", "apng", "webp", "gif")
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


if __name__ == "__main__":
    main()
