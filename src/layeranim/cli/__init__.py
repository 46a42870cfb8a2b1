"""The `layeranim` command line: a Typer app whose commands parse, build a request, call the library, print.

Sub-commands are registered lazily from `layeranim.cli._common.COMMANDS` (name → module), so
`layeranim --version` and `layeranim info` import neither torch nor diffusers nor the hub.
"""

from __future__ import annotations

from layeranim.cli._common import COMMANDS, app, main

__all__ = ["COMMANDS", "app", "main"]
