"""Batch mode of `generate --prompts FILE` and `animate --inputs FILE`: plan, shard, skip, render, report.

The pure parts (files, seeds, naming, shards, manifests, the run loop) live in `layeranim.batch`; this
module wires them to a `RenderSession` and to the terminal (JSON lines on stdout, errors and the summary
table on stderr).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from layeranim.cli._common import console, error_line, note, print_json, progress_enabled

ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="I/N",
        help="Render only shard I of N of the batch (1-based; items with index % N == I-1), for SLURM "
        "arrays and CI matrices.",
    ),
]
RenderItem = Callable[[Any, dict[str, Any]], dict[str, float]]
"""render_item(job, params) -> timings: renders one job to job.output (overwrite=job.replace)."""

ManifestOpt = Annotated[
    bool,
    typer.Option(
        "--manifest",
        help="Also write OUTPUT.json: every parameter, the seed, model sources, versions, device/dtype and "
        "timings (batch mode always writes one per output).",
    ),
]

DEFAULT_BATCH_SEED = 0  # a fixed base seed, so re-runs derive the same per-item seeds and skip finished work


def batch_extension(format: str | None) -> str:
    """The extension a batch's `{ext}` (and directory outputs) use: the format's, else webm."""
    from layeranim.video_io import get_format

    if format is None:
        return "webm"
    spec = get_format(format)
    return spec.extensions[0].lstrip(".") if spec.extensions else ""


def spec_sources(spec: Any, ifa_weights: Path | None) -> dict[str, Any]:
    """What the weights are, without loading them: the spec's references (defaults by name) + IFA hash."""
    from layeranim.batch import file_sha256
    from layeranim.weights import COMPONENTS, default_source

    sources: dict[str, Any] = {"family": spec.family, "preset": spec.preset}
    for component in COMPONENTS:
        ref = getattr(spec, component)
        if ref is None:
            default = default_source(spec.family, component)
            ref = f"{default.repo_id}@{default.revision}" + (
                f"/{default.filename}" if default.filename else ""
            )
        sources[component] = str(ref)
    if ifa_weights is not None:
        sources["ifa_weights"] = {"path": str(ifa_weights), "sha256": file_sha256(ifa_weights)}
    return sources


def run_cli_batch(
    *,
    batch_file: Path,
    kind: str,
    output: Path,
    seed: int | None,
    shard: str | None,
    format: str | None,
    params: dict[str, Any],
    session: Any,
    render_item: RenderItem,
    overwrite: bool,
    json_output: bool,
    quiet: bool,
) -> int:
    """Run a whole batch; returns the exit code (0 all ok or skipped, 1 any item failed)."""
    from layeranim import batch
    from layeranim.devices import dtype_name

    # 1. Plan everything (files, seeds, output names, collisions) before loading any model.
    items = batch.read_batch_file(batch_file, kind=kind)  # type: ignore[arg-type]
    base_seed = DEFAULT_BATCH_SEED if seed is None else seed
    jobs = batch.plan_batch(items, output, base_seed=base_seed, ext=batch_extension(format))
    if shard is not None:
        jobs = batch.select_shard(jobs, *batch.parse_shard(shard))
    sources = spec_sources(session.spec, session.ifa_weights)
    device, dtype = str(session.device), dtype_name(session.dtype)

    def item_params(job: batch.BatchJob) -> dict[str, Any]:
        out = dict(params)
        if job.item.frames is not None:
            out["frames"] = job.item.frames
        if job.item.fps is not None:
            out["fps"] = job.item.fps
        return out

    def key_for(job: batch.BatchJob) -> str:
        return batch.render_key(
            item=job.item, seed=job.seed, params=item_params(job), sources=sources, device=device, dtype=dtype
        )

    def render(job: batch.BatchJob) -> batch.RenderResult:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        p = item_params(job)
        timings = render_item(job, p)
        manifest = batch.build_manifest(
            item=job.item,
            seed=job.seed,
            params=p,
            sources=sources,
            device=device,
            dtype=dtype,
            timings={**session.load_seconds, **timings},
            output=job.output,
        )
        manifest["resolved_sources"] = session.sources
        return batch.RenderResult(job.output, manifest)

    def on_start(job: batch.BatchJob, position: int, total: int) -> None:
        if progress_enabled(quiet):  # progress, like the bars: only on a terminal
            note(f"[{position + 1}/{total}] {job.item.label}: {job.item.prompt}")

    def on_result(result: batch.ItemResult) -> None:
        if json_output:
            print_json(result.to_json())
        if result.status == "failed":
            error_line(f"{result.label}: {result.error}")

    # 2. Render, one failure never stopping the batch.
    start = time.perf_counter()
    summary = batch.run_batch(
        jobs, render, render_key_for=key_for, overwrite=overwrite, on_start=on_start, on_result=on_result
    )
    if not quiet:
        console.print(batch.summary_table(summary))
        note(f"{len(jobs)} item(s) in {time.perf_counter() - start:.1f} s", quiet)
    return summary.exit_code


def check_manifest_target(output: Path, manifest: bool, overwrite: bool) -> None:
    from layeranim.batch import manifest_path
    from layeranim.errors import OutputExistsError

    if manifest and manifest_path(output).exists() and not overwrite:
        raise OutputExistsError(
            f"manifest {str(manifest_path(output))!r} exists; pass --overwrite to replace it."
        )


def write_single_manifest(
    *,
    output: Path,
    prompt: str,
    negative_prompt: str,
    seed: int,
    image: Path | None,
    params: dict[str, Any],
    session: Any,
    timings: dict[str, float],
) -> Path:
    """The manifest of a one-off render: the same sidecar a batch writes, for an item of one."""
    from layeranim import batch
    from layeranim.devices import dtype_name

    item = batch.BatchItem(index=0, prompt=prompt, negative_prompt=negative_prompt, image=image)
    manifest = batch.build_manifest(
        item=item,
        seed=seed,
        params=params,
        sources=spec_sources(session.spec, session.ifa_weights),
        device=str(session.device),
        dtype=dtype_name(session.dtype),
        timings={**session.load_seconds, **timings},
        output=output,
    )
    manifest["resolved_sources"] = session.sources
    path = batch.manifest_path(output)
    batch.write_manifest(path, manifest)
    return path


def report_single(
    result: dict[str, Any],
    *,
    manifest: bool,
    output: Path,
    prompt: str,
    negative_prompt: str,
    seed: int,
    image: Path | None,
    params: dict[str, Any],
    session: Any,
    timings: dict[str, float],
    json_output: bool,
    extra: dict[str, Any] | None = None,
) -> None:
    """End of a one-off render: the manifest if asked for, then the result on stdout (paths or JSON)."""
    if manifest:
        result["manifest"] = str(
            write_single_manifest(
                output=output,
                prompt=prompt,
                negative_prompt=negative_prompt,
                seed=seed,
                image=image,
                params=params,
                session=session,
                timings=timings,
            )
        )
    if json_output:
        print_json({**result, "seed": seed, **(extra or {}), "seconds": timings})
        return
    typer.echo(result["output"])
    for key in ("preview", "image", "manifest"):
        if key in result:
            typer.echo(result[key])
