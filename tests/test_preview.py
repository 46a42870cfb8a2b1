"""`layeranim preview`: the page, its gallery from manifests, converted copies, and its pixels in Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from _browser import needs_chromium, screenshot
from layeranim import alpha as alpha_ops
from layeranim import video_io
from layeranim.cli import app

RED = (200, 30, 30)
H, W = 64, 96


def _half_clip() -> np.ndarray:
    """Four frames: the left half fully transparent, the right half opaque red."""
    clip = np.zeros((4, H, W, 4), np.uint8)
    clip[:, :, W // 2 :, :3] = RED
    clip[:, :, W // 2 :, 3] = 255
    return clip


@pytest.fixture()
def renders(tmp_path: Path) -> Path:
    """A folder like a batch run leaves: a WebM with its manifest, and a ProRes .mov without one."""
    folder = tmp_path / "renders"
    folder.mkdir()
    video_io.write_video(folder / "a.webm", _half_clip(), 24)
    video_io.write_video(folder / "b.mov", _half_clip(), 12)
    manifest = {"output": "a.webm", "item": {"prompt": "a red <box> & friends"}, "seed": 1234}
    (folder / "a.webm.json").write_text(json.dumps(manifest))
    return folder


def _one_error_line(result: object, code: int, needle: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], lines
    assert result.stdout == ""  # type: ignore[attr-defined]


def test_preview_gallery_from_a_folder(renders: Path) -> None:
    page = renders / "index.html"
    result = CliRunner().invoke(app, ["preview", str(renders), "-o", str(page), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["page"] == str(page)
    by_name = {Path(clip["source"]).name: clip for clip in report["clips"]}
    assert set(by_name) == {"a.webm", "b.mov"}
    assert by_name["a.webm"]["converted"] is False and by_name["a.webm"]["seed"] == 1234
    assert by_name["a.webm"]["prompt"] == "a red <box> & friends"
    copy = Path(by_name["b.mov"]["video"])
    assert by_name["b.mov"]["converted"] is True and copy.parent == renders / "index_files"
    info = video_io.probe(copy)
    assert (info.format, info.has_alpha, info.frames, info.fps) == ("webm", True, 4, 12.0)

    text = page.read_text()
    assert 'src="a.webm"' in text and f'src="index_files/{copy.name}"' in text  # relative references
    assert "a red &lt;box&gt; &amp; friends" in text and "seed 1234" in text
    assert "<script src" not in text and "http" not in text.replace("http://www.w3.org/2000/svg", "")


def test_preview_prints_the_page_and_refuses_to_replace_it(renders: Path) -> None:
    runner = CliRunner()
    page = renders / "p.html"
    result = runner.invoke(app, ["preview", str(renders / "a.webm"), "-o", str(page)])
    assert result.exit_code == 0 and result.stdout == f"{page}\n"
    _one_error_line(runner.invoke(app, ["preview", str(renders / "a.webm"), "-o", str(page)]), 2, "overwrite")
    assert (
        runner.invoke(app, ["preview", str(renders / "a.webm"), "-o", str(page), "--overwrite"]).exit_code
        == 0
    )


def test_preview_usage_errors(renders: Path) -> None:
    runner = CliRunner()
    _one_error_line(
        runner.invoke(app, ["preview", str(renders / "nope.webm"), "-o", "x.html"]), 2, "nope.webm"
    )
    _one_error_line(
        runner.invoke(app, ["preview", str(renders / "a.webm"), "-o", str(renders / "p.txt")]), 2, ".html"
    )
    _one_error_line(
        runner.invoke(
            app, ["preview", str(renders / "a.webm"), "-o", str(renders / "p.html"), "--color", "nah"]
        ),
        2,
        "colour",
    )
    (renders / "bad.json").write_text('{"output": "missing.webm"}')
    _one_error_line(
        runner.invoke(app, ["preview", str(renders / "bad.json"), "-o", str(renders / "p.html")]), 2, "output"
    )
    assert not (renders / "p.html").exists()


def _frame_box(pixels: np.ndarray) -> tuple[int, int]:
    """Top-left (y, x) of the first card's video, found by its opaque red right half."""
    red = np.all(np.abs(pixels.astype(int) - RED) <= 6, axis=-1)
    ys, _ = np.nonzero(red)
    assert len(ys) > 0.9 * H * (W // 2), "the clip's opaque red half is not on the page"
    top = ys.min()
    row = np.nonzero(red[top + H // 2])[0]
    return int(top), int(row.min() - W // 2)


@needs_chromium
def test_preview_page_shows_the_checkerboard_from_disk(renders: Path) -> None:
    page = renders / "index.html"
    assert CliRunner().invoke(app, ["preview", str(renders / "a.webm"), "-o", str(page)]).exit_code == 0
    pixels, _ = screenshot(page, width=800, height=400)
    top, left = _frame_box(pixels)
    shown = pixels[top : top + H, left : left + W // 2 - 4].astype(int)
    board = alpha_ops.checkerboard_uint8(H, W)[:, : W // 2 - 4].astype(int)
    assert set(np.unique(board)) == {alpha_ops.CHECKER_DARK_UINT8, alpha_ops.CHECKER_LIGHT_UINT8}
    assert np.abs(shown - board[..., None]).max() <= 3  # the transparent half shows the checkerboard


@needs_chromium
def test_preview_page_alpha_only_view(renders: Path) -> None:
    page = renders / "index.html"
    assert CliRunner().invoke(app, ["preview", str(renders / "a.webm"), "-o", str(page)]).exit_code == 0
    checker, _ = screenshot(page, width=800, height=400)
    top, left = _frame_box(checker)
    alpha_page = renders / "alpha.html"
    alpha_page.write_text('<meta http-equiv="refresh" content="0; url=index.html#view=alpha">')
    pixels, _ = screenshot(alpha_page, width=800, height=400)
    shown = pixels[top : top + H, left : left + W].astype(int)
    assert np.abs(shown[:, 2 : W // 2 - 4]).max() <= 3  # alpha 0 → black
    assert np.abs(shown[:, W // 2 + 4 : W - 2] - 255).max() <= 3  # alpha 255 → white


@needs_chromium
def test_preview_page_unstacks_an_mp4_stacked_clip(tmp_path: Path) -> None:
    video_io.write_video(tmp_path / "a.mp4", _half_clip(), 24, format="mp4-stacked")
    page = tmp_path / "index.html"
    assert CliRunner().invoke(app, ["preview", str(tmp_path / "a.mp4"), "-o", str(page)]).exit_code == 0
    pixels, _ = screenshot(page, width=800, height=400)
    top, left = _frame_box(pixels)  # the red half is exactly the clip's size: the padding is cropped
    red = np.all(np.abs(pixels.astype(int) - RED) <= 6, axis=-1)
    assert red[top + 2 : top + H - 2, left + W // 2 + 2 : left + W - 2].all()  # edges: H.264 deblocking
    assert not red[top + H + 2 : top + H + 8, left + W // 2 : left + W].any()  # no alpha half below
    shown = pixels[top + 2 : top + H - 2, left + 2 : left + W // 2 - 4].astype(int)
    board = alpha_ops.checkerboard_uint8(H, W)[2 : H - 2, 2 : W // 2 - 4].astype(int)
    assert np.abs(shown - board[..., None]).max() <= 6  # the transparent half shows the checkerboard


def test_preview_converts_a_png_sequence_and_keeps_existing_copies(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    video_io.write_video(frames, _half_clip(), 8, format="png-seq")
    (tmp_path / "frames.json").write_text(json.dumps({"output": "frames", "prompt": "still red", "seed": 5}))
    page = tmp_path / "page.html"
    runner = CliRunner()
    result = runner.invoke(app, ["preview", str(tmp_path / "frames.json"), "-o", str(page), "--json"])
    assert result.exit_code == 0, result.stderr
    (clip,) = json.loads(result.stdout)["clips"]
    assert (clip["prompt"], clip["seed"], clip["converted"]) == ("still red", 5, True)
    copy = Path(clip["video"])
    decoded = video_io.read_video(copy)
    assert decoded.rgba_fhwc_uint8.shape == (4, H, W, 4) and decoded.fps == 8.0
    assert np.abs(decoded.rgba_fhwc_uint8[..., 3].astype(int) - _half_clip()[..., 3]).mean() < 2

    # The folder itself is a sequence too; its page's copy already exists: refused before any work.
    page.unlink()
    before = copy.read_bytes()
    _one_error_line(runner.invoke(app, ["preview", str(frames), "-o", str(page)]), 2, "copy")
    assert not page.exists() and copy.read_bytes() == before
