"""Long clips, base positions and seamless loops through the command line and the render API (issue 11).

The tiny preset's motion adapter has 32 positions; an 80-frame clip goes well beyond it. Clips are written
losslessly (FFV1 .mkv, APNG) so pixels can be compared with the stage-one still byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from layeranim import render, video_io
from layeranim.cli import app
from layeranim.errors import UsageError
from layeranim.pipelines.context_windows import BASE_POSITIONS, WEIGHTINGS, seam_score
from layeranim.render import settings
from layeranim.render.batch import manifest_path, read_batch_file, read_manifest
from layeranim.render.outputs import write_clip
from layeranim.render.presets import TINY_NUM_FRAMES_MAX

FAST = ["--preset", "tiny", "--steps", "1", "--fast-decode", "--seed", "5"]


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def run_ok(runner: CliRunner, args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_an_80_frame_tiny_clip_renders_and_its_still_is_stage_one_byte_for_byte(
    runner: CliRunner, tmp_path: Path
) -> None:
    frames = 80
    assert frames > TINY_NUM_FRAMES_MAX  # beyond what the tiny motion module could hold in one call
    out, still = tmp_path / "long.mkv", tmp_path / "still.png"
    report = run_ok(
        runner,
        [
            "generate", "a flag", "-o", str(out), "--frames", str(frames), "--save-image", str(still),
            "--image-steps", "1", "--manifest", "--json", *FAST,
        ],
    )  # fmt: skip
    base = (frames - 1) // 2  # "middle", the default
    assert (report["frames"], report["base_index"], report["base_position"]) == (frames, base, "middle")
    assert report["seamless"] is False and isinstance(report["seam_score"], float)
    clip = video_io.read_video(out).rgba_fhwc_uint8
    assert clip.shape == (frames, 64, 64, 4)
    assert np.array_equal(clip[base], video_io.read_image(still))
    # The score in the report is the one computed on the written frames, independently here.
    assert report["seam_score"] == pytest.approx(seam_score(clip), abs=1e-4)
    manifest = read_manifest(manifest_path(out))
    assert manifest is not None
    assert manifest["clip"] == {
        "frames": frames,
        "base_position": "middle",
        "base_index": base,
        "seamless": False,
        "seam_score": report["seam_score"],
    }


def test_base_position_start_puts_the_still_at_frame_zero(runner: CliRunner, tmp_path: Path) -> None:
    out, still = tmp_path / "start.mkv", tmp_path / "still.png"
    report = run_ok(
        runner,
        [
            "generate", "a flag", "-o", str(out), "--frames", "5", "--base-position", "start",
            "--save-image", str(still), "--image-steps", "1", "--json", *FAST,
        ],
    )  # fmt: skip
    assert (report["base_position"], report["base_index"]) == ("start", 0)
    clip = video_io.read_video(out).rgba_fhwc_uint8
    assert np.array_equal(clip[0], video_io.read_image(still))
    assert not np.array_equal(clip[2], clip[0])  # the other frames are rendered, not copies


def test_a_frame_index_base_position_and_animate_from_an_image(runner: CliRunner, tmp_path: Path) -> None:
    still = tmp_path / "sprite.png"
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[8:50, 12:40] = (220, 60, 30, 200)
    Image.fromarray(rgba, "RGBA").save(still)
    out = tmp_path / "clip.mkv"
    report = run_ok(
        runner,
        [
            "animate", str(still), "wave", "-o", str(out), "--frames", "6", "--base-position", "-2",
            "--json", *FAST,
        ],
    )  # fmt: skip
    assert (report["base_position"], report["base_index"]) == (-2, 4)
    assert video_io.probe(out).frames == 6


def test_seamless_clip_loops_forever_and_says_so(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "loop.png"  # APNG
    report = run_ok(
        runner,
        [
            "generate", "a flag", "-o", str(out), "--format", "apng", "--frames", "20", "--seamless",
            "--context-length", "8", "--context-overlap", "2", "--image-steps", "1", "--manifest", "--json",
            *FAST,
        ],
    )  # fmt: skip
    assert report["seamless"] is True and report["seam_score"] is not None
    with Image.open(out) as image:
        assert image.n_frames == 20 and image.info.get("loop") == 0  # 0: forever
    manifest = read_manifest(manifest_path(out))
    assert manifest is not None
    assert manifest["clip"]["seamless"] is True and manifest["params"]["seamless"] is True
    assert (manifest["params"]["context_length"], manifest["params"]["context_overlap"]) == (8, 2)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--frames", "0"], ("--frames 0",)),
        (["--frames", "8", "--base-position", "999"], ("--base-position 999", "0..7")),
        (["--frames", "2", "--seamless"], ("--seamless", "--frames 2")),
        (["--context-length", "1"], ("--context-length 1",)),
    ],
)
def test_animate_bad_long_clip_values_give_one_error_line(
    runner: CliRunner, tmp_path: Path, args: list[str], needles: tuple[str, ...]
) -> None:
    still = tmp_path / "s.png"
    Image.fromarray(np.full((64, 64, 4), 128, np.uint8), "RGBA").save(still)
    result = runner.invoke(app, ["animate", str(still), "x", "-o", str(tmp_path / "x.webm"), *args, *FAST])
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not (tmp_path / "x.webm").exists()


def test_requests_check_long_clip_values_before_any_model_loads() -> None:
    assert render.GenerateRequest("x", "a.webm", frames=256).frames == 256
    assert render.GenerateRequest("x", "a.webm", base_position="START").base_position == "start"
    assert render.AnimateRequest("a.png", "x", "a.webm", frames=9, base_position="8").base_position == 8
    with pytest.raises(UsageError, match=r"base_position=16 is outside"):
        render.GenerateRequest("x", "a.webm", frames=16, base_position=16)
    with pytest.raises(UsageError, match=r"seamless=True needs frames of at least 3"):
        render.AnimateRequest("a.png", "x", "a.webm", frames=2, seamless=True)
    with pytest.raises(UsageError, match=r"context_weighting='cosine'"):
        render.SamplingSettings(context_weighting="cosine")
    # The settings module spells the pipeline's choices without importing it; they must agree.
    assert settings.BASE_POSITIONS == BASE_POSITIONS and set(settings.CONTEXT_WEIGHTINGS) == set(WEIGHTINGS)


def test_streamed_write_equals_the_non_streamed_file(tmp_path: Path) -> None:
    """The render path (stage two's latents decoded chunk by chunk straight into the writer) gives the same
    file as decoding the whole clip in the pipeline's own call and writing that array."""
    models = render.ModelSettings(preset="tiny", device="cpu")
    session = render.open_session(models, will_animate=True)
    still = session.image("x", seed=3, steps=1, guidance=1.0, tta=False)
    kwargs = {"seed": 3, "frames": 7, "steps": 1, "guidance": 1.0, "base_latent": still.latent_b4hw}
    held = session.video("x", tta=False, decode_chunk_size=3, **kwargs)  # every frame at once
    outputs = render.OutputSettings(format="apng")
    write_clip(tmp_path / "held.png", held.frames_fhwc_uint8, 8.0, outputs, overwrite=False)

    video = session.video_latents("x", **kwargs)
    chunks = session.iter_frames(video, tta=False, decode_chunk_size=3)
    written = write_clip(tmp_path / "streamed.png", chunks, 8.0, outputs, overwrite=False)
    assert (tmp_path / "streamed.png").read_bytes() == (tmp_path / "held.png").read_bytes()
    assert written["seam_score"] == pytest.approx(seam_score(held.frames_fhwc_uint8), abs=1e-4)
    # The pipeline's own decoding call gives these frames too.
    pipe_frames = session.stage_two()(
        "x", base_latent=still.latent_b4hw, num_frames=7, num_inference_steps=1, guidance_scale=1.0,
        generator=torch.Generator().manual_seed(3), tta=False, decode_chunk_size=3,
    ).frames  # fmt: skip
    assert np.array_equal(pipe_frames, held.frames_fhwc_uint8)


def test_batch_items_set_frames_seamless_and_base_position(runner: CliRunner, tmp_path: Path) -> None:
    batch = tmp_path / "batch.jsonl"
    items = [
        {"prompt": "a lantern", "frames": 5, "base_position": "start", "output": "start.mkv"},
        {"prompt": "a flag", "frames": 6, "seamless": True, "base_position": 2, "output": "loop.mkv"},
        {"prompt": "a fox", "output": "plain.mkv"},
    ]
    batch.write_text("".join(json.dumps(item) + "\n" for item in items))
    parsed = read_batch_file(batch)
    assert [(i.frames, i.base_position, i.seamless) for i in parsed] == [
        (5, "start", None),
        (6, 2, True),
        (None, None, None),
    ]
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["generate", "--prompts", str(batch), "-o", f"{out}/", "--frames", "4", "--image-steps", "1", *FAST],
    )
    assert result.exit_code == 0, result.stderr
    expected = {"start.mkv": (5, 0, False), "loop.mkv": (6, 2, True), "plain.mkv": (4, 1, False)}
    for name, (frames, base, seamless) in expected.items():
        manifest = read_manifest(manifest_path(out / name))
        assert manifest is not None
        clip = manifest["clip"]
        assert (clip["frames"], clip["base_index"], clip["seamless"]) == (frames, base, seamless), name
        assert manifest["params"]["frames"] == frames
        assert video_io.probe(out / name).frames == frames


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ({"prompt": "a", "seamless": "yes"}, '"seamless" must be true or false'),
        ({"prompt": "a", "base_position": "left"}, '"base_position" "left"'),
        ({"prompt": "a", "base_position": 1.5}, '"base_position" must be'),
        ({"prompt": "a", "frames": 0}, '"frames" 0 must be a positive integer'),
    ],
)
def test_batch_file_refuses_bad_long_clip_keys(tmp_path: Path, item: dict, needle: str) -> None:
    batch = tmp_path / "b.jsonl"
    batch.write_text(json.dumps(item) + "\n")
    with pytest.raises(UsageError, match=needle.replace(".", r"\.")):
        read_batch_file(batch)
