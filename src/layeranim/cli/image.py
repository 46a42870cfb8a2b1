"""`layeranim image`: stage one alone — a prompt to one transparent PNG (and, optionally, its latent)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from layeranim.cli._common import JsonOpt, OverwriteOpt, QuietOpt, app, print_json
from layeranim.cli._model_options import (
    GuidanceOpt,
    HeightOpt,
    NegativePromptOpt,
    SeedOpt,
    StepsOpt,
    WidthOpt,
)
from layeranim.cli._options import FastDecodeOpt, model_options, with_option_groups
from layeranim.cli._render import quiet_third_party_logs, report_seed, stage_progress, start_render
from layeranim.render.settings import ImageRequest, ModelSettings


@app.command(
    "image",
    epilog="Examples:\n\n"
    '  layeranim image "a glass teapot, studio light" -o teapot.png --save-latent\n\n'
    '  layeranim image "a red kite" -o kite.png --preset tiny --seed 1 --json',
)
@with_option_groups(models=model_options(animate=False))
def image(
    prompt: Annotated[str, typer.Argument(help="What to draw.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The RGBA image to write (.png or .webp).")],
    negative_prompt: NegativePromptOpt = "",
    seed: SeedOpt = None,
    steps: StepsOpt = 25,
    guidance: GuidanceOpt = 7.0,
    width: WidthOpt = None,
    height: HeightOpt = None,
    fast_decode: FastDecodeOpt = False,
    save_latent: Annotated[
        bool,
        typer.Option(
            "--save-latent",
            help="Also write the adjusted latent as NAME.latent.safetensors, so `layeranim animate NAME.png` "
            "starts exactly from it.",
        ),
    ] = False,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    models: ModelSettings,
) -> None:
    """Generate one transparent image with LayerDiffuse (stage one)."""
    from layeranim.render import api

    request = ImageRequest(
        prompt=prompt,
        output=output,
        negative_prompt=negative_prompt,
        seed=seed,
        steps=steps,
        guidance=guidance,
        width=width,
        height=height,
        fast_decode=fast_decode,
        save_latent=save_latent,
        overwrite=overwrite,
        models=models,
    )
    quiet_third_party_logs()
    start_render(models, quiet)
    with stage_progress(quiet) as progress:
        outcome = api.image(request, progress=progress)
    report_seed(seed, outcome.seed, quiet)
    if json_output:
        print_json(outcome.to_json())
        return
    for path in outcome.paths():
        typer.echo(str(path))
