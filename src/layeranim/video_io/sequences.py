"""PNG sequences: a folder of frames (or a `frame_%05d.png` pattern), written atomically, read in order.

The fps of a written sequence travels in each PNG's `layeranim:fps` tEXt chunk; sequences from other
tools read at `DEFAULT_SEQUENCE_FPS`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from layeranim import safety
from layeranim.errors import OutputExistsError, UsageError, VideoReadError
from layeranim.progress import Progress as ProgressCallback
from layeranim.video_io._inputs import PIL_ERRORS, read_error
from layeranim.video_io.atomic import atomic_output, check_directory_writable, check_output_target
from layeranim.video_io.formats import (
    DEFAULT_SEQUENCE_FPS,
    PATTERN_RE,
    SEQUENCE_FILE_PATTERN,
)
from layeranim.video_io.images import pil_has_alpha, read_image

FPS_TEXT_KEY = "layeranim:fps"  # PNG tEXt chunk that carries the fps of a written sequence


def pattern_regex(file_pattern: str) -> re.Pattern[str]:
    """`frame_%05d.png` → a regex matching `frame_00012.png` with the number as group 1."""
    match = PATTERN_RE.search(file_pattern)
    if match is None:
        raise UsageError(f"pattern {file_pattern!r} has no %d placeholder; use e.g. {SEQUENCE_FILE_PATTERN}.")
    head, tail = file_pattern[: match.start()], file_pattern[match.end() :]
    return re.compile(f"^{re.escape(head)}(\\d+){re.escape(tail)}$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------------
# Writing.


_OWN_FRAME = pattern_regex(SEQUENCE_FILE_PATTERN)


def _is_own_frame(relative: str) -> bool:
    """Whether a file in a PNG-sequence folder is named as layeranim names frames (`frame_00012.png`)."""
    return "/" not in relative and _OWN_FRAME.match(relative) is not None


def check_sequence_output(target: Path, overwrite: bool) -> None:
    """Fail before any work if a sequence cannot (or must not) be written at `target`."""
    if not PATTERN_RE.search(target.name):
        check_output_target(target, overwrite, directory=True)
    elif not target.parent.exists():
        check_output_target(target.parent, overwrite, directory=True)
    else:
        check_directory_writable(target.parent)
        name_re = pattern_regex(target.name)
        existing = sum(1 for p in target.parent.iterdir() if name_re.match(p.name))
        if existing and not overwrite:
            raise OutputExistsError(
                f"output {str(target)!r} already has {existing} matching frame(s) in "
                f"{str(target.parent)!r}; pass overwrite=True to replace them, or choose "
                "another pattern."
            )


def _write_sequence_files(
    directory: Path,
    file_pattern: str,
    frames_hwc_uint8: Iterable[np.ndarray],
    fps: float,
    total: int,
    progress: ProgressCallback | None,
) -> list[Path]:
    info = PngImagePlugin.PngInfo()
    info.add_text(FPS_TEXT_KEY, repr(float(fps)))
    written = []
    for index, rgba_hwc_uint8 in enumerate(frames_hwc_uint8):
        path = directory / (file_pattern % index)
        Image.fromarray(np.ascontiguousarray(rgba_hwc_uint8)).save(
            path, format="PNG", pnginfo=info, compress_level=4
        )
        written.append(path)
        if progress is not None:
            progress(index + 1, total)
    return written


def write_sequence(
    target: str | Path,
    frames_hwc_uint8: Iterable[np.ndarray],
    fps: float,
    overwrite: bool,
    total: int,
    progress: ProgressCallback | None,
) -> Path:
    """Write a PNG sequence, frame by frame as they come; returns the directory (or the pattern path)."""
    target_path = Path(str(target).rstrip("/" + os.sep) or ".")
    if not PATTERN_RE.search(target_path.name):
        directory = target_path
        # The folder is replaced only when layeranim wrote everything in it (its owned-marker, or frame
        # files named as layeranim names them, from before markers existed); it is marked as ours.
        with safety.replace_folder_contents(
            directory, overwrite, argument="output", presumed_owned=_is_own_frame
        ) as temp_dir:
            _write_sequence_files(temp_dir, SEQUENCE_FILE_PATTERN, frames_hwc_uint8, fps, total, progress)
        return directory

    directory, file_pattern = target_path.parent, target_path.name
    if not directory.exists():
        with atomic_output(directory, overwrite, directory=True) as temp_dir:
            _write_sequence_files(temp_dir, file_pattern, frames_hwc_uint8, fps, total, progress)
        return target_path
    # The directory exists: write into a temporary directory inside it, then move each frame in.
    check_directory_writable(directory)
    name_re = pattern_regex(file_pattern)
    existing = [p for p in directory.iterdir() if name_re.match(p.name)]
    if existing and not overwrite:
        raise OutputExistsError(
            f"output {str(target_path)!r} already has {len(existing)} matching frame(s) in "
            f"{str(directory)!r}; pass overwrite=True to replace them, or choose another "
            "pattern."
        )
    safety.clean_stale_partials(target_path)  # frames a killed run staged here
    temp_dir = directory / f".{os.getpid()}-{secrets.token_hex(4)}.partial-frames"
    try:
        temp_dir.mkdir()
        written = _write_sequence_files(temp_dir, file_pattern, frames_hwc_uint8, fps, total, progress)
        for stale in existing:
            stale.unlink()
        for path in written:
            os.replace(path, directory / path.name)
    except OSError as exc:
        raise safety.translate_os_error(exc, directory) from exc
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return target_path


# ---------------------------------------------------------------------------------------------------
# Reading and probing: one scan.


def _natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def sequence_files(path: Path) -> list[Path]:
    """The frames of a PNG sequence (a directory, or a `%d` pattern), in numeric order."""
    if PATTERN_RE.search(path.name):
        directory = path.parent if str(path.parent) else Path(".")
        if not directory.is_dir():
            raise UsageError(f"input directory {str(directory)!r} of pattern {str(path)!r} does not exist.")
        name_re = pattern_regex(path.name)
        matched = [(int(m.group(1)), p) for p in directory.iterdir() if (m := name_re.match(p.name))]
        files = [p for _, p in sorted(matched)]
        if not files:
            raise VideoReadError(f"no files in {str(directory)!r} match the pattern {path.name!r}.")
        return files
    files = sorted(
        (p for p in path.iterdir() if p.suffix.lower() == ".png" and p.is_file()), key=_natural_key
    )
    if not files:
        raise VideoReadError(f"directory {str(path)!r} holds no .png frames; give a directory of PNG frames.")
    return files


@dataclass(frozen=True)
class SequenceScan:
    """What one pass over a sequence found: its files, the first frame's facts, and the frames kept."""

    files: list[Path]
    fps: float
    width: int
    height: int
    mode: str  # Pillow mode of the first frame
    has_alpha: bool
    frames: list[np.ndarray]  # the selected frames, decoded (empty when only probing)


def scan_sequence(path: Path, chosen: slice | None, progress: ProgressCallback | None) -> SequenceScan:
    """List the sequence and read its first frame's header; decode the frames `chosen` selects, if any."""
    files = sequence_files(path)
    try:
        with Image.open(files[0]) as image:
            width, height = image.size
            mode = image.mode
            has_alpha = pil_has_alpha(image)
            text = image.info.get(FPS_TEXT_KEY)
    except PIL_ERRORS as exc:
        raise read_error(files[0], exc) from exc
    try:
        fps = float(text) if text else DEFAULT_SEQUENCE_FPS
    except ValueError:
        fps = DEFAULT_SEQUENCE_FPS
    frames = []
    if chosen is not None:
        picked = files[chosen]
        for index, file in enumerate(picked):
            frames.append(read_image(file))
            if progress is not None:
                progress(index + 1, len(picked))
    return SequenceScan(files, fps, width, height, mode, has_alpha, frames)
