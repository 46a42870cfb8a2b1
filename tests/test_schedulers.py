"""Stage schedules: stage two and IFA training on AnimateDiff's linear betas, stage one on the base's."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

from layeranim.errors import UsageError
from layeranim.pipelines._schedulers import (
    SCHEDULERS,
    default_scheduler,
    make_image_scheduler,
    make_scheduler,
    make_video_scheduler,
    stage_scheduler_facts,
)

# SD1.5's own scheduler config (as the tiny preset and the real model folders carry it).
SD15_CONFIG = EulerAncestralDiscreteScheduler(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
    timestep_spacing="leading",
).config


def animatediff_betas() -> torch.Tensor:
    """guoyww/AnimateDiff training.yaml: linear betas from 0.00085 to 0.012 over 1000 steps."""
    return torch.tensor([0.00085 + (0.012 - 0.00085) * i / 999 for i in range(1000)], dtype=torch.float64)


def sd15_betas() -> torch.Tensor:
    """SD1.5: betas linear in sqrt space ("scaled_linear")."""
    roots = [0.00085**0.5 + (0.012**0.5 - 0.00085**0.5) * i / 999 for i in range(1000)]
    return torch.tensor(roots, dtype=torch.float64) ** 2


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_stage_two_samples_with_animatediff_betas(name: str) -> None:
    scheduler = make_video_scheduler(SD15_CONFIG, name)
    assert torch.allclose(scheduler.betas.double(), animatediff_betas(), atol=1e-8)
    assert scheduler.config.steps_offset == 1
    assert scheduler.config.timestep_spacing == "linspace"
    if isinstance(scheduler, DDIMScheduler):
        assert scheduler.config.clip_sample is False


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_stage_one_keeps_the_base_schedule(name: str) -> None:
    scheduler = make_image_scheduler(SD15_CONFIG, name)
    assert torch.allclose(scheduler.betas.double(), sd15_betas(), atol=1e-8)
    assert scheduler.config.timestep_spacing == "leading"


def test_the_two_schedules_differ_in_noise_level() -> None:
    """At the same t, sigma = sqrt((1 - abar) / abar) is 1.72x off at t=999 and 1.41x at t=500."""

    def sigma(betas: torch.Tensor, t: int) -> float:
        abar = torch.cumprod(1 - betas, 0)[t]
        return float(((1 - abar) / abar).sqrt())

    ratio_999 = sigma(animatediff_betas(), 999) / sigma(sd15_betas(), 999)
    ratio_500 = sigma(animatediff_betas(), 500) / sigma(sd15_betas(), 500)
    assert ratio_999 == pytest.approx(1.72, abs=0.01) and ratio_500 == pytest.approx(1.41, abs=0.01)


def test_stage_two_schedule_can_be_overridden() -> None:
    base = make_video_scheduler(SD15_CONFIG, "ddim", schedule="base")
    assert torch.allclose(base.betas.double(), sd15_betas(), atol=1e-8)
    assert base.config.timestep_spacing == "leading"
    mixed = make_video_scheduler(
        SD15_CONFIG, "euler_a", beta_schedule="scaled_linear", timestep_spacing="trailing"
    )
    assert torch.allclose(mixed.betas.double(), sd15_betas(), atol=1e-8)
    assert mixed.config.timestep_spacing == "trailing" and mixed.config.steps_offset == 1
    with pytest.raises(UsageError, match="schedule 'cosine'"):
        make_video_scheduler(SD15_CONFIG, "ddim", schedule="cosine")
    with pytest.raises(UsageError, match="timestep_spacing"):
        make_video_scheduler(SD15_CONFIG, "ddim", timestep_spacing="even")


def test_samplers_and_defaults() -> None:
    sde = make_scheduler("DPM++ 2M SDE Karras".replace(" ", "_"), SD15_CONFIG)
    assert isinstance(sde, DPMSolverMultistepScheduler)
    assert sde.config.algorithm_type == "sde-dpmsolver++" and sde.config.use_karras_sigmas
    two_m = make_scheduler("dpmpp_2m_karras", SD15_CONFIG)
    assert two_m.config.algorithm_type == "dpmsolver++" and two_m.config.use_karras_sigmas
    assert default_scheduler("image", "sd15") == "dpmpp_2m"
    assert default_scheduler("image", "sdxl") == "dpmpp_2m_sde_karras"
    assert default_scheduler("video") == "ddim"
    with pytest.raises(UsageError, match="bogus"):
        make_scheduler("bogus", SD15_CONFIG)


def test_stage_facts_name_each_stage_schedule() -> None:
    facts = stage_scheduler_facts(SD15_CONFIG, family="sd15")
    assert facts["image"]["sampler"] == "dpmpp_2m" and facts["image"]["beta_schedule"] == "scaled_linear"
    assert facts["image"]["timestep_spacing"] == "leading" and facts["image"]["karras_sigmas"] is True
    assert facts["video"]["sampler"] == "ddim" and facts["video"]["beta_schedule"] == "linear"
    assert facts["video"]["timestep_spacing"] == "linspace" and facts["video"]["schedule"] == "animatediff"
    assert (facts["video"]["beta_start"], facts["video"]["beta_end"]) == (0.00085, 0.012)
    base = stage_scheduler_facts(SD15_CONFIG, video_scheduler="euler_a", video_schedule="base")
    assert base["video"]["sampler"] == "euler_a" and base["video"]["beta_schedule"] == "scaled_linear"


def test_session_builds_each_stage_with_its_schedule(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from layeranim.render.components import ModelSpec
    from layeranim.render.session import RenderSession

    monkeypatch.setenv("LAYERANIM_HOME", str(tmp_path))
    session = RenderSession(ModelSpec.for_preset("tiny"), torch.device("cpu"), torch.float32)
    image = session.stage_one().scheduler
    video = session.stage_two().scheduler
    assert torch.allclose(image.betas.double(), sd15_betas(), atol=1e-8)
    assert torch.allclose(video.betas.double(), animatediff_betas(), atol=1e-8)
    assert isinstance(video, DDIMScheduler) and isinstance(image, DPMSolverMultistepScheduler)
    facts = session.scheduler_facts()
    assert facts["video"]["beta_schedule"] == "linear" and facts["image"]["beta_schedule"] == "scaled_linear"
    overridden = RenderSession(
        ModelSpec.for_preset("tiny"), torch.device("cpu"), torch.float32, video_schedule="base"
    )
    overridden._components, overridden._motion = session._components, session._motion  # reuse the models
    assert torch.allclose(overridden.stage_two().scheduler.betas.double(), sd15_betas(), atol=1e-8)


def test_session_refuses_unknown_samplers_before_loading_models() -> None:
    from layeranim.render.components import ModelSpec
    from layeranim.render.session import RenderSession

    for kwargs in ({"scheduler": "bogus"}, {"video_scheduler": "lms"}, {"video_schedule": "cosine"}):
        with pytest.raises(UsageError):
            RenderSession(ModelSpec.for_preset("tiny"), torch.device("cpu"), torch.float32, **kwargs)


def test_sampler_help_names_every_sampler_and_the_defaults() -> None:
    from layeranim.pipelines._schedulers import sampler_help

    text = sampler_help()
    assert all(name in text for name in SCHEDULERS)
    assert "stage one dpmpp_2m for SD1.5" in text and "stage two ddim" in text
    assert "what LayerDiffuse's demos use" not in text
