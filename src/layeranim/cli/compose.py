"""`layeranim compose`: composite existing RGBA clips and stills with straight-alpha "over"."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from layeranim.cli._common import (
    AlphaModeChoice,
    AlphaModeOpt,
    FormatOpt,
    JsonOpt,
    LosslessOpt,
    OverwriteOpt,
    QualityOpt,
    QuietOpt,
    app,
    note,
    print_json,
    progress_bar,
)
from layeranim.errors import UsageError

COMPOSE_EPILOG = """\
[bold]Examples[/bold]

  layeranim compose sky.png kite.webm@180,60 title.png@64,400 -o poster.webm

  layeranim compose bg.mov fg.webm@10,20:opacity=0.5,start=8 -o out.mov --fps 24 --loop

  layeranim compose scene.toml -o composite.webm --json

An INPUT is FILE, FILE@X,Y (its top-left corner on the canvas, may be negative) and optionally
:opacity=O,start=S (O from 0 to 1; S the canvas frame it appears at). The first INPUT is the bottom layer.
"""

_SPEC_RE = re.compile(r"^(?P<file>.+?)@(?P<x>-?\d+),(?P<y>-?\d+)(?::(?P<options>[^@]*))?$")
_OPTION_KEYS = ("opacity", "start")


def parse_input_spec(text: str) -> tuple[Path, tuple[int, int], float, int]:
    """`FILE[@X,Y[:opacity=O,start=S]]` → (file, position, opacity, start).

    A malformed INPUT is a `typer.BadParameter` (a command-line usage error, exit 2): its `key=value`
    spellings are the INPUT syntax, not Python arguments for the error translator to rename.
    """
    match = _SPEC_RE.match(text)
    if match is None:
        if "@" in text and not Path(text).exists():
            raise typer.BadParameter(
                f"{text!r} is not FILE@X,Y[:opacity=O,start=S]; e.g. kite.webm@180,60:opacity=0.5.",
                param_hint="INPUT",
            )
        return Path(text), (0, 0), 1.0, 0
    opacity, start = 1.0, 0
    for item in filter(None, (match["options"] or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in _OPTION_KEYS or not value:
            raise typer.BadParameter(
                f"{text!r}: option {item!r} is not opacity=O or start=S; e.g. {match['file']}@"
                f"{match['x']},{match['y']}:opacity=0.5,start=3.",
                param_hint="INPUT",
            )
        try:
            if key == "opacity":
                opacity = float(value)
            else:
                start = int(value)
        except ValueError:
            raise typer.BadParameter(
                f"{text!r}: {key}={value!r} is not a number.", param_hint="INPUT"
            ) from None
        if key == "opacity" and not 0.0 <= opacity <= 1.0:
            raise typer.BadParameter(f"{text!r}: opacity={value} must be from 0 to 1.", param_hint="INPUT")
        if key == "start" and start < 0:
            raise typer.BadParameter(f"{text!r}: start={value} must be 0 or more.", param_hint="INPUT")
    return Path(match["file"]), (int(match["x"]), int(match["y"])), opacity, start


@app.command("compose", epilog=COMPOSE_EPILOG)
def compose(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="A scene file (.toml, layers pointing at clips or stills), or "
            "FILE[@X,Y[:opacity=O,start=S]] per layer, bottom first.",
            metavar="INPUT...",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The composite to write.")],
    fps: Annotated[
        float | None,
        typer.Option(
            "--fps",
            help="Output frame rate; clips at other rates are resampled by nearest frame. Without it, clips "
            "with different rates are refused.",
            min=0.001,
        ),
    ] = None,
    loop: Annotated[
        bool,
        typer.Option(
            "--loop/--hold", help="A clip shorter than the output starts over, or holds its last frame."
        ),
    ] = False,
    width: Annotated[
        int | None,
        typer.Option("--width", help="Canvas width (default: reach every layer's right edge).", min=1),
    ] = None,
    height: Annotated[
        int | None,
        typer.Option("--height", help="Canvas height (default: reach every layer's bottom edge).", min=1),
    ] = None,
    frames: Annotated[
        int | None, typer.Option("--frames", help="Output frames (default: the longest clip).", min=1)
    ] = None,
    background: Annotated[
        str,
        typer.Option(
            "--background",
            metavar="COLOR",
            help="'transparent' (the output keeps alpha) or a colour (#rrggbb, r,g,b, a name) to "
            "composite onto.",
        ),
    ] = "transparent",
    format: FormatOpt = None,
    quality: QualityOpt = None,
    lossless: LosslessOpt = None,
    alpha_mode: AlphaModeOpt = AlphaModeChoice.straight,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Composite RGBA clips and stills (straight-alpha "over", in float, with correct output alpha)."""
    from dataclasses import replace

    from layeranim.scene import (
        compose_scene,
        composite,
        conform_fps,
        inline_canvas,
        load_scene,
        read_layer_clip,
    )
    from layeranim.scene.model import parse_background
    from layeranim.video_io import check_output, write_video

    # 1. Validate: inputs, then the output, before reading any frame.
    repeat = "loop" if loop else "hold"
    scene_inputs = [item for item in inputs if item.lower().endswith(".toml")]
    if scene_inputs and len(inputs) > 1:
        raise UsageError("give one scene file, or FILE@X,Y inputs; not both.")
    parsed = [parse_input_spec(item) for item in inputs] if not scene_inputs else []
    for path, *_ in parsed:
        if not path.exists():
            raise UsageError(f"INPUT {str(path)!r} does not exist; give an RGBA clip or still.")
    canvas_background = parse_background(background, where="--background")
    check_output(output, format=format, overwrite=overwrite)

    # 2. Read and composite.
    if scene_inputs:
        scene = load_scene(scene_inputs[0])
        if width is not None or height is not None or frames is not None or background != "transparent":
            canvas = scene.canvas
            scene = replace(
                scene,
                canvas=replace(
                    canvas,
                    width=width or canvas.width,
                    height=height or canvas.height,
                    frames=frames or canvas.frames,
                    background=canvas_background if background != "transparent" else canvas.background,
                ),
            )
        with progress_bar("compose", None, quiet) as update:
            frames_fhwc = compose_scene(scene, fps=fps, repeat=repeat, progress=update)  # type: ignore[arg-type]
        out_fps = fps if fps is not None else scene.canvas.fps
        layers = [layer.name for layer in scene.layers if layer.visible]
    else:
        clips = [
            read_layer_clip(path, position=position, opacity=opacity, start=start, name=path.name)
            for path, position, opacity, start in parsed
        ]
        clips, out_fps = conform_fps(clips, fps)
        canvas = inline_canvas(
            clips, out_fps, width=width, height=height, frames=frames, background=canvas_background
        )
        with progress_bar("compose", canvas.frames, quiet) as update:
            frames_fhwc = composite(
                clips,
                width=canvas.width,
                height=canvas.height,
                frames=canvas.frames,
                background=canvas.background,
                repeat=repeat,  # type: ignore[arg-type]
                progress=update,
            )
        layers = [clip.name for clip in clips]

    # 3. Write and report.
    info = write_video(
        output,
        frames_fhwc,
        out_fps,
        format=format,
        quality=quality,
        lossless=lossless,
        alpha_mode=alpha_mode.value,  # type: ignore[arg-type]
        overwrite=overwrite,
    )
    result: dict[str, Any] = {**info.to_dict(), "output": str(info.path), "layers": layers, "repeat": repeat}
    if json_output:
        print_json(result)
        return
    if not info.has_alpha and canvas_background is None:
        note("warning: the written file stores no alpha channel.", quiet)
    typer.echo(str(info.path))
