"""Single RGBA images (the stage-one PNG): read, write, and whether alpha is stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from layeranim.errors import UnsupportedFormatError, UsageError
from layeranim.video_io._inputs import PIL_ERRORS, check_input_path, read_error, webp_has_alpha
from layeranim.video_io.atomic import atomic_output

_IMAGE_FORMATS = {".png": "PNG", ".webp": "WEBP", ".jpg": "JPEG", ".jpeg": "JPEG"}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")  # Pillow modes that carry alpha


def pil_has_alpha(image: Image.Image) -> bool:
    """Whether an open Pillow image stores alpha: an alpha mode, or a transparent palette entry."""
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def read_image(path: str | Path) -> np.ndarray:
    """Read an image (PNG, WebP, JPEG, …; the first frame if animated) as straight RGBA (h, w, 4) uint8.

    Images without alpha come back opaque; `image_has_alpha(path)` tells whether alpha was stored.
    """
    source = check_input_path(path)
    if source.is_dir():
        raise UsageError(f"input {str(path)!r} is a directory; give an image file.")
    try:
        with Image.open(source) as image:
            image.seek(0)
            return np.asarray(image.convert("RGBA")).copy()
    except PIL_ERRORS as exc:
        raise read_error(source, exc) from exc


def image_has_alpha(path: str | Path) -> bool:
    """Whether an image file stores alpha (an alpha channel, or a transparent palette entry)."""
    source = check_input_path(path)
    try:
        with Image.open(source) as image:
            if image.format == "WEBP":
                return webp_has_alpha(source)
            return pil_has_alpha(image)
    except PIL_ERRORS as exc:
        raise read_error(source, exc) from exc


def write_image(path: str | Path, rgba_hwc_uint8: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write one straight RGBA image: PNG, lossless WebP, or JPEG (only if fully opaque). Atomic."""
    if (
        not isinstance(rgba_hwc_uint8, np.ndarray)
        or rgba_hwc_uint8.dtype != np.uint8
        or rgba_hwc_uint8.ndim != 3
        or rgba_hwc_uint8.shape[-1] != 4
    ):
        raise UsageError("image must be a uint8 (height, width, 4) straight RGBA array.")
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in _IMAGE_FORMATS:
        raise UnsupportedFormatError(
            f"image extension {suffix or '(none)'!r} of {str(path)!r} is not supported; use .png or .webp."
        )
    pil_format = _IMAGE_FORMATS[suffix]
    if pil_format == "JPEG" and np.any(rgba_hwc_uint8[..., 3] < 255):
        raise UnsupportedFormatError(f"JPEG cannot store alpha; write {target.with_suffix('.png')} instead.")
    image = Image.fromarray(np.ascontiguousarray(rgba_hwc_uint8))
    with atomic_output(target, overwrite) as temp:
        if pil_format == "JPEG":
            image.convert("RGB").save(temp, format="JPEG", quality=95)
        elif pil_format == "WEBP":
            image.save(temp, format="WEBP", lossless=True, exact=True)
        else:
            image.save(temp, format="PNG")
    return target
