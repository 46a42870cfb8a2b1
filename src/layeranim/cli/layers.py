"""`layeranim layers`: render a multi-layer scene file; `layeranim layers init`: a scene from a PSD.

`layeranim layers SCENE.toml -o OUT/` is short for `layeranim layers render SCENE.toml -o OUT/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from layeranim.cli._common import (
    AlphaModeChoice,
    AlphaModeOpt,
    JsonOpt,
    LosslessOpt,
    OverwriteOpt,
    QualityOpt,
    QuietOpt,
    app,
    note,
    print_json,
    targets_epilog,
)
from layeranim.cli._model_options import (
    DeviceOpt,
    DtypeOpt,
    FamilyOpt,
    GuidanceOpt,
    ModelOpt,
    MotionAdapterOpt,
    NegativePromptOpt,
    PresetOpt,
    SeedOpt,
    StepsOpt,
    TransparentAttnOpt,
    TransparentDecoderOpt,
    TransparentEncoderOpt,
)
from layeranim.cli._options import (
    DecodeChunkOpt,
    FastDecodeOpt,
    IfaWeightsOpt,
    OffloadOpt,
    OptionGroup,
    SchedulerOpt,
    community_options,
    community_values,
    with_option_groups,
)
from layeranim.cli._render import quiet_third_party_logs, stage_progress, start_render
from layeranim.errors import UsageError


class _LayersGroup(typer.core.TyperGroup):
    """`layers SCENE …` runs `layers render SCENE …`; `layers init …` and `layers render …` run as named."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["render", *args]
        return super().parse_args(ctx, args)


layers_app = typer.Typer(
    cls=_LayersGroup,
    no_args_is_help=True,
    help="Multi-layer transparent video: render a scene file's layers and their composite "
    "(`layeranim layers SCENE.toml -o OUT/`), or start a scene from a PSD (`layeranim layers init`).",
    epilog="Examples:\n\n"
    "  layeranim layers scene.toml -o out/\n\n"
    "  layeranim layers scene.toml -o out/ --preset tiny --steps 2 --json\n\n"
    "  layeranim layers init poster.psd > scene.toml",
)
app.add_typer(layers_app, name="layers")

RENDER_EPILOG = """\
[bold]Examples[/bold]

  layeranim layers scene.toml -o out/

  layeranim layers render scene.toml -o out/ --format mov --seed 7 --json

  layeranim layers scene.toml -o out/ --target godot   [dim]# + out/godot/composite_frames/, .png, .tres[/dim]

OUT/ receives layers/NN-NAME.EXT (one RGBA video per layer), composite.EXT and scene.json; with --target
NAME, also the composite delivered to OUT/NAME/composite.*. Re-running renders again only the layers
whose inputs or parameters changed.
"""


@layers_app.command("render", epilog=RENDER_EPILOG + "\n" + targets_epilog())
@with_option_groups(community=OptionGroup(community_options(animate=True), community_values))
def render(
    scene_file: Annotated[
        Path, typer.Argument(help="The scene file (TOML: [canvas] and [[layer]] tables).", metavar="SCENE")
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="The output folder (OUT/): layers/, composite.EXT, scene.json."),
    ],
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="Format of every written clip: webm (VP9 alpha), webm-vp8, mov (ProRes 4444), mov-xq, "
            "mov-png, mkv (FFV1), apng, webp, gif, png-seq.",
        ),
    ] = "webm",
    negative_prompt: NegativePromptOpt = "",
    seed: SeedOpt = None,
    steps: StepsOpt = 25,
    guidance: GuidanceOpt = 7.5,
    image_steps: Annotated[
        int, typer.Option("--image-steps", help="Denoising steps of stage one (prompt layers).", min=1)
    ] = 25,
    image_guidance: Annotated[
        float, typer.Option("--image-guidance", help="Guidance scale of stage one.", min=0.0)
    ] = 7.0,
    scheduler: SchedulerOpt = None,
    motion_adapter: MotionAdapterOpt = None,
    ifa_weights: IfaWeightsOpt = None,
    fast_decode: FastDecodeOpt = False,
    decode_chunk_size: DecodeChunkOpt = 4,
    preset: PresetOpt = None,
    model: ModelOpt = None,
    family: FamilyOpt = "sd15",
    transparent_attn: TransparentAttnOpt = None,
    transparent_encoder: TransparentEncoderOpt = None,
    transparent_decoder: TransparentDecoderOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    offload: OffloadOpt = "none",
    quality: QualityOpt = None,
    lossless: LosslessOpt = None,
    alpha_mode: AlphaModeOpt = AlphaModeChoice.straight,
    loop: Annotated[
        bool,
        typer.Option(
            "--loop/--hold", help="A clip shorter than the canvas starts over, or holds its last frame."
        ),
    ] = False,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            metavar="NAME",
            help="Also deliver the composite to a tool: one name chooses the formats, settings and side "
            "files (table below), written as OUT/NAME/composite.*.",
            show_default=False,
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    community: dict[str, Any],
) -> None:
    """Render every layer of a scene (stage two for layers with motion) and their composite into OUT/."""
    from layeranim.render.api import open_session, resolve_seed
    from layeranim.render.outputs import session_sources
    from layeranim.render.settings import ModelSettings, SamplingSettings, with_speed_defaults
    from layeranim.scene import SceneSettings, load_scene, render_scene
    from layeranim.scene.model import scene_ifa_weights
    from layeranim.scene.outputs import check_scene_outputs, check_scene_renderable, read_scene_json

    # 1. Validate the scene and the outputs before loading any model.
    scene = load_scene(scene_file)
    check_scene_renderable(scene)
    # A --speed preset's steps and guidance where --steps/--guidance are at their defaults (as generate).
    sampling = with_speed_defaults(SamplingSettings(steps=steps, guidance=guidance), community["speed"])
    steps, guidance = sampling.steps, sampling.guidance
    settings = SceneSettings(
        steps=steps,
        guidance=guidance,
        image_steps=image_steps,
        image_guidance=image_guidance,
        negative_prompt=negative_prompt,
        scheduler=scheduler,
        tta=not fast_decode,
        decode_chunk_size=decode_chunk_size,
        format=format,
        quality=quality,
        lossless=lossless,
        alpha_mode=alpha_mode.value,
        repeat="loop" if loop else "hold",
        target=target,
    )
    check_scene_outputs(scene, output, settings, overwrite=overwrite)
    layer_ifa = scene_ifa_weights(scene)
    if ifa_weights is not None and layer_ifa is not None and ifa_weights.resolve() != layer_ifa.resolve():
        raise UsageError(
            f"--ifa-weights {str(ifa_weights)!r} differs from the scene's ifa_weights {str(layer_ifa)!r}; "
            "give one of them."
        )
    ifa = ifa_weights if ifa_weights is not None else layer_ifa
    # The base seed for layers without `seed`: the given one, else the previous run's (so unchanged
    # layers are skipped), else a fresh random one (recorded in scene.json).
    previous = read_scene_json(output)
    base_seed = seed
    if base_seed is None and previous is not None and isinstance(previous.get("base_seed"), int):
        base_seed = previous["base_seed"]
    base_seed = resolve_seed(base_seed)
    needs_models = any(layer.dynamic or layer.prompt is not None for layer in scene.layers)
    session = open_session(
        ModelSettings(
            preset=preset,
            family=family,
            base=model,
            transparent_attn=transparent_attn,
            transparent_encoder=transparent_encoder,
            transparent_decoder=transparent_decoder,
            motion_adapter=motion_adapter,
            device=device,
            dtype=dtype,
            scheduler=scheduler,
            offload=offload,
            ifa_weights=ifa,
            **community,
        ),
        will_animate=any(layer.dynamic for layer in scene.layers),
        image_stage=any(layer.prompt is not None for layer in scene.layers),
    )
    if needs_models:
        quiet_third_party_logs()
        start_render(session, quiet)

    # 2. Render (the session loads its models on first use, and not at all if every layer is unchanged).
    with stage_progress(quiet) as progress:
        result = render_scene(
            scene,
            session,
            output,
            settings=settings,
            base_seed=base_seed,
            models=session_sources(session),
            overwrite=overwrite,
            progress=progress,
        )

    # 3. Report.
    if json_output:
        print_json(result.to_json())
        return
    for report in result.layers:
        note(f"{report.status:>8}  {report.file}", quiet)
    typer.echo(str(result.composite))
    for path in result.delivered:
        typer.echo(str(path))


INIT_EPILOG = """\
[bold]Examples[/bold]

  layeranim layers init poster.psd > scene.toml

  layeranim layers init poster.psd -o scene.toml --images-dir poster-layers/
"""


@layers_app.command("init", epilog=INIT_EPILOG)
def init(
    psd: Annotated[Path, typer.Argument(help="A Photoshop document (.psd/.psb).", metavar="PSD")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the scene file here instead of printing it on stdout."),
    ] = None,
    images_dir: Annotated[
        Path | None,
        typer.Option(
            "--images-dir",
            help="Where the layers' RGBA PNGs go (default: PSDNAME-layers/ beside the PSD).",
        ),
    ] = None,
    frames: Annotated[int, typer.Option("--frames", help="Frames of the canvas.", min=1)] = 16,
    fps: Annotated[float, typer.Option("--fps", help="Frames per second of the canvas.", min=0.001)] = 8.0,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a scene file from a PSD's pixel layers (names, positions, sizes; each saved as an RGBA PNG).

    Every layer starts static; add `motion = "…"` (and a `region`) to the layers that should move. The
    image paths are relative to the scene file, which is assumed to sit beside the PSD unless -o says.
    """
    from layeranim.errors import OutputExistsError
    from layeranim.scene import scene_from_psd
    from layeranim.video_io import atomic_output

    if output is not None and output.exists() and not overwrite:
        raise OutputExistsError(f"{str(output)!r} exists; pass --overwrite to replace it.")
    result = scene_from_psd(
        psd,
        scene_dir=output.parent if output is not None else None,
        images_dir=images_dir,
        frames=frames,
        fps=fps,
        overwrite=overwrite,
    )
    for skipped in result.skipped:
        note(f"skipped {skipped}: not a pixel layer", quiet)
    note(f"wrote {len(result.images)} layer image(s) to {result.images[0].parent}", quiet)
    if output is None:
        typer.echo(result.toml, nl=False)
        return
    with atomic_output(output, overwrite) as temp:
        temp.write_text(result.toml, encoding="utf-8")
    typer.echo(str(output))
