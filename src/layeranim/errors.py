"""The few errors layeranim raises on purpose. Each message says what went wrong and what to do.

`UsageError` is the user's input (exit 2); every other `LayerAnimError` is a failed operation (exit 1).
"""

from __future__ import annotations


class LayerAnimError(Exception):
    """An operation failed for a reason the user can act on (CLI exit code 1)."""

    exit_code = 1


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
