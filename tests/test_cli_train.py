"""`layeranim train` and `layeranim dataset synth` through the real command line (CliRunner)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib
import torch
from typer.testing import CliRunner

from layeranim.cli import app

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _layeranim_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tiny preset is built once, in a temporary LAYERANIM_HOME; torch runs on one thread.

    One thread: the tiny models gain nothing from two, and on a busy machine OpenMP's spinning barriers
    make two threads up to 100× slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAYERANIM_HOME", str(tmp_path_factory.mktemp("home")))
        yield
    torch.set_num_threads(threads)


def invoke(*args: str) -> object:
    return runner.invoke(app, [str(a) for a in args])


def test_print_config_shows_the_effective_config(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[model]\npreset = "tiny"\n[optim]\nlearning_rate = 0.002\n')
    result = invoke(
        "train",
        config,
        "--data",
        "clips",
        "--max-steps",
        "7",
        "--set",
        "optim.warmup_steps=0",
        "--print-config",
    )
    assert result.exit_code == 0, result.stderr
    effective = tomllib.loads(result.stdout)
    assert effective["model"]["preset"] == "tiny"
    assert effective["data"]["width"] == 64  # from the tiny preset
    assert effective["optim"]["learning_rate"] == 0.002  # from the file
    assert effective["train"]["max_steps"] == 7  # from a flag
    assert effective["optim"]["warmup_steps"] == 0  # from --set
    assert result.stderr == ""


def test_bad_config_values_are_one_error_line(tmp_path: Path) -> None:
    result = invoke("train", "--preset", "tiny", "--set", "optim.lr=1")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: --set optim.lr=1: [optim] has no key 'lr'")
    assert "Traceback" not in result.stderr
    result = invoke("train", "--preset", "tiny", "--output", tmp_path / "run")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: data.path = ''") and "--data" in result.stderr
    result = invoke("train", tmp_path / "missing.toml")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert result.stdout == ""


def test_synth_then_train_then_resume(tmp_path: Path) -> None:
    clips, run = tmp_path / "clips", tmp_path / "run"
    made = invoke("dataset", "synth", clips, "--clips", "2", "--frames", "4", "--format", "mkv", "--json")
    assert made.exit_code == 0, made.stderr
    listing = json.loads(made.stdout)
    assert [Path(c["path"]).name for c in listing["clips"]] == ["clip_000.mkv", "clip_001.mkv"]
    (clips / "broken.mov").write_bytes(b"\x00\x00\x00\x14ftypqt  broken")

    args = (
        "train",
        "--preset",
        "tiny",
        "--data",
        clips,
        "--output",
        run,
        "--frames",
        "4",
        "--max-steps",
        "1",
    )
    log = tmp_path / "log.jsonl"
    first = invoke(*args, "--log-json", log, "--json")
    assert first.exit_code == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["step"] == 1 and Path(report["weights"]) == run / "ifa.safetensors"
    assert (run / "ifa.safetensors").is_file()
    assert [Path(s["path"]).name for s in report["skipped"]] == ["broken.mov"]
    assert "skipped 1 clip(s):" in first.stderr and "broken.mov: unreadable" in first.stderr
    assert "step 1  loss " in first.stderr
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert events[0] == "start" and "step" in events and events[-1] == "done"

    again = invoke(*args)
    assert again.exit_code == 2 and "--resume latest" in again.stderr

    resumed = invoke(*args[:-1], "2", "--resume", "latest", "-q")
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed.stdout.strip() == str(run / "ifa.safetensors")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001", "step-000002"]

    # The exported weights load in `layeranim animate`.
    from layeranim import video_io

    still = tmp_path / "still.png"
    video_io.write_image(still, video_io.read_video(clips / "clip_000.mkv", stop=1).rgba_fhwc_uint8[0])
    animated = invoke(
        "animate", still, "a sprite", "-o", tmp_path / "out.webm", "--preset", "tiny", "--frames", "4",
        "--steps", "2", "--ifa-weights", run / "ifa.safetensors", "--fast-decode", "--seed", "1", "--json",
    )  # fmt: skip
    assert animated.exit_code == 0, animated.stderr
    assert video_io.probe(tmp_path / "out.webm").frames == 4


def test_resume_remembers_the_runs_data_path(tmp_path: Path) -> None:
    import json

    from layeranim.training.config import config_to_dict, preset_config, with_remembered_data

    trained = preset_config("tiny")
    trained.data.path = str(tmp_path / "clips")
    trained.train.output_dir = str(tmp_path / "run")
    for step, data in ((1, "old-clips"), (2, str(tmp_path / "clips"))):
        folder = tmp_path / "run" / "checkpoints" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        record = {"step": step, "config": {**config_to_dict(trained), "data": {"path": data}}}
        (folder / "state.json").write_text(json.dumps(record))
    resumed = preset_config("tiny")
    resumed.train.output_dir = str(tmp_path / "run")
    resumed.checkpoint.resume = "latest"
    assert resumed.data.path == ""
    assert with_remembered_data(resumed).data.path == str(tmp_path / "clips")  # the newest checkpoint's
    resumed.checkpoint.resume = str(tmp_path / "run" / "checkpoints" / "step-000001")
    assert with_remembered_data(resumed).data.path == "old-clips"
    resumed.data.path = "given"  # --data wins
    assert with_remembered_data(resumed).data.path == "given"
    fresh = preset_config("tiny")  # not a resume: nothing is filled in
    fresh.train.output_dir = str(tmp_path / "run")
    assert with_remembered_data(fresh).data.path == ""
