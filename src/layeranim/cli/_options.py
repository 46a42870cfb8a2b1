"""Option groups shared by the rendering commands, declared once.

A group is a list of Typer options plus a builder that turns their values into one typed settings
object of `layeranim.render`. `with_option_groups(models=..., sampling=...)` adds every option of each
group to a command's signature (what Typer reads) and calls the command with the built objects:

    @app.command("animate")
    @with_option_groups(models=clip_model_options(), sampling=SAMPLING, output_settings=OUTPUT)
    def animate(image: ..., prompt: ..., *, models: ModelSettings, sampling: SamplingSettings, ...): ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from layeranim.cli._common import (
    AlphaModeChoice,
    AlphaModeOpt,
    FormatOpt,
    HtmlOpt,
    LoopOpt,
    LosslessOpt,
    OverwriteOpt,
    PreviewOpt,
    QualityOpt,
    TargetOpt,
)
from layeranim.cli._model_options import (
    AllowIfaMismatchOpt,
    ClipSkipOpt,
    DeviceOpt,
    DtypeOpt,
    EmbeddingOpt,
    FamilyOpt,
    GuidanceOpt,
    HeightOpt,
    LoraOpt,
    ModelOpt,
    MotionAdapterOpt,
    MotionLoraOpt,
    NegativePromptOpt,
    PresetOpt,
    SeedOpt,
    SpeedOpt,
    StepsOpt,
    TransparentAttnOpt,
    TransparentDecoderOpt,
    TransparentEncoderOpt,
    WidthOpt,
)
from layeranim.render.settings import ModelSettings, OutputSettings, SamplingSettings

FastDecodeOpt = Annotated[
    bool,
    typer.Option(
        "--fast-decode",
        help="Decode alpha with one pass of the transparency decoder instead of its 8-way flip/rotate "
        "augmentation (8× cheaper, slightly rougher edges).",
    ),
]
# The defaults and their reasons are the library's (pipelines/_schedulers.py; tests check this text
# against it). Written out here so that `--help` imports no diffusers.
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="Sampler: dpmpp_2m (DPM++ 2M Karras), dpmpp_2m_sde_karras (DPM++ 2M SDE Karras), ddim or "
        "euler_a. Default per stage, as the reference implementations sample: stage one dpmpp_2m on SD1.5 "
        "and dpmpp_2m_sde_karras on SDXL (LayerDiffuse's demos), stage two ddim (AnimateDiff's own). "
        "Given, it sets both stages (stage two's unless --video-scheduler). euler_a avoids the artefacts "
        "DPM++ sometimes gives (Forge's LayerDiffuse notes).",
    ),
]
VideoSchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--video-scheduler",
        help="Stage two's sampler, if not --scheduler's (default ddim, AnimateDiff's own sampler).",
    ),
]
VideoScheduleOpt = Annotated[
    str,
    typer.Option(
        "--video-schedule",
        metavar="animatediff|base",
        help="Stage two's noise schedule: animatediff (its training betas, linear 0.00085-0.012; the "
        "motion modules were trained on it) or base (the base model's scaled_linear, for motion modules "
        "trained on that).",
    ),
]
MotionNormOpt = Annotated[
    str,
    typer.Option(
        "--motion-norm",
        metavar="original|diffusers",
        help="Motion-module GroupNorm: original (as AnimateDiff's checkpoints were trained: per frame in "
        "the temporal layers, across frames in v1's spatial ResNets) or diffusers (for adapters trained "
        "with diffusers).",
    ),
]
FramesOpt = Annotated[
    int,
    typer.Option(
        "--frames",
        help="Frames to generate, from 2 (256 and more work). Beyond the motion module's trained window "
        "(--context-length, 16) the clip is denoised in overlapping windows that each see the still.",
    ),
]
BasePositionOpt = Annotated[
    str,
    typer.Option(
        "--base-position",
        metavar="middle|start|end|N",
        help="Where the still sits in the clip: middle (the paper's), start (animate forward from it), "
        "end, or a frame index N (0-based; negative counts from the end). That frame is the still, byte "
        "for byte.",
    ),
]
SeamlessOpt = Annotated[
    bool,
    typer.Option(
        "--seamless",
        help="A seamless loop: context windows wrap around the end so the last frame leads into the "
        "first (needs 3+ frames). Not --loop N, which sets how often an animated image plays.",
    ),
]
ContextLengthOpt = Annotated[
    int | None,
    typer.Option(
        "--context-length",
        help="Frames per context window (default the motion module's trained length, 16).",
    ),
]
ContextOverlapOpt = Annotated[
    int | None,
    typer.Option("--context-overlap", help="Frames neighbouring windows share (default a quarter window)."),
]
ContextWeightingOpt = Annotated[
    str,
    typer.Option(
        "--context-weighting",
        metavar="pyramid|flat",
        help="How overlapping windows blend: pyramid (FreeNoise's weights, default) or flat.",
    ),
]
VideoFpsOpt = Annotated[float, typer.Option("--fps", help="Frames per second of the video.", min=0.001)]
IfaWeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--ifa-weights",
        help="Trained Inter-Frame Attention weights (from `layeranim train`). Without them the paper's "
        "motion-module baseline runs.",
        exists=False,
    ),
]
OffloadOpt = Annotated[
    str,
    typer.Option(
        "--offload",
        help="Fit smaller GPUs: 'model' keeps each model on the CPU until it runs (little slower), "
        "'sequential' streams weights layer by layer (least memory, much slower). Default none.",
    ),
]
DecodeChunkOpt = Annotated[
    int, typer.Option("--decode-chunk-size", help="Frames decoded at once (lower it to save memory).", min=1)
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="I/N",
        help="Render only shard I of N of the batch (1-based; items with index % N == I-1), for SLURM "
        "arrays and CI matrices.",
    ),
]
AllowOutsideOpt = Annotated[
    bool,
    typer.Option(
        "--allow-outside",
        help='Batch mode: let an item\'s own "output" name a path outside the output folder (.., an '
        "absolute path, a symlink leading out). Refused without this switch.",
    ),
]
ManifestOpt = Annotated[
    bool,
    typer.Option(
        "--manifest",
        help="Also write OUTPUT.json: every parameter, the seed, model sources, versions, device/dtype and "
        "timings (batch mode always writes one per output).",
    ),
]


@dataclass(frozen=True)
class OptionGroup:
    """Options (name → (annotation, default)) and what builds one settings object from their values."""

    options: dict[str, tuple[Any, Any]]
    build: Callable[..., Any]


def community_values(**values: Any) -> dict[str, Any]:
    """The community options as `ModelSettings` keywords: repeatable options (None or a list) as tuples
    (ModelSettings parses each `REF[:SCALE]` and reference)."""
    for name in ("loras", "motion_loras", "embeddings"):
        if name in values:
            values[name] = tuple(values[name] or ())
    return values


def _model_settings(*, model: str | None = None, **values: Any) -> ModelSettings:
    return ModelSettings(base=model, **community_values(**values))


def community_options(*, animate: bool) -> dict[str, tuple[Any, Any]]:
    """LoRAs, embeddings and clip skip on the base model; `animate` adds MotionLoRAs and speed presets.

    Shared by every rendering command (`image`, `animate`, `generate`, `layers`) through `model_options`.
    """
    options: dict[str, tuple[Any, Any]] = {
        "loras": (LoraOpt, None),
        "embeddings": (EmbeddingOpt, None),
        "clip_skip": (ClipSkipOpt, None),
    }
    if animate:
        options["motion_loras"] = (MotionLoraOpt, None)
        options["speed"] = (SpeedOpt, None)
        options["allow_ifa_mismatch"] = (AllowIfaMismatchOpt, False)
    return options


def model_options(*, animate: bool) -> OptionGroup:
    """Weights, device and sampler; `animate` adds the motion adapter and the IFA weights. The community
    options (`community_options`) come with them."""
    options: dict[str, tuple[Any, Any]] = {
        "preset": (PresetOpt, None),
        "model": (ModelOpt, None),
        "family": (FamilyOpt, "sd15"),
        "transparent_attn": (TransparentAttnOpt, None),
        "transparent_encoder": (TransparentEncoderOpt, None),
        "transparent_decoder": (TransparentDecoderOpt, None),
        "device": (DeviceOpt, "auto"),
        "dtype": (DtypeOpt, "auto"),
        "offload": (OffloadOpt, "none"),
        "scheduler": (SchedulerOpt, None),
    }
    if animate:
        options["video_scheduler"] = (VideoSchedulerOpt, None)
        options["video_schedule"] = (VideoScheduleOpt, "animatediff")
        options["motion_norm"] = (MotionNormOpt, "original")
        options["motion_adapter"] = (MotionAdapterOpt, None)
        options["ifa_weights"] = (IfaWeightsOpt, None)
    options.update(community_options(animate=animate))
    return OptionGroup(options, _model_settings)


def _sampling_settings(**values: Any) -> SamplingSettings:
    return SamplingSettings(**values)


SAMPLING = OptionGroup(
    {
        "steps": (StepsOpt, 25),
        "guidance": (GuidanceOpt, 7.5),
        "width": (WidthOpt, None),
        "height": (HeightOpt, None),
        "fast_decode": (FastDecodeOpt, False),
        "decode_chunk_size": (DecodeChunkOpt, 4),
        "context_length": (ContextLengthOpt, None),
        "context_overlap": (ContextOverlapOpt, None),
        "context_weighting": (ContextWeightingOpt, "pyramid"),
    },
    _sampling_settings,
)


def _output_settings(*, alpha_mode: AlphaModeChoice | str, **values: Any) -> OutputSettings:
    mode = alpha_mode.value if isinstance(alpha_mode, AlphaModeChoice) else alpha_mode
    return OutputSettings(alpha_mode=mode, **values)


OUTPUT = OptionGroup(
    {
        "format": (FormatOpt, None),
        "quality": (QualityOpt, None),
        "lossless": (LosslessOpt, None),
        "alpha_mode": (AlphaModeOpt, AlphaModeChoice.straight),
        "loop": (LoopOpt, 0),
        "preview": (PreviewOpt, False),
        "manifest": (ManifestOpt, False),
        "overwrite": (OverwriteOpt, False),
        "target": (TargetOpt, None),
        "html": (HtmlOpt, False),
    },
    _output_settings,
)


@dataclass(frozen=True)
class ClipOptions:
    """What every clip of a run shares: its length, rate, still position, loop, negative prompt, seed, and
    the batch shard."""

    frames: int
    fps: float
    base_position: str
    seamless: bool
    negative_prompt: str
    seed: int | None
    shard: str | None
    allow_outside: bool = False

    def clip_fields(self) -> dict[str, Any]:
        """The request fields every clip of a run shares (one-off and batch requests alike)."""
        return {
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "frames": self.frames,
            "base_position": self.base_position,
            "seamless": self.seamless,
            "fps": self.fps,
        }

    def batch_fields(self) -> dict[str, Any]:
        """`clip_fields` plus what only a batch request takes (its shard, writes outside its folder)."""
        return {**self.clip_fields(), "shard": self.shard, "allow_outside": self.allow_outside}


CLIP = OptionGroup(
    {
        "frames": (FramesOpt, 16),
        "fps": (VideoFpsOpt, 8.0),
        "base_position": (BasePositionOpt, "middle"),
        "seamless": (SeamlessOpt, False),
        "negative_prompt": (NegativePromptOpt, ""),
        "seed": (SeedOpt, None),
        "shard": (ShardOpt, None),
        "allow_outside": (AllowOutsideOpt, False),
    },
    ClipOptions,
)


def with_option_groups(**groups: OptionGroup) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add each group's options to the decorated command; it receives `name=group.build(**values)`.

    The command's own parameters come first (its arguments keep their order), then the groups' options
    in the order given. Validation errors of the builders surface as the library's `UsageError`s.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = [
            param.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for name, param in inspect.signature(command, eval_str=True).parameters.items()
            if name not in groups
        ]
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
            for group in groups.values()
            for name, (annotation, default) in group.options.items()
        ]
        # The command's own options, the groups', then the reporting switches (--json, --quiet) last.
        last = [param for param in own if param.name in ("json_output", "quiet")]
        parameters = [param for param in own if param not in last] + added + last

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            for group_name, group in groups.items():
                values[group_name] = group.build(**{name: values.pop(name) for name in group.options})
            return command(**values)

        wrapper.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {param.name: param.annotation for param in parameters}
        return wrapper

    return decorate
