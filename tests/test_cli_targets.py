"""`--target NAME` and `--html` on the rendering commands: each target writes what its table promises.

The files are probed here with PyAV, Pillow and json directly (codec, alpha plane, frame counts, sheet
rectangles), not through layeranim's own reader. The clips come from `layeranim convert` on a lossless RGBA
clip made in the test, so no model is needed; one target runs through `generate --preset tiny`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from _clips import FRAMES, HEIGHT, WIDTH, synthetic_clip
from layeranim import video_io
from layeranim.cli import app
from layeranim.delivery.apple import hevc_alpha_available

FPS = 24


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lossless RGBA source clip (FFV1 in Matroska)."""
    path = tmp_path_factory.mktemp("src") / "source.mkv"
    video_io.write_video(path, synthetic_clip(), FPS)
    return path


def _convert(*args: str) -> object:
    return CliRunner().invoke(app, ["convert", *args])


def _assert_one_error_line(result: object, exit_code: int, *needles: str) -> None:
    assert result.exit_code == exit_code, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    assert result.stdout == ""  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]


def _video(path: Path) -> tuple[str, str, int, int, int]:
    """(codec, pix_fmt, frames, width, height) of a video file, decoded with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        frames = sum(1 for _ in container.decode(stream))
        return codec, stream.codec_context.pix_fmt or "", frames, stream.width, stream.height


def _has_alpha_plane(path: Path) -> bool:
    """Whether the first decoded frame carries alpha (libvpx decodes VP8/VP9 alpha from side data)."""
    codec = _video(path)[0]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if codec in ("vp8", "vp9"):
            name = "libvpx-vp9" if codec == "vp9" else "libvpx"
            context = av.CodecContext.create(name, "r")
            for packet in container.demux(stream):
                for frame in context.decode(packet):
                    return "a" in frame.format.name
            return False
        frame = next(container.decode(stream))
        return "a" in frame.format.name


def _record(base: Path) -> dict:
    return json.loads(base.with_name(base.name + ".delivery.json").read_text())


def _check_record(base: Path, target: str, names: list[str]) -> None:
    record = _record(base)
    assert record["target"] == target
    assert record["frames"] == FRAMES and record["fps"] == FPS
    assert (record["width"], record["height"]) == (WIDTH, HEIGHT)
    assert record["alpha"] == "straight"
    assert [item["name"] for item in record["files"]] == names


def _stdout_paths(result: object) -> list[str]:
    return result.stdout.split()  # type: ignore[attr-defined]


def _check_sheet(sheet: Path, frames_json: list[dict]) -> None:
    """Every rectangle of the sheet JSON holds the matching source frame (PNG is lossless)."""
    pixels = np.asarray(Image.open(sheet).convert("RGBA"))
    clip = synthetic_clip()
    assert len(frames_json) == FRAMES
    for index, entry in enumerate(frames_json):
        rect = entry["frame"]
        assert (rect["w"], rect["h"]) == (WIDTH, HEIGHT)
        cell = pixels[rect["y"] : rect["y"] + rect["h"], rect["x"] : rect["x"] + rect["w"]]
        visible = clip[index][..., 3] > 0
        np.testing.assert_array_equal(cell[..., 3], clip[index][..., 3])
        np.testing.assert_array_equal(cell[visible], clip[index][visible])


def test_unity_writes_vp8_alpha_webm(source: Path, tmp_path: Path) -> None:
    base = tmp_path / "fx"
    result = _convert(str(source), str(base), "--target", "unity")
    assert result.exit_code == 0, result.stderr
    video = tmp_path / "fx.webm"
    assert _stdout_paths(result) == [str(video), str(tmp_path / "fx.delivery.json")]
    codec, _, frames, width, height = _video(video)
    assert (codec, frames, width, height) == ("vp8", FRAMES, WIDTH, HEIGHT)
    assert _has_alpha_plane(video)
    _check_record(base, "unity", ["fx.webm"])


def test_unity_mov_alternative_is_prores_4444(source: Path, tmp_path: Path) -> None:
    result = _convert(str(source), str(tmp_path / "fx"), "--target", "unity", "--format", "mov")
    assert result.exit_code == 0, result.stderr
    codec, pix_fmt, frames, _, _ = _video(tmp_path / "fx.mov")
    assert codec == "prores" and pix_fmt.startswith("yuva444") and frames == FRAMES


@pytest.mark.parametrize("target", ["premiere", "aftereffects", "resolve"])
def test_editors_get_prores_4444_with_straight_alpha(source: Path, tmp_path: Path, target: str) -> None:
    base = tmp_path / "shot"
    result = _convert(str(source), str(base), "--target", target, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["target"] == target
    assert report["delivered"] == [str(tmp_path / "shot.mov"), str(tmp_path / "shot.delivery.json")]
    codec, pix_fmt, frames, width, height = _video(tmp_path / "shot.mov")
    assert codec == "prores" and pix_fmt.startswith("yuva444")
    assert (frames, width, height) == (FRAMES, WIDTH, HEIGHT)
    _check_record(base, target, ["shot.mov"])
    assert "Straight" in _record(base)["alpha_note"]


def test_godot_writes_frames_sheet_and_spriteframes(source: Path, tmp_path: Path) -> None:
    base = tmp_path / "hero"
    result = _convert(str(source), str(base), "--target", "godot")
    assert result.exit_code == 0, result.stderr
    frames = sorted((tmp_path / "hero_frames").glob("*.png"))
    assert len(frames) == FRAMES
    first = np.asarray(Image.open(frames[0]).convert("RGBA"))
    np.testing.assert_array_equal(first[..., 3], synthetic_clip()[0][..., 3])
    tres = (tmp_path / "hero.tres").read_text()
    assert tres.startswith('[gd_resource type="SpriteFrames"')
    assert 'path="hero.png"' in tres
    regions = re.findall(r"region = Rect2\((\d+), (\d+), (\d+), (\d+)\)", tres)
    assert len(regions) == FRAMES
    assert re.search(rf'"speed": {FPS}(\.0)?\b', tres)
    rects = [{"frame": dict(zip("xywh", map(int, region), strict=True))} for region in regions]
    _check_sheet(tmp_path / "hero.png", rects)
    _check_record(base, "godot", ["hero_frames", "hero.png", "hero.tres"])


def test_sprites_writes_sheet_and_both_jsons(source: Path, tmp_path: Path) -> None:
    base = tmp_path / "walk"
    result = _convert(str(source), str(base), "--target", "sprites")
    assert result.exit_code == 0, result.stderr
    packer = json.loads((tmp_path / "walk.json").read_text())
    assert packer["meta"]["image"] == "walk.png"
    _check_sheet(tmp_path / "walk.png", [packer["frames"][name] for name in sorted(packer["frames"])])
    aseprite = json.loads((tmp_path / "walk.aseprite.json").read_text())
    durations = [entry["duration"] for entry in aseprite["frames"]]  # ms, rounding spread over frames
    assert all(abs(duration - 1000 / FPS) < 1 for duration in durations)
    assert abs(sum(durations) - FRAMES * 1000 / FPS) <= 1
    _check_sheet(tmp_path / "walk.png", aseprite["frames"])
    _check_record(base, "sprites", ["walk.png", "walk.json", "walk.aseprite.json"])


def test_web_writes_webm_stacked_mp4_and_page(source: Path, tmp_path: Path) -> None:
    base = tmp_path / "clip"
    result = _convert(str(source), str(base), "--target", "web")
    assert result.exit_code == 0, result.stderr
    codec, _, frames, _, _ = _video(tmp_path / "clip.webm")
    assert codec == "vp9" and frames == FRAMES and _has_alpha_plane(tmp_path / "clip.webm")
    codec, _, frames, width, height = _video(tmp_path / "clip.stacked.mp4")
    assert codec in ("h264", "libdav1d", "av1") and frames == FRAMES
    assert width == WIDTH and height >= 2 * HEIGHT  # colour above, alpha below
    page = (tmp_path / "clip.html").read_text()
    assert 'src="clip.webm"' in page and 'src="clip.stacked.mp4"' in page
    _check_record(base, "web", ["clip.webm", "clip.stacked.mp4", "clip.html"])


@pytest.mark.skipif(hevc_alpha_available(), reason="this PyAV has hevc_videotoolbox (macOS)")
def test_apple_off_macos_is_one_error_and_no_files(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = _convert(str(source), str(out / "clip"), "--target", "apple")
    _assert_one_error_line(result, 1, "VideoToolbox", "web", "premiere")
    assert list(out.iterdir()) == []


def test_target_refuses_settings_it_chooses(source: Path, tmp_path: Path) -> None:
    result = _convert(str(source), str(tmp_path / "clip"), "--target", "unity", "--quality", "20")
    _assert_one_error_line(result, 2, "--quality 20", "--target unity")
    result = _convert(str(source), str(tmp_path / "clip"), "--target", "nope")
    _assert_one_error_line(result, 2, "--target nope", "godot")
    result = _convert(str(source), str(tmp_path / "clip.webm"), "--target", "unity")
    _assert_one_error_line(result, 2, "without extension")
    result = _convert(str(source), str(tmp_path / "clip"), "--target", "godot", "--format", "mov")
    _assert_one_error_line(result, 2, "does not fit target 'godot'")
    assert list(tmp_path.iterdir()) == []


def test_target_never_replaces_without_overwrite(source: Path, tmp_path: Path) -> None:
    (tmp_path / "walk.json").write_text("{}")
    result = _convert(str(source), str(tmp_path / "walk"), "--target", "sprites")
    _assert_one_error_line(result, 2, "walk.json", "--overwrite")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["walk.json"]
    result = _convert(str(source), str(tmp_path / "walk"), "--target", "sprites", "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert "frames" in json.loads((tmp_path / "walk.json").read_text())


def test_html_is_refused_for_other_formats(source: Path, tmp_path: Path) -> None:
    result = _convert(str(source), str(tmp_path / "clip.webm"), "--html")
    _assert_one_error_line(result, 2, "--html", "mp4-stacked")
    assert list(tmp_path.iterdir()) == []


def test_html_writes_the_player_page_beside_a_stacked_mp4(source: Path, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    result = _convert(str(source), str(video), "--format", "mp4-stacked", "--html", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["html"] == str(tmp_path / "clip.html")
    page = (tmp_path / "clip.html").read_text()
    assert 'src="clip.mp4"' in page and "data-layeranim-stacked" in page
    assert _video(video)[2] == FRAMES


# ---------------------------------------------------------------------------------------------------
# Through a render: generate on the tiny preset.


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


TINY = ["--preset", "tiny", "--frames", "2", "--steps", "1", "--image-steps", "1", "--width", "64"]
TINY += ["--height", "64", "--seed", "3", "--fast-decode"]


def test_generate_delivers_to_a_target(layeranim_home: Path, tmp_path: Path) -> None:
    base = tmp_path / "renders" / "lantern"
    args = ["generate", "a paper lantern", "-o", str(base), "--target", "sprites", "--manifest", "--json"]
    result = CliRunner().invoke(app, [*args, *TINY])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    folder = tmp_path / "renders"
    assert report["target"] == "sprites"
    assert report["output"] == str(folder / "lantern.png")
    assert report["delivered"] == [
        str(folder / name) for name in ("lantern.png", "lantern.json", "lantern.aseprite.json")
    ] + [str(folder / "lantern.delivery.json")]
    packer = json.loads((folder / "lantern.json").read_text())
    assert len(packer["frames"]) == 2
    assert Image.open(folder / "lantern.png").mode == "RGBA"
    manifest = json.loads((folder / "lantern.png.json").read_text())  # beside the target's main file
    assert manifest["params"]["target"] == "sprites"
    assert manifest["seed"] == 3


def test_generate_target_apple_fails_before_loading(layeranim_home: Path, tmp_path: Path) -> None:
    if hevc_alpha_available():
        pytest.skip("this PyAV has hevc_videotoolbox (macOS)")
    result = CliRunner().invoke(app, ["generate", "x", "-o", str(tmp_path / "x"), "--target", "apple", *TINY])
    _assert_one_error_line(result, 1, "VideoToolbox")
    assert list(tmp_path.iterdir()) == []


def test_a_batch_refuses_a_target(layeranim_home: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\n")
    result = CliRunner().invoke(
        app, ["generate", "--prompts", str(prompts), "-o", f"{tmp_path}/out/", "--target", "web", *TINY]
    )
    _assert_one_error_line(result, 2, "--target web", "batch")


# ---------------------------------------------------------------------------------------------------
# layers: the composite is delivered to OUT/TARGET/composite.*.

STATIC_SCENE = """
[canvas]
width = 64
height = 64
frames = 4
fps = 8

[[layer]]
name = "back"
image = "back.png"

[[layer]]
name = "badge"
image = "badge.png"
position = [16, 8]
opacity = 0.5
"""


def _static_scene(folder: Path) -> Path:
    back = np.zeros((64, 64, 4), np.uint8)
    back[8:56, 4:60] = (30, 140, 200, 255)
    Image.fromarray(back).save(folder / "back.png")
    badge = np.zeros((32, 32, 4), np.uint8)
    badge[4:28, 4:28] = (250, 200, 10, 200)
    Image.fromarray(badge).save(folder / "badge.png")
    scene = folder / "scene.toml"
    scene.write_text(STATIC_SCENE)
    return scene


def test_layers_delivers_the_composite(tmp_path: Path) -> None:
    scene = _static_scene(tmp_path)
    out = tmp_path / "out"
    args = ["layers", str(scene), "-o", str(out), "--format", "mkv", "--target", "sprites", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    folder = out / "sprites"
    names = ["composite.png", "composite.json", "composite.aseprite.json", "composite.delivery.json"]
    assert report["target"] == "sprites"
    assert report["delivered"] == [str(folder / name) for name in names]
    # The sheet holds the composite's frames (both lossless: FFV1 and PNG).
    with av.open(str(out / "composite.mkv")) as container:
        composite = [frame.to_ndarray(format="rgba") for frame in container.decode(video=0)]
    packer = json.loads((folder / "composite.json").read_text())
    sheet = np.asarray(Image.open(folder / "composite.png").convert("RGBA"))
    assert len(packer["frames"]) == len(composite) == 4
    for index, name in enumerate(sorted(packer["frames"])):
        rect = packer["frames"][name]["frame"]
        cell = sheet[rect["y"] : rect["y"] + rect["h"], rect["x"] : rect["x"] + rect["w"]]
        visible = composite[index][..., 3] > 0
        np.testing.assert_array_equal(cell[..., 3], composite[index][..., 3])
        np.testing.assert_array_equal(cell[visible], composite[index][visible])
    info = json.loads((out / "scene.json").read_text())
    assert info["delivery"]["status"] == "rendered"
    assert {f"sprites/{name}" for name in names} <= set(info["written"])

    # A re-run leaves the delivered files alone; another target adds its own folder.
    before = {path: path.stat().st_mtime_ns for path in folder.iterdir()}
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.stderr
    assert json.loads((out / "scene.json").read_text())["delivery"]["status"] == "skipped"
    assert {path: path.stat().st_mtime_ns for path in folder.iterdir()} == before
    unity = CliRunner().invoke(app, [*args[:-3], "--target", "unity"])
    assert unity.exit_code == 0, unity.stderr
    assert _video(out / "unity" / "composite.webm")[0] == "vp8"


def test_layers_target_apple_off_macos(tmp_path: Path) -> None:
    if hevc_alpha_available():
        pytest.skip("this PyAV has hevc_videotoolbox (macOS)")
    scene = _static_scene(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["layers", str(scene), "-o", str(out), "--target", "apple"])
    _assert_one_error_line(result, 1, "VideoToolbox")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------
# Help and the library.


@pytest.mark.parametrize("command", [["convert"], ["generate"], ["animate"], ["layers", "render"]])
def test_help_shows_the_targets_table(command: list[str]) -> None:
    from layeranim.delivery import target_names

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    assert "--target" in result.stdout and "Delivery targets" in result.stdout
    for name in target_names():
        assert re.search(rf"^\s*│?\s*{name}\s{{2,}}", result.stdout, flags=re.M), name


def test_library_request_carries_the_target(source: Path, tmp_path: Path) -> None:
    from layeranim.errors import UsageError
    from layeranim.render.convert import ConvertRequest, convert
    from layeranim.render.settings import OutputSettings

    settings = OutputSettings(target="Godot")
    assert settings.target == "godot"
    outcome = convert(ConvertRequest(source, tmp_path / "hero", output_settings=settings))
    assert outcome.delivered == [
        tmp_path / name for name in ("hero_frames", "hero.png", "hero.tres", "hero.delivery.json")
    ]
    assert outcome.info.frames == FRAMES and outcome.to_json()["target"] == "godot"
    with pytest.raises(UsageError, match=r"target='nope'"):
        OutputSettings(target="nope")
    with pytest.raises(UsageError, match=r"alpha_mode='premultiplied' cannot be combined with target='web'"):
        OutputSettings(target="web", alpha_mode="premultiplied")
    with pytest.raises(UsageError, match=r"html=True cannot be combined"):
        OutputSettings(target="web", html=True)
