"""`layeranim eval` through Typer's CliRunner: JSON, manifests, comparisons, the HTML report, bad input."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import layeranim.cli.eval  # noqa: F401  (registers `eval` even before the integrator wires it)
from layeranim import video_io
from layeranim.alpha import CHECKER_DARK_UINT8, CHECKER_LIGHT_UINT8
from layeranim.cli import app

runner = CliRunner()
RED = (220, 30, 30)
FRAMES, HEIGHT, WIDTH, SPRITE = 8, 64, 96, 24


@pytest.fixture(scope="module", autouse=True)
def _layeranim_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tiny CLIP (and the tiny preset) are built once, in a temporary LAYERANIM_HOME."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAYERANIM_HOME", str(tmp_path_factory.mktemp("home")))
        yield


def red_sprite_clip(dx: int = 3) -> np.ndarray:
    """A flat red square with a textured stripe, moving right over full transparency."""
    clip = np.zeros((FRAMES, HEIGHT, WIDTH, 4), np.uint8)
    for f in range(FRAMES):
        x = 16 + dx * f
        clip[f, 20 : 20 + SPRITE, x : x + SPRITE, :3] = RED
        clip[f, 20 : 20 + SPRITE, x : x + SPRITE : 4, :3] = (30, 30, 220)  # texture for the flow
        clip[f, 20 : 20 + SPRITE, x : x + SPRITE, 3] = 255
    return clip


def invoke(*args: object) -> object:
    return runner.invoke(app, [str(a) for a in args])


def assert_one_error_line(result: object, exit_code: int, *needles: str) -> None:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    assert result.stdout == ""  # type: ignore[attr-defined]
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("Error")]  # type: ignore[attr-defined]
    assert len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.stderr  # type: ignore[attr-defined]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture()
def lossless_clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mkv"
    video_io.write_video(path, red_sprite_clip(), 8)
    return path


def test_eval_json_for_one_clip_with_the_tiny_clip(lossless_clip: Path) -> None:
    result = invoke("eval", lossless_clip, "--prompt", "a lower tower", "--preset", "tiny", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] == 0 and report["html"] is None
    (clip,) = report["clips"]
    assert clip["clip"] == str(lossless_clip) and clip["frames"] == FRAMES
    assert isinstance(clip["metrics"]["clip_score"], float)
    assert clip["metrics"]["dynamic_degree"] > 1.0 and clip["metrics"]["dynamic"] is True
    assert clip["metrics"]["alpha_stability"] > 0.0
    assert clip["metrics"]["still_psnr_db"] is None and clip["metrics"]["still_identical"] is None
    assert set(report["aggregate"]) >= {"clip_score", "alpha_stability", "loop_seam"}
    assert "Error" not in result.stderr


def test_eval_prints_a_table_without_json(lossless_clip: Path) -> None:
    result = invoke("eval", lossless_clip, "--no-clip")
    assert result.exit_code == 0, result.stderr
    header, row = result.stdout.strip().splitlines()
    assert header.split()[:3] == ["clip", "clip", "dyn"]
    assert row.startswith("clip.mkv") and "–" in row  # no CLIP score


def test_eval_reads_prompt_and_still_from_the_manifest_and_can_store_metrics(tmp_path: Path) -> None:
    clip = red_sprite_clip()
    path = tmp_path / "0000-fox.mkv"
    video_io.write_video(path, clip, 8)
    video_io.write_image(tmp_path / "still.png", clip[(FRAMES - 1) // 2])
    manifest = {
        "item": {"index": 0, "prompt": "a red fox", "image": "still.png"},
        "seed": 5,
        "render_key": "k",
    }
    (tmp_path / "0000-fox.mkv.json").write_text(json.dumps(manifest))
    result = invoke("eval", path, "--preset", "tiny", "--json", "--save-to-manifest")
    assert result.exit_code == 0, result.stderr
    (report,) = json.loads(result.stdout)["clips"]
    assert report["prompt"] == "a red fox" and report["seed"] == 5 and report["item"] == "index:0"
    assert report["still"] == str(tmp_path / "still.png") and report["still_index"] == 3
    assert report["metrics"]["still_identical"] is True
    assert report["metrics"]["still_psnr_db"] is None  # ∞ in JSON: null, with still_identical true
    stored = json.loads((tmp_path / "0000-fox.mkv.json").read_text())
    assert stored["render_key"] == "k" and stored["seed"] == 5
    assert stored["eval"]["metrics"]["clip_score"] == pytest.approx(report["metrics"]["clip_score"])
    # Another frame as the still: finite PSNR.
    other = invoke("eval", path, "--no-clip", "--json", "--still-frame", "0")
    assert json.loads(other.stdout)["clips"][0]["metrics"]["still_identical"] is False


def test_a_tiny_preset_render_has_infinite_psnr_against_its_still(tmp_path: Path) -> None:
    out, still = tmp_path / "lantern.mkv", tmp_path / "lantern.png"
    made = invoke(
        "generate", "a paper lantern", "--preset", "tiny", "--frames", "4", "--steps", "2",
        "--image-steps", "2", "-o", out, "--save-image", still, "--seed", "3", "-q",
    )  # fmt: skip
    assert made.exit_code == 0, made.stderr
    result = invoke("eval", out, "--still", still, "--no-clip", "--json")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)["clips"][0]["metrics"]
    assert metrics["still_identical"] is True and metrics["still_max_diff"] == 0.0


def _write_set(folder: Path, names: list[str], dx: int) -> None:
    folder.mkdir()
    for name in names:
        video_io.write_video(folder / name, red_sprite_clip(dx), 8)


def test_compare_two_folders_pairs_items_and_reports_b_minus_a(tmp_path: Path) -> None:
    _write_set(tmp_path / "A", ["one.mkv", "two.mkv"], dx=1)
    _write_set(tmp_path / "B", ["one.mkv", "two.mkv"], dx=4)
    (tmp_path / "B" / "one.preview.mp4").write_bytes(b"")  # previews are not clips
    result = invoke("eval", tmp_path / "A", tmp_path / "B", "--no-clip", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    summary = report["comparison"]["metrics"]
    assert summary["dynamic_degree"]["n"] == 2 and summary["dynamic_degree"]["diff"] > 1.5
    assert summary["dynamic_degree"]["higher_is_better"] is True
    assert [p["item"] for p in report["comparison"]["pairs"]] == ["one", "two"]
    text = invoke("eval", tmp_path / "A", tmp_path / "B", "--no-clip")
    assert text.exit_code == 0 and "dynamic_degree" in text.stdout and "B-A" in text.stdout
    assert "comparing A" in text.stderr


def test_html_report_shows_the_clip_over_a_checkerboard_in_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    _write_set(tmp_path / "clips", ["sprite.webm"], dx=3)
    report = tmp_path / "report.html"
    result = invoke(
        "eval", tmp_path / "clips", "--preset", "tiny", "--prompt", "a red square", "--html", report
    )
    assert result.exit_code == 0, result.stderr
    page = report.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//|url\(", page)  # nothing fetched from the network
    assert 'src="clips/sprite.webm"' in page  # browser-playable: referenced as it is, relatively
    assert (tmp_path / "report_files" / "0000-sprite.contact.png").is_file()
    assert page.count("<svg") >= 4

    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=4000", f"--screenshot={shot}",
         "--window-size=900,600", report.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    light = np.all(pixels == CHECKER_LIGHT_UINT8, axis=-1)
    dark = np.all(pixels == CHECKER_DARK_UINT8, axis=-1)
    checker = light | dark
    # The first band of rows with checkerboard is the clip's stage (the contact sheet comes below it).
    rows = np.flatnonzero(checker.sum(axis=1) > 40)
    band_end = rows[0] + int(np.argmax(np.diff(np.append(rows, rows[-1] + 10)) > 1))
    stage = (slice(rows[0], band_end + 1), slice(*(np.flatnonzero(checker[rows[0]])[[0, -1]] + [0, 1])))
    assert light[stage].sum() > 2000 and dark[stage].sum() > 2000, "no checkerboard behind the clip"
    red = (pixels[..., 0] > 170) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    assert red[stage].sum() > 500, "the clip is not drawn over the checkerboard"
    gray = np.all(np.abs(pixels - 128) <= 1, axis=-1)
    assert gray.sum() > 5000, "no view over the 50 % gray background"


# ---------------------------------------------------------------------------------------------------
# Bad input.


def test_opaque_video_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "opaque.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 90, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert_one_error_line(invoke("eval", path, "--no-clip"), 2, "stores no alpha")


def test_still_image_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "still.png"
    video_io.write_image(path, red_sprite_clip()[0])
    assert_one_error_line(invoke("eval", path, "--no-clip"), 2, "still image", "--still")


def test_mismatched_pairs_are_one_error_line(tmp_path: Path) -> None:
    _write_set(tmp_path / "A", ["one.mkv", "two.mkv"], dx=1)
    _write_set(tmp_path / "B", ["one.mkv", "three.mkv"], dx=1)
    assert_one_error_line(
        invoke("eval", tmp_path / "A", tmp_path / "B", "--no-clip"),
        2,
        "only in A: two.mkv",
        "only in B: three.mkv",
    )


def test_a_bad_clip_in_a_set_is_a_per_clip_error_and_the_rest_are_measured(
    tmp_path: Path, lossless_clip: Path
) -> None:
    bad = tmp_path / "broken.webm"
    bad.write_bytes(b"not a video")
    result = invoke("eval", lossless_clip, bad, "--no-clip", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["failed"] == 1
    good, broken = report["clips"]
    assert "metrics" in good and "error" in broken
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "broken.webm" in errors[0]


def test_usage_errors(tmp_path: Path, lossless_clip: Path) -> None:
    still = tmp_path / "s.png"
    video_io.write_image(still, red_sprite_clip()[0])
    assert_one_error_line(
        invoke("eval", lossless_clip, lossless_clip, "--still", still, "--no-clip"), 2, "--still"
    )
    assert_one_error_line(invoke("eval", lossless_clip, "--flow", "magic", "--no-clip"), 2, "--flow")
    assert_one_error_line(invoke("eval", lossless_clip, "--preset", "huge"), 2, "--preset")
    assert_one_error_line(invoke("eval", tmp_path / "missing.webm", "--no-clip"), 2, "does not exist")
    small = tmp_path / "small.png"
    video_io.write_image(small, red_sprite_clip()[0][:10, :10])
    assert_one_error_line(invoke("eval", lossless_clip, "--still", small, "--no-clip"), 2, "still has size")
    (tmp_path / "r.html").write_text("")
    assert_one_error_line(
        invoke("eval", lossless_clip, "--no-clip", "--html", tmp_path / "r.html"), 2, "--overwrite"
    )


def test_missing_clip_weights_offline_are_one_error_line_that_offers_no_clip(
    tmp_path: Path, lossless_clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert_one_error_line(
        invoke("eval", lossless_clip, "--prompt", "x"), 1, "clip-vit-large-patch14", "--no-clip"
    )


def test_html_report_copies_clips_a_browser_cannot_play_and_shows_comparisons_side_by_side(
    tmp_path: Path,
) -> None:
    _write_set(tmp_path / "A", ["one.mkv"], dx=1)
    _write_set(tmp_path / "B", ["one.mkv"], dx=4)
    report = tmp_path / "ab.html"
    result = invoke("eval", tmp_path / "A", tmp_path / "B", "--no-clip", "--html", report, "-q")
    assert result.exit_code == 0, result.stderr
    page = report.read_text()
    for side in ("A", "B"):  # FFV1 in Matroska does not play in browsers: a VP9-alpha WebM copy does
        copy = tmp_path / "ab_files" / f"{side}-one.webm"
        assert video_io.probe(copy).has_alpha and video_io.probe(copy).codec == "vp9"
        assert f'src="ab_files/{side}-one.webm"' in page
    group = page.index('class="la-row" data-la-sync')  # A and B play side by side, in step
    assert group < page.index('src="ab_files/A-one.webm"') < page.index('src="ab_files/B-one.webm"')
    assert page.count('class="la-row" data-la-sync') == 1 and "B − A" in page
    again = invoke("eval", tmp_path / "A", tmp_path / "B", "--no-clip", "--html", report, "-q", "--overwrite")
    assert again.exit_code == 0, again.stderr
    assert (
        sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    )  # no temporary leftovers


def test_a_missing_manifest_still_skips_fidelity_with_a_warning(tmp_path: Path, lossless_clip: Path) -> None:
    manifest = {"item": {"index": 0, "prompt": "x", "image": "gone.png"}}
    Path(f"{lossless_clip}.json").write_text(json.dumps(manifest))
    result = invoke("eval", lossless_clip, "--no-clip", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["clips"][0]["metrics"]["still_identical"] is None
    assert "Warning:" in result.stderr and "gone.png" in result.stderr and "fidelity skipped" in result.stderr
    Path(f"{lossless_clip}.json").unlink()
    stored = invoke("eval", lossless_clip, "--no-clip", "--save-to-manifest")
    assert stored.exit_code == 0 and "has no manifest" in " ".join(stored.stderr.split())
