"""`layeranim convert`: any readable RGBA clip to any writable format, keeping its alpha."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from layeranim.cli._common import (
    AlphaModeChoice,
    AlphaModeOpt,
    BackgroundOpt,
    FormatOpt,
    FpsOpt,
    HtmlOpt,
    JsonOpt,
    LoopOpt,
    LosslessOpt,
    OverwriteOpt,
    PreviewOpt,
    QualityOpt,
    QuietOpt,
    TargetOpt,
    app,
    note,
    print_json,
    targets_epilog,
)
from layeranim.cli._render import notifier, stage_progress
from layeranim.errors import UsageError
from layeranim.render.settings import OutputSettings

_RESIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")

CONVERT_EPILOG = """\
[bold]Examples[/bold]

  layeranim convert clip.mov clip.webm                   [dim]# ProRes 4444 → VP9 alpha for the web[/dim]

  layeranim convert clip.webm clip.mov --format mov-xq   [dim]# → ProRes 4444 XQ for an editor[/dim]

  layeranim convert frames/ clip.webp --fps 12           [dim]# PNG sequence → lossless animated WebP[/dim]

  layeranim convert clip.webm 'out/frame_%05d.png'       [dim]# → PNG sequence[/dim]

  layeranim convert clip.webm small.gif --resize 320x0 --step 2 --dither bayer

  layeranim convert clip.webm clip.mp4 --format mp4-stacked   [dim]# colour over alpha, for WebGL[/dim]

  layeranim convert clip.webm flat.webm --background white --preview --json

  layeranim convert clip.webm out/clip --target web      [dim]# out/clip.webm, .stacked.mp4, .html[/dim]

  layeranim convert clip.webm out/hero --target godot    [dim]# out/hero_frames/, .png, .tres[/dim]
"""


def parse_resize(text: str) -> tuple[int, int]:
    """`WIDTHxHEIGHT` → (width, height); 0 for one side keeps the aspect ratio."""
    match = _RESIZE_RE.match(text)
    if match is None or (int(match.group(1)) == 0 and int(match.group(2)) == 0):
        raise UsageError(
            f"--resize {text!r} is not WIDTHxHEIGHT; e.g. --resize 512x512, or --resize 512x0 to keep "
            "the aspect ratio."
        )
    return int(match.group(1)), int(match.group(2))


@app.command(epilog=CONVERT_EPILOG + "\n" + targets_epilog())
def convert(
    input: Annotated[
        Path,
        typer.Argument(
            help="Clip to read: video (.webm .mov .mkv .mp4 …), animated image (.apng .webp .gif), a "
            "directory of PNG frames, or a pattern like frames/frame_%05d.png.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Argument(
            help="File to write; its extension picks the format (.webm .mov .mkv .apng .png .webp .gif), "
            "or a directory / frame_%05d.png pattern for a PNG sequence. With --target: a base name "
            "without extension (out/clip).",
            metavar="OUTPUT",
            show_default=False,
        ),
    ],
    format: FormatOpt = None,
    fps: FpsOpt = None,
    quality: QualityOpt = None,
    lossless: LosslessOpt = None,
    alpha_mode: AlphaModeOpt = AlphaModeChoice.straight,
    loop: LoopOpt = 0,
    start: Annotated[int, typer.Option("--start", min=0, help="First frame to keep (0-based).")] = 0,
    stop: Annotated[
        int | None,
        typer.Option("--stop", min=1, help="Stop before this frame (exclusive).", show_default=False),
    ] = None,
    step: Annotated[int, typer.Option("--step", min=1, help="Keep every N-th frame.")] = 1,
    resize: Annotated[
        str | None,
        typer.Option(
            "--resize",
            metavar="WxH",
            help="Resize (alpha-correct, Lanczos); 0 for one side keeps the aspect ratio, e.g. 512x0.",
            show_default=False,
        ),
    ] = None,
    background: BackgroundOpt = None,
    codec: Annotated[
        str | None,
        typer.Option(
            "--codec",
            help="Codec of --format mp4-stacked: h264 (default) or av1.",
            show_default=False,
        ),
    ] = None,
    dither: Annotated[
        str | None,
        typer.Option(
            "--dither",
            help="GIF dithering: none (default), bayer or bayer:0-5, sierra2_4a, floyd_steinberg, sierra2, "
            "sierra3, burkes, atkinson, heckbert.",
            show_default=False,
        ),
    ] = None,
    alpha_threshold: Annotated[
        int | None,
        typer.Option(
            "--alpha-threshold",
            min=1,
            max=255,
            help="GIF: pixels with alpha below this become transparent (default 128).",
            show_default=False,
        ),
    ] = None,
    target: TargetOpt = None,
    html: HtmlOpt = False,
    overwrite: OverwriteOpt = False,
    preview: PreviewOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert a transparent clip to another format, keeping its alpha.

    The output's extension (or --format) picks the format. Outputs that would drop alpha are refused.
    """
    from layeranim.render.convert import ConvertRequest, convert

    request = ConvertRequest(
        input=input,
        output=output,
        fps=fps,
        start=start,
        stop=stop,
        step=step,
        resize=parse_resize(resize) if resize is not None else None,
        background=background,
        output_settings=OutputSettings(
            format=format,
            quality=quality,
            lossless=lossless,
            alpha_mode=alpha_mode.value,
            loop=loop,
            preview=preview,
            overwrite=overwrite,
            codec=codec,
            dither=dither,
            alpha_threshold=alpha_threshold,
            target=target,
            html=html,
        ),
    )
    with stage_progress(quiet) as progress:
        outcome = convert(
            request,
            progress=lambda phase, done, total: progress("convert", phase, done, total),
            notify=notifier(quiet),
        )
    info = outcome.info
    if outcome.preview is not None:
        kind = "MP4 (H.264)" if outcome.preview.suffix == ".mp4" else "GIF (no H.264 encoder in this build)"
        note(f"preview: {outcome.preview} ({kind})", quiet)
    if json_output:
        print_json(outcome.to_json())
        return
    alpha_text = "alpha stored" if info.has_alpha else "no alpha"
    what = f"target {outcome.target}" if outcome.target is not None else outcome.format_name
    note(
        f"wrote {info.frames} frames, {info.width}x{info.height} at {info.fps:g} fps: {what} "
        f"[{info.codec}, {info.pix_fmt}], {alpha_text}",
        quiet,
    )
    for path in outcome.delivered or [info.path]:
        typer.echo(str(path))
    if outcome.html is not None:
        typer.echo(str(outcome.html))
