"""What every command shares: the Typer app, option definitions, the error translator, output helpers.

Results go to stdout (a path, or one JSON object with `--json`); messages, warnings and progress go to
stderr through one rich console. Known errors become one `Error: …` line with exit code 2 (usage) or
1 (failure); a traceback is shown only with `LAYERANIM_DEBUG=1`.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer import _click as click  # Typer vendors click
from typer._click import exceptions as click_exc  # Typer vendors click; its errors live here

from layeranim._version import __version__
from layeranim.cli._errors import to_cli, translate

console = Console(stderr=True, highlight=False)

DEBUG_ENV = "LAYERANIM_DEBUG"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0", "false", "no")


def error_line(message: str) -> None:
    """Print one `Error: …` line on stderr (no rich markup, so paths with brackets survive)."""
    text = " ".join(str(message).split())
    typer.echo(f"Error: {text}", err=True)


# Sub-commands by name → the module that registers them (imported only when that command runs, or for
# `--help`), so `layeranim --version` and `layeranim info` do not pay for torch, diffusers or the hub.
COMMANDS: dict[str, str] = {
    "animate": "layeranim.cli.animate",
    "compose": "layeranim.cli.compose",
    "convert": "layeranim.cli.convert",
    "dataset": "layeranim.cli.dataset",
    "doctor": "layeranim.cli.doctor",
    "eval": "layeranim.cli.eval",
    "generate": "layeranim.cli.generate",
    "image": "layeranim.cli.image",
    "info": "layeranim.cli.info",
    "layers": "layeranim.cli.layers",
    "models": "layeranim.cli.models",
    "preview": "layeranim.cli.preview",
    "train": "layeranim.cli.train",
}


class LayerAnimGroup(typer.core.TyperGroup):
    """The root group: sub-commands registered lazily from `COMMANDS`, and `main` as the one error
    translator for every command."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(COMMANDS[cmd_name])
            command = _click_command(cmd_name)
            if command is not None:
                self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        quiet_third_party_defaults()
        try:
            rv = super().main(
                args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra
            )
        except click_exc.NoArgsIsHelpError as exc:
            # A group without its sub-command is a usage error (exit 2): show what it offers, then say so.
            typer.echo(exc.format_message(), err=True)
            command = exc.ctx.command_path if exc.ctx is not None else "layeranim"
            error_line(f"Missing command; choose one of the commands above (see '{command} --help').")
            sys.exit(2)
        except click_exc.UsageError as exc:
            if debug_enabled():
                raise
            hint = ""
            if exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            error_line(f"{exc.format_message()}{hint}")
            sys.exit(2)
        except (typer.Abort, KeyboardInterrupt):
            error_line("interrupted; no partial output was kept.")
            sys.exit(130)
        except click_exc.ClickException as exc:
            if debug_enabled():
                raise
            error_line(exc.format_message())
            sys.exit(exc.exit_code)
        except (SystemExit, typer.Exit):
            raise
        except Exception as exc:
            if debug_enabled():
                raise
            known = translate(exc)
            if known is not None:
                error_line(known[0])
                sys.exit(known[1])
            # Ordinary conditions (a full disk, a read-only folder, out of memory, a refused pickle) are
            # not bugs: one line naming the path or the limit, exit 1.
            from layeranim import safety

            failure = safety.known_failure(exc)
            if failure is not None:
                error_line(to_cli(str(failure)))
                sys.exit(failure.exit_code)
            error_line(
                f"unexpected {type(exc).__name__}: {exc}. Re-run with {DEBUG_ENV}=1 for the traceback "
                "and report it."
            )
            sys.exit(1)
        code = rv if isinstance(rv, int) else 0
        if code == 130:  # Typer turns Ctrl-C into Exit(130) before we see it
            error_line("interrupted; no partial output was kept.")
        sys.exit(code)


def _click_command(name: str) -> click.Command | None:
    """The click command for `name` from what its module registered on `app` (a command or a group)."""
    from typer.main import get_command_from_info, get_command_name, get_group_from_info

    for info in app.registered_commands:
        callback_name = get_command_name(info.callback.__name__) if info.callback else None
        if (info.name or callback_name) == name:
            return get_command_from_info(
                info,
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
            )
    for group in app.registered_groups:
        if group.name == name or (group.typer_instance and group.typer_instance.info.name == name):
            return get_group_from_info(
                group,
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode,
                suggest_commands=app.suggest_commands,
            )
    return None


app = typer.Typer(
    name="layeranim",
    cls=LayerAnimGroup,
    help="Generate and convert transparent (RGBA) videos.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"layeranim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for torch's math (default: the CPUs this process may use, from its affinity "
            "mask and cgroup quota, less those other processes keep busy). Fewer leaves cores to other jobs.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Generate and convert transparent (RGBA) videos: WebM VP9 alpha, ProRes 4444, APNG, PNG sequences."""
    configure_logging()
    if threads is not None:
        set_threads(threads)


def set_threads(threads: int) -> None:
    """Intra-op threads: through the environment before torch loads (OpenMP reads it once), else directly.

    The rendering commands apply the whole policy (`layeranim.threads.apply_thread_policy`) when they start.
    """
    from layeranim.threads import configure_env_before_torch

    if not configure_env_before_torch(threads):
        sys.modules["torch"].set_num_threads(threads)


def threads_from_argv(argv: Sequence[str]) -> int | None:
    """The global `--threads N` (or `--threads=N`) before the sub-command, if given and a number."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return None  # the sub-command: its own options follow
        value = arg.partition("=")[2] if arg.startswith("--threads=") else None
        if arg == "--threads" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None:
            return int(value) if value.isdigit() and int(value) >= 1 else None
    return None


def global_threads() -> int | None:
    """The `--threads` value the running command was called with (None: the policy's own choice)."""
    from typer._click.globals import get_current_context  # Typer vendors click

    ctx = get_current_context(silent=True)
    return ctx.find_root().params.get("threads") if ctx is not None else None


class _StderrHandler(logging.Handler):
    """Library warnings as plain lines on the *current* stderr (so CliRunner and redirections see them)."""

    def emit(self, record: logging.LogRecord) -> None:
        from layeranim.cli._errors import to_cli  # library messages name Python arguments; show flags

        prefix = "Warning: " if record.levelno >= logging.WARNING else ""
        typer.echo(f"{prefix}{to_cli(record.getMessage())}", err=True)


def configure_logging() -> None:
    """layeranim's own log records go to stderr (warnings, or everything with LAYERANIM_DEBUG=1)."""
    logger = logging.getLogger("layeranim")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.DEBUG if debug_enabled() else logging.WARNING)
    logger.propagate = False
    # Third-party chatter (diffusers/transformers notices) is not for our users' terminals.
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug_enabled() else logging.ERROR)


def quiet_third_party_defaults() -> None:
    """diffusers and transformers set their loggers' level from these variables when first imported (a
    later setLevel is undone by that); default them to errors only, unless the user chose or debugs."""
    if debug_enabled():
        return
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for name in ("diffusers", "transformers"):  # already imported in this process: set them now
        if os.environ[f"{name.upper()}_VERBOSITY"] == "error":
            logging.getLogger(name).setLevel(logging.ERROR)


def silence_warnings() -> None:
    """`--quiet`: warnings that are not errors stay off stderr (layeranim's, Python's, diffusers' and
    transformers' notices such as the float32 one); errors still show. Undone with LAYERANIM_DEBUG=1."""
    if debug_enabled():
        return
    logging.getLogger("layeranim").setLevel(logging.ERROR)
    for name in ("diffusers", "transformers", "huggingface_hub", "accelerate", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in ("diffusers.utils.logging", "transformers.utils.logging"):
        library = sys.modules.get(module)  # already imported (and configured): set its level directly
        if library is not None:
            library.set_verbosity_error()
    warnings.simplefilter("ignore")


def main() -> None:
    """Console-script entry point."""
    from layeranim.threads import configure_env_before_torch

    # OpenMP's spinning barriers burn the other cores while torch waits (measured: many times slower on
    # shared machines), and OpenMP reads its environment once, when torch loads: set the policy's
    # environment (and `--threads`) before anything imports torch.
    try:
        configure_env_before_torch(threads_from_argv(sys.argv[1:]))
        app()
    except KeyboardInterrupt:  # before the group's own handler runs (while modules import)
        error_line("interrupted; no partial output was kept.")
        _exit_now(130)
    except SystemExit as exc:
        if exc.code == 130:  # interrupted: outputs were already cleaned up while the stack unwound
            _exit_now(130)
        raise


def _exit_now(code: int) -> None:
    """Leave at once after Ctrl-C: no interpreter finalisation (library atexit hooks, worker threads),
    where a second interrupt could turn exit 130 into a death by SIGINT or a hang."""
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


# ---------------------------------------------------------------------------------------------------
# Shared options. Define once, reuse everywhere (Typer docs' pattern).

OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace the output if it exists (never done otherwise).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object with the result on stdout.")]


def _quiet_callback(value: bool) -> bool:
    if value:
        silence_warnings()
    return value


QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        "--no-progress",
        help="No progress bars, notes or warnings on stderr (errors still show).",
        callback=_quiet_callback,
    ),
]
PreviewOpt = Annotated[
    bool,
    typer.Option(
        "--preview",
        help="Also write a checkerboard-composited opaque preview (.preview.mp4, or .preview.gif) beside "
        "the output.",
    ),
]
FpsOpt = Annotated[float | None, typer.Option("--fps", help="Frames per second of the output.", min=0.001)]


class AlphaModeChoice(str, Enum):
    """How colour is stored next to alpha in a written file."""

    straight = "straight"
    premultiplied = "premultiplied"


FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        help="Output format (default: from the extension): webm (VP9 alpha), webm-vp8, mov (ProRes 4444), "
        "mov-xq, mov-png, mkv (FFV1), apng, webp, gif, png-seq.",
        show_default=False,
    ),
]
QualityOpt = Annotated[
    int | None,
    typer.Option(
        "--quality",
        "--crf",
        help="CRF for webm / webm-vp8 (0-63, lower is better; default 30 / 10), or quality for lossy webp "
        "(0-100, higher is better; default 90).",
        show_default=False,
    ),
]
LosslessOpt = Annotated[
    bool | None,
    typer.Option(
        "--lossless/--lossy",
        help="Lossless VP9 (exact RGB and alpha, VP9 profile 1: FFmpeg and editors read it, not every "
        "browser) or lossy WebP; default: the format's own mode.",
        show_default=False,
    ),
]
AlphaModeOpt = Annotated[
    AlphaModeChoice,
    typer.Option(
        "--alpha-mode",
        help="Store straight colour (what browsers and editors expect) or premultiplied colour "
        "(only for consumers that ask for it).",
        case_sensitive=False,
    ),
]
LoopOpt = Annotated[
    int,
    typer.Option("--loop", min=0, help="Plays of an animated image (apng, webp, gif); 0 loops forever."),
]
TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        metavar="NAME",
        help="Deliver to a tool: one name chooses the formats, settings and side files (table below). "
        "OUTPUT is then a base name without extension (out/clip → out/clip.webm, out/clip.html …); "
        "--format picks the target's alternative video (unity: mov; editors: mov-xq).",
        show_default=False,
    ),
]
HtmlOpt = Annotated[
    bool,
    typer.Option(
        "--html",
        help="With an mp4-stacked output: also write a page beside it (clip.mp4 → clip.html) that plays "
        "it over the page's background with layeranim's own WebGL player.",
    ),
]


def targets_epilog() -> str:
    """The delivery targets table for a command's epilog (one paragraph per target)."""
    from layeranim.delivery.targets import targets_table

    lines = targets_table().splitlines()
    return "[bold]Delivery targets[/bold] (--target NAME)\n\n" + "\n\n".join(
        f"  {escape(line)}" for line in lines
    )


BackgroundOpt = Annotated[
    str | None,
    typer.Option(
        "--background",
        metavar="COLOR",
        help="Flatten onto this colour (#rrggbb, r,g,b or a name like white); the output is opaque.",
        show_default=False,
    ),
]


# ---------------------------------------------------------------------------------------------------
# Output helpers.


def print_json(obj: dict[str, Any]) -> None:
    """One JSON object on one stdout line."""
    typer.echo(json.dumps(obj, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def note(message: str, quiet: bool = False) -> None:
    """A human note on stderr (silent with --quiet)."""
    if not quiet:
        console.print(message, markup=False)


def progress_enabled(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: int | None, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields `callback(done, total)`. Invisible when not a terminal."""
    if not progress_enabled(quiet):
        yield lambda done, total: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)

        def update(done: int, total_: int) -> None:
            progress.update(task, completed=done, total=total_)

        yield update
