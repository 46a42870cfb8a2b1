"""Evaluate clips: every metric of one clip, sets of clips, aggregates, A/B comparisons, manifests.

`evaluate_frames` measures frames in memory; `evaluate_clip` reads a file (and the JSON manifest layeranim
writes beside its outputs, for the prompt, the still and its frame) and calls it. Results are plain dicts
ready for JSON (`json_ready` turns ∞ into null): `metrics` (one number per metric), `series` (per-frame
values for plots) and where the numbers came from.

Metric names and units (alpha and differences in [0, 1], flow in pixels):

- `clip_score`: mean over frames of 100 × cos(CLIP image, CLIP text), frames over the background.
- `dynamic_degree`: VBench's score (mean top-5 % flow magnitude per frame pair, frames subsampled to
  about 8 fps as VBench does) inside the union of alpha > 0.5 of each pair; `dynamic`: VBench's
  moving/static verdict from the same numbers;
  `dynamic_degree_unmasked`: the same over the whole frame (how the paper measured it, background and
  all); `flow_mean`: the plain mean flow magnitude inside the mask.
- `alpha_stability`: mean |Δalpha| between consecutive frames; `alpha_stability_motion_compensated`: the
  same after warping the previous alpha by the flow (flicker that is not motion).
- `alpha_coverage_drift`: max relative change of alpha coverage from the still frame.
- `soft_edge_fraction`: share of visible pixels that are partly transparent.
- `colour_leak`: hidden colour next to edges that differs from edge padding (0 when padded).
- `still_psnr_db`, `still_max_diff`, `still_identical`: the still frame against the input still
  (premultiplied RGBA, 8-bit levels); PSNR is ∞ (JSON null, with `still_identical: true`) when identical.
- `loop_seam`: last→first frame difference over the median consecutive difference (1: seamless).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from layeranim import alpha as alpha_ops
from layeranim import video_io
from layeranim.errors import LayerAnimError, UsageError
from layeranim.evaluation import flow as flow_ops
from layeranim.evaluation import metrics

if TYPE_CHECKING:
    from layeranim.evaluation.clip_score import ClipScorer

logger = logging.getLogger(__name__)

DEFAULT_BACKGROUND_RGB = (0.5, 0.5, 0.5)  # 50 % gray, in [0, 1]
MASK_THRESHOLD = 0.5  # alpha above this counts as "the subject" for flow
CLIP_SUFFIXES = (".webm", ".mov", ".mkv", ".mp4", ".apng", ".png", ".webp", ".gif", ".avi", ".m4v")
METRIC_KEYS = (
    "clip_score",
    "dynamic_degree",
    "dynamic",
    "dynamic_degree_unmasked",
    "flow_mean",
    "alpha_stability",
    "alpha_stability_motion_compensated",
    "alpha_coverage_drift",
    "soft_edge_fraction",
    "colour_leak",
    "still_psnr_db",
    "still_max_diff",
    "still_identical",
    "loop_seam",
)
HIGHER_IS_BETTER = {
    "clip_score": True,
    "dynamic_degree": True,
    "dynamic": True,
    "dynamic_degree_unmasked": True,
    "flow_mean": True,
    "alpha_stability": False,
    "alpha_stability_motion_compensated": False,
    "alpha_coverage_drift": False,
    "colour_leak": False,
    "still_psnr_db": True,
    "still_max_diff": False,
    "still_identical": True,
    "loop_seam": False,
}


def middle_index(frames: int) -> int:
    """The frame stage two keeps as the clean base by default: (F − 1) // 2 (see pipelines.layeranimate)."""
    return (frames - 1) // 2


def composite_rgb(rgba_fhwc_uint8: np.ndarray, background_rgb_01: Sequence[float]) -> np.ndarray:
    """Straight RGBA over an opaque background → (f, h, w, 3) uint8, what a viewer (and CLIP) sees."""
    rgb_01 = rgba_fhwc_uint8[..., :3].astype(np.float32) / 255.0
    alpha_fhw1_01 = rgba_fhwc_uint8[..., 3:4].astype(np.float32) / 255.0
    out_01 = alpha_ops.composite_over_color(rgb_01, alpha_fhw1_01, np.asarray(background_rgb_01, np.float32))
    return np.clip(np.rint(out_01 * 255.0), 0, 255).astype(np.uint8)


def evaluate_frames(
    rgba_fhwc_uint8: np.ndarray,
    *,
    fps: float,
    prompt: str | None = None,
    still_rgba_hwc_uint8: np.ndarray | None = None,
    still_index: int | None = None,
    background_rgb_01: Sequence[float] = DEFAULT_BACKGROUND_RGB,
    clip_scorer: ClipScorer | None = None,
    flow_method: str = "auto",
    device: str = "cpu",
) -> dict[str, Any]:
    """Every metric of one straight-RGBA clip (f ≥ 2 frames): {"metrics", "series", "flow_method", …}.

    `still_index` is the frame made from the still (default: the middle frame, stage two's base);
    `clip_scorer` None skips the CLIP score, as does a missing prompt.
    """
    # 1. Check inputs.
    metrics.check_clip(rgba_fhwc_uint8, min_frames=2)
    frames, height, width = rgba_fhwc_uint8.shape[:3]
    if not fps > 0:
        raise UsageError(f"fps must be positive, not {fps}.")
    index = middle_index(frames) if still_index is None else still_index
    if not 0 <= index < frames:
        raise UsageError(f"still_index {index} is outside the clip's frames 0..{frames - 1}.")
    if len(background_rgb_01) != 3:
        raise UsageError(f"background_rgb_01 must be three numbers in [0, 1], not {background_rgb_01!r}.")

    # 2. Motion: backward flow of the frames as seen over the background, masked by the subject.
    rgb_fhwc_uint8 = composite_rgb(rgba_fhwc_uint8, background_rgb_01)
    flow_fhw2, used_method = flow_ops.backward_flows(rgb_fhwc_uint8, flow_method, device)
    subject_fhw = metrics.alpha_01(rgba_fhwc_uint8) > MASK_THRESHOLD
    mask_fhw = subject_fhw[1:] | subject_fhw[:-1]  # union over each pair
    # VBench measures about 8 frames per second: faster clips are subsampled first (every round(fps/8)th).
    step = flow_ops.vbench_frame_step(fps)
    if step == 1 or frames <= step:
        vb_flow_fhw2, vb_mask_fhw, vb_fps = flow_fhw2, mask_fhw, fps
    else:
        vb_flow_fhw2, _ = flow_ops.backward_flows(rgb_fhwc_uint8[::step], used_method, device)
        vb_mask_fhw = subject_fhw[::step][1:] | subject_fhw[::step][:-1]
        vb_fps = fps / step
    masked = flow_ops.dynamic_degree(vb_flow_fhw2, vb_fps, vb_mask_fhw)
    unmasked = flow_ops.dynamic_degree(vb_flow_fhw2, vb_fps)
    magnitude_fhw = flow_ops.flow_magnitude(flow_fhw2)
    flow_pair_means = np.array(
        [float(magnitude_fhw[t][mask_fhw[t]].mean()) if mask_fhw[t].any() else 0.0 for t in range(frames - 1)]
    )

    # 3. Alpha over time.
    change = metrics.alpha_change(rgba_fhwc_uint8)
    change_mc = metrics.motion_compensated_alpha_change(rgba_fhwc_uint8, flow_fhw2)
    coverage = metrics.alpha_coverage(rgba_fhwc_uint8)

    # 4. The still frame.
    fidelity = None
    if still_rgba_hwc_uint8 is not None:
        fidelity = metrics.base_frame_fidelity(rgba_fhwc_uint8[index], still_rgba_hwc_uint8)

    # 5. Text faithfulness.
    clip_frame_scores = None
    if clip_scorer is not None and prompt:
        clip_frame_scores = clip_scorer.frame_scores(rgb_fhwc_uint8, prompt)

    result_metrics: dict[str, Any] = {
        "clip_score": float(clip_frame_scores.mean()) if clip_frame_scores is not None else None,
        "dynamic_degree": masked.score,
        "dynamic": masked.dynamic,
        "dynamic_degree_unmasked": unmasked.score,
        "flow_mean": float(flow_pair_means.mean()),
        "alpha_stability": float(change.mean()),
        "alpha_stability_motion_compensated": float(change_mc.mean()),
        "alpha_coverage_drift": metrics.alpha_coverage_drift(rgba_fhwc_uint8, index),
        "soft_edge_fraction": metrics.soft_edge_fraction(rgba_fhwc_uint8),
        "colour_leak": metrics.colour_leak(rgba_fhwc_uint8),
        "still_psnr_db": fidelity.psnr_db if fidelity is not None else None,
        "still_max_diff": fidelity.max_diff if fidelity is not None else None,
        "still_identical": fidelity.identical if fidelity is not None else None,
        "loop_seam": metrics.loop_seam_score(rgba_fhwc_uint8),
    }
    return {
        "frames": int(frames),
        "width": int(width),
        "height": int(height),
        "fps": float(fps),
        "prompt": prompt,
        "still_index": int(index),
        "flow_method": used_method,
        "clip_model": clip_scorer.name if clip_frame_scores is not None and clip_scorer is not None else None,
        "dynamic_threshold": masked.threshold,
        "metrics": result_metrics,
        "series": {
            "alpha_coverage": coverage.tolist(),
            "alpha_change": change.tolist(),
            "alpha_change_motion_compensated": change_mc.tolist(),
            "flow_magnitude": flow_pair_means.tolist(),
            "flow_top5": masked.pair_scores.tolist(),
            "clip_score": clip_frame_scores.tolist() if clip_frame_scores is not None else None,
        },
    }


# ---------------------------------------------------------------------------------------------------
# Files and manifests.


def manifest_path(clip: Path | str) -> Path:
    """The manifest layeranim writes beside an output: `clip.webm` → `clip.webm.json`, `f/` → `f.json`."""
    clip = Path(str(clip).rstrip("/" + os.sep) or ".")
    return clip.with_name(clip.name + ".json")


def read_manifest(clip: Path | str) -> dict[str, Any] | None:
    """The manifest beside `clip`, or None when there is none (or it is not a JSON object)."""
    try:
        data = json.loads(manifest_path(clip).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def manifest_fields(manifest: dict[str, Any], base_dir: Path, frames: int) -> dict[str, Any]:
    """What evaluation needs from a manifest: prompt, still path, still index, seed, item index (or None)."""
    item = manifest.get("item") if isinstance(manifest.get("item"), dict) else {}
    params = manifest.get("params") if isinstance(manifest.get("params"), dict) else {}
    prompt = item.get("prompt") or manifest.get("prompt")
    still = manifest.get("still") or item.get("image") or manifest.get("image")
    still_path = None
    if isinstance(still, str) and still:
        # Relative to the manifest's folder (a batch travels with its files), else to where it was rendered.
        still_path = Path(still) if Path(still).is_absolute() else base_dir / still
        if not still_path.is_file() and Path(still).is_file():
            still_path = Path(still)
    position = next((params[k] for k in ("base_index", "base_frame", "base_position") if k in params), None)
    still_index = None
    if isinstance(position, int) and not isinstance(position, bool):
        still_index = position if position >= 0 else frames + position
    elif position in ("first", "start"):
        still_index = 0
    elif position in ("middle", "center", "centre"):
        still_index = middle_index(frames)
    elif position in ("last", "end"):
        still_index = frames - 1
    index = item.get("index")
    return {
        "prompt": prompt if isinstance(prompt, str) else None,
        "still": still_path,
        "still_index": still_index,
        "seed": manifest.get("seed"),
        "index": index if isinstance(index, int) else None,
    }


def read_clip(path: Path | str) -> video_io.Clip:
    """Read a clip for evaluation; an opaque file or a single image is a `UsageError` that says so."""
    path = Path(path)
    info = video_io.probe(path)
    if not info.has_alpha:
        raise UsageError(
            f"{str(path)!r} stores no alpha ({info.format}, {info.pix_fmt}); eval measures transparent "
            "clips. Give the RGBA output (e.g. .webm VP9 alpha, .mov ProRes 4444), not an opaque preview."
        )
    clip = video_io.read_video(path)
    if len(clip.rgba_fhwc_uint8) < 2:
        raise UsageError(
            f"{str(path)!r} is a still image (1 frame); eval measures clips of 2 or more frames. "
            "To compare a clip with its still, pass the image as still=PATH."
        )
    return clip


def evaluate_clip(
    path: Path | str,
    prompt: str | None = None,
    still: Path | str | np.ndarray | None = None,
    *,
    still_index: int | None = None,
    background_rgb_01: Sequence[float] = DEFAULT_BACKGROUND_RGB,
    clip_scorer: ClipScorer | None = None,
    flow_method: str = "auto",
    device: str = "cpu",
    use_manifest: bool = True,
) -> dict[str, Any]:
    """Every metric of a clip file (see the module docstring); the prompt and still default to its manifest.

    Arguments given here win over the manifest's. The result also holds `clip` (the path), `item` (the
    key used to pair clips in comparisons) and `seed` when the manifest has one.
    """
    path = Path(path)
    clip = read_clip(path)
    frames = len(clip.rgba_fhwc_uint8)
    fields: dict[str, Any] = {"prompt": None, "still": None, "still_index": None, "seed": None, "index": None}
    manifest = read_manifest(path) if use_manifest else None
    if manifest is not None:
        fields = manifest_fields(manifest, manifest_path(path).parent, frames)
    prompt = prompt if prompt is not None else fields["prompt"]
    if still is None and fields["still"] is not None:
        if fields["still"].is_file():
            still = fields["still"]
        else:  # a moved batch: measure the rest, say why fidelity is missing
            logger.warning(
                "%s: the manifest's still %s is missing; base-frame fidelity skipped", path, fields["still"]
            )
    still_rgba = None
    still_name = None
    if isinstance(still, np.ndarray):
        still_rgba = still
    elif still is not None:
        still_name = str(still)
        if not Path(still).is_file():
            raise UsageError(
                f"still {still_name!r} does not exist; give the RGBA image the clip was made from."
            )
        still_rgba = video_io.read_image(still)
    result = evaluate_frames(
        clip.rgba_fhwc_uint8,
        fps=clip.fps,
        prompt=prompt,
        still_rgba_hwc_uint8=still_rgba,
        still_index=still_index if still_index is not None else fields["still_index"],
        background_rgb_01=background_rgb_01,
        clip_scorer=clip_scorer,
        flow_method=flow_method,
        device=device,
    )
    item = f"index:{fields['index']}" if fields["index"] is not None else item_name(path)
    return {"clip": str(path), "item": item, "seed": fields["seed"], "still": still_name, **result}


def item_name(path: Path | str) -> str:
    """A clip's name for pairing: the file name without its extension(s) (`0003-fox.webm` → `0003-fox`)."""
    name = Path(str(path).rstrip("/" + os.sep)).name
    return re.sub(r"(\.[A-Za-z0-9]{1,5})+$", "", name) or name


def _is_frame_folder(folder: Path) -> bool:
    return any(p.suffix.lower() == ".png" for p in folder.iterdir() if p.is_file())


def collect_clips(paths: Sequence[Path | str]) -> list[Path]:
    """Expand the CLIP arguments: files stay; a folder of PNG frames is one clip; any other folder gives
    its clips (videos, animated images and PNG-frame folders, not previews, manifests or stills), sorted."""
    clips: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists() and not video_io.is_sequence_path(path):
            raise UsageError(f"{str(path)!r} does not exist; give a clip file or a folder of clips.")
        if not path.is_dir():
            clips.append(path)
            continue
        members = sorted(path.iterdir(), key=lambda p: p.name)
        videos = [p for p in members if p.is_file() and _is_clip_file(p)]
        folders = [p for p in members if p.is_dir() and not p.name.startswith(".") and _is_frame_folder(p)]
        if not videos and not folders and _is_frame_folder(path):
            clips.append(path)  # the folder itself is a PNG sequence
            continue
        found = sorted(videos + folders, key=lambda p: p.name)
        if not found:
            raise UsageError(
                f"folder {str(path)!r} holds no clips; give clip files (.webm, .mov, .apng, …) or a "
                "folder of them."
            )
        clips.extend(found)
    return clips


def _is_clip_file(path: Path) -> bool:
    name = path.name.lower()
    if name.startswith(".") or ".preview." in name or path.suffix.lower() not in CLIP_SUFFIXES:
        return False
    if path.suffix.lower() == ".png":  # an APNG is a clip; a plain PNG is a still (e.g. --save-image)
        try:
            return video_io.probe(path).frames > 1
        except LayerAnimError:
            return False
    return True


def evaluate_set(
    paths: Sequence[Path | str],
    *,
    on_clip: Callable[[Path, dict[str, Any] | None, LayerAnimError | None], None] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """`evaluate_clip` on every clip; a clip that fails gives {"clip", "item", "error"} and the rest go on.

    `on_clip(path, result, error)` is called after each clip (progress, messages).
    """
    results = []
    for path in paths:
        try:
            result: dict[str, Any] = evaluate_clip(path, **kwargs)
            error = None
        except LayerAnimError as exc:
            result, error = {"clip": str(path), "item": item_name(path), "error": str(exc)}, exc
        results.append(result)
        if on_clip is not None:
            on_clip(Path(path), None if error else result, error)
    return results


# ---------------------------------------------------------------------------------------------------
# Aggregates and comparisons.


def aggregate(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric over the clips that have it: n, mean, std (population), min, max.

    Booleans (`dynamic`, `still_identical`) average to the fraction that is true (VBench's dynamic degree
    of a set); ∞ values (an identical still's PSNR, a seam with no other motion) are counted in `n_inf`
    and left out of the statistics.
    """
    out: dict[str, dict[str, Any]] = {}
    for key in METRIC_KEYS:
        values = [r["metrics"][key] for r in results if "metrics" in r and r["metrics"].get(key) is not None]
        if not values:
            continue
        numbers = np.array([float(v) for v in values], dtype=np.float64)
        finite = numbers[np.isfinite(numbers)]
        stats: dict[str, Any] = {"n": len(values), "n_inf": int(np.count_nonzero(np.isinf(numbers)))}
        if finite.size:
            stats.update(
                mean=float(finite.mean()),
                std=float(finite.std()),
                min=float(finite.min()),
                max=float(finite.max()),
            )
        else:
            stats.update(mean=None, std=None, min=None, max=None)
        out[key] = stats
    return out


def pair_results(
    results_a: Sequence[dict[str, Any]], results_b: Sequence[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pair the clips of A and B by item (manifest index, else file name); unmatched ones: UsageError."""
    by_a = _by_item(results_a, "A")
    by_b = _by_item(results_b, "B")
    only_a = [key for key in by_a if key not in by_b]
    only_b = [key for key in by_b if key not in by_a]
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"only in A: {', '.join(_item_label(by_a[k]) for k in only_a[:5])}")
        if only_b:
            parts.append(f"only in B: {', '.join(_item_label(by_b[k]) for k in only_b[:5])}")
        raise UsageError(
            f"the two sets do not pair up by item ({'; '.join(parts)}); compare folders rendered from "
            "the same batch file (paired by manifest index) or with the same file names."
        )
    return [(by_a[key], by_b[key]) for key in by_a]


def _item_label(result: dict[str, Any]) -> str:
    return Path(result["clip"]).name


def _by_item(results: Sequence[dict[str, Any]], side: str) -> dict[str, dict[str, Any]]:
    use_index = all(str(r.get("item", "")).startswith("index:") for r in results)
    table: dict[str, dict[str, Any]] = {}
    for result in results:
        key = result["item"] if use_index else item_name(result["clip"])
        if key in table:
            raise UsageError(
                f"set {side} has two clips for item {key!r} ({_item_label(table[key])}, "
                f"{_item_label(result)}); give each item once."
            )
        table[key] = result
    return table


def compare(results_a: Sequence[dict[str, Any]], results_b: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-item and per-metric differences B − A of paired clips, with both sets' aggregates.

    `metrics[key]` holds `a` and `b` (means over the pairs where both have the metric), `diff` (b − a,
    the mean of the paired differences) and `higher_is_better`.
    """
    pairs = pair_results(results_a, results_b)
    rows = []
    for a, b in pairs:
        diffs = {}
        for key in METRIC_KEYS:
            va, vb = _number(a, key), _number(b, key)
            diffs[key] = vb - va if va is not None and vb is not None and math.isfinite(vb - va) else None
        rows.append(
            {"item": a["item"], "a": a["clip"], "b": b["clip"], "diff": diffs, "error": _pair_error(a, b)}
        )
    summary: dict[str, Any] = {}
    for key in METRIC_KEYS:
        both = [(_number(a, key), _number(b, key)) for a, b in pairs]
        both = [(va, vb) for va, vb in both if va is not None and vb is not None]
        both = [(va, vb) for va, vb in both if math.isfinite(va) and math.isfinite(vb)]
        if not both:
            continue
        mean_a = float(np.mean([va for va, _ in both]))
        mean_b = float(np.mean([vb for _, vb in both]))
        summary[key] = {
            "n": len(both),
            "a": mean_a,
            "b": mean_b,
            "diff": mean_b - mean_a,
            "higher_is_better": HIGHER_IS_BETTER.get(key),
        }
    return {"pairs": rows, "metrics": summary, "a": aggregate(results_a), "b": aggregate(results_b)}


def _number(result: dict[str, Any], key: str) -> float | None:
    value = result.get("metrics", {}).get(key)
    return None if value is None else float(value)


def _pair_error(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    errors = [f"{side}: {r['error']}" for side, r in (("A", a), ("B", b)) if "error" in r]
    return "; ".join(errors) or None


# ---------------------------------------------------------------------------------------------------
# JSON and manifests.


def json_ready(obj: Any) -> Any:
    """A copy safe for strict JSON: ∞ and NaN become None (PSNR ∞ stays readable via `still_identical`),
    numpy scalars become Python numbers and paths strings."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def manifest_eval_entry(result: dict[str, Any]) -> dict[str, Any]:
    """What `update_manifest` stores under a manifest's `eval` key: the metrics and how they were made."""
    from layeranim._version import __version__

    return json_ready(
        {
            "metrics": result["metrics"],
            "flow_method": result["flow_method"],
            "clip_model": result["clip_model"],
            "still_index": result["still_index"],
            "layeranim_version": __version__,
        }
    )


def update_manifest(clip: Path | str, result: dict[str, Any]) -> Path:
    """Add (or replace) the `eval` entry of the manifest beside `clip`, atomically; the manifest's path.

    The render key is untouched: evaluating a clip never makes a batch re-render it.
    """
    path = manifest_path(clip)
    manifest = read_manifest(clip)
    if manifest is None:
        raise UsageError(
            f"{str(clip)!r} has no manifest ({path.name}); render it with a manifest to store metrics."
        )
    manifest["eval"] = manifest_eval_entry(result)
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
