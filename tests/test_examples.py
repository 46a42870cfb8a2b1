"""The shell examples in examples/ run as documented (the batch examples are in test_cli_batch.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_convert_example(tmp_path: Path) -> None:
    env = {**os.environ, "LAYERANIM": f"{sys.executable} -m layeranim", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO / "examples" / "convert.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [Path(r.get("output") or r["path"]).name for r in reports][-4:] == [
        "clip.webm",
        "clip.mov",
        "clip.webp",
        "half.apng",
    ]
    assert all(r.get("has_alpha", r.get("alpha")) for r in reports)
    assert "Error:" in done.stdout and "mp4" in done.stdout  # the refusal, printed from err.txt
    assert (tmp_path / "flat.preview.mp4").exists() or (tmp_path / "flat.preview.gif").exists()
