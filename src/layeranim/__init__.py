"""layeranim: transparent (RGBA) video generation with diffusion models.

Public API (imported lazily, so `layeranim --version` does not pay for torch and diffusers):

- `TransparentVAEEncoder`, `TransparentVAEDecoder`: LayerDiffuse's transparency encoder and decoder.
- `LayerDiffusePipeline`: stage one, text → RGBA image (+ adjusted latent).
- `LayerAnimatePipeline`, `build_motion_unet`: stage two, RGBA image or latent → RGBA frames.
- `InterFrameAttnProcessor`, `install_inter_frame_attention`: the paper's Inter-Frame Attention.
- `ModelSpec`, `load_components`, `RenderSession`: weights and a loaded-once render session.
- `layeranim.render`: the typed render API the CLI uses (requests in, files + manifests out):
  `render.image`, `render.animate`, `render.generate`, `render.run_batch`.
- `video_io`: reading and writing alpha video.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from layeranim._version import __version__

_EXPORTS = {
    "TransparentVAEEncoder": "layeranim.models.transparent_vae",
    "TransparentVAEDecoder": "layeranim.models.transparent_vae",
    "InterFrameAttnProcessor": "layeranim.models.inter_frame_attention",
    "install_inter_frame_attention": "layeranim.models.inter_frame_attention",
    "LayerDiffusePipeline": "layeranim.pipelines.layerdiffuse",
    "LayerAnimatePipeline": "layeranim.pipelines.layeranimate",
    "build_motion_unet": "layeranim.pipelines.layeranimate",
    "ModelSpec": "layeranim.render.components",
    "load_components": "layeranim.render.components",
    "RenderSession": "layeranim.render.session",
}

__all__ = [
    "InterFrameAttnProcessor",
    "LayerAnimatePipeline",
    "LayerDiffusePipeline",
    "ModelSpec",
    "RenderSession",
    "TransparentVAEDecoder",
    "TransparentVAEEncoder",
    "__version__",
    "build_motion_unet",
    "install_inter_frame_attention",
    "load_components",
]

if TYPE_CHECKING:
    from layeranim.models.inter_frame_attention import InterFrameAttnProcessor, install_inter_frame_attention
    from layeranim.models.transparent_vae import TransparentVAEDecoder, TransparentVAEEncoder
    from layeranim.pipelines.layeranimate import LayerAnimatePipeline, build_motion_unet
    from layeranim.pipelines.layerdiffuse import LayerDiffusePipeline
    from layeranim.render.components import ModelSpec, load_components
    from layeranim.render.session import RenderSession


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'layeranim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
