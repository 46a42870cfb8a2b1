"""`layeranim info`: what a clip holds, and whether its alpha is actually stored."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from layeranim import video_io
from layeranim.cli._common import JsonOpt, app, print_json

INFO_EPILOG = """\
[bold]Examples[/bold]

  layeranim info clip.webm

  layeranim info frames/ --json
"""


@app.command(epilog=INFO_EPILOG)
def info(
    file: Annotated[
        Path,
        typer.Argument(
            help="Video, animated image, PNG-sequence directory or frame_%05d.png pattern.",
            metavar="FILE",
            show_default=False,
        ),
    ],
    json_output: JsonOpt = False,
) -> None:
    """Print a clip's format, codec, pixel format, size, frames, fps and whether it stores alpha.

    "alpha: stored" means the file carries an alpha channel; an opaque file says "alpha: none".
    """
    result = video_io.probe(file)
    if json_output:
        print_json(result.to_dict())
        return
    duration = result.frames / result.fps if result.fps else 0.0
    lines = [
        str(result.path),
        f"  format:   {result.format}",
        f"  codec:    {result.codec} ({result.pix_fmt})",
        f"  size:     {result.width}x{result.height}",
        f"  frames:   {result.frames}",
        f"  fps:      {result.fps:g}",
        f"  duration: {duration:.3f} s",
        f"  alpha:    {'stored' if result.has_alpha else 'none'}",
    ]
    typer.echo("\n".join(lines))
