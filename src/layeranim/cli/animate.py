"""`layeranim animate`: stage two alone — your RGBA still (or stage one's latent) to a transparent video."""

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
    image: Annotated[
        Path,
        typer.Argument(
            help="The RGBA still to animate (.png/.webp with alpha), or a stage-one latent "
            "(NAME.latent.safetensors from `layeranim image --save-latent`). Next to a PNG, its "
            "NAME.latent.safetensors is used automatically when it belongs to that exact image."
        ),
    ],
    prompt: Annotated[str, typer.Argument(help="What should happen in the video.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The video to write; the format follows the extension.")
    ],
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
    """Animate a transparent image into a transparent video (stage two: AnimateDiff + IFA)."""
    from layeranim.devices import select_device, select_dtype
    from layeranim.session import RenderSession
    from layeranim.video_io import check_output

    # 1. Validate everything before loading a model.
    make_parent_dir(output)
    check_output(output, format=format, overwrite=overwrite)
    check_preview_target(output, preview, overwrite)
    rgba, base_latent, source = load_animation_input(image, width=width, height=height, quiet=quiet)
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

    # 2. Render.
    quiet_third_party_logs()
    with stage_progress(quiet) as progress:
        video = session.video(
            prompt,
            negative_prompt=negative_prompt,
            seed=run_seed,
            frames=frames,
            steps=steps,
            guidance=guidance,
            image=rgba if base_latent is None else None,
            base_latent=base_latent,
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
    if json_output:
        print_json(
            {
                **result,
                "seed": run_seed,
                "input": source,
                "middle_frame": video.middle_index,
                "seconds": round(video.seconds, 3),
            }
        )
    else:
        typer.echo(result["output"])
        if preview:
            typer.echo(result["preview"])
    if not result["alpha"]:
        note("warning: the written file stores no alpha channel.", quiet)


def load_animation_input(
    image: Path, *, width: int | None, height: int | None, quiet: bool
) -> tuple[object, object, str]:
    """IMAGE → (rgba or None, base latent or None, what was used): an RGBA still or a stage-one latent."""
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
        return None, latent, str(image)
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
            return rgba, latent, str(sidecar)
        note(f"ignoring {sidecar}: it belongs to another version of {image.name}", quiet)
    return rgba, None, str(image)
