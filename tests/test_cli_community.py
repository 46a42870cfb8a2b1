"""Community add-ons, speed presets, the thread policy and launcher batches, wired through the CLI and the
render API on the tiny preset (the libraries themselves: test_adapters, test_speed, test_threads,
test_distributed)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    LCMScheduler,
    UNet2DConditionModel,
)
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from layeranim import speed, video_io
from layeranim.cli import app
from layeranim.cli._common import threads_from_argv
from layeranim.render import api
from layeranim.render.components import ModelSpec
from layeranim.render.settings import SPEED_CHOICES, GenerateRequest, ModelSettings, SamplingSettings

peft = pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--preset", "tiny", "--steps", "2", "--fast-decode", "--seed", "11"]
CLIP = ["--preset", "tiny", "--frames", "2", "--image-steps", "1", "--fast-decode", "--seed", "5"]
PROBE = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


@pytest.fixture(scope="module")
def tiny() -> ModelSpec:
    return ModelSpec.for_preset("tiny")


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def one_error_line(result: object, exit_code: int, *needles: str) -> str:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]  # type: ignore[attr-defined]
    assert len(errors) == 1, result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.stderr  # type: ignore[attr-defined]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lora_file(tiny: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random rank-2 LoRA on the tiny UNet's spatial attention, in diffusers' file format."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    unet = UNet2DConditionModel.from_pretrained(Path(tiny.base), subfolder="unet")  # type: ignore[arg-type]
    torch.manual_seed(0)
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    # Large random B·A so that the change survives the tiny preset's 8-bit output.
    inject_adapter_in_model(
        LoraConfig(r=2, lora_alpha=8, init_lora_weights=False, target_modules=targets), unet
    )
    folder = tmp_path_factory.mktemp("lora")
    StableDiffusionLoraLoaderMixin.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet))
    return folder / "pytorch_lora_weights.safetensors"


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"))


# ---------------------------------------------------------------------------------------------------
# LoRAs, embeddings and clip skip.


def test_lora_through_the_cli_scale_zero_is_no_lora(
    runner: CliRunner, tmp_path: Path, lora_file: Path
) -> None:
    pixels = {}
    for name, extra in (
        ("plain", []),
        ("zero", ["--lora", f"{lora_file}:0.0"]),
        ("full", ["--lora", f"{lora_file}:1"]),
    ):
        out = tmp_path / f"{name}.png"
        result = runner.invoke(app, ["image", "lower newer", "-o", str(out), *FAST, *extra])
        assert result.exit_code == 0, result.stderr
        pixels[name] = read_png(out)
    assert np.array_equal(pixels["plain"], pixels["zero"])
    assert not np.array_equal(pixels["plain"], pixels["full"])


def test_manifest_records_each_add_on_with_its_hash(
    runner: CliRunner, tmp_path: Path, lora_file: Path, tiny: ModelSpec
) -> None:
    embedding = tmp_path / "shiny.safetensors"  # A1111's safetensors layout: called by its file name
    width = int(json.loads((Path(tiny.base) / "text_encoder" / "config.json").read_text())["hidden_size"])  # type: ignore[arg-type]
    save_file(
        {"emb_params": torch.randn(2, width, generator=torch.Generator().manual_seed(3))}, str(embedding)
    )
    out = tmp_path / "clip.webm"
    args = ["generate", "shiny lantern", "-o", str(out), "--steps", "1", "--manifest", *CLIP]
    args += ["--lora", f"{lora_file}:0.5", "--embedding", str(embedding), "--clip-skip", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads(out.with_name("clip.webm.json").read_text())
    sources = manifest["sources"]
    assert [(r["kind"], r["scale"], r["sha256"]) for r in sources["loras"]] == [
        ("lora", 0.5, sha256(lora_file))
    ]
    assert [(r["kind"], r["sha256"]) for r in sources["embeddings"]] == [("embedding", sha256(embedding))]
    assert "motion_loras" not in sources and "speed" not in sources  # only what was used
    assert manifest["params"]["clip_skip"] == 1
    loaded = manifest["resolved_sources"]["community"]  # what was loaded, tokens included
    assert [r["ref"] for r in loaded] == [str(lora_file), str(embedding)]
    assert loaded[1]["tokens"] == ["shiny", "shiny_1"]


def test_clip_skip_changes_the_image_and_plain_manifests_keep_their_keys(
    runner: CliRunner, tmp_path: Path
) -> None:
    pixels = []
    for name, extra in (("plain", []), ("skip", ["--clip-skip", "1"])):
        out = tmp_path / f"{name}.png"
        result = runner.invoke(app, ["image", "lower newer", "-o", str(out), *FAST, *extra])
        assert result.exit_code == 0, result.stderr
        pixels.append(read_png(out))
    assert not np.array_equal(pixels[0], pixels[1])
    request = GenerateRequest("x", tmp_path / "x.webm", models=ModelSettings(preset="tiny"))
    assert "clip_skip" not in request.params()


def test_wrong_family_lora_is_one_error_line(runner: CliRunner, tmp_path: Path) -> None:
    sdxl = tmp_path / "xl_style.safetensors"  # a Kohya SDXL LoRA: its second text encoder's keys
    save_file(
        {
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 1280),
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(1280, 4),
        },
        str(sdxl),
    )
    out = tmp_path / "a.png"
    result = runner.invoke(app, ["image", "x", "-o", str(out), *FAST, "--lora", str(sdxl)])
    one_error_line(result, 2, "xl_style.safetensors", "SDXL")
    assert not out.exists()


def test_bad_add_on_values_name_their_flags(runner: CliRunner, tmp_path: Path) -> None:
    out = str(tmp_path / "x.webm")
    result = runner.invoke(app, ["generate", "x", "-o", out, *CLIP, "--speed", "turbo"])
    one_error_line(result, 2, "--speed turbo", "lightning-4")
    result = runner.invoke(
        app, ["generate", "x", "-o", out, *CLIP, "--speed", "lcm", "--motion-adapter", "m"]
    )
    one_error_line(result, 2, "--motion-adapter", "--speed")
    result = runner.invoke(app, ["image", "x", "-o", str(tmp_path / "a.png"), *FAST, "--speed", "lcm"])
    assert result.exit_code == 2  # stage one has no motion weights: no --speed on `image`
    assert "--speed" in result.stderr


# ---------------------------------------------------------------------------------------------------
# Speed presets.


@pytest.fixture()
def offline_presets(monkeypatch: pytest.MonkeyPatch, tiny: ModelSpec) -> None:
    """Every preset with the tiny motion adapter instead of the published weights (no network here), and
    no LCM LoRA (the tiny preset has none); schedulers, steps and guidance stay the published ones."""
    for name, preset in list(speed.SPEED_PRESETS.items()):
        offline = dataclasses.replace(preset, motion_adapter=Path(tiny.motion_adapter), lora=None)  # type: ignore[arg-type]
        monkeypatch.setitem(speed.SPEED_PRESETS, name, offline)


def test_speed_choices_are_the_presets() -> None:
    assert tuple(speed.SPEED_PRESETS) == SPEED_CHOICES


@pytest.mark.usefixtures("offline_presets")
@pytest.mark.parametrize(
    ("name", "scheduler_class", "steps", "guidance"),
    [
        ("lcm", LCMScheduler, 6, 2.0),
        ("lightning-2", EulerDiscreteScheduler, 2, 1.0),
        ("lightning-4", EulerDiscreteScheduler, 4, 1.0),
        ("lightning-8", EulerDiscreteScheduler, 8, 1.0),
    ],
)
def test_session_builds_stage_two_with_the_presets_scheduler(
    name: str, scheduler_class: type, steps: int, guidance: float, tmp_path: Path
) -> None:
    models = ModelSettings(preset="tiny", device="cpu", speed=name)
    session = api.open_session(models, will_animate=True)
    pipe = session.stage_two()
    assert type(pipe.scheduler) is scheduler_class
    assert pipe.scheduler.config.beta_schedule == "linear"
    if scheduler_class is EulerDiscreteScheduler:
        assert pipe.scheduler.config.timestep_spacing == "trailing"
    # Stage one keeps its own sampler: the SD1.5 default, DPM++ 2M Karras (LayerDiffuse's demos).
    assert type(session.stage_one().scheduler) is DPMSolverMultistepScheduler
    request = GenerateRequest("x", tmp_path / "x.webm", models=models)
    assert (request.sampling.steps, request.sampling.guidance) == (steps, guidance)
    assert request.sampling.image_steps == 25  # stage one keeps its own steps
    explicit = GenerateRequest("x", tmp_path / "x.webm", models=models, sampling=SamplingSettings(steps=3))
    assert (explicit.sampling.steps, explicit.sampling.guidance) == (3, guidance)


@pytest.mark.usefixtures("offline_presets")
def test_speed_through_the_cli_prints_and_records_the_preset(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "fast.webm"
    result = runner.invoke(
        app, ["generate", "x", "-o", str(out), "--manifest", "--speed", "lightning-2", *CLIP]
    )
    assert result.exit_code == 0, result.stderr
    assert "speed preset lightning-2" in result.stderr and "EulerDiscreteScheduler" in result.stderr
    manifest = json.loads(out.with_name("fast.webm.json").read_text())
    assert (manifest["params"]["steps"], manifest["params"]["guidance"]) == (2, 1.0)
    assert manifest["sources"]["speed"]["speed"] == "lightning-2"
    assert manifest["sources"]["speed"]["scheduler"] == "EulerDiscreteScheduler"

    quiet = tmp_path / "quiet.webm"
    result = runner.invoke(app, ["generate", "x", "-o", str(quiet), "-q", "--speed", "lightning-2", *CLIP])
    assert result.exit_code == 0, result.stderr
    assert "speed preset" not in result.stderr


@pytest.mark.usefixtures("offline_presets")
def test_ifa_weights_of_another_adapter_are_one_error_line_unless_allowed(
    runner: CliRunner, tmp_path: Path
) -> None:
    from layeranim.models.inter_frame_attention import save_ifa_weights

    session = api.open_session(ModelSettings(preset="tiny", device="cpu"), will_animate=True)
    ifa = tmp_path / "ifa.safetensors"
    metadata = {
        "base_model": "tiny",
        "motion_adapter": "guoyww/animatediff-motion-adapter-v1-5-2@0123",
        "frames": "16",
    }
    save_ifa_weights(ifa, session.motion.ifa_processors, metadata=metadata)
    out = tmp_path / "x.webm"
    args = [
        "generate",
        "x",
        "-o",
        str(out),
        "--speed",
        "lightning-4",
        "--ifa-weights",
        str(ifa),
        "--steps",
        "1",
    ]
    result = runner.invoke(app, [*args, *CLIP])
    one_error_line(
        result, 2, "guoyww/animatediff-motion-adapter-v1-5-2", "lightning-4", "--allow-ifa-mismatch"
    )
    assert not out.exists()
    result = runner.invoke(app, [*args, *CLIP, "--allow-ifa-mismatch"])
    assert result.exit_code == 0, result.stderr
    assert "mismatched IFA weights" in result.stderr and out.exists()


def make_motion_lora(spec: ModelSpec, folder: Path) -> Path:
    """A random MotionLoRA on the tiny motion modules' attention, in diffusers' file format."""
    from diffusers import MotionAdapter
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from peft import LoraConfig, get_peft_model_state_dict

    from layeranim.pipelines.layeranimate import build_motion_unet

    unet = UNet2DConditionModel.from_pretrained(Path(spec.base), subfolder="unet")  # type: ignore[arg-type]
    adapter = MotionAdapter.from_pretrained(Path(spec.motion_adapter))  # type: ignore[arg-type]
    motion = build_motion_unet(unet, adapter, {}).unet
    torch.manual_seed(4)
    targets = r".*motion_modules.*\.(to_q|to_k|to_v|to_out\.0)"
    motion.add_adapter(LoraConfig(r=2, lora_alpha=8, init_lora_weights=False, target_modules=targets))
    StableDiffusionLoraLoaderMixin.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(motion)
    )
    return folder / "pytorch_lora_weights.safetensors"


def test_motion_lora_through_the_cli(runner: CliRunner, tmp_path: Path, tiny: ModelSpec) -> None:
    motion_lora = make_motion_lora(tiny, tmp_path)
    clips = {}
    for name, extra in (
        ("plain", []),
        ("zero", ["--motion-lora", f"{motion_lora}:0"]),
        ("full", ["--motion-lora", str(motion_lora)]),
    ):
        out = tmp_path / f"{name}.webm"
        result = runner.invoke(
            app, ["generate", "lower", "-o", str(out), "--manifest", "--steps", "2", *CLIP, *extra]
        )
        assert result.exit_code == 0, result.stderr
        clips[name] = video_io.read_video(out).rgba_fhwc_uint8
    assert np.array_equal(clips["plain"], clips["zero"])
    assert not np.array_equal(clips["plain"], clips["full"])
    manifest = json.loads((tmp_path / "full.webm.json").read_text())
    assert [(r["kind"], r["scale"], r["sha256"]) for r in manifest["sources"]["motion_loras"]] == [
        ("motion_lora", 1.0, sha256(motion_lora))
    ]
    assert [r["kind"] for r in manifest["resolved_sources"]["motion_community"]] == ["motion_lora"]


# ---------------------------------------------------------------------------------------------------
# Threads.


def test_threads_from_argv_reads_only_the_global_option() -> None:
    assert threads_from_argv(["--threads", "3", "generate", "x"]) == 3
    assert threads_from_argv(["--threads=2", "info"]) == 2
    assert threads_from_argv(["generate", "--threads", "3"]) is None  # after the sub-command: not ours
    assert threads_from_argv(["--threads", "zero", "info"]) is None  # Typer reports it


def test_threads_one_reaches_torch_in_a_render(tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1", LAYERANIM_DEBUG="1")
    cmd = [sys.executable, "-m", "layeranim", "--threads", "1", "image", "x", "-o", str(out), *FAST]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "thread policy: 1 torch thread(s) from threads" in done.stderr
    assert "OpenMP wait policy PASSIVE" in done.stderr  # set before torch was imported


# ---------------------------------------------------------------------------------------------------
# A batch under a launcher.


def test_torchrun_generate_batch_renders_each_item_once_with_one_summary(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("lower\nnewer\nwider\nlowest\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "layeranim", "generate", "--prompts", str(prompts), "-o", f"{out}/", "--json"]
    cmd += ["--preset", "tiny", "--frames", "2", "--steps", "1", "--image-steps", "1"]
    cmd += ["--width", "64", "--height", "64", "--fast-decode"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["index"], r["status"]) for r in records] == [(0, "ok"), (1, "ok"), (2, "ok"), (3, "ok")]
    # One summary, from process 0 (off a terminal: a line per item, then the counts).
    assert len(re.findall(r"^4 ok, 0 failed, 0 skipped in ", done.stderr, flags=re.M)) == 1
    outputs = sorted(p.name for p in out.glob("*.webm"))
    assert outputs == ["0000-lower.webm", "0001-newer.webm", "0002-wider.webm", "0003-lowest.webm"]
    ranks = {}
    for name in outputs:
        manifest = json.loads((out / f"{name}.json").read_text())
        ranks[manifest["item"]["index"]] = manifest["process"]["rank"]
    assert ranks == {0: 0, 1: 1, 2: 0, 3: 1}  # each item rendered by exactly one process

    # Resumed with another number of processes (here: one), the finished items are skipped.
    again = subprocess.run(
        [sys.executable, *cmd[cmd.index("-m", 3) :]],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert [json.loads(line)["status"] for line in again.stdout.splitlines()] == ["skipped"] * 4


@pytest.mark.parametrize(
    ("command", "flags", "absent"),
    [
        (["image"], ["--lora", "--embedding", "--clip-skip"], ["--speed", "--motion-lora"]),
        (["animate"], ["--lora", "--motion-lora", "--speed", "--allow-ifa-mismatch"], []),
        (["generate"], ["--lora", "--motion-lora", "--embedding", "--clip-skip", "--speed"], []),
        (["layers", "render"], ["--lora", "--motion-lora", "--embedding", "--clip-skip", "--speed"], []),
    ],
)
def test_rendering_commands_share_the_community_options(
    runner: CliRunner, command: list[str], flags: list[str], absent: list[str]
) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    for flag in flags:
        assert flag in result.stdout, (command, flag)
    for flag in absent:
        assert flag not in result.stdout, (command, flag)
