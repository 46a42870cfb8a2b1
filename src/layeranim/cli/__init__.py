"""The `layeranim` command line: a Typer app whose commands validate, call the library, and print."""

from __future__ import annotations

from layeranim.cli import animate as _animate  # noqa: F401  (registers `animate`)
from layeranim.cli import compose as _compose  # noqa: F401  (registers `compose`)
from layeranim.cli import convert as _convert  # noqa: F401  (registers `convert`)
from layeranim.cli import dataset as _dataset  # noqa: F401  (registers `dataset synth`)
from layeranim.cli import doctor as _doctor  # noqa: F401  (registers `doctor`)
from layeranim.cli import eval as _eval  # noqa: F401  (registers `eval`)
from layeranim.cli import generate as _generate  # noqa: F401  (registers `generate`)
from layeranim.cli import image as _image  # noqa: F401  (registers `image`)
from layeranim.cli import info as _info  # noqa: F401  (registers `info`)
from layeranim.cli import layers as _layers  # noqa: F401  (registers `layers [render|init]`)
from layeranim.cli import models as _models  # noqa: F401  (registers `models list|download|path`)
from layeranim.cli import preview as _preview  # noqa: F401  (registers `preview`)
from layeranim.cli import train as _train  # noqa: F401  (registers `train`)
from layeranim.cli._common import app, main

__all__ = ["app", "main"]
