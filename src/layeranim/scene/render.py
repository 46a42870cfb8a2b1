"""Rendering a scene: every layer to its own RGBA video, then the composite and `scene.json`.

- A static layer (no `motion`) is its still repeated for the layer's frames; a `prompt` layer's still
  comes from stage one.
- A dynamic layer is animated by stage two from its still, with the motion confined to its region
  (`layeranim.scene.region`): blended latent diffusion at every step, then the still restored outside a
  feathered margin.
- A `video` layer is used as it is.
- The models load once (the session's components are loaded on first use, and not at all when every
  layer is unchanged).

Re-running skips a layer whose `render_key` (the sha256 of its parameters, its input files' sha256,
the render settings, the models, dtype, device type and layeranim's version) equals the one recorded in
OUT/scene.json and whose file exists; the composite is skipped likewise. Files that OUT/scene.json
records (its layers, its composite and its `written` list) were written by layeranim and are replaced
when their key changes; any other existing file is replaced only with `overwrite=True`. scene.json is
rewritten after every layer, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from layeranim import __version__
from layeranim.errors import OutputExistsError
from layeranim.scene.compose import Repeat, compose_scene
from layeranim.scene.model import Layer, Scene, SceneError

logger = logging.getLogger(__name__)

SCENE_JSON = "scene.json"
SCENE_SCHEMA = 1
LAYERS_DIR = "layers"
COMPOSITE_STEM = "composite"

SceneProgress = Callable[[str, str, int, int], None]
"""progress(item, phase, done, total): item is a layer's slug or "composite"; phase "denoise", "decode",
"write" …"""


@dataclass(frozen=True)
class SceneSettings:
    """How a scene is rendered and written (shared by every layer)."""

    steps: int = 25
    guidance: float = 7.5
    image_steps: int = 25
    image_guidance: float = 7.0
    negative_prompt: str = ""
    scheduler: str = "euler_a"
    tta: bool = True
    decode_chunk_size: int = 4
    format: str = "webm"
    quality: int | None = None
    lossless: bool | None = None
    alpha_mode: str = "straight"
    repeat: Repeat = "hold"

    def pixel_params(self) -> dict[str, Any]:
        """What shapes a layer's pixels and file (`repeat` only matters to the composite)."""
        params = asdict(self)
        params.pop("repeat")
        return params


@dataclass
class LayerReport:
    """How one layer ended: its file, whether it was rendered or skipped, its seed and key."""

    index: int
    name: str
    file: Path
    status: str  # rendered | skipped | external
    kind: str  # static | dynamic | video
    seed: int | None
    render_key: str
    seconds: float
    layer: Layer

    def to_json(self) -> dict[str, Any]:
        layer = self.layer
        return {
            "index": self.index,
            "name": self.name,
            "file": str(self.file),
            "status": self.status,
            "kind": self.kind,
            "source": _layer_source(layer),
            "motion": layer.motion,
            "region": _region_json(layer),
            "position": list(layer.position),
            "size": [layer.width, layer.height],
            "opacity": layer.opacity,
            "visible": layer.visible,
            "start": layer.start,
            "seed": self.seed,
            "render_key": self.render_key,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class SceneResult:
    """What `render_scene` wrote."""

    out_dir: Path
    layers: list[LayerReport]
    composite: Path
    composite_status: str
    scene_json: Path
    info: dict[str, Any] = field(default_factory=dict)  # the scene.json contents

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.out_dir),
            "scene_json": str(self.scene_json),
            "composite": str(self.composite),
            "composite_status": self.composite_status,
            "base_seed": self.info.get("base_seed"),
            "layers": [report.to_json() for report in self.layers],
            "counts": {
                status: sum(1 for r in self.layers if r.status == status)
                for status in ("rendered", "skipped", "external")
            },
            "timings": self.info.get("timings", {}),
        }


# ---------------------------------------------------------------------------------------------------
# Planning: names, keys, and what may be replaced. All of it runs before any model loads.


def output_extension(format: str) -> str:
    """The file suffix for `format` ("" for a PNG sequence, which is a folder)."""
    from layeranim.video_io import get_format

    spec = get_format(format)
    return "" if spec.kind == "sequence" else spec.extensions[0]


def layer_file(out_dir: Path, layer: Layer, format: str) -> Path:
    """OUT/layers/02-kite.webm (or the folder OUT/layers/02-kite for png-seq)."""
    return out_dir / LAYERS_DIR / f"{layer.slug}{output_extension(format)}"


def composite_file(out_dir: Path, format: str) -> Path:
    return out_dir / f"{COMPOSITE_STEM}{output_extension(format)}"


def derive_seed(base_seed: int, index: int) -> int:
    """Layer `index`'s seed when it gives none: the first 4 bytes of sha256("base:index")."""
    digest = hashlib.sha256(f"{base_seed}:{index}".encode("ascii")).digest()
    return int.from_bytes(digest[:4], "big")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def layer_render_key(
    layer: Layer,
    scene: Scene,
    settings: SceneSettings,
    *,
    seed: int | None,
    models: dict[str, Any],
    dtype: str,
    device: str,
) -> str:
    """The sha256 of everything that determines a layer's file (not where it is placed: that is the
    composite's business)."""
    inputs = {
        key: file_sha256(path)
        for key, path in (
            ("image", layer.image),
            ("region", layer.region),
            ("ifa_weights", layer.ifa_weights),
        )
        if isinstance(path, Path)
    }
    determinants: dict[str, Any] = {
        "image": layer.image is not None,
        "prompt": layer.prompt,
        "negative_prompt": layer.negative_prompt,
        "size": [layer.width, layer.height],
        "motion": layer.motion,
        "region": _region_json(layer) if not isinstance(layer.region, Path) else "mask",
        "region_at": list(layer.position) if layer.region is not None else None,
        "margin": layer.margin,
        "frames": layer_frames(layer, scene),
        "seamless": layer.seamless,
        "fps": scene.canvas.fps,
        "inputs": inputs,
        "file": settings.pixel_params(),
        "layeranim_version": __version__,
    }
    if layer.prompt is not None or layer.dynamic:  # the models only matter to what they render
        determinants.update(
            seed=seed,
            models=models,
            dtype=str(dtype),
            device_type=str(device).split(":", 1)[0],
            steps=settings.steps if layer.dynamic else None,
            guidance=settings.guidance if layer.dynamic else None,
            image_steps=settings.image_steps if layer.prompt is not None else None,
            image_guidance=settings.image_guidance if layer.prompt is not None else None,
            scheduler=settings.scheduler,
            tta=settings.tta,
        )
    return hashlib.sha256(canonical_json(determinants).encode("utf-8")).hexdigest()


def layer_frames(layer: Layer, scene: Scene) -> int:
    return layer.frames if layer.frames is not None else scene.canvas.frames


def read_scene_json(out_dir: Path) -> dict[str, Any] | None:
    """OUT/scene.json when layeranim wrote it (None: missing, unreadable or someone else's file)."""
    try:
        data = json.loads((out_dir / SCENE_JSON).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("layeranim_scene") != SCENE_SCHEMA:
        return None
    return data


def _owned_files(previous: dict[str, Any] | None, out_dir: Path) -> dict[Path, str]:
    """Files a previous run wrote into OUT (path → render_key)."""
    owned: dict[Path, str] = {}
    if previous is None:
        return owned
    for entry in previous.get("layers", []):
        if isinstance(entry, dict) and entry.get("status") != "external" and "file" in entry:
            owned[_resolve(out_dir, entry["file"])] = str(entry.get("render_key", ""))
    composite = previous.get("composite")
    if isinstance(composite, dict) and "file" in composite:
        owned[_resolve(out_dir, composite["file"])] = str(composite.get("render_key", ""))
    for file in previous.get("written", []):
        if isinstance(file, str):
            owned.setdefault(_resolve(out_dir, file), "")
    return owned


def _resolve(out_dir: Path, file: str) -> Path:
    path = Path(file)
    return (path if path.is_absolute() else out_dir / path).resolve()


def check_scene_outputs(scene: Scene, out_dir: Path, settings: SceneSettings, *, overwrite: bool) -> None:
    """Refuse, before anything loads, to replace files layeranim did not write (without `overwrite`)."""
    from layeranim.video_io import get_format

    get_format(settings.format)  # an unknown or alpha-dropping format fails here
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"output {str(out_dir)!r} is a file; the scene's output is a folder.")
    previous = read_scene_json(out_dir)
    if (out_dir / SCENE_JSON).exists() and previous is None and not overwrite:
        raise OutputExistsError(
            f"{str(out_dir / SCENE_JSON)!r} exists and is not a layeranim scene record; pass "
            "overwrite=True to replace it, or choose another folder."
        )
    owned = _owned_files(previous, out_dir)
    targets = [layer_file(out_dir, layer, settings.format) for layer in scene.layers if layer.video is None]
    targets.append(composite_file(out_dir, settings.format))
    for target in targets:
        if target.exists() and target.resolve() not in owned and not overwrite:
            raise OutputExistsError(
                f"{str(target)!r} exists and layeranim did not write it (it is not in {SCENE_JSON}); pass "
                "overwrite=True to replace it, or choose another folder."
            )


def check_scene_renderable(scene: Scene) -> None:
    """What the layers ask of this build's stage two, and of frame rates, checked before loading."""
    from layeranim.pipelines.layeranimate import LayerAnimatePipeline
    from layeranim.video_io import probe

    takes = inspect.signature(LayerAnimatePipeline.__call__).parameters
    for layer in scene.layers:
        if layer.seamless and "seamless" not in takes:
            raise SceneError(
                f"{layer.label}: seamless = true needs a stage two with seamless loops, which this build's "
                "LayerAnimatePipeline does not have; drop seamless.",
                layer=layer.name,
                key="seamless",
            )
        if layer.video is not None:
            fps = probe(layer.video).fps
            if fps and abs(fps - scene.canvas.fps) > 1e-6 * scene.canvas.fps:
                raise SceneError(
                    f'{layer.label}: video = "{layer.video.name}" runs at {fps:g} fps but the canvas at '
                    f"{scene.canvas.fps:g} fps; set [canvas] fps = {fps:g}, or resample the clip "
                    "first (composite it alone with fps=<rate>).",
                    layer=layer.name,
                    key="video",
                )


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
    owned = _owned_files(previous, out_dir)
    (out_dir / LAYERS_DIR).mkdir(parents=True, exist_ok=True)

    reports_by_index: dict[int, LayerReport] = {}
    timings: dict[str, float] = {}

    def record(composite: dict[str, Any] | None) -> dict[str, Any]:
        reports = [reports_by_index[i] for i in sorted(reports_by_index)]
        info = _scene_info(scene, out_dir, reports, composite, session, settings, base_seed, timings)
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
        info["written"] = sorted(written)
        _write_json_atomic(out_dir / SCENE_JSON, info)
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
    composite_key = hashlib.sha256(
        canonical_json(
            {
                "canvas": scene.canvas.to_json(),
                "layers": [
                    [
                        r.render_key or file_sha256_or_dir(r.file),
                        r.layer.position,
                        r.layer.opacity,
                        r.layer.visible,
                        r.layer.start,
                    ]
                    for r in reports
                ],
                "file": settings.pixel_params(),
                "repeat": settings.repeat,
                "layeranim_version": __version__,
            }
        ).encode("utf-8")
    ).hexdigest()
    if target.exists() and owned.get(target.resolve()) == composite_key:
        composite_status = "skipped"
    else:
        started = time.perf_counter()
        frames_fhwc = compose_scene(
            scene, repeat=settings.repeat, files=files, progress=_phase(progress, "composite", "compose")
        )
        _write_clip(target, frames_fhwc, scene.canvas.fps, settings, progress=_item(progress, "composite"))
        timings["composite"] = round(time.perf_counter() - started, 3)
        composite_status = "rendered"
    timings.update({name: round(s, 3) for name, s in getattr(session, "load_seconds", {}).items()})
    timings["total"] = round(time.perf_counter() - start_all, 3)
    info = record(
        {"file": str(target.relative_to(out_dir)), "render_key": composite_key, "status": composite_status}
    )
    return SceneResult(out_dir, reports, target, composite_status, out_dir / SCENE_JSON, info)


def file_sha256_or_dir(path: Path) -> str:
    """A file's sha256, or a folder's (its sorted files' digests): an external layer's identity."""
    if path.is_dir():
        return hashlib.sha256(
            "".join(f"{p.name}:{file_sha256(p)}" for p in sorted(path.iterdir()) if p.is_file()).encode()
        ).hexdigest()
    return file_sha256(path)


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

    from layeranim.devices import generator_for
    from layeranim.models.inter_frame_attention import middle_frame_index
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


def _scene_info(
    scene: Scene,
    out_dir: Path,
    reports: list[LayerReport],
    composite: dict[str, Any] | None,
    session: Any,
    settings: SceneSettings,
    base_seed: int,
    timings: dict[str, float],
) -> dict[str, Any]:
    layers = []
    for report in reports:
        entry = report.to_json()
        if report.status != "external":
            entry["file"] = str(report.file.relative_to(out_dir))
        layers.append(entry)
    sources: dict[str, Any] = {}
    if "load_models" in getattr(session, "load_seconds", {}):  # what was loaded (revisions, file hashes)
        sources = dict(session.sources)
    return {
        "layeranim_scene": SCENE_SCHEMA,
        "layeranim_version": __version__,
        "scene_file": str(scene.path) if scene.path is not None else None,
        "canvas": scene.canvas.to_json(),
        "order": [layer.name for layer in scene.layers],
        "layers": layers,
        "composite": composite,
        "base_seed": base_seed,
        "settings": asdict(settings),
        "models": {"spec": repr(getattr(session, "spec", None)), "sources": sources},
        "device": str(getattr(session, "device", "")),
        "dtype": str(getattr(session, "dtype", "")),
        "timings": dict(timings),
        "versions": package_versions(),
        "platform": platform.platform(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version(), "layeranim": __version__}
    for name in ("torch", "diffusers", "transformers", "av", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _layer_source(layer: Layer) -> dict[str, str]:
    if layer.image is not None:
        return {"image": str(layer.image)}
    if layer.video is not None:
        return {"video": str(layer.video)}
    return {"prompt": layer.prompt or ""}


def _region_json(layer: Layer) -> Any:
    from layeranim.scene.model import Box

    if layer.region is None:
        return None
    if isinstance(layer.region, Box):
        return layer.region.as_list()
    return str(layer.region)


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


__all__ = [
    "LayerReport",
    "SceneResult",
    "SceneSettings",
    "animate_layers",
    "check_scene_outputs",
    "check_scene_renderable",
    "layer_still",
    "render_scene",
]
