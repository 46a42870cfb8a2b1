"""`layeranim generate`: text to a transparent video — stage one then stage two, models loaded once."""

from __future__ import annotations

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
    make_parent_dir,
    quiet_third_party_logs,
    resolve_seed,
    stage_progress,
    write_clip,
)
from layeranim.errors import OutputExistsError, UnsupportedFormatError, UsageError


@app.command(
    "generate",
    epilog="Examples:\n\n"
    '  layeranim generate "a paper lantern swaying" -o lantern.webm\n\n'
    '  layeranim generate "a paper lantern swaying" -o lantern.mov --save-image lantern.png --seed 7\n\n'
    '  layeranim generate "a paper lantern swaying" --preset tiny -o out/lantern.webm --json',
)
def generate(
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="The video to write; the format follows the extension. With --prompts: a folder (DIR/) "
            "or a template with {index}, {slug}, {seed}, {ext}.",
        ),
    ],
    prompt: Annotated[
        str | None, typer.Argument(help="What the video shows (or use --prompts FILE).")
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help="Batch mode: a text file (one prompt per line, # comments) or JSONL with per-item prompt, "
            "negative, seed, frames, fps, output. Finished items are skipped on re-runs.",
        ),
    ] = None,
    shard: ShardOpt = None,
    frames: FramesOpt = 16,
    fps: VideoFpsOpt = 8.0,
    negative_prompt: NegativePromptOpt = "",
    seed: SeedOpt = None,
    steps: StepsOpt = 25,
    guidance: GuidanceOpt = 7.5,
    image_steps: Annotated[
        int, typer.Option("--image-steps", help="Denoising steps of stage one (the base image).", min=1)
    ] = 25,
    image_guidance: Annotated[
        float, typer.Option("--image-guidance", help="Guidance scale of stage one.", min=0.0)
    ] = 7.0,
    width: WidthOpt = None,
    height: HeightOpt = None,
    scheduler: SchedulerOpt = "euler_a",
    motion_adapter: MotionAdapterOpt = None,
    ifa_weights: IfaWeightsOpt = None,
    fast_decode: FastDecodeOpt = False,
    decode_chunk_size: DecodeChunkOpt = 4,
    save_image: Annotated[
        Path | None,
        typer.Option("--save-image", help="Also write stage one's RGBA image (.png or .webp) here."),
    ] = None,
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
    """Generate a transparent video from text: a LayerDiffuse image, then AnimateDiff + IFA."""
    from layeranim.video_io import check_output

    # 1. Validate everything before loading a model.
    if (prompt is None) == (prompts is None):
        raise UsageError("give a PROMPT, or --prompts FILE for a batch (not both).")
    if prompts is None and shard is not None:
        raise UsageError("--shard splits a batch; use it with --prompts FILE.")
    if prompts is not None and save_image is not None:
        raise UsageError("--save-image names one file; it cannot be used with --prompts.")
    if prompts is None:
        make_parent_dir(output)
        check_output(output, format=format, overwrite=overwrite)
        check_preview_target(output, preview, overwrite)
        check_manifest_target(output, manifest, overwrite)
    if save_image is not None:
        if save_image.suffix.lower() not in (".png", ".webp"):
            raise UnsupportedFormatError(f"--save-image {str(save_image)!r}: use a .png or .webp name.")
        if save_image.exists() and not overwrite:
            raise OutputExistsError(
                f"--save-image {str(save_image)!r} exists; pass --overwrite to replace it."
            )
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
    )
    settings = RenderSettings(
        scheduler=scheduler,
        steps=steps,
        guidance=guidance,
        image_steps=image_steps,
        image_guidance=image_guidance,
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
    if prompts is not None:

        def render_item(job: Any, p: dict[str, Any]) -> dict[str, float]:
            negative = job.item.negative_prompt if job.item.negative_prompt is not None else negative_prompt
            _, timings = render_one(
                session,
                settings,
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
            batch_file=prompts,
            kind="prompts",
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

    # 3. One render: stage one, then stage two from its adjusted latent (same seed, fresh generator).
    assert prompt is not None
    run_seed = resolve_seed(seed)
    result, timings = render_one(
        session,
        settings,
        prompt,
        negative_prompt,
        run_seed,
        frames,
        fps,
        output,
        overwrite=overwrite,
        quiet=quiet,
        save_image=save_image,
    )
    report_single(
        result,
        manifest=manifest,
        output=output,
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=run_seed,
        image=None,
        params=params,
        session=session,
        timings=timings,
        json_output=json_output,
    )


def render_one(
    session: Any,
    settings: RenderSettings,
    prompt: str,
    negative_prompt: str,
    seed: int,
    frames: int,
    fps: float,
    output: Path,
    *,
    overwrite: bool,
    quiet: bool,
    save_image: Path | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Stage one, stage two, write: (what was written, seconds per stage)."""
    from layeranim.video_io import write_image

    with stage_progress(quiet) as progress:
        still = session.image(
            prompt,
            negative_prompt=negative_prompt,
            seed=seed,
            steps=settings.image_steps,
            guidance=settings.image_guidance,
            width=settings.width,
            height=settings.height,
            tta=settings.tta,
            progress=progress,
        )
        video = session.video(
            prompt,
            negative_prompt=negative_prompt,
            seed=seed,
            frames=frames,
            steps=settings.steps,
            guidance=settings.guidance,
            base_latent=still.latent_b4hw,
            tta=settings.tta,
            decode_chunk_size=settings.decode_chunk_size,
            progress=progress,
        )
    result, write_seconds = write_clip(output, video, fps, settings, overwrite=overwrite, quiet=quiet)
    if save_image is not None:
        result["image"] = str(write_image(save_image, still.rgba_hwc_uint8, overwrite=overwrite))
    timings = {
        "image": round(still.seconds, 3),
        "video": round(video.seconds, 3),
        "write": round(write_seconds, 3),
    }
    return result, timings
