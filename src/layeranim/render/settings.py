"""Typed settings and requests of the render API, each validated once, when it is built.

Three settings groups are shared by the requests:

- `ModelSettings`: which weights (a preset, or per-component references), where they run (device,
  dtype, offload), the sampler and the Inter-Frame Attention weights.
- `SamplingSettings`: steps, guidance, size and decoding of a render (plus stage one's own steps and
  guidance for `generate`).
- `OutputSettings`: how a clip is written (format, quality, alpha mode, loop), what is written beside it
  (preview, manifest), and whether existing files may be replaced.

A request says what to render and where: `ImageRequest` (stage one), `AnimateRequest` (stage two from
an RGBA still or a latent sidecar), `GenerateRequest` (both stages) and `BatchRequest` (a batch file of
either). Bad values raise `UsageError` naming the Python argument (`frames=1`). This module imports
neither torch nor diffusers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from layeranim import safety
from layeranim.errors import UsageError

FAMILIES = ("sd15", "sdxl")  # weights.FAMILIES (tested equal; weights imports huggingface_hub)
PRESETS = ("tiny",)
DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")
OFFLOAD_MODES = ("none", "model", "sequential")
ALPHA_MODES = ("straight", "premultiplied")
BATCH_KINDS = ("prompts", "inputs")
BASE_POSITIONS = ("middle", "start", "end")  # pipelines.context_windows.BASE_POSITIONS (tested equal)
CONTEXT_WEIGHTINGS = ("flat", "pyramid")  # pipelines.context_windows.WEIGHTINGS (tested equal)
VIDEO_SCHEDULES = ("animatediff", "base")  # pipelines._schedulers.SCHEDULES (tested equal)
MOTION_NORMS = ("original", "diffusers")  # models.motion_norm.MOTION_NORM_MODES (tested equal)
SEED_LIMIT = 2**63  # seeds are 0 … 2**63-1
SPEED_CHOICES = ("lcm", "lightning-2", "lightning-4", "lightning-8")  # speed.SPEED_PRESETS (tested equal)
DEFAULT_IMAGE_STEPS = 25
DEFAULT_IMAGE_GUIDANCE = 7.0


def check_seed(seed: int | None, name: str = "seed") -> None:
    if seed is not None and not (isinstance(seed, int) and 0 <= seed < SEED_LIMIT):
        raise UsageError(f"{name}={seed!r} is out of range; use 0 … 2**63-1 (or None for a random one).")


def _check_positive_int(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name}={value!r} must be an integer of at least {minimum}.", argument=name)


def _check_number(name: str, value: float, *, minimum: float, inclusive: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value >= minimum if inclusive else value > minimum)
    if not ok:
        bound = f"at least {minimum:g}" if inclusive else f"more than {minimum:g}"
        raise UsageError(f"{name}={value!r} must be a number {bound}.", argument=name)


def _check_size(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 64:
        raise UsageError(f"{name}={value!r} must be at least 64 pixels.", argument=name)
    if value % 8:  # the VAE works on an 8× smaller latent grid
        nearest = round(value / 8) * 8
        raise UsageError(
            f"{name}={value!r} must be a multiple of 8 (and at least 64 pixels); try {name}={nearest}.",
            argument=name,
        )


DEFAULT_SIZES = {"sd15": 512, "sdxl": 1024}  # the families' training sizes: what width/height None render


def check_render(
    models: ModelSettings,
    width: int | None,
    height: int | None,
    frames: int,
    *,
    prompt: str,
    negative_prompt: str,
    decode_chunk_size: int = 4,
) -> None:
    """What can be refused without a model: non-UTF-8 prompts, and sizes over the limits or memory.

    Runs when a request is built, so these usage errors come before any weights are resolved or loaded.
    """
    safety.decode_prompt_arg(prompt, "prompt")
    safety.decode_prompt_arg(negative_prompt, "negative_prompt")
    default = 64 if models.preset == "tiny" else DEFAULT_SIZES.get(models.family, 512)
    half = models.dtype in ("fp16", "bf16")
    safety.check_render_size(
        width or default,
        height or default,
        frames,
        bytes_per_element=2 if half else 4,
        decode_chunk=decode_chunk_size,
    )


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    key = str(value).strip().lower()
    if key not in choices:
        raise UsageError(f"{name}={value!r} is not one of {', '.join(choices)}.", argument=name)
    return key


@dataclass(frozen=True)
class ModelSettings:
    """Which weights a render uses, where it runs, and how each stage samples.

    `preset="tiny"` uses random-weight miniatures that run offline in seconds (pictures are noise); any
    component reference (a local path, `owner/name`, or `owner/name/file.safetensors`) overrides the
    preset's or the family's default. `ifa_weights` is an `ifa.safetensors` from `layeranim.training`.

    Samplers (`layeranim.pipelines._schedulers`): `scheduler` None uses each stage's default (stage one
    DPM++ 2M Karras on SD1.5 and DPM++ 2M SDE Karras on SDXL, LayerDiffuse's demos; stage two DDIM,
    AnimateDiff's own); a name sets both stages, unless `video_scheduler` names stage two's.
    `video_schedule="animatediff"` samples stage two on AnimateDiff's training betas (linear 0.00085 →
    0.012), `"base"` on the base model's. `motion_norm="original"` normalises the motion modules as the
    released checkpoints were trained; `"diffusers"` as diffusers does (for adapters trained with it).
    """

    preset: str | None = None
    family: str = "sd15"
    base: str | Path | None = None
    transparent_attn: str | Path | None = None
    transparent_encoder: str | Path | None = None
    transparent_decoder: str | Path | None = None
    motion_adapter: str | Path | None = None
    device: str = "auto"
    dtype: str = "auto"
    scheduler: str | None = None
    video_scheduler: str | None = None
    video_schedule: str = "animatediff"
    motion_norm: str = "original"
    offload: str = "none"
    ifa_weights: Path | None = None
    loras: tuple[Any, ...] = ()
    motion_loras: tuple[Any, ...] = ()
    embeddings: tuple[Any, ...] = ()
    clip_skip: int | None = None
    speed: str | None = None
    allow_ifa_mismatch: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "family", _choice("family", self.family, FAMILIES))
        self._check_community()
        if self.preset is not None:
            set_(self, "preset", _choice("preset", self.preset, PRESETS))
            if self.family != "sd15":
                raise UsageError(
                    f"preset={self.preset!r} is SD1.5-shaped; drop family={self.family!r} (or drop the "
                    "preset).",
                    argument="family",
                )
        kind = str(self.device).strip().lower().split(":", 1)[0]
        if kind not in DEVICE_CHOICES:
            raise UsageError(
                f"device={self.device!r} is not a device; use one of {', '.join(DEVICE_CHOICES)}.",
                argument="device",
            )
        set_(self, "offload", _choice("offload", self.offload, OFFLOAD_MODES))
        # diffusers: only once settings are built
        from layeranim.pipelines._schedulers import SCHEDULER_ALIASES, SCHEDULERS

        for name in ("scheduler", "video_scheduler"):
            value = getattr(self, name)
            if value is None:
                continue
            key = str(value).strip().lower().replace("-", "_").replace("+", "p")
            key = SCHEDULER_ALIASES.get(key, key)
            if key not in SCHEDULERS:
                raise UsageError(
                    f"{name}={value!r} is not one of {', '.join(SCHEDULERS)}; pick one of those.",
                    argument=name,
                )
            set_(self, name, key)
        set_(self, "video_schedule", _choice("video_schedule", self.video_schedule, VIDEO_SCHEDULES))
        set_(self, "motion_norm", _choice("motion_norm", self.motion_norm, MOTION_NORMS))
        if self.ifa_weights is not None:
            set_(self, "ifa_weights", Path(self.ifa_weights))
            if not self.ifa_weights.is_file():
                raise UsageError(
                    f"ifa_weights={str(self.ifa_weights)!r} is not a file; give the ifa.safetensors that "
                    "training wrote.",
                    argument="ifa_weights",
                )

    def _check_community(self) -> None:
        """Normalise the add-ons to typed references (`LoraRef`, `EmbeddingRef`) and check the rest."""
        from layeranim.community import EmbeddingRef, LoraRef, parse_lora_ref

        set_ = object.__setattr__
        for name in ("loras", "motion_loras"):
            values = getattr(self, name)
            if isinstance(values, str | LoraRef):
                values = (values,)
            set_(self, name, tuple(v if isinstance(v, LoraRef) else parse_lora_ref(v) for v in values))
        embeddings = (
            (self.embeddings,) if isinstance(self.embeddings, str | EmbeddingRef) else self.embeddings
        )
        set_(
            self,
            "embeddings",
            tuple(e if isinstance(e, EmbeddingRef) else EmbeddingRef(str(e)) for e in embeddings),
        )
        if self.clip_skip is not None:
            _check_positive_int("clip_skip", self.clip_skip, minimum=0)
        if self.speed is not None:
            set_(self, "speed", _choice("speed", self.speed, SPEED_CHOICES))
            if self.motion_adapter is not None:
                raise UsageError(
                    f"speed={self.speed!r} brings its own motion weights; drop motion_adapter="
                    f"{str(self.motion_adapter)!r} (or drop the speed preset).",
                    argument="motion_adapter",
                )

    def spec(self) -> Any:
        """The `ModelSpec` these settings name (builds the tiny preset on first use)."""
        from layeranim.render.components import ModelSpec

        community = {"loras": self.loras, "embeddings": self.embeddings}
        overrides = {
            "base": self.base,
            "transparent_attn": self.transparent_attn,
            "transparent_encoder": self.transparent_encoder,
            "transparent_decoder": self.transparent_decoder,
            "motion_adapter": self.motion_adapter,
        }
        if self.preset is None:
            return ModelSpec(family=self.family, **overrides, **community)
        return ModelSpec.for_preset(self.preset, **overrides, **community)


@dataclass(frozen=True)
class SamplingSettings:
    """How a render samples and decodes.

    `steps`/`guidance` are stage two's (and `image` renders' own); `image_steps`/`image_guidance` are
    stage one's inside `generate` (None there: 25 and 7.0). `width`/`height` size stage one's image, or
    resize the still that `animate` starts from. `fast_decode` runs the transparency decoder once instead
    of its 8-way flip/rotate augmentation. `decode_chunk_size` frames are decoded at once.

    Clips longer than `context_length` frames (None: the motion module's trained length, 16) are
    denoised in overlapping windows that share `context_overlap` frames (None: a quarter window), their
    predictions blended with `context_weighting` "pyramid" (FreeNoise) or "flat" weights.
    """

    steps: int = 25
    guidance: float = 7.5
    width: int | None = None
    height: int | None = None
    fast_decode: bool = False
    decode_chunk_size: int = 4
    image_steps: int | None = None
    image_guidance: float | None = None
    context_length: int | None = None
    context_overlap: int | None = None
    context_weighting: str = "pyramid"

    def __post_init__(self) -> None:
        _check_positive_int("steps", self.steps)
        _check_number("guidance", self.guidance, minimum=0.0)
        _check_size("width", self.width)
        _check_size("height", self.height)
        _check_positive_int("decode_chunk_size", self.decode_chunk_size)
        if self.image_steps is not None:
            _check_positive_int("image_steps", self.image_steps)
        if self.image_guidance is not None:
            _check_number("image_guidance", self.image_guidance, minimum=0.0)
        if self.context_length is not None:
            _check_positive_int("context_length", self.context_length, minimum=2)
        if self.context_overlap is not None:
            _check_positive_int("context_overlap", self.context_overlap, minimum=0)
            length = 16 if self.context_length is None else self.context_length
            if self.context_overlap >= length:
                raise UsageError(
                    f"context_overlap={self.context_overlap} must be less than the window "
                    f"(context_length={length}); neighbouring windows share fewer frames than a window.",
                    argument="context_overlap",
                )
        object.__setattr__(
            self,
            "context_weighting",
            _choice("context_weighting", self.context_weighting, CONTEXT_WEIGHTINGS),
        )

    @property
    def tta(self) -> bool:
        """Whether the transparency decoder runs its test-time augmentation (not `fast_decode`)."""
        return not self.fast_decode


@dataclass(frozen=True)
class OutputSettings:
    """How a clip is written, and what goes beside it.

    `format` None follows the extension (webm, mov, mkv, apng, webp, gif, png-seq …); `quality` is the
    CRF of webm (0-63) or the quality of lossy webp (0-100); `lossless` None keeps the format's own mode;
    `alpha_mode` stores straight (default) or premultiplied colour; `loop` counts plays of an animated
    image (0: forever). `preview` also writes a checkerboard preview, `manifest` a JSON manifest
    (`OUTPUT.json`; batches always write one). Nothing is replaced without `overwrite=True`. `codec`
    picks mp4-stacked's codec (h264 or av1); `dither` and `alpha_threshold` tune GIF output.

    `target` names a delivery target (`layeranim.delivery.TARGETS`: web, unity, godot, sprites, premiere,
    aftereffects, resolve, apple) that chooses the formats, settings and side files; the output path is
    then a base name without extension (`out/clip` → `out/clip.webm`, `out/clip.stacked.mp4`, …), and
    `format` only picks the target's alternative video format (unity: mov; editors: mov-xq). `html`
    writes a player page beside an `mp4-stacked` output (`clip.mp4` → `clip.html`).
    """

    format: str | None = None
    quality: int | None = None
    lossless: bool | None = None
    alpha_mode: str = "straight"
    loop: int = 0
    preview: bool = False
    manifest: bool = False
    overwrite: bool = False
    codec: str | None = None
    dither: str | None = None
    alpha_threshold: int | None = None
    target: str | None = None
    html: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha_mode", _choice("alpha_mode", self.alpha_mode, ALPHA_MODES))
        _check_positive_int("loop", self.loop, minimum=0)
        if self.quality is not None:
            _check_positive_int("quality", self.quality, minimum=0)
        if self.target is not None:
            self._check_target()

    def _check_target(self) -> None:
        from layeranim.delivery.targets import target_names  # video_io: only when a target is asked for

        key = str(self.target).strip().lower()
        if key not in target_names():
            raise UsageError(
                f"target={self.target!r} is not a delivery target; choose one of "
                f"{', '.join(target_names())}.",
                argument="target",
            )
        object.__setattr__(self, "target", key)
        # The target chooses these; a value here would be silently ignored, so refuse it instead.
        chosen = {
            "quality": self.quality is not None,
            "lossless": self.lossless is not None,
            "alpha_mode": self.alpha_mode != "straight",
            "loop": self.loop != 0,
            "codec": self.codec is not None,
            "dither": self.dither is not None,
            "alpha_threshold": self.alpha_threshold is not None,
            "html": self.html,
        }
        for name, given in chosen.items():
            if given:
                value = "True" if name == "html" else repr(getattr(self, name))
                raise UsageError(
                    f"{name}={value} cannot be combined with target={key!r}: the target chooses its own "
                    "formats, settings and pages; drop one of the two.",
                    argument=name,
                )


def render_params(
    models: ModelSettings,
    sampling: SamplingSettings,
    output: OutputSettings,
    *,
    frames: int,
    fps: float,
    base_position: str | int = "middle",
    seamless: bool = False,
) -> dict[str, Any]:
    """Everything that shapes a clip's pixels and file: what manifests record and render keys hash.

    The keys are those of layeranim's earlier manifests, so re-running an old batch still skips its
    finished items; the long-clip settings (`base_position`, `seamless`, `context_*`) join them only when
    they differ from their defaults.
    """
    long_clip = {
        "base_position": base_position,
        "seamless": seamless,
        "context_length": sampling.context_length,
        "context_overlap": sampling.context_overlap,
        "context_weighting": sampling.context_weighting,
    }
    defaults = {"base_position": "middle", "seamless": False, "context_weighting": "pyramid"}
    # Stage two's sampling settings beyond `scheduler` (issue 10) enter only when they are not the defaults.
    sampling_overrides = {
        "video_scheduler": (models.video_scheduler, None),
        "video_schedule": (models.video_schedule, "animatediff"),
        "motion_norm": (models.motion_norm, "original"),
    }
    return {
        "scheduler": models.scheduler,
        **{name: value for name, (value, default) in sampling_overrides.items() if value != default},
        "steps": sampling.steps,
        "guidance": sampling.guidance,
        "image_steps": sampling.image_steps,
        "image_guidance": sampling.image_guidance,
        "width": sampling.width,
        "height": sampling.height,
        "tta": sampling.tta,
        "decode_chunk_size": sampling.decode_chunk_size,
        "format": output.format,
        "quality": output.quality,
        "lossless": output.lossless,
        "alpha_mode": output.alpha_mode,
        "loop": output.loop,
        "preview": output.preview,
        "frames": frames,
        "fps": fps,
        # Newer settings enter only when set, so earlier manifests' keys (and skips) still match.
        **{
            name: value
            for name, value in (
                ("clip_skip", models.clip_skip),
                ("codec", output.codec),
                ("dither", output.dither),
                ("alpha_threshold", output.alpha_threshold),
                ("target", output.target),
            )
            if value is not None
        },
        **{name: value for name, value in long_clip.items() if value != defaults.get(name)},
    }


def normalize_base_position(base_position: str | int) -> str | int:
    """`"middle"`/`"start"`/`"end"` (any case) or a frame index; a string of digits ("12", "-1") is an
    index, as a command line or a batch file spells it."""
    if isinstance(base_position, str):
        text = base_position.strip().lower()
        if text.lstrip("-").isdigit():
            return int(text)
        if text not in BASE_POSITIONS:
            raise UsageError(
                f"base_position={base_position!r} is not one of {', '.join(BASE_POSITIONS)} or a frame "
                "index.",
                argument="base_position",
            )
        return text
    if isinstance(base_position, bool) or not isinstance(base_position, int):
        raise UsageError(
            f"base_position={base_position!r} must be 'middle', 'start', 'end' or a frame index.",
            argument="base_position",
        )
    return base_position


def base_index(base_position: str | int, frames: int) -> int:
    """The frame that holds the still: `"middle"` (F − 1) // 2 (the paper's), `"start"` 0, `"end"` F − 1, or
    an index in 0 … F − 1 (negative ones count from the end). Beyond the clip is a `UsageError`."""
    position = normalize_base_position(base_position)
    if position == "middle":
        return (frames - 1) // 2
    if position == "start":
        return 0
    if position == "end":
        return frames - 1
    assert isinstance(position, int)
    if not -frames <= position < frames:
        raise UsageError(
            f"base_position={position} is outside the clip's frames 0..{frames - 1} (frames={frames}); pick "
            "a frame in it, or 'start', 'middle' or 'end'.",
            argument="base_position",
        )
    return position % frames


def check_clip(frames: int, fps: float, base_position: str | int = "middle", seamless: bool = False) -> None:
    """A clip's length, rate, still position and loop, checked together before any model loads."""
    _check_positive_int("frames", frames, minimum=2)
    _check_number("fps", fps, minimum=0.0, inclusive=False)
    if not isinstance(seamless, bool):
        raise UsageError(f"seamless={seamless!r} must be True or False.", argument="seamless")
    if seamless and frames < 3:
        raise UsageError(
            f"seamless=True needs frames of at least 3 to loop (frames={frames}); render more frames or "
            "drop seamless=True.",
            argument="seamless",
        )
    base_index(base_position, frames)


def _set_clip_fields(request: Any) -> None:
    """Normalise and check a request's `frames`, `fps`, `base_position` and `seamless` (frozen dataclass)."""
    object.__setattr__(request, "base_position", normalize_base_position(request.base_position))
    check_clip(request.frames, request.fps, request.base_position, request.seamless)


@dataclass(frozen=True)
class ImageRequest:
    """Stage one: `prompt` → one RGBA image at `output` (.png or .webp).

    `save_latent=True` also writes the adjusted latent as `NAME.latent.safetensors`, so an animate
    request on `output` starts exactly from it. `seed` None draws a random seed (reported back).
    """

    prompt: str
    output: Path
    negative_prompt: str = ""
    seed: int | None = None
    steps: int = 25
    guidance: float = 7.0
    width: int | None = None
    height: int | None = None
    fast_decode: bool = False
    save_latent: bool = False
    overwrite: bool = False
    models: ModelSettings = field(default_factory=ModelSettings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        check_seed(self.seed)
        SamplingSettings(steps=self.steps, guidance=self.guidance, width=self.width, height=self.height)
        check_render(
            self.models,
            self.width,
            self.height,
            1,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
        )


@dataclass(frozen=True)
class AnimateRequest:
    """Stage two: the RGBA still (or `NAME.latent.safetensors`) at `image` + `prompt` → a clip at `output`.

    Next to a PNG, its `NAME.latent.safetensors` sidecar is used when it belongs to that exact image.
    `sampling.image_steps`/`image_guidance` (stage one's) are ignored: there is no stage one here.
    `frames` may exceed the motion window (context windows, see `SamplingSettings`); the still sits at
    `base_position` ("middle", "start", "end" or a frame index); `seamless` makes the clip loop.
    """

    image: Path
    prompt: str
    output: Path
    negative_prompt: str = ""
    seed: int | None = None
    frames: int = 16
    fps: float = 8.0
    base_position: str | int = "middle"
    seamless: bool = False
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    output_settings: OutputSettings = field(default_factory=OutputSettings)
    models: ModelSettings = field(default_factory=ModelSettings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", Path(self.image))
        object.__setattr__(self, "output", Path(self.output))
        check_seed(self.seed)
        _set_clip_fields(self)
        check_render(
            self.models,
            self.sampling.width,
            self.sampling.height,
            self.frames,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            decode_chunk_size=self.sampling.decode_chunk_size,
        )
        # Stage one's steps and guidance do not apply here (one SamplingSettings may serve both kinds of
        # request); drop them so the manifest records only what shaped this clip.
        sampling = dataclasses.replace(self.sampling, image_steps=None, image_guidance=None)
        object.__setattr__(self, "sampling", with_speed_defaults(sampling, self.models.speed))

    def params(self) -> dict[str, Any]:
        return render_params(
            self.models,
            self.sampling,
            self.output_settings,
            frames=self.frames,
            fps=self.fps,
            base_position=self.base_position,
            seamless=self.seamless,
        )


@dataclass(frozen=True)
class GenerateRequest:
    """Both stages: `prompt` → a LayerDiffuse image → a clip at `output`; `save_image` keeps the image.

    `frames`, `base_position` and `seamless` as in `AnimateRequest`.
    """

    prompt: str
    output: Path
    negative_prompt: str = ""
    seed: int | None = None
    frames: int = 16
    fps: float = 8.0
    base_position: str | int = "middle"
    seamless: bool = False
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    output_settings: OutputSettings = field(default_factory=OutputSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    save_image: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        sampling = with_image_defaults(self.sampling)
        object.__setattr__(self, "sampling", with_speed_defaults(sampling, self.models.speed))
        if self.save_image is not None:
            object.__setattr__(self, "save_image", Path(self.save_image))
        check_seed(self.seed)
        _set_clip_fields(self)
        check_render(
            self.models,
            self.sampling.width,
            self.sampling.height,
            self.frames,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            decode_chunk_size=self.sampling.decode_chunk_size,
        )

    def params(self) -> dict[str, Any]:
        return render_params(
            self.models,
            self.sampling,
            self.output_settings,
            frames=self.frames,
            fps=self.fps,
            base_position=self.base_position,
            seamless=self.seamless,
        )


def with_image_defaults(sampling: SamplingSettings) -> SamplingSettings:
    """`sampling` with stage one's steps and guidance filled in (25 and 7.0) where they are None."""
    values = asdict(sampling)
    if values["image_steps"] is None:
        values["image_steps"] = DEFAULT_IMAGE_STEPS
    if values["image_guidance"] is None:
        values["image_guidance"] = DEFAULT_IMAGE_GUIDANCE
    return SamplingSettings(**values)


def with_speed_defaults(sampling: SamplingSettings, speed: str | None) -> SamplingSettings:
    """`sampling` with a speed preset's stage-two steps and guidance where they are at their defaults.

    A few-step preset samples in its own steps with its own guidance (`lightning-4`: 4 steps, guidance 1),
    so the defaults (25 steps, guidance 7.5) give way to it; any other value is the user's choice and
    wins. Stage one's `image_steps`/`image_guidance` are not the preset's and stay as they are.
    """
    if speed is None:
        return sampling
    from layeranim.speed import get_speed_preset

    preset = get_speed_preset(speed)
    defaults = SamplingSettings()
    return dataclasses.replace(
        sampling,
        steps=preset.steps if sampling.steps == defaults.steps else sampling.steps,
        guidance=preset.guidance if sampling.guidance == defaults.guidance else sampling.guidance,
    )


@dataclass(frozen=True)
class BatchRequest:
    """A batch file rendered item by item with the models loaded once.

    `kind="prompts"`: a generate batch (one prompt per line, or JSONL); `kind="inputs"`: an animate batch
    (IMAGE<TAB>PROMPT lines, or JSONL with `image`). `output` is a folder (`DIR/`) or a template with
    `{index}`, `{slug}`, `{seed}`, `{ext}`. Items without their own seed derive one from `seed` (default
    0), so a re-run skips the finished items (same manifest `render_key`). `shard="I/N"` renders only
    the items with `index % N == I - 1`. `frames`, `fps`, `base_position`, `seamless` and `negative_prompt`
    are the items' defaults (an item may set its own).
    An item's own `"output"` must stay inside the output folder (no `..`, absolute paths or symlinks
    leading out) unless `allow_outside=True`.
    `evaluate=True` measures each clip (`layeranim.evaluation.evaluate_clip`, the CLIP scorer loaded once;
    the tiny random CLIP for `preset="tiny"`) and stores the metrics in its manifest under `eval`.
    """

    file: Path | str
    kind: Literal["prompts", "inputs"]
    output: Path
    seed: int | None = None
    shard: str | None = None
    negative_prompt: str = ""
    frames: int = 16
    fps: float = 8.0
    base_position: str | int = "middle"
    seamless: bool = False
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    output_settings: OutputSettings = field(default_factory=OutputSettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    allow_outside: bool = False
    evaluate: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", _choice("kind", self.kind, BATCH_KINDS))
        if self.output_settings.target is not None:
            raise UsageError(
                f"target={self.output_settings.target!r} delivers one render; a batch writes one clip per "
                "item. Render the batch, then deliver each clip (layeranim.delivery.deliver).",
                argument="target",
            )
        check_seed(self.seed)
        _set_clip_fields(self)
        check_render(
            self.models,
            self.sampling.width,
            self.sampling.height,
            self.frames,
            prompt="",
            negative_prompt=self.negative_prompt,
            decode_chunk_size=self.sampling.decode_chunk_size,
        )
        if self.kind == "prompts":
            object.__setattr__(self, "sampling", with_image_defaults(self.sampling))
        object.__setattr__(self, "sampling", with_speed_defaults(self.sampling, self.models.speed))
        if self.shard is not None:
            from layeranim.render.batch import parse_shard

            parse_shard(self.shard)

    def params(self) -> dict[str, Any]:
        return render_params(
            self.models,
            self.sampling,
            self.output_settings,
            frames=self.frames,
            fps=self.fps,
            base_position=self.base_position,
            seamless=self.seamless,
        )
