"""`layeranim image`, `animate` and `generate` on the tiny preset, through Typer's CliRunner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from layeranim import video_io
from layeranim.cli import app

FAST = ["--preset", "tiny", "--steps", "2", "--fast-decode", "--seed", "11"]


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def one_error_line(result: object, exit_code: int, *needles: str) -> str:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    assert result.stdout == ""  # type: ignore[attr-defined]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]  # type: ignore[attr-defined]
    assert len(errors) == 1, result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.stderr  # type: ignore[attr-defined]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def test_help_lists_only_working_commands(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("image", "animate", "generate", "convert", "info", "models", "doctor"):
        assert command in result.stdout


def test_image_writes_rgba_png_and_latent_deterministically(runner: CliRunner, tmp_path: Path) -> None:
    outputs = []
    for name in ("a.png", "b.png"):
        out = tmp_path / name
        result = runner.invoke(
            app, ["image", "lower newer", "-o", str(out), "--save-latent", "--json", *FAST]
        )
        assert result.exit_code == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["output"] == str(out) and report["seed"] == 11
        assert Path(report["latent"]).name == f"{out.stem}.latent.safetensors"
        with Image.open(out) as image:
            assert image.mode == "RGBA" and image.size == (64, 64)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_python_m_layeranim_image_says_once_that_tiny_pictures_are_noise(tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    cmd = [sys.executable, "-m", "layeranim", "image", "x", "-o", str(out), *FAST]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert proc.stderr.count("noise") == 1, proc.stderr
    # -q silences warnings that are not errors (issue 16): this notice, Python's and diffusers' too.
    quiet = subprocess.run([*cmd, "--overwrite", "-q"], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""


def test_a_random_seed_is_printed_on_stderr(runner: CliRunner, tmp_path: Path) -> None:
    fast = [arg for arg in FAST if arg not in ("--seed", "11")]
    out = tmp_path / "r.png"
    result = runner.invoke(
        app, ["image", "x", "-o", str(out), *fast, "--width", "64", "--height", "64", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    seed = json.loads(result.stdout)["seed"]
    assert f"seed: {seed} (pass --seed {seed} to render this again)" in result.stderr
    again = runner.invoke(app, ["image", "x", "-o", str(out), "--overwrite", *fast, "--width", "64", "-q"])
    assert again.exit_code == 0 and "seed:" not in again.stderr


def test_image_refuses_existing_output_before_loading_models(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    out.write_bytes(b"keep me")
    result = runner.invoke(app, ["image", "x", "-o", str(out), "--preset", "tiny"])
    one_error_line(result, 2, "--overwrite")
    assert out.read_bytes() == b"keep me"


def test_image_refuses_video_extension(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["image", "x", "-o", str(tmp_path / "a.webm"), "--preset", "tiny"])
    one_error_line(result, 2, "a.webm", "generate")


def test_generate_writes_alpha_webm_with_f_frames(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "renders" / "clip.webm"  # the folder is created
    result = runner.invoke(
        app,
        ["generate", "lower newer", "-o", str(out), "--frames", "4", "--image-steps", "2", "--json", *FAST],
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] == 4 and report["alpha"] is True and report["codec"] == "vp9"
    info = video_io.probe(out)
    assert info.frames == 4 and info.has_alpha
    assert "Inter-Frame Attention" in result.stderr  # the baseline says so once
    assert result.stderr.count("Inter-Frame Attention") == 1


def test_generate_middle_frame_is_the_stage_one_image_and_seed_repeats(
    runner: CliRunner, tmp_path: Path
) -> None:
    frames = []
    for run in ("a", "b"):
        out, still = tmp_path / f"{run}.mkv", tmp_path / f"{run}.png"  # lossless FFV1 to compare pixels
        args = ["generate", "lower newer", "-o", str(out), "--frames", "3", "--save-image", str(still)]
        result = runner.invoke(app, [*args, "--image-steps", "2", *FAST])
        assert result.exit_code == 0, result.stderr
        clip = video_io.read_video(out).rgba_fhwc_uint8
        assert clip.shape == (3, 64, 64, 4)
        assert np.array_equal(clip[1], video_io.read_image(still))  # m = (3 - 1) // 2, byte for byte
        frames.append(clip)
    assert np.array_equal(frames[0], frames[1])


def test_animate_from_image_and_its_latent(runner: CliRunner, tmp_path: Path) -> None:
    still = tmp_path / "sprite.png"
    result = runner.invoke(app, ["image", "lower newer", "-o", str(still), "--save-latent", *FAST])
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "sprite.webm"
    result = runner.invoke(
        app, ["animate", str(still), "lower", "-o", str(out), "--frames", "4", "--json", *FAST]
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["input"].endswith("sprite.latent.safetensors")  # started from stage one's exact latent
    assert video_io.probe(out).frames == 4 and video_io.probe(out).has_alpha


def test_animate_any_rgba_image_through_the_encoder(runner: CliRunner, tmp_path: Path) -> None:
    rgba = np.zeros((72, 56, 4), np.uint8)  # not a multiple of 64: padded and cropped back
    rgba[10:60, 10:40] = (30, 200, 90, 180)
    still = tmp_path / "own.png"
    Image.fromarray(rgba, "RGBA").save(still)
    runs = []
    for name in ("a.apng", "b.apng"):
        out = tmp_path / name
        result = runner.invoke(app, ["animate", str(still), "wave", "-o", str(out), "--frames", "3", *FAST])
        assert result.exit_code == 0, result.stderr
        runs.append(video_io.read_video(out).rgba_fhwc_uint8)
    assert runs[0].shape == (3, 72, 56, 4)
    assert np.array_equal(runs[0], runs[1])


def test_animate_refuses_an_rgb_only_jpeg(runner: CliRunner, tmp_path: Path) -> None:
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(jpeg)
    out = tmp_path / "x.webm"
    result = runner.invoke(app, ["animate", str(jpeg), "wave", "-o", str(out), "--preset", "tiny"])
    one_error_line(result, 2, "photo.jpg", "no alpha")
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "needles", "code"),
    [
        (["-o", "{tmp}/x.mp4"], ("mp4",), 2),
        (["-o", "{tmp}/x.webm", "--frames", "0"], ("--frames 0",), 2),
        (["-o", "{tmp}/x.webm", "--frames", "1"], ("--frames 1",), 2),
        (["-o", "{tmp}/x.webm", "--frames", "16", "--base-position", "999"], ("--base-position 999",), 2),
        (["-o", "{tmp}/x.webm", "--base-position", "left"], ("--base-position left",), 2),
        (["-o", "{tmp}/x.webm", "--frames", "2", "--seamless"], ("--seamless", "--frames 2"), 2),
        (["-o", "{tmp}/x.webm", "--context-weighting", "cosine"], ("--context-weighting cosine",), 2),
        (["-o", "{tmp}/x.webm", "--context-overlap", "16"], ("--context-overlap 16",), 2),
        (["-o", "{tmp}/x.webm", "--frames", "10000"], ("frames 10000", "4096"), 2),  # long clips slide
        (["-o", "{tmp}/x.webm", "--device", "cuda"], ("--device",), 2),
        (["-o", "{tmp}/x.webm", "--ifa-weights", "{tmp}/missing.safetensors"], ("--ifa-weights",), 2),
        (["-o", "{tmp}/x.webm", "--scheduler", "bogus"], ("--scheduler",), 2),
    ],
)
def test_generate_bad_input_gives_one_error_line(
    runner: CliRunner, tmp_path: Path, args: list[str], needles: tuple[str, ...], code: int
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(
        app, ["generate", "x", *args, "--preset", "tiny", "--steps", "1", "--image-steps", "1"]
    )
    one_error_line(result, code, *needles)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_generate_with_trained_ifa_weights(runner: CliRunner, tmp_path: Path) -> None:
    import torch

    from layeranim.models.inter_frame_attention import save_ifa_weights
    from layeranim.pipelines.layeranimate import build_motion_unet
    from layeranim.render.components import ModelSpec, load_components, load_motion_adapter

    spec = ModelSpec.for_preset("tiny")
    c = load_components(spec, device=torch.device("cpu"), dtype=torch.float32)
    motion = build_motion_unet(c.unet, load_motion_adapter(spec.motion_adapter), c.layerdiffuse_processors)
    for proc in motion.ifa_processors.values():
        torch.nn.init.normal_(proc.to_out_ifa.weight, std=0.1, generator=torch.Generator().manual_seed(0))
    weights = tmp_path / "ifa.safetensors"
    save_ifa_weights(
        weights,
        motion.ifa_processors,
        metadata={"base_model": "tiny", "motion_adapter": "tiny", "frames": "4"},
    )
    out = tmp_path / "clip.webm"
    result = runner.invoke(
        app,
        [
            "generate",
            "x",
            "-o",
            str(out),
            "--frames",
            "4",
            "--ifa-weights",
            str(weights),
            "--image-steps",
            "1",
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert "baseline" not in result.stderr


def test_animate_inputs_batch_reports_each_item(runner: CliRunner, tmp_path: Path) -> None:
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[8:40, 8:40] = (250, 120, 10, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "one.png")
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("# image<TAB>prompt\none.png\twave\nmissing.png\tjump\n")
    out = tmp_path / "clips"
    args = ["animate", "--inputs", str(inputs), "-o", f"{out}/", "--frames", "3", "--json", *FAST]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["status"] for line in lines] == ["ok", "failed"]
    assert "missing.png" in lines[1]["error"] and "missing.png" in result.stderr
    clip = Path(lines[0]["output"])
    assert video_io.probe(clip).frames == 3
    manifest = json.loads(Path(lines[0]["manifest"]).read_text())
    assert manifest["seed"] == lines[0]["seed"] and manifest["params"]["frames"] == 3
    rerun = runner.invoke(app, args)
    assert [json.loads(line)["status"] for line in rerun.stdout.splitlines()] == ["skipped", "failed"]


def test_generate_png_sequence_folder_is_created_once(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "new" / "frames"
    result = runner.invoke(
        app, ["generate", "x", "-o", f"{out}/", "--frames", "3", "--image-steps", "1", *FAST]
    )
    assert result.exit_code == 0, result.stderr
    assert sorted(p.suffix for p in out.iterdir() if not p.name.startswith(".")) == [".png"] * 3
    assert (out / ".layeranim-owned.json").is_file()  # layeranim's own folder: --overwrite may replace it


def test_single_render_writes_a_manifest_on_request(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "one.webm"
    args = [
        "generate",
        "a fox",
        "-o",
        str(out),
        "--frames",
        "3",
        "--image-steps",
        "1",
        "--manifest",
        "--json",
    ]
    result = runner.invoke(app, [*args, *FAST])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    manifest = json.loads(Path(report["manifest"]).read_text())
    assert report["manifest"] == f"{out}.json"
    assert manifest["seed"] == 11 and manifest["item"]["prompt"] == "a fox"
    assert manifest["params"]["frames"] == 3 and manifest["params"]["tta"] is False
    assert {"image", "video", "write"} <= set(manifest["timings"])
    assert manifest["resolved_sources"]
    again = runner.invoke(app, [*args, *FAST])  # the manifest is an output too: never replaced silently
    one_error_line(again, 2, "--overwrite")
