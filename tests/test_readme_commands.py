"""Every `layeranim` command in README.md's bash blocks runs as written (issue 16, item 6).

The commands run one by one through bash, in the README's order, in a fresh folder holding a copy of
`examples/` (the inputs the README uses), with `layeranim` on PATH. Commands that render need the real
weights; they run with the tiny preset's switches appended (`--preset tiny --steps 1 …`, the variant the
README tells readers to use offline), everything else runs verbatim. The few commands that cannot run
here are listed in SKIPPED with the reason, and the test fails if one of those disappears from README
(so the list cannot drift).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _clips import synthetic_clip
from layeranim import video_io

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# Appended to a command that renders: the tiny preset, offline, at the smallest size.
TINY = {
    "image": "--preset tiny --steps 1 --width 64 --height 64",
    "animate": "--preset tiny --steps 1 --frames 4 --fast-decode",
    "generate": "--preset tiny --steps 1 --image-steps 1 --frames 4 --fast-decode --width 64 --height 64",
    "eval": "--preset tiny",  # the tiny random CLIP (not with --no-clip)
}
# The reader's own files that README's examples name without making them: stand-ins made by the test.
PROVIDED_CLIPS = ("clip.webm", "other.mov", "fox.webm")
PROVIDED_COPIES = {"prompts.txt": "examples/prompts.txt"}
# Commands that use what a later section makes (README says so beside them): run after that command.
AFTER = {
    "layeranim preview renders/ -o renders/index.html": (
        "layeranim generate --prompts examples/prompts.txt -o renders/ --seed 7 --json"
    ),
}
# Commands that cannot run on a CPU-only machine without network, and why.
SKIPPED = {
    "layeranim models download sd15": "downloads the real weights (network)",
    "layeranim train my.toml --data clips/ --output runs/ifa": "trains on the real SD1.5 weights",
    "layeranim train my.toml --resume latest": "resumes the real SD1.5 run above",
    "accelerate launch -m layeranim train my.toml": "several GPUs",
    'layeranim animate examples/sprite.png "waving" -o sprite.webm '
    "--ifa-weights runs/ifa/ifa.safetensors": "needs the IFA weights of the real SD1.5 run above",
    "layeranim generate --prompts prompts.txt -o ifa/ --seed 0 --ifa-weights runs/ifa/ifa.safetensors": (
        "needs the IFA weights of the real SD1.5 run above"
    ),
    "layeranim eval ifa/ baseline/ --json > table1.json": "compares with the ifa/ renders above",
    "layeranim eval baseline/ ifa/ --html table1.html --json > table1.json": "compares with the ifa/ renders",
    'layeranim generate "a paper lantern swaying, ghibli style" '
    "--lora owner/repo/ghibli_style.safetensors:0.8 "
    "--lora ./detail.safetensors --motion-lora guoyww/animatediff-motion-lora-zoom-in:0.7 "
    '--embedding ./EasyNegative.safetensors --negative-prompt "EasyNegative" --clip-skip 1 '
    "-o out/lantern.webm": "the reader's own LoRA, MotionLoRA and embedding files (placeholders)",
    "layeranim layers scene.toml -o out/ --target unity": (
        "renders the 512×512 example scene; tests/test_scene_example.py runs it on the tiny preset"
    ),
}


def readme_commands() -> list[str]:
    """The `layeranim …` (and `mkdir`) lines of README's bash blocks, comments stripped, in order."""
    text = README.read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        block = re.sub(r"\\\n\s*", "", block)  # join continuation lines
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line.startswith(("layeranim ", "accelerate launch -m layeranim", "mkdir ")):
                commands.append(line)
    return commands


def runnable(command: str) -> str | None:
    """The command as it runs here: verbatim, with the tiny switches appended, or None (skipped)."""
    if command in SKIPPED:
        return None
    words = shlex.split(command)
    if words[0] != "layeranim":
        return command
    name = words[1]
    if name in TINY and "--preset" not in words and "--no-clip" not in words:
        return f"{command} {TINY[name]}"
    return command


def test_readme_lists_the_skipped_commands() -> None:
    commands = readme_commands()
    assert len(commands) >= 15
    missing = [command for command in (*SKIPPED, *AFTER, *AFTER.values()) if command not in commands]
    assert not missing, f"SKIPPED names commands README no longer has: {missing}"


@pytest.mark.slow
def test_readme_commands_run_verbatim(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(REPO / "examples", work / "examples")
    clip = synthetic_clip()
    for name in PROVIDED_CLIPS:
        video_io.write_video(work / name, clip, 8)
    video_io.write_image(work / "still.png", clip[len(clip) // 2])  # the still clip.webm was "made from"
    for name, source in PROVIDED_COPIES.items():
        shutil.copy(REPO / source, work / name)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "layeranim").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m layeranim "$@"\n')
    (shim / "layeranim").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(sys.path),
        "LAYERANIM_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),
    }
    commands = readme_commands()
    for later, anchor in AFTER.items():  # move each right after the command that makes its input
        commands.remove(later)
        commands.insert(commands.index(anchor) + 1, later)
    ran = []
    for command in commands:
        line = runnable(command)
        if line is None:
            continue
        done = subprocess.run(
            ["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        ran.append(line)
    assert len(ran) >= 12
    # What the tour and the batch section say they write is there.
    for name in ("teapot.png", "teapot.webm", "lantern.mov", "lantern.webm", "lantern.apng", "preview.html"):
        assert (work / name).is_file(), name
    assert sorted(p.name for p in (work / "frames").iterdir())[0] == "frame_00000.png"
    assert len(list((work / "sprites").glob("*.webm"))) == 2  # examples/stills.txt: two stills
    assert (work / "runs" / "ifa-tiny" / "ifa.safetensors").is_file()  # examples/train_tiny.toml
    assert (work / "my.toml").read_text().startswith("[")  # --print-config > my.toml
