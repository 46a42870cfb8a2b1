"""Few-step speed presets for stage two: distilled motion weights, their scheduler, steps and guidance.

| preset | motion weights | extra | scheduler | steps | guidance |
|---|---|---|---|---|---|
| `lcm` | AnimateLCM adapter | LCM LoRA at 0.8 | `LCMScheduler`, linear betas | 6 | 2.0 |
| `lightning-N` | AnimateDiff-Lightning N-step | – | `EulerDiscreteScheduler`, trailing, linear | N | 1.0 |

(N = 2, 4 or 8.)

The settings are the ones the weights' authors publish (the AnimateLCM and AnimateDiff-Lightning model
cards, as used with diffusers' `AnimateDiffPipeline`). Guidance 1.0 means no classifier-free guidance: one
UNet pass per step instead of two. A preset changes only stage two (the animation); stage one's image
keeps its own scheduler and steps. The weights come through the weights table (`weights.SPEED_SOURCES`),
downloaded into the hub cache like every other component.

Inter-Frame Attention weights are trained on top of one motion module: IFA weights whose metadata names
another motion adapter are refused (`check_ifa_weights`) unless `allow_ifa_mismatch=True`.

Wiring (done by the render layer): `preset = get_speed_preset(name)`; load stage two's adapter with
`load_speed_motion_adapter(preset, dtype=…)` instead of the spec's; `check_ifa_weights(preset, ifa, …)`
before building; after `build_motion_unet`, `apply_speed_lora(motion.unet, preset)`; on each stage-two
pipeline, `apply_speed_scheduler(pipe, preset)`, and call it with `preset.steps` and `preset.guidance`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from layeranim import weights
from layeranim.errors import StateDictMismatchError, UsageError, WeightsError

logger = logging.getLogger(__name__)

MOTION_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")


@dataclass(frozen=True)
class SpeedPreset:
    """Everything a few-step preset changes in stage two."""

    name: str
    summary: str
    motion_adapter: weights.WeightSource | Path
    scheduler_class: str  # a diffusers scheduler class name
    scheduler_overrides: dict[str, Any]  # applied on top of the base model's scheduler config
    steps: int
    guidance: float
    lora: weights.WeightSource | Path | None = None  # fused into the motion UNet's spatial layers
    lora_scale: float = 1.0
    source_note: str = ""

    def describe(self) -> str:
        """One paragraph for humans: the weights, scheduler, steps and guidance the preset uses."""
        motion = _ref(self.motion_adapter)
        lines = [
            f"speed preset {self.name}: {self.summary}",
            f"  motion weights: {motion}",
        ]
        if self.lora is not None:
            lines.append(f"  LoRA: {_ref(self.lora)} at scale {self.lora_scale:g}")
        overrides = ", ".join(f"{key}={value!r}" for key, value in self.scheduler_overrides.items())
        lines += [
            f"  scheduler: {self.scheduler_class}({overrides})",
            f"  steps: {self.steps}, guidance: {self.guidance:g}",
        ]
        if self.source_note:
            lines.append(f"  ({self.source_note})")
        return "\n".join(lines)

    def settings(self) -> dict[str, Any]:
        """The preset as plain data for a manifest."""
        return {
            "speed": self.name,
            "motion_adapter": _ref(self.motion_adapter),
            "lora": _ref(self.lora) if self.lora is not None else None,
            "lora_scale": self.lora_scale if self.lora is not None else None,
            "scheduler": self.scheduler_class,
            "scheduler_overrides": dict(self.scheduler_overrides),
            "steps": self.steps,
            "guidance": self.guidance,
        }


def _ref(source: weights.WeightSource | Path) -> str:
    return source.ref if isinstance(source, weights.WeightSource) else str(source)


_LINEAR = {"beta_schedule": "linear"}  # AnimateDiff's motion modules are trained on SD's linear betas
_TRAILING = {"timestep_spacing": "trailing", "beta_schedule": "linear"}

SPEED_PRESETS: dict[str, SpeedPreset] = {
    "lcm": SpeedPreset(
        name="lcm",
        summary="AnimateLCM: consistency-distilled motion module + LCM LoRA",
        motion_adapter=weights.SPEED_SOURCES["animatelcm_motion_adapter"],
        lora=weights.SPEED_SOURCES["animatelcm_lora"],
        lora_scale=0.8,
        scheduler_class="LCMScheduler",
        scheduler_overrides=_LINEAR,
        steps=6,
        guidance=2.0,
        source_note="AnimateLCM's model card: LoRA 0.8, 6 steps, guidance 2; 4–8 steps, guidance 1–2 work",
    ),
    **{
        f"lightning-{steps}": SpeedPreset(
            name=f"lightning-{steps}",
            summary=f"AnimateDiff-Lightning, distilled for {steps} steps",
            motion_adapter=weights.SPEED_SOURCES[f"lightning_{steps}step"],
            scheduler_class="EulerDiscreteScheduler",
            scheduler_overrides=_TRAILING,
            steps=steps,
            guidance=1.0,
            source_note="AnimateDiff-Lightning's model card: Euler, trailing timesteps, linear betas, no CFG",
        )
        for steps in (2, 4, 8)
    },
}


def get_speed_preset(name: str) -> SpeedPreset:
    """The preset called `name` (`lcm`, `lightning-2`, `lightning-4`, `lightning-8`)."""
    key = str(name).strip().lower()
    if key not in SPEED_PRESETS:
        raise UsageError(f"speed {name!r} is not a speed preset; use one of {', '.join(SPEED_PRESETS)}.")
    return SPEED_PRESETS[key]


# ---------------------------------------------------------------------------------------------------
# Scheduler.


def speed_scheduler(preset: SpeedPreset, base_config: Any) -> Any:
    """The preset's scheduler, built from the base model's scheduler config plus the preset's overrides."""
    import diffusers

    scheduler_class = getattr(diffusers, preset.scheduler_class)
    return scheduler_class.from_config(base_config, **preset.scheduler_overrides)


def apply_speed_scheduler(pipe: Any, preset: SpeedPreset) -> Any:
    """Swap a stage-two pipeline's scheduler for the preset's (built from the one it has); returns `pipe`."""
    pipe.scheduler = speed_scheduler(preset, pipe.scheduler.config)
    return pipe


# ---------------------------------------------------------------------------------------------------
# Motion weights.


def load_motion_weights(
    ref: str | Path | weights.WeightSource,
    *,
    dtype: torch.dtype | None = None,
    config: dict[str, Any] | None = None,
) -> Any:
    """A `MotionAdapter` from a diffusers folder/repo, a diffusers-keyed state-dict file (Lightning's
    `*_diffusers.safetensors`), or an original AnimateDiff motion module (converted by `components`).

    A diffusers-keyed file carries no config: `config` (MotionAdapter kwargs) defaults to diffusers'
    `MotionAdapter()` defaults, which are the SD1.5 AnimateDiff v2 layout every distilled module uses.
    """
    from diffusers import MotionAdapter

    from layeranim.render.components import load_motion_adapter, read_motion_module

    path = weights.resolve(ref, allow_patterns=("config.json", "diffusion_pytorch_model.safetensors"))
    if path.is_dir():
        return load_motion_adapter(path, dtype=dtype)
    if path.suffix not in MOTION_FILE_SUFFIXES:
        raise UsageError(
            f"motion weights {path} are a {path.suffix or 'suffix-less'} file; give a MotionAdapter folder "
            f"or one of {', '.join(MOTION_FILE_SUFFIXES)}."
        )
    state_dict = read_motion_module(path)
    if any("temporal_transformer" in key for key in state_dict):  # AnimateDiff's own layout
        return load_motion_adapter(path, dtype=dtype)
    adapter = MotionAdapter(**(config or {}))
    layout = f"MotionAdapter({config})" if config else "the default (SD1.5 AnimateDiff v2) MotionAdapter"
    try:
        result = adapter.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # mis-shaped tensors
        first = str(exc).strip().splitlines()[-1].strip()
        raise StateDictMismatchError(f"motion weights {path} do not fit {layout}: {first}") from exc
    missing = [key for key in result.missing_keys if not key.endswith("pos_embed.pe")]  # computed buffers
    if missing or result.unexpected_keys:
        raise StateDictMismatchError(
            f"motion weights {path} do not fit {layout}: missing {missing[:3]}, unexpected "
            f"{result.unexpected_keys[:3]}."
        )
    if dtype is not None:
        adapter = adapter.to(dtype)
    return adapter.eval().requires_grad_(False)


def load_speed_motion_adapter(
    preset: SpeedPreset, *, dtype: torch.dtype | None = None, config: dict[str, Any] | None = None
) -> Any:
    """The preset's motion adapter (downloaded into the hub cache when needed)."""
    return load_motion_weights(preset.motion_adapter, dtype=dtype, config=config)


def apply_speed_lora(motion_unet: torch.nn.Module, preset: SpeedPreset) -> list[Any]:
    """Fuse the preset's LoRA (AnimateLCM's LCM LoRA) into the motion UNet's spatial layers; [] if none.

    Call after `build_motion_unet`: the LoRA then changes stage two only. Its fused weights sit under
    LayerDiffuse's and IFA's processors, which call the same projections.
    """
    if preset.lora is None:
        return []
    from layeranim.community import LoraRef, load_loras

    path = weights.resolve(preset.lora)
    return load_loras(motion_unet, None, [LoraRef(str(path), preset.lora_scale)], "sd15")


# ---------------------------------------------------------------------------------------------------
# IFA weights and the motion module they were trained with.


def read_ifa_motion_adapter(ifa_weights: Path) -> str:
    """The motion adapter an IFA weights file records in its metadata ("" when it records none)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(ifa_weights), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
    except (OSError, SafetensorError) as exc:
        raise WeightsError(
            f"cannot read IFA weights {ifa_weights} ({exc}); pass a file layeranim wrote."
        ) from exc
    return metadata.get("motion_adapter", "")


def _names_source(recorded: str, source: weights.WeightSource | Path) -> bool:
    """Whether a recorded adapter (`owner/name@commit[/file]` or a path) is `source`."""
    if isinstance(source, Path):
        return Path(recorded).expanduser().resolve() == source.expanduser().resolve()
    repo, _, rest = recorded.partition("@")
    inner = rest.partition("/")[2]
    if repo != source.repo_id and not recorded.startswith(source.repo_id + "/"):
        return False
    return (
        source.path_in_repo is None or inner == source.path_in_repo or recorded.endswith(source.path_in_repo)
    )


def check_ifa_weights(
    preset: SpeedPreset, ifa_weights: Path | None, *, allow_ifa_mismatch: bool = False
) -> None:
    """Refuse IFA weights trained with another motion adapter than the preset's, unless the user insists.

    IFA's W_Q'/W_O' learn to correct one motion module's frames; on a distilled module, sampled in a few
    steps, they were never trained and may hurt. `allow_ifa_mismatch=True` logs a warning and goes on.
    """
    if ifa_weights is None:
        return
    recorded = read_ifa_motion_adapter(ifa_weights)
    if recorded and _names_source(recorded, preset.motion_adapter):
        return
    message = (
        f"ifa_weights {str(ifa_weights)!r} were trained with motion adapter {recorded or 'unknown'!r}, but "
        f"speed preset {preset.name!r} uses {_ref(preset.motion_adapter)}. Train IFA weights with that "
        "adapter (set model.motion_adapter in the training config), drop the IFA weights, or pass "
        "allow_ifa_mismatch=True to use them anyway."
    )
    if not allow_ifa_mismatch:
        raise UsageError(message)
    logger.warning("using mismatched IFA weights on request: %s", message)
