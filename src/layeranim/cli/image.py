"""`layeranim image`: stage one alone — a prompt to one transparent PNG (and, optionally, its latent)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from layeranim.cli._common import JsonOpt, OverwriteOpt, QuietOpt, app, print_json
from layeranim.cli._model_options import (
    DeviceOpt,
    DtypeOpt,
    FamilyOpt,
    GuidanceOpt,
    HeightOpt,
    ModelOpt,
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
    FastDecodeOpt,
    OffloadOpt,
    SchedulerOpt,
    build_session,
    latent_sidecar_path,
    make_parent_dir,
    quiet_third_party_logs,
    resolve_seed,
    stage_progress,
)
from layeranim.errors import OutputExistsError, UnsupportedFormatError

IMAGE_SUFFIXES = (".png", ".webp")


@app.command(
    "image",
    epilog="Examples:\n\n"
    '  layeranim image "a glass teapot, studio light" -o teapot.png --save-latent\n\n'
    '  layeranim image "a red kite" -o kite.png --preset tiny --seed 1 --json',
)
def image(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The RGBA image to write (.png or .webp).")],
    negative_prompt: NegativePromptOpt = "",
    seed: SeedOpt = None,
    steps: StepsOpt = 25,
    guidance: GuidanceOpt = 7.0,
    width: WidthOpt = None,
    height: HeightOpt = None,
    scheduler: SchedulerOpt = "euler_a",
    fast_decode: FastDecodeOpt = False,
    save_latent: Annotated[
        bool,
        typer.Option(
            "--save-latent",
            help="Also write the adjusted latent as NAME.latent.safetensors, so `layeranim animate NAME.png` "
            "starts exactly from it.",
        ),
    ] = False,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    family: FamilyOpt = "sd15",
    transparent_attn: TransparentAttnOpt = None,
    transparent_encoder: TransparentEncoderOpt = None,
    transparent_decoder: TransparentDecoderOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    offload: OffloadOpt = "none",
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate one transparent image with LayerDiffuse (stage one)."""
    from layeranim.pipelines.layerdiffuse import save_adjusted_latent
    from layeranim.video_io import write_image

    # 1. Validate everything before loading a model.
    if output.suffix.lower() not in IMAGE_SUFFIXES:
        raise UnsupportedFormatError(
            f"--output {str(output)!r}: images are written as {' or '.join(IMAGE_SUFFIXES)}; "
            "for a video use `layeranim generate`."
        )
    make_parent_dir(output)
    latent_path = latent_sidecar_path(output) if save_latent else None
    for target in (output, latent_path):
        if target is not None and target.exists() and not overwrite:
            raise OutputExistsError(f"output {str(target)!r} exists; pass --overwrite to replace it.")
    run_seed = resolve_seed(seed)
    session = build_session(
        preset=preset,
        family=family,
        model=model,
        transparent_attn=transparent_attn,
        transparent_encoder=transparent_encoder,
        transparent_decoder=transparent_decoder,
        device=device,
        dtype=dtype,
        scheduler=scheduler,
        offload=offload,
    )

    # 2. Render.
    quiet_third_party_logs()
    with stage_progress(quiet) as progress:
        result = session.image(
            prompt,
            negative_prompt=negative_prompt,
            seed=run_seed,
            steps=steps,
            guidance=guidance,
            width=width,
            height=height,
            tta=not fast_decode,
            progress=progress,
        )

    # 3. Write.
    written = write_image(output, result.rgba_hwc_uint8, overwrite=overwrite)
    if latent_path is not None:
        save_adjusted_latent(
            latent_path,
            result.latent_b4hw,
            {
                "prompt": prompt,
                "negative_prompt": negative_prompt,
                "seed": run_seed,
                "image": output.name,
                "image_sha256": rgba_digest(result.rgba_hwc_uint8),
                "tta": not fast_decode,
                "family": session.spec.family,
            },
        )
    height_px, width_px = result.rgba_hwc_uint8.shape[:2]
    if json_output:
        print_json(
            {
                "output": str(written),
                "latent": str(latent_path) if latent_path else None,
                "seed": run_seed,
                "width": width_px,
                "height": height_px,
                "seconds": round(result.seconds, 3),
            }
        )
    else:
        typer.echo(str(written))
        if latent_path is not None:
            typer.echo(str(latent_path))


def rgba_digest(rgba_hwc_uint8: object) -> str:
    """sha256 of an image's RGBA pixels (ties a latent sidecar to the image it decodes to)."""
    import hashlib

    import numpy as np

    array = np.ascontiguousarray(rgba_hwc_uint8)
    return hashlib.sha256(f"{array.shape}".encode() + array.tobytes()).hexdigest()
