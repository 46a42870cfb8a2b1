"""Measuring what layeranim makes: the paper's metrics (CLIP score, dynamic degree) and transparency metrics.

`evaluate_clip(path)` gives every metric of one clip file; `evaluate_set`, `aggregate` and `compare` work on
sets (compare pairs A and B by item: "IFA vs the motion-module baseline"); `update_manifest` stores the
metrics in a render's manifest; `layeranim.evaluation.report` writes the HTML report. The metric functions
themselves live in `metrics` (alpha), `flow` (motion) and `clip_score` (text faithfulness).
"""

from __future__ import annotations

from layeranim.evaluation.clip_score import ClipScorer, load_clip_scorer, load_tiny_clip
from layeranim.evaluation.evaluate import (
    METRIC_KEYS,
    aggregate,
    collect_clips,
    compare,
    evaluate_clip,
    evaluate_frames,
    evaluate_set,
    json_ready,
    manifest_eval_entry,
    update_manifest,
)
from layeranim.evaluation.metrics import (
    alpha_change,
    alpha_coverage,
    alpha_coverage_drift,
    base_frame_fidelity,
    colour_leak,
    loop_seam_score,
    motion_compensated_alpha_change,
    soft_edge_fraction,
)

__all__ = [
    "METRIC_KEYS",
    "ClipScorer",
    "aggregate",
    "alpha_change",
    "alpha_coverage",
    "alpha_coverage_drift",
    "base_frame_fidelity",
    "collect_clips",
    "colour_leak",
    "compare",
    "evaluate_clip",
    "evaluate_frames",
    "evaluate_set",
    "json_ready",
    "load_clip_scorer",
    "load_tiny_clip",
    "loop_seam_score",
    "manifest_eval_entry",
    "motion_compensated_alpha_change",
    "soft_edge_fraction",
    "update_manifest",
]
