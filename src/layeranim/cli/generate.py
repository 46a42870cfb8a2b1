"""`layeranim generate`: text to a transparent video — stage one then stage two, models loaded once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    print_json,
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
    model_spec_from_options,
)
from layeranim.cli._render import (
    DecodeChunkOpt,
    FastDecodeOpt,
    FramesOpt,
    IfaWeightsOpt,
    SchedulerOpt,
    VideoFpsOpt,
    check_ifa_weights,
    check_preview_target,
    make_parent_dir,
    quiet_third_party_logs,
    resolve_seed,
    stage_progress,
    write_clip,
)
from layeranim.errors import OutputExistsError, UnsupportedFormatError


@app.command(
    "generate",
    epilog="Examples:\n\n"
    '  layeranim generate "a paper lantern swaying" -o lantern.webm\n\n'
    '  layeranim generate "a paper lantern swaying" -o lantern.mov --save-image lantern.png --seed 7\n\n'
    '  layeranim generate "a paper lantern swaying" --preset tiny -o out/lantern.webm --json',
)
def generate(
    prompt: Annotated[str, typer.Argument(help="What the video shows.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The video to write; the format follows the extension.")
    ],
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
    format: FormatOpt = None,
    quality: QualityOpt = None,
    lossless: LosslessOpt = None,
    alpha_mode: AlphaModeOpt = AlphaModeChoice.straight,
    loop: LoopOpt = 0,
    preview: PreviewOpt = False,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate a transparent video from text: a LayerDiffuse image, then AnimateDiff + IFA."""
    from layeranim.devices import select_device, select_dtype
    from layeranim.session import RenderSession
    from layeranim.video_io import check_output, write_image

    # 1. Validate everything before loading a model.
    make_parent_dir(output)
    check_output(output, format=format, overwrite=overwrite)
    check_preview_target(output, preview, overwrite)
    if save_image is not None:
        if save_image.suffix.lower() not in (".png", ".webp"):
            raise UnsupportedFormatError(f"--save-image {str(save_image)!r}: use a .png or .webp name.")
        if save_image.exists() and not overwrite:
            raise OutputExistsError(
                f"--save-image {str(save_image)!r} exists; pass --overwrite to replace it."
            )
    run_seed = resolve_seed(seed)
    spec = model_spec_from_options(
        preset=preset,
        family=family,
        model=model,
        transparent_attn=transparent_attn,
        transparent_encoder=transparent_encoder,
        transparent_decoder=transparent_decoder,
        motion_adapter=motion_adapter,
    )
    torch_device = select_device(device)
    session = RenderSession(
        spec,
        torch_device,
        select_dtype(torch_device, dtype),
        scheduler=scheduler,
        ifa_weights=check_ifa_weights(ifa_weights),
    )

    # 2. Render: stage one, then stage two from its adjusted latent (same seed, fresh generator).
    quiet_third_party_logs()
    with stage_progress(quiet) as progress:
        still = session.image(
            prompt,
            negative_prompt=negative_prompt,
            seed=run_seed,
            steps=image_steps,
            guidance=image_guidance,
            width=width,
            height=height,
            tta=not fast_decode,
            progress=progress,
        )
        video = session.video(
            prompt,
            negative_prompt=negative_prompt,
            seed=run_seed,
            frames=frames,
            steps=steps,
            guidance=guidance,
            base_latent=still.latent_b4hw,
            tta=not fast_decode,
            decode_chunk_size=decode_chunk_size,
            progress=progress,
        )

    # 3. Write.
    result = write_clip(
        output,
        video.frames_fhwc_uint8,
        fps,
        format=format,
        quality=quality,
        lossless=lossless,
        alpha_mode=alpha_mode.value,
        loop=loop,
        overwrite=overwrite,
        preview=preview,
    )
    if save_image is not None:
        result["image"] = str(write_image(save_image, still.rgba_hwc_uint8, overwrite=overwrite))
    if json_output:
        seconds = {"image": round(still.seconds, 3), "video": round(video.seconds, 3)}
        print_json({**result, "seed": run_seed, "middle_frame": video.middle_index, "seconds": seconds})
    else:
        typer.echo(result["output"])
        for key in ("preview", "image"):
            if key in result:
                typer.echo(result[key])
    if not result["alpha"]:
        note("warning: the written file stores no alpha channel.", quiet)
