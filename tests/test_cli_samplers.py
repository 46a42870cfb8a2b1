"""Issue 10 wired: each stage's sampler and noise schedule through the CLI and the render API, recorded per
stage in `--json` and in the manifest; the stage-two overrides; the help text's defaults and reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from layeranim import render
from layeranim.cli import app
from layeranim.errors import UsageError
from layeranim.models.motion_norm import MOTION_NORM_MODES
from layeranim.pipelines._schedulers import (
    DEFAULT_IMAGE_SCHEDULERS,
    DEFAULT_VIDEO_SCHEDULER,
    SCHEDULERS,
    SCHEDULES,
)
from layeranim.render import settings
from layeranim.render.batch import manifest_path, read_manifest

FAST = [
    "--preset",
    "tiny",
    "--steps",
    "1",
    "--image-steps",
    "1",
    "--fast-decode",
    "--seed",
    "3",
    "--frames",
    "3",
]


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def generate(runner: CliRunner, out: Path, *args: str) -> dict:
    result = runner.invoke(app, ["generate", "a kite", "-o", str(out), "--manifest", "--json", *FAST, *args])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_defaults_record_each_stage_sampler_and_schedule(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "kite.webm"
    report = generate(runner, out)
    image, video = report["schedulers"]["image"], report["schedulers"]["video"]
    # Stage one: LayerDiffuse's SD1.5 sampler on the base model's betas.
    assert (image["sampler"], image["beta_schedule"], image["karras_sigmas"]) == (
        "dpmpp_2m",
        "scaled_linear",
        True,
    )
    # Stage two: DDIM on AnimateDiff's training schedule (linear 0.00085 → 0.012, linspace spacing).
    assert (video["sampler"], video["schedule"]) == ("ddim", "animatediff")
    assert (video["beta_schedule"], video["beta_start"], video["beta_end"]) == ("linear", 0.00085, 0.012)
    assert video["timestep_spacing"] == "linspace" and video["steps_offset"] == 1
    manifest = read_manifest(manifest_path(out))
    assert manifest is not None and manifest["schedulers"] == report["schedulers"]


def test_overrides_reach_the_stage_two_scheduler(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "kite.webm"
    report = generate(
        runner, out, "--scheduler", "euler_a", "--video-scheduler", "dpmpp_2m_sde", "--video-schedule", "base"
    )
    image, video = report["schedulers"]["image"], report["schedulers"]["video"]
    assert image["sampler"] == "euler_a"
    assert (video["sampler"], video["class"]) == ("dpmpp_2m_sde_karras", "DPMSolverMultistepScheduler")
    assert (video["schedule"], video["beta_schedule"]) == ("base", "scaled_linear")  # the tiny base's betas
    manifest = read_manifest(manifest_path(out))
    assert manifest is not None
    params = manifest["params"]
    assert (params["scheduler"], params["video_scheduler"], params["video_schedule"]) == (
        "euler_a",
        "dpmpp_2m_sde_karras",
        "base",
    )


def test_scheduler_alone_sets_both_stages_and_animate_reports_stage_two(
    runner: CliRunner, tmp_path: Path
) -> None:
    still = tmp_path / "s.png"
    result = runner.invoke(app, ["image", "x", "-o", str(still), "--json", "--scheduler", "ddim", *FAST[:2]])
    assert result.exit_code == 0, result.stderr
    assert set(json.loads(result.stdout)["schedulers"]) == {"image"}
    assert json.loads(result.stdout)["schedulers"]["image"]["sampler"] == "ddim"
    out = tmp_path / "a.webm"
    args = [
        "animate",
        str(still),
        "x",
        "-o",
        str(out),
        "--json",
        "--scheduler",
        "euler_a",
        "--motion-norm",
        "diffusers",
    ]
    result = runner.invoke(app, [*args, "--preset", "tiny", "--steps", "1", "--frames", "3", "--fast-decode"])
    assert result.exit_code == 0, result.stderr
    schedulers = json.loads(result.stdout)["schedulers"]
    assert set(schedulers) == {"video"}  # animate runs stage two only
    assert (schedulers["video"]["sampler"], schedulers["video"]["beta_schedule"]) == ("euler_a", "linear")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--video-scheduler", "heun"], "--video-scheduler heun"),
        (["--video-schedule", "cosine"], "--video-schedule cosine"),
        (["--motion-norm", "batch"], "--motion-norm batch"),
    ],
)
def test_bad_sampler_settings_are_one_error_line(
    runner: CliRunner, tmp_path: Path, args: list[str], needle: str
) -> None:
    result = runner.invoke(app, ["generate", "x", "-o", str(tmp_path / "x.webm"), "--preset", "tiny", *args])
    assert result.exit_code == 2 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and needle in errors[0], result.stderr
    assert list(tmp_path.iterdir()) == []


def test_model_settings_normalise_samplers_and_refuse_unknown_values() -> None:
    models = render.ModelSettings(scheduler="DPM++_2M_Karras", video_scheduler="dpmpp-2m-sde")
    assert (models.scheduler, models.video_scheduler) == ("dpmpp_2m", "dpmpp_2m_sde_karras")
    assert render.ModelSettings().scheduler is None  # each stage's own default
    with pytest.raises(UsageError, match=r"video_schedule='cosine'"):
        render.ModelSettings(video_schedule="cosine")
    # The settings module spells the library's choices without importing them at import time.
    assert settings.VIDEO_SCHEDULES == SCHEDULES and settings.MOTION_NORMS == MOTION_NORM_MODES


def test_help_states_each_stage_default_and_why() -> None:
    command = get_command(app).commands["generate"]  # type: ignore[attr-defined]
    helps = {opt: param.help or "" for param in command.params for opt in getattr(param, "opts", [])}
    text = " ".join(helps["--scheduler"].split())
    for name in SCHEDULERS:
        assert name in text
    assert f"stage one {DEFAULT_IMAGE_SCHEDULERS['sd15']} on SD1.5" in text
    assert f"{DEFAULT_IMAGE_SCHEDULERS['sdxl']} on SDXL (LayerDiffuse's demos)" in text
    assert f"stage two {DEFAULT_VIDEO_SCHEDULER} (AnimateDiff's own)" in text
    assert "--video-schedule" in helps and "--motion-norm" in helps


def test_a_speed_preset_reports_its_own_stage_two_scheduler() -> None:
    import torch

    from layeranim.render.components import ModelSpec
    from layeranim.render.session import RenderSession

    session = RenderSession(
        ModelSpec.for_preset("tiny"), torch.device("cpu"), torch.float32, speed="lightning-4"
    )
    video = session.scheduler_facts()["video"]
    assert (video["sampler"], video["class"]) == ("lightning-4", "EulerDiscreteScheduler")
    assert (video["timestep_spacing"], video["beta_schedule"]) == ("trailing", "linear")
