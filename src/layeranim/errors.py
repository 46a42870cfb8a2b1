"""The few errors layeranim raises on purpose. Each message says what went wrong and what to do.

`UsageError` is the user's input (exit 2); every other `LayerAnimError` is a failed operation (exit 1).

Messages name the *Python* argument and its value, written `name=value` (`num_frames=40`,
`offload='model'`, `overwrite=True`), so a Python caller reads them as written; the command line's one
translator (`layeranim.cli._errors`) rewrites those spellings into its flags (`--frames 40`).
"""

from __future__ import annotations


class LayerAnimError(Exception):
    """An operation failed for a reason the user can act on (CLI exit code 1)."""

    exit_code = 1

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument  # the Python argument at fault, when there is one


class UsageError(LayerAnimError, ValueError):
    """An argument has a bad value (CLI exit code 2). Say the argument, the value and the fix."""

    exit_code = 2


class OutputExistsError(UsageError):
    """The output exists and `overwrite` was not asked for."""


class UnsupportedFormatError(UsageError):
    """A file extension or format that layeranim cannot read or write (or would lose alpha)."""


class VideoReadError(LayerAnimError):
    """A file could not be read as an image or video."""


class WeightsError(LayerAnimError):
    """Model weights are missing, unreachable, or do not match the expected layout."""


class StateDictMismatchError(WeightsError):
    """A checkpoint's keys or shapes do not match the model it is loaded into."""


class OutOfMemoryError(LayerAnimError, MemoryError):
    """The device (or the host) ran out of memory; the message says what lowers it."""


OOM_HINT = (
    "lower it with offload='model' (or 'sequential'), fewer frames, fast_decode=True, or dtype='fp16' "
    "on a GPU."
)


def as_out_of_memory(exc: BaseException) -> OutOfMemoryError | None:
    """`exc` as one `OutOfMemoryError` with the memory hint, when it is CUDA/MPS/host out-of-memory.

    Recognises `torch.OutOfMemoryError` (torch.cuda.OutOfMemoryError), a `RuntimeError` whose text says
    "out of memory" (MPS: "MPS backend out of memory"), and `MemoryError`; anything else gives None.
    """
    if isinstance(exc, OutOfMemoryError):
        return exc
    name = type(exc).__name__
    text = str(exc).strip()
    first = text.splitlines()[0] if text else name
    if name == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and "out of memory" in text.lower()):
        where = "MPS" if "MPS" in text else "the GPU"
        return OutOfMemoryError(f"out of memory on {where} ({_short(first)}); {OOM_HINT}")
    if isinstance(exc, MemoryError):
        return OutOfMemoryError(f"out of host memory ({_short(first)}); {OOM_HINT}")
    return None


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
