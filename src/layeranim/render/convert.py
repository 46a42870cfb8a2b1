"""Converting a transparent clip between formats, keeping its alpha: read, trim, resize, flatten, write.

from layeranim import render

render.convert(render.ConvertRequest("clip.mov", "clip.webm"))  # ProRes 4444 → VP9 alpha
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layeranim import safety
from layeranim.errors import OutputExistsError, UsageError
from layeranim.progress import PhaseProgress as ConvertProgress
from layeranim.render.outputs import Notify, check_html_target, deliver_clip, html_page_path
from layeranim.render.settings import OutputSettings


@dataclass(frozen=True)
class ConvertRequest:
    """`input` (any readable clip, PNG folder or frame pattern) → `output` in the format its extension names.

    Frames `start` up to (not including) `stop`, every `step`-th; `fps` None keeps the clip's rate (divided
    by `step`, so the duration stays). `resize` is (width, height), 0 for one side keeps the aspect ratio
    (alpha-correct Lanczos). `background` (a colour: "#rrggbb", "r,g,b" or a name) flattens to opaque.
    `output_settings` says how to write (format, quality, lossless, alpha mode, loop, preview, overwrite).
    """

    input: Path
    output: Path
    fps: float | None = None
    start: int = 0
    stop: int | None = None
    step: int = 1
    resize: tuple[int, int] | None = None
    background: str | None = None
    output_settings: OutputSettings = field(default_factory=OutputSettings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", Path(self.input))
        object.__setattr__(self, "output", Path(self.output))
        if self.start < 0:
            raise UsageError(f"start={self.start} must be 0 or more.", argument="start")
        if self.step < 1:
            raise UsageError(f"step={self.step} must be at least 1.", argument="step")
        if self.stop is not None and self.stop <= self.start:
            raise UsageError(
                f"stop={self.stop} must be greater than start={self.start}; stop is exclusive.",
                argument="stop",
            )
        if self.fps is not None and not self.fps > 0:
            raise UsageError(f"fps={self.fps} must be a positive number.", argument="fps")
        if self.resize is not None:
            width, height = self.resize
            if width < 0 or height < 0 or (width == 0 and height == 0):
                raise UsageError(
                    f"resize={self.resize!r} is not (width, height); e.g. (512, 512), or (512, 0) to keep "
                    "the aspect ratio.",
                    argument="resize",
                )
            # The hard limit per side, before any file is read (the memory estimate follows the probe).
            safety.check_image_size(width, height, available=2**62)


@dataclass
class ConvertOutcome:
    """What a conversion wrote."""

    info: Any  # video_io's VideoInfo of the written clip (with a target: of its main file)
    format_name: str  # the format table's name, e.g. "mov-xq"
    preview: Path | None = None
    target: str | None = None
    delivered: list[Path] = field(default_factory=list)  # every file the target wrote
    html: Path | None = None  # the player page of an mp4-stacked output

    def paths(self) -> list[Path]:
        """The files written: the clip (or every file of its target), then the page and the preview."""
        clips = self.delivered or [Path(self.info.path)]
        return clips + [path for path in (self.html, self.preview) if path is not None]

    def to_json(self) -> dict[str, Any]:
        info = self.info
        return {
            "output": str(info.path),
            "format": info.format,
            "codec": info.codec,
            "pix_fmt": info.pix_fmt,
            "frames": info.frames,
            "fps": info.fps,
            "width": info.width,
            "height": info.height,
            "has_alpha": info.has_alpha,
            "preview": str(self.preview) if self.preview is not None else None,
            **(
                {"target": self.target, "delivered": [str(path) for path in self.delivered]}
                if self.target is not None
                else {}
            ),
            **({"html": str(self.html)} if self.html is not None else {}),
        }


def target_size(size: tuple[int, int], height: int, width: int) -> tuple[int, int]:
    """(width, height) with a 0 side filled in from the aspect ratio of a `height` × `width` clip."""
    new_width, new_height = size
    if new_width == 0:
        new_width = max(1, round(width * new_height / height))
    if new_height == 0:
        new_height = max(1, round(height * new_width / width))
    return new_width, new_height


def convert(
    request: ConvertRequest, *, progress: ConvertProgress | None = None, notify: Notify | None = None
) -> ConvertOutcome:
    """Convert `request.input` to `request.output`, refusing outputs that would drop alpha.

    With `request.output_settings.target`, `request.output` is a base name and the target's files are
    written beside it (`layeranim.delivery.deliver`).
    """
    from layeranim import alpha as alpha_ops
    from layeranim import video_io

    settings = request.output_settings
    # 1. Check every argument and the output before decoding anything.
    background_rgb = alpha_ops.parse_color(request.background) if request.background is not None else None
    if request.output.parent.is_dir():  # a missing folder is check_output's to report
        safety.check_writable_dir(request.output.parent)
    spec = None
    if settings.target is not None:
        from layeranim.delivery import check_delivery

        planned = check_delivery(
            settings.target, request.output, overwrite=settings.overwrite, video_format=settings.format
        )
        main = planned[0][1]  # the preview goes beside the target's first file
    else:
        spec = video_io.check_output(
            request.output,
            format=settings.format,
            overwrite=settings.overwrite,
            codec=settings.codec,
            dither=settings.dither,
            alpha_threshold=settings.alpha_threshold,
        )
        if settings.html:
            check_html_target(request.output, spec.name, overwrite=settings.overwrite)
        main = request.output
    if settings.preview:
        preview_target = video_io.preview_path(main)
        if preview_target.exists() and not settings.overwrite:
            raise OutputExistsError(
                f"preview {str(preview_target)!r} already exists; pass overwrite=True to replace it.",
                argument="overwrite",
            )
    source_info = video_io.probe(request.input)
    if request.resize is not None:  # frames × new size must fit in memory, checked before decoding
        frames = len(range(request.start, request.stop or source_info.frames, request.step))
        new_width, new_height = target_size(request.resize, source_info.height, source_info.width)
        safety.check_image_size(new_width, new_height, max(frames, 1))

    # 2. Read the frames.
    clip = video_io.read_video(
        request.input,
        start=request.start,
        stop=request.stop,
        step=request.step,
        progress=_phase(progress, "read"),
    )
    rgba_fhwc_uint8 = clip.rgba_fhwc_uint8
    if not source_info.has_alpha and background_rgb is None and notify is not None:
        notify(f"note: {request.input} stores no alpha; the output will be opaque.")

    # 3. Transform: resize (premultiplied, so edges stay clean), then flatten.
    if request.resize is not None:
        height, width = rgba_fhwc_uint8.shape[1:3]
        new_width, new_height = target_size(request.resize, height, width)
        rgba_fhwc_uint8 = alpha_ops.resize_rgba_frames(rgba_fhwc_uint8, new_width, new_height)
    if background_rgb is not None:
        rgba_fhwc_uint8 = alpha_ops.flatten_onto_color(rgba_fhwc_uint8, background_rgb)
    out_fps = request.fps if request.fps is not None else clip.fps
    if request.step > 1 and request.fps is None:
        out_fps = clip.fps / request.step  # keep the clip's duration when dropping frames

    # 4. Write (to a temporary name, renamed when complete): the clip or the target's files, then the
    #    player page and the preview.
    delivered: list[Path] = []
    if spec is None:
        info, written = deliver_clip(
            request.output, rgba_fhwc_uint8, out_fps, settings, overwrite=settings.overwrite
        )
        delivered = [item.path for item in written]
        format_name = info.format
    else:
        info = video_io.write_video(
            request.output,
            rgba_fhwc_uint8,
            out_fps,
            format=spec.name,
            quality=settings.quality,
            lossless=settings.lossless,
            alpha_mode=settings.alpha_mode,  # type: ignore[arg-type]
            loop=settings.loop,
            overwrite=settings.overwrite,
            progress=_phase(progress, "write"),
            codec=settings.codec,
            dither=settings.dither,
            alpha_threshold=settings.alpha_threshold,
        )
        format_name = spec.name
    html = None
    if settings.html:
        from layeranim.delivery import write_stacked_html

        html = write_stacked_html(info.path, html_page_path(info.path), overwrite=settings.overwrite)
    preview = None
    if settings.preview:
        preview = video_io.write_preview(main, rgba_fhwc_uint8, out_fps, overwrite=settings.overwrite)
    return ConvertOutcome(info, format_name, preview, settings.target, delivered, html)


def _phase(progress: ConvertProgress | None, phase: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(phase, done, total)
