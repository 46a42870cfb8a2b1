"""`layeranim animate`: stage two alone — your RGBA still (or stage one's latent) to a transparent video."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from layeranim.cli._batch import run_cli_batch
from layeranim.cli._common import JsonOpt, QuietOpt, app, targets_epilog
from layeranim.cli._options import CLIP, OUTPUT, SAMPLING, ClipOptions, model_options, with_option_groups
from layeranim.cli._render import notifier, quiet_third_party_logs, report_seed, stage_progress, start_render
from layeranim.cli.generate import print_clip
from layeranim.errors import UsageError
from layeranim.render.settings import (
    AnimateRequest,
    BatchRequest,
    ModelSettings,
    OutputSettings,
    SamplingSettings,
)


@app.command(
    "animate",
    epilog="Examples:\n\n"
    '  layeranim animate teapot.png "steam rising" -o teapot.webm\n\n'
    '  layeranim animate teapot.latent.safetensors "steam rising" -o teapot.mov --frames 24 --fps 12\n\n'
    '  layeranim animate sprite.png "waving" -o frames/ --ifa-weights ifa.safetensors --json'
    + "\n\n"
    + targets_epilog(),
)
@with_option_groups(clip=CLIP, sampling=SAMPLING, models=model_options(animate=True), output_settings=OUTPUT)
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
            "per-item negative, seed, frames, fps, base_position, seamless, output. Finished items are "
            "skipped on re-runs.",
        ),
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
    """Animate a transparent image into a transparent video (stage two: AnimateDiff + IFA)."""
    from layeranim.render import api

    # 1. Parse into a request (validated as it is built, before any model loads).
    if inputs is None and (image is None or prompt is None):
        raise UsageError("give IMAGE and PROMPT, or --inputs FILE for a batch.")
    if inputs is not None and (image is not None or prompt is not None):
        raise UsageError("give IMAGE and PROMPT, or --inputs FILE for a batch (not both).")
    if inputs is None and clip.shard is not None:
        raise UsageError("--shard splits a batch; use it with --inputs FILE.")
    if inputs is None and evaluate:
        raise UsageError(
            "--eval measures a batch; use it with --inputs FILE (or run `layeranim eval` on the clip)."
        )
    quiet_third_party_logs()
    start_render(models, quiet)

    # 2. Batch mode: plan, skip finished items, render the rest, report each.
    if inputs is not None:
        batch = BatchRequest(
            file=inputs,
            kind="inputs",
            output=output,
            **clip.batch_fields(),
            sampling=sampling,
            output_settings=output_settings,
            models=models,
            evaluate=evaluate,
        )
        raise typer.Exit(run_cli_batch(batch, json_output=json_output, quiet=quiet))

    # 3. One render: call, then print.
    assert image is not None and prompt is not None  # checked in step 1
    request = AnimateRequest(
        image=image,
        prompt=prompt,
        output=output,
        **clip.clip_fields(),
        sampling=sampling,
        output_settings=output_settings,
        models=models,
    )
    with stage_progress(quiet) as progress:
        outcome = api.animate(request, progress=progress, notify=notifier(quiet))
    report_seed(clip.seed, outcome.seed, quiet)
    print_clip(outcome, json_output)
