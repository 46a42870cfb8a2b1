"""`layeranim generate`: text to a transparent video — stage one then stage two, models loaded once."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from layeranim.cli._batch import run_cli_batch
from layeranim.cli._common import JsonOpt, QuietOpt, app, print_json, targets_epilog
from layeranim.cli._options import CLIP, OUTPUT, SAMPLING, ClipOptions, model_options, with_option_groups
from layeranim.cli._render import notifier, quiet_third_party_logs, report_seed, stage_progress, start_render
from layeranim.errors import UsageError
from layeranim.render.settings import (
    BatchRequest,
    GenerateRequest,
    ModelSettings,
    OutputSettings,
    SamplingSettings,
)


@app.command(
    "generate",
    epilog="Examples:\n\n"
    '  layeranim generate "a paper lantern swaying" -o lantern.webm\n\n'
    '  layeranim generate "a paper lantern swaying" -o lantern.mov --save-image lantern.png --seed 7\n\n'
    '  layeranim generate "a paper lantern swaying" --preset tiny -o out/lantern.webm --json\n\n'
    '  layeranim generate "a flag waving" -o flag.webp --frames 96 --seamless --base-position start'
    + "\n\n"
    + targets_epilog(),
)
@with_option_groups(clip=CLIP, sampling=SAMPLING, models=model_options(animate=True), output_settings=OUTPUT)
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
            "negative, seed, frames, fps, base_position, seamless, output. Finished items are skipped on "
            "re-runs.",
        ),
    ] = None,
    image_steps: Annotated[
        int, typer.Option("--image-steps", help="Denoising steps of stage one (the base image).", min=1)
    ] = 25,
    image_guidance: Annotated[
        float, typer.Option("--image-guidance", help="Guidance scale of stage one.", min=0.0)
    ] = 7.0,
    save_image: Annotated[
        Path | None,
        typer.Option("--save-image", help="Also write stage one's RGBA image (.png or .webp) here."),
    ] = None,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--eval",
            help="Batch mode: measure each clip (CLIP score, motion, alpha stability …, as `layeranim eval`; "
            "the tiny random CLIP with --preset tiny) and store the metrics in its manifest and the summary.",
        ),
    ] = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    clip: ClipOptions,
    sampling: SamplingSettings,
    models: ModelSettings,
    output_settings: OutputSettings,
) -> None:
    """Generate a transparent video from text: a LayerDiffuse image, then AnimateDiff + IFA."""
    from layeranim.render import api

    # 1. Parse into a request (validated as it is built, before any model loads).
    if (prompt is None) == (prompts is None):
        raise UsageError("give a PROMPT, or --prompts FILE for a batch (not both).")
    if prompts is None and clip.shard is not None:
        raise UsageError("--shard splits a batch; use it with --prompts FILE.")
    if prompts is not None and save_image is not None:
        raise UsageError("--save-image names one file; it cannot be used with --prompts.")
    sampling = dataclasses.replace(sampling, image_steps=image_steps, image_guidance=image_guidance)
    if prompts is None and evaluate:
        raise UsageError(
            "--eval measures a batch; use it with --prompts FILE (or run `layeranim eval` on the clip)."
        )
    quiet_third_party_logs()
    start_render(models, quiet)

    # 2. Batch mode: plan, skip finished items, render the rest, report each.
    if prompts is not None:
        batch = BatchRequest(
            file=prompts,
            kind="prompts",
            output=output,
            **clip.batch_fields(),
            sampling=sampling,
            output_settings=output_settings,
            models=models,
            evaluate=evaluate,
        )
        raise typer.Exit(run_cli_batch(batch, json_output=json_output, quiet=quiet))

    # 3. One render: call, then print.
    assert prompt is not None  # checked in step 1
    request = GenerateRequest(
        prompt=prompt,
        output=output,
        **clip.clip_fields(),
        sampling=sampling,
        output_settings=output_settings,
        models=models,
        save_image=save_image,
    )
    with stage_progress(quiet) as progress:
        outcome = api.generate(request, progress=progress, notify=notifier(quiet))
    report_seed(clip.seed, outcome.seed, quiet)
    print_clip(outcome, json_output)


def print_clip(outcome: object, json_output: bool) -> None:
    """A clip's result on stdout: one JSON object, or the paths written (clip, preview, image, manifest)."""
    if json_output:
        print_json(outcome.to_json())  # type: ignore[attr-defined]
        return
    for path in outcome.paths():  # type: ignore[attr-defined]
        typer.echo(str(path))
