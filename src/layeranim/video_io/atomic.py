"""Atomic outputs: write to a hidden temporary beside the target, rename into place when complete.

This is layeranim's one atomic-write helper; everything that writes a user-visible file or folder goes
through `atomic_output` (clips, sequences, previews, images, the latent sidecar, synthetic datasets).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from layeranim import safety
from layeranim.errors import LayerAnimError, OutputExistsError, UsageError


def check_directory_writable(directory: Path) -> None:
    """Fail with a message naming `directory` if it is missing, not a folder, or not writable."""
    if not directory.exists():
        raise UsageError(f"output directory {str(directory)!r} does not exist; create it first.")
    if not directory.is_dir():
        raise UsageError(f"output directory {str(directory)!r} is not a directory; choose another path.")
    # A probe file, not os.access: it tells a read-only mount, permissions, quota and a full disk apart.
    safety.check_writable_dir(directory, argument="output")


def check_output_target(target: Path, overwrite: bool, directory: bool = False) -> None:
    """Fail before any work if the target cannot (or must not) be written."""
    check_directory_writable(target.parent)
    if target.exists() or target.is_symlink():
        if not overwrite:
            raise OutputExistsError(
                f"output {str(target)!r} already exists; pass overwrite=True to replace "
                "it, or choose another name."
            )
        if directory != target.is_dir():
            kind = "a directory" if target.is_dir() else "a file"
            raise UsageError(
                f"output {str(target)!r} exists and is {kind}; remove it or choose another name."
            )


def _temp_name(target: Path, directory: bool = False) -> Path:
    """A hidden name beside the target carrying this process's PID (so a later run can tell it is stale),
    with the target's extension so muxers pick the same format."""
    return safety.partial_name(target, "" if directory else None)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(FileNotFoundError):
            path.unlink()


@contextmanager
def atomic_output(path: str | Path, overwrite: bool = False, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place when the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary file or directory is removed and
    nothing at `path` changes. An existing `path` is replaced only with `overwrite=True`. With
    `directory=True` a temporary directory is yielded and renamed to `path` at the end.
    """
    target = Path(path)
    check_output_target(target, overwrite, directory)
    safety.clean_stale_partials(target)  # what a killed run (kill -9) left beside this same target
    temp = _temp_name(target, directory)
    try:
        if directory:
            temp.mkdir()
        else:
            open(temp, "xb").close()  # fail here, with a clear message, if the directory refuses files
    except OSError as exc:
        raise safety.translate_os_error(exc, target.parent) from exc
    try:
        yield temp
        if not (temp.exists() or temp.is_symlink()):
            raise LayerAnimError(f"nothing was written for {str(target)!r}.")
        if (target.exists() or target.is_symlink()) and not overwrite:
            raise OutputExistsError(
                f"output {str(target)!r} appeared while writing; pass overwrite=True to replace it."
            )
        if directory and target.is_dir():
            old = target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.old"
            os.replace(target, old)
            os.replace(temp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, target)
    except BaseException as exc:
        _remove(temp)
        if isinstance(exc, OSError):  # a full disk, a read-only mount …: one line naming the target
            raise safety.translate_os_error(exc, target) from exc
        raise
