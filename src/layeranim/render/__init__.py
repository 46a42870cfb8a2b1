"""The typed render API that the CLI and Python users share.

    from layeranim import render

    models = render.ModelSettings(preset="tiny", device="cpu")
    outcome = render.generate(render.GenerateRequest("a paper lantern", "lantern.webm", models=models))

Requests (`ImageRequest`, `AnimateRequest`, `GenerateRequest`, `BatchRequest`) are dataclasses built from
the settings groups `ModelSettings`, `SamplingSettings` and `OutputSettings`, validated once when built.
`image`, `animate`, `generate` and `run_batch` write the outputs atomically, with previews, latent
sidecars and manifests exactly as the `layeranim` command does, and return what they wrote; `convert`
(a `ConvertRequest`) rewrites a clip in another format, keeping its alpha.

Modules: `settings` (requests), `api` (the calls), `session` (models loaded once), `components` (which
weights, and loading them), `presets` (the tiny preset), `devices` (device, dtype, generator), `inputs`
(RGBA stills and latent sidecars), `outputs` (clips, sidecars, manifests), `convert` (between formats),
`batch` (batch files, plans, manifests, the run loop). Names are imported lazily, so
`import layeranim.render` is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "ModelSettings": "layeranim.render.settings",
    "SamplingSettings": "layeranim.render.settings",
    "OutputSettings": "layeranim.render.settings",
    "ImageRequest": "layeranim.render.settings",
    "AnimateRequest": "layeranim.render.settings",
    "GenerateRequest": "layeranim.render.settings",
    "BatchRequest": "layeranim.render.settings",
    "image": "layeranim.render.api",
    "animate": "layeranim.render.api",
    "generate": "layeranim.render.api",
    "run_batch": "layeranim.render.api",
    "open_session": "layeranim.render.api",
    "ImageOutcome": "layeranim.render.api",
    "ClipOutcome": "layeranim.render.api",
    "ConvertRequest": "layeranim.render.convert",
    "ConvertOutcome": "layeranim.render.convert",
    "convert": "layeranim.render.convert",
    "AnimationInput": "layeranim.render.inputs",
    "load_animation_input": "layeranim.render.inputs",
    "load_latent": "layeranim.render.inputs",
    "save_latent": "layeranim.render.outputs",
    "latent_sidecar_path": "layeranim.render.outputs",
    "rgba_digest": "layeranim.render.outputs",
    "RenderSession": "layeranim.render.session",
    "ModelSpec": "layeranim.render.components",
    "load_components": "layeranim.render.components",
}

__all__ = [
    "AnimateRequest",
    "AnimationInput",
    "BatchRequest",
    "ClipOutcome",
    "ConvertOutcome",
    "ConvertRequest",
    "GenerateRequest",
    "ImageOutcome",
    "ImageRequest",
    "ModelSettings",
    "ModelSpec",
    "OutputSettings",
    "RenderSession",
    "SamplingSettings",
    "animate",
    "convert",
    "generate",
    "image",
    "latent_sidecar_path",
    "load_animation_input",
    "load_components",
    "load_latent",
    "open_session",
    "rgba_digest",
    "run_batch",
    "save_latent",
]

if TYPE_CHECKING:
    from layeranim.render.api import (
        ClipOutcome,
        ImageOutcome,
        animate,
        generate,
        image,
        open_session,
        run_batch,
    )
    from layeranim.render.components import ModelSpec, load_components
    from layeranim.render.convert import ConvertOutcome, ConvertRequest, convert
    from layeranim.render.inputs import AnimationInput, load_animation_input, load_latent
    from layeranim.render.outputs import latent_sidecar_path, rgba_digest, save_latent
    from layeranim.render.session import RenderSession
    from layeranim.render.settings import (
        AnimateRequest,
        BatchRequest,
        GenerateRequest,
        ImageRequest,
        ModelSettings,
        OutputSettings,
        SamplingSettings,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'layeranim.render' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
