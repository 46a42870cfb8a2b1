"""Draw examples/sprite.png, the RGBA still the README animates: a soft-edged orange circle on transparency.

python examples/make_sprite.py             # (re)writes examples/sprite.png, byte for byte the committed one
python examples/make_sprite.py OUT.png     # or writes it elsewhere
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64  # a multiple of 8, as renders need; the tiny preset renders at 64×64


def sprite(size: int = SIZE) -> np.ndarray:
    """(size, size, 4) uint8 straight RGBA: an orange disc whose alpha ramps to 0 over its last 3 pixels."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = (size - 1) / 2
    distance = np.sqrt((xx - centre) ** 2 + (yy - centre) ** 2)
    alpha_hw_01 = np.clip((size * 0.35 - distance) / 3.0 + 0.5, 0.0, 1.0)
    rgba_hwc_uint8 = np.zeros((size, size, 4), np.uint8)
    rgba_hwc_uint8[..., :3] = (240, 140, 40)  # colour under alpha 0 too: no dark fringe when resized
    rgba_hwc_uint8[..., 3] = np.rint(alpha_hw_01 * 255.0).astype(np.uint8)
    return rgba_hwc_uint8


def main(argv: list[str]) -> None:
    target = Path(argv[0]) if argv else Path(__file__).with_name("sprite.png")
    Image.fromarray(sprite(), "RGBA").save(target, optimize=True)
    print(target)


if __name__ == "__main__":
    main(sys.argv[1:])
