"""Batch mode of `generate --prompts FILE` and `animate --inputs FILE` on the terminal: JSON lines on
stdout, failed items and the summary table on stderr. Planning, skipping and rendering are the library's
(`layeranim.render.run_batch`), and so is splitting the batch across the processes of a launcher
(`torchrun`, `accelerate launch`, `srun`): then process 0 reports every item once, after all are done,
and the other processes print nothing."""

from __future__ import annotations

import logging
import time
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from layeranim.cli._common import console, error_line, note, print_json, progress_enabled
from layeranim.cli._errors import to_cli
from layeranim.cli._render import notifier, stage_progress


def run_cli_batch(request: Any, *, json_output: bool, quiet: bool) -> int:
    """Run a `BatchRequest`, reporting each item; returns the exit code (1 if any item failed)."""
    from layeranim.distributed import current_process
    from layeranim.render import api
    from layeranim.render.batch import BatchJob, ItemResult

    process = current_process()
    live = not process.distributed  # several processes: process 0 reports every item at the end
    if not process.is_main:
        quiet = True
        logging.getLogger("layeranim").setLevel(logging.ERROR)

    def on_start(job: BatchJob, position: int, total: int) -> None:
        if progress_enabled(quiet):  # progress, like the bars: only on a terminal
            note(f"[{position + 1}/{total}] {job.item.label}: {job.item.prompt}")

    def on_result(result: ItemResult) -> None:
        if result.error is not None:
            result.error = to_cli(result.error)
        if live:
            report(result)

    def report(result: ItemResult) -> None:
        if json_output:
            print_json(result.to_json())
        if result.status == "failed":
            error_line(f"{result.label}: {result.error}")

    start = time.perf_counter()
    with stage_progress(quiet) as progress:
        summary = api.run_batch(
            request, progress=progress, notify=notifier(quiet), on_start=on_start, on_result=on_result
        )
    if not process.is_main:
        return 0  # process 0 gives the batch's exit code
    if not live:
        for result in summary.results:
            report(result)
    if not quiet:
        if console.is_terminal:
            console.print(summary_table(summary))
        else:  # logs and pipes: one plain line per item, nothing truncated (seeds, paths, errors)
            for line in summary_lines(summary):
                typer.echo(line, err=True)
        note(f"{len(summary.results)} item(s) in {time.perf_counter() - start:.1f} s", quiet)
        if summary.eval is not None:
            note(eval_note(summary.eval), quiet)
    if json_output and summary.eval is not None:  # with --eval: a last line with the aggregates
        print_json(summary.to_json())
    return summary.exit_code


def summary_lines(summary: Any) -> list[str]:
    """The end-of-batch summary off a terminal: one untruncated line per item, then the counts."""
    lines = []
    for result in summary.results:
        detail = result.error if result.status == "failed" else str(result.output)
        lines.append(
            f"item {result.index}: {result.status}, seed {result.seed}, {result.seconds:.1f} s, "
            f"{detail}, prompt {result.prompt!r}"
        )
    counts = summary.counts
    lines.append(
        f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped "
        f"in {summary.seconds:.1f} s"
    )
    return lines


EVAL_NOTE_KEYS = ("clip_score", "dynamic_degree", "alpha_stability", "alpha_stability_motion_compensated")


def eval_note(aggregates: dict[str, Any]) -> str:
    """One line of the measured batch's means (the JSON summary and the manifests hold every metric)."""
    parts = [
        f"{key} {aggregates[key]['mean']:.4g}"
        for key in EVAL_NOTE_KEYS
        if key in aggregates and aggregates[key]["mean"] is not None
    ]
    return "eval (means): " + (", ".join(parts) if parts else "no metrics")


def summary_table(summary: Any) -> Table:
    """The end-of-batch table (for a stderr console): one row per item, counts in the caption."""
    table = Table(title="layeranim batch", show_lines=False, expand=False)
    table.add_column("#", justify="right")
    table.add_column("status")
    table.add_column("seed", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("prompt", overflow="ellipsis", max_width=40, no_wrap=True)
    table.add_column("output / error", overflow="fold")
    styles = {"ok": "green", "failed": "bold red", "skipped": "dim"}
    for result in summary.results:
        detail = result.error if result.status == "failed" else str(result.output)
        table.add_row(
            str(result.index),
            f"[{styles[result.status]}]{result.status}[/]",
            str(result.seed),
            f"{result.seconds:.1f}",
            escape(result.prompt),
            escape(detail or ""),
        )
    counts = summary.counts
    table.caption = (
        f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped "
        f"in {summary.seconds:.1f} s"
    )
    return table
