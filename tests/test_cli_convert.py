"""`layeranim convert` and `layeranim info` through Typer's CliRunner: exit codes, stdout, stderr."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from _clips import FRAMES, HEIGHT, WIDTH, synthetic_clip
from layeranim import video_io
from layeranim.cli import app


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lossless RGBA source clip (FFV1 in Matroska)."""
    path = tmp_path_factory.mktemp("src") / "source.mkv"
    video_io.write_video(path, synthetic_clip(), 24)
    return path


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _assert_one_error_line(result: object, exit_code: int, *needles: str) -> None:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    assert result.stdout == ""  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert "Traceback" not in result.stderr  # type: ignore[attr-defined]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_convert_json_reports_the_written_file(runner: CliRunner, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.webm"
    result = runner.invoke(app, ["convert", str(source), str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {
        "output": str(out),
        "format": "webm",
        "codec": "vp9",
        "pix_fmt": "yuva420p",
        "frames": FRAMES,
        "fps": 24.0,
        "width": WIDTH,
        "height": HEIGHT,
        "has_alpha": True,
        "preview": None,
    }
    assert "Error" not in result.stderr
    decoded = video_io.read_video(out).rgba_fhwc_uint8
    assert np.abs(decoded[..., 3].astype(int) - synthetic_clip()[..., 3]).max() <= 16


def test_convert_prints_the_path_and_a_summary(runner: CliRunner, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.mov"
    result = runner.invoke(app, ["convert", str(source), str(out), "--format", "mov-xq"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{out}\n"
    assert "mov-xq [prores, yuva444p12le], alpha stored" in result.stderr
    quiet = runner.invoke(app, ["convert", str(out), str(tmp_path / "again.apng"), "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert quiet.stdout == f"{tmp_path / 'again.apng'}\n"


def test_convert_options_range_resize_fps_loop(runner: CliRunner, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.webp"
    args = ["convert", str(source), str(out), "--start", "1", "--stop", "7", "--step", "2"]
    args += ["--resize", "48x0", "--loop", "3", "--lossy", "--quality", "80", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["frames"], report["width"], report["height"]) == (3, 48, 32)
    assert report["fps"] == pytest.approx(12.0)  # every 2nd frame keeps the duration
    fps = runner.invoke(app, ["convert", str(source), str(tmp_path / "slow.gif"), "--fps", "10", "--json"])
    assert fps.exit_code == 0 and json.loads(fps.stdout)["fps"] == pytest.approx(10.0)
    assert "1-bit alpha" in fps.stderr  # GIF thresholds soft edges, and says so


def test_convert_background_flattens(runner: CliRunner, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "flat.apng"
    result = runner.invoke(app, ["convert", str(source), str(out), "--background", "#00ff00"])
    assert result.exit_code == 0, result.stderr
    decoded = video_io.read_video(out).rgba_fhwc_uint8
    assert np.all(decoded[..., 3] == 255)
    transparent = synthetic_clip()[..., 3] == 0
    assert np.all(decoded[transparent][:, :3] == [0, 255, 0])


def test_convert_premultiplied_alpha_mode(runner: CliRunner, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "premul.mkv"
    result = runner.invoke(app, ["convert", str(source), str(out), "--alpha-mode", "premultiplied"])
    assert result.exit_code == 0, result.stderr
    clip = synthetic_clip()
    decoded = video_io.read_video(out).rgba_fhwc_uint8
    expected = np.rint(clip[..., :3] * (clip[..., 3:4] / 255.0))
    assert np.abs(decoded[..., :3] - expected).max() <= 1


def test_convert_png_sequence_and_back(runner: CliRunner, source: Path, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    result = runner.invoke(app, ["convert", str(source), str(frames)])
    assert result.exit_code == 0, result.stderr
    assert len(list(frames.glob("*.png"))) == FRAMES
    back = tmp_path / "back.mkv"
    again = runner.invoke(app, ["convert", str(frames), str(back)])
    assert again.exit_code == 0, again.stderr
    np.testing.assert_array_equal(video_io.read_video(back).rgba_fhwc_uint8, synthetic_clip())


def test_convert_preview(
    runner: CliRunner, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "clip.webm"
    result = runner.invoke(app, ["convert", str(source), str(out), "--preview", "--json"])
    assert result.exit_code == 0, result.stderr
    preview = Path(json.loads(result.stdout)["preview"])
    assert preview.parent == tmp_path and preview.name.startswith("clip.preview.")
    assert not video_io.probe(preview).has_alpha
    assert f"preview: {preview}" in result.stderr
    monkeypatch.setattr(video_io, "h264_available", lambda: False)
    out2 = tmp_path / "other.webm"
    fallback = runner.invoke(app, ["convert", str(source), str(out2), "--preview"])
    assert fallback.exit_code == 0, fallback.stderr
    assert (tmp_path / "other.preview.gif").is_file()
    assert "no H.264 encoder" in fallback.stderr


def test_info_human_and_json(runner: CliRunner, source: Path) -> None:
    human = runner.invoke(app, ["info", str(source)])
    assert human.exit_code == 0, human.stderr
    assert "alpha:    stored" in human.stdout and f"frames:   {FRAMES}" in human.stdout
    assert human.stderr == ""
    as_json = runner.invoke(app, ["info", str(source), "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == video_io.probe(source).to_dict()


def _write_opaque_mp4(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for rgba in synthetic_clip(frames=3):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgba[..., :3]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def test_opaque_input_is_reported_not_refused(runner: CliRunner, tmp_path: Path) -> None:
    opaque = tmp_path / "opaque.mp4"
    _write_opaque_mp4(opaque)
    info = runner.invoke(app, ["info", str(opaque), "--json"])
    assert info.exit_code == 0 and json.loads(info.stdout)["has_alpha"] is False
    human = runner.invoke(app, ["info", str(opaque)])
    assert "alpha:    none" in human.stdout
    result = runner.invoke(app, ["convert", str(opaque), str(tmp_path / "out.webm")])
    assert result.exit_code == 0, result.stderr
    assert "stores no alpha" in result.stderr


# --- bad inputs: one `Error:` line, the right exit code, nothing left behind ---------------------------


def test_missing_input(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["convert", str(tmp_path / "nope.webm"), str(tmp_path / "out.webm")])
    _assert_one_error_line(result, 2, "nope.webm", "does not exist")
    assert _files(tmp_path) == []
    info = runner.invoke(app, ["info", str(tmp_path / "nope.webm")])
    _assert_one_error_line(info, 2, "does not exist")


@pytest.mark.parametrize("kind", ["empty", "truncated", "not-a-video"])
def test_unreadable_input(kind: str, runner: CliRunner, source: Path, tmp_path: Path) -> None:
    bad = tmp_path / ("bad.webm" if kind != "not-a-video" else "notes.mov")
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        whole = tmp_path / "whole.webm"
        video_io.write_video(whole, synthetic_clip(), 24)
        bad.write_bytes(whole.read_bytes()[:1500])
        whole.unlink()
    else:
        bad.write_text("just some text, not a video\n" * 10)
    before = _files(tmp_path)
    result = runner.invoke(app, ["convert", str(bad), str(tmp_path / "out.webm")])
    _assert_one_error_line(result, 1, bad.name)
    assert _files(tmp_path) == before
    info = runner.invoke(app, ["info", str(bad)])
    assert info.exit_code == 1 and info.stderr.startswith("Error: ")


@pytest.mark.parametrize(
    ("output", "extra", "needles"),
    [
        ("out.mp4", [], ["out.mp4", "cannot store alpha", ".webm"]),
        ("out.xyz", [], [".xyz", "unknown"]),
        ("out.webm", ["--format", "hevc"], ["hevc", "cannot store alpha"]),
        ("out.webm", ["--background", "notacolour"], ["notacolour"]),
        ("out.webm", ["--resize", "big"], ["--resize", "big"]),
        ("out.webm", ["--quality", "99"], ["quality 99", "0–63"]),
        ("out.mov", ["--quality", "10"], ["no quality setting"]),
        ("out.webm", ["--stop", "2", "--start", "3"], ["--stop 2"]),
        ("out.webm", ["--alpha-mode", "weird"], ["--alpha-mode"]),
        ("missing-dir/out.webm", [], ["missing-dir", "does not exist"]),
    ],
)
def test_usage_errors(
    output: str, extra: list[str], needles: list[str], runner: CliRunner, source: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / output), *extra])
    _assert_one_error_line(result, 2, *needles)
    assert _files(tmp_path) == []


def test_existing_output_without_overwrite(runner: CliRunner, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.webm"
    out.write_bytes(b"keep")
    result = runner.invoke(app, ["convert", str(source), str(out)])
    _assert_one_error_line(result, 2, "already exists", "--overwrite")
    assert out.read_bytes() == b"keep" and _files(tmp_path) == ["clip.webm"]
    replaced = runner.invoke(app, ["convert", str(source), str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.stderr
    assert video_io.probe(out).has_alpha and _files(tmp_path) == ["clip.webm"]


def test_existing_preview_without_overwrite(runner: CliRunner, source: Path, tmp_path: Path) -> None:
    video_io.preview_path(tmp_path / "clip.webm").write_bytes(b"old preview")
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / "clip.webm"), "--preview"])
    _assert_one_error_line(result, 2, "preview", "--overwrite")
    assert len(_files(tmp_path)) == 1


def _unwritable_directory(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        return locked
    # root ignores permission bits; /sys refuses new files even to root.
    if sys.platform.startswith("linux") and Path("/sys").is_dir():
        return Path("/sys")
    pytest.skip("no unwritable directory available to a root user on this system")


def test_unwritable_output_directory(runner: CliRunner, source: Path, tmp_path: Path) -> None:
    directory = _unwritable_directory(tmp_path)
    before = sorted(p.name for p in directory.iterdir())
    try:
        result = runner.invoke(app, ["convert", str(source), str(directory / "out.webm")])
        _assert_one_error_line(result, 1, str(directory))
        assert sorted(p.name for p in directory.iterdir()) == before
    finally:
        if directory.parent == tmp_path:
            directory.chmod(0o700)


def test_traceback_only_with_debug(runner: CliRunner, source: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["convert", str(source), str(tmp_path / "out.mp4")], env={"LAYERANIM_DEBUG": "1"}
    )
    assert result.exit_code != 0
    assert result.exception is not None and "cannot store alpha" in str(result.exception)


def test_convert_to_mp4_stacked_and_back(runner: CliRunner, source: Path, tmp_path: Path) -> None:
    stacked = tmp_path / "clip.mp4"
    result = runner.invoke(app, ["convert", str(source), str(stacked), "--format", "mp4-stacked", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["format"], report["codec"], report["has_alpha"]) == ("mp4-stacked", "h264", True)
    assert (report["width"], report["height"]) == (WIDTH, HEIGHT)
    info = runner.invoke(app, ["info", str(stacked), "--json"])
    assert info.exit_code == 0 and json.loads(info.stdout)["alpha_layout"] == "stacked"
    human = runner.invoke(app, ["info", str(stacked)])
    assert "mp4-stacked" in human.stdout
    back = tmp_path / "back.apng"
    assert runner.invoke(app, ["convert", str(stacked), str(back)]).exit_code == 0
    original = video_io.read_video(source).rgba_fhwc_uint8
    restored = video_io.read_video(back).rgba_fhwc_uint8
    assert restored.shape == original.shape
    assert np.abs(restored[..., 3].astype(int) - original[..., 3]).max() <= 16


def test_convert_gif_options(runner: CliRunner, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "clip.gif"
    result = runner.invoke(
        app, ["convert", str(source), str(out), "--dither", "bayer:3", "--alpha-threshold", "32"]
    )
    assert result.exit_code == 0, result.stderr
    alpha = video_io.read_video(out).rgba_fhwc_uint8[..., 3]
    np.testing.assert_array_equal(
        alpha, np.where(video_io.read_video(source).rgba_fhwc_uint8[..., 3] >= 32, 255, 0)
    )


@pytest.mark.parametrize(
    ("output", "extra", "needles"),
    [
        ("out.mp4", ["--format", "mp4-stacked", "--codec", "vp9"], ["vp9", "h264 or av1"]),
        ("out.webm", ["--codec", "av1"], ["mp4-stacked only"]),
        ("out.gif", ["--dither", "wobbly"], ["wobbly"]),
        ("out.webm", ["--dither", "bayer"], ["GIF only"]),
    ],
)
def test_new_option_errors_before_reading(
    output: str, extra: list[str], needles: list[str], runner: CliRunner, source: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["convert", str(source), str(tmp_path / output), *extra])
    _assert_one_error_line(result, 2, *needles)
    assert _files(tmp_path) == []
