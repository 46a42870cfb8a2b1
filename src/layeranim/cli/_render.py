"""What the generating commands (`image`, `animate`, `generate`) share: a session, seeds, progress."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from layeranim.cli._common import console, note, progress_enabled
from layeranim.errors import UsageError

FastDecodeOpt = Annotated[
    bool,
    typer.Option(
        "--fast-decode",
        help="Decode alpha with one pass of the transparency decoder instead of its 8-way flip/rotate "
        "augmentation (8× cheaper, slightly rougher edges).",
    ),
]
SchedulerOpt = Annotated[
    str, typer.Option("--scheduler", help="Sampler: euler_a (default), ddim or dpmpp_2m.")
]
FramesOpt = Annotated[
    int,
    typer.Option("--frames", help="Frames to generate (2 up to the motion module's window, 32).", min=2),
]
VideoFpsOpt = Annotated[float, typer.Option("--fps", help="Frames per second of the video.", min=0.001)]
IfaWeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--ifa-weights",
        help="Trained Inter-Frame Attention weights (from `layeranim train`). Without them the paper's "
        "motion-module baseline runs.",
        exists=False,
    ),
]
OffloadOpt = Annotated[
    str,
    typer.Option(
        "--offload",
        help="Fit smaller GPUs: 'model' keeps each model on the CPU until it runs (little slower), "
        "'sequential' streams weights layer by layer (least memory, much slower). Default none.",
    ),
]
DecodeChunkOpt = Annotated[
    int, typer.Option("--decode-chunk-size", help="Frames decoded at once (lower it to save memory).", min=1)
]


def resolve_seed(seed: int | None) -> int:
    """The run's seed: the given one, or a fresh random one (reported in the output)."""
    if seed is None:
        return secrets.randbelow(2**32)
    if not 0 <= seed < 2**63:
        raise UsageError(f"--seed {seed} is out of range; use 0 … 2**63-1.")
    return seed


def check_ifa_weights(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        raise UsageError(
            f"--ifa-weights {str(path)!r} is not a file; give the ifa.safetensors `layeranim train` wrote."
        )
    return path


def latent_sidecar_path(image_path: Path) -> Path:
    """`teapot.png` → `teapot.latent.safetensors`: where `image --save-latent` puts the adjusted latent."""
    return image_path.with_name(f"{image_path.stem}.latent.safetensors")


@contextmanager
def stage_progress(quiet: bool) -> Iterator[Callable[[str, str, int, int], None]]:
    """One bar per stage and phase on stderr: `progress(stage, phase, done, total)`."""
    if not progress_enabled(quiet):
        yield lambda stage, phase, done, total: None
        return
    with Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks: dict[tuple[str, str], TaskID] = {}

        def update(stage: str, phase: str, done: int, total: int) -> None:
            key = (stage, phase)
            if key not in tasks:
                tasks[key] = progress.add_task(f"{stage}: {phase}", total=total)
            progress.update(tasks[key], completed=done, total=total)

        yield update


def write_clip(
    output: Path, video: Any, fps: float, settings: RenderSettings, *, overwrite: bool, quiet: bool
) -> tuple[dict[str, Any], float]:
    """Write stage two's frames (and the preview) with the run's settings: (what was written, seconds)."""
    from layeranim.video_io import write_preview, write_video

    start = time.perf_counter()
    info = write_video(
        output,
        video.frames_fhwc_uint8,
        fps,
        format=settings.format,
        quality=settings.quality,
        lossless=settings.lossless,
        alpha_mode=settings.alpha_mode,  # type: ignore[arg-type]
        loop=settings.loop,
        overwrite=overwrite,
    )
    result: dict[str, Any] = {
        "output": str(info.path),
        "frames": info.frames,
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "format": info.format,
        "codec": info.codec,
        "alpha": info.has_alpha,
        "middle_frame": video.middle_index,
    }
    if settings.preview:
        result["preview"] = str(write_preview(output, video.frames_fhwc_uint8, fps, overwrite=overwrite))
    if not info.has_alpha:
        note("warning: the written file stores no alpha channel.", quiet)
    return result, time.perf_counter() - start


def check_preview_target(output: Path, preview: bool, overwrite: bool) -> None:
    from layeranim.errors import OutputExistsError
    from layeranim.video_io import preview_path

    if preview and preview_path(output).exists() and not overwrite:
        raise OutputExistsError(
            f"preview {str(preview_path(output))!r} exists; pass --overwrite to replace it."
        )


def quiet_third_party_logs() -> None:
    """diffusers/transformers print notices through their own handlers; keep them off our users' stderr."""
    from layeranim.cli._common import debug_enabled

    if debug_enabled():
        return
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


def make_parent_dir(output: Path) -> None:
    """Generating commands create the output's folder (renders/…) as asset pipelines expect."""
    from layeranim.errors import LayerAnimError

    folder = output.parent  # a PNG-sequence folder itself is made by the writer (atomically)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LayerAnimError(f"cannot create the output folder {str(folder)!r}: {exc.strerror}.") from exc


@dataclass(frozen=True)
class RenderSettings:
    """The settings every item of a run shares (`image_*` only matter to `generate`)."""

    scheduler: str
    steps: int
    guidance: float
    image_steps: int | None
    image_guidance: float | None
    width: int | None
    height: int | None
    tta: bool
    decode_chunk_size: int
    format: str | None
    quality: int | None
    lossless: bool | None
    alpha_mode: str
    loop: int
    preview: bool

    def params(self, frames: int, fps: float) -> dict[str, Any]:
        """Everything that shapes an item's pixels and file (for manifests and render keys)."""
        return {**asdict(self), "frames": frames, "fps": fps}


def build_session(
    *,
    device: str,
    dtype: str,
    scheduler: str,
    offload: str,
    ifa_weights: Path | None = None,
    will_animate: bool = False,
    image_stage: bool = True,
    **weights: str | None,
) -> Any:
    """The run's `RenderSession` from the shared options; `weights` are model_spec_from_options' keywords."""
    from layeranim.cli._model_options import model_spec_from_options
    from layeranim.devices import select_device, select_dtype
    from layeranim.session import RenderSession

    checked_ifa = check_ifa_weights(ifa_weights)
    torch_device = select_device(device)
    torch_dtype = select_dtype(torch_device, dtype)
    return RenderSession(
        model_spec_from_options(**weights),  # type: ignore[arg-type]
        torch_device,
        torch_dtype,
        scheduler=scheduler,
        ifa_weights=checked_ifa,
        offload=offload,
        will_animate=will_animate,
        image_stage=image_stage,
    )
