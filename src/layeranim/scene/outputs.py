"""What a scene render writes and when it may skip work: file names, render keys, ownership, scene.json.

OUT/ holds `layers/NN-NAME.EXT` (one RGBA video per layer), `composite.EXT` and `scene.json`. A layer's
`render_key` is the sha256 of everything that determines its file (its parameters, its input files'
sha256, the render settings, the models, dtype, device type and layeranim's version); equal keys mean
an equal file, so a re-run skips it. `scene.json` records every file layeranim wrote (its layers, its
composite and its `written` list): those are replaced when their key changes, anything else only with
`overwrite=True`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from layeranim import safety
from layeranim._version import __version__
from layeranim.errors import OutputExistsError
from layeranim.scene.compose import Repeat
from layeranim.scene.model import Box, Layer, Scene, SceneError
from layeranim.weights import file_sha256

SCENE_JSON = "scene.json"
SCENE_SCHEMA = 1
LAYERS_DIR = "layers"
COMPOSITE_STEM = "composite"


@dataclass(frozen=True)
class SceneSettings:
    """How a scene is rendered and written (shared by every layer)."""

    steps: int = 25
    guidance: float = 7.5
    image_steps: int = 25
    image_guidance: float = 7.0
    negative_prompt: str = ""
    scheduler: str | None = None  # None: each stage's own default sampler (see pipelines._schedulers)
    tta: bool = True
    decode_chunk_size: int = 4
    format: str = "webm"
    quality: int | None = None
    lossless: bool | None = None
    alpha_mode: str = "straight"
    repeat: Repeat = "hold"
    target: str | None = None  # a delivery target the composite is also delivered to (OUT/TARGET/composite.*)

    def pixel_params(self) -> dict[str, Any]:
        """What shapes a layer's pixels and file (`repeat` only matters to the composite, `target` to
        its delivered copies)."""
        params = asdict(self)
        params.pop("repeat")
        params.pop("target")
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
    delivered: list[Path] = field(default_factory=list)  # the composite's files for `settings.target`

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
            **(
                {"target": self.info["delivery"]["target"], "delivered": [str(p) for p in self.delivered]}
                if self.info.get("delivery")
                else {}
            ),
        }


# ---------------------------------------------------------------------------------------------------
# Names and keys. All of it runs before any model loads.


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


def delivery_base(out_dir: Path, target: str) -> Path:
    """The base name the composite is delivered to: OUT/web/composite (→ composite.webm, …)."""
    from layeranim.delivery import get_target

    return out_dir / get_target(target).name / COMPOSITE_STEM


def delivery_files(out_dir: Path, target: str) -> list[Path]:
    """Every file `target` writes for the composite (checks the target; `apple` fails off macOS)."""
    from layeranim.delivery import check_delivery

    planned = check_delivery(target, delivery_base(out_dir, target), overwrite=True, require_folder=False)
    return [path for _, path in planned]


def derive_seed(base_seed: int, index: int) -> int:
    """Layer `index`'s seed when it gives none: the first 4 bytes of sha256("base:index")."""
    digest = hashlib.sha256(f"{base_seed}:{index}".encode("ascii")).digest()
    return int.from_bytes(digest[:4], "big")


def file_sha256_or_dir(path: Path) -> str:
    """A file's sha256, or a folder's (its sorted files' digests): an external layer's identity."""
    if path.is_dir():
        return hashlib.sha256(
            "".join(f"{p.name}:{file_sha256(p)}" for p in sorted(path.iterdir()) if p.is_file()).encode()
        ).hexdigest()
    return file_sha256(path)


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


def composite_render_key(scene: Scene, reports: list[LayerReport], settings: SceneSettings) -> str:
    """The sha256 of what determines the composite: the canvas, every layer's key (or an external file's
    sha256) with its placement, and the file settings."""
    determinants = {
        "canvas": scene.canvas.to_json(),
        "layers": [
            [
                report.render_key or file_sha256_or_dir(report.file),
                report.layer.position,
                report.layer.opacity,
                report.layer.visible,
                report.layer.start,
            ]
            for report in reports
        ],
        "file": settings.pixel_params(),
        "repeat": settings.repeat,
        "layeranim_version": __version__,
    }
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


def owned_files(previous: dict[str, Any] | None, out_dir: Path) -> dict[Path, str]:
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
    marked = (
        {(out_dir / entry).resolve() for entry in safety.owned_entries(out_dir)}
        if out_dir.is_dir()
        else set()
    )
    # Never replace what layeranim did not write, overwrite or not (issue 16): so no overwrite hint here.
    if (out_dir / SCENE_JSON).exists() and previous is None:
        raise OutputExistsError(
            f"{str(out_dir / SCENE_JSON)!r} exists and is not a layeranim scene record; choose another "
            "folder, or move that file away."
        )
    owned = set(owned_files(previous, out_dir)) | marked
    targets = [layer_file(out_dir, layer, settings.format) for layer in scene.layers if layer.video is None]
    targets.append(composite_file(out_dir, settings.format))
    if settings.target is not None:
        targets += delivery_files(out_dir, settings.target)
    for target in targets:
        # Layer files are named from slugs (no separators); still, nothing may land outside OUT.
        safety.resolve_inside(out_dir, target.relative_to(out_dir), item=f"scene output {target.name!r}")
        if (target.exists() or target.is_symlink()) and target.resolve() not in owned:
            raise OutputExistsError(
                f"{str(target)!r} exists and layeranim did not write it (it is not in {SCENE_JSON}); "
                "choose another folder, or move that file away."
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
# scene.json.


def scene_info(
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


def write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
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
    if layer.region is None:
        return None
    if isinstance(layer.region, Box):
        return layer.region.as_list()
    return str(layer.region)
