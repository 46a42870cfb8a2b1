"""`layeranim layers` on the tiny preset: three layers, region-confined motion, composite, re-runs, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from layeranim import video_io
from layeranim.cli import app

FAST = ["--preset", "tiny", "--steps", "2", "--image-steps", "2", "--fast-decode", "--seed", "5"]
REGION = [24, 20, 48, 44]  # canvas box of the kite's motion
KITE_AT = (8, 4)
MARGIN = 8
TITLE_AT = (0, 32)
TITLE_OPACITY = 0.5

SCENE = f"""
[canvas]
width = 64
height = 64
frames = 4
fps = 8

[[layer]]
name = "sky"
image = "sky.png"

[[layer]]
name = "kite"
image = "kite.png"
position = [{KITE_AT[0]}, {KITE_AT[1]}]
motion = "lower newer"
region = {REGION}
margin = {MARGIN}
seed = 7

[[layer]]
name = "title"
prompt = "lower"
size = [64, 64]
position = [{TITLE_AT[0]}, {TITLE_AT[1]}]
opacity = {TITLE_OPACITY}
"""


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def make_images(folder: Path) -> None:
    yy, xx = np.mgrid[0:64, 0:64]
    sky = np.zeros((64, 64, 4), np.uint8)
    sky[..., 0], sky[..., 1], sky[..., 2], sky[..., 3] = xx * 3, yy * 3, 160, 255
    Image.fromarray(sky).save(folder / "sky.png")
    kite = np.zeros((64, 64, 4), np.uint8)
    kite[8:56, 8:56] = (220, 60, 40, 255)
    kite[20:44, 20:44, 3] = 140
    Image.fromarray(kite).save(folder / "kite.png")


def make_scene(folder: Path, text: str = SCENE) -> Path:
    make_images(folder)
    path = folder / "scene.toml"
    path.write_text(text, encoding="utf-8")
    return path


def one_error_line(result: object, *needles: str) -> str:
    assert result.exit_code == 2, (result.stdout, result.stderr)  # type: ignore[attr-defined]
    assert result.stdout == ""  # type: ignore[attr-defined]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]  # type: ignore[attr-defined]
    assert len(errors) == 1, result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.stderr  # type: ignore[attr-defined]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def naive_over(layers: list[tuple[np.ndarray, tuple[int, int], float]], size: int) -> np.ndarray:
    """Straight-alpha "over" written out per layer in float64 (Porter & Duff), uint8 out."""
    rgb = np.zeros((size, size, 3))
    alpha = np.zeros((size, size, 1))
    for rgba, (x, y), opacity in layers:
        h, w = rgba.shape[:2]
        y0, y1, x0, x1 = max(y, 0), min(y + h, size), max(x, 0), min(x + w, size)
        src = rgba[y0 - y : y1 - y, x0 - x : x1 - x] / 255.0
        a_s = src[..., 3:] * opacity
        a_d = alpha[y0:y1, x0:x1]
        out_a = a_s + a_d * (1 - a_s)
        num = src[..., :3] * a_s + rgb[y0:y1, x0:x1] * a_d * (1 - a_s)
        rgb[y0:y1, x0:x1] = np.where(out_a > 0, num / np.where(out_a > 0, out_a, 1), 0)
        alpha[y0:y1, x0:x1] = out_a
    return np.rint(np.concatenate([rgb, alpha], -1) * 255).astype(np.uint8)


def test_three_layer_scene_renders_confines_motion_composites_and_skips_on_rerun(
    runner: CliRunner, tmp_path: Path
) -> None:
    scene = make_scene(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(app, ["layers", str(scene), "-o", str(out), "--format", "mkv", "--json", *FAST])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["base_seed"] == 5
    files = {layer["name"]: Path(layer["file"]) for layer in report["layers"]}
    assert [p.name for p in files.values()] == ["01-sky.mkv", "02-kite.mkv", "03-title.mkv"]
    assert all(p.parent == out / "layers" and p.is_file() for p in files.values())
    assert [layer["status"] for layer in report["layers"]] == ["rendered"] * 3
    assert (out / "composite.mkv").is_file()
    info = json.loads((out / "scene.json").read_text())
    assert info["order"] == ["sky", "kite", "title"]
    assert info["canvas"] == {"width": 64, "height": 64, "frames": 4, "fps": 8.0, "background": "transparent"}
    assert [layer["position"] for layer in info["layers"]] == [[0, 0], list(KITE_AT), list(TITLE_AT)]
    assert info["layers"][1]["seed"] == 7 and info["layers"][2]["seed"] is not None
    assert info["models"]["sources"] and info["models"]["requested"]["preset"] == "tiny"
    assert info["versions"]["torch"] and "total" in info["timings"]

    clips = {name: video_io.read_video(path).rgba_fhwc_uint8 for name, path in files.items()}
    assert all(clip.shape == (4, 64, 64, 4) for clip in clips.values())
    assert video_io.probe(out / "composite.mkv").has_alpha

    # Outside the kite's region (beyond the margin) every frame is byte-identical to its still.
    still = np.asarray(Image.open(tmp_path / "kite.png"))
    x0, y0, x1, y1 = (
        REGION[0] - KITE_AT[0],
        REGION[1] - KITE_AT[1],
        REGION[2] - KITE_AT[0],
        REGION[3] - KITE_AT[1],
    )
    yy, xx = np.mgrid[0:64, 0:64]
    distance = np.hypot(
        np.maximum(np.maximum(y0 - yy, yy - (y1 - 1)), 0), np.maximum(np.maximum(x0 - xx, xx - (x1 - 1)), 0)
    )
    beyond = distance > MARGIN
    kite = clips["kite"]
    for frame in kite:
        assert np.array_equal(frame[beyond], still[beyond])
    assert (kite[:, y0:y1, x0:x1] != still[y0:y1, x0:x1]).any()  # it did move inside the region
    assert (clips["sky"] == np.asarray(Image.open(tmp_path / "sky.png"))[None]).all()  # static: the still

    # The composite equals a naive "over" of the layer files, within ±1 level.
    composite = video_io.read_video(out / "composite.mkv").rgba_fhwc_uint8
    for f in range(4):
        expected = naive_over(
            [
                (clips["sky"][f], (0, 0), 1.0),
                (kite[f], KITE_AT, 1.0),
                (clips["title"][f], TITLE_AT, TITLE_OPACITY),
            ],
            64,
        )
        assert np.abs(composite[f].astype(int) - expected.astype(int)).max() <= 1

    # A re-run skips every unchanged layer (and the composite); changing one layer renders only it.
    stamps = {name: path.stat().st_mtime_ns for name, path in files.items()}
    again = runner.invoke(app, ["layers", str(scene), "-o", str(out), "--format", "mkv", "--json", *FAST])
    assert again.exit_code == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert [layer["status"] for layer in rerun["layers"]] == ["skipped"] * 3
    assert rerun["composite_status"] == "skipped"
    assert {name: path.stat().st_mtime_ns for name, path in files.items()} == stamps
    assert json.loads((out / "scene.json").read_text())["models"]["sources"] == info["models"]["sources"]
    scene.write_text(SCENE.replace("seed = 7", "seed = 8"), encoding="utf-8")
    changed = runner.invoke(app, ["layers", str(scene), "-o", str(out), "--format", "mkv", "--json", *FAST])
    assert changed.exit_code == 0, changed.stderr
    assert [layer["status"] for layer in json.loads(changed.stdout)["layers"]] == [
        "skipped",
        "rendered",
        "skipped",
    ]
    assert json.loads(changed.stdout)["composite_status"] == "rendered"


def test_layers_render_subcommand_form_and_help(runner: CliRunner, tmp_path: Path) -> None:
    scene = make_scene(tmp_path, SCENE.split('[[layer]]\nname = "kite"')[0])
    out = tmp_path / "o"
    result = runner.invoke(app, ["layers", "render", str(scene), "-o", str(out), "--format", "apng"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out / "composite.apng")
    assert (out / "layers" / "01-sky.apng").is_file()
    helped = runner.invoke(app, ["layers", "--help"])
    assert helped.exit_code == 0 and "init" in helped.stdout and "render" in helped.stdout


def test_foreign_files_in_out_are_never_replaced(runner: CliRunner, tmp_path: Path) -> None:
    scene = make_scene(tmp_path, SCENE.split('[[layer]]\nname = "kite"')[0])
    out = tmp_path / "out"
    (out / "layers").mkdir(parents=True)
    (out / "layers" / "01-sky.webm").write_bytes(b"mine")
    result = runner.invoke(app, ["layers", str(scene), "-o", str(out)])
    one_error_line(result, "01-sky.webm", "did not write")
    assert (out / "layers" / "01-sky.webm").read_bytes() == b"mine"
    # Not even --overwrite replaces a file layeranim did not write (issue 16), nor suggests it would.
    forced = runner.invoke(app, ["layers", str(scene), "-o", str(out), "--overwrite"])
    assert forced.exit_code == 2, forced.stderr
    assert "--overwrite" not in forced.stderr
    assert (out / "layers" / "01-sky.webm").read_bytes() == b"mine"
    (out / "layers" / "01-sky.webm").unlink()
    first = runner.invoke(app, ["layers", str(scene), "-o", str(out)])
    assert first.exit_code == 0, first.stderr
    # What layeranim wrote is marked as its own, so --overwrite may replace it.
    again = runner.invoke(app, ["layers", str(scene), "-o", str(out), "--overwrite"])
    assert again.exit_code == 0, again.stderr
    assert video_io.probe(out / "layers" / "01-sky.webm").has_alpha


BAD = [
    ('[[layer]]\nname = "kite"\nimage = "kite.png"\nwobble = 1\n', ['"kite"', "wobble"]),
    ('[[layer]]\nname = "kite"\nimage = "nope.png"\n', ['"kite"', "image", "nope.png"]),
    ('[[layer]]\nname = "flat"\nimage = "rgb.png"\n', ['"flat"', "image", "RGB only"]),
    (
        '[[layer]]\nname = "kite"\nimage = "kite.png"\nposition = [0, 0]\nmotion = "m"\n'
        "region = [70, 70, 90, 90]\n",
        ['"kite"', "region", "outside the layer"],
    ),
    ("", ["zero layers"]),
]


@pytest.mark.parametrize(("layers", "needles"), BAD)
def test_bad_scenes_give_one_error_line_exit_2_and_no_files(
    runner: CliRunner, tmp_path: Path, layers: str, needles: list[str]
) -> None:
    make_images(tmp_path)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "rgb.png")
    scene = tmp_path / "scene.toml"
    scene.write_text("[canvas]\nwidth = 64\nheight = 64\n\n" + layers, encoding="utf-8")
    out = tmp_path / "out"
    result = runner.invoke(app, ["layers", str(scene), "-o", str(out), "--preset", "tiny"])
    one_error_line(result, *needles)
    assert not out.exists()


def test_layers_init_writes_a_scene_from_a_psd(runner: CliRunner, tmp_path: Path) -> None:
    from psd_tools import PSDImage
    from psd_tools.api.layers import PixelLayer

    psd = PSDImage.new("RGBA", (80, 48))
    bottom = np.zeros((48, 80, 4), np.uint8)
    bottom[..., 1], bottom[..., 3] = 120, 255
    top = np.zeros((12, 18, 4), np.uint8)
    top[..., 0], top[..., 3] = 240, 200
    psd.append(PixelLayer.frompil(Image.fromarray(bottom), psd, name="ground", top=0, left=0))
    psd.append(PixelLayer.frompil(Image.fromarray(top), psd, name="sun", top=5, left=-6))
    psd.save(tmp_path / "poster.psd")
    result = runner.invoke(app, ["layers", "init", str(tmp_path / "poster.psd")])
    assert result.exit_code == 0, result.stderr
    (tmp_path / "scene.toml").write_text(result.stdout, encoding="utf-8")

    from layeranim.scene import load_scene

    scene = load_scene(tmp_path / "scene.toml")
    assert (scene.canvas.width, scene.canvas.height) == (80, 48)
    assert [(layer.name, layer.position, layer.width, layer.height) for layer in scene.layers] == [
        ("ground", (0, 0), 80, 48),
        ("sun", (-6, 5), 18, 12),
    ]
    assert all(not layer.dynamic for layer in scene.layers)
    # The scene renders as is (static layers need no model).
    out = tmp_path / "out"
    rendered = runner.invoke(
        app, ["layers", str(tmp_path / "scene.toml"), "-o", str(out), "--format", "png-seq"]
    )
    assert rendered.exit_code == 0, rendered.stderr
    composite = video_io.read_video(out / "composite").rgba_fhwc_uint8
    assert composite.shape == (16, 48, 80, 4)
    a = 200 / 255  # the sun over the opaque ground
    assert tuple(composite[0, 6, 0]) == (round(240 * a), round(120 * (1 - a)), 0, 255)


def test_two_dynamic_layers_of_one_size_keep_their_surrounds(runner: CliRunner, tmp_path: Path) -> None:
    make_images(tmp_path)
    scene = tmp_path / "scene.toml"
    scene.write_text(
        "[canvas]\nwidth = 96\nheight = 64\nframes = 3\nfps = 8\n\n"
        '[[layer]]\nname = "a"\nimage = "kite.png"\nmotion = "lower"\nregion = [0, 0, 16, 16]\nmargin = 0\n\n'
        '[[layer]]\nname = "b"\nimage = "kite.png"\nposition = [32, 0]\nmotion = "newer"\n'
        "region = [80, 40, 96, 64]\nmargin = 0\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["layers", str(scene), "-o", str(out), "--format", "png-seq", "--json", *FAST]
    )
    assert result.exit_code == 0, result.stderr
    still = np.asarray(Image.open(tmp_path / "kite.png"))
    a = video_io.read_video(out / "layers" / "01-a").rgba_fhwc_uint8
    b = video_io.read_video(out / "layers" / "02-b").rgba_fhwc_uint8
    inside_a = np.zeros((64, 64), bool)
    inside_a[:16, :16] = True
    inside_b = np.zeros((64, 64), bool)
    inside_b[40:, 48:] = True  # canvas [80, 40, 96, 64] minus the layer's position (32, 0)
    assert (a[:, ~inside_a] == still[~inside_a]).all() and (b[:, ~inside_b] == still[~inside_b]).all()


def test_video_layers_are_used_as_they_are_and_must_match_the_canvas_fps(
    runner: CliRunner, tmp_path: Path
) -> None:
    clip = np.zeros((2, 8, 8, 4), np.uint8)
    clip[..., 0], clip[..., 3] = 200, 255
    video_io.write_video(tmp_path / "red.mkv", clip, 4.0, format="mkv")
    scene = tmp_path / "scene.toml"
    text = "[canvas]\nwidth = 8\nheight = 8\nframes = 3\nfps = {fps}\n\n"
    text += '[[layer]]\nname = "red"\nvideo = "red.mkv"\n'
    scene.write_text(text.format(fps=8), encoding="utf-8")
    out = tmp_path / "out"
    one_error_line(runner.invoke(app, ["layers", str(scene), "-o", str(out)]), '"red"', "video", "4 fps")
    assert not out.exists()
    scene.write_text(text.format(fps=4), encoding="utf-8")
    result = runner.invoke(app, ["layers", str(scene), "-o", str(out), "--format", "mkv", "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["layers"][0]["status"] == "external" and report["layers"][0]["file"] == str(
        tmp_path / "red.mkv"
    )
    frames = video_io.read_video(out / "composite.mkv").rgba_fhwc_uint8
    assert frames.shape == (3, 8, 8, 4) and (frames[..., 0] == 200).all()  # the last frame is held


def test_prompt_layer_with_motion_keeps_stage_ones_still_outside_its_region(
    runner: CliRunner, tmp_path: Path
) -> None:
    scene = tmp_path / "scene.toml"
    scene.write_text(
        "[canvas]\nwidth = 64\nheight = 64\nframes = 3\nfps = 8\n\n"
        '[[layer]]\nname = "wisp"\nprompt = "lower"\nmotion = "newer"\n'
        "region = [0, 40, 64, 64]\nmargin = 4\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["layers", str(scene), "-o", str(out), "--format", "png-seq", *FAST])
    assert result.exit_code == 0, result.stderr
    frames = video_io.read_video(out / "layers" / "01-wisp").rgba_fhwc_uint8
    middle = frames[1]  # stage two's base frame decodes to stage one's still
    for frame in frames:
        assert np.array_equal(frame[:36], middle[:36])  # rows above the region minus the margin
    assert (frames[[0, 2], 40:] != middle[40:]).any()


def test_an_interrupted_run_resumes_without_overwrite(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import layeranim.scene.render as scene_render

    for name, value in (("a.png", (10, 20, 30, 255)), ("b.png", (200, 0, 0, 128))):
        Image.fromarray(np.full((8, 8, 4), value, np.uint8)).save(tmp_path / name)
    scene = tmp_path / "scene.toml"
    scene.write_text(
        '[canvas]\nwidth = 8\nheight = 8\nframes = 2\n\n[[layer]]\nname = "a"\nimage = "a.png"\n\n'
        '[[layer]]\nname = "b"\nimage = "b.png"\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    args = ["layers", str(scene), "-o", str(out), "--format", "mkv", "--json"]
    assert runner.invoke(app, args).exit_code == 0
    for name, value in (("a.png", (11, 20, 30, 255)), ("b.png", (201, 0, 0, 128))):
        Image.fromarray(np.full((8, 8, 4), value, np.uint8)).save(tmp_path / name)
    original = scene_render.layer_still

    def fail_on_b(layer: object, *args: object, **kwargs: object) -> object:
        if layer.name == "b":  # type: ignore[attr-defined]
            raise RuntimeError("power cut")
        return original(layer, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scene_render, "layer_still", fail_on_b)
    crashed = runner.invoke(app, args)
    assert crashed.exit_code == 1 and "power cut" in crashed.stderr
    monkeypatch.setattr(scene_render, "layer_still", original)
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert [layer["status"] for layer in report["layers"]] == ["skipped", "rendered"]
    assert report["composite_status"] == "rendered"
    assert tuple(video_io.read_video(out / "layers" / "02-b.mkv").rgba_fhwc_uint8[0, 0, 0]) == (
        201,
        0,
        0,
        128,
    )
