"""Transparency decoding with the 8-way TTA: layeranim's batched decode vs LayerDiffuse's per-frame loop.

LayerDiffuse (the DiffusersCLI and Forge) decode one image at a time, and `estimate_augmented` calls the
transparency decoder (UNet1024) once per flip/rotation variant: 8 calls of batch 1 per frame. layeranim's
`decode_rgba` batches the variants and frames (`estimate_batched`), at most `max_pixels` decoder input
pixels per call; on the CPU the decoder then runs its high-resolution blocks in parts of
`cpu_block_pixels` pixels (large activations stream from memory) and its low-resolution blocks on the
whole batch (where batching pays). This script times, interleaved in one process:

1. the transparency decoder's TTA alone, on the same VAE output: the reference per-frame loop (restated
   below independently of layeranim, from LayerDiffuse's procedure) vs `estimate_batched`;
2. the whole `decode_rgba` (SD VAE decode + TTA) vs the reference per-frame VAE decode + loop;

and checks the outputs agree (max |Δ|). Then it measures `decode_rgba`'s peak memory for two clip
lengths (default 16 and 64 latents), each in a fresh process: the peak must not grow with the clip.

Default: random full-size UNet1024 weights (104 M parameters) and an SD VAE at ¼ channel width, 4
latents of 32×32 (256 px), on the CPU, as in the issue's measurement. `--full`: the real SD VAE too.

    .venv/bin/python benchmarks/bench_decode.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _util import (
    QUARTER_VAE_CONFIG,
    SD_VAE_CONFIG,
    UNET1024_CONFIG,
    add_common_arguments,
    apply_threads,
    build_decode_models,
    compare,
    print_header,
    print_table,
    resolve_device,
    resolve_dtype,
    usage_error,
)

from layeranim.models.transparent_vae import DEFAULT_DECODE_PIXELS, decode_rgba, estimate_batched


def reference_tta(
    decoder: Callable[..., torch.Tensor], pixel: torch.Tensor, latent: torch.Tensor
) -> torch.Tensor:
    """LayerDiffuse's `estimate_augmented` for ONE image (batch 1): 8 decoder calls, one per variant
    (flip the width, then k quarter turns), each undone and clipped; the lower median, clipped."""
    outputs = []
    for flip in (False, True):
        for k in range(4):
            p, lat = (pixel.flip(3), latent.flip(3)) if flip else (pixel, latent)
            y = decoder(torch.rot90(p, k, (2, 3)), torch.rot90(lat, k, (2, 3))).clip(0, 1)
            y = torch.rot90(y, -k, (2, 3))
            outputs.append(y.flip(3) if flip else y)
    return torch.median(torch.stack(outputs), dim=0).values.clip(0, 1)


@torch.no_grad()
def reference_decode(
    vae: torch.nn.Module, decoder: torch.nn.Module, latents_raw: torch.Tensor
) -> torch.Tensor:
    """The DiffusersCLI's decode, one image at a time: VAE, then `reference_tta`; RGBA (b, 4, H, W).

    Sizes here are multiples of 64, so no padding is needed."""
    frames = []
    for index in range(latents_raw.shape[0]):
        latent = latents_raw[index : index + 1]
        pixel = (vae.decode(latent).sample * 0.5 + 0.5).clamp(0, 1)
        y = reference_tta(decoder, pixel, latent)
        frames.append(torch.cat([y[:, 1:], y[:, :1]], dim=1))
    return torch.cat(frames)


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_growth(run: Callable[[], object]) -> int:
    """Peak resident memory above the level before `run()` (sampled every 2 ms by a thread), bytes."""
    baseline = peak = resident_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, resident_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
    finally:
        done.set()
        sampler.join()
    return max(peak, resident_bytes()) - baseline


def memory_child(args: argparse.Namespace) -> None:
    """In a fresh process: `decode_rgba` with TTA on `--memory-child` latents; prints its peak growth."""
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype, resolve_device(args.device))
    vae, decoder = build_decode_models(
        SD_VAE_CONFIG if args.full else QUARTER_VAE_CONFIG, UNET1024_CONFIG, device, dtype
    )
    latents = torch.randn(args.memory_child, 4, args.memory_latent, args.memory_latent).to(device, dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        decode_rgba(vae, decoder, latents, tta=True)
        growth = torch.cuda.max_memory_allocated(device) - before
    else:
        growth = peak_growth(lambda: decode_rgba(vae, decoder, latents, tta=True))
    print(json.dumps({"latents": args.memory_child, "peak_growth_bytes": growth}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="the real SD VAE config (default: ¼ width)")
    parser.add_argument("--frames", type=int, default=4, help="latents to decode in the timing (default 4)")
    parser.add_argument(
        "--latent", type=int, default=32, help="latent side for the timing (default 32: 256 px)"
    )
    parser.add_argument(
        "--memory-frames", default="16,64", help="clip lengths whose peak memory is compared (default 16,64)"
    )
    parser.add_argument(
        "--memory-latent", type=int, default=16, help="latent side for the memory runs (default 16: 128 px)"
    )
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    add_common_arguments(parser, repeats=3, warmup=1)
    args = parser.parse_args()
    apply_threads(args.threads)
    if args.latent % 8 or args.memory_latent % 8:
        usage_error("--latent and --memory-latent must be multiples of 8 (images of multiples of 64 px).")
    if args.memory_child is not None:
        memory_child(args)
        return

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    memory_frames = [int(count) for count in args.memory_frames.split(",")]
    print_header(
        "Transparency decoding with 8-way TTA: batched vs LayerDiffuse's per-frame loop",
        device,
        dtype,
        f"UNet1024 full size, {'real' if args.full else '¼-width'} SD VAE, random weights; "
        f"{args.frames} latents of {args.latent}×{args.latent} ({args.latent * 8} px); "
        f"max_pixels {DEFAULT_DECODE_PIXELS}; "
        f"{args.warmup} warm-up and {args.repeats} interleaved timed runs per case",
    )
    vae, decoder = build_decode_models(
        SD_VAE_CONFIG if args.full else QUARTER_VAE_CONFIG, UNET1024_CONFIG, device, dtype
    )
    generator = torch.Generator().manual_seed(0)
    latents_raw = torch.randn(args.frames, 4, args.latent, args.latent, generator=generator).to(device, dtype)
    with torch.no_grad():
        pixel = (vae.decode(latents_raw).sample * 0.5 + 0.5).clamp(0, 1)

    # 1. The transparency decoder's TTA alone, on the same VAE output.
    @torch.no_grad()
    def loop() -> torch.Tensor:
        return torch.cat(
            [reference_tta(decoder, pixel[i : i + 1], latents_raw[i : i + 1]) for i in range(args.frames)]
        )

    @torch.no_grad()
    def batched() -> torch.Tensor:
        return estimate_batched(decoder, pixel, latents_raw)

    # 2. The whole decode.
    def reference_whole() -> torch.Tensor:
        return reference_decode(vae, decoder, latents_raw)

    def layeranim_whole() -> torch.Tensor:
        return decode_rgba(vae, decoder, latents_raw, tta=True)

    difference_tta = float((loop() - batched()).abs().max())
    difference_whole = float((reference_whole() - layeranim_whole()).abs().max())
    cases = {
        "TTA alone: reference per-frame loop": loop,
        "TTA alone: estimate_batched": batched,
        "decode: reference per frame": reference_whole,
        "decode: decode_rgba": layeranim_whole,
    }
    timings = compare(cases, warmup=args.warmup, repeats=args.repeats, device=device)
    medians = {label: timing.median for label, timing in timings.items()}
    print_table(
        ("case", "s (median)", "s/frame", "spread"),
        [
            (label, f"{t.median:.3f}", f"{t.median / args.frames:.3f}", f"{t.spread:.0%}")
            for label, t in timings.items()
        ],
    )
    tta_speedup = medians["TTA alone: reference per-frame loop"] / medians["TTA alone: estimate_batched"]
    whole_speedup = medians["decode: reference per frame"] / medians["decode: decode_rgba"]
    print(
        f"\nTTA alone: batched {tta_speedup:.2f}× faster than the per-frame loop "
        f"(max |Δ| {difference_tta:.1e})"
    )
    print(f"whole decode: decode_rgba is {whole_speedup:.2f}× faster (max |Δ| {difference_whole:.1e})")

    # 3. Peak memory of decode_rgba (TTA) against clip length, each in a fresh process.
    peaks = {}
    for count in memory_frames:
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(count)]
        command += [
            "--memory-latent",
            str(args.memory_latent),
            "--device",
            str(device),
            "--dtype",
            args.dtype,
        ]
        command += ["--threads", str(torch.get_num_threads())] + (["--full"] if args.full else [])
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        peaks[count] = json.loads(output.strip().splitlines()[-1])["peak_growth_bytes"]
    side = args.memory_latent * 8
    print(f"\npeak memory of decode_rgba with TTA ({side}×{side}, growth over the level before the call):")
    first = peaks[memory_frames[0]]
    print_table(
        ("latents", "peak growth", f"vs {memory_frames[0]}"),
        [(str(count), f"{peak / 2**20:.0f} MiB", f"{peak / first:.2f}×") for count, peak in peaks.items()],
    )


if __name__ == "__main__":
    main()
