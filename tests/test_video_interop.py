"""Interoperability with the `ffmpeg` command-line tool, in both directions, alpha included."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from _clips import FRAMES, HEIGHT, WIDTH, synthetic_clip
from layeranim import video_io

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(
    FFMPEG is None, reason="the ffmpeg CLI is not on PATH (install it: apt-get install -y ffmpeg)"
)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return synthetic_clip()


@pytest.fixture(scope="module")
def raw_rgba(tmp_path_factory: pytest.TempPathFactory, clip: np.ndarray) -> Path:
    """The clip as raw RGBA bytes, the plainest input the ffmpeg CLI reads."""
    path = tmp_path_factory.mktemp("raw") / "clip.rgba"
    path.write_bytes(clip.tobytes())
    return path


def _ffmpeg(*args: str) -> None:
    assert FFMPEG is not None
    subprocess.run([FFMPEG, "-v", "error", "-nostdin", "-y", *args], check=True, timeout=60)


def _ffmpeg_encode(raw: Path, out: Path, *codec_args: str) -> None:
    raw_input = ("-f", "rawvideo", "-pix_fmt", "rgba", "-s", f"{WIDTH}x{HEIGHT}", "-r", "24", "-i", str(raw))
    _ffmpeg(*raw_input, *codec_args, str(out))


def _ffmpeg_decode(path: Path, *decoder: str) -> np.ndarray:
    raw = path.with_suffix(".decoded.rgba")
    _ffmpeg(*decoder, "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgba", str(raw))
    data = np.frombuffer(raw.read_bytes(), np.uint8)
    return data.reshape(-1, HEIGHT, WIDTH, 4)


def test_reads_vp9_alpha_webm_from_ffmpeg(clip: np.ndarray, raw_rgba: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.webm"
    _ffmpeg_encode(raw_rgba, out, "-c:v", "libvpx-vp9", "-pix_fmt", "yuva420p", "-crf", "30", "-b:v", "0")
    info = video_io.probe(out)
    assert (info.has_alpha, info.codec, info.frames) == (True, "vp9", FRAMES)
    decoded = video_io.read_video(out).rgba_fhwc_uint8
    assert decoded.shape == clip.shape
    assert np.abs(decoded[..., 3].astype(int) - clip[..., 3]).max() <= 16


def test_reads_vp8_alpha_webm_from_ffmpeg(clip: np.ndarray, raw_rgba: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli8.webm"
    vp8 = ("-c:v", "libvpx", "-pix_fmt", "yuva420p", "-auto-alt-ref", "0", "-b:v", "1M")
    _ffmpeg_encode(raw_rgba, out, *vp8)
    assert video_io.probe(out).has_alpha
    decoded = video_io.read_video(out).rgba_fhwc_uint8
    assert np.abs(decoded[..., 3].astype(int) - clip[..., 3]).max() <= 16


def test_reads_prores_4444_from_ffmpeg(clip: np.ndarray, raw_rgba: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.mov"
    _ffmpeg_encode(raw_rgba, out, "-c:v", "prores_ks", "-profile:v", "4444", "-pix_fmt", "yuva444p10le")
    info = video_io.probe(out)
    assert (info.has_alpha, info.codec, info.format) == (True, "prores", "mov")
    decoded = video_io.read_video(out).rgba_fhwc_uint8
    assert np.abs(decoded[..., 3].astype(int) - clip[..., 3]).max() <= 2
    visible = clip[..., 3] > 0
    assert np.abs(decoded[..., :3].astype(int) - clip[..., :3])[visible].max() <= 4


def test_ffmpeg_opaque_h264_reports_no_alpha(raw_rgba: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.mp4"
    try:
        _ffmpeg_encode(raw_rgba, out, "-c:v", "libx264", "-pix_fmt", "yuv420p")
    except subprocess.CalledProcessError:
        pytest.skip("this ffmpeg has no libx264 encoder")
    info = video_io.probe(out)
    assert (info.has_alpha, info.frames) == (False, FRAMES)
    assert np.all(video_io.read_video(out).rgba_fhwc_uint8[..., 3] == 255)


def test_ffmpeg_decodes_our_vp9_alpha_with_libvpx(clip: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "ours.webm"
    video_io.write_video(out, clip, 24)
    decoded = _ffmpeg_decode(out, "-c:v", "libvpx-vp9")  # the decoder goes before -i (§2.1)
    assert decoded.shape == clip.shape
    assert np.abs(decoded[..., 3].astype(int) - clip[..., 3]).max() <= 16
    if FFPROBE is not None:
        shown = subprocess.run(
            [FFPROBE, "-v", "error", "-show_streams", str(out)], capture_output=True, text=True, check=True
        ).stdout
        assert "TAG:alpha_mode=1" in shown
        assert "color_space=smpte170m" in shown


@pytest.mark.parametrize(
    ("name", "alpha_tolerance"),
    [("ours.mov", 1), ("ours-png.mov", 0), ("ours.mkv", 0), ("ours.apng", 0), ("ours.gif", 127)],
)
def test_ffmpeg_decodes_our_files_with_alpha(
    name: str, alpha_tolerance: int, clip: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / name
    video_io.write_video(out, clip, 24, format="mov-png" if name == "ours-png.mov" else None)
    decoded = _ffmpeg_decode(out)
    assert decoded.shape == clip.shape
    alpha_error = np.abs(decoded[..., 3].astype(int) - clip[..., 3])
    assert alpha_error.max() <= alpha_tolerance
    if name.endswith(".gif"):  # 1-bit: exactly the threshold at 128
        np.testing.assert_array_equal(decoded[..., 3], np.where(clip[..., 3] >= 128, 255, 0))
    assert decoded[..., 3].min() == 0  # transparency survived, not flattened to opaque


def test_ffmpeg_reads_our_mp4_stacked_halves_and_tags(clip: np.ndarray, tmp_path: Path) -> None:
    """An independent decoder sees colour on top, alpha as grey below, and the tags that mark the file."""
    out = tmp_path / "ours.mp4"
    video_io.write_video(out, clip, 24, format="mp4-stacked")
    raw = tmp_path / "stacked.rgb"
    _ffmpeg("-i", str(out), "-f", "rawvideo", "-pix_fmt", "rgb24", str(raw))
    half = HEIGHT + 16  # a multiple of 16 with at least 8 black rows under the clip
    stacked = np.frombuffer(raw.read_bytes(), np.uint8).reshape(FRAMES, 2 * half, WIDTH, 3).astype(int)
    top, bottom = stacked[:, :HEIGHT], stacked[:, half : half + HEIGHT]
    assert np.abs(bottom - clip[..., 3:4]).max() <= 16  # alpha in every channel of the lower half
    opaque = clip[..., 3] == 255
    assert np.abs(top - clip[..., :3])[opaque].mean() <= 3
    # The CLI does the same split with its own filters: crop both halves, alphamerge them back.
    merged = tmp_path / "merged.rgba"
    crop = f"crop={WIDTH}:{HEIGHT}:0"
    split = f"[0]{crop}:0[c];[0]{crop}:ih/2,format=gray[a];[c][a]alphamerge"
    _ffmpeg(
        "-i",
        str(out),
        "-filter_complex",
        split,
        "-fps_mode",
        "passthrough",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgba",
        str(merged),
    )
    rgba = np.frombuffer(merged.read_bytes(), np.uint8).reshape(clip.shape)
    ours = video_io.read_video(out).rgba_fhwc_uint8
    # Our reader agrees with the CLI's split (FFmpeg 5.1 and 8.1 round limited→full range differently).
    assert np.abs(rgba.astype(int) - ours).max() <= 2
    if FFPROBE is not None:
        shown = subprocess.run(
            [FFPROBE, "-v", "error", "-show_format", str(out)], capture_output=True, text=True, check=True
        ).stdout
        assert "TAG:alpha_layout=stacked" in shown
        assert f"TAG:clip_width={WIDTH}" in shown and f"TAG:clip_height={HEIGHT}" in shown
