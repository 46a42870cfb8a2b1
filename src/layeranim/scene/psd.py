"""A scene file from a Photoshop document: its pixel layers as RGBA PNGs, their names, positions and sizes.

`psd-tools` reads the document. Every pixel layer, bottom to top, becomes a static `[[layer]]` (add
`motion` to animate one) whose `image` is the layer's pixels saved as an RGBA PNG; the canvas is the
document's size. Hidden layers are kept with `visible = false`, layer opacity becomes `opacity`. Groups
are flattened into their pixel layers; other layers (text, shapes, adjustments, smart objects) are listed
in comments, since their pixels are not stored as a layer bitmap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layeranim.errors import OutputExistsError, UsageError
from layeranim.scene.model import DEFAULT_FPS, DEFAULT_FRAMES, slugify


@dataclass(frozen=True)
class PsdScene:
    """What `scene_from_psd` made: the TOML text and the PNGs it wrote."""

    toml: str
    images: list[Path]
    skipped: list[str]  # "name (kind)" of layers that are not pixel layers


def scene_from_psd(
    psd_path: str | Path,
    *,
    scene_dir: str | Path | None = None,
    images_dir: str | Path | None = None,
    frames: int = DEFAULT_FRAMES,
    fps: float = DEFAULT_FPS,
    overwrite: bool = False,
) -> PsdScene:
    """Read `psd_path`, write each pixel layer to `images_dir` (default `<psd stem>-layers/` beside the PSD)
    and return a scene whose paths are relative to `scene_dir` (default the PSD's folder)."""
    from psd_tools import PSDImage

    from layeranim.video_io import write_image

    psd_path = Path(psd_path)
    if not psd_path.is_file():
        raise UsageError(f"psd {str(psd_path)!r} does not exist; give a Photoshop .psd (or .psb) file.")
    try:
        psd = PSDImage.open(psd_path)
    except Exception as exc:  # psd-tools raises assorted errors for files that are not PSDs
        raise UsageError(f"psd {str(psd_path)!r} cannot be read as a Photoshop document ({exc}).") from None
    scene_dir = Path(scene_dir) if scene_dir is not None else psd_path.parent
    images_dir = Path(images_dir) if images_dir is not None else psd_path.parent / f"{psd_path.stem}-layers"

    # 1. Collect the pixel layers, bottom to top, and check every target before writing anything.
    pixel_layers = []
    skipped = []
    for layer in psd.descendants():
        if layer.is_group():
            continue
        if layer.kind != "pixel" or layer.width == 0 or layer.height == 0:
            skipped.append(f"{layer.name} ({layer.kind})")
            continue
        pixel_layers.append(layer)
    if not pixel_layers:
        raise UsageError(f"psd {str(psd_path)!r} has no pixel layers; nothing to make a scene from.")
    names: set[str] = set()
    plans = []
    for number, layer in enumerate(pixel_layers, start=1):
        name = layer.name.strip() or f"layer{number}"
        while name in names:
            name = f"{name}-{number}"
        names.add(name)
        target = images_dir / f"{number:02d}-{slugify(name)}.png"
        if target.exists() and not overwrite:
            raise OutputExistsError(
                f"{str(target)!r} exists; pass overwrite=True to replace it, or choose another images folder."
            )
        plans.append((layer, name, target))

    # 2. Write the layers' pixels and the scene.
    images_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Made by `layeranim layers init` from {psd_path.name}: every layer is static; add",
        '# motion = "…" (and a region) to the layers that should move.',
        "",
        "[canvas]",
        f"width = {psd.width}",
        f"height = {psd.height}",
        f"frames = {frames}",
        f"fps = {fps:g}",
        'background = "transparent"',
    ]
    written = []
    for layer, name, target in plans:
        rgba_hwc = np.asarray(layer.topil().convert("RGBA"))
        write_image(target, np.ascontiguousarray(rgba_hwc), overwrite=overwrite)
        written.append(target)
        lines += [
            "",
            "[[layer]]",
            f"name = {_toml_string(name)}",
            f"image = {_toml_string(_relative(target, scene_dir))}",
            f"position = [{layer.left}, {layer.top}]",
            f"# size {layer.width}x{layer.height}"
            + (
                f"; blend mode {_blend_name(layer)} is not kept (layers composite 'over')"
                if _blend_name(layer) != "normal"
                else ""
            ),
        ]
        if layer.opacity < 255:
            lines.append(f"opacity = {round(layer.opacity / 255.0, 4)}")
        if not layer.is_visible():
            lines.append("visible = false")
    if skipped:
        lines += ["", "# Not pixel layers, so not in the scene: " + ", ".join(skipped)]
    return PsdScene("\n".join(lines) + "\n", written, skipped)


def _blend_name(layer: object) -> str:
    mode = getattr(layer, "blend_mode", None)
    name = getattr(mode, "name", str(mode)).lower()
    return "normal" if name in ("normal", "pass_through", "none") else name


def _relative(path: Path, base: Path) -> str:
    import os

    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are valid TOML ones)."""
    return json.dumps(text, ensure_ascii=False)
