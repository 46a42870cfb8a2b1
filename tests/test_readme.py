"""README's Python API example runs as written (tiny preset, CPU, in a temporary folder)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "the Python API section holds the render example and the streaming one"
    return blocks


def python_api_example() -> str:
    return python_api_examples()[0]


def test_readme_python_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(python_api_example(), str(README), "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out.splitlines()

    assert printed[0] == "lantern.png lantern.latent.safetensors"
    clip = json.loads(printed[1].replace("'", '"').replace("True", "true").replace("False", "false"))
    assert clip["input"] == "lantern.latent.safetensors" and clip["frames"] == 4
    assert json.loads((tmp_path / "lantern.webm.json").read_text())["seed"] == 7
    assert printed[2] == ("{'ok': 2, 'failed': 0, 'skipped': 0} {'ok': 0, 'failed': 0, 'skipped': 2}")
    assert len(list((tmp_path / "renders").glob("*.webm"))) == 2
    assert len(list((tmp_path / "renders").glob("*.webm.json"))) == 2


def test_readme_streaming_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(python_api_examples()[1], str(README), "exec"), {"__name__": "readme_example"})

    assert capsys.readouterr().out.splitlines() == ["stacked"]
    for name in ("long.webm", "web.mp4", "small.gif"):
        assert (tmp_path / name).stat().st_size > 0
