"""Headless Chromium for page tests, and a stacked-alpha MP4 built independently of layeranim's writer.

Chromium runs with SwiftShader (software WebGL): `--use-angle=swiftshader --enable-unsafe-swiftshader`
gives headless Chromium a WebGL context without a GPU (`--use-gl=swiftshader` gives none). Each run
gets its own profile folder, so parallel runs do not share state.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="headless Chromium is not installed (apt-get install chromium); browser test skipped",
)


def screenshot(
    page: Path, *, width: int, height: int, flags: tuple[str, ...] = (), budget_ms: int = 5000
) -> tuple[np.ndarray, str]:
    """Load `page` in headless Chromium; (the screenshot as (h, w, 3) uint8, the DOM after scripts ran)."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="layeranim-chromium-") as work:
        shot = Path(work) / "shot.png"
        command = [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader",
            "--hide-scrollbars",
            "--mute-audio",
            "--no-first-run",
            f"--user-data-dir={work}/profile",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={shot}",
            "--dump-dom",
            *flags,
            page.resolve().as_uri(),
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env={**os.environ, "LANG": "C"}, check=False
        )
        assert shot.is_file(), (
            f"Chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
        )
        with Image.open(shot) as image:
            pixels = np.asarray(image.convert("RGB")).copy()
    return pixels, result.stdout


def write_stacked_mp4(path: Path, rgba_fhwc_uint8: np.ndarray, fps: float = 24.0) -> Path:
    """A stacked-alpha H.264 MP4 (colour on top, alpha as gray below), written with PyAV directly.

    BT.601 limited range, tagged so, as browsers decode untagged SD video; width and height must be even.
    """
    height, width = rgba_fhwc_uint8.shape[1:3]
    assert width % 2 == 0 and height % 2 == 0
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(
            "libx264", rate=Fraction(fps).limit_denominator(1001), options={"crf": "10"}
        )
        stream.width, stream.height, stream.pix_fmt = width, 2 * height, "yuv420p"
        context = stream.codec_context
        context.colorspace, context.color_range, context.color_primaries, context.color_trc = 6, 1, 1, 13
        for rgba_hwc_uint8 in rgba_fhwc_uint8:
            alpha_hw3 = np.repeat(rgba_hwc_uint8[..., 3:4], 3, axis=-1)
            stacked_hwc = np.ascontiguousarray(np.concatenate([rgba_hwc_uint8[..., :3], alpha_hw3], axis=0))
            frame = av.VideoFrame.from_ndarray(stacked_hwc, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="itu601", dst_color_range=1
            )
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def over_color(rgba_hwc_uint8: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """The straight-alpha composite of one frame over a solid colour, as float RGB (0-255)."""
    alpha = rgba_hwc_uint8[..., 3:4].astype(np.float64) / 255.0
    return rgba_hwc_uint8[..., :3].astype(np.float64) * alpha + np.asarray(rgb, np.float64) * (1.0 - alpha)
