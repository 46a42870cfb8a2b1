"""Rendering a scene: every layer to its own RGBA video, then the composite and `scene.json`.

- A static layer (no `motion`) is its still repeated for the layer's frames; a `prompt` layer's still
  comes from stage one.
- A dynamic layer is animated by stage two from its still, with the motion confined to its region
  (`layeranim.scene.region`): blended latent diffusion at every step, then the still restored outside a
  feathered margin.
- A `video` layer is used as it is.
- The models load once (the session's components are loaded on first use, and not at all when every
  layer is unchanged).

Re-running skips a layer whose `render_key` equals the one OUT/scene.json records and whose file exists,
and the composite likewise (`layeranim.scene.outputs`). scene.json is rewritten after every layer, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layeranim import safety
from layeranim.progress import StageProgress as SceneProgress
from layeranim.scene.compose import compose_scene
from layeranim.scene.model import Layer, Scene
from layeranim.scene.outputs import (
    LAYERS_DIR,
    SCENE_JSON,
    LayerReport,
    SceneResult,
    SceneSettings,
    check_scene_outputs,
    check_scene_renderable,
    composite_file,
    composite_render_key,
    delivery_base,
    delivery_files,
    derive_seed,
    layer_file,
    layer_frames,
    layer_render_key,
    output_extension,
    owned_files,
    read_scene_json,
    scene_info,
    write_json_atomic,
)

logger = logging.getLogger(__name__)


"""progress(item, phase, done, total): item is a layer's slug or "composite"; phase "denoise", "decode",
"write" …"""


# ---------------------------------------------------------------------------------------------------
# Rendering.


def render_scene(
    scene: Scene,
    session: Any,
    out_dir: Path,
    *,
    settings: SceneSettings,
    base_seed: int = 0,
    models: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: SceneProgress | None = None,
) -> SceneResult:
    """Render every layer of `scene` with `session` (a `RenderSession`) into `out_dir`; see the module doc.

    `models` describes the weights for the render keys without loading them (default: the session's
    `spec`); `base_seed` seeds the layers that give no `seed` of their own.
    """
    start_all = time.perf_counter()
    out_dir = Path(out_dir)
    check_scene_renderable(scene)
    check_scene_outputs(scene, out_dir, settings, overwrite=overwrite)
    models = models if models is not None else {"spec": repr(getattr(session, "spec", None))}
    dtype = str(getattr(session, "dtype", ""))
    device = str(getattr(session, "device", "cpu"))
    previous = read_scene_json(out_dir)
    owned = owned_files(previous, out_dir)
    (out_dir / LAYERS_DIR).mkdir(parents=True, exist_ok=True)

    reports_by_index: dict[int, LayerReport] = {}
    timings: dict[str, float] = {}

    def record(composite: dict[str, Any] | None, delivery: dict[str, Any] | None = None) -> dict[str, Any]:
        reports = [reports_by_index[i] for i in sorted(reports_by_index)]
        info = scene_info(scene, out_dir, reports, composite, session, settings, base_seed, timings)
        if delivery is not None:
            info["delivery"] = delivery
        info["models"]["requested"] = models
        if not info["models"]["sources"] and previous is not None:  # nothing loaded: the last run's
            info["models"]["sources"] = previous.get("models", {}).get("sources", {})
        # Every file layeranim wrote here, this run or before: an interrupted run leaves none "foreign".
        written = {
            str(path.relative_to(out_dir.resolve()))
            for path in owned
            if path.is_relative_to(out_dir.resolve())
        }
        written |= {entry["file"] for entry in info["layers"] if entry["status"] == "rendered"}
        if composite is not None:
            written.add(composite["file"])
        if delivery is not None:
            written |= set(delivery["files"])
        info["written"] = sorted(written)
        write_json_atomic(out_dir / SCENE_JSON, info)
        safety.mark_owned(out_dir, [SCENE_JSON, *written])  # what --overwrite may replace next time
        return info

    def finish(layer: Layer, frames_fhwc: np.ndarray, seed: int | None, key: str, seconds: float) -> None:
        target = layer_file(out_dir, layer, settings.format)
        started = time.perf_counter()
        _write_clip(target, frames_fhwc, scene.canvas.fps, settings, progress=_item(progress, layer.slug))
        seconds += time.perf_counter() - started
        kind = "dynamic" if layer.dynamic else "static"
        reports_by_index[layer.index] = LayerReport(
            layer.index, layer.name, target, "rendered", kind, seed, key, seconds, layer
        )
        timings[layer.slug] = round(seconds, 3)
        record(None)

    # 1. Skip what is unchanged; render the stills (static layers are written at once).
    pending: list[_Pending] = []
    for layer in scene.layers:
        seed = None
        if layer.prompt is not None or layer.dynamic:
            seed = layer.seed if layer.seed is not None else derive_seed(base_seed, layer.index)
        if layer.video is not None:
            reports_by_index[layer.index] = LayerReport(
                layer.index, layer.name, layer.video, "external", "video", None, "", 0.0, layer
            )
            continue
        target = layer_file(out_dir, layer, settings.format)
        key = layer_render_key(layer, scene, settings, seed=seed, models=models, dtype=dtype, device=device)
        if target.exists() and owned.get(target.resolve()) == key:
            kind = "dynamic" if layer.dynamic else "static"
            reports_by_index[layer.index] = LayerReport(
                layer.index, layer.name, target, "skipped", kind, seed, key, 0.0, layer
            )
            continue
        started = time.perf_counter()
        still_hwc, latent = layer_still(layer, session, settings=settings, seed=seed, progress=progress)
        if not layer.dynamic:
            frames_fhwc = np.ascontiguousarray(
                np.broadcast_to(still_hwc, (layer_frames(layer, scene), *still_hwc.shape))
            )
            finish(layer, frames_fhwc, seed, key, time.perf_counter() - started)
            continue
        assert seed is not None
        pending.append(_Pending(layer, still_hwc, latent, seed, key, time.perf_counter() - started))

    # 2. Animate the dynamic layers; layers of one size share UNet calls when stage two takes batches.
    groups: dict[tuple[int, int, int, bool], list[_Pending]] = {}
    for item in pending:
        layer = item.layer
        groups.setdefault((layer.width, layer.height, layer_frames(layer, scene), layer.seamless), []).append(
            item
        )
    for (_, _, frames, _), items in groups.items():
        started = time.perf_counter()
        videos = animate_layers(
            [item.layer for item in items],
            [item.still_hwc for item in items],
            [item.latent for item in items],
            scene,
            session,
            settings=settings,
            seeds=[item.seed for item in items],
            frames=frames,
            progress=progress,
        )
        share = (time.perf_counter() - started) / len(items)
        for item, frames_fhwc in zip(items, videos, strict=True):
            finish(item.layer, frames_fhwc, item.seed, item.key, item.seconds + share)
    reports = [reports_by_index[i] for i in sorted(reports_by_index)]

    # The composite is `compose` of the layer files as written (what a user compositing them gets).
    target = composite_file(out_dir, settings.format)
    files = {report.name: report.file for report in reports}
    composite_key = composite_render_key(scene, reports, settings)
    composite_frames: np.ndarray | None = None
    if target.exists() and owned.get(target.resolve()) == composite_key:
        composite_status = "skipped"
    else:
        started = time.perf_counter()
        composite_frames = compose_scene(
            scene, repeat=settings.repeat, files=files, progress=_phase(progress, "composite", "compose")
        )
        _write_clip(
            target, composite_frames, scene.canvas.fps, settings, progress=_item(progress, "composite")
        )
        timings["composite"] = round(time.perf_counter() - started, 3)
        composite_status = "rendered"

    # 3. Deliver the composite to the target (again only when it changed or a delivered file is gone).
    delivery = None
    delivered: list[Path] = []
    if settings.target is not None:
        started = time.perf_counter()
        delivered, delivery = _deliver_composite(
            out_dir, settings.target, composite_key, composite_frames, target, scene.canvas.fps, previous
        )
        timings["delivery"] = round(time.perf_counter() - started, 3)
    timings.update({name: round(s, 3) for name, s in getattr(session, "load_seconds", {}).items()})
    timings["total"] = round(time.perf_counter() - start_all, 3)
    info = record(
        {"file": str(target.relative_to(out_dir)), "render_key": composite_key, "status": composite_status},
        delivery,
    )
    return SceneResult(out_dir, reports, target, composite_status, out_dir / SCENE_JSON, info, delivered)


def _deliver_composite(
    out_dir: Path,
    target: str,
    composite_key: str,
    composite_frames: np.ndarray | None,
    composite: Path,
    fps: float,
    previous: dict[str, Any] | None,
) -> tuple[list[Path], dict[str, Any]]:
    """Deliver the composite (the frames just composed, else its file) to `target` under OUT/TARGET/.

    Skipped when the previous run delivered this same composite to this target and every file is there.
    The files were checked by `check_scene_outputs` (only layeranim's own are replaced).
    """
    from layeranim.delivery import deliver

    files = delivery_files(out_dir, target)
    last = previous.get("delivery") if previous is not None else None
    unchanged = (
        isinstance(last, dict)
        and last.get("target") == target
        and last.get("render_key") == composite_key
        and all(path.exists() for path in files)
    )
    if not unchanged:
        files[0].parent.mkdir(parents=True, exist_ok=True)
        source: Any = composite_frames if composite_frames is not None else composite
        written = deliver(
            source,
            target,
            delivery_base(out_dir, target),
            fps if composite_frames is not None else None,
            overwrite=True,
        )
        files = [item.path for item in written]
    entry = {
        "target": target,
        "render_key": composite_key,
        "status": "skipped" if unchanged else "rendered",
        "files": [str(path.relative_to(out_dir)) for path in files],
    }
    return files, entry


@dataclass
class _Pending:
    """A dynamic layer whose still is ready and whose animation is still to run."""

    layer: Layer
    still_hwc: np.ndarray
    latent: Any
    seed: int
    key: str
    seconds: float


def layer_still(
    layer: Layer,
    session: Any,
    *,
    settings: SceneSettings,
    seed: int | None,
    progress: SceneProgress | None = None,
) -> tuple[np.ndarray, Any]:
    """A layer's still (h, w, 4) uint8 and, for a prompt layer, stage one's latent (else None)."""
    from layeranim.video_io import read_image

    if layer.image is not None:
        return read_image(layer.image), None
    assert layer.prompt is not None and seed is not None
    result = session.image(
        layer.prompt,
        negative_prompt=layer.negative_prompt or settings.negative_prompt,
        seed=seed,
        steps=settings.image_steps,
        guidance=settings.image_guidance,
        width=layer.width,
        height=layer.height,
        tta=settings.tta,
        progress=_staged(progress, layer.slug),
    )
    return result.rgba_hwc_uint8, result.latent_b4hw


def animate_layers(
    layers: list[Layer],
    stills_hwc_uint8: list[np.ndarray],
    base_latents_b4hw: list[Any],
    scene: Scene,
    session: Any,
    *,
    settings: SceneSettings,
    seeds: list[int],
    frames: int,
    progress: SceneProgress | None = None,
) -> list[np.ndarray]:
    """Stage two on layers of one size, each with its motion confined to its region
    (`layeranim.scene.region`): (f, h, w, 4) uint8 per layer.

    With a stage two that takes a list of prompts (`num_videos_per_prompt`), the layers run as one batched
    call (one UNet call per step for all of them); otherwise one call per layer.
    """
    import torch

    from layeranim.models.inter_frame_attention import middle_frame_index
    from layeranim.render.devices import generator_for
    from layeranim.scene.region import (
        feather_weights,
        latent_region_mask,
        make_region_callback,
        region_mask,
        restore_outside,
        scheduler_step_callback,
    )

    pipe = session.stage_two()
    takes = inspect.signature(pipe.__call__).parameters
    batched = len(layers) > 1 and "num_videos_per_prompt" in takes
    if len(layers) > 1 and not batched:
        rows = zip(layers, stills_hwc_uint8, base_latents_b4hw, seeds, strict=True)
        return [
            animate_layers(
                [layer], [still], [latent], scene, session, settings=settings, seeds=[seed], frames=frames,
                progress=progress,
            )[0]
            for layer, still, latent, seed in rows
        ]  # fmt: skip
    bases = [
        (latent if latent is not None else pipe.encode_image(still)).float().cpu()
        for still, latent in zip(stills_hwc_uint8, base_latents_b4hw, strict=True)
    ]
    base_b4hw = torch.cat(bases)  # (b, c, h, w), one row per layer
    masks_hw = [region_mask(layer, scene.canvas) for layer in layers]
    call: dict[str, Any] = {}
    hook: Any = nullcontext()
    if not all(mask.all() for mask in masks_hw):
        mask_latent_bhw = torch.stack([latent_region_mask(mask) for mask in masks_hw])
        noise_b4hw = torch.cat(
            [
                torch.randn(base.shape, generator=torch.Generator("cpu").manual_seed((seed + 1) % 2**63))
                for base, seed in zip(bases, seeds, strict=True)
            ]
        )
        callback = make_region_callback(
            base_b4hw, mask_latent_bhw, pipe.scheduler, noise_b4hw, clean_frame=middle_frame_index(frames)
        )
        # Switch-over point: a stage two with diffusers' callback_on_step_end takes the callback directly;
        # until then the same callable runs after every scheduler step.
        if "callback_on_step_end" in takes:
            call = {"callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": ["latents"]}
        else:
            hook = scheduler_step_callback(pipe, callback)
    if any(layer.seamless for layer in layers):  # a group shares `seamless` (it is part of its key)
        call["seamless"] = True
    negatives = [layer.negative_prompt or settings.negative_prompt for layer in layers]
    generators = [generator_for(session.device, seed) for seed in seeds]
    item = layers[0].slug if not batched else "+".join(layer.slug for layer in layers)
    with hook:
        out = pipe(
            [layer.motion for layer in layers] if batched else layers[0].motion,
            negatives if batched else negatives[0],
            base_latent=base_b4hw,
            num_frames=frames,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            generator=generators if batched else generators[0],
            tta=settings.tta,
            decode_chunk_size=settings.decode_chunk_size,
            progress=_staged(progress, item),
            **call,
        )
    videos_bfhwc = out.frames if batched else out.frames[None]
    results = []
    for layer, still, mask, video in zip(layers, stills_hwc_uint8, masks_hw, videos_bfhwc, strict=True):
        frames_fhwc = video[:, : layer.height, : layer.width]  # the latent grid rounds the size up to 8
        results.append(restore_outside(frames_fhwc, still, feather_weights(mask, layer.margin)))
    return results


def _write_clip(
    target: Path,
    frames_fhwc: np.ndarray,
    fps: float,
    settings: SceneSettings,
    *,
    progress: Callable[[str, int, int], None] | None,
) -> None:
    from layeranim.video_io import write_video

    path = Path(str(target) + "/") if output_extension(settings.format) == "" else target
    write_video(
        path,
        frames_fhwc,
        fps,
        format=settings.format,
        quality=settings.quality,
        lossless=settings.lossless,
        alpha_mode=settings.alpha_mode,  # type: ignore[arg-type]
        overwrite=True,  # checked up front by check_scene_outputs
        progress=(lambda done, total: progress("write", done, total)) if progress is not None else None,
    )


def _staged(progress: SceneProgress | None, item: str) -> Callable[[str, int, int], None] | None:
    """A session-style progress(stage, phase, done, total) → ours, tagged with the layer."""
    if progress is None:
        return None
    return lambda *args: progress(item, args[-3], args[-2], args[-1])


def _item(progress: SceneProgress | None, item: str) -> Callable[[str, int, int], None] | None:
    if progress is None:
        return None
    return lambda phase, done, total: progress(item, phase, done, total)


def _phase(progress: SceneProgress | None, item: str, phase: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(item, phase, done, total)


__all__ = ["animate_layers", "layer_still", "render_scene"]
