"""Draw the example scene's two RGBA layers (sky.png, kite.png) next to scene.toml.

python examples/scene/make_layers.py            # writes examples/scene/sky.png and kite.png
python examples/scene/make_layers.py OUT_DIR    # or into OUT_DIR (then copy scene.toml there)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def sky(width: int = 512, height: int = 512) -> np.ndarray:
    """An opaque vertical gradient, deep blue to pale blue."""
    t = np.linspace(0.0, 1.0, height)[:, None]
    rgba = np.empty((height, width, 4), np.uint8)
    rgba[..., 0] = np.broadcast_to(40 + 150 * t, (height, width))
    rgba[..., 1] = np.broadcast_to(90 + 130 * t, (height, width))
    rgba[..., 2] = np.broadcast_to(200 + 50 * t, (height, width))
    rgba[..., 3] = 255
    return rgba


def kite(size: int = 256) -> np.ndarray:
    """A red diamond kite with a soft (anti-aliased) edge on a transparent background."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = (size - 1) / 2
    distance = np.abs(xx - centre) / 0.6 + np.abs(yy - centre)  # a diamond, narrower than tall
    coverage = np.clip(size * 0.42 - distance, 0.0, 1.0)
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2] = 220, 40, 50
    rgba[..., 3] = np.rint(coverage * 255).astype(np.uint8)
    return rgba


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sky()).save(folder / "sky.png")
    Image.fromarray(kite()).save(folder / "kite.png")
    print(folder / "sky.png")
    print(folder / "kite.png")


if __name__ == "__main__":
    main()
