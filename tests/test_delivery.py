"""Delivery targets write what their table promises: probed files, parsed JSON and .tres, crops of sheets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _clips import FRAMES, HEIGHT, WIDTH, synthetic_clip
from layeranim import video_io
from layeranim.delivery import TARGETS, deliver, godot, target_names, targets_table
from layeranim.delivery.apple import hevc_alpha_available
from layeranim.errors import LayerAnimError, OutputExistsError, UsageError


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _sheet(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGBA"
        return np.asarray(image).copy()


def test_table_names_every_target_and_what_it_writes() -> None:
    table = targets_table()
    assert target_names() == [
        "web",
        "unity",
        "godot",
        "sprites",
        "premiere",
        "aftereffects",
        "resolve",
        "apple",
    ]
    for target in TARGETS:
        line = next(line for line in table.splitlines() if line.startswith(target.name + " "))
        assert target.tools in line
    assert ".stacked.mp4" in table and ".tres" in table and "VP8" in table and "ProRes 4444" in table


def test_sprites_target_rectangles_match_the_frames(tmp_path: Path) -> None:
    clip = synthetic_clip()
    written = deliver(clip, "sprites", tmp_path / "walk", 12)
    assert [item.path.name for item in written] == [
        "walk.png",
        "walk.json",
        "walk.aseprite.json",
        "walk.delivery.json",
    ]
    assert _files(tmp_path) == sorted(item.path.name for item in written)
    sheet = _sheet(tmp_path / "walk.png")

    packer = json.loads((tmp_path / "walk.json").read_text())
    assert packer["meta"]["image"] == "walk.png"
    assert packer["meta"]["size"] == {"w": sheet.shape[1], "h": sheet.shape[0]}
    names = list(packer["frames"])
    assert len(names) == FRAMES
    for index, name in enumerate(names):
        entry = packer["frames"][name]
        rect = entry["frame"]
        assert (rect["w"], rect["h"]) == (WIDTH, HEIGHT)
        assert entry["rotated"] is False and entry["trimmed"] is False
        assert entry["spriteSourceSize"] == {"x": 0, "y": 0, "w": WIDTH, "h": HEIGHT}
        assert entry["sourceSize"] == {"w": WIDTH, "h": HEIGHT}
        crop = sheet[rect["y"] : rect["y"] + rect["h"], rect["x"] : rect["x"] + rect["w"]]
        np.testing.assert_array_equal(crop, clip[index])

    aseprite = json.loads((tmp_path / "walk.aseprite.json").read_text())
    frames = aseprite["frames"]
    assert len(frames) == FRAMES
    for index, entry in enumerate(frames):
        rect = entry["frame"]
        crop = sheet[rect["y"] : rect["y"] + rect["h"], rect["x"] : rect["x"] + rect["w"]]
        np.testing.assert_array_equal(crop, clip[index])
    durations = [entry["duration"] for entry in frames]
    assert set(durations) <= {83, 84} and abs(sum(durations) - FRAMES * 1000 / 12) <= 0.5
    assert aseprite["meta"]["frameTags"] == [
        {"name": "default", "from": 0, "to": FRAMES - 1, "direction": "forward"}
    ]
    record = json.loads((tmp_path / "walk.delivery.json").read_text())
    assert record["alpha"] == "straight" and record["fps"] == 12.0 and record["frames"] == FRAMES


def _parse_tres(text: str) -> dict[str, object]:
    """A small independent reader for the parts of Godot's text resource format that a SpriteFrames uses."""
    header = re.match(r'\[gd_resource type="SpriteFrames" load_steps=(\d+) format=(\d+)\]', text)
    assert header is not None, text[:200]
    ext = {
        m[2]: m[1]
        for m in re.finditer(r'\[ext_resource type="Texture2D" path="([^"]+)" id="([^"]+)"\]', text)
    }
    subs = {}
    for match in re.finditer(
        r'\[sub_resource type="AtlasTexture" id="([^"]+)"\]\natlas = ExtResource\("([^"]+)"\)\n'
        r"region = Rect2\((\d+), (\d+), (\d+), (\d+)\)",
        text,
    ):
        subs[match[1]] = (match[2], *(int(v) for v in match.groups()[2:]))
    resource = text[text.index("[resource]") :]
    frames = re.findall(r'\{\n"duration": ([\d.]+),\n"texture": SubResource\("([^"]+)"\)\n\}', resource)
    return {
        "load_steps": int(header[1]),
        "format": int(header[2]),
        "ext": ext,
        "subs": subs,
        "frames": frames,
        "speed": float(re.search(r'"speed": ([\d.]+)', resource)[1]),  # type: ignore[index]
        "loop": re.search(r'"loop": (true|false)', resource)[1],  # type: ignore[index]
        "name": re.search(r'"name": &"([^"]*)"', resource)[1],  # type: ignore[index]
    }


def test_godot_target_tres_lists_every_frame_at_the_fps(tmp_path: Path) -> None:
    clip = synthetic_clip()
    written = deliver(clip, "godot", tmp_path / "hero", 29.97)
    assert [item.path.name for item in written] == [
        "hero_frames",
        "hero.png",
        "hero.tres",
        "hero.delivery.json",
    ]
    sequence = video_io.read_video(tmp_path / "hero_frames")
    np.testing.assert_array_equal(sequence.rgba_fhwc_uint8, clip)
    assert sequence.fps == pytest.approx(29.97)

    parsed = _parse_tres((tmp_path / "hero.tres").read_text())
    assert parsed["format"] == 3
    assert parsed["load_steps"] == FRAMES + 2  # one ext_resource, FRAMES sub_resources, the resource
    assert parsed["ext"] == {"1_sheet": "hero.png"}
    assert parsed["speed"] == pytest.approx(29.97)
    assert parsed["loop"] == "true" and parsed["name"] == "default"
    frames = parsed["frames"]
    assert len(frames) == FRAMES and all(float(duration) == 1.0 for duration, _ in frames)
    sheet = _sheet(tmp_path / "hero.png")
    subs = parsed["subs"]
    for index, (_, sub_id) in enumerate(frames):
        atlas, x, y, w, h = subs[sub_id]  # type: ignore[index]
        assert atlas == "1_sheet"
        np.testing.assert_array_equal(sheet[y : y + h, x : x + w], clip[index])


def test_godot_tres_refuses_an_empty_animation_name() -> None:
    from layeranim.delivery.sprites import pack_sheet

    with pytest.raises(UsageError, match="animation"):
        godot.spriteframes_tres(pack_sheet(synthetic_clip(2), 24), "a.png", animation="")


def test_unity_target_writes_vp8_alpha_or_prores(tmp_path: Path) -> None:
    clip = synthetic_clip()
    written = deliver(clip, "unity", tmp_path / "fx", 24)
    assert [item.path.name for item in written] == ["fx.webm", "fx.delivery.json"]
    info = video_io.probe(tmp_path / "fx.webm")
    assert (info.format, info.codec, info.has_alpha, info.frames) == ("webm-vp8", "vp8", True, FRAMES)

    deliver(clip, "unity", tmp_path / "fx_mov", 24, video_format="mov")
    info = video_io.probe(tmp_path / "fx_mov.mov")
    assert (info.format, info.codec, info.has_alpha) == ("mov", "prores", True)

    with pytest.raises(UsageError, match="video_format 'webm' does not fit target 'unity'"):
        deliver(clip, "unity", tmp_path / "other", 24, video_format="webm")
    assert not list(tmp_path.glob("other*"))


@pytest.mark.parametrize("target", ["premiere", "aftereffects", "resolve"])
def test_editor_targets_write_prores_4444_and_declare_straight_alpha(tmp_path: Path, target: str) -> None:
    clip = synthetic_clip()
    deliver(clip, target, tmp_path / "title", 25)
    assert _files(tmp_path) == ["title.delivery.json", "title.mov"]
    info = video_io.probe(tmp_path / "title.mov")
    assert (info.format, info.codec, info.has_alpha, info.fps) == ("mov", "prores", True, 25.0)
    assert info.pix_fmt.startswith("yuva444p")
    record = json.loads((tmp_path / "title.delivery.json").read_text())
    assert record["alpha"] == "straight" and "Straight - Unmatted" in record["alpha_note"]
    assert record["files"] == [
        {"name": "title.mov", "kind": "video", "format": "mov", "description": "ProRes 4444 with alpha"}
    ]


@pytest.mark.skipif(hevc_alpha_available(), reason="this PyAV has hevc_videotoolbox (macOS)")
def test_apple_target_fails_with_one_clear_error_and_no_files(tmp_path: Path) -> None:
    with pytest.raises(LayerAnimError) as caught:
        deliver(synthetic_clip(), "apple", tmp_path / "badge", 24)
    assert not isinstance(caught.value, UsageError) and caught.value.exit_code == 1
    message = str(caught.value)
    assert "hevc_videotoolbox" in message and "target 'web'" in message and "target 'premiere'" in message
    assert _files(tmp_path) == []


def test_web_target_writes_webm_stacked_mp4_and_page(tmp_path: Path) -> None:
    clip = synthetic_clip()
    written = deliver(clip, "web", tmp_path / "hero", 24, background="#204060")
    assert [item.path.name for item in written] == [
        "hero.webm",
        "hero.stacked.mp4",
        "hero.html",
        "hero.delivery.json",
    ]
    webm = video_io.probe(tmp_path / "hero.webm")
    assert (webm.format, webm.codec, webm.has_alpha) == ("webm", "vp9", True)
    stacked = video_io.probe(tmp_path / "hero.stacked.mp4")
    assert stacked.format == "mp4-stacked"
    page = (tmp_path / "hero.html").read_text()
    assert 'src="hero.webm"' in page and 'src="hero.stacked.mp4"' in page and "#204060" in page
    assert f'data-clip-width="{WIDTH}" data-clip-height="{HEIGHT}"' in page  # the clip, not the picture
    assert (stacked.width, stacked.height) == (WIDTH, HEIGHT)
    record = json.loads((tmp_path / "hero.delivery.json").read_text())
    assert [entry["name"] for entry in record["files"]] == ["hero.webm", "hero.stacked.mp4", "hero.html"]
    assert _files(tmp_path) == ["hero.delivery.json", "hero.html", "hero.stacked.mp4", "hero.webm"]


def test_existing_outputs_are_kept_without_overwrite(tmp_path: Path) -> None:
    clip = synthetic_clip()
    deliver(clip, "sprites", tmp_path / "a", 24)
    before = {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)}
    with pytest.raises(OutputExistsError, match="overwrite"):
        deliver(clip[:4], "sprites", tmp_path / "a", 24)
    assert {name: (tmp_path / name).read_bytes() for name in _files(tmp_path)} == before
    deliver(clip[:4], "sprites", tmp_path / "a", 24, overwrite=True)
    assert len(json.loads((tmp_path / "a.json").read_text())["frames"]) == 4


def test_a_failure_part_way_removes_what_was_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(godot, "spriteframes_tres", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        deliver(synthetic_clip(), "godot", tmp_path / "hero", 24)
    assert _files(tmp_path) == []


def test_inputs_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    clip = synthetic_clip()
    with pytest.raises(UsageError, match="fps is required"):
        deliver(clip, "sprites", tmp_path / "a")
    with pytest.raises(UsageError, match="fps 0 must be a positive number"):
        deliver(video_io.Clip(clip, 24.0), "sprites", tmp_path / "a", 0)
    with pytest.raises(UsageError, match="target 'gif' is unknown"):
        deliver(clip, "gif", tmp_path / "a", 24)
    with pytest.raises(UsageError, match=r"out_base .* without extension"):
        deliver(clip, "unity", tmp_path / "a.webm", 24)
    with pytest.raises(UsageError, match="does not exist"):
        deliver(clip, "unity", tmp_path / "missing" / "a", 24)
    with pytest.raises(UsageError, match="colour"):
        deliver(clip, "sprites", tmp_path / "a", 24, background="not-a-colour")
    with pytest.raises(UsageError, match="frames_or_source"):
        deliver(clip[..., :3], "sprites", tmp_path / "a", 24)
    assert _files(tmp_path) == []


def test_a_path_source_keeps_its_fps(tmp_path: Path) -> None:
    source = tmp_path / "src.mkv"
    video_io.write_video(source, synthetic_clip(), 15)
    deliver(source, "sprites", tmp_path / "s")
    aseprite = json.loads((tmp_path / "s.aseprite.json").read_text())
    durations = [entry["duration"] for entry in aseprite["frames"]]
    # 15 fps: each frame lasts 66.7 ms; whole-ms durations must keep every frame's start within 0.5 ms.
    starts = np.cumsum([0, *durations])
    assert np.abs(starts - np.arange(FRAMES + 1) * 1000 / 15).max() <= 0.5


def test_progress_and_clip_input(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    deliver(
        video_io.Clip(synthetic_clip(), 30.0),
        "premiere",
        tmp_path / "p",
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(1, 2), (2, 2)]
    assert video_io.probe(tmp_path / "p.mov").fps == 30.0
