"""Cost of Inter-Frame Attention: one UNetMotionModel denoising step with vs without IFA, side by side.

Two copies of the same random-weight motion UNet, one with `install_inter_frame_attention` (and non-zero,
trained-looking W_O', so the branch is really added), timed interleaved in one run. The ratio is the figure
to quote. Default: a reduced SD1.5-like UNet on the CPU; `--full`: the real SD1.5 + MotionAdapter shape
(1.3 B parameters), meant for CUDA with fp16. The batch defaults to 2 videos, as with classifier-free
guidance.

    .venv/bin/python benchmarks/bench_ifa_overhead.py --threads 1    # reduced, CPU, ~2 min
    .venv/bin/python benchmarks/bench_ifa_overhead.py --full          # SD1.5 shape, 64×64 latents, CUDA fp16
"""

from __future__ import annotations

import argparse
import copy

import torch
from _util import (
    REDUCED_MOTION_UNET_CONFIG,
    SD15_MOTION_UNET_CONFIG,
    add_common_arguments,
    apply_threads,
    build_motion_unet,
    compare,
    format_gib,
    peak_memory,
    print_header,
    print_table,
    randomise_ifa_output_,
    resolve_device,
    resolve_dtype,
    unet_inputs,
)

from layeranim.models.inter_frame_attention import install_inter_frame_attention


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="real SD1.5 shape and 64×64 latents (use CUDA)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--latent", type=int, default=None, help="latent side (default 32, 64 with --full)")
    parser.add_argument("--batch", type=int, default=2, help="videos per UNet call (default 2: guidance)")
    add_common_arguments(parser, repeats=5, warmup=0)
    args = parser.parse_args()

    apply_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    config = SD15_MOTION_UNET_CONFIG if args.full else REDUCED_MOTION_UNET_CONFIG
    latent = args.latent or (64 if args.full else 32)
    shape = (
        "SD1.5 + default MotionAdapter" if args.full else f"reduced SD1.5-like {config['block_out_channels']}"
    )
    print_header(
        "Inter-Frame Attention overhead (one UNet step)",
        device,
        dtype,
        f"{shape}, {args.frames} frames, {latent}×{latent} latents ({latent * 8} px), batch {args.batch}, "
        f"{1 + args.warmup} warm-up (the first checks that IFA changes the output) and "
        f"{args.repeats} interleaved timed runs per case",
    )

    # 1. Baseline UNet and an identical copy with IFA (W_O' random, as if trained).
    baseline = build_motion_unet(config, device, dtype)
    with_ifa = copy.deepcopy(baseline)
    processors = install_inter_frame_attention(with_ifa)
    for processor in processors.values():
        processor.to(device=device, dtype=dtype)
    randomise_ifa_output_(processors)
    parameters = sum(p.numel() for p in baseline.parameters())
    ifa_parameters = sum(p.numel() for proc in processors.values() for p in proc.parameters())
    inputs = unet_inputs(config, args.batch, args.frames, latent, device, dtype)

    # 2. Warm-up run of each, which also checks the IFA branch is really on: the outputs must differ.
    with torch.no_grad():
        difference = (with_ifa(**inputs).sample - baseline(**inputs).sample).abs().max().item()
    if not difference > 0:
        raise SystemExit("IFA did not change the UNet output; the comparison would be meaningless.")

    # 3. Time both, interleaved.
    @torch.no_grad()
    def step_baseline() -> None:
        baseline(**inputs)

    @torch.no_grad()
    def step_ifa() -> None:
        with_ifa(**inputs)

    timings = compare(
        {"without IFA": step_baseline, "with IFA": step_ifa},
        warmup=args.warmup,
        repeats=args.repeats,
        device=device,
    )
    peaks = {"without IFA": peak_memory(device, step_baseline), "with IFA": peak_memory(device, step_ifa)}
    reference = timings["without IFA"].median
    rows = [
        (
            label,
            f"{timing.median:.3f}",
            f"{timing.spread:.0%}",
            f"{timing.median / reference:.3f}×",
            format_gib(peaks[label]),
        )
        for label, timing in timings.items()
    ]
    print(
        f"UNet parameters {parameters / 1e6:.1f} M; IFA adds {ifa_parameters / 1e6:.2f} M "
        f"on {len(processors)} spatial self-attentions; max |Δ output| with IFA {difference:.3g}"
    )
    print_table(("case", "s/step (median)", "spread", "vs without", "peak memory"), rows)
    ratio = timings["with IFA"].median / reference
    print(f"\nIFA overhead: {ratio:.3f}× the step time ({(ratio - 1):+.1%})")


if __name__ == "__main__":
    main()
