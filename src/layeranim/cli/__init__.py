"""The `layeranim` command line: a Typer app whose commands validate, call the library, and print."""

from __future__ import annotations

from layeranim.cli._common import app, main

__all__ = ["app", "main"]
