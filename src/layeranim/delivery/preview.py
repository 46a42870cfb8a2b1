"""The `layeranim preview` page: every clip over a checkerboard, over chosen colours and as alpha only.

One HTML file with its own CSS and script inlined; videos are referenced by paths relative to the page.
Browsers play WebM (VP8/VP9 alpha) and MP4 (opaque, or stacked alpha, unstacked by an SVG filter).
Everything else (ProRes .mov, FFV1 .mkv, APNG, WebP, GIF, PNG sequences, lossless planar-RGB WebM that
not every browser plays) is converted: a VP9-alpha WebM copy is written into a `<page>_files/` folder
beside the page (lossy, for looking at only; the page says which clips are copies).

Given a folder, or batch manifests (`clip.webm.json` sidecars, see `layeranim.render.batch`), the page is a
gallery that shows each output's prompt and seed.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layeranim import alpha as alpha_ops
from layeranim import video_io
from layeranim.delivery.web import asset_text, css_color, relative_url, write_text_atomic
from layeranim.errors import OutputExistsError, UsageError

PREVIEW_ASSET = "preview.js"
DEFAULT_COLORS = ("#ffffff", "#000000", "#00b140")  # white, black, a chroma-key green
CHECKER_SQUARE_PX = 8
_CLIP_SUFFIXES = {".webm", ".mp4", ".mov", ".mkv", ".apng", ".png", ".webp", ".gif", ".m4v"}


@dataclass(frozen=True)
class PreviewClip:
    """One clip on the page: what the user gave, what the page plays, and what its manifest says."""

    source: Path
    video: Path  # the file the page plays: the source itself, or a converted WebM copy
    converted: bool
    stacked: bool
    fps: float
    frames: int
    width: int
    height: int  # of the clip (for stacked alpha: one half's clip, not the stored picture)
    prompt: str | None = None
    seed: int | None = None
    # Stacked alpha: the stored picture (both halves, padded; the clip is each half's top-left corner).
    picture_width: int | None = None
    picture_height: int | None = None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _manifest_fields(manifest: Any) -> tuple[str | None, int | None]:
    """(prompt, seed) from a render manifest: `item.prompt` (batch) or a top-level `prompt`."""
    if not isinstance(manifest, dict):
        return None, None
    item = manifest.get("item")
    prompt = item.get("prompt") if isinstance(item, dict) else None
    prompt = prompt if isinstance(prompt, str) else manifest.get("prompt")
    seed = manifest.get("seed")
    return (prompt if isinstance(prompt, str) else None), (seed if isinstance(seed, int) else None)


def _manifest_output(manifest_file: Path, manifest: Any) -> Path | None:
    if isinstance(manifest, dict) and isinstance(manifest.get("output"), str):
        output = manifest_file.parent / manifest["output"]
        if output.exists():
            return output
    return None


def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and any(p.suffix.lower() == ".png" for p in path.iterdir())


def _is_sequence_folder(path: Path) -> bool:
    """A folder of PNG frames: .png files and no other clips or manifests (those make it a gallery)."""
    if not path.is_dir():
        return False
    # Hidden files (layeranim's `.layeranim-owned.json` marker among them) are not the folder's content.
    suffixes = [p.suffix.lower() for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    return ".png" in suffixes and not any(s in _CLIP_SUFFIXES - {".png"} or s == ".json" for s in suffixes)


def collect_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, Any]]:
    """Expand files, folders and manifests into (clip path, its manifest or None), in a stable order."""
    found: list[tuple[Path, Any]] = []
    seen: set[Path] = set()

    def add(path: Path, manifest: Any) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            found.append((path, manifest))

    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise UsageError(f"input {str(raw)!r} does not exist; give clips, a folder or manifests.")
        if path.suffix.lower() == ".json":
            manifest = _read_json(path)
            output = _manifest_output(path, manifest)
            if output is None:
                raise UsageError(
                    f'manifest {str(raw)!r} names no existing output (its "output" field); give the clip '
                    "itself or a manifest written beside its output."
                )
            add(output, manifest)
        elif _is_sequence_folder(path):
            add(path, _read_json(path.with_name(path.name + ".json")))
        elif path.is_dir():
            entries = sorted(path.iterdir(), key=lambda p: p.name)
            for manifest_file in (p for p in entries if p.suffix.lower() == ".json"):
                manifest = _read_json(manifest_file)
                output = _manifest_output(manifest_file, manifest)
                if output is not None:
                    add(output, manifest)
            for entry in entries:
                hidden = entry.name.startswith(".") or ".preview." in entry.name
                is_clip = entry.is_file() and entry.suffix.lower() in _CLIP_SUFFIXES
                if not hidden and (is_clip or _is_frame_folder(entry)):
                    add(entry, _read_json(entry.with_name(entry.name + ".json")))
        else:
            add(path, _read_json(path.with_name(path.name + ".json")))
    if not found:
        raise UsageError(
            f"no clips found in {', '.join(map(str, inputs))}; give videos, a folder or manifests."
        )
    return found


def _browser_plays(info: video_io.VideoInfo) -> bool:
    """Whether Chromium and Firefox play this file as it is (with its alpha)."""
    if info.format == "mp4-stacked":
        return True
    if info.codec in ("vp8", "vp9") and info.path.suffix.lower() == ".webm":
        return not info.pix_fmt.startswith("gbr")  # planar-RGB (lossless) VP9 is profile 1: not everywhere
    return info.path.suffix.lower() in (".mp4", ".m4v") and info.codec == "h264" and not info.has_alpha


def _video_style(clip: PreviewClip) -> str:
    """A stacked clip's <video> is the whole picture, scaled so that the clip fills its frame."""
    if not clip.stacked or clip.picture_width is None or clip.picture_height is None:
        return ""
    width = 100 * clip.picture_width / clip.width
    height = 100 * clip.picture_height / clip.height
    return f' style="width: {width:.4f}%; height: {height:.4f}%"'


def _copy_name(index: int, source: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", source.name.rstrip("/")) or "clip"
    return f"{index:02d}-{stem}.webm"


def build_preview(
    inputs: Sequence[str | Path],
    page: str | Path,
    *,
    colors: Sequence[str] = DEFAULT_COLORS,
    title: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, list[PreviewClip]]:
    """Write the preview page for `inputs` (clips, folders, manifests) to `page`; (page, its clips).

    Clips a browser cannot play are converted to VP9-alpha WebM copies in `<page stem>_files/` beside
    the page. Nothing existing is replaced without `overwrite=True`.
    """
    # 1. Check the arguments and the targets before converting anything.
    page = Path(page)
    if page.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"page {str(page)!r} must end in .html.")
    if not page.parent.is_dir():
        raise UsageError(f"the folder of page {str(page)!r} does not exist; create it first.")
    if page.exists() and not overwrite:
        raise OutputExistsError(f"output {str(page)!r} already exists; pass overwrite=True.")
    css_colors = [css_color(color) for color in colors]
    found = collect_inputs(inputs)
    copies = page.parent / f"{page.stem}_files"

    # 2. Probe each clip; find what browsers do not play, and check that its copy may be written.
    infos = [video_io.probe(source) for source, _ in found]
    for index, ((source, _), info) in enumerate(zip(found, infos, strict=True)):
        copy = copies / _copy_name(index, source)
        if not _browser_plays(info) and copy.exists() and not overwrite:
            raise OutputExistsError(
                f"output {str(copy)!r} (the page's copy of {str(source)!r}) already exists; pass "
                "overwrite=True to replace it."
            )

    # 3. Convert what browsers do not play.
    clips: list[PreviewClip] = []
    for index, ((source, manifest), info) in enumerate(zip(found, infos, strict=True)):
        prompt, seed = _manifest_fields(manifest)
        stacked = info.format == "mp4-stacked"
        picture: tuple[int, int] | tuple[None, None] = (None, None)
        if stacked:  # layeranim's mp4-stacked: probe reports the clip; each half is padded (guard band)
            from layeranim.video_io.stacked import half_size

            half_height, half_width = half_size(info.height, info.width)
            picture = (half_width, 2 * half_height)
        video, converted = source, False
        if not _browser_plays(info):
            copies.mkdir(exist_ok=True)
            video = copies / _copy_name(index, source)
            clip = video_io.read_video(source)
            video_io.write_video(video, clip.rgba_fhwc_uint8, clip.fps, format="webm", overwrite=overwrite)
            converted = True
        clips.append(
            PreviewClip(
                source=source,
                video=video,
                converted=converted,
                stacked=stacked,
                fps=info.fps,
                frames=info.frames,
                width=info.width,
                height=info.height,
                prompt=prompt,
                seed=seed,
                picture_width=picture[0],
                picture_height=picture[1],
            )
        )

    # 4. Write the page.
    text = preview_html(clips, page, css_colors, title or "layeranim preview")
    write_text_atomic(page, text, overwrite=overwrite)
    return page, clips


_FILTERS = """<svg width="0" height="0" style="position:absolute" aria-hidden="true">
<filter id="layeranim-alpha" x="0" y="0" width="1" height="1" color-interpolation-filters="sRGB">
<feColorMatrix type="matrix" values="0 0 0 1 0  0 0 0 1 0  0 0 0 1 0  0 0 0 0 1"/>
</filter>
<filter id="layeranim-unstack" x="0" y="0" width="1" height="1" color-interpolation-filters="sRGB"
 primitiveUnits="objectBoundingBox">
<feOffset in="SourceGraphic" dx="0" dy="-0.5" result="lower"/>
<feColorMatrix in="lower" type="matrix" result="mask"
 values="0 0 0 0 0  0 0 0 0 0  0 0 0 0 0  0.299 0.587 0.114 0 0"/>
<feComposite in="SourceGraphic" in2="mask" operator="in"/>
</filter>
<filter id="layeranim-stacked-alpha" x="0" y="0" width="1" height="1" color-interpolation-filters="sRGB"
 primitiveUnits="objectBoundingBox">
<feOffset in="SourceGraphic" dx="0" dy="-0.5"/>
<feColorMatrix type="matrix"
 values="0.299 0.587 0.114 0 0  0.299 0.587 0.114 0 0  0.299 0.587 0.114 0 0  0 0 0 0 1"/>
</filter>
</svg>"""


def _style() -> str:
    light, dark, square = alpha_ops.CHECKER_LIGHT_UINT8, alpha_ops.CHECKER_DARK_UINT8, CHECKER_SQUARE_PX
    light_css, dark_css = f"rgb({light},{light},{light})", f"rgb({dark},{dark},{dark})"
    return f"""
body {{ font: 14px/1.4 system-ui, sans-serif; color: #222; background: #f4f4f4; margin: 0; padding: 16px; }}
h1 {{ font-size: 18px; margin: 0 0 12px; }}
.toolbar, .views, .controls {{
  display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin: 6px 0;
}}
.gallery {{ display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }}
figure.clip {{ margin: 0; padding: 8px; background: #fff; border: 1px solid #ddd; max-width: 100%; }}
.stage {{ display: inline-block; line-height: 0; }}
.stage.view-checker {{
  background-color: {light_css};
  background-image: conic-gradient({dark_css} 25%, {light_css} 0 50%, {dark_css} 0 75%, {light_css} 0);
  background-size: {2 * square}px {2 * square}px;  /* the light square first, as alpha.checkerboard_uint8 */
}}
.stage.view-alpha {{ background: #000; }}
.frame {{ position: relative; overflow: hidden; max-width: 100%; }}
.frame video {{ display: block; width: 100%; height: 100%; }}
.frame.stacked video {{ position: absolute; left: 0; top: 0; height: 200%; filter: url(#layeranim-unstack); }}
.view-alpha .frame video {{ filter: url(#layeranim-alpha); }}
.view-alpha .frame.stacked video {{ filter: url(#layeranim-stacked-alpha); }}
button[aria-pressed="true"] {{ font-weight: bold; }}
.swatch {{ display: inline-block; width: 10px; height: 10px; border: 1px solid #888; margin-right: 4px; }}
figcaption {{ max-width: 480px; }}
.prompt {{ font-style: italic; }}
.meta {{ color: #666; font-size: 12px; }}
"""


def _view_buttons(colors: Sequence[str], attribute: str) -> str:
    buttons = [f'<button type="button" {attribute}="checker" aria-pressed="true">checkerboard</button>']
    for color in colors:
        buttons.append(
            f'<button type="button" {attribute}="color" data-color="{color}" aria-pressed="false">'
            f'<span class="swatch" style="background:{color}"></span>{color}</button>'
        )
    buttons.append(f'<button type="button" {attribute}="alpha" aria-pressed="false">alpha only</button>')
    return "\n".join(buttons)


def _card(clip: PreviewClip, page: Path, colors: Sequence[str]) -> str:
    url = html.escape(relative_url(clip.video, page))
    frame_class = "frame stacked" if clip.stacked else "frame"
    caption = [f"<strong>{html.escape(clip.source.name)}</strong>"]
    if clip.prompt:
        caption.append(f'<div class="prompt">{html.escape(clip.prompt)}</div>')
    details = [f"{clip.width}×{clip.height}", f"{clip.frames} frames", f"{clip.fps:g} fps"]
    if clip.seed is not None:
        details.insert(0, f"seed {clip.seed}")
    if clip.stacked:
        details.append("stacked alpha")
    if clip.converted:
        details.append("shown as a WebM copy")
    caption.append(f'<div class="meta">{html.escape(" · ".join(details))}</div>')
    return f"""<figure class="clip" data-fps="{clip.fps:g}" data-frames="{clip.frames}">
<div class="stage view-checker">
<div class="{frame_class}" style="width: {clip.width}px; aspect-ratio: {clip.width} / {clip.height}">
<video src="{url}" muted loop autoplay playsinline preload="auto"{_video_style(clip)}></video>
</div>
</div>
<div class="controls">
<button type="button" data-action="play">Play</button>
<button type="button" data-action="prev" title="previous frame">◀ frame</button>
<button type="button" data-action="next" title="next frame">frame ▶</button>
<input type="range" min="0" max="{max(clip.frames - 1, 0)}" step="1" value="0" aria-label="scrub">
<span class="frame-label"></span>
</div>
<div class="views">
{_view_buttons(colors, "data-view")}
</div>
<figcaption>{"".join(caption)}</figcaption>
</figure>"""


def preview_html(clips: Sequence[PreviewClip], page: Path, colors: Sequence[str], title: str) -> str:
    """The page's HTML: a toolbar for all clips, then one card per clip."""
    cards = "\n".join(_card(clip, page, colors) for clip in clips)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="layeranim">
<title>{html.escape(title)}</title>
<style>{_style()}</style>
</head>
<body>
{_FILTERS}
<h1>{html.escape(title)}</h1>
<div class="toolbar">All clips: {_view_buttons(colors, "data-all-view")}</div>
<main class="gallery">
{cards}
</main>
<script>
{asset_text(PREVIEW_ASSET)}
</script>
</body>
</html>
"""
