"""Checks and sniffing shared by everything that reads: the input path, Pillow's errors, WebP headers."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from layeranim.errors import UsageError, VideoReadError
from layeranim.video_io.formats import PATTERN_RE, is_sequence_path

# What Pillow raises for files it cannot read (a bomb-sized header included).
PIL_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)


def check_input_path(path: str | Path) -> Path:
    """The path to read: an existing file or directory, or a `%d` pattern; refuse missing and empty files."""
    source = Path(path)
    if is_sequence_path(source) and (source.is_dir() or PATTERN_RE.search(source.name)):
        return source
    if not source.exists():
        raise UsageError(f"input {str(path)!r} does not exist; check the path.")
    if source.is_dir():
        return source
    if source.stat().st_size == 0:
        raise VideoReadError(f"input {str(path)!r} is empty (0 bytes); re-export or re-download it.")
    return source


def is_sequence_source(source: Path) -> bool:
    """A PNG-sequence input: a directory, or a `%d` pattern that is not itself a file."""
    return source.is_dir() or (bool(PATTERN_RE.search(source.name)) and not source.is_file())


def read_error(path: Path, exc: BaseException) -> VideoReadError:
    return VideoReadError(
        f"input {str(path)!r} is not a readable image or video ({exc}); check that the file is complete "
        "and in a supported format."
    )


def is_webp(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(12)
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def webp_has_alpha(path: Path) -> bool:
    """Whether a WebP stores alpha: the VP8X alpha flag, or the VP8L header's alpha hint."""
    with open(path, "rb") as handle:
        head = handle.read(30)
    chunk = head[12:16]
    if chunk == b"VP8X":
        return bool(head[20] & 0x10)
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return bool((bits >> 28) & 1)
    return False
