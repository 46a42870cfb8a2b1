"""`generate --prompts FILE --eval` and `animate --inputs FILE --eval` on the tiny preset (tiny random CLIP).

The stored metrics are checked against `evaluate_clip` run afterwards on each output through its manifest:
equal numbers mean the batch measured the written clip with the item's prompt and still.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from layeranim.cli import app

TINY = ["--preset", "tiny", "--frames", "2", "--steps", "1", "--width", "64", "--height", "64"]
TINY += ["--fast-decode", "--seed", "2"]


@pytest.fixture(scope="module")
def layeranim_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("layeranim-home")
    saved = os.environ.get("LAYERANIM_HOME")
    os.environ["LAYERANIM_HOME"] = str(home)
    yield home
    if saved is None:
        os.environ.pop("LAYERANIM_HOME", None)
    else:
        os.environ["LAYERANIM_HOME"] = saved


def _run(*args: str) -> tuple[int, list[dict], str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    return a == b


def _check_against_evaluate_clip(output: Path, stored: dict) -> None:
    from layeranim.evaluation import evaluate_clip, load_tiny_clip

    again = evaluate_clip(output, clip_scorer=load_tiny_clip())["metrics"]
    for key, value in stored["metrics"].items():
        expected = again[key] if again[key] is None or math.isfinite(again[key]) else None  # ∞ → null
        assert _same(value, expected), (key, value, expected)


def test_generate_batch_eval(layeranim_home: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a paper lantern\na red fox\n")
    out = tmp_path / "out"
    args = ["generate", "--prompts", str(prompts), "-o", f"{out}/", "--image-steps", "1", *TINY]
    code, lines, stderr = _run(*args, "--eval", "--json")
    assert code == 0, stderr
    items, summary = lines[:-1], lines[-1]
    assert [line["status"] for line in items] == ["ok", "ok"]
    for line in items:
        output = Path(line["output"])
        manifest = json.loads(Path(line["manifest"]).read_text())
        assert manifest["eval"] == line["eval"]
        metrics = line["eval"]["metrics"]
        assert isinstance(metrics["clip_score"], float)  # the tiny CLIP ran
        assert isinstance(metrics["alpha_stability"], float) and metrics["alpha_stability"] >= 0
        assert line["eval"]["clip_model"].startswith("tiny")
        # Stage one's image is kept beside the clip and measured against the clip's still frame.
        still = output.parent / manifest["still"]
        assert still.is_file() and still.suffix == ".png"
        assert metrics["still_max_diff"] is not None
        _check_against_evaluate_clip(output, line["eval"])
    assert summary["summary"] is True and summary["ok"] == 2
    assert summary["eval"]["clip_score"]["n"] == 2
    mean = sum(line["eval"]["metrics"]["clip_score"] for line in items) / 2
    assert math.isclose(summary["eval"]["clip_score"]["mean"], mean, rel_tol=1e-9)
    assert "eval (means): clip_score" in stderr

    # A re-run skips both items and reports the metrics stored in their manifests.
    code, again, stderr = _run(*args, "--eval", "--json")
    assert code == 0, stderr
    assert [line["status"] for line in again[:-1]] == ["skipped", "skipped"]
    assert [line["eval"] for line in again[:-1]] == [line["eval"] for line in items]

    # Without --eval, no eval entry and no summary line (the output of earlier versions).
    code, plain, _ = _run(*args, "--json")
    assert code == 0 and len(plain) == 2 and all("eval" not in line for line in plain)


def test_animate_batch_eval_measures_against_the_input_still(layeranim_home: Path, tmp_path: Path) -> None:
    import numpy as np

    from _clips import synthetic_clip
    from layeranim import video_io

    still = tmp_path / "sprite.png"
    video_io.write_image(still, synthetic_clip(1, 64, 64)[0])
    inputs = tmp_path / "inputs.txt"
    inputs.write_text(f"{still.name}\twaving\n{still.name}\tjumping\n")
    code, lines, stderr = _run(
        "animate", "--inputs", str(inputs), "-o", f"{tmp_path}/out/", *TINY, "--eval", "--json"
    )
    assert code == 0, stderr
    assert [line["status"] for line in lines[:-1]] == ["ok", "ok"]
    for line in lines[:-1]:
        assert line["eval"]["metrics"]["still_max_diff"] is not None
        _check_against_evaluate_clip(Path(line["output"]), line["eval"])
    assert lines[-1]["eval"]["alpha_stability"]["n"] == 2
    assert np.isfinite(lines[-1]["eval"]["alpha_stability"]["mean"])


def test_eval_needs_a_batch(layeranim_home: Path, tmp_path: Path) -> None:
    code, lines, stderr = _run("generate", "a fox", "-o", str(tmp_path / "a.webm"), "--eval", *TINY)
    assert code == 2 and lines == []
    assert stderr.startswith("Error: ") and "--eval" in stderr and "--prompts" in stderr


def test_eval_measures_items_finished_before(layeranim_home: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a paper lantern\n")
    args = [
        "generate",
        "--prompts",
        str(prompts),
        "-o",
        f"{tmp_path}/",
        "--image-steps",
        "1",
        *TINY,
        "--json",
    ]
    code, lines, stderr = _run(*args)
    assert code == 0 and len(lines) == 1, stderr
    manifest = Path(lines[0]["manifest"])
    assert "eval" not in json.loads(manifest.read_text())
    code, lines, stderr = _run(*args, "--eval")
    assert code == 0, stderr
    assert lines[0]["status"] == "skipped"
    assert json.loads(manifest.read_text())["eval"] == lines[0]["eval"]  # stored by update_manifest
    _check_against_evaluate_clip(Path(lines[0]["output"]), lines[0]["eval"])
    assert lines[1]["eval"]["clip_score"]["n"] == 1
