"""`layeranim generate --prompts FILE` end to end on the tiny preset, and the batch examples that use it."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

if importlib.util.find_spec("layeranim.cli.generate") is None:
    pytest.skip("generate command not registered yet", allow_module_level=True)

from typer.main import get_command
from typer.testing import CliRunner

import layeranim.cli.generate  # noqa: F401  (registers the command)
from layeranim.cli import app
from layeranim.render.batch import manifest_path, read_batch_file, read_manifest


def _generate_options() -> set[str]:
    command = get_command(app).commands["generate"]  # type: ignore[attr-defined]
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


if "--prompts" not in _generate_options():
    pytest.skip("generate has no --prompts batch mode yet", allow_module_level=True)

REPO = Path(__file__).resolve().parents[1]
FAST = [
    "--preset",
    "tiny",
    "--steps",
    "2",
    "--image-steps",
    "2",
    "--frames",
    "4",
    "--seed",
    "1",
    "--fast-decode",
]
BAD_FRAMES = 1  # a clip needs two frames or more: that item fails, the others render


@pytest.fixture(scope="module")
def layeranim_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One LAYERANIM_HOME for the module, so the tiny preset is built once."""
    home = tmp_path_factory.mktemp("layeranim-home")
    saved = os.environ.get("LAYERANIM_HOME")
    os.environ["LAYERANIM_HOME"] = str(home)
    yield home
    if saved is None:
        os.environ.pop("LAYERANIM_HOME", None)
    else:
        os.environ["LAYERANIM_HOME"] = saved


@pytest.fixture
def batch_file(tmp_path: Path) -> Path:
    path = tmp_path / "batch.jsonl"
    lines = [
        {"prompt": "a paper lantern"},
        {"prompt": "a bad item", "frames": BAD_FRAMES},
        {"prompt": "a red fox", "seed": 5},
    ]
    path.write_text("# two good items, one bad\n" + "".join(json.dumps(line) + "\n" for line in lines))
    return path


def generate(*args: str) -> tuple[int, list[dict], str]:
    result = CliRunner().invoke(app, ["generate", *args])
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, lines, result.stderr


def test_three_item_batch_with_a_bad_item(layeranim_home: Path, batch_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, lines, stderr = generate("--prompts", str(batch_file), "-o", f"{out}/", "--json", *FAST)
    assert code == 1, stderr
    assert [(line["index"], line["status"]) for line in lines] == [(0, "ok"), (1, "failed"), (2, "ok")]
    assert str(BAD_FRAMES) in lines[1]["error"]
    assert str(BAD_FRAMES) in stderr  # the error is on stderr too
    assert "Traceback" not in stderr
    outputs = sorted(out.glob("*.webm"))
    assert len(outputs) == 2
    for line in (lines[0], lines[2]):
        output = Path(line["output"])
        assert output in outputs
        manifest = read_manifest(manifest_path(output))
        assert manifest is not None
        assert manifest["seed"] == line["seed"]
        assert manifest["render_key"]
        assert manifest["params"]
        assert manifest["timings"]
    assert lines[2]["seed"] == 5  # the item's own seed wins

    # A re-run skips the finished items and leaves them untouched; the bad item fails again.
    before = {path: path.stat().st_mtime_ns for path in outputs}
    code, lines, stderr = generate("--prompts", str(batch_file), "-o", f"{out}/", "--json", *FAST)
    assert code == 1, stderr
    assert [line["status"] for line in lines] == ["skipped", "failed", "skipped"]
    assert {path: path.stat().st_mtime_ns for path in outputs} == before


def test_shards_cover_the_batch_exactly_once(layeranim_home: Path, batch_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    seen: list[int] = []
    for shard in ("1/2", "2/2"):
        _, lines, _ = generate(
            "--prompts", str(batch_file), "-o", f"{out}/", "--json", "--shard", shard, *FAST
        )
        seen += [line["index"] for line in lines]
    assert sorted(seen) == [0, 1, 2]
    assert len(list(out.glob("*.webm"))) == 2


def test_bad_batch_file_is_a_usage_error(layeranim_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a fox", "sed": 3}\n')
    code, lines, stderr = generate("--prompts", str(path), "-o", f"{tmp_path}/", "--json", *FAST)
    assert code == 2
    assert lines == []
    assert "Error:" in stderr and "'sed'" in stderr and "line 1" in stderr


needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run_script(command: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "LAYERANIM": f"{sys.executable} -m layeranim",
        "LAYERANIM_HOME": str(home),
        **env,
    }
    return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=600)


@needs_bash
def test_batch_render_example(layeranim_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "renders"
    extra = ["--steps", "2", "--image-steps", "2", "--frames", "4", "--fast-decode"]
    done = run_script(["bash", "examples/batch_render.sh", str(out), *extra], layeranim_home)
    assert done.returncode == 0, done.stderr
    prompts = [item.prompt for item in read_batch_file(REPO / "examples" / "prompts.txt")]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["prompt"] for line in lines] == prompts
    assert all(line["status"] == "ok" for line in lines)
    clips = sorted(out.glob("*.webm"))
    assert len(clips) == len(prompts)
    assert all(manifest_path(clip).is_file() for clip in clips)
    assert f"{len(prompts)} rendered, 0 skipped, 0 failed (exit 0)" in done.stderr


@needs_bash
def test_ci_example_render_step(layeranim_home: Path, tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((REPO / "examples" / "ci" / "render-assets.yml").read_text())
    job = workflow["jobs"]["render"]
    matrix = job["strategy"]["matrix"]
    (shards,) = matrix["shards"]
    step = next(step for step in job["steps"] if "batch_render.sh" in step.get("run", ""))
    env = {key: str(value) for key, value in workflow["env"].items() if "${{" not in str(value)}
    out = tmp_path / "renders"
    for shard in matrix["shard"]:
        command = (
            step["run"]
            .replace("${{ matrix.shard }}", str(shard))
            .replace("${{ matrix.shards }}", str(shards))
            .replace("batch_render.sh renders", f"batch_render.sh {out}")
        )
        done = run_script(
            [
                "bash",
                "-euo",
                "pipefail",
                "-c",
                f"{command} --steps 2 --image-steps 2 --frames 4 --fast-decode",
            ],
            layeranim_home,
            **env,
        )
        assert done.returncode == 0, done.stderr
    clips = sorted(out.glob("*.webm"))
    assert len(clips) == len(read_batch_file(REPO / "examples" / "prompts.txt"))
    assert all(manifest_path(clip).is_file() for clip in clips)
