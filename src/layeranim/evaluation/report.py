"""A self-contained HTML report of an evaluation, and the page pieces a preview page can reuse.

The page loads nothing from the network: styles and script are inline, plots are inline SVG, and clips
are referenced relatively (as they are when a browser can play them — WebM, APNG, animated WebP, GIF —
else as a VP9-alpha WebM copy written into the report's `NAME_files/` folder, next to the contact sheets).

Reusable pieces (no evaluation inside): `CHECKER_CSS`/`PAGE_CSS`/`PAGE_JS`, `page_html`,
`clip_over_checkerboard`, `clip_over_color`, `media_html`, `browser_media_kind`, `sparkline_svg`,
`contact_sheet`, `playable_source`.

Axis legend: f frames, h height, w width, c channels.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from layeranim import alpha as alpha_ops
from layeranim import video_io
from layeranim.errors import OutputExistsError
from layeranim.evaluation.evaluate import HIGHER_IS_BETTER, METRIC_KEYS, item_name

MediaKind = Literal["video", "img"]

CHECKER_SQUARE_PX = 8  # the same squares as alpha.checkerboard_uint8 and the preview files
_LIGHT = (
    f"rgb({alpha_ops.CHECKER_LIGHT_UINT8},{alpha_ops.CHECKER_LIGHT_UINT8},{alpha_ops.CHECKER_LIGHT_UINT8})"
)
_DARK = f"rgb({alpha_ops.CHECKER_DARK_UINT8},{alpha_ops.CHECKER_DARK_UINT8},{alpha_ops.CHECKER_DARK_UINT8})"

CHECKER_CSS = (
    f".la-checker{{background:repeating-conic-gradient({_LIGHT} 0 25%,{_DARK} 0 50%) "
    f"0 0/{2 * CHECKER_SQUARE_PX}px {2 * CHECKER_SQUARE_PX}px;}}"
)
PAGE_CSS = (
    CHECKER_CSS
    + """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px}h2{font-size:16px;margin:0 0 4px}
section.la-clip{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px;margin:12px 0}
.la-row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure{margin:0}figcaption{font-size:12px;color:#666}
.la-stage{display:inline-block;line-height:0}
.la-stage video,.la-stage img{display:block;image-rendering:pixelated}
.la-sheet{max-width:100%;image-rendering:pixelated}
.la-plots{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0}
.la-plots svg{background:#f4f4f4;border:1px solid #e4e4e4}
table{border-collapse:collapse;font-size:13px}
td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.la-better{color:#0a7d27}.la-worse{color:#b3261e}.la-error{color:#b3261e}
.la-prompt{color:#444;font-style:italic}.la-legend{font-size:12px;margin:0}
"""
)
# Side-by-side clips play in step: starting one restarts its group together; a button pauses or plays all.
PAGE_JS = """
document.querySelectorAll('[data-la-sync]').forEach(function (group) {
  var videos = group.querySelectorAll('video');
  videos.forEach(function (v) {
    v.addEventListener('play', function () {
      videos.forEach(function (o) {
        if (o !== v && Math.abs(o.currentTime - v.currentTime) > 0.05) { o.currentTime = v.currentTime; }
      });
    });
  });
});
var laToggle = document.getElementById('la-toggle');
if (laToggle) {
  laToggle.addEventListener('click', function () {
    var videos = Array.prototype.slice.call(document.querySelectorAll('video'));
    var anyPlaying = videos.some(function (v) { return !v.paused; });
    videos.forEach(function (v) { if (anyPlaying) { v.pause(); } else { v.play(); } });
    laToggle.textContent = anyPlaying ? 'play all' : 'pause all';
  });
}
"""

_BROWSER_VIDEO = (".webm",)
_BROWSER_IMAGE = (".apng", ".png", ".webp", ".gif")

METRIC_LABELS = {
    "clip_score": ("CLIP score", "100 × cos(image, text), mean over frames"),
    "dynamic_degree": ("dynamic degree", "VBench top-5 % flow, px, inside alpha > 0.5"),
    "dynamic": ("dynamic (VBench)", "enough frame pairs move past VBench's threshold"),
    "dynamic_degree_unmasked": (
        "dynamic degree, whole frame",
        "as the paper measured it, background included",
    ),
    "flow_mean": ("mean flow", "px per frame, inside alpha > 0.5"),
    "alpha_stability": ("alpha change", "mean |Δalpha| per frame, raw"),
    "alpha_stability_motion_compensated": ("alpha flicker", "mean |Δalpha| after warping by the flow"),
    "alpha_coverage_drift": ("coverage drift", "max |coverage − still's| / still's"),
    "soft_edge_fraction": ("soft edges", "share of visible pixels with 0 < alpha < 1"),
    "colour_leak": ("colour leak", "hidden colour near edges vs edge padding"),
    "still_psnr_db": ("still PSNR", "dB, still frame vs input still (∞: identical)"),
    "still_max_diff": ("still max diff", "8-bit levels"),
    "still_identical": ("still identical", "the still frame is the input still"),
    "loop_seam": ("loop seam", "last→first change / median change (1: seamless)"),
}


# ---------------------------------------------------------------------------------------------------
# Reusable pieces.


def browser_media_kind(path: Path | str) -> MediaKind | None:
    """How a browser shows a clip file with its alpha: `video` (WebM), `img` (APNG, WebP, GIF) or None."""
    suffix = Path(path).suffix.lower()
    if Path(path).is_dir():
        return None
    if suffix in _BROWSER_VIDEO:
        return "video"
    if suffix in _BROWSER_IMAGE:
        return "img"
    return None


def media_html(src: str, kind: MediaKind, width: int, height: int, *, label: str = "") -> str:
    """An autoplaying, looping, muted clip element (`<video>` or animated `<img>`) at a display size."""
    src_attr = html.escape(src, quote=True)
    alt = html.escape(label, quote=True)
    if kind == "video":
        return (
            f'<video src="{src_attr}" width="{width}" height="{height}" autoplay loop muted playsinline '
            f'preload="auto" title="{alt}"></video>'
        )
    return f'<img src="{src_attr}" width="{width}" height="{height}" alt="{alt}">'


def clip_over_checkerboard(src: str, kind: MediaKind, width: int, height: int, *, label: str = "") -> str:
    """A clip shown over the transparency checkerboard (CSS, two grays like the preview files)."""
    return f'<div class="la-stage la-checker">{media_html(src, kind, width, height, label=label)}</div>'


def clip_over_color(
    src: str, kind: MediaKind, width: int, height: int, color_rgb: Sequence[int], *, label: str = ""
) -> str:
    """A clip shown over an opaque colour (0–255 RGB)."""
    red, green, blue = (int(c) for c in color_rgb)
    return (
        f'<div class="la-stage" style="background:rgb({red},{green},{blue})">'
        f"{media_html(src, kind, width, height, label=label)}</div>"
    )


def display_size(width: int, height: int, target: int = 256) -> tuple[int, int]:
    """Whole-number upscaling of small clips to about `target` pixels wide (sharp pixels), never down."""
    scale = max(1, target // max(width, 1))
    return width * scale, height * scale


def sparkline_svg(
    series: Sequence[Sequence[float] | None],
    *,
    title: str,
    width: int = 220,
    height: int = 60,
    colors: Sequence[str] = ("#1565c0", "#e65100"),
    y_min: float | None = 0.0,
) -> str:
    """A small inline SVG line plot of one or more series (one per clip of a comparison), with its range."""
    present = [list(s) for s in series if s]
    values = [v for s in present for v in s if v is not None and math.isfinite(v)]
    low = min(values) if values else 0.0
    low = min(low, y_min) if y_min is not None else low
    high = max(values) if values else 1.0
    if high <= low:
        high = low + 1.0
    pad = 14  # room for the title
    lines = []
    for index, values_i in enumerate(series):
        if not values_i:
            continue
        count = len(values_i)
        points = " ".join(
            f"{(i / max(count - 1, 1)) * (width - 4) + 2:.1f},"
            f"{height - 2 - (float(v) - low) / (high - low) * (height - pad - 4):.1f}"
            for i, v in enumerate(values_i)
            if v is not None and math.isfinite(v)
        )
        color = colors[index % len(colors)]
        lines.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>')
    label = html.escape(f"{title}  [{low:.3g} … {high:.3g}]")
    return (
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>{html.escape(title)}</title>'
        f'<text x="3" y="11" font-size="10" fill="#555">{label}</text>{"".join(lines)}</svg>'
    )


def contact_sheet(rgba_fhwc_uint8: np.ndarray, *, columns: int = 8, max_frames: int = 16) -> np.ndarray:
    """Up to `max_frames` evenly spaced frames over the checkerboard in a grid: (h, w, 3) uint8."""
    frames = len(rgba_fhwc_uint8)
    picks = np.unique(np.linspace(0, frames - 1, min(frames, max_frames)).round().astype(int))
    tiles_fhwc = alpha_ops.composite_over_checkerboard(rgba_fhwc_uint8[picks])
    columns = min(columns, len(picks))
    rows = math.ceil(len(picks) / columns)
    height, width = tiles_fhwc.shape[1:3]
    gap = 2
    sheet = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, np.uint8)
    for n, tile in enumerate(tiles_fhwc):
        row, col = divmod(n, columns)
        sheet[
            row * (height + gap) : row * (height + gap) + height,
            col * (width + gap) : col * (width + gap) + width,
        ] = tile
    return sheet


def playable_source(clip: Path, rgba_fhwc_uint8: np.ndarray, fps: float, assets: Path, stem: str) -> Path:
    """The clip itself when a browser plays it with alpha, else a VP9-alpha WebM copy written in `assets`."""
    if browser_media_kind(clip) is not None:
        return clip
    return video_io.write_video(assets / f"{stem}.webm", rgba_fhwc_uint8, fps, format="webm").path


def page_html(title: str, body: str) -> str:
    """A complete self-contained page: inline style and script, nothing fetched from the network."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{PAGE_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        '<p><button id="la-toggle" type="button">pause all</button></p>'
        f"{body}<script>{PAGE_JS}</script></body></html>\n"
    )


# ---------------------------------------------------------------------------------------------------
# The evaluation report.


def format_value(key: str, value: Any) -> str:
    """A metric value as the report prints it."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    value = float(value)
    if math.isinf(value):
        return "∞"
    if key in ("alpha_stability", "alpha_stability_motion_compensated", "colour_leak"):
        return f"{value:.4f}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def _rel(path: Path | str, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), start.resolve())).as_posix()


def _psnr_value(result: dict[str, Any]) -> Any:
    metrics = result["metrics"]
    if metrics.get("still_identical"):
        return math.inf
    return metrics.get("still_psnr_db")


def _metric_rows(results: Sequence[dict[str, Any]]) -> str:
    """Table rows: one per metric, one value column per result (and B − A for two)."""
    rows = []
    for key in METRIC_KEYS:
        values = [r["metrics"].get(key) if "metrics" in r else None for r in results]
        if key == "still_psnr_db":
            values = [_psnr_value(r) if "metrics" in r else None for r in results]
        if all(v is None for v in values) and key != "still_psnr_db":
            continue
        if key == "still_psnr_db" and all(
            "metrics" in r and r["metrics"].get("still_max_diff") is None for r in results
        ):
            continue
        label, hint = METRIC_LABELS[key]
        cells = "".join(f'<td class="num">{html.escape(format_value(key, v))}</td>' for v in values)
        if len(values) == 2:
            cells += f'<td class="num">{_diff_cell(key, values[0], values[1])}</td>'
        rows.append(f'<tr><th title="{html.escape(hint, quote=True)}">{html.escape(label)}</th>{cells}</tr>')
    return "".join(rows)


def _diff_cell(key: str, a: Any, b: Any) -> str:
    if a is None or b is None or isinstance(a, bool) or isinstance(b, bool):
        return "–"
    diff = float(b) - float(a)
    if not math.isfinite(diff):
        return "–"
    better = HIGHER_IS_BETTER.get(key)
    css = ""
    if better is not None and diff != 0:
        css = "la-better" if (diff > 0) == better else "la-worse"
    return f'<span class="{css}">{diff:+.4g}</span>'


def _clip_assets(result: dict[str, Any], report_dir: Path, assets: Path, tag: str) -> dict[str, Any]:
    """Read the clip again; write its contact sheet (and a playable copy when needed) into `assets`."""
    clip_path = Path(result["clip"])
    clip = video_io.read_video(clip_path)
    stem = f"{tag}{item_name(clip_path)}"
    sheet = contact_sheet(clip.rgba_fhwc_uint8)
    sheet_rgba = np.concatenate([sheet, np.full((*sheet.shape[:2], 1), 255, np.uint8)], axis=-1)
    sheet_path = video_io.write_image(assets / f"{stem}.contact.png", sheet_rgba, overwrite=True)
    source = playable_source(clip_path, clip.rgba_fhwc_uint8, clip.fps, assets, stem)
    height, width = clip.rgba_fhwc_uint8.shape[1:3]
    kind = browser_media_kind(source) or "video"
    return {
        "src": _rel(source, report_dir),
        "kind": kind,
        "size": display_size(width, height),
        "sheet": _rel(sheet_path, report_dir),
    }


def _views(media: dict[str, Any], label: str, background_rgb: Sequence[int]) -> str:
    width, height = media["size"]
    checker = clip_over_checkerboard(media["src"], media["kind"], width, height, label=label)
    gray = clip_over_color(media["src"], media["kind"], width, height, background_rgb, label=label)
    return (
        f"<figure>{checker}<figcaption>{html.escape(label)} over checkerboard</figcaption></figure>"
        f"<figure>{gray}<figcaption>{html.escape(label)} over the background</figcaption></figure>"
    )


def _plots(results: Sequence[dict[str, Any]]) -> str:
    series = [r.get("series", {}) for r in results]
    return (
        '<div class="la-plots">'
        + sparkline_svg([s.get("alpha_coverage") for s in series], title="alpha coverage")
        + sparkline_svg([s.get("alpha_change") for s in series], title="alpha change |Δα|")
        + sparkline_svg([s.get("alpha_change_motion_compensated") for s in series], title="alpha flicker")
        + sparkline_svg([s.get("flow_magnitude") for s in series], title="flow magnitude (px)")
        + "</div>"
        + (
            '<p class="la-legend"><span style="color:#1565c0">━ A</span> '
            '<span style="color:#e65100">━ B</span></p>'
            if len(results) == 2
            else ""
        )
    )


def _section(
    results: Sequence[dict[str, Any]],
    media: Sequence[dict[str, Any] | None],
    labels: Sequence[str],
    bg: Sequence[int],
) -> str:
    first = results[0]
    title = html.escape(item_name(first["clip"]) if len(results) == 1 else str(first.get("item", "")))
    prompt = next((r.get("prompt") for r in results if r.get("prompt")), None)
    parts = [f'<section class="la-clip"><h2>{title}</h2>']
    if prompt:
        parts.append(f'<p class="la-prompt">{html.escape(prompt)}</p>')
    for result, label in zip(results, labels, strict=True):
        if "error" in result:
            parts.append(f'<p class="la-error">{html.escape(label)}: {html.escape(result["error"])}</p>')
    parts.append('<div class="la-row" data-la-sync>')
    for result, item_media, label in zip(results, media, labels, strict=True):
        if item_media is not None:
            parts.append(_views(item_media, f"{label} {Path(result['clip']).name}".strip(), bg))
    parts.append("</div>")
    sheets = [
        f'<figure><img class="la-sheet" src="{html.escape(m["sheet"], quote=True)}" alt="contact sheet">'
        f"<figcaption>{html.escape(label)} contact sheet</figcaption></figure>"
        for m, label in zip(media, labels, strict=True)
        if m is not None
    ]
    parts.append(f'<div class="la-row">{"".join(sheets)}</div>')
    measured = [r for r in results if "metrics" in r]
    if measured:
        parts.append(_plots(results))
        head = "".join(f"<th>{html.escape(label or 'value')}</th>" for label in labels)
        head += "<th>B − A</th>" if len(results) == 2 else ""
        parts.append(f"<table><tr><th>metric</th>{head}</tr>{_metric_rows(results)}</table>")
    parts.append("</section>")
    return "".join(parts)


def _summary_table(aggregates: dict[str, dict[str, Any]]) -> str:
    rows = []
    for key, stats in aggregates.items():
        label = METRIC_LABELS[key][0]
        mean, std = stats.get("mean"), stats.get("std")
        text = "–" if mean is None else f"{mean:.4g} ± {std:.2g}"
        extra = f" (+{stats['n_inf']} ∞)" if stats.get("n_inf") else ""
        rows.append(
            f'<tr><th>{html.escape(label)}</th><td class="num">{text}{extra}</td><td>{stats["n"]}</td></tr>'
        )
    return f"<table><tr><th>metric</th><th>mean ± std</th><th>n</th></tr>{''.join(rows)}</table>"


def _comparison_table(summary: dict[str, dict[str, Any]]) -> str:
    rows = []
    for key, stats in summary.items():
        label = METRIC_LABELS[key][0]
        rows.append(
            f"<tr><th>{html.escape(label)}</th><td class='num'>{stats['a']:.4g}</td>"
            f"<td class='num'>{stats['b']:.4g}</td>"
            f"<td class='num'>{_diff_cell(key, stats['a'], stats['b'])}</td><td>{stats['n']}</td></tr>"
        )
    head = "<tr><th>metric</th><th>A</th><th>B</th><th>B − A</th><th>pairs</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def assets_dir(report: Path | str) -> Path:
    """Where a report's files go: `report.html` → `report_files/` beside it."""
    report = Path(report)
    return report.with_name(f"{report.stem}_files")


def write_report(
    path: Path | str,
    results: Sequence[dict[str, Any]],
    *,
    aggregates: dict[str, dict[str, Any]] | None = None,
    results_b: Sequence[dict[str, Any]] | None = None,
    comparison: dict[str, Any] | None = None,
    background_rgb: Sequence[int] = (128, 128, 128),
    title: str = "layeranim evaluation",
    overwrite: bool = False,
) -> Path:
    """Write the HTML report (and its `NAME_files/` folder) for a set, or for an A/B comparison.

    For a comparison pass `results` (A), `results_b` and `comparison` (from `evaluate.compare`): each pair
    is shown side by side. Nothing is replaced without `overwrite`; both are written under temporary names
    and renamed when complete.
    """
    path = Path(path)
    assets = assets_dir(path)
    for target in (path, assets):
        if target.exists() and not overwrite:
            raise OutputExistsError(f"output {str(target)!r} exists; pass overwrite=True to replace it.")
    report_dir = path.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    with video_io.atomic_output(assets, overwrite, directory=True) as assets_temp:
        body = []
        if comparison is not None and results_b is not None:
            body.append("<h2>A vs B</h2>" + _comparison_table(comparison["metrics"]))
            by_clip_b = {r["clip"]: r for r in results_b}
            for pair in comparison["pairs"]:
                a = next(r for r in results if r["clip"] == pair["a"])
                b = by_clip_b[pair["b"]]
                media = [
                    _media_or_none(r, report_dir, assets_temp, assets, tag)
                    for r, tag in ((a, "A-"), (b, "B-"))
                ]
                body.append(_section([a, b], media, ["A", "B"], background_rgb))
        else:
            if aggregates:
                body.append("<h2>All clips</h2>" + _summary_table(aggregates))
            for index, result in enumerate(results):
                media = [_media_or_none(result, report_dir, assets_temp, assets, f"{index:04d}-")]
                body.append(_section([result], media, [""], background_rgb))
        page = page_html(title, "".join(body))
    with video_io.atomic_output(path, overwrite) as temp:
        temp.write_text(page, encoding="utf-8")
    return path


def _media_or_none(
    result: dict[str, Any], report_dir: Path, assets_temp: Path, assets: Path, tag: str
) -> dict[str, Any] | None:
    """The clip's media, with paths into the temporary assets folder rewritten to its final name."""
    if "error" in result:
        return None
    media = _clip_assets(result, report_dir, assets_temp, tag)
    temp_rel, final_rel = _rel(assets_temp, report_dir), _rel(assets, report_dir)
    for key in ("src", "sheet"):
        if media[key].startswith(temp_rel + "/"):
            media[key] = final_rel + media[key][len(temp_rel) :]
    return media
