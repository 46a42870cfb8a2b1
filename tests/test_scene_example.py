"""examples/scene/: the drawing script and the scene file it goes with are valid."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from layeranim.scene import load_scene

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "scene"


def test_example_scene_loads_with_the_drawn_layers(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "make_layers.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    shutil.copy(EXAMPLE / "scene.toml", tmp_path / "scene.toml")
    scene = load_scene(tmp_path / "scene.toml")
    assert [layer.name for layer in scene.layers] == ["sky", "kite", "title"]
    sky, kite, title = scene.layers
    assert (sky.width, sky.height) == (512, 512) and not sky.dynamic
    assert (kite.width, kite.height, kite.position) == (256, 256, (180, 60)) and kite.dynamic
    assert title.prompt is not None and (title.width, title.height) == (384, 64)
