"""What the rendering commands (`image`, `animate`, `generate`, `layers`) share on the terminal: the
thread policy and speed preset at the start, progress bars, notes, and quieting third-party loggers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from layeranim.cli._common import console, debug_enabled, global_threads, note, progress_enabled


@contextmanager
def stage_progress(quiet: bool) -> Iterator[Callable[[str, str, int, int], None]]:
    """One bar per stage and phase on stderr: `progress(stage, phase, done, total)`."""
    if not progress_enabled(quiet):
        yield lambda stage, phase, done, total: None
        return
    with Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: dict[tuple[str, str], TaskID] = {}

        def update(stage: str, phase: str, done: int, total: int) -> None:
            key = (stage, phase)
            if key not in tasks:
                tasks[key] = progress.add_task(f"{stage}: {phase}", total=total)
            progress.update(tasks[key], completed=done, total=total)

        yield update


def notifier(quiet: bool) -> Callable[[str], None]:
    """The library's `notify(message)` callback: a note on stderr, silent with --quiet."""
    return lambda message: note(message, quiet)


def quiet_third_party_logs() -> None:
    """diffusers/transformers print notices through their own handlers; keep them off our users' stderr."""
    if debug_enabled():
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def report_seed(requested: int | None, used: int, quiet: bool) -> None:
    """A random seed is shown on stderr (`seed: N`), so the render can be made again with --seed N."""
    if requested is None:
        note(f"seed: {used} (pass --seed {used} to render this again)", quiet)


def start_render(models: object, quiet: bool) -> None:
    """Before a render: the CPU thread policy (with the global `--threads`), and the speed preset's
    choices on stderr (not with --quiet)."""
    from layeranim.distributed import current_process
    from layeranim.threads import apply_thread_policy

    apply_thread_policy(global_threads())
    speed = getattr(models, "speed", None)
    if speed is not None and current_process().is_main:  # under a launcher: said once
        from layeranim.speed import get_speed_preset

        note(get_speed_preset(speed).describe(), quiet)
