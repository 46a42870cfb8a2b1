"""GIF quality at similar size: today's palettegen/paletteuse writer against the Pillow writer it replaced.

Both write one global palette for the clip with a reserved transparent entry, and both threshold alpha
at 128; they differ in how the palette is built and how frames are mapped to it:
- **before** (layeranim ≤ 0.x, restated here): Pillow's median cut over the opaque pixels, then every
  frame mapped to the nearest palette colour without dithering;
- **now** (`video_io.write_video(..., "clip.gif")`): libavfilter's `palettegen` over the visible
  pixels, then `paletteuse` with each dithering mode.

Reported for each, against the source where alpha ≥ 128 (the pixels a GIF keeps): mean and max absolute
colour error per pixel, the error after a 3×3 box blur of both (what the eye integrates, which is where
dithering helps), and the file size. Transparency is checked to be identical. Two clips: the
benchmark's soft-edged textured disc (`bench_video_io.synthetic_clip`) and a smooth gradient clip, where
banding shows.

    .venv/bin/python benchmarks/bench_gif.py                # ~1 min on a 2-core machine
    .venv/bin/python benchmarks/bench_gif.py --size 128 --frames 16
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from _util import print_header, print_table
from bench_video_io import synthetic_clip
from PIL import Image

from layeranim import video_io
from layeranim.video_io.gif import GIF_DITHERS

FPS = 12.0


def gradient_clip(frames: int, size: int) -> np.ndarray:
    """(f, h, w, 4): a moving smooth colour gradient inside a soft-edged circle; alpha 0 outside."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    clip = np.zeros((frames, size, size, 4), np.float32)
    for index in range(frames):
        phase = 2 * np.pi * index / frames
        clip[index, ..., 0] = 0.5 + 0.5 * np.sin(3 * x + phase)
        clip[index, ..., 1] = 0.5 + 0.5 * np.cos(2 * y - phase)
        clip[index, ..., 2] = 0.3 + 0.6 * x * y
        clip[index, ..., 3] = np.clip((0.45 - np.hypot(x - 0.5, y - 0.5)) / 0.05, 0, 1)
    return (clip * 255 + 0.5).astype(np.uint8)


def write_before(path: Path, rgba_fhwc_uint8: np.ndarray, fps: float) -> None:
    """The replaced writer: Pillow median cut over opaque pixels, nearest colour, index 255 transparent."""
    opaque_n3 = rgba_fhwc_uint8[..., :3][rgba_fhwc_uint8[..., 3] >= 128]
    if len(opaque_n3) > 1 << 20:
        opaque_n3 = opaque_n3[:: math.ceil(len(opaque_n3) / (1 << 20))]
    sample = Image.fromarray(np.ascontiguousarray(opaque_n3[None]))
    quantized = sample.quantize(colors=255, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    colours_k3 = np.asarray(quantized.getpalette()[: 255 * 3], dtype=np.uint8).reshape(-1, 3)
    used = len(colours_k3)
    palette_rgb = np.empty((256, 3), np.uint8)
    palette_rgb[:used] = colours_k3
    palette_rgb[used:] = colours_k3[used - 1]
    reference = Image.new("P", (1, 1))
    reference.putpalette(palette_rgb.reshape(-1).tolist())
    argb_256x4 = np.zeros((256, 4), np.uint8)  # PyAV's pal8 palette order: A, R, G, B
    argb_256x4[:, 0] = 255
    argb_256x4[:, 1:] = palette_rgb
    argb_256x4[255] = 0
    height, width = rgba_fhwc_uint8.shape[1:3]
    with av.open(str(path), "w", format="gif", options={"loop": "0"}) as container:
        stream = container.add_stream("gif", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "pal8"
        for rgba_hwc_uint8 in rgba_fhwc_uint8:
            rgb = Image.fromarray(np.ascontiguousarray(rgba_hwc_uint8[..., :3]))
            index_hw = np.array(rgb.quantize(palette=reference, dither=Image.Dither.NONE), dtype=np.uint8)
            index_hw[index_hw > used - 1] = used - 1
            index_hw[rgba_hwc_uint8[..., 3] < 128] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray((index_hw, argb_256x4), format="pal8")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def box3(rgb_fhwc: np.ndarray) -> np.ndarray:
    """3×3 box blur over h and w (edges replicated), float64."""
    padded = np.pad(rgb_fhwc.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    rows = padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]
    return (rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]) / 9.0


def measure(path: Path, source: np.ndarray) -> tuple[float, float, float, int]:
    decoded = video_io.read_video(path).rgba_fhwc_uint8
    kept = source[..., 3] >= 128
    if not np.array_equal(decoded[..., 3] == 255, kept):
        raise SystemExit(f"{path.name}: transparency differs from alpha ≥ 128")
    # Blur with transparent pixels set to black in both, so only kept pixels' neighbourhoods differ alike.
    src_rgb = np.where(kept[..., None], source[..., :3], 0)
    dec_rgb = np.where(kept[..., None], decoded[..., :3], 0)
    error = np.abs(dec_rgb.astype(np.float64) - src_rgb)[kept]
    blurred = np.abs(box3(dec_rgb) - box3(src_rgb))[kept]
    return float(error.mean()), float(error.max()), float(blurred.mean()), path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels")
    args = parser.parse_args()
    logging.getLogger(video_io.__name__).setLevel(logging.ERROR)  # the expected 1-bit alpha warning
    print_header(
        "GIF: palettegen/paletteuse against the replaced Pillow writer",
        torch.device("cpu"),
        None,
        f"{args.frames} frames of {args.size}×{args.size} RGBA at {FPS:g} fps; alpha threshold 128",
    )
    clips = {
        "disc": synthetic_clip(args.frames, args.size),
        "gradient": gradient_clip(args.frames, args.size),
    }
    with tempfile.TemporaryDirectory(prefix="layeranim-bench-gif-") as folder:
        for clip_name, clip in clips.items():
            writers: dict[str, Callable[[Path], object]] = {
                "before: Pillow median cut, no dither": lambda path, clip=clip: write_before(path, clip, FPS)
            }
            for dither in GIF_DITHERS:
                writers[f"now: palettegen + paletteuse {dither}"] = lambda path, clip=clip, dither=dither: (
                    video_io.write_video(path, clip, FPS, dither=dither)
                )
            rows = []
            baseline: tuple[float, float, float, int] | None = None
            for label, write in writers.items():
                path = Path(folder) / f"{clip_name}-{len(rows)}.gif"
                write(path)
                figures = measure(path, clip)
                baseline = baseline or figures
                rows.append(
                    (
                        label,
                        f"{figures[0]:.2f}",
                        f"{figures[1]:.0f}",
                        f"{figures[2]:.2f}",
                        f"{figures[2] / baseline[2]:.2f}×",
                        f"{figures[3] / 1024:.0f}",
                        f"{figures[3] / baseline[3]:.2f}×",
                    )
                )
            print(f"### clip: {clip_name}")
            header = (
                "writer",
                "error mean",
                "error max",
                "blurred error",
                "vs before",
                "KiB",
                "size vs before",
            )
            print_table(header, rows)
            print()


if __name__ == "__main__":
    main()
