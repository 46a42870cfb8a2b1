"""OpenCV, imported on first use (a dependency of layeranim; missing only from a broken install)."""

from __future__ import annotations

from types import ModuleType

from layeranim.errors import LayerAnimError


def cv2_module() -> ModuleType:
    """The `cv2` module, or a `LayerAnimError` that says how to install it."""
    try:
        import cv2
    except ImportError as exc:
        raise LayerAnimError(
            "layeranim eval needs OpenCV for optical flow and warping; install it with "
            "pip install opencv-python-headless."
        ) from exc
    return cv2
