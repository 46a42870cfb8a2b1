"""What a render writes: the clip (atomically, through `video_io`), its preview, the latent sidecar of a
stage-one image, and the manifest with provenance. Nothing is replaced without `overwrite=True`."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from layeranim import safety
from layeranim._version import __version__
from layeranim.errors import OutputExistsError, UsageError
from layeranim.render.batch import BatchItem, build_manifest, manifest_path, write_manifest
from layeranim.render.settings import OutputSettings

if TYPE_CHECKING:
    from layeranim.render.session import RenderSession

logger = logging.getLogger(__name__)

LATENT_FORMAT = "layeranim.adjusted_latent.v1"
LATENT_SUFFIX = ".latent.safetensors"
IMAGE_SUFFIXES = (".png", ".webp")

Notify = Callable[[str], None]
"""notify(message): a human note (which input was used, a missing alpha channel …); silent by default."""


def rgba_digest(rgba_hwc_uint8: np.ndarray) -> str:
    """sha256 of an image's RGBA pixels and shape: ties a latent sidecar to the image it decodes to."""
    array = np.ascontiguousarray(rgba_hwc_uint8)
    return hashlib.sha256(f"{array.shape}".encode() + array.tobytes()).hexdigest()


def latent_sidecar_path(image_path: Path) -> Path:
    """`teapot.png` → `teapot.latent.safetensors`: where an image's adjusted latent is kept."""
    image_path = Path(image_path)
    return image_path.with_name(f"{image_path.stem}{LATENT_SUFFIX}")


def save_latent(path: Path, latent_b4hw: Any, metadata: dict[str, Any], *, overwrite: bool = True) -> Path:
    """Write one adjusted latent (1, 4, h, w) in the UNet's space as a safetensors sidecar, atomically.

    `metadata` values are stored as strings (non-strings as JSON); `image_sha256` (see `rgba_digest`)
    ties the sidecar to its image, so an animate request only uses it for that exact image.
    """
    from safetensors.torch import save_file

    from layeranim.video_io import atomic_output

    if latent_b4hw.ndim != 4 or latent_b4hw.shape[0] != 1:
        raise UsageError(
            f"latent_b4hw has shape {tuple(latent_b4hw.shape)}; save_latent takes one latent (1, c, h, w).",
            argument="latent_b4hw",
        )
    meta = {"format": LATENT_FORMAT, "layeranim_version": __version__}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        save_file({"latent": latent_b4hw.detach().float().cpu().contiguous()}, str(tmp), metadata=meta)
    return path


def make_parent_dir(output: Path) -> None:
    """Create the output's folder (renders/…), as asset pipelines expect."""
    folder = Path(output).parent  # a PNG-sequence folder itself is made by the writer (atomically)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise safety.translate_os_error(exc, folder, action="create the output folder") from exc
    # Read-only mounts, permissions and full disks show up now, before any model loads.
    safety.check_writable_dir(folder, argument="output")


def check_clip_targets(output: Path, settings: OutputSettings) -> Path:
    """Refuse, before any model loads, a clip whose file, preview or manifest exists (without overwrite).

    With `settings.target`, `output` is the delivery's base name and every file of the target is
    checked. Returns the main file: `output`, or the target's first file (the manifest and the preview
    go beside it).
    """
    from layeranim.video_io import check_output, preview_path

    make_parent_dir(output)
    if settings.target is not None:
        from layeranim.delivery import check_delivery

        planned = check_delivery(
            settings.target, output, overwrite=settings.overwrite, video_format=settings.format
        )
        main = planned[0][1]
    else:
        spec = check_output(
            output,
            format=settings.format,
            overwrite=settings.overwrite,
            codec=settings.codec,
            dither=settings.dither,
            alpha_threshold=settings.alpha_threshold,
        )
        if settings.html:
            check_html_target(output, spec.name, overwrite=settings.overwrite)
        main = output
    if settings.preview and preview_path(main).exists() and not settings.overwrite:
        raise OutputExistsError(
            f"preview {str(preview_path(main))!r} exists; pass overwrite=True to replace it.",
            argument="overwrite",
        )
    if settings.manifest and manifest_path(main).exists() and not settings.overwrite:
        raise OutputExistsError(
            f"manifest {str(manifest_path(main))!r} exists; pass overwrite=True to replace it.",
            argument="overwrite",
        )
    return main


def html_page_path(output: Path) -> Path:
    """Where `html=True` writes the player page of an mp4-stacked output: `clip.mp4` → `clip.html`."""
    return Path(output).with_suffix(".html")


def check_html_target(output: Path, format_name: str, *, overwrite: bool) -> None:
    """`html=True` needs an mp4-stacked output, and its page must not exist (without overwrite)."""
    if format_name != "mp4-stacked":
        raise UsageError(
            f"html=True writes a player page for an mp4-stacked output, and {str(output)!r} is written as "
            f"{format_name}; pass format='mp4-stacked', or drop html=True.",
            argument="html",
        )
    page = html_page_path(output)
    if page.exists() and not overwrite:
        raise OutputExistsError(
            f"page {str(page)!r} exists; pass overwrite=True to replace it.", argument="overwrite"
        )


def deliver_clip(
    output: Path, frames_fhwc_uint8: np.ndarray, fps: float, settings: OutputSettings, *, overwrite: bool
) -> tuple[Any, list[Any]]:
    """Write `settings.target`'s files named after base `output`: (info on the main file, what was written).

    The info is `video_io.probe` of the main video, or for a target whose main output is a PNG folder or
    a sprite sheet, the same fields filled in from the frames.
    """
    from layeranim import video_io
    from layeranim.delivery import deliver

    assert settings.target is not None  # callers check
    delivered = deliver(
        frames_fhwc_uint8, settings.target, output, fps, overwrite=overwrite, video_format=settings.format
    )
    main = delivered[0]
    if main.kind == "video":
        return video_io.probe(main.path), delivered
    frames, height, width = frames_fhwc_uint8.shape[:3]
    info = video_io.VideoInfo(
        path=main.path,
        format=main.format or main.kind,
        codec="png",
        pix_fmt="rgba",
        frames=int(frames),
        fps=float(fps),
        width=int(width),
        height=int(height),
        has_alpha=True,
    )
    return info, delivered


def check_image_target(path: Path, *, name: str, overwrite: bool) -> None:
    """An RGBA image output (`output` of an image request, `save_image`): a .png/.webp name, not there yet."""
    if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        from layeranim.errors import UnsupportedFormatError

        raise UnsupportedFormatError(
            f"{name}={str(path)!r}: images are written as {' or '.join(IMAGE_SUFFIXES)}; for a video use "
            "a generate request.",
            argument=name,
        )
    if Path(path).exists() and not overwrite:
        raise OutputExistsError(
            f"{name}={str(path)!r} exists; pass overwrite=True to replace it.", argument="overwrite"
        )


FrameSource = np.ndarray | Iterable[np.ndarray]
"""A clip for `write_clip`: one (f, h, w, 4) uint8 straight-RGBA array, or chunks of one in frame order."""


def _chunks(frames: FrameSource) -> Iterator[np.ndarray]:
    if isinstance(frames, np.ndarray):
        yield frames
    else:
        yield from frames


def write_clip(
    output: Path,
    frames: FrameSource,
    fps: float,
    settings: OutputSettings,
    *,
    overwrite: bool,
    notify: Notify | None = None,
) -> dict[str, Any]:
    """Write a clip (and its preview) with the run's output settings; returns what was written.

    `frames` is one array or an iterable of chunks (a streamed decode): chunks are measured as they pass
    (the seam score: last→first frame difference over the median step, see
    `pipelines.context_windows.seam_score`) and handed to the writer, which encodes them as they arrive, so
    the clip is never held whole (except by GIF's one palette, by a delivery target, whose sheets and
    engine files need every frame, and by a preview, which writes the frames a second time).

    With `settings.target`, `output` is a base name and the target's files are written (`delivered`);
    with `settings.html`, the player page of the mp4-stacked output too (`html`).
    """
    from layeranim.pipelines.context_windows import SeamMeter
    from layeranim.video_io import write_preview, write_video

    meter = SeamMeter()
    held = settings.preview or settings.target is not None
    kept: list[np.ndarray] | None = [] if held else None

    def measured(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for chunk in chunks:
            meter.update(chunk)
            if kept is not None:
                kept.append(chunk)
            yield chunk

    stream = measured(_chunks(frames))
    delivered: list[Any] = []
    if settings.target is not None:
        frames_fhwc_uint8 = np.concatenate(list(stream))
        info, delivered = deliver_clip(output, frames_fhwc_uint8, fps, settings, overwrite=overwrite)
        output = info.path  # the preview goes beside the target's main file
    else:
        info = write_video(
            output,
            stream,  # streamed: the writer encodes chunks as they come
            fps,
            format=settings.format,
            quality=settings.quality,
            lossless=settings.lossless,
            alpha_mode=settings.alpha_mode,  # type: ignore[arg-type]
            loop=settings.loop,
            overwrite=overwrite,
            codec=settings.codec,
            dither=settings.dither,
            alpha_threshold=settings.alpha_threshold,
        )
    seam = meter.value
    written: dict[str, Any] = {
        "output": str(info.path),
        "frames": info.frames,
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "format": info.format,
        "codec": info.codec,
        "alpha": info.has_alpha,
        "seam_score": round(seam, 4) if math.isfinite(seam) else None,
    }
    if delivered:
        written["target"] = settings.target
        written["delivered"] = [str(item.path) for item in delivered]
    if settings.html:
        from layeranim.delivery import write_stacked_html

        page = write_stacked_html(info.path, html_page_path(info.path), overwrite=overwrite)
        written["html"] = str(page)
    if settings.preview and kept is not None:
        written["preview"] = str(write_preview(output, np.concatenate(kept), fps, overwrite=overwrite))
    if not info.has_alpha and notify is not None:
        notify("warning: the written file stores no alpha channel.")
    return written


def spec_sources(
    spec: Any,
    ifa_weights: Path | None,
    *,
    motion_loras: Sequence[Any] = (),
    speed: str | None = None,
) -> dict[str, Any]:
    """What the weights are, without loading them: the spec's references (defaults by name) + IFA hash.

    Community add-ons and a speed preset enter only when used (so earlier manifests' keys still match):
    each LoRA, MotionLoRA and embedding with its resolved source and sha256, and the preset's settings.
    A change in any of them changes the render key, so a batch re-renders.
    """
    from layeranim.weights import COMPONENTS, default_source, file_sha256

    sources: dict[str, Any] = {"family": spec.family, "preset": spec.preset}
    for component in COMPONENTS:
        ref = getattr(spec, component)
        if ref is None:
            default = default_source(spec.family, component)
            ref = f"{default.repo_id}@{default.revision}" + (
                f"/{default.filename}" if default.filename else ""
            )
        sources[component] = str(ref)
    if ifa_weights is not None:
        sources["ifa_weights"] = {"path": str(ifa_weights), "sha256": file_sha256(ifa_weights)}
    if spec.loras or spec.embeddings or motion_loras:
        from layeranim.community import provenance

        for key, refs, kind in (
            ("loras", spec.loras, "lora"),
            ("motion_loras", motion_loras, "motion_lora"),
            ("embeddings", spec.embeddings, "lora"),
        ):
            if refs:
                sources[key] = provenance(refs, lora_kind=kind)
    if speed is not None:
        from layeranim.speed import get_speed_preset

        sources["speed"] = get_speed_preset(speed).settings()
    return sources


def session_sources(session: RenderSession) -> dict[str, Any]:
    """`spec_sources` of everything a session renders with (its spec, IFA weights, MotionLoRAs, preset)."""
    return spec_sources(
        session.spec, session.ifa_weights, motion_loras=session.motion_loras, speed=session.speed
    )


def session_manifest(
    session: RenderSession,
    *,
    item: BatchItem,
    seed: int,
    params: dict[str, Any],
    timings: dict[str, float],
    output: Path,
    sources: dict[str, Any] | None = None,
    clip: dict[str, Any] | None = None,
    schedulers: dict[str, dict[str, Any]] | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """The manifest of one render from `session`: parameters, seed, sources, versions, timings, `clip`:
    what the rendered clip turned out to be (frames, the still's `base_index`, `seamless`, `seam_score`),
    and `schedulers`: per stage that ran, its sampler, beta schedule and timestep spacing.

    `device` replaces the session's device in the manifest and its render key (a launcher's per-process
    `cuda:N` is recorded as `cuda`).
    """
    from layeranim.render.devices import dtype_name

    manifest = build_manifest(
        item=item,
        seed=seed,
        params=params,
        sources=sources if sources is not None else session_sources(session),
        device=device if device is not None else str(session.device),
        dtype=dtype_name(session.dtype),
        timings={**session.load_seconds, **timings},
        output=output,
    )
    manifest["resolved_sources"] = session.sources
    if clip is not None:
        manifest["clip"] = clip
    if schedulers:
        manifest["schedulers"] = schedulers
    return manifest


def write_single_manifest(
    session: RenderSession,
    *,
    output: Path,
    prompt: str,
    negative_prompt: str,
    seed: int,
    image: Path | None,
    params: dict[str, Any],
    timings: dict[str, float],
    clip: dict[str, Any] | None = None,
    schedulers: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """The manifest of a one-off render: the same sidecar a batch writes, for an item of one."""
    item = BatchItem(index=0, prompt=prompt, negative_prompt=negative_prompt, image=image)
    manifest = session_manifest(
        session, item=item, seed=seed, params=params, timings=timings, output=output, clip=clip,
        schedulers=schedulers,
    )  # fmt: skip
    path = manifest_path(output)
    write_manifest(path, manifest)
    return path
