"""The CLI's one error translator: Python argument spellings become flags, out-of-memory becomes one line
with what lowers memory, and `--version` stays light (sub-commands load lazily)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from layeranim.cli import app
from layeranim.cli._errors import to_cli, translate
from layeranim.errors import OutOfMemoryError, UsageError, as_out_of_memory

FAST = ["--preset", "tiny", "--steps", "1", "--image-steps", "1", "--fast-decode", "--seed", "3"]


@pytest.mark.parametrize(
    ("python", "cli"),
    [
        ("num_frames=40 is outside 2..32", "--frames 40 is outside 2..32"),
        ("frames=1 must be an integer of at least 2.", "--frames 1 must be an integer of at least 2."),
        (
            "output 'a.webm' exists; pass overwrite=True to replace it.",
            "output 'a.webm' exists; pass --overwrite",
        ),
        (
            "dtype='fp16' is not supported; use dtype='fp32'.",
            "--dtype fp16 is not supported; use --dtype fp32.",
        ),
        (
            "offload='model' needs a GPU; use offload='none'.",
            "--offload model needs a GPU; use --offload none.",
        ),
        (
            "ifa_weights='/tmp/my dir/x.safetensors' is not a file",
            "--ifa-weights '/tmp/my dir/x.safetensors' is",
        ),
        (
            "base='/m/sdxl' is an SDXL model; pass family='sdxl'.",
            "--model /m/sdxl is an SDXL model; pass --family sdxl.",
        ),
        ("prompts_file='b.txt', line 3: bad", "--prompts b.txt, line 3: bad"),
        ("image='/x/photo.jpg' has no alpha channel", "IMAGE /x/photo.jpg has no alpha channel"),
        ("tta=False or fast_decode=True", "--fast-decode or --fast-decode"),
        ("a path /data/frames=3/x.png stays", "a path /data/frames=3/x.png stays"),
        ("no argument here", "no argument here"),
        ("overrides='optim.lr=1': [optim] has no key 'lr'", "--set optim.lr=1: [optim] has no key 'lr'"),
        ("data.path='clips' has no usable RGBA clip", "--data clips has no usable RGBA clip"),
        (
            "output_dir='runs/a' already holds a training run; pass resume='latest' to continue it, "
            "overwrite=True to start over",
            "--output runs/a already holds a training run; pass --resume latest to continue it, "
            "--overwrite to start over",
        ),
        ("clips=0 must be at least 1.", "--clips 0 must be at least 1."),
        ("pass the image as still=PATH.", "pass the image as --still PATH."),
        ("a notes.data.path=x stays", "a notes.data.path=x stays"),
    ],
)
def test_python_spellings_become_flags(python: str, cli: str) -> None:
    assert to_cli(python).startswith(cli)


def test_translate_known_and_unknown_errors() -> None:
    assert translate(UsageError("seed=-1 is out of range")) == ("--seed -1 is out of range", 2)
    assert translate(ValueError("boom")) is None
    line, code = translate(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))  # type: ignore[misc]
    assert code == 1 and "--offload model" in line and "--fast-decode" in line and "--dtype fp16" in line


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"),
        MemoryError(),
    ],
    ids=["cuda", "mps", "host"],
)
def test_out_of_memory_is_recognised(exc: BaseException) -> None:
    oom = as_out_of_memory(exc)
    assert isinstance(oom, OutOfMemoryError) and "offload='model'" in str(oom)
    assert as_out_of_memory(RuntimeError("shapes do not match")) is None


def one_error_line(result: object) -> str:
    assert result.stdout == ""  # type: ignore[attr-defined]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]  # type: ignore[attr-defined]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr  # type: ignore[attr-defined]
    return errors[0]


@pytest.mark.parametrize(
    "exc",
    [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError()],
    ids=["cuda", "host"],
)
def test_out_of_memory_prints_the_one_line_hint(
    exc: BaseException, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from layeranim.render import api

    def run_out_of_memory(*args: object, **kwargs: object) -> None:
        raise exc

    monkeypatch.setattr(api, "generate", run_out_of_memory)
    result = CliRunner().invoke(app, ["generate", "x", "-o", str(tmp_path / "x.webm"), *FAST])
    assert result.exit_code == 1
    line = one_error_line(result)
    for hint in ("out of", "--offload model", "fewer frames", "--fast-decode", "--dtype fp16"):
        assert hint in line, line


def test_out_of_memory_fails_one_batch_item_with_the_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from layeranim.render import api

    def run_out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(api, "_generate_clip", run_out_of_memory)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\n")
    args = ["generate", "--prompts", str(prompts), "-o", f"{tmp_path}/out/", "--json", "--frames", "3"]
    result = CliRunner().invoke(app, [*args, *FAST])
    assert result.exit_code == 1
    (item,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert item["status"] == "failed" and "--offload model" in item["error"], item


def test_library_usage_errors_reach_the_terminal_as_flags(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["generate", "x", "-o", str(tmp_path / "x.webm"), "--alpha-mode", "straight", "--offload", "disk"],
    )
    assert result.exit_code == 2
    assert "--offload disk is not one of none, model, sequential" in one_error_line(result)


@pytest.mark.parametrize("args", [["--version"], ["info", "--help"]])
def test_light_commands_import_no_torch(args: list[str]) -> None:
    code = (
        "import sys; sys.argv = ['layeranim', *sys.argv[1:]]\n"
        "from layeranim.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'diffusers', 'huggingface_hub') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in done.stderr, done.stderr


def test_help_lists_every_registered_command() -> None:
    from layeranim.cli import COMMANDS

    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.stdout


def test_threads_option_sets_torch_threads() -> None:
    cmd = [sys.executable, "-m", "layeranim", "--threads", "2", "doctor", "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["devices"]["cpu_threads"] == 2
