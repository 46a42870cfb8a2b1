"""`layeranim dataset synth OUT`: synthetic RGBA clips (moving soft-edged sprites) for demos and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from layeranim.cli._common import JsonOpt, OverwriteOpt, QuietOpt, app, print_json, progress_bar

dataset_app = typer.Typer(
    name="dataset",
    help="Make training datasets of RGBA clips.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(dataset_app, name="dataset")


@dataset_app.command(
    "synth",
    epilog="Examples:\n\n"
    "  layeranim dataset synth clips/\n\n"
    "  layeranim dataset synth clips/ --clips 32 --frames 16 --format mov --captions jsonl --json",
)
def synth(
    output: Annotated[Path, typer.Argument(help="Folder to create (it must not exist unless --overwrite).")],
    clips: Annotated[int, typer.Option("--clips", help="How many clips.", min=1)] = 8,
    frames: Annotated[int, typer.Option("--frames", help="Frames per clip.", min=2)] = 16,
    width: Annotated[int, typer.Option("--width", help="Width in pixels.", min=8)] = 64,
    height: Annotated[int, typer.Option("--height", help="Height in pixels.", min=8)] = 64,
    fps: Annotated[float, typer.Option("--fps", help="Frames per second.", min=0.001)] = 8.0,
    format: Annotated[
        str, typer.Option("--format", help="Alpha video format: webm, mov, mkv, apng or webp.")
    ] = "webm",
    captions: Annotated[
        str,
        typer.Option("--captions", help="txt (a .txt beside each clip) or jsonl (one metadata.jsonl)."),
    ] = "txt",
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same clips).", min=0)] = 0,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write moving, soft-edged sprites with alpha and captions as real alpha videos."""
    from layeranim.training.synth import make_synthetic_dataset

    with progress_bar("writing clips", clips, quiet) as update:
        result = make_synthetic_dataset(
            output,
            clips=clips,
            frames=frames,
            width=width,
            height=height,
            fps=fps,
            format=format,
            captions=captions,
            seed=seed,
            overwrite=overwrite,
            progress=update,
        )
    if json_output:
        print_json(
            {
                "output": str(result.folder),
                "clips": [
                    {"path": str(path), "caption": caption}
                    for path, caption in zip(result.clips, result.captions, strict=True)
                ],
            }
        )
    else:
        typer.echo(str(result.folder))
