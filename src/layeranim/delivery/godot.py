"""Godot 4 `SpriteFrames` resources (`.tres`, text format 3) over a sprite sheet.

Godot 4 core plays only Ogg Theora video, so 2D games take animations as a `SpriteFrames` resource
for `AnimatedSprite2D`: one `Texture2D` `ext_resource` (the sheet, a path relative to the `.tres`,
which Godot resolves against the resource's own folder), one `AtlasTexture` `sub_resource` per frame
(its `region` a `Rect2` on the sheet), and an `animations` array whose entries carry `frames` (each
`{"duration": 1.0, "texture": …}`, duration in frames), `loop`, `name` (a StringName, `&"…"`) and
`speed` (frames per second). `load_steps` counts the ext and sub resources plus the resource itself.
"""

from __future__ import annotations

from layeranim.delivery.sprites import SpriteSheet
from layeranim.errors import UsageError

SHEET_ID = "1_sheet"


def _godot_float(value: float) -> str:
    """24 → 24.0, 29.97 → 29.97: how Godot writes a float property."""
    return repr(float(value))


def _godot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def spriteframes_tres(
    sheet: SpriteSheet, sheet_path: str, *, animation: str = "default", loop: bool = True
) -> str:
    """The `.tres` text of a SpriteFrames resource playing every frame of `sheet` at `sheet.fps`.

    `sheet_path` is the sheet's path as Godot should load it: relative to the `.tres` (e.g. `clip.png`)
    or a `res://` path.
    """
    if not sheet.rects:
        raise UsageError("sheet has no frames; a SpriteFrames animation needs at least one.")
    if not animation:
        raise UsageError("animation name must not be empty; use e.g. 'default'.")
    lines = [
        f'[gd_resource type="SpriteFrames" load_steps={len(sheet.rects) + 2} format=3]',
        "",
        f'[ext_resource type="Texture2D" path={_godot_string(sheet_path)} id="{SHEET_ID}"]',
        "",
    ]
    frame_entries = []
    for index, rect in enumerate(sheet.rects):
        sub_id = f"AtlasTexture_{index:05d}"
        lines += [
            f'[sub_resource type="AtlasTexture" id="{sub_id}"]',
            f'atlas = ExtResource("{SHEET_ID}")',
            f"region = Rect2({rect.x}, {rect.y}, {rect.w}, {rect.h})",
            "",
        ]
        frame_entries.append(f'{{\n"duration": 1.0,\n"texture": SubResource("{sub_id}")\n}}')
    lines += [
        "[resource]",
        "animations = [{",
        f'"frames": [{", ".join(frame_entries)}],',
        f'"loop": {"true" if loop else "false"},',
        f'"name": &{_godot_string(animation)},',
        f'"speed": {_godot_float(sheet.fps)}',
        "}]",
        "",
    ]
    return "\n".join(lines)
