"""Measuring what layeranim makes: the paper's metrics (CLIP score, dynamic degree) and transparency metrics.

`evaluate_clip(path)` gives every metric of one clip file; `evaluate_set`, `aggregate` and `compare` work on
sets (compare pairs A and B by item: "IFA vs the motion-module baseline"); `update_manifest` stores the
metrics in a render's manifest; `layeranim.evaluation.report` writes the HTML report. The metric functions
themselves live in `metrics` (alpha), `flow` (motion) and `clip_score` (text faithfulness).

Names are imported lazily, so the report's page pieces can be used without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ClipScorer": "layeranim.evaluation.clip_score",
    "load_clip_scorer": "layeranim.evaluation.clip_score",
    "load_tiny_clip": "layeranim.evaluation.clip_score",
    "METRIC_KEYS": "layeranim.evaluation.evaluate",
    "aggregate": "layeranim.evaluation.evaluate",
    "collect_clips": "layeranim.evaluation.evaluate",
    "compare": "layeranim.evaluation.evaluate",
    "evaluate_clip": "layeranim.evaluation.evaluate",
    "evaluate_frames": "layeranim.evaluation.evaluate",
    "evaluate_set": "layeranim.evaluation.evaluate",
    "json_ready": "layeranim.evaluation.evaluate",
    "manifest_eval_entry": "layeranim.evaluation.evaluate",
    "update_manifest": "layeranim.evaluation.evaluate",
    "alpha_change": "layeranim.evaluation.metrics",
    "alpha_coverage": "layeranim.evaluation.metrics",
    "alpha_coverage_drift": "layeranim.evaluation.metrics",
    "base_frame_fidelity": "layeranim.evaluation.metrics",
    "colour_leak": "layeranim.evaluation.metrics",
    "loop_seam_score": "layeranim.evaluation.metrics",
    "motion_compensated_alpha_change": "layeranim.evaluation.metrics",
    "soft_edge_fraction": "layeranim.evaluation.metrics",
    "dynamic_degree": "layeranim.evaluation.flow",
    "write_report": "layeranim.evaluation.report",
}

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
    "dynamic_degree",
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
    "write_report",
]

if TYPE_CHECKING:
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
    from layeranim.evaluation.flow import dynamic_degree
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
    from layeranim.evaluation.report import write_report


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'layeranim.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
