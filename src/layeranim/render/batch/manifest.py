"""Manifests: the JSON sidecar beside each output (parameters, seed, sources, versions, render_key)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from layeranim._version import __version__
from layeranim.render.batch.files import BatchItem
from layeranim.weights import file_sha256

MANIFEST_SCHEMA = 1
MANIFEST_NOTE = (
    "render_key is the sha256 of the canonical JSON of everything that determines the pixels (prompt, "
    "negative prompt, input image hash, params, seed, model sources, dtype, device type, layeranim "
    "version). A batch re-run skips this output while the render_key matches and renders it again "
    "(replacing it) when any of these changed."
)


# ---------------------------------------------------------------------------------------------------
# Manifests.


def manifest_path(output: Path | str) -> Path:
    """The manifest beside an output: `clip.webm` → `clip.webm.json`, PNG folder `f/` → `f.json`."""
    output = Path(output)
    return output.with_name(output.name + ".json")


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, paths as strings) for hashing."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_canonical_default
    )


def _canonical_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, set, frozenset)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable; convert it before building a manifest")


def device_type(device: str) -> str:
    """`cuda:1` → `cuda`: which GPU of a kind renders does not change the pixels."""
    return str(device).split(":", 1)[0]


def render_key(
    *, item: BatchItem, seed: int, params: dict[str, Any], sources: dict[str, Any], device: str, dtype: str
) -> str:
    """The sha256 of everything that determines an item's pixels; equal keys mean an equal render."""
    image_sha256 = None
    if item.image is not None and item.image.is_file():
        image_sha256 = file_sha256(item.image)  # the image's content matters, not where it lives
    determinants = {
        "prompt": item.prompt,
        "negative_prompt": item.negative_prompt,
        "image_sha256": image_sha256,
        "params": params,
        "seed": seed,
        "sources": sources,
        "dtype": str(dtype),
        "device_type": device_type(device),
        "layeranim_version": __version__,
    }
    return hashlib.sha256(canonical_json(determinants).encode("utf-8")).hexdigest()


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape a render (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "diffusers", "transformers", "av", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_manifest(
    *,
    item: BatchItem,
    seed: int,
    params: dict[str, Any],
    sources: dict[str, Any],
    device: str,
    dtype: str,
    timings: dict[str, float],
    output: Path,
) -> dict[str, Any]:
    """The JSON sidecar of one render: enough to reproduce it exactly, plus its `render_key`.

    `params` are the render's settings (steps, guidance, size, frames, fps, format, …); `sources` the model
    weights with revisions or file hashes; `timings` seconds per stage (e.g. {"load": …, "image": …}).
    """
    key = render_key(item=item, seed=seed, params=params, sources=sources, device=device, dtype=dtype)
    manifest: dict[str, Any] = {
        "layeranim_manifest": MANIFEST_SCHEMA,
        "layeranim_version": __version__,
        "render_key": key,
        "output": Path(output).name,
        "item": {
            "index": item.index,
            "source": item.source,
            "prompt": item.prompt,
            "negative_prompt": item.negative_prompt,
            "image": str(item.image) if item.image is not None else None,
        },
        "seed": seed,
        "params": params,
        "sources": sources,
        "device": str(device),
        "dtype": str(dtype),
        "timings": {name: round(float(seconds), 4) for name, seconds in timings.items()},
        "versions": package_versions(),
        "platform": platform.platform(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "note": MANIFEST_NOTE,
    }
    # Fail here, not half-way through writing, if something in it is not JSON.
    canonical_json(manifest)
    return manifest


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write a manifest atomically (temp file beside it, then rename).

    A manifest is layeranim's own sidecar, not a user output: it is always replaced together with its output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=2, ensure_ascii=False, default=_canonical_default) + "\n"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def read_manifest(path: Path) -> dict[str, Any] | None:
    """A manifest's contents, or None when it is missing or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_finished(output: Path, render_key: str) -> bool:
    """Whether `output` exists and its manifest records the same `render_key` (no need to render it again)."""
    output = Path(output)
    if not output.exists():
        return False
    manifest = read_manifest(manifest_path(output))
    return manifest is not None and manifest.get("render_key") == render_key
