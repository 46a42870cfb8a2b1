"""The samplers layeranim offers, and the noise schedule each stage samples with.

Two stages, two training schedules:

- Stage one (LayerDiffuse) keeps the base model's own schedule: SD1.5 and SDXL were trained with
  `scaled_linear` betas from 0.00085 to 0.012, and the LayerDiffuse weights were trained on top of them.
- Stage two (AnimateDiff motion modules + IFA) samples with AnimateDiff's training schedule: **linear**
  betas from 0.00085 to 0.012, `steps_offset=1`, `clip_sample=False` (guoyww/AnimateDiff
  `configs/training/v1/training.yaml` and `configs/inference/inference-v1/v2/v3.yaml`), with the
  `linspace` timestep spacing that every diffusers AnimateDiff example sets. With the base model's
  betas the frozen motion modules would see the wrong noise level at every timestep (1.72× off at
  t = 999, 1.41× at t = 500). IFA training noises with the same schedule (`training/objective.py`).

Default samplers, from the reference implementations:

- stage one, SD1.5: DPM++ 2M Karras, the sampler of LayerDiffuse's SD1.5 demos (and of Forge's sanity
  check settings); SDXL: DPM++ 2M SDE Karras, the sampler of LayerDiffuse's SDXL demos. Forge's README
  notes that DPM++ sometimes gives artefacts that Euler A avoids: `euler_a` stays on offer for that.
- stage two: DDIM, the sampler AnimateDiff's own inference scripts and configs use, and the one the
  diffusers AnimateDiff examples pair with the schedule above.
"""

from __future__ import annotations

from typing import Any

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from layeranim.errors import UsageError

SCHEDULERS: dict[str, str] = {
    "euler_a": "Euler ancestral (Forge's LayerDiffuse notes it avoids the artefacts DPM++ sometimes gives)",
    "ddim": "DDIM (AnimateDiff's own sampler; deterministic given the seed)",
    "dpmpp_2m": "DPM++ 2M Karras (LayerDiffuse's SD1.5 demos)",
    "dpmpp_2m_sde_karras": "DPM++ 2M SDE Karras (LayerDiffuse's SDXL demos)",
}
# Other spellings people type for the same samplers (A1111 / ComfyUI names).
SCHEDULER_ALIASES: dict[str, str] = {
    "dpmpp_2m_karras": "dpmpp_2m",
    "dpmpp_2m_sde": "dpmpp_2m_sde_karras",
    "euler_ancestral": "euler_a",
}
DEFAULT_IMAGE_SCHEDULERS: dict[str, str] = {"sd15": "dpmpp_2m", "sdxl": "dpmpp_2m_sde_karras"}
DEFAULT_VIDEO_SCHEDULER = "ddim"
DEFAULT_SCHEDULER = DEFAULT_IMAGE_SCHEDULERS["sd15"]

SCHEDULES = ("animatediff", "base")
DEFAULT_VIDEO_SCHEDULE = "animatediff"
# AnimateDiff's training/inference noise schedule (configs/training/v1/training.yaml) and the timestep
# spacing of diffusers' AnimateDiff examples.
ANIMATEDIFF_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "steps_offset": 1,
    "clip_sample": False,
    "timestep_spacing": "linspace",
}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")


def scheduler_key(name: str) -> str:
    """The canonical sampler name for `name` (case, '-' and '+' forgiven; aliases resolved)."""
    key = name.lower().replace("-", "_").replace("+", "p")
    key = SCHEDULER_ALIASES.get(key, key)
    if key not in SCHEDULERS:
        raise UsageError(f"scheduler={name!r} is not one of {', '.join(SCHEDULERS)}; pick one of those.")
    return key


def sampler_help() -> str:
    """One paragraph naming every sampler, each stage's default and why (for help texts)."""
    names = "; ".join(f"{name}: {text}" for name, text in SCHEDULERS.items())
    return (
        f"Samplers: {names}. Defaults: stage one {DEFAULT_IMAGE_SCHEDULERS['sd15']} for SD1.5 and "
        f"{DEFAULT_IMAGE_SCHEDULERS['sdxl']} for SDXL (LayerDiffuse's demos), stage two "
        f"{DEFAULT_VIDEO_SCHEDULER} (AnimateDiff's own), on AnimateDiff's linear training betas."
    )


def check_stage_settings(
    image_scheduler: str | None, video_scheduler: str | None, video_schedule: str = DEFAULT_VIDEO_SCHEDULE
) -> None:
    """Raise `UsageError` early for an unknown sampler or schedule (before any model loads)."""
    for name in (image_scheduler, video_scheduler):
        if name is not None:
            scheduler_key(name)
    schedule_overrides(video_schedule)


def make_scheduler(name: str, config: Any, **overrides: Any) -> SchedulerMixin:
    """Build the sampler called `name` from another scheduler's config (betas, timestep spacing …).

    `overrides` replace config entries (e.g. `beta_schedule="linear"`), as `from_config(config, **kw)`.
    """
    key = scheduler_key(name)
    if key == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(config, **overrides)
    if key == "ddim":
        return DDIMScheduler.from_config(
            config, **{"clip_sample": False, "set_alpha_to_one": False, **overrides}
        )
    algorithm = "dpmsolver++" if key == "dpmpp_2m" else "sde-dpmsolver++"
    return DPMSolverMultistepScheduler.from_config(
        config, **{"algorithm_type": algorithm, "solver_order": 2, "use_karras_sigmas": True, **overrides}
    )


def schedule_overrides(
    schedule: str = DEFAULT_VIDEO_SCHEDULE,
    *,
    beta_schedule: str | None = None,
    timestep_spacing: str | None = None,
) -> dict[str, Any]:
    """The config entries a stage-two scheduler is built with: AnimateDiff's schedule or the base model's.

    `schedule="animatediff"` (default) is AnimateDiff's training schedule; `"base"` keeps the base model's
    (for motion modules that were trained on it). `beta_schedule` / `timestep_spacing` override on top.
    """
    if schedule not in SCHEDULES:
        raise UsageError(f"schedule {schedule!r} is not one of {', '.join(SCHEDULES)}; pick one of those.")
    if beta_schedule is not None and beta_schedule not in BETA_SCHEDULES:
        raise UsageError(
            f"beta_schedule {beta_schedule!r} is not one of {', '.join(BETA_SCHEDULES)}; pick one of those."
        )
    if timestep_spacing is not None and timestep_spacing not in TIMESTEP_SPACINGS:
        raise UsageError(
            f"timestep_spacing {timestep_spacing!r} is not one of {', '.join(TIMESTEP_SPACINGS)}; "
            "pick one of those."
        )
    overrides = dict(ANIMATEDIFF_SCHEDULE) if schedule == "animatediff" else {}
    if beta_schedule is not None:
        overrides["beta_schedule"] = beta_schedule
    if timestep_spacing is not None:
        overrides["timestep_spacing"] = timestep_spacing
    return overrides


def default_scheduler(stage: str, family: str = "sd15") -> str:
    """The default sampler of a stage ("image" or "video") for a model family (see the module docstring)."""
    if stage == "video":
        return DEFAULT_VIDEO_SCHEDULER
    return DEFAULT_IMAGE_SCHEDULERS.get(family, DEFAULT_SCHEDULER)


def make_image_scheduler(
    base_config: Any, name: str | None = None, *, family: str = "sd15"
) -> SchedulerMixin:
    """Stage one's sampler on the base model's own schedule (`name=None`: the family's default)."""
    return make_scheduler(name or default_scheduler("image", family), base_config)


def make_video_scheduler(
    base_config: Any,
    name: str | None = None,
    *,
    schedule: str = DEFAULT_VIDEO_SCHEDULE,
    beta_schedule: str | None = None,
    timestep_spacing: str | None = None,
) -> SchedulerMixin:
    """Stage two's sampler (`name=None`: DDIM) on AnimateDiff's training schedule, or the overridden one."""
    overrides = schedule_overrides(schedule, beta_schedule=beta_schedule, timestep_spacing=timestep_spacing)
    return make_scheduler(name or DEFAULT_VIDEO_SCHEDULER, base_config, **overrides)


def scheduler_facts(name: str, scheduler: SchedulerMixin) -> dict[str, Any]:
    """What a manifest / `--json` records about one stage's sampler and its noise schedule."""
    config = scheduler.config
    return {
        "sampler": scheduler_key(name),
        "class": type(scheduler).__name__,
        "beta_schedule": config.get("beta_schedule"),
        "beta_start": config.get("beta_start"),
        "beta_end": config.get("beta_end"),
        "timestep_spacing": config.get("timestep_spacing"),
        "steps_offset": config.get("steps_offset"),
        "karras_sigmas": bool(config.get("use_karras_sigmas", False)),
        "prediction_type": config.get("prediction_type"),
    }


def stage_scheduler_facts(
    base_config: Any,
    *,
    family: str = "sd15",
    image_scheduler: str | None = None,
    video_scheduler: str | None = None,
    video_schedule: str = DEFAULT_VIDEO_SCHEDULE,
    beta_schedule: str | None = None,
    timestep_spacing: str | None = None,
) -> dict[str, dict[str, Any]]:
    """`{"image": facts, "video": facts}` for the schedulers the two stages would build (no weights)."""
    image_name = image_scheduler or default_scheduler("image", family)
    video_name = video_scheduler or DEFAULT_VIDEO_SCHEDULER
    video = make_video_scheduler(
        base_config,
        video_name,
        schedule=video_schedule,
        beta_schedule=beta_schedule,
        timestep_spacing=timestep_spacing,
    )
    return {
        "image": scheduler_facts(image_name, make_image_scheduler(base_config, image_name, family=family)),
        "video": {**scheduler_facts(video_name, video), "schedule": video_schedule},
    }
