# ruff: noqa: E501  (the table keeps one row per line)
"""Bad inputs across every command, as one table (issue 16, item 8).

Each row runs the real command line in-process and checks: the exit code (2 usage, 1 failure), exactly
one `Error: …` line on stderr naming what went wrong, no traceback, no "unexpected … report it", nothing
on stdout, and the output location (and the inputs) unchanged, byte for byte.

Rows whose behaviour is still wrong are marked `xfail(strict=True)`: they turn into failures (XPASS) the
moment the fix is wired in, so whoever wires it removes the mark. Dangerous rows (100000×100000 sizes) run
behind fakes that raise MemoryError instead of allocating, so an unfixed build cannot take the machine down.

Placeholders in argv: `{d}` the shared inputs folder, `{o}` the row's own output folder (pre-filled with
`existing.*`, a user folder `userdir/thesis.txt`, a file `notes.txt`, an empty `out/` and a `ro/` folder
that fakes a read-only file system when the row asks for it).
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from _clips import synthetic_clip
from layeranim import video_io
from layeranim.cli import app

WIRED_LATER = "issue 16: wired at integration"
NON_UTF8 = os.fsdecode(b"caf\xe9 au lait")  # what Python hands over for Latin-1 bytes in argv
TINY = ("--preset", "tiny", "--steps", "1", "--width", "64", "--height", "64", "--seed", "1", "-q")


@dataclass(frozen=True)
class Row:
    """One bad input: the argv, the exit code, a phrase the Error line must hold, what it must not say."""

    id: str
    argv: tuple[str, ...]
    code: int
    needle: str = ""  # case-insensitive substring of the Error line
    forbid: tuple[str, ...] = ()  # substrings the Error line must not contain
    fault: str | None = None  # a fault to inject: readonly, enospc, huge_alloc, torch_disk_full
    todo: bool = False  # still wrong today: xfail(strict=True) until wired
    usage_text: bool = False  # click may print the usage block beside the Error line
    may_create: str | None = None  # a folder below {o} the command may leave (a train run: its checkpoints)


def row(id: str, *argv: str, code: int, needle: str = "", **kw: Any) -> Any:
    spec = Row(id=id, argv=argv, code=code, needle=needle, **kw)
    marks = [pytest.mark.xfail(strict=True, reason=WIRED_LATER)] if spec.todo else []
    return pytest.param(spec, id=id, marks=marks)


# fmt: off
ROWS = [
    # --- the app and its groups --------------------------------------------------------------------
    row("no-subcommand", code=2, usage_text=True),
    row("models-no-subcommand", "models", code=2, usage_text=True),
    row("dataset-no-subcommand", "dataset", code=2, usage_text=True),
    row("unknown-command", "paint", code=2, needle="No such command"),
    row("unknown-option", "--colour", code=2, needle="No such option"),
    # --- image -----------------------------------------------------------------------------------------
    row("image-no-args", "image", code=2, needle="Missing argument"),
    row("image-no-output", "image", "a fox", code=2, needle="--output"),
    row("image-video-extension", "image", "a fox", "-o", "{o}/fox.webm", code=2, needle="fox.webm"),
    row("image-exists", "image", "a fox", "-o", "{o}/existing.png", code=2, needle="exists"),
    row("image-parent-is-file", "image", "a fox", "-o", "{o}/notes.txt/fox.png", code=1, needle="notes.txt"),
    row("image-steps-0", "image", "a fox", "-o", "{o}/fox.png", "--steps", "0", code=2, needle="--steps"),
    row("image-guidance-neg", "image", "a fox", "-o", "{o}/f.png", "--guidance", "-1", code=2, needle="--guidance"),
    row("image-seed-neg", "image", "a fox", "-o", "{o}/fox.png", "--seed", "-1", code=2, needle="--seed"),
    row("image-width-small", "image", "a fox", "-o", "{o}/fox.png", "--width", "8", code=2, needle="--width"),
    row("image-device", "image", "a fox", "-o", "{o}/fox.png", *TINY[:2], "--device", "tpu", code=2, needle="tpu"),
    row("image-dtype", "image", "a fox", "-o", "{o}/fox.png", *TINY[:2], "--dtype", "fp8", code=2, needle="fp8"),
    row("image-preset", "image", "a fox", "-o", "{o}/fox.png", "--preset", "huge", code=2, needle="--preset"),
    row("image-scheduler", "image", "a fox", "-o", "{o}/fox.png", *TINY, "--scheduler", "magic", code=2, needle="magic"),
    row("image-offload", "image", "a fox", "-o", "{o}/fox.png", *TINY, "--offload", "disk", code=2, needle="disk"),
    row("image-width-100000", "image", "a fox", "-o", "{o}/fox.png", "--width", "100000", code=2, needle="8192"),
    row("image-width-not-64", "image", "a fox", "-o", "{o}/fox.png", "--width", "100", code=2, needle="64"),
    row("image-prompt-not-utf8", "image", NON_UTF8, "-o", "{o}/fox.png", *TINY, code=2, needle="UTF-8"),
    row("image-negative-not-utf8", "image", "a fox", "-n", NON_UTF8, "-o", "{o}/f.png", *TINY, code=2, needle="UTF-8"),
    row("image-disk-full", "image", "a fox", "-o", "{o}/fox.png", *TINY, code=1, needle="no space left on device", fault="enospc"),
    row("image-read-only", "image", "a fox", "-o", "{o}/ro/fox.png", code=1, needle="read-only", fault="readonly"),
    # --- animate ---------------------------------------------------------------------------------------
    row("animate-no-args", "animate", code=2, needle="--output"),
    row("animate-no-image", "animate", "-o", "{o}/a.webm", code=2, needle="image"),
    row("animate-missing-image", "animate", "{d}/none.png", "wave", "-o", "{o}/a.webm", code=2, needle="none.png"),
    row("animate-bad-extension", "animate", "{d}/still.png", "wave", "-o", "{o}/a.xyz", code=2, needle=".xyz"    ),
    row("animate-exists", "animate", "{d}/still.png", "wave", "-o", "{o}/existing.webm", code=2, needle="already exists"),
    row("animate-frames-1", "animate", "{d}/still.png", "wave", "-o", "{o}/a.webm", "--frames", "1", code=2, needle="--frames"),
    row("animate-fps-0", "animate", "{d}/still.png", "wave", "-o", "{o}/a.webm", "--fps", "0", code=2, needle="--fps"),
    row("animate-frames-10000", "animate", "{d}/still.png", "wave", "-o", "{o}/a.webm", "--frames", "10000", code=2, needle="--frames"),
    row("animate-inputs-missing", "animate", "--inputs", "{d}/none.txt", "-o", "{o}/out/", code=2, needle="none.txt"),
    row("animate-prompt-not-utf8", "animate", "{d}/still.png", NON_UTF8, "-o", "{o}/a.webm", *TINY, "--frames", "2", code=2, needle="UTF-8"),
    row("animate-unsafe-checkpoint", "animate", "{d}/still.png", "wave", "-o", "{o}/a.webm", *TINY, "--frames", "2", "--motion-adapter", "{d}/evil.ckpt", code=1, needle="evil.ckpt", forbid=("weights_only", "False")),
    # --- generate --------------------------------------------------------------------------------------
    row("generate-no-output", "generate", "a fox", code=2, needle="--output"),
    row("generate-no-prompt", "generate", "-o", "{o}/g.webm", code=2, needle="prompt"),
    row("generate-frames-1", "generate", "a fox", "-o", "{o}/g.webm", "--frames", "1", code=2, needle="--frames"),
    row("generate-exists", "generate", "a fox", "-o", "{o}/existing.webm", code=2, needle="already exists"),
    row("generate-bad-format", "generate", "a fox", "-o", "{o}/g.webm", "--format", "avi", code=2, needle="avi"),
    row("generate-prompts-missing", "generate", "--prompts", "{d}/none.txt", "-o", "{o}/out/", code=2, needle="none.txt"),
    row("generate-prompts-not-utf8-file", "generate", "--prompts", "{d}/latin1.txt", "-o", "{o}/out/", code=2, needle="UTF-8"),
    row("generate-prompts-bad-json", "generate", "--prompts", "{d}/broken.jsonl", "-o", "{o}/out/", code=2, needle="line 1"),
    row("generate-prompts-unknown-key", "generate", "--prompts", "{d}/unknown_key.jsonl", "-o", "{o}/out/", code=2, needle="colour"),
    row("generate-template-unknown-field", "generate", "--prompts", "{d}/p.txt", "-o", "{o}/out/{name}.webm", code=2, needle="{name}"),
    row("generate-template-conversion", "generate", "--prompts", "{d}/p.txt", "-o", "{o}/out/{slug!r}.webm", code=2, needle="conversion"),
    row("generate-template-format-spec", "generate", "--prompts", "{d}/p.txt", "-o", "{o}/out/{slug:>40}.webm", code=2, needle="format spec"),
    row("generate-template-pad-width", "generate", "--prompts", "{d}/p.txt", "-o", "{o}/out/{index:0200d}.webm", code=2, needle="12"),
    row("generate-template-issue-attack", "generate", "--prompts", "{d}/p.txt", "-o", "{o}/out/{slug!r:>99999999}.webm", code=2, needle="conversion"),
    row("generate-item-output-format-spec", "generate", "--prompts", "{d}/spec_attack.jsonl", "-o", "{o}/out/", code=2, needle="format spec"),
    row("generate-item-output-too-long", "generate", "--prompts", "{d}/long_name.jsonl", "-o", "{o}/out/", code=2, needle="255"),
    row("generate-template-attribute", "generate", "--prompts", "{d}/p.txt", "-o", "{o}/out/{seed.real}.webm", code=2, needle="seed.real"),
    row("generate-batch-dotdot", "generate", "--prompts", "{d}/dotdot.jsonl", "-o", "{o}/out/", code=2, needle=".."),
    row("generate-batch-absolute", "generate", "--prompts", "{d}/absolute.jsonl", "-o", "{o}/out/", code=2, needle="absolute"),
    row("generate-batch-symlink", "generate", "--prompts", "{d}/through_link.jsonl", "-o", "{o}/linked/", code=2, needle="symlink"),
    row("generate-shard-3-of-2", "generate", "--prompts", "{d}/p.txt", "-o", "{o}/out/", "--shard", "3/2", code=2, needle="--shard"),
    row("generate-shard-garbage", "generate", "--prompts", "{d}/p.txt", "-o", "{o}/out/", "--shard", "x", code=2, needle="--shard"),
    row("generate-huge", "generate", "a fox", "-o", "{o}/g.webm", "--width", "100000", "--height", "100000", code=2, needle="8192"),
    row("generate-negative-not-utf8", "generate", "a fox", "-n", NON_UTF8, "-o", "{o}/g.webm", *TINY, code=2, needle="UTF-8"),
    # usage errors that need no model come before weights are resolved (a missing --model is not looked at)
    row("animate-missing-image-no-weights", "animate", "{d}/none.png", "wave", "-o", "{o}/a.webm", "--model", "{d}/no-model", code=2, needle="none.png"),
    row("animate-frames-10000-no-weights", "animate", "{d}/still.png", "wave", "-o", "{o}/a.webm", "--frames", "10000", "--model", "{d}/no-model", code=2, needle="--frames"),
    row("generate-shard-3-of-2-no-weights", "generate", "--prompts", "{d}/p.txt", "-o", "{o}/out/", "--shard", "3/2", "--model", "{d}/no-model", code=2, needle="--shard"),
    row("generate-huge-no-weights", "generate", "a fox", "-o", "{o}/g.webm", "--width", "100000", "--model", "{d}/no-model", code=2, needle="8192"),
    row("generate-template-no-weights", "generate", "--prompts", "{d}/p.txt", "-o", "{o}/out/{slug:>99999999}.webm", "--model", "{d}/no-model", code=2, needle="format spec"),
    # a batch whose models cannot be loaded fails once, not once per item
    row("generate-batch-no-weights", "generate", "--prompts", "{d}/p.txt", "-o", "{o}/out/", "--steps", "1", code=1, needle="weights", may_create="out"),
    # --- convert ---------------------------------------------------------------------------------------
    row("convert-no-args", "convert", code=2, needle="Missing argument"),
    row("convert-missing-input", "convert", "{d}/none.webm", "{o}/c.webm", code=2, needle="none.webm"),
    row("convert-unknown-extension", "convert", "{d}/clip.mkv", "{o}/c.xyz", code=2, needle=".xyz"),
    row("convert-exists", "convert", "{d}/clip.mkv", "{o}/existing.webm", code=2, needle="already exists"),
    row("convert-missing-folder", "convert", "{d}/clip.mkv", "{o}/nowhere/c.webm", code=2, needle="does not exist"),
    row("convert-parent-is-file", "convert", "{d}/clip.mkv", "{o}/notes.txt/c.webm", code=2, needle="not a directory"),
    row("convert-not-a-video", "convert", "{d}/notes.txt", "{o}/c.webm", code=1, needle="notes.txt"),
    row("convert-bad-format", "convert", "{d}/clip.mkv", "{o}/c.webm", "--format", "avi", code=2, needle="avi"    ),
    row("convert-resize-garbage", "convert", "{d}/clip.mkv", "{o}/c.webm", "--resize", "big", code=2, needle="--resize"),
    row("convert-quality", "convert", "{d}/clip.mkv", "{o}/c.webm", "--quality", "999", code=2, needle="999"),
    row("convert-background", "convert", "{d}/clip.mkv", "{o}/c.webm", "--background", "plaid", code=2, needle="plaid"),
    row("convert-fps-0", "convert", "{d}/clip.mkv", "{o}/c.webm", "--fps", "0", code=2, needle="--fps"),
    row("convert-png-folder-with-user-files", "convert", "{d}/clip.mkv", "{o}/userdir", "--format", "png-seq", "--overwrite", code=2, needle="thesis.txt"),
    row("convert-resize-100000", "convert", "{d}/clip.mkv", "{o}/c.webm", "--resize", "100000x100000", code=2, needle="--resize", fault="huge_alloc"),
    row("convert-resize-20000", "convert", "{d}/clip.mkv", "{o}/c.webm", "--resize", "20000x20000", code=2, needle="--resize", fault="huge_alloc"),
    row("convert-read-only", "convert", "{d}/clip.mkv", "{o}/ro/c.webm", code=1, needle="read-only", fault="readonly"),
    row("convert-disk-full", "convert", "{d}/clip.mkv", "{o}/c.webm", code=1, needle="no space left on device", fault="enospc"),
    row("convert-disk-full-png-seq", "convert", "{d}/clip.mkv", "{o}/frames", "--format", "png-seq", code=1, needle="no space left on device", fault="enospc"),
    # --- info ------------------------------------------------------------------------------------------
    row("info-no-args", "info", code=2, needle="Missing argument"),
    row("info-missing", "info", "{d}/none.webm", code=2, needle="none.webm"),
    row("info-not-a-video", "info", "{d}/notes.txt", code=1, needle="notes.txt"),
    row("info-empty-file", "info", "{d}/empty.webm", code=1, needle="empty.webm"),
    row("info-empty-folder", "info", "{d}/emptydir", code=1, needle="no .png frames"),
    row("info-truncated-png", "info", "{d}/truncated.png", code=1, needle="truncated.png"),
    row("info-bad-option", "info", "{d}/clip.mkv", "--yaml", code=2, needle="No such option"),
    # --- doctor, models --------------------------------------------------------------------------------
    row("doctor-bad-option", "doctor", "--fix", code=2, needle="No such option"),
    row("models-unknown-subcommand", "models", "delete", code=2, needle="No such command"),
    row("models-list-family", "models", "list", "sd3", code=2, needle="sd3"),
    row("models-download-family", "models", "download", "sd3", code=2, needle="sd3"),
    row("models-download-component", "models", "download", "-c", "vae", code=2, needle="vae"),
    row("models-path-unknown", "models", "path", "vae", code=2, needle="vae"),
    row("models-path-family", "models", "path", "base", "--family", "sd3", code=2, needle="sd3"),
    row("models-path-not-cached", "models", "path", "base", code=1, needle="base"),
    row("models-download-offline", "models", "download", "-c", "transparent_decoder", code=1, needle="offline"),
    # --- train -----------------------------------------------------------------------------------------
    row("train-missing-config", "train", "{d}/none.toml", code=2, needle="none.toml"),
    row("train-broken-toml", "train", "{d}/broken.toml", code=2, needle="broken.toml"),
    row("train-unknown-key", "train", "{d}/unknown_key.toml", code=2, needle="colour"),
    row("train-set-garbage", "train", "--preset", "tiny", "--set", "nonsense", code=2, needle="nonsense"),
    row("train-set-unknown", "train", "--preset", "tiny", "--set", "optim.nope=1", code=2, needle="nope"),
    row("train-preset", "train", "--preset", "huge", code=2, needle="huge"),
    row("train-no-data", "train", "--preset", "tiny", "-o", "{o}/run", code=2, needle="data"),
    row("train-missing-data", "train", "--preset", "tiny", "--data", "{d}/none", "-o", "{o}/run", code=2, needle="none"),
    row("train-output-is-file", "train", "--preset", "tiny", "--data", "{d}/clips", "-o", "{o}/notes.txt", code=2, needle="notes.txt"),
    row("train-resume-missing", "train", "--preset", "tiny", "--data", "{d}/clips", "-o", "{o}/run", "--resume", "{d}/none", code=2, needle="none"),
    row("train-max-steps-0", "train", "--preset", "tiny", "--data", "{d}/clips", "-o", "{o}/run", "--max-steps", "0", code=2, needle="max_steps"),
    row("train-disk-full", "train", "--preset", "tiny", "--data", "{d}/clips", "-o", "{o}/run", "--max-steps", "1", "-q", code=1, needle="no space left on device", fault="enospc", may_create="run"),
    row("train-read-only", "train", "--preset", "tiny", "--data", "{d}/clips", "-o", "{o}/ro/run", "--max-steps", "1", code=1, needle="read-only", fault="readonly"),
    row("train-overwrite-user-file", "train", "--preset", "tiny", "--data", "{d}/clips", "-o", "{o}/oldrun", "--overwrite", "--max-steps", "1", "-q", code=2, needle="thesis.txt", forbid=("--overwrite",)),
    # --- dataset synth -----------------------------------------------------------------------------------
    row("synth-no-args", "dataset", "synth", code=2, needle="Missing argument"),
    row("synth-clips-0", "dataset", "synth", "{o}/clips", "--clips", "0", code=2, needle="--clips"),
    row("synth-width-small", "dataset", "synth", "{o}/clips", "--width", "4", code=2, needle="--width"),
    row("synth-width-100000", "dataset", "synth", "{o}/clips", "--width", "100000", code=2, needle="8192"),
    row("synth-frames-10000", "dataset", "synth", "{o}/clips", "--frames", "10000", code=2, needle="4096"),
    row("synth-format-gif", "dataset", "synth", "{o}/clips", "--format", "gif", code=2, needle="1-bit"),
    row("synth-format-png-seq", "dataset", "synth", "{o}/clips", "--format", "png-seq", code=2, needle="single-file"),
    row("synth-captions", "dataset", "synth", "{o}/clips", "--captions", "xml", code=2, needle="xml"),
    row("synth-user-folder", "dataset", "synth", "{o}/userdir", code=2, needle="thesis.txt", forbid=("--overwrite", "overwrite=True")),
    row("synth-user-folder-overwrite", "dataset", "synth", "{o}/userdir", "--overwrite", code=2, needle="thesis.txt", forbid=("--overwrite", "overwrite=True")),
    row("synth-missing-parent", "dataset", "synth", "{o}/nowhere/clips", code=2, needle="does not exist"),
    row("synth-read-only", "dataset", "synth", "{o}/ro/clips", "--clips", "1", "--frames", "2", code=1, needle="read-only", fault="readonly"),
    # --- eval --------------------------------------------------------------------------------------------
    row("eval-no-args", "eval", code=2, needle="Missing argument"),
    row("eval-missing", "eval", "{d}/none.webm", "--no-clip", code=2, needle="none.webm"),
    row("eval-not-a-video", "eval", "{d}/notes.txt", "--no-clip", code=1, needle="notes.txt"),
    row("eval-html-exists", "eval", "{d}/clip.mkv", "--no-clip", "--html", "{o}/existing.html", code=2, needle="existing.html"),
    # --- compose -----------------------------------------------------------------------------------------
    row("compose-no-args", "compose", code=2, needle="Missing"),
    row("compose-missing-input", "compose", "{d}/none.webm", "-o", "{o}/c.webm", code=2, needle="none.webm"),
    row("compose-bad-extension", "compose", "{d}/clip.mkv", "-o", "{o}/c.xyz", code=2, needle=".xyz"),
    row("compose-exists", "compose", "{d}/clip.mkv", "-o", "{o}/existing.webm", code=2, needle="exists"),
    # --- layers ------------------------------------------------------------------------------------------
    row("layers-missing-scene", "layers", "{d}/none.toml", "-o", "{o}/scene/", code=2, needle="none.toml"),
    row("layers-broken-scene", "layers", "{d}/broken.toml", "-o", "{o}/scene/", code=2, needle="broken.toml"),
    row("layers-init-missing-psd", "layers", "init", "{d}/none.psd", "-o", "{o}/s.toml", code=2, needle="none.psd"),
    # --- preview -----------------------------------------------------------------------------------------
    row("preview-no-args", "preview", code=2, needle="Missing"),
    row("preview-missing-input", "preview", "{d}/none.webm", "-o", "{o}/p.html", code=2, needle="none.webm"),
    row("preview-not-html", "preview", "{d}/clip.mkv", "-o", "{o}/p.txt", code=2, needle=".html"),
    row("preview-exists", "preview", "{d}/clip.mkv", "-o", "{o}/existing.html", code=2, needle="already exists"),
    row("preview-color", "preview", "{d}/clip.mkv", "-o", "{o}/p.html", "--color", "plaid", code=2, needle="plaid"),
]
# fmt: on


# ---------------------------------------------------------------------------------------------------
# Inputs and the output folder


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (os.getcwd, ())  # harmless, but weights_only loading must refuse it


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared inputs; every row checks that it left them unchanged."""
    d = tmp_path_factory.mktemp("inputs")
    video_io.write_video(d / "clip.mkv", synthetic_clip(), 24)
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[16:48, 16:48] = (200, 40, 40, 255)
    Image.fromarray(rgba).save(d / "still.png")
    png = (d / "still.png").read_bytes()
    (d / "truncated.png").write_bytes(png[: len(png) // 2])
    (d / "notes.txt").write_text("not a video\n")
    (d / "empty.webm").write_bytes(b"")
    (d / "emptydir").mkdir()
    (d / "p.txt").write_text("a red fox\na blue bird\n")
    (d / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    (d / "broken.jsonl").write_text('{"prompt": "a fox"\n')
    (d / "unknown_key.jsonl").write_text(json.dumps({"prompt": "a fox", "colour": "red"}) + "\n")
    (d / "dotdot.jsonl").write_text(json.dumps({"prompt": "a fox", "output": "../../victim.webm"}) + "\n")
    (d / "absolute.jsonl").write_text(
        json.dumps({"prompt": "a fox", "output": str(d / "victim.webm")}) + "\n"
    )
    (d / "through_link.jsonl").write_text(
        json.dumps({"prompt": "a fox", "output": "escape/victim.webm"}) + "\n"
    )
    (d / "spec_attack.jsonl").write_text(
        json.dumps({"prompt": "a fox", "output": "{slug:>9999999999}"}) + "\n"
    )
    (d / "long_name.jsonl").write_text(json.dumps({"prompt": "a fox", "output": "x" * 300}) + "\n")
    (d / "broken.toml").write_text("[data\npath = 1\n")
    (d / "unknown_key.toml").write_text("[data]\ncolour = 'red'\n")
    (d / "clips").mkdir()
    video_io.write_video(d / "clips" / "clip_000.mkv", synthetic_clip(), 8)
    (d / "clips" / "clip_000.txt").write_text("a sprite\n")
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil()}, d / "evil.ckpt")
    return d


def _prepare_output(o: Path, d: Path) -> None:
    (o / "existing.png").write_bytes((d / "still.png").read_bytes())
    (o / "existing.webm").write_bytes(b"user's clip")
    (o / "existing.html").write_text("<p>user's page</p>")
    (o / "userdir").mkdir()
    (o / "userdir" / "thesis.txt").write_text("four years of work")
    (o / "notes.txt").write_text("a file, not a folder")
    (o / "out").mkdir()
    (o / "ro").mkdir()
    (o / "elsewhere").mkdir()
    (o / "linked").mkdir()
    (o / "linked" / "escape").symlink_to(o / "elsewhere")
    # a training run folder (a checkpoint and the weights) where the user also keeps a file of their own
    (o / "oldrun" / "checkpoints" / "step-000001").mkdir(parents=True)
    (o / "oldrun" / "checkpoints" / "step-000001" / "state.json").write_text("{}")
    (o / "oldrun" / "ifa.safetensors").write_bytes(b"weights")
    (o / "oldrun" / "thesis.txt").write_text("four years of work")


def _snapshot(*folders: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every entry below `folders`: kind, size and content (files), so any change shows."""
    state: dict[str, tuple[str, int, bytes]] = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            key = str(path)
            if path.is_symlink():
                state[key] = ("link", 0, os.readlink(path).encode())
            elif path.is_dir():
                state[key] = ("dir", 0, b"")
            else:
                state[key] = ("file", path.stat().st_size, path.read_bytes())
    return state


# ---------------------------------------------------------------------------------------------------
# Faults


def _under(path: Any, root: Path) -> bool:
    try:
        return Path(os.fspath(path)).resolve().is_relative_to(root.resolve())
    except (TypeError, ValueError):
        return False


def _fake_read_only(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """`root` behaves like a read-only mount: access(W_OK) is False and creating anything raises EROFS."""

    def refuse(path: Any) -> OSError:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    real_access, real_open, real_mkdir = os.access, builtins.open, os.mkdir
    real_replace, real_rename = os.replace, os.rename

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if mode & os.W_OK and _under(path, root):
            return False
        return real_access(path, mode, *args, **kwargs)

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wxa+") and _under(file, root):
            raise refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if _under(path, root):
            raise refuse(path)
        real_mkdir(path, *args, **kwargs)

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if _under(dst, root):
            raise refuse(dst)
        real_replace(src, dst, *args, **kwargs)

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if _under(dst, root):
            raise refuse(dst)
        real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)


def _fake_disk_full(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Writing media under `root` fails with ENOSPC (PyAV containers, Pillow images, torch.save)."""
    import av

    def full(path: Any) -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))

    real_av_open, real_save = av.open, Image.Image.save
    real_torch_save, real_usage = torch.save, shutil.disk_usage

    def av_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode.startswith("w") and _under(file, root):
            raise full(file)
        return real_av_open(file, mode, *args, **kwargs)

    def image_save(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(fp, (str, os.PathLike)) and _under(fp, root):
            raise full(fp)
        real_save(self, fp, *args, **kwargs)

    def torch_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(f, (str, os.PathLike)) and _under(f, root):
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file"
            )
        real_torch_save(obj, f, *args, **kwargs)

    def disk_usage(path: Any) -> Any:
        usage = real_usage(path)
        return type(usage)(usage.total, usage.total, 0) if _under(path, root) else usage

    monkeypatch.setattr(av, "open", av_open)
    monkeypatch.setattr(Image.Image, "save", image_save)
    monkeypatch.setattr(torch, "save", torch_save)
    monkeypatch.setattr(shutil, "disk_usage", disk_usage)


def _fake_huge_allocations(monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy allocations over 4 GiB raise MemoryError at once (what an unchecked size meets, minus the
    OOM killer), so an unfixed build fails this row quickly instead of exhausting the machine."""
    limit = 4 << 30
    for name in ("empty", "zeros", "ones", "full"):
        real: Callable[..., Any] = getattr(np, name)

        def guarded(
            shape: Any, *args: Any, _real: Callable[..., Any] = real, _name: str = name, **kwargs: Any
        ) -> Any:
            dims = (shape,) if isinstance(shape, int) else tuple(shape)
            positional = args[0] if args and _name != "full" else None
            dtype = np.dtype(kwargs.get("dtype", positional) or float)
            if int(np.prod(dims, dtype=np.float64)) * dtype.itemsize > limit:
                raise MemoryError(f"fake: refusing to allocate {dims}")
            return _real(shape, *args, **kwargs)

        monkeypatch.setattr(np, name, guarded)
    from layeranim import alpha

    real_resize = alpha.resize_rgba_frames

    def resize(rgba: Any, width: int, height: int, *args: Any, **kwargs: Any) -> Any:
        if len(rgba) * width * height * 4 > limit:
            raise MemoryError(f"fake: refusing to resize to {width}x{height}")
        return real_resize(rgba, width, height, *args, **kwargs)

    monkeypatch.setattr(alpha, "resize_rgba_frames", resize)


@pytest.fixture(autouse=True)
def _empty_hub_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """No default weights are found, even on a machine that has them, so no row can start a real render."""
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hub")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield


# ---------------------------------------------------------------------------------------------------
# The table


@pytest.mark.parametrize("spec", ROWS)
def test_bad_input(spec: Row, inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "o"
    out.mkdir()
    _prepare_output(out, inputs)
    argv = [arg.replace("{d}", str(inputs)).replace("{o}", str(out)) for arg in spec.argv]
    monkeypatch.chdir(out)
    before = _snapshot(inputs, out)
    if spec.fault == "readonly":
        _fake_read_only(monkeypatch, out / "ro")
    elif spec.fault == "enospc":
        _fake_disk_full(monkeypatch, out)
    elif spec.fault == "huge_alloc":
        _fake_huge_allocations(monkeypatch)

    started = time.monotonic()
    result = CliRunner().invoke(app, argv)
    seconds = time.monotonic() - started
    monkeypatch.undo()  # the snapshot below reads files with the real functions

    stderr = result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in stderr
    assert result.exit_code == spec.code, (result.exit_code, stderr)
    if not spec.usage_text:  # a missing subcommand may show the commands (on either stream)
        assert result.stdout == ""
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    if not spec.usage_text:  # only warnings may stand beside the error (the tiny preset warns)
        others = [line for line in stderr.splitlines() if line.strip() and not line.startswith("Error:")]
        assert all(line.startswith("Warning: ") for line in others), stderr
    line = errors[0]
    assert "unexpected" not in line and "report it" not in line, line
    assert spec.needle.lower() in line.lower(), line
    for phrase in spec.forbid:
        assert phrase not in line, line
    after = _snapshot(inputs, out)
    if spec.may_create is not None:  # earlier checkpoints of a run are kept, but no temporaries
        allowed = str(out / spec.may_create)
        created = [key for key in after if key not in before]
        assert all(key == allowed or key.startswith(allowed + os.sep) for key in created), created
        assert not [key for key in created if ".tmp" in key or ".partial" in key], created
        after = {key: value for key, value in after.items() if key in before}
    assert after == before
    huge = any("100000" in arg for arg in argv)
    assert seconds < (10 if huge else 90), f"took {seconds:.0f} s"  # huge sizes are refused at once


def test_the_table_covers_every_command_with_enough_rows() -> None:
    commands = {spec.values[0].argv[0] for spec in ROWS if spec.values[0].argv}
    assert len(ROWS) >= 60
    assert {
        "image",
        "animate",
        "generate",
        "convert",
        "info",
        "doctor",
        "models",
        "train",
        "dataset",
    } <= commands
    from layeranim.cli import COMMANDS  # every sub-command, registered or not yet imported (lazy)

    registered = set(COMMANDS)
    assert registered <= commands, f"commands without rows: {registered - commands}"


# ---------------------------------------------------------------------------------------------------
# SIGKILL, then run again


def _convert_command(source: Path, target: Path) -> list[str]:
    return [sys.executable, "-m", "layeranim", "convert", str(source), str(target), "--quality", "4", "-q"]


def test_convert_killed_mid_write_leaves_no_partial_after_a_rerun(tmp_path: Path) -> None:
    source = tmp_path / "long.mkv"
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(96, 256, 256, 4), dtype=np.uint8)  # noise: slow to encode
    video_io.write_video(source, frames, 24)
    target = tmp_path / "out" / "clip.webm"
    target.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(_convert_command(source, target), env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    partials: list[Path] = []
    while time.monotonic() < deadline and process.poll() is None:
        partials = [p for p in target.parent.iterdir() if ".partial" in p.name and p.stat().st_size > 0]
        if partials:
            break
        time.sleep(0.05)
    if process.poll() is not None or not partials:
        process.kill()
        pytest.fail("convert finished (or wrote nothing) before it could be killed; make the source longer")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert [p.name for p in target.parent.iterdir()] == [partials[0].name]  # the junk of issue 16
    rerun = subprocess.run(
        _convert_command(source, target), env=env, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in target.parent.iterdir()) == ["clip.webm"]


# ---------------------------------------------------------------------------------------------------
# Batch outputs: user files survive --overwrite; --allow-outside is the explicit opt-in

BATCH_TINY = (
    "--preset",
    "tiny",
    "--steps",
    "1",
    "--image-steps",
    "1",
    "--frames",
    "2",
    "--fast-decode",
    "-q",
)


def test_batch_overwrite_keeps_a_user_file_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.webm").write_bytes(b"the user's own clip")
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps({"prompt": "a fox", "seed": 1, "output": "mine.webm"}) + "\n")
    result = CliRunner().invoke(
        app, ["generate", "--prompts", str(batch), "-o", f"{out}/", "--overwrite", *BATCH_TINY]
    )
    assert "Traceback" not in result.stderr
    assert (out / "mine.webm").read_bytes() == b"the user's own clip"
    assert result.exit_code != 0


def test_batch_allow_outside_writes_where_the_item_says(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "out"
    out.mkdir(parents=True)
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps({"prompt": "a fox", "seed": 1, "output": "../../victim.webm"}) + "\n")
    args = ["generate", "--prompts", str(batch), "-o", f"{out}/", *BATCH_TINY]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and not (tmp_path / "a" / "victim.webm").exists(), refused.stderr
    allowed = CliRunner().invoke(app, [*args, "--allow-outside"])
    assert allowed.exit_code == 0, allowed.stderr
    assert video_io.probe(tmp_path / "a" / "victim.webm").frames == 2
