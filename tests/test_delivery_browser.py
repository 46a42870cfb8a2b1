"""The stacked-alpha player page in a real browser: headless Chromium's screenshot against the composite.

The expected image is re-derived here from the source frame (straight alpha over the page colour),
not read from anything layeranim wrote. The clip holds one still image so the screenshot does not
depend on when Chromium takes it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from _browser import needs_chromium, over_color, screenshot, write_stacked_mp4
from _clips import HEIGHT, WIDTH, synthetic_clip
from layeranim import alpha as alpha_ops
from layeranim import video_io
from layeranim.delivery import write_stacked_html
from layeranim.delivery.web import write_web_html
from layeranim.errors import OutputExistsError, UsageError

PAGE_RGB = (32, 96, 160)
PAGE_CSS = "#2060a0"


def _still_clip() -> np.ndarray:
    """Four identical frames of the synthetic clip's first frame, colour edge-padded under alpha 0."""
    frame = alpha_ops.pad_color_under_transparent(synthetic_clip(1))[0]
    return np.repeat(frame[None], 4, axis=0)


def _renderer(dom: str) -> str | None:
    match = re.search(r'data-renderer="([^"]+)"', dom)
    return match[1] if match else None


def _check_composite(pixels: np.ndarray, frame: np.ndarray) -> None:
    shown = pixels[:HEIGHT, :WIDTH].astype(np.float64)
    expected = over_color(frame, PAGE_RGB)
    error = np.abs(shown - expected)
    assert error.mean() <= 3.0, f"mean error {error.mean():.2f} levels"
    # Where alpha is 0, two pixels away from any edge (4:2:0 chroma, H.264 deblocking across the halves'
    # seam), the page shows through unchanged.
    clear = alpha_ops.pad_color_under_transparent(frame[None])[0][..., 3] == 0
    inner = np.zeros_like(clear)
    inner[2:-2, 2:-2] = clear[2:-2, 2:-2]
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            inner[2:-2, 2:-2] &= clear[2 + dy : HEIGHT - 2 + dy, 2 + dx : WIDTH - 2 + dx]
    assert inner.sum() > 500
    np.testing.assert_allclose(shown[inner], np.broadcast_to(PAGE_RGB, shown[inner].shape), atol=3)
    # Opaque and half-transparent pixels are not the page colour.
    assert np.abs(shown[frame[..., 3] == 255] - PAGE_RGB).sum(axis=-1).mean() > 60


@needs_chromium
@pytest.mark.parametrize(
    ("flags", "renderer"),
    [
        ((), "svg-filter"),  # file:// pages may not read the video into WebGL: the SVG filter draws it
        (("--allow-file-access-from-files",), "webgl"),  # as on a web server: the WebGL shader draws it
    ],
)
def test_stacked_page_composites_over_the_page_colour(
    tmp_path: Path, flags: tuple[str, ...], renderer: str
) -> None:
    clip = _still_clip()
    video = write_stacked_mp4(tmp_path / "clip.mp4", clip)
    page = write_stacked_html(video, background=PAGE_CSS)
    assert page == tmp_path / "clip.html"
    text = page.read_text()
    assert 'src="clip.mp4"' in text and "<script src" not in text  # relative video, player inlined
    pixels, dom = screenshot(page, width=320, height=240, flags=flags)
    assert _renderer(dom) == renderer
    _check_composite(pixels, clip[0])


@needs_chromium
def test_stacked_page_plays_video_io_mp4_stacked(tmp_path: Path) -> None:
    clip = _still_clip()
    video = tmp_path / "clip.mp4"
    video_io.write_video(video, clip, 24, format="mp4-stacked")
    page = write_stacked_html(video, tmp_path / "page.html", background=PAGE_CSS)
    pixels, dom = screenshot(page, width=320, height=240)
    assert _renderer(dom) == "svg-filter"
    _check_composite(pixels, clip[0])


@needs_chromium
@pytest.mark.parametrize(("prefer", "renderer"), [(None, "webm"), ("stacked", "svg-filter")])
def test_web_page_serves_the_webm_or_the_stacked_mp4(
    tmp_path: Path, prefer: str | None, renderer: str
) -> None:
    clip = _still_clip()
    webm = tmp_path / "clip.webm"
    video_io.write_video(webm, clip, 24, quality=10)
    stacked = write_stacked_mp4(tmp_path / "clip.stacked.mp4", clip)
    page = write_web_html(webm, stacked, tmp_path / "clip.html", background=PAGE_CSS)
    text = page.read_text()
    assert 'src="clip.webm"' in text and 'src="clip.stacked.mp4"' in text
    if prefer is not None:  # what Safari gets: the page's own choice, forced here
        page.write_text(
            text.replace(
                "data-layeranim-stacked data-clip",
                f'data-layeranim-stacked data-prefer="{prefer}" data-clip',
                1,
            )
        )
    pixels, dom = screenshot(page, width=320, height=240)
    assert _renderer(dom) == renderer
    _check_composite(pixels, clip[0])


def test_stacked_page_checks_its_arguments(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="video_path"):
        write_stacked_html(tmp_path / "missing.mp4")
    video = write_stacked_mp4(tmp_path / "clip.mp4", _still_clip())
    with pytest.raises(UsageError, match="html_path"):
        write_stacked_html(video, tmp_path / "page.txt")
    write_stacked_html(video)
    with pytest.raises(OutputExistsError):
        write_stacked_html(video)
    write_stacked_html(video, overwrite=True)
