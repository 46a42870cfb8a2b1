"""Pages that play alpha video in every browser: the stacked-alpha player and the `web` target's snippet.

Both pages inline the project's own player (`assets/stacked-alpha.js`) and reference their videos by a
path relative to the page, so the page, its videos and their folder can move together.
"""

from __future__ import annotations

import html
import os
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from layeranim import alpha as alpha_ops
from layeranim import video_io
from layeranim.errors import UsageError

STACKED_PLAYER_ASSET = "stacked-alpha.js"


def asset_text(name: str) -> str:
    """The text of one of the page assets shipped in `layeranim/delivery/assets/`."""
    return resources.files("layeranim.delivery").joinpath("assets", name).read_text(encoding="utf-8")


def relative_url(target: str | Path, page: str | Path) -> str:
    """`target` as a URL relative to the folder of `page` (forward slashes, percent-encoded)."""
    relative = os.path.relpath(Path(target).resolve(), Path(page).resolve().parent)
    return quote(Path(relative).as_posix())


def css_color(color: str) -> str:
    """A user's colour (#rrggbb, r,g,b or a name) as CSS `#rrggbb`; UsageError naming it otherwise."""
    red, green, blue = alpha_ops.parse_color(color)
    return f"#{red:02x}{green:02x}{blue:02x}"


def write_text_atomic(path: str | Path, text: str, *, overwrite: bool = False) -> Path:
    """Write a UTF-8 text file through a temporary file beside it; replace only with `overwrite`."""
    target = Path(path)
    with video_io.atomic_output(target, overwrite) as temp:
        temp.write_text(text, encoding="utf-8")
    return target


def _size_of(video: Path, stacked: bool) -> tuple[int, int]:
    """The clip's (width, height): a stacked file layeranim tagged reports its clip's size itself; an
    untagged stacked file is taken as two equal halves."""
    info = video_io.probe(video)
    if stacked and getattr(info, "alpha_layout", None) != "stacked":
        return info.width, info.height // 2
    return info.width, info.height


def _page(title: str, background: str, style: str, body: str, script: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="layeranim">
<title>{html.escape(title)}</title>
<style>
html, body {{ margin: 0; background: {background}; }}
{style}
</style>
</head>
<body>
{body}
<script>
{script}
</script>
</body>
</html>
"""


def stacked_player_markup(video_url: str, width: int, height: int, *, loop: bool = True) -> str:
    """The element the player script turns into a stacked-alpha view (a hidden video and a canvas)."""
    loop_attr = " loop" if loop else ""
    return (
        f'<div class="layeranim-player" data-layeranim-stacked data-clip-width="{width}" '
        f'data-clip-height="{height}">\n'
        f'<video data-layeranim-stacked-video src="{html.escape(video_url)}" muted playsinline autoplay'
        f'{loop_attr} preload="auto" hidden></video>\n'
        f'<canvas class="layeranim-view" width="{width}" height="{height}" '
        f'style="width: {width}px"></canvas>\n'
        "</div>"
    )


def write_stacked_html(
    video_path: str | Path,
    html_path: str | Path | None = None,
    *,
    background: str = "#ffffff",
    title: str | None = None,
    loop: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a small page beside a stacked-alpha MP4 that plays it over the page's `background` colour.

    `html_path` defaults to the video's name with `.html`. The video is referenced relatively; the page
    carries its own player (WebGL, or an SVG filter where WebGL may not read the video, e.g. file://).
    Returns the page's path.
    """
    video = Path(video_path)
    if not video.is_file():
        raise UsageError(f"video_path {str(video_path)!r} is not a file; write the stacked MP4 first.")
    page = Path(html_path) if html_path is not None else video.with_suffix(".html")
    if page.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"html_path {str(page)!r} must end in .html.")
    width, height = _size_of(video, stacked=True)
    body = stacked_player_markup(relative_url(video, page), width, height, loop=loop)
    text = _page(
        title or video.name,
        css_color(background),
        ".layeranim-view { display: block; max-width: 100%; height: auto; }",
        body,
        asset_text(STACKED_PLAYER_ASSET),
    )
    return write_text_atomic(page, text, overwrite=overwrite)


def web_snippet(webm_url: str, stacked_url: str, width: int, height: int, *, loop: bool = True) -> str:
    """Markup that plays the VP9 alpha WebM where the browser can, else the stacked MP4 (Safari).

    Without JavaScript the WebM plays (Chromium, Firefox). Include the player script once per page.
    """
    loop_attr = " loop" if loop else ""
    return (
        f'<div class="layeranim-player" data-layeranim-stacked data-clip-width="{width}" '
        f'data-clip-height="{height}">\n'
        f'<video data-layeranim-webm class="layeranim-view" src="{html.escape(webm_url)}" muted playsinline '
        f'autoplay{loop_attr} width="{width}" height="{height}"></video>\n'
        f'<video data-layeranim-stacked-video src="{html.escape(stacked_url)}" muted playsinline autoplay'
        f'{loop_attr} preload="auto" hidden></video>\n'
        f'<canvas class="layeranim-view" width="{width}" height="{height}" '
        f'style="width: {width}px; display: none"></canvas>\n'
        "</div>"
    )


def write_web_html(
    webm_path: str | Path,
    stacked_path: str | Path,
    html_path: str | Path,
    *,
    background: str = "#ffffff",
    title: str | None = None,
    loop: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write the `web` target's page: its snippet (copy it into your site) plus the player script."""
    webm, stacked, page = Path(webm_path), Path(stacked_path), Path(html_path)
    width, height = _size_of(webm, stacked=False)
    snippet = web_snippet(relative_url(webm, page), relative_url(stacked, page), width, height, loop=loop)
    text = _page(
        title or webm.stem,
        css_color(background),
        ".layeranim-view { display: block; max-width: 100%; height: auto; }",
        "<!-- layeranim web snippet: copy this element and the script below into your page. -->\n" + snippet,
        asset_text(STACKED_PLAYER_ASSET),
    )
    return write_text_atomic(page, text, overwrite=overwrite)
