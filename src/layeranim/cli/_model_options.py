"""Options shared by every generating command (`image`, `animate`, `generate`): weights, device, sampling.

Use them as parameter annotations; `layeranim.cli._options` groups them and builds the run's
`layeranim.render.ModelSettings` from their values.
"""

from __future__ import annotations

from typing import Annotated

import typer

# From the torch-free settings module (tested equal to render.devices / render.components / weights), so
# that defining the options imports neither torch nor the hub: every command's startup would pay for it.
from layeranim.render.settings import DEVICE_CHOICES, DTYPE_CHOICES, FAMILIES, SPEED_CHOICES

_WEIGHTS = "Weights"
_RUN = "Device and sampling"
_REF_HELP = (
    "a local file/folder, a hub repo id (owner/name) or a file in a repo (owner/name/file.safetensors)"
)

PresetOpt = Annotated[
    str | None,
    typer.Option(
        "--preset",
        help="Use a built-in model set instead of downloaded weights. 'tiny': random-weight miniatures that "
        "run offline in seconds (pictures are noise; for smoke tests).",
        rich_help_panel=_WEIGHTS,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help=f"Base model: {_REF_HELP}; a single-file SD checkpoint (.safetensors/.ckpt) also works. "
        "Default: the family's base in `layeranim models list`.",
        rich_help_panel=_WEIGHTS,
    ),
]
FamilyOpt = Annotated[
    str,
    typer.Option("--family", help=f"Model family: {' or '.join(FAMILIES)}.", rich_help_panel=_WEIGHTS),
]
TransparentAttnOpt = Annotated[
    str | None,
    typer.Option(
        "--transparent-attn", help=f"LayerDiffuse UNet weights: {_REF_HELP}.", rich_help_panel=_WEIGHTS
    ),
]
TransparentEncoderOpt = Annotated[
    str | None,
    typer.Option(
        "--transparent-encoder",
        help=f"LayerDiffuse transparency encoder: {_REF_HELP}.",
        rich_help_panel=_WEIGHTS,
    ),
]
TransparentDecoderOpt = Annotated[
    str | None,
    typer.Option(
        "--transparent-decoder",
        help=f"LayerDiffuse transparency decoder: {_REF_HELP}.",
        rich_help_panel=_WEIGHTS,
    ),
]
MotionAdapterOpt = Annotated[
    str | None,
    typer.Option(
        "--motion-adapter",
        help=f"AnimateDiff motion adapter: {_REF_HELP}; original AnimateDiff .ckpt/.safetensors motion "
        "modules are converted on load.",
        rich_help_panel=_WEIGHTS,
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help=f"Where to run: {'|'.join(DEVICE_CHOICES)} (auto: cuda > mps > cpu).",
        rich_help_panel=_RUN,
    ),
]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help=f"Precision: {'|'.join(DTYPE_CHOICES)} (auto: fp16 on CUDA and MPS, fp32 on CPU).",
        rich_help_panel=_RUN,
    ),
]
SeedOpt = Annotated[
    int | None,
    typer.Option("--seed", help="Random seed (default: a random one, printed).", min=0, rich_help_panel=_RUN),
]
StepsOpt = Annotated[
    int, typer.Option("--steps", help="Number of denoising steps.", min=1, max=1000, rich_help_panel=_RUN)
]
GuidanceOpt = Annotated[
    float,
    typer.Option(
        "--guidance", "--cfg", help="Classifier-free guidance scale (1 = off).", min=0.0, rich_help_panel=_RUN
    ),
]
NegativePromptOpt = Annotated[
    str,
    typer.Option("--negative-prompt", "-n", help="What the picture should not show.", rich_help_panel=_RUN),
]
WidthOpt = Annotated[
    int | None,
    typer.Option(
        "--width",
        help="Width in pixels, a multiple of 64 (default: 512 for sd15, 1024 for sdxl).",
        min=64,
        rich_help_panel=_RUN,
    ),
]
HeightOpt = Annotated[
    int | None,
    typer.Option(
        "--height",
        help="Height in pixels, a multiple of 64 (default: 512 for sd15, 1024 for sdxl).",
        min=64,
        rich_help_panel=_RUN,
    ),
]

_COMMUNITY = "Community models and speed"

LoraOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--lora",
        metavar="REF[:SCALE]",
        help=f"A LoRA fused into the base model before LayerDiffuse's weights (repeatable): {_REF_HELP}; "
        "diffusers/peft, Kohya and A1111 files. SCALE defaults to 1.",
        rich_help_panel=_COMMUNITY,
        show_default=False,
    ),
]
MotionLoraOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--motion-lora",
        metavar="REF[:SCALE]",
        help="A MotionLoRA (camera move) fused into the motion modules (repeatable), e.g. "
        "guoyww/animatediff-motion-lora-zoom-in:0.7.",
        rich_help_panel=_COMMUNITY,
        show_default=False,
    ),
]
EmbeddingOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--embedding",
        metavar="REF",
        help="A textual-inversion embedding (repeatable); use its token (the file's name) in the prompt, "
        "or in --negative-prompt for a negative embedding.",
        rich_help_panel=_COMMUNITY,
        show_default=False,
    ),
]
ClipSkipOpt = Annotated[
    int | None,
    typer.Option(
        "--clip-skip",
        metavar="N",
        min=0,
        help="CLIP layers to skip from the end (diffusers' count: 1 is A1111's 'clip skip 2').",
        rich_help_panel=_COMMUNITY,
        show_default=False,
    ),
]
SpeedOpt = Annotated[
    str | None,
    typer.Option(
        "--speed",
        help=f"Few-step stage two: {'|'.join(SPEED_CHOICES)} (distilled motion weights, their scheduler, "
        "steps and guidance; --steps/--guidance other than their defaults still win). Prints its choice.",
        rich_help_panel=_COMMUNITY,
        show_default=False,
    ),
]
AllowIfaMismatchOpt = Annotated[
    bool,
    typer.Option(
        "--allow-ifa-mismatch",
        help="Use --ifa-weights trained on another motion adapter than --speed's (refused otherwise).",
        rich_help_panel=_COMMUNITY,
    ),
]
