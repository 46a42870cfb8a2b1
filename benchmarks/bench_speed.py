"""Seconds per clip: stage two at the default 25 steps against the few-step speed presets, side by side.

Every case runs the same `LayerAnimatePipeline` (same models, same base latent, same frames); only the
scheduler, the step count and the guidance change, as `layeranim.speed` sets them. The distilled weights
themselves are not needed to time this (a preset's motion module has the same shape as the standard one),
so the models are random: the tiny preset on the CPU by default, or `--full` SD1.5-shaped models (UNet +
default MotionAdapter + Inter-Frame Attention, SD VAE, the released-size transparency decoder) on a GPU.
Cases are timed interleaved (benchmarks/_util.py); quote the ratios.

    .venv/bin/python benchmarks/bench_speed.py --threads 1          # tiny preset, CPU, about a minute
    .venv/bin/python benchmarks/bench_speed.py --full               # SD1.5 shape at 512 px, CUDA fp16
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from _util import (
    SD15_MOTION_UNET_CONFIG,
    SD_VAE_CONFIG,
    UNET1024_CONFIG,
    add_common_arguments,
    apply_threads,
    build_motion_unet,
    compare,
    default_dtype,
    print_header,
    print_table,
    randomise_ifa_output_,
    resolve_device,
    resolve_dtype,
)

from layeranim.pipelines.layeranimate import LayerAnimatePipeline
from layeranim.speed import SPEED_PRESETS, speed_scheduler

DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5


def tiny_pipeline(device: torch.device, dtype: torch.dtype) -> LayerAnimatePipeline:
    """Stage two of the tiny preset, through the ordinary session (the real loading path)."""
    from layeranim.render.components import ModelSpec
    from layeranim.render.session import RenderSession

    session = RenderSession(ModelSpec.for_preset("tiny"), device, dtype, will_animate=True)
    return session.stage_two()


def full_pipeline(device: torch.device, dtype: torch.dtype) -> LayerAnimatePipeline:
    """SD1.5-shaped random models (the tiny preset's tokenizer: token ids do not change the cost)."""
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from layeranim.models.inter_frame_attention import install_inter_frame_attention
    from layeranim.models.transparent_vae import TransparentVAEDecoder
    from layeranim.render.presets import ensure_tiny_preset

    unet = build_motion_unet(SD15_MOTION_UNET_CONFIG, device, dtype)
    processors = install_inter_frame_attention(unet)
    for processor in processors.values():
        processor.to(device=device, dtype=dtype)
    randomise_ifa_output_(processors)  # trained-looking IFA: its branch really runs
    torch.manual_seed(0)
    with default_dtype(dtype), torch.device(device):
        vae = AutoencoderKL(**SD_VAE_CONFIG)
        decoder = TransparentVAEDecoder(**UNET1024_CONFIG)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                vocab_size=49408,
            )
        )
    tokenizer = CLIPTokenizer.from_pretrained(
        ensure_tiny_preset() / "base" / "tokenizer", model_max_length=77
    )
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
    )
    return LayerAnimatePipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        transparent_decoder=decoder.eval(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="SD1.5-shaped models (use CUDA)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument(
        "--size", type=int, default=None, help="pixels per side (default 64, 512 with --full)"
    )
    parser.add_argument("--tta", action="store_true", help="decode with the 8-way TTA (default: single pass)")
    parser.add_argument(
        "--presets",
        default=",".join(SPEED_PRESETS),
        help=f"comma-separated (default {','.join(SPEED_PRESETS)})",
    )
    add_common_arguments(parser, repeats=3, warmup=1)
    args = parser.parse_args()

    apply_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    size = args.size or (512 if args.full else 64)
    names = [name.strip() for name in args.presets.split(",") if name.strip()]
    unknown = [name for name in names if name not in SPEED_PRESETS]
    if unknown:
        parser.error(f"--presets: {unknown} are not speed presets ({', '.join(SPEED_PRESETS)})")
    models = "SD1.5 shape (random weights)" if args.full else "tiny preset (random weights)"
    print_header(
        "Stage two seconds per clip: 25 steps vs few-step speed presets",
        device,
        dtype,
        f"{models}, {args.frames} frames at {size}×{size}, TTA {'on' if args.tta else 'off'}, "
        f"{args.warmup} warm-up and {args.repeats} interleaved timed runs per case",
    )

    base_pipe = (full_pipeline if args.full else tiny_pipeline)(device, dtype)
    base_pipe.set_progress_bar_config(disable=True)
    latent = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))

    def case(pipe: LayerAnimatePipeline, steps: int, guidance: float) -> Any:
        return lambda: pipe(
            "a lowest wider",
            base_latent=latent,
            num_frames=args.frames,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=torch.Generator().manual_seed(1),
            tta=args.tta,
        )

    default_label = f"default ({type(base_pipe.scheduler).__name__})"
    settings = {default_label: (DEFAULT_STEPS, DEFAULT_GUIDANCE)}
    cases = {default_label: case(base_pipe, DEFAULT_STEPS, DEFAULT_GUIDANCE)}
    for name in names:
        preset = SPEED_PRESETS[name]
        pipe = LayerAnimatePipeline(
            **{**base_pipe.components, "scheduler": speed_scheduler(preset, base_pipe.scheduler.config)}
        )
        label = f"{name} ({preset.scheduler_class})"
        settings[label] = (preset.steps, preset.guidance)
        cases[label] = case(pipe, preset.steps, preset.guidance)

    timings = compare(cases, warmup=args.warmup, repeats=args.repeats, device=device)
    reference = timings[default_label].median
    rows = []
    for label, timing in timings.items():
        steps, guidance = settings[label]
        passes = steps * (2 if guidance > 1.0 else 1)  # classifier-free guidance doubles the UNet batch
        rows.append(
            (
                label,
                str(steps),
                f"{guidance:g}",
                str(passes),
                f"{timing.median:.2f}",
                f"{timing.spread:.0%}",
                f"{reference / timing.median:.2f}×",
            )
        )
    print_table(
        ("case", "steps", "guidance", "video-steps (CFG ×2)", "s/clip (median)", "spread", "speed-up"),
        rows,
    )


if __name__ == "__main__":
    main()
