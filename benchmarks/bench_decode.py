"""Cost of transparency decoding: `decode_rgba` with the 8-way TTA vs a single pass, and chunk sizes.

`decode_rgba` runs the SD VAE decoder and then LayerDiffuse's transparency decoder (UNet1024) on each chunk
of latents; `tta=True` runs the transparency decoder on 8 flipped/rotated copies and takes the median. The
transparency decoder alone (on a VAE output computed once) is timed too, single pass and TTA. All cases
run interleaved in one process; the ratios are the figures to quote.

Default: a VAE and a transparency decoder at 1/4 of the real channel widths (so their cost ratio stays
close to the real one: conv FLOPs scale with channels²), 8 latents of 32×32 (256 px), on the CPU.
`--full`: the real SD VAE and UNet1024 configs, 16 latents of 64×64 (512 px), meant for CUDA with fp16,
where peak memory per chunk size is reported too.

    .venv/bin/python benchmarks/bench_decode.py --threads 1    # small, CPU, ~2–3 min
    .venv/bin/python benchmarks/bench_decode.py --full         # real configs, CUDA fp16
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from _util import (
    QUARTER_DECODER_CONFIG,
    QUARTER_VAE_CONFIG,
    SD_VAE_CONFIG,
    UNET1024_CONFIG,
    add_common_arguments,
    apply_threads,
    build_decode_models,
    compare,
    format_gib,
    peak_memory,
    print_header,
    print_table,
    resolve_device,
    resolve_dtype,
)

from layeranim.models.transparent_vae import (
    TransparentVAEDecoder,
    decode_rgba,
    estimate_augmented,
    estimate_single_pass,
)

DecoderEstimate = Callable[[TransparentVAEDecoder, torch.Tensor, torch.Tensor], torch.Tensor]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--full", action="store_true", help="real SD VAE + UNet1024, 64×64 latents (use CUDA)"
    )
    parser.add_argument(
        "--frames", type=int, default=None, help="latents to decode (default 8, 16 with --full)"
    )
    parser.add_argument("--latent", type=int, default=None, help="latent side (default 32, 64 with --full)")
    parser.add_argument(
        "--chunks",
        default=None,
        help="comma-separated chunk sizes to compare (default 1,2,4,8; 1,4,8,16 with --full)",
    )
    add_common_arguments(parser, repeats=3, warmup=1)
    args = parser.parse_args()

    apply_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    frames = args.frames or (16 if args.full else 8)
    latent = args.latent or (64 if args.full else 32)
    chunk_sizes = [int(c) for c in (args.chunks or ("1,4,8,16" if args.full else "1,2,4,8")).split(",")]
    models = "real SD VAE + UNet1024" if args.full else "VAE and UNet1024 at 1/4 channel width"
    print_header(
        "Transparency decoding: TTA vs single pass, chunk sizes",
        device,
        dtype,
        f"{models}, {frames} latents of {latent}×{latent} ({latent * 8} px), "
        f"{args.warmup} warm-up and {args.repeats} interleaved timed runs per case",
    )

    vae, decoder = build_decode_models(
        SD_VAE_CONFIG if args.full else QUARTER_VAE_CONFIG,
        UNET1024_CONFIG if args.full else QUARTER_DECODER_CONFIG,
        device,
        dtype,
    )
    generator = torch.Generator().manual_seed(0)
    latents_raw_b4hw = torch.randn(frames, 4, latent, latent, generator=generator).to(
        device=device, dtype=dtype
    )
    vae_parameters = sum(p.numel() for p in vae.decoder.parameters()) / 1e6
    decoder_parameters = sum(p.numel() for p in decoder.parameters()) / 1e6
    print(f"VAE decoder {vae_parameters:.1f} M parameters; transparency decoder {decoder_parameters:.1f} M")

    def decode(tta: bool, chunk_size: int) -> Callable[[], object]:
        return lambda: decode_rgba(vae, decoder, latents_raw_b4hw, tta=tta, chunk_size=chunk_size)

    # The transparency decoder alone, on the VAE's output computed once (same chunks of 8 as decode_rgba).
    with torch.no_grad():
        pixel_b3hw_01 = torch.cat(
            [(vae.decode(chunk).sample * 0.5 + 0.5).clamp(0, 1) for chunk in latents_raw_b4hw.split(8)]
        )

    def decoder_only(estimate: DecoderEstimate) -> Callable[[], object]:
        @torch.no_grad()
        def run() -> None:
            for pixel, latent in zip(pixel_b3hw_01.split(8), latents_raw_b4hw.split(8), strict=True):
                estimate(decoder, pixel, latent)

        return run

    # 1. TTA vs single pass at chunk size 8 (the default): decode_rgba and the transparency decoder alone.
    cases = {
        "decode_rgba, single pass": decode(False, 8),
        "decode_rgba, TTA": decode(True, 8),
        "transparency decoder alone, single pass": decoder_only(estimate_single_pass),
        "transparency decoder alone, TTA": decoder_only(estimate_augmented),
    }
    timings = compare(cases, warmup=args.warmup, repeats=args.repeats, device=device)
    peaks = {label: peak_memory(device, run) for label, run in cases.items()}
    rows = [
        (
            label,
            f"{timing.median:.3f}",
            f"{timing.median / frames:.4f}",
            f"{timing.spread:.0%}",
            format_gib(peaks[label]),
        )
        for label, timing in timings.items()
    ]
    print("\nchunk size 8:")
    print_table(("case", "s (median)", "s/frame", "spread", "peak memory"), rows)
    medians = {label: timing.median for label, timing in timings.items()}
    single, tta = medians["decode_rgba, single pass"], medians["decode_rgba, TTA"]
    decoder_single = medians["transparency decoder alone, single pass"]
    decoder_tta = medians["transparency decoder alone, TTA"]
    vae_share = (single - decoder_single) / single
    print(
        f"\nTTA / single pass: {tta / single:.2f}× for decode_rgba, "
        f"{decoder_tta / decoder_single:.2f}× for the transparency decoder alone; "
        f"the VAE decode is ~{vae_share:.0%} of a single-pass decode_rgba"
    )

    # 2. Chunk sizes (single pass on the CPU to keep it short; TTA on CUDA, the default decode there).
    chunk_tta = device.type == "cuda"
    chunk_cases = {f"chunk {size}": decode(chunk_tta, size) for size in chunk_sizes}
    chunk_timings = compare(chunk_cases, warmup=args.warmup, repeats=args.repeats, device=device)
    chunk_peaks = {label: peak_memory(device, run) for label, run in chunk_cases.items()}
    fastest = min(timing.median for timing in chunk_timings.values())
    rows = [
        (
            label,
            f"{timing.median:.3f}",
            f"{timing.median / frames:.4f}",
            f"{timing.spread:.0%}",
            f"{timing.median / fastest:.2f}×",
            format_gib(chunk_peaks[label]),
        )
        for label, timing in chunk_timings.items()
    ]
    print(f"\nchunk sizes ({'TTA' if chunk_tta else 'single pass'}):")
    print_table(("case", "s (median)", "s/frame", "spread", "vs fastest", "peak memory"), rows)


if __name__ == "__main__":
    main()
