"""Multi-layer scenes: a TOML canvas of RGBA layers, animated layer by layer and composited "over".

- `load_scene` / `parse_scene`: the scene file, validated once into `Scene`, `Canvas`, `Layer`.
- `render_scene`: every layer to its own RGBA video (stage two with motion confined to a region for
  dynamic layers), then the composite and `scene.json`; unchanged layers are skipped on re-runs.
- `composite`, `compose_scene`, `over`: straight-alpha "over" of placed, timed layers.
- `make_region_callback`: blended latent diffusion as a diffusers `callback_on_step_end`.
- `scene_from_psd`: a scene file from a Photoshop document's pixel layers.

What this does not do: learned cross-layer attention (Animated-ART's DMDL). Each layer is animated on
its own, and layers interact only through compositing.
"""

from __future__ import annotations

from layeranim.scene.compose import (
    LayerClip,
    compose_scene,
    composite,
    conform_fps,
    inline_canvas,
    over,
    read_layer_clip,
    resample_nearest,
)
from layeranim.scene.model import Box, Canvas, Layer, Scene, SceneError, load_scene, parse_scene
from layeranim.scene.outputs import SceneResult, SceneSettings
from layeranim.scene.psd import PsdScene, scene_from_psd
from layeranim.scene.region import (
    feather_weights,
    latent_region_mask,
    make_region_callback,
    region_mask,
    restore_outside,
    scheduler_step_callback,
)
from layeranim.scene.render import render_scene

__all__ = [
    "Box",
    "Canvas",
    "Layer",
    "LayerClip",
    "PsdScene",
    "Scene",
    "SceneError",
    "SceneResult",
    "SceneSettings",
    "compose_scene",
    "composite",
    "conform_fps",
    "feather_weights",
    "inline_canvas",
    "latent_region_mask",
    "load_scene",
    "make_region_callback",
    "over",
    "parse_scene",
    "read_layer_clip",
    "region_mask",
    "render_scene",
    "resample_nearest",
    "restore_outside",
    "scene_from_psd",
    "scheduler_step_callback",
]
