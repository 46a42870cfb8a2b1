"""`layeranim compose`: agreement with FFmpeg's overlay filter, inline inputs, frame rates, scene files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from layeranim import video_io
from layeranim.cli import app

FFMPEG = shutil.which("ffmpeg")


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def soft_clip(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """Straight RGBA with smooth colour and alpha in 40..255 (plus a fully transparent corner)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    clip = np.zeros((frames, height, width, 4), np.uint8)
    for f in range(frames):
        base = rng.integers(0, 256, 3)
        clip[f, ..., 0] = (base[0] + xx * 7) % 256
        clip[f, ..., 1] = (base[1] + yy * 5) % 256
        clip[f, ..., 2] = base[2]
        clip[f, ..., 3] = np.clip(40 + (xx + yy + 9 * f) * 6, 40, 255)
    clip[:, :3, :3, 3] = 0
    return clip


def write_png_dir(folder: Path, clip: np.ndarray) -> Path:
    """An independent PNG sequence writer (Pillow), so FFmpeg and layeranim read the same bytes."""
    folder.mkdir()
    for f, frame in enumerate(clip):
        Image.fromarray(frame).save(folder / f"f{f:03d}.png")
    return folder


@pytest.mark.skipif(FFMPEG is None, reason="needs the ffmpeg CLI")
def test_compose_agrees_with_ffmpeg_overlay_within_two_levels(runner: CliRunner, tmp_path: Path) -> None:
    bottom = write_png_dir(tmp_path / "bottom", soft_clip(3, 40, 48, 0))
    top = write_png_dir(tmp_path / "top", soft_clip(3, 20, 24, 1))
    (tmp_path / "ff").mkdir()
    subprocess.run(
        [
            FFMPEG, "-v", "error", "-framerate", "8", "-i", str(bottom / "f%03d.png"),
            "-framerate", "8", "-i", str(top / "f%03d.png"),
            "-filter_complex", "[0:v][1:v]overlay=x=30:y=-4:format=auto,format=rgba",
            str(tmp_path / "ff" / "f%03d.png"),
        ],
        check=True,
        timeout=120,
    )  # fmt: skip
    reference = np.stack(
        [np.asarray(Image.open(p).convert("RGBA")) for p in sorted((tmp_path / "ff").iterdir())]
    )

    out = tmp_path / "ours"
    result = runner.invoke(
        app,
        [
            "compose",
            str(bottom),
            f"{top}@30,-4",
            "-o",
            f"{out}/",
            "--width",
            "48",
            "--height",
            "40",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["width"], report["height"], report["frames"]) == (48, 40, 3) and report["has_alpha"]
    ours = video_io.read_video(out).rgba_fhwc_uint8
    assert ours.shape == reference.shape
    assert np.abs(ours[..., 3].astype(int) - reference[..., 3].astype(int)).max() <= 2
    visible = reference[..., 3] > 0  # colour under alpha 0 carries nothing
    assert np.abs(ours[visible][:, :3].astype(int) - reference[visible][:, :3].astype(int)).max() <= 2


def test_inline_opacity_start_and_canvas_from_the_inputs(runner: CliRunner, tmp_path: Path) -> None:
    bottom = np.zeros((2, 8, 8, 4), np.uint8)
    bottom[..., 2], bottom[..., 3] = 200, 255
    video_io.write_video(tmp_path / "bottom.mkv", bottom, 10.0, format="mkv")
    dot = np.zeros((4, 4, 4), np.uint8)
    dot[..., 0], dot[..., 3] = 255, 255
    Image.fromarray(dot).save(tmp_path / "dot.png")
    out = tmp_path / "c.mkv"
    result = runner.invoke(
        app,
        ["compose", str(tmp_path / "bottom.mkv"), f"{tmp_path / 'dot.png'}@6,2:opacity=0.5,start=1",
         "-o", str(out), "--frames", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    clip = video_io.read_video(out)
    assert clip.fps == pytest.approx(10.0)
    frames = clip.rgba_fhwc_uint8
    assert frames.shape == (3, 8, 10, 4)  # the dot reaches x = 10
    assert tuple(frames[0, 3, 7]) == (0, 0, 200, 255)  # not started yet
    assert tuple(frames[1, 3, 7]) == (128, 0, 100, 255)  # half over the blue
    assert tuple(frames[1, 3, 9]) == (255, 0, 0, 128)  # half over nothing: stays half transparent
    assert tuple(frames[2, 3, 7]) == tuple(frames[1, 3, 7])  # the bottom clip holds its last frame


def test_mismatched_fps_is_refused_unless_fps_is_given(runner: CliRunner, tmp_path: Path) -> None:
    clip = np.full((4, 8, 8, 4), 255, np.uint8)
    video_io.write_video(tmp_path / "a.mkv", clip, 8.0, format="mkv")
    video_io.write_video(tmp_path / "b.mkv", clip[:2], 4.0, format="mkv")
    out = tmp_path / "c.mkv"
    result = runner.invoke(app, ["compose", str(tmp_path / "a.mkv"), str(tmp_path / "b.mkv"), "-o", str(out)])
    assert result.exit_code == 2 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "fps" in errors[0] and "a.mkv at 8 fps" in errors[0]
    assert not out.exists()
    resampled = runner.invoke(
        app, ["compose", str(tmp_path / "a.mkv"), str(tmp_path / "b.mkv"), "-o", str(out), "--fps", "8"]
    )
    assert resampled.exit_code == 0, resampled.stderr
    assert video_io.probe(out).frames == 4  # b: 2 frames at 4 fps → 4 at 8 fps


def test_compose_a_scene_of_clips_and_refuse_layers_that_need_rendering(
    runner: CliRunner, tmp_path: Path
) -> None:
    clip = np.zeros((3, 8, 8, 4), np.uint8)
    clip[..., 1], clip[..., 3] = 180, 255
    video_io.write_video(tmp_path / "g.mkv", clip, 8.0, format="mkv")
    spot = np.zeros((4, 4, 4), np.uint8)
    spot[..., 3] = 255
    Image.fromarray(spot).save(tmp_path / "spot.png")
    scene = tmp_path / "scene.toml"
    scene.write_text(
        '[canvas]\nwidth = 12\nheight = 8\nframes = 3\nfps = 8\nbackground = "white"\n\n'
        '[[layer]]\nname = "green"\nvideo = "g.mkv"\nposition = [4, 0]\n\n'
        '[[layer]]\nname = "spot"\nimage = "spot.png"\n',
        encoding="utf-8",
    )
    out = tmp_path / "c.mkv"
    result = runner.invoke(app, ["compose", str(scene), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    frames = video_io.read_video(out).rgba_fhwc_uint8
    assert tuple(frames[0, 6, 0]) == (255, 255, 255, 255)
    assert tuple(frames[0, 6, 6]) == (0, 180, 0, 255)
    assert tuple(frames[2, 1, 1]) == (0, 0, 0, 255)
    scene.write_text(
        scene.read_text() + '\n[[layer]]\nname = "wave"\nimage = "wave.png"\nmotion = "waving"\n'
    )
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "wave.png")
    refused = runner.invoke(app, ["compose", str(scene), "-o", str(tmp_path / "d.mkv")])
    assert refused.exit_code == 2
    assert '"wave"' in refused.stderr and "motion" in refused.stderr and "layers" in refused.stderr
    assert not (tmp_path / "d.mkv").exists()


def test_bad_inline_spec(runner: CliRunner, tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4, 4), np.uint8)).save(tmp_path / "a.png")
    result = runner.invoke(
        app, ["compose", f"{tmp_path / 'a.png'}@1,2:blend=3", "-o", str(tmp_path / "c.mkv")]
    )
    assert result.exit_code == 2 and "opacity=O or start=S" in result.stderr
