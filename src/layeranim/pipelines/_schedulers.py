"""The samplers layeranim offers, by name, built from a pipeline's own scheduler config."""

from __future__ import annotations

from typing import Any

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from layeranim.errors import UsageError

SCHEDULERS: dict[str, str] = {
    "euler_a": "Euler ancestral (the default; what LayerDiffuse's demos use)",
    "ddim": "DDIM (deterministic given the seed)",
    "dpmpp_2m": "DPM++ 2M (Karras sigmas)",
}
DEFAULT_SCHEDULER = "euler_a"


def make_scheduler(name: str, config: Any) -> SchedulerMixin:
    """Build the scheduler called `name` from another scheduler's config (betas, timestep spacing …)."""
    key = name.lower().replace("-", "_").replace("+", "p")
    if key == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if key == "ddim":
        return DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False)
    if key == "dpmpp_2m":
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True
        )
    raise UsageError(f"--scheduler {name!r} is not one of {', '.join(SCHEDULERS)}; pick one of those.")
