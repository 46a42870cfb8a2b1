"""`layeranim convert`: any readable RGBA clip to any writable format, keeping its alpha."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from layeranim import alpha as alpha_ops
from layeranim import video_io
from layeranim.cli._common import (
    AlphaModeChoice,
    AlphaModeOpt,
    BackgroundOpt,
    FormatOpt,
    FpsOpt,
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
    progress_bar,
)
from layeranim.errors import UsageError

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


def _target_size(size: tuple[int, int], height: int, width: int) -> tuple[int, int]:
    new_width, new_height = size
    if new_width == 0:
        new_width = max(1, round(width * new_height / height))
    if new_height == 0:
        new_height = max(1, round(height * new_width / width))
    return new_width, new_height


@app.command(epilog=CONVERT_EPILOG)
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
            "or a directory / frame_%05d.png pattern for a PNG sequence.",
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
    overwrite: OverwriteOpt = False,
    preview: PreviewOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Convert a transparent clip to another format, keeping its alpha.

    The output's extension (or --format) picks the format. Outputs that would drop alpha are refused.
    """
    # 1. Check every argument and the output before decoding anything.
    size = parse_resize(resize) if resize is not None else None
    background_rgb = alpha_ops.parse_color(background) if background is not None else None
    if stop is not None and stop <= start:
        raise UsageError(f"--stop {stop} must be greater than --start {start}; --stop is exclusive.")
    spec = video_io.check_output(
        output,
        format=format,
        overwrite=overwrite,
        codec=codec,
        dither=dither,
        alpha_threshold=alpha_threshold,
    )
    if preview:
        preview_target = video_io.preview_path(output)
        if preview_target.exists() and not overwrite:
            raise UsageError(
                f"preview {str(preview_target)!r} already exists; pass --overwrite to replace it."
            )
    source_info = video_io.probe(input)

    # 2. Read the frames.
    with progress_bar("reading", source_info.frames or None, quiet) as on_read:
        clip = video_io.read_video(input, start=start, stop=stop, step=step, progress=on_read)
    rgba_fhwc_uint8 = clip.rgba_fhwc_uint8
    if not source_info.has_alpha and background_rgb is None:
        note(f"note: {input} stores no alpha; the output will be opaque.", quiet)

    # 3. Transform: resize (premultiplied, so edges stay clean), then flatten.
    if size is not None:
        height, width = rgba_fhwc_uint8.shape[1:3]
        new_width, new_height = _target_size(size, height, width)
        rgba_fhwc_uint8 = alpha_ops.resize_rgba_frames(rgba_fhwc_uint8, new_width, new_height)
    if background_rgb is not None:
        rgba_fhwc_uint8 = alpha_ops.flatten_onto_color(rgba_fhwc_uint8, background_rgb)
    out_fps = fps if fps is not None else clip.fps
    if step > 1 and fps is None:
        out_fps = clip.fps / step  # keep the clip's duration when dropping frames

    # 4. Write (to a temporary name, renamed when complete), then the preview.
    with progress_bar("writing", len(rgba_fhwc_uint8), quiet) as on_write:
        info = video_io.write_video(
            output,
            rgba_fhwc_uint8,
            out_fps,
            format=spec.name,
            quality=quality,
            lossless=lossless,
            alpha_mode=alpha_mode.value,
            loop=loop,
            overwrite=overwrite,
            progress=on_write,
            codec=codec,
            dither=dither,
            alpha_threshold=alpha_threshold,
        )
    preview_written = None
    if preview:
        preview_written = video_io.write_preview(output, rgba_fhwc_uint8, out_fps, overwrite=overwrite)
        kind = "MP4 (H.264)" if preview_written.suffix == ".mp4" else "GIF (no H.264 encoder in this build)"
        note(f"preview: {preview_written} ({kind})", quiet)

    # 5. Report.
    if json_output:
        print_json(
            {
                "output": str(info.path),
                "format": info.format,
                "codec": info.codec,
                "pix_fmt": info.pix_fmt,
                "frames": info.frames,
                "fps": info.fps,
                "width": info.width,
                "height": info.height,
                "has_alpha": info.has_alpha,
                "preview": str(preview_written) if preview_written is not None else None,
            }
        )
        return
    alpha_text = "alpha stored" if info.has_alpha else "no alpha"
    note(
        f"wrote {info.frames} frames, {info.width}x{info.height} at {info.fps:g} fps: {spec.name} "
        f"[{info.codec}, {info.pix_fmt}], {alpha_text}",
        quiet,
    )
    typer.echo(str(info.path))
