"""Both stages' pipelines over one set of loaded tiny components, for the pipeline tests."""

from __future__ import annotations

from typing import Any

from layeranim.pipelines.layeranimate import LayerAnimatePipeline
from layeranim.pipelines.layerdiffuse import LayerDiffusePipeline
from layeranim.render.components import Components


def stage_one_pipeline(c: Components) -> LayerDiffusePipeline:
    """Stage one on the components as loaded (their own scheduler)."""
    return LayerDiffusePipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=c.unet,
        scheduler=c.scheduler,
        transparent_decoder=c.transparent_decoder,
        transparent_encoder=c.transparent_encoder,
    )


def stage_two_pipeline(c: Components, unet: Any, scheduler: Any = None) -> LayerAnimatePipeline:
    """Stage two with `unet` (a motion UNet built from `c`), sharing `c`'s VAE, text encoder and
    transparency models; `scheduler` defaults to the components' own."""
    return LayerAnimatePipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=unet,
        scheduler=scheduler if scheduler is not None else c.scheduler,
        transparent_decoder=c.transparent_decoder,
        transparent_encoder=c.transparent_encoder,
    )
