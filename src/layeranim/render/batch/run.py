"""Running a planned batch: skip finished items, render the rest, one failure never stopping the batch."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from layeranim import safety
from layeranim.errors import LayerAnimError
from layeranim.render.batch.manifest import manifest_path, read_manifest, write_manifest
from layeranim.render.batch.plan import BatchJob

logger = logging.getLogger(__name__)

Status = Literal["ok", "failed", "skipped"]

# ---------------------------------------------------------------------------------------------------
# Running a batch.


@dataclass
class RenderResult:
    """What a `render` callable returns: where the output went and its manifest (from `build_manifest`)."""

    output: Path
    manifest: dict[str, Any]


@dataclass
class ItemResult:
    """How one item of a batch ended."""

    index: int
    prompt: str
    status: Status
    output: Path | None
    manifest: Path | None
    seed: int
    error: str | None = None
    seconds: float = 0.0
    source: str = ""
    eval: dict[str, Any] | None = None  # the manifest's `eval` entry (metrics), when the batch measured it

    @property
    def label(self) -> str:
        return f"item {self.index} ({self.source})" if self.source else f"item {self.index}"

    def to_json(self) -> dict[str, Any]:
        """The item's JSON line: plain types only."""
        return {
            "index": self.index,
            "prompt": self.prompt,
            "status": self.status,
            "output": str(self.output) if self.output is not None else None,
            "manifest": str(self.manifest) if self.manifest is not None else None,
            "seed": self.seed,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "source": self.source,
            **({"eval": self.eval} if self.eval is not None else {}),
        }


@dataclass
class BatchSummary:
    """Every item's result, in batch order."""

    results: list[ItemResult] = field(default_factory=list)
    eval: dict[str, Any] | None = None  # per-metric aggregates over the items, when the batch measured them

    @property
    def counts(self) -> dict[str, int]:
        counts = {"ok": 0, "failed": 0, "skipped": 0}
        for result in self.results:
            counts[result.status] += 1
        return counts

    @property
    def failed(self) -> list[ItemResult]:
        return [result for result in self.results if result.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 if no item failed, else 1 (the other items still ran)."""
        return 1 if self.failed else 0

    @property
    def seconds(self) -> float:
        return sum(result.seconds for result in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": True,
            **self.counts,
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
            **({"eval": self.eval} if self.eval is not None else {}),
        }


def run_batch(
    jobs: Sequence[BatchJob],
    render: Callable[[BatchJob], RenderResult],
    *,
    render_key_for: Callable[[BatchJob], str],
    skip_finished: bool = True,
    overwrite: bool = False,
    on_start: Callable[[BatchJob, int, int], None] | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
) -> BatchSummary:
    """Render `jobs` in order, one failure never stopping the batch; write each output's manifest after it.

    An existing output is skipped when its manifest's render_key matches (`skip_finished`); it is rendered
    again and replaced (`job.replace=True`) when its manifest shows other parameters, or with `overwrite`.
    An existing output without a layeranim manifest is never replaced without `overwrite`: that item fails.
    `render_key_for` is only called for items whose output exists. `on_start(job, position, total)` runs
    before each item, `on_result(result)` after each (skipped and failed too). KeyboardInterrupt propagates.
    """
    summary = BatchSummary()
    total = len(jobs)
    for position, job in enumerate(jobs):
        if on_start is not None:
            on_start(job, position, total)
        result = _run_one(job, render, render_key_for, skip_finished=skip_finished, overwrite=overwrite)
        summary.results.append(result)
        if on_result is not None:
            on_result(result)
    return summary


def _run_one(
    job: BatchJob,
    render: Callable[[BatchJob], RenderResult],
    render_key_for: Callable[[BatchJob], str],
    *,
    skip_finished: bool,
    overwrite: bool,
) -> ItemResult:
    item = job.item
    started = time.perf_counter()

    def ended(status: Status, output: Path | None, manifest: Path | None, error: str | None) -> ItemResult:
        return ItemResult(
            index=item.index,
            prompt=item.prompt,
            status=status,
            output=output,
            manifest=manifest,
            seed=job.seed,
            error=error,
            seconds=time.perf_counter() - started,
            source=item.source,
        )

    try:
        if job.output.exists():
            key = render_key_for(job)
            existing = read_manifest(manifest_path(job.output))
            recorded = existing.get("render_key") if existing is not None else None
            if skip_finished and recorded == key:
                logger.debug("%s: %s is finished (render_key matches); skipping", item.label, job.output)
                skipped = ended("skipped", job.output, manifest_path(job.output), None)
                skipped.eval = _eval_entry(existing)
                return skipped
            stale = skip_finished and recorded is not None
            ours = existing is not None or job.output.name in safety.owned_entries(job.output.parent)
            if not ours:  # never replace what layeranim did not write, overwrite or not
                raise LayerAnimError(
                    f"{job.output} exists and layeranim did not write it (no layeranim manifest beside it); "
                    "it is left alone: move it away, or give the item another output name."
                )
            if not (overwrite or stale):
                raise LayerAnimError(
                    f"{job.output} exists and is already rendered; pass overwrite=True to replace it, or "
                    "remove it."
                )
            logger.debug("%s: replacing %s (%s)", item.label, job.output, "stale" if stale else "overwrite")
            job = dataclasses.replace(job, replace=True)
        rendered = render(job)
        manifest_file = manifest_path(rendered.output)
        write_manifest(manifest_file, rendered.manifest)
        with safety.os_errors(rendered.output.parent):
            safety.mark_owned(rendered.output.parent, [rendered.output, manifest_file])
    except LayerAnimError as exc:
        logger.debug("%s failed", item.label, exc_info=True)
        return ended("failed", None, None, str(exc))
    except Exception as exc:
        logger.debug("%s failed", item.label, exc_info=True)
        return ended("failed", None, None, f"unexpected {type(exc).__name__}: {exc}")
    _check_key(job, rendered, render_key_for)
    done = ended("ok", rendered.output, manifest_file, None)
    done.eval = _eval_entry(rendered.manifest)
    return done


def _eval_entry(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    entry = manifest.get("eval") if manifest is not None else None
    return entry if isinstance(entry, dict) else None


def _check_key(job: BatchJob, rendered: RenderResult, render_key_for: Callable[[BatchJob], str]) -> None:
    """Warn when the manifest's key disagrees with `render_key_for`: the item would re-render on every run."""
    try:
        expected = render_key_for(job)
    except Exception:
        logger.debug("render_key_for failed after rendering %s", job.item.label, exc_info=True)
        return
    if rendered.manifest.get("render_key") != expected:
        logger.warning(
            "%s: the manifest's render_key differs from render_key_for(); a re-run will render it again",
            job.item.label,
        )
