"""`layeranim preview`: one HTML page that shows clips over a checkerboard, colours and as alpha only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from layeranim.cli._common import JsonOpt, OverwriteOpt, QuietOpt, app, note, print_json
from layeranim.delivery.preview import DEFAULT_COLORS, build_preview

PREVIEW_EPILOG = (
    "[bold]Examples[/bold]\n\n"
    "  layeranim preview clip.webm -o preview.html\n\n"
    "  layeranim preview renders/ -o renders/index.html   [dim]# a gallery with prompts and seeds[/dim]\n\n"
    "  layeranim preview a.webm b.mov --color white --color '#ff00ff' -o page.html\n\n"
    # Rich rewraps paragraphs, so each one is a single line here.
    "Browsers play .webm and .mp4 (stacked-alpha MP4s are unstacked on the page); other clips (.mov, .mkv, "
    "APNG, WebP, GIF, PNG sequences) are shown through VP9-alpha WebM copies written to PAGE_files/ beside "
    "the page.\n\n"
    "Open the page from disk (file://) in Chromium or Firefox; page.html#view=alpha opens it in the "
    "alpha-only view.\n"
)


@app.command("preview", epilog=PREVIEW_EPILOG)
def preview(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Clips, folders of outputs, or render manifests (clip.webm.json).",
            metavar="FILE...",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The page to write (.html).", metavar="PAGE", show_default=False),
    ],
    colors: Annotated[
        list[str] | None,
        typer.Option(
            "--color",
            help="A background colour to offer besides the checkerboard (#rrggbb, r,g,b or a name); "
            f"repeat it. Default: {', '.join(DEFAULT_COLORS)}.",
            metavar="COLOR",
            show_default=False,
        ),
    ] = None,
    title: Annotated[
        str | None, typer.Option("--title", help="The page's title.", show_default=False)
    ] = None,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write one self-contained HTML page to look at transparent clips: over a checkerboard, over
    colours, and as alpha only, with play, pause, frame step and scrub.
    """
    page, clips = build_preview(
        inputs, output, colors=colors or DEFAULT_COLORS, title=title, overwrite=overwrite
    )
    if json_output:
        print_json(
            {
                "page": page,
                "clips": [
                    {
                        "source": clip.source,
                        "video": clip.video,
                        "converted": clip.converted,
                        "stacked": clip.stacked,
                        "prompt": clip.prompt,
                        "seed": clip.seed,
                    }
                    for clip in clips
                ],
            }
        )
        return
    converted = sum(clip.converted for clip in clips)
    note(
        f"{len(clips)} clip(s)" + (f", {converted} shown through WebM copies" if converted else ""),
        quiet=quiet,
    )
    typer.echo(str(page))
