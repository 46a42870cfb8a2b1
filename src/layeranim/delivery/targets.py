"""Delivery targets: one name per tool that chooses the formats, settings and side files it needs.

`TARGETS` is the table; `deliver(frames_or_source, target, out_base, fps)` writes what a row promises
beside `out_base` (a path without extension) and returns what it wrote. Every file appears atomically
(a temporary file beside it, then a rename); everything is checked before the first file is written,
and a failure part-way removes the files this call had created.

Why each row (facts in the project's delivery notes): Safari plays no VP9 alpha, so `web` adds a
stacked-alpha MP4 drawn by the page's own player; Unity's VideoPlayer takes alpha only as VP8 WebM or
ProRes 4444; Godot 4 plays only Theora, so game engines get sprite sheets; editors (Premiere does not
see WebM alpha) get ProRes 4444; HEVC with alpha is written only by Apple's VideoToolbox.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from layeranim import video_io
from layeranim.delivery import apple, godot, sprites, web
from layeranim.errors import OutputExistsError, UsageError
from layeranim.progress import Progress as ProgressCallback

OutputKind = Literal[
    "video", "png-seq", "sprite-sheet", "texturepacker-json", "aseprite-json", "godot-tres", "html", "record"
]


@dataclass(frozen=True)
class TargetOutput:
    """One file (or folder) a target writes: `out_base` + `suffix`, of a kind, maybe in a video format."""

    kind: OutputKind
    suffix: str  # appended to out_base; for a video, "" means the format's own extension
    description: str
    format: str | None = None  # video_io format name (video and png-seq kinds)


@dataclass(frozen=True)
class Target:
    """A delivery target: the tools it serves and what it writes for them."""

    name: str
    tools: str
    outputs: tuple[TargetOutput, ...]
    video_formats: tuple[str, ...] = ()  # the main video's format and its allowed alternatives
    alpha_note: str = "straight (unassociated) alpha"


_RECORD = TargetOutput(
    "record", ".delivery.json", "what was written, the fps and the alpha mode (straight), as JSON"
)
_EDITOR_VIDEO = TargetOutput("video", "", "ProRes 4444 with alpha", "mov")
_EDITOR_NOTE = (
    "straight (unmatted) alpha; tell the editor so if it asks (After Effects: Interpret Footage → "
    "Alpha → Straight - Unmatted)"
)

TARGETS: tuple[Target, ...] = (
    Target(
        "web",
        "web pages: Chromium, Firefox, Safari, Android",
        (
            TargetOutput("video", ".webm", "VP9 alpha WebM (Chromium, Firefox)", "webm"),
            TargetOutput(
                "video", ".stacked.mp4", "stacked-alpha H.264 MP4 (Safari, any WebGL browser)", "mp4-stacked"
            ),
            TargetOutput("html", ".html", "page with the <video>/canvas snippet and its player script"),
            _RECORD,
        ),
    ),
    Target(
        "unity",
        "Unity VideoPlayer",
        (TargetOutput("video", "", "VP8 alpha WebM (or ProRes 4444 .mov)", "webm-vp8"), _RECORD),
        video_formats=("webm-vp8", "mov"),
    ),
    Target(
        "godot",
        "Godot 4 (AnimatedSprite2D)",
        (
            TargetOutput("png-seq", "_frames", "folder of PNG frames", "png-seq"),
            TargetOutput("sprite-sheet", ".png", "sprite sheet PNG"),
            TargetOutput("godot-tres", ".tres", "SpriteFrames resource over the sheet"),
            _RECORD,
        ),
    ),
    Target(
        "sprites",
        "2D engines: Phaser, PixiJS, Cocos, Defold, Aseprite",
        (
            TargetOutput("sprite-sheet", ".png", "sprite sheet PNG"),
            TargetOutput("texturepacker-json", ".json", "TexturePacker JSON (hash)"),
            TargetOutput("aseprite-json", ".aseprite.json", "Aseprite JSON (frame durations, tags)"),
            _RECORD,
        ),
    ),
    Target("premiere", "Adobe Premiere Pro", (_EDITOR_VIDEO, _RECORD), ("mov", "mov-xq"), _EDITOR_NOTE),
    Target("aftereffects", "Adobe After Effects", (_EDITOR_VIDEO, _RECORD), ("mov", "mov-xq"), _EDITOR_NOTE),
    Target("resolve", "DaVinci Resolve", (_EDITOR_VIDEO, _RECORD), ("mov", "mov-xq"), _EDITOR_NOTE),
    Target(
        "apple",
        "Safari, QuickTime, Final Cut, iOS (macOS only)",
        (TargetOutput("video", ".mov", "HEVC with alpha (hvc1) via VideoToolbox", "hevc-alpha"), _RECORD),
    ),
)

_TARGETS_BY_NAME = {target.name: target for target in TARGETS}


@dataclass(frozen=True)
class Delivered:
    """One written file or folder."""

    path: Path
    kind: OutputKind
    description: str
    format: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "description": self.description,
            "format": self.format,
        }


def target_names() -> list[str]:
    return [target.name for target in TARGETS]


def get_target(name: str) -> Target:
    """Look a target up by name; UsageError naming `target` and the choices otherwise."""
    key = str(name).strip().lower()
    if key not in _TARGETS_BY_NAME:
        raise UsageError(f"target {name!r} is unknown; choose one of {', '.join(target_names())}.")
    return _TARGETS_BY_NAME[key]


def _suffix(output: TargetOutput, video_format: str | None) -> str:
    if output.kind == "video" and not output.suffix:
        return video_io.get_format(video_format or output.format or "").extensions[0]
    return output.suffix


def targets_table() -> str:
    """A plain-text table of the targets and the files each writes (for `--help`)."""
    lines = []
    width = max(len(name) for name in target_names())
    for target in TARGETS:
        files = "; ".join(
            f"{_suffix(output, None) if output.format != 'hevc-alpha' else output.suffix} "
            f"{output.description}"
            for output in target.outputs
            if output.kind != "record"
        )
        lines.append(f"{target.name.ljust(width)}  {target.tools}: {files}")
    return "\n".join(lines)


def _as_clip(frames_or_source: Any, fps: float | None) -> tuple[np.ndarray, float]:
    """frames (with fps), a video_io.Clip, or a path to any clip video_io reads → (frames, fps)."""
    if isinstance(frames_or_source, video_io.Clip):
        return frames_or_source.rgba_fhwc_uint8, float(fps or frames_or_source.fps)
    if isinstance(frames_or_source, str | Path):
        clip = video_io.read_video(frames_or_source)
        return clip.rgba_fhwc_uint8, float(fps or clip.fps)
    if isinstance(frames_or_source, np.ndarray):
        if fps is None:
            raise UsageError("fps is required when frames_or_source is an array of frames; pass e.g. fps=24.")
        if (
            frames_or_source.dtype != np.uint8
            or frames_or_source.ndim != 4
            or frames_or_source.shape[-1] != 4
        ):
            raise UsageError(
                "frames_or_source must be uint8 (frames, height, width, 4) straight RGBA, got "
                f"{frames_or_source.dtype} {tuple(frames_or_source.shape)}."
            )
        if not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
            raise UsageError(f"fps {fps!r} must be a positive number (e.g. 24).")
        return frames_or_source, float(fps)
    raise UsageError(
        f"frames_or_source must be RGBA frames (numpy), a video_io.Clip or a path, not "
        f"{type(frames_or_source).__name__}."
    )


def _check_out_base(out_base: str | Path, require_folder: bool = True) -> Path:
    base = Path(out_base)
    if not base.name or base.name in (".", ".."):
        raise UsageError(f"out_base {str(out_base)!r} needs a file name, e.g. out/clip.")
    if base.suffix.lower() in {".webm", ".mp4", ".mov", ".mkv", ".png", ".gif", ".webp", ".apng", ".json"}:
        raise UsageError(
            f"out_base {str(out_base)!r} must be a name without extension (e.g. "
            f"{str(base.with_suffix(''))!r}); the target adds each file's extension."
        )
    if require_folder and not base.parent.is_dir():
        raise UsageError(f"the folder of out_base {str(out_base)!r} does not exist; create it first.")
    return base


def _plan(
    target: Target, base: Path, video_format: str | None
) -> list[tuple[TargetOutput, Path, str | None]]:
    """Each output's path and format, all checked before anything is written."""
    if video_format is not None:
        allowed = target.video_formats
        if not allowed or video_io.get_format(video_format).name not in allowed:
            choices = ", ".join(allowed) if allowed else "none (this target's formats are fixed)"
            raise UsageError(
                f"video_format {video_format!r} does not fit target {target.name!r}; choose {choices}."
            )
        video_format = video_io.get_format(video_format).name
    planned = []
    main_video_done = False
    for output in target.outputs:
        fmt = output.format
        if output.kind == "video" and not main_video_done:
            fmt = video_format or fmt
            main_video_done = True
        if fmt is not None and fmt != "hevc-alpha":
            video_io.get_format(fmt)  # an unknown format fails here, before any file
        suffix = output.suffix or video_io.get_format(fmt or "").extensions[0]
        planned.append((output, base.with_name(base.name + suffix), fmt))
    return planned


def _check_free(path: Path, overwrite: bool) -> None:
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputExistsError(
            f"output {str(path)!r} already exists; pass overwrite=True to replace it, or "
            "choose another out_base."
        )


def _check(
    spec: Target,
    out_base: str | Path,
    *,
    overwrite: bool,
    video_format: str | None,
    require_folder: bool = True,
) -> list[tuple[TargetOutput, Path, str | None]]:
    if spec.name == "apple":
        apple.require_hevc_alpha()
    planned = _plan(spec, _check_out_base(out_base, require_folder), video_format)
    for _, path, _ in planned:
        _check_free(path, overwrite)
    return planned


def check_delivery(
    target: str,
    out_base: str | Path,
    *,
    overwrite: bool = False,
    video_format: str | None = None,
    require_folder: bool = True,
) -> list[tuple[TargetOutput, Path]]:
    """What `deliver` checks before it reads anything, without writing: for callers that render first.

    Raises what `deliver` would (an unknown target, a format that does not fit it, an `out_base` with an
    extension or without a folder, a file that exists without `overwrite`, `apple` off macOS); returns
    each output and its path, in table order. `require_folder=False`: the caller creates `out_base`'s
    folder before delivering.
    """
    planned = _check(
        get_target(target),
        out_base,
        overwrite=overwrite,
        video_format=video_format,
        require_folder=require_folder,
    )
    return [(output, path) for output, path, _ in planned]


def deliver(
    frames_or_source: Any,
    target: str,
    out_base: str | Path,
    fps: float | None = None,
    *,
    overwrite: bool = False,
    video_format: str | None = None,
    background: str = "#ffffff",
    columns: int | None = None,
    progress: ProgressCallback | None = None,
) -> list[Delivered]:
    """Write everything delivery target `target` promises, named `out_base` + each output's suffix.

    `frames_or_source` is straight RGBA frames (f, h, w, 4) uint8 (then `fps` is required), a
    `video_io.Clip`, or a path to any clip layeranim reads. `video_format` picks the main video's
    alternative where the target has one (unity: webm-vp8 or mov; editors: mov or mov-xq).
    `background` is the page colour of the `web` target's HTML; `columns` the sprite-sheet grid width.
    Nothing is replaced without `overwrite=True`. Returns the written files in table order.
    """
    # 1. Check everything that can be checked before reading or writing anything.
    spec = get_target(target)
    if fps is not None and not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise UsageError(f"fps {fps!r} must be a positive number (e.g. 24), or None to keep the clip's.")
    planned = _check(spec, out_base, overwrite=overwrite, video_format=video_format)
    base = _check_out_base(out_base)
    web.css_color(background)

    # 2. Read the frames.
    rgba_fhwc_uint8, clip_fps = _as_clip(frames_or_source, fps)
    for output, path, fmt in planned:
        if output.kind == "video" and fmt != "hevc-alpha":
            video_io.check_output(path, format=fmt, overwrite=overwrite)

    # 3. Write each output; on failure remove what this call created.
    created: list[Path] = []
    written: list[Delivered] = []
    # The sheet-based outputs all describe one sheet, written as `out_base.png`.
    sheet_kinds = ("sprite-sheet", "texturepacker-json", "aseprite-json", "godot-tres")
    needs_sheet = any(output.kind in sheet_kinds for output, _, _ in planned)
    sheet = (
        sprites.pack_sheet(rgba_fhwc_uint8, clip_fps, columns=columns, name=base.name)
        if needs_sheet
        else None
    )
    sheet_name = base.with_name(base.name + ".png").name
    try:
        for index, (output, path, fmt) in enumerate(planned):
            existed = path.exists()
            if output.kind == "video" and fmt == "hevc-alpha":
                apple.write_hevc_alpha(path, rgba_fhwc_uint8, clip_fps, overwrite=overwrite)
            elif output.kind in ("video", "png-seq"):
                video_io.write_video(path, rgba_fhwc_uint8, clip_fps, format=fmt, overwrite=overwrite)
            elif output.kind == "html":
                videos = [item.path for item in written if item.kind == "video"]
                web.write_web_html(
                    videos[0], videos[1], path, background=background, title=base.name, overwrite=overwrite
                )
            elif output.kind == "record":
                record = _record(spec, rgba_fhwc_uint8, clip_fps, written)
                _write_json(path, record, overwrite)
            elif sheet is not None:
                _write_sheet_output(output.kind, path, sheet, sheet_name, overwrite)
            if not existed:
                created.append(path)
            written.append(Delivered(path, output.kind, output.description, fmt))
            if progress is not None:
                progress(index + 1, len(planned))
    except BaseException:
        for path in created:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise
    return written


def _write_sheet_output(
    kind: OutputKind, path: Path, sheet: sprites.SpriteSheet, sheet_name: str, overwrite: bool
) -> None:
    if kind == "sprite-sheet":
        video_io.write_image(path, sheet.rgba_hwc_uint8, overwrite=overwrite)
    elif kind == "texturepacker-json":
        _write_json(path, sprites.texturepacker_json(sheet, sheet_name), overwrite)
    elif kind == "aseprite-json":
        _write_json(path, sprites.aseprite_json(sheet, sheet_name), overwrite)
    elif kind == "godot-tres":
        web.write_text_atomic(path, godot.spriteframes_tres(sheet, sheet_name), overwrite=overwrite)


def _write_json(path: Path, obj: dict[str, Any], overwrite: bool) -> None:
    web.write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n", overwrite=overwrite)


def _record(
    target: Target, rgba_fhwc_uint8: np.ndarray, fps: float, written: list[Delivered]
) -> dict[str, Any]:
    frames, height, width = rgba_fhwc_uint8.shape[:3]
    return {
        "layeranim_delivery": 1,
        "target": target.name,
        "tools": target.tools,
        "frames": int(frames),
        "fps": fps,
        "width": int(width),
        "height": int(height),
        "alpha": "straight",
        "alpha_note": target.alpha_note,
        "files": [
            {
                "name": item.path.name,
                "kind": item.kind,
                "format": item.format,
                "description": item.description,
            }
            for item in written
        ],
    }
