"""`layeranim animate`: stage two alone — your RGBA still (or stage one's latent) to a transparent video."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from layeranim.cli._batch import (
    ManifestOpt,
    ShardOpt,
    check_manifest_target,
    report_single,
    run_cli_batch,
)
from layeranim.cli._common import (
    AlphaModeChoice,
    AlphaModeOpt,
    FormatOpt,
    JsonOpt,
    LoopOpt,
    LosslessOpt,
    OverwriteOpt,
    PreviewOpt,
    QualityOpt,
    QuietOpt,
    app,
    note,
)
from layeranim.cli._model_options import (
    DeviceOpt,
    DtypeOpt,
    FamilyOpt,
    GuidanceOpt,
    HeightOpt,
    ModelOpt,
    MotionAdapterOpt,
    NegativePromptOpt,
    PresetOpt,
    SeedOpt,
    StepsOpt,
    TransparentAttnOpt,
    TransparentDecoderOpt,
    TransparentEncoderOpt,
    WidthOpt,
)
from layeranim.cli._render import (
    DecodeChunkOpt,
    FastDecodeOpt,
    FramesOpt,
    IfaWeightsOpt,
    OffloadOpt,
    RenderSettings,
    SchedulerOpt,
    VideoFpsOpt,
    build_session,
    check_preview_target,
    latent_sidecar_path,
    make_parent_dir,
    quiet_third_party_logs,
    resolve_seed,
    stage_progress,
    write_clip,
)
from layeranim.errors import UsageError

LATENT_SUFFIX = ".safetensors"


@app.command(
    "animate",
    epilog="Examples:\n\n"
    '  layeranim animate teapot.png "steam rising" -o teapot.webm\n\n'
    '  layeranim animate teapot.latent.safetensors "steam rising" -o teapot.mov --frames 24 --fps 12\n\n'
    '  layeranim animate sprite.png "waving" -o frames/ --ifa-weights ifa.safetensors --json',
)
def animate(
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="The video to write; the format follows the extension. With --inputs: a folder (DIR/) or "
            "a template with {index}, {slug}, {seed}, {ext}.",
        ),
    ],
    image: Annotated[
        Path | None,
        typer.Argument(
            help="The RGBA still to animate (.png/.webp with alpha), or a stage-one latent "
            "(NAME.latent.safetensors from `layeranim image --save-latent`). Next to a PNG, its "
            "NAME.latent.safetensors is used automatically when it belongs to that exact image."
        ),
    ] = None,
    prompt: Annotated[str | None, typer.Argument(help="What should happen in the video.")] = None,
    inputs: Annotated[
        Path | None,
        typer.Option(
            "--inputs",
            help="Batch mode: lines of IMAGE<TAB>PROMPT (or IMAGE | PROMPT), or JSONL with image, prompt and "
            "per-item negative, seed, frames, fps, output. Finished items are skipped on re-runs.",
        ),
    ] = None,
    shard: ShardOpt = None,
    frames: FramesOpt = 16,
    fps: VideoFpsOpt = 8.0,
    negative_prompt: NegativePromptOpt = "",
    seed: SeedOpt = None,
    steps: StepsOpt = 25,
    guidance: GuidanceOpt = 7.5,
    width: WidthOpt = None,
    height: HeightOpt = None,
    scheduler: SchedulerOpt = "euler_a",
    motion_adapter: MotionAdapterOpt = None,
    ifa_weights: IfaWeightsOpt = None,
    fast_decode: FastDecodeOpt = False,
    decode_chunk_size: DecodeChunkOpt = 4,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    family: FamilyOpt = "sd15",
    transparent_attn: TransparentAttnOpt = None,
    transparent_encoder: TransparentEncoderOpt = None,
    transparent_decoder: TransparentDecoderOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    offload: OffloadOpt = "none",
    format: FormatOpt = None,
    quality: QualityOpt = None,
    lossless: LosslessOpt = None,
    alpha_mode: AlphaModeOpt = AlphaModeChoice.straight,
    loop: LoopOpt = 0,
    preview: PreviewOpt = False,
    manifest: ManifestOpt = False,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Animate a transparent image into a transparent video (stage two: AnimateDiff + IFA)."""
    from layeranim.video_io import check_output

    # 1. Validate everything before loading a model.
    if inputs is None and (image is None or prompt is None):
        raise UsageError("give IMAGE and PROMPT, or --inputs FILE for a batch.")
    if inputs is not None and (image is not None or prompt is not None):
        raise UsageError("give IMAGE and PROMPT, or --inputs FILE for a batch (not both).")
    if inputs is None and shard is not None:
        raise UsageError("--shard splits a batch; use it with --inputs FILE.")
    if inputs is None:
        make_parent_dir(output)
        check_output(output, format=format, overwrite=overwrite)
        check_preview_target(output, preview, overwrite)
        check_manifest_target(output, manifest, overwrite)
    session = build_session(
        preset=preset,
        family=family,
        model=model,
        transparent_attn=transparent_attn,
        transparent_encoder=transparent_encoder,
        transparent_decoder=transparent_decoder,
        motion_adapter=motion_adapter,
        device=device,
        dtype=dtype,
        scheduler=scheduler,
        offload=offload,
        ifa_weights=ifa_weights,
        will_animate=True,
        image_stage=False,
    )
    settings = RenderSettings(
        scheduler=scheduler,
        steps=steps,
        guidance=guidance,
        image_steps=None,
        image_guidance=None,
        width=width,
        height=height,
        tta=not fast_decode,
        decode_chunk_size=decode_chunk_size,
        format=format,
        quality=quality,
        lossless=lossless,
        alpha_mode=alpha_mode.value,
        loop=loop,
        preview=preview,
    )
    quiet_third_party_logs()
    params = settings.params(frames, fps)

    # 2. Batch mode: plan, skip finished items, render the rest, report each.
    if inputs is not None:

        def render_item(job: Any, p: dict[str, Any]) -> dict[str, float]:
            negative = job.item.negative_prompt if job.item.negative_prompt is not None else negative_prompt
            source = load_animation_input(job.item.image, width=width, height=height, quiet=quiet)
            _, timings = animate_one(
                session,
                settings,
                source,
                job.item.prompt,
                negative,
                job.seed,
                p["frames"],
                p["fps"],
                job.output,
                overwrite=overwrite or job.replace,
                quiet=quiet,
            )
            return timings

        code = run_cli_batch(
            batch_file=inputs,
            kind="inputs",
            output=output,
            seed=seed,
            shard=shard,
            format=format,
            params=params,
            session=session,
            render_item=render_item,
            overwrite=overwrite,
            json_output=json_output,
            quiet=quiet,
        )
        raise typer.Exit(code)

    # 3. One render.
    assert image is not None and prompt is not None
    source = load_animation_input(image, width=width, height=height, quiet=quiet)
    run_seed = resolve_seed(seed)
    result, timings = animate_one(
        session,
        settings,
        source,
        prompt,
        negative_prompt,
        run_seed,
        frames,
        fps,
        output,
        overwrite=overwrite,
        quiet=quiet,
    )
    report_single(
        result,
        manifest=manifest,
        output=output,
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=run_seed,
        image=image,
        params=params,
        session=session,
        timings=timings,
        json_output=json_output,
        extra={"input": source.origin},
    )


@dataclass
class AnimationInput:
    """IMAGE, read: the RGBA still (None for a bare latent), the stage-one latent if any, and its origin."""

    rgba_hwc_uint8: Any
    latent_b4hw: Any
    origin: str


def animate_one(
    session: Any,
    settings: RenderSettings,
    source: AnimationInput,
    prompt: str,
    negative_prompt: str,
    seed: int,
    frames: int,
    fps: float,
    output: Path,
    *,
    overwrite: bool,
    quiet: bool,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Stage two and write: (what was written, seconds per stage)."""
    with stage_progress(quiet) as progress:
        video = session.video(
            prompt,
            negative_prompt=negative_prompt,
            seed=seed,
            frames=frames,
            steps=settings.steps,
            guidance=settings.guidance,
            image=source.rgba_hwc_uint8 if source.latent_b4hw is None else None,
            base_latent=source.latent_b4hw,
            tta=settings.tta,
            decode_chunk_size=settings.decode_chunk_size,
            progress=progress,
        )
    result, write_seconds = write_clip(output, video, fps, settings, overwrite=overwrite, quiet=quiet)
    return result, {"video": round(video.seconds, 3), "write": round(write_seconds, 3)}


def load_animation_input(
    image: Path, *, width: int | None, height: int | None, quiet: bool
) -> AnimationInput:
    """IMAGE → an RGBA still (through the encoder later) or a stage-one latent (used as is)."""
    import numpy as np

    from layeranim.alpha import resize_rgba
    from layeranim.cli.image import rgba_digest
    from layeranim.pipelines.layerdiffuse import load_adjusted_latent
    from layeranim.video_io import image_has_alpha, read_image

    if not image.exists():
        raise UsageError(
            f"IMAGE {str(image)!r} does not exist; give an RGBA .png/.webp or a .latent.safetensors."
        )
    if image.suffix.lower() == LATENT_SUFFIX:
        if width is not None or height is not None:
            raise UsageError("--width/--height resize an input image; a latent has its own size. Drop them.")
        latent, _ = load_adjusted_latent(image)
        return AnimationInput(None, latent, str(image))
    if not image_has_alpha(image):
        raise UsageError(
            f"IMAGE {str(image)!r} has no alpha channel: layeranim animates transparent images. Give an RGBA "
            "PNG or WebP (e.g. from `layeranim image`), or cut the subject out first."
        )
    rgba = read_image(image)
    if width is not None or height is not None:
        h, w = rgba.shape[:2]
        new_w = width if width is not None else round(w * (height or h) / h)
        new_h = height if height is not None else round(h * (width or w) / w)
        rgba = resize_rgba(rgba, new_w, new_h)
    sidecar = latent_sidecar_path(image)
    if sidecar.exists() and width is None and height is None:
        latent, meta = load_adjusted_latent(sidecar)
        if meta.get("image_sha256") == rgba_digest(np.ascontiguousarray(rgba)):
            note(f"starting from the stage-one latent {sidecar}", quiet)
            return AnimationInput(rgba, latent, str(sidecar))
        note(f"ignoring {sidecar}: it belongs to another version of {image.name}", quiet)
    return AnimationInput(rgba, None, str(image))
