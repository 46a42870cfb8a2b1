"""The public names the issues promise, and that they resolve lazily."""

from __future__ import annotations

import subprocess
import sys

import layeranim


def test_public_names_resolve() -> None:
    for name in layeranim.__all__:
        assert getattr(layeranim, name) is not None


def test_import_is_light() -> None:
    """`import layeranim` (what `--version` pays) must not import torch or diffusers."""
    code = "import sys, layeranim; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
