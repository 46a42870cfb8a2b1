"""Real-size figures on a CUDA GPU: SD1.5-shaped motion UNet + LayerDiffuse + IFA, fp16, 512², 16 frames.

Everything is built from configs with random weights (nothing is downloaded): a `UNetMotionModel` of the
SD1.5 + default MotionAdapter shape, LayerDiffuse's SD1.5 attention weights (random, in the released key
layout and rank) merged and their processors installed, Inter-Frame Attention on top with non-zero W_O'.
Reported, interleaved in one run:

- seconds per denoising step (one UNet call at classifier-free-guidance batch 2, 16 frames, 64×64 latents),
  with IFA and with IFA switched off, and the peak memory of each (`torch.cuda.max_memory_allocated`);
- seconds per frame of `decode_rgba` (real SD VAE + UNet1024, chunk 8) with the 8-way TTA and single pass.

Needs CUDA (exits 2 without it). `--cpu-smoke-test` runs the same code on the CPU at a tiny size, only to
check that the script works; its figures mean nothing.

    python benchmarks/bench_gpu_realsize.py                   # one CUDA GPU (not yet run on one)
    python benchmarks/bench_gpu_realsize.py --cpu-smoke-test  # seconds; checks the code path only
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from _util import (
    QUARTER_DECODER_CONFIG,
    QUARTER_VAE_CONFIG,
    REDUCED_MOTION_UNET_CONFIG,
    SD15_MOTION_UNET_CONFIG,
    SD_VAE_CONFIG,
    UNET1024_CONFIG,
    build_decode_models,
    build_motion_unet,
    compare,
    format_gib,
    peak_memory,
    print_header,
    print_table,
    random_layerdiffuse_sd15_state_dict,
    randomise_ifa_output_,
    unet_inputs,
    usage_error,
)

from layeranim.models.inter_frame_attention import (
    install_inter_frame_attention,
    set_inter_frame_attention_enabled,
)
from layeranim.models.layerdiffuse_unet import SD15_RANK, apply_layerdiffuse_sd15
from layeranim.models.transparent_vae import decode_rgba


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="a CUDA device (default cuda)")
    parser.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"), help="default fp16")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2, help="videos per UNet call (default 2: guidance)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per case (default 2)")
    parser.add_argument(
        "--cpu-smoke-test", action="store_true", help="tiny sizes on the CPU, fp32; only checks the script"
    )
    args = parser.parse_args()

    # 1. Device and sizes.
    smoke = args.cpu_smoke_test
    if smoke:
        device, dtype = torch.device("cpu"), torch.float32
        unet_config, vae_config, decoder_config = (
            REDUCED_MOTION_UNET_CONFIG,
            QUARTER_VAE_CONFIG,
            QUARTER_DECODER_CONFIG,
        )
        latent, frames, rank, repeats, warmup = 8, 4, 4, 1, 0
    else:
        if not torch.cuda.is_available():
            usage_error(
                "bench_gpu_realsize.py needs a CUDA GPU and torch.cuda.is_available() is False here; "
                "run it on a machine with one, or use the CPU benchmarks (bench_ifa_overhead.py, "
                "bench_decode.py), or --cpu-smoke-test to check the script."
            )
        device = torch.device(args.device)
        if device.type != "cuda":
            usage_error(f"--device {args.device}: this script measures CUDA; use cuda or cuda:N.")
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
        unet_config, vae_config, decoder_config = SD15_MOTION_UNET_CONFIG, SD_VAE_CONFIG, UNET1024_CONFIG
        latent, frames, rank, repeats, warmup = 64, args.frames, SD15_RANK, args.repeats, args.warmup
    print_header(
        "Real-size stage two on a GPU" + (" (CPU SMOKE TEST: figures are meaningless)" if smoke else ""),
        device,
        dtype,
        f"{'reduced' if smoke else 'SD1.5 + default MotionAdapter'} UNet, LayerDiffuse rank {rank}, IFA; "
        f"batch {args.batch}, {frames} frames, {latent}×{latent} latents ({latent * 8} px); decode chunk 8; "
        f"{warmup} warm-up and {repeats} interleaved timed runs per case",
    )

    # 2. The stage-two UNet: motion UNet → LayerDiffuse SD1.5 (merged LoRAs + processors) → IFA.
    unet = build_motion_unet(unet_config, device, dtype)
    layerdiffuse = apply_layerdiffuse_sd15(unet, random_layerdiffuse_sd15_state_dict(unet, rank))
    ifa_processors = install_inter_frame_attention(unet)
    randomise_ifa_output_(ifa_processors)
    parameters = sum(p.numel() for p in unet.parameters())
    parameters += sum(p.numel() for proc in layerdiffuse.values() for p in proc.parameters())
    parameters += sum(p.numel() for proc in ifa_processors.values() for p in proc.parameters())
    if device.type == "cuda":
        weights = f"{torch.cuda.memory_allocated(device) / 2**30:.2f} GiB of weights"
    else:
        weights = "CPU"
    print(
        f"UNet {parameters / 1e9:.3f} B parameters ({weights}); LayerDiffuse on {len(layerdiffuse)} "
        f"attention modules, IFA on {len(ifa_processors)}"
    )
    inputs = unet_inputs(unet_config, args.batch, frames, latent, device, dtype)

    def step(ifa: bool) -> Callable[[], object]:
        @torch.no_grad()
        def run() -> None:
            set_inter_frame_attention_enabled(unet, ifa)
            unet(**inputs)

        return run

    # 3. Denoising steps, with and without the IFA branch (same UNet, branch switched off).
    step_cases = {"denoising step, IFA on": step(True), "denoising step, IFA off": step(False)}
    step_timings = compare(step_cases, warmup=warmup, repeats=repeats, device=device)
    step_peaks = {label: peak_memory(device, run) for label, run in step_cases.items()}
    set_inter_frame_attention_enabled(unet, True)

    # 4. Decoding the frames to RGBA (models resident beside the UNet, as in a pipeline without offload).
    vae, decoder = build_decode_models(vae_config, decoder_config, device, dtype)
    generator = torch.Generator().manual_seed(0)
    latents_raw_b4hw = torch.randn(frames, 4, latent, latent, generator=generator).to(
        device=device, dtype=dtype
    )

    def decode(tta: bool) -> Callable[[], object]:
        return lambda: decode_rgba(vae, decoder, latents_raw_b4hw, tta=tta, chunk_size=8)

    decode_cases = {"decode_rgba, TTA": decode(True), "decode_rgba, single pass": decode(False)}
    decode_timings = compare(
        decode_cases, warmup=max(warmup, 1) if not smoke else 0, repeats=repeats, device=device
    )
    decode_peaks = {label: peak_memory(device, run) for label, run in decode_cases.items()}

    # 5. Report.
    rows = [
        (label, f"{t.median:.3f} s/step", f"{t.spread:.0%}", format_gib(step_peaks[label]))
        for label, t in step_timings.items()
    ]
    rows += [
        (label, f"{t.median / frames:.4f} s/frame", f"{t.spread:.0%}", format_gib(decode_peaks[label]))
        for label, t in decode_timings.items()
    ]
    print_table(("case", "median", "spread", "peak memory"), rows)
    ifa_ratio = step_timings["denoising step, IFA on"].median / step_timings["denoising step, IFA off"].median
    tta_ratio = decode_timings["decode_rgba, TTA"].median / decode_timings["decode_rgba, single pass"].median
    print(f"\nIFA on / off: {ifa_ratio:.3f}× per step; decode TTA / single pass: {tta_ratio:.2f}×")
    steps25 = 25 * step_timings["denoising step, IFA on"].median + decode_timings["decode_rgba, TTA"].median
    print(f"25 steps + TTA decode of {frames} frames ≈ {steps25:.1f} s (UNet and decode only)")


if __name__ == "__main__":
    main()
