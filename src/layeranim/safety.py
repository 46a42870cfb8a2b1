"""Guards that keep layeranim from losing the user's files, escaping its output folder, or running the
machine out of memory, and that turn operating-system failures into one plain sentence.

Every function here is plain library code: it raises `UsageError` (the input is wrong, exit 2) or
`LayerAnimError` (the operation failed, exit 1) with a message that names the argument, the value and the
fix, and it never prints. The CLI's error translator shows the message as one `Error: …` line.

- Owned folders: a folder layeranim writes carries a hidden `.layeranim-owned.json` listing what it wrote;
  `--overwrite` replaces such a folder only when everything in it is listed (`check_replaceable`,
  `replace_folder_contents`, `mark_owned`).
- Containment: `resolve_inside` keeps a batch or scene item's output inside its output folder.
- Templates: `validate_template` / `format_template` accept only documented fields and zero-padded integers.
- Limits: `check_render_size` / `check_image_size` refuse sizes that cannot fit before anything allocates.
- OS errors: `translate_os_error` (and `os_errors`) turn EACCES, EROFS, ENOSPC, … into one line;
  `is_out_of_memory` / `oom_hint` do the same for memory.
- Stale temporaries: `partial_name` (a temp name carrying the writer's PID) and `clean_stale_partials`.
- Text: `decode_prompt_arg` refuses text that was not valid UTF-8.
- Checkpoints: `unsafe_checkpoint_error` explains a refused pickle without suggesting `weights_only=False`.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import shutil
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from layeranim.errors import LayerAnimError, OutputExistsError, UsageError, WeightsError

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------
# Owned folders: never delete what layeranim did not write.

OWNED_MARKER = ".layeranim-owned.json"
_MARKER_FORMAT = "layeranim-owned/1"


def _relative_entries(folder: Path) -> set[str]:
    """Every file and folder below `folder` as POSIX paths relative to it (symlinks are not followed)."""
    entries: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=False):
        base = Path(root).relative_to(folder)
        for name in (*dirs, *files):
            entries.add((base / name).as_posix())
    entries.discard(OWNED_MARKER)
    return entries


def owned_entries(folder: str | Path) -> set[str]:
    """The paths (relative, POSIX) that `folder`'s marker says layeranim wrote; empty without a marker."""
    marker = Path(folder) / OWNED_MARKER
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(data, dict) or data.get("format") != _MARKER_FORMAT:
        return set()
    files = data.get("files")
    if not isinstance(files, list):
        return set()
    return {entry for entry in files if isinstance(entry, str)}


def mark_owned(folder: str | Path, entries: Iterable[str | Path] | None = None) -> Path:
    """Record in `folder`'s marker that layeranim wrote `entries` (paths inside it); returns the marker.

    `entries=None` records everything now in the folder: call it on a staging folder layeranim just
    filled, never on a folder the user may have put files in. Earlier entries are kept.
    """
    folder = Path(folder)
    if entries is None:
        new = _relative_entries(folder)
    else:
        new = set()
        for entry in entries:
            path = Path(entry)
            relative = path.relative_to(folder) if path.is_absolute() else path
            new.add(relative.as_posix())
            new.update(parent.as_posix() for parent in relative.parents if parent != Path("."))
    owned = owned_entries(folder) | new
    marker = folder / OWNED_MARKER
    temp = folder / f".{OWNED_MARKER}.{os.getpid()}-{secrets.token_hex(4)}.partial"
    temp.write_text(json.dumps({"format": _MARKER_FORMAT, "files": sorted(owned)}, indent=1) + "\n")
    os.replace(temp, marker)
    return marker


def foreign_entries(folder: str | Path, presumed_owned: Callable[[str], bool] | None = None) -> list[str]:
    """What is in `folder` that layeranim did not write (sorted; stale layeranim temporaries excluded).

    `presumed_owned(relative_path)` may vouch for entries that layeranim wrote before it kept markers
    (e.g. `frame_00012.png` in a PNG-sequence folder), so older outputs stay replaceable.
    """
    folder = Path(folder)
    owned = owned_entries(folder)
    foreign = []
    for entry in _relative_entries(folder):
        if entry in owned or _is_layeranim_temp(Path(entry).name):
            continue
        if presumed_owned is not None and presumed_owned(entry):
            continue
        # A folder counts as foreign only through the foreign files inside it (or when it is empty).
        path = folder / entry
        if path.is_dir() and not path.is_symlink() and any(path.iterdir()):
            continue
        foreign.append(entry)
    return sorted(foreign)


def check_replaceable(
    folder: str | Path, *, argument: str = "output", presumed_owned: Callable[[str], bool] | None = None
) -> None:
    """Refuse (UsageError) to replace `folder` when it holds anything layeranim did not write.

    The message names the folder and a few foreign files and suggests another folder; it does not suggest
    `--overwrite`, which would not help.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir():
        raise UsageError(
            f"{argument} {str(folder)!r} is not a folder layeranim wrote "
            f"({'a link' if folder.is_symlink() else 'a file'}); choose a new folder name."
        )
    foreign = foreign_entries(folder, presumed_owned)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UsageError(
            f"will not replace {argument} folder {str(folder)!r}: it holds files layeranim did not write "
            f"({shown}); choose a new or empty folder, or move those files out first."
        )


@contextmanager
def replace_folder_contents(
    folder: str | Path,
    overwrite: bool = False,
    *,
    argument: str = "output",
    presumed_owned: Callable[[str], bool] | None = None,
) -> Iterator[Path]:
    """Yield a hidden staging folder beside `folder`; on success it becomes `folder`, marked as owned.

    An existing `folder` is replaced only with `overwrite=True` and only when everything in it was written
    by layeranim (`check_replaceable`), checked before the block and again just before the old folder is
    deleted. On any exception (KeyboardInterrupt included) the staging folder is removed and `folder` is
    untouched. `presumed_owned` is passed to `check_replaceable`.
    """
    target = Path(folder)
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(
            f"{argument} folder {str(target)!r}: its parent {str(parent)!r} does not exist; create it first."
        )
    exists = target.exists() or target.is_symlink()
    if exists:
        check_replaceable(target, argument=argument, presumed_owned=presumed_owned)
        if not overwrite:
            raise OutputExistsError(
                f"{argument} folder {str(target)!r} already exists; pass overwrite=True to "
                "replace it, or choose another name."
            )
    clean_stale_partials(target)
    staging = partial_name(target, "")
    try:
        staging.mkdir()
    except OSError as exc:
        raise translate_os_error(exc, parent) from exc
    old: Path | None = None
    try:
        yield staging
        mark_owned(staging)
        if target.exists() or target.is_symlink():
            if not overwrite:
                raise OutputExistsError(
                    f"{argument} folder {str(target)!r} appeared while writing; pass overwrite=True to "
                    "replace it."
                )
            old = parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.old"
            os.replace(target, old)
            if foreign_entries(old, presumed_owned):  # something arrived after the first check
                os.replace(old, target)
                old = None
                check_replaceable(target, argument=argument, presumed_owned=presumed_owned)
            os.replace(staging, target)
            removing, old = old, None
            shutil.rmtree(removing, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not (target.exists() or target.is_symlink()):
            os.replace(old, target)  # put the previous folder back before reporting the failure
        if isinstance(exc, OSError):
            raise translate_os_error(exc, target) from exc
        raise


# ---------------------------------------------------------------------------------------------------
# Containment: batch and scene items write only inside their output folder.


def resolve_inside(
    root: str | Path, relative: str | Path, *, allow_outside: bool = False, item: str = "item"
) -> Path:
    """`root / relative`, refused (UsageError naming `item`) when it would land outside `root`.

    Refused: absolute paths, any `..` component, and paths that leave `root` through a symlink (an existing
    folder link or the file itself). `allow_outside=True` is the explicit opt-in and returns the path as
    given (relative paths still relative to `root`).
    """
    root_path = Path(root)
    rel = Path(relative)
    candidate = root_path / rel  # an absolute `rel` replaces root here, which is what allow_outside means
    if allow_outside:
        return candidate
    hint = "give a name inside the output folder, or pass allow_outside=True to write there"
    if rel.is_absolute() or rel.anchor or str(relative).startswith(("/", "\\")):
        raise UsageError(
            f"{item}: output {str(relative)!r} is an absolute path outside {str(root_path)!r}; {hint}."
        )
    if ".." in rel.parts or ".." in re.split(r"[\\/]", str(relative)):
        raise UsageError(f"{item}: output {str(relative)!r} uses '..' to leave {str(root_path)!r}; {hint}.")
    root_real = Path(os.path.realpath(root_path))
    real = Path(os.path.realpath(candidate))
    if real != root_real and root_real not in real.parents:
        raise UsageError(
            f"{item}: output {str(relative)!r} resolves through a symlink to {str(real)!r}, outside "
            f"{str(root_path)!r}; {hint}."
        )
    return candidate


# ---------------------------------------------------------------------------------------------------
# Output-name templates.

TEMPLATE_FIELDS = ("index", "slug", "seed", "ext")
INTEGER_FIELDS = ("index", "seed")
MAX_PAD_WIDTH = 12
MAX_NAME_BYTES = 255  # one path component, on ext4, APFS, NTFS (UTF-16 units there; bytes are stricter)
_INT_SPEC = re.compile(r"^(?:0(\d{1,3}))?d$")


def _subject(option: str, template: str) -> str:
    """How messages name a template: `-o '{x}'`, or `output='{x}'` for `option='output='`."""
    return f"{option}{template!r}" if option.endswith("=") else f"{option} {template!r}"


def validate_template(
    template: str,
    fields: Iterable[str] = TEMPLATE_FIELDS,
    *,
    option: str = "-o",
    integer_fields: Iterable[str] = INTEGER_FIELDS,
) -> None:
    """Refuse (UsageError) a template with anything but `{field}` or `{int_field:0Nd}` (N ≤ 12).

    No conversions (`!r`), no other format specs (`{slug:>999}`), no attribute or index access
    (`{seed.real}`, `{slug[0]}`), no positional fields (`{}`): a template comes from a batch file or a
    command line and must not be able to make a name of unbounded size.
    """
    allowed = tuple(fields)
    integers = set(integer_fields)
    listing = ", ".join("{" + f + "}" for f in allowed)
    subject = _subject(option, template)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(
            f"{subject} is not a valid template ({exc}); write {{{{ or }}}} for a literal brace."
        ) from exc
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if name not in allowed:
            raise UsageError(f"{subject} uses the unknown field {shown}; the fields are {listing}.")
        if conversion:
            raise UsageError(
                f"{subject}: {shown} has a conversion (!{conversion}); write the plain field {{{name}}}."
            )
        if spec:
            match = _INT_SPEC.match(spec)
            if name not in integers:
                raise UsageError(
                    f"{subject}: {shown}: a format spec does not fit its field; write the plain "
                    f"field {{{name}}} (only integer fields take zero padding, e.g. {{index:03d}})."
                )
            if match is None:
                raise UsageError(
                    f"{subject}: {shown}: the only format spec allowed is zero padding "
                    f"(e.g. {{index:03d}}, {{seed:08d}}); otherwise write the plain field {{{name}}}."
                )
            width = int(match.group(1)) if match.group(1) else 0
            if width > MAX_PAD_WIDTH:
                raise UsageError(f"{subject}: {shown} pads to {width} digits; use at most {MAX_PAD_WIDTH}.")


def check_name_length(path: str | Path, *, option: str = "-o") -> None:
    """Refuse (UsageError) a path with a component longer than 255 bytes, before anything renders."""
    for part in Path(path).parts:
        size = len(os.fsencode(part))
        if size > MAX_NAME_BYTES:
            raise UsageError(
                f"{option}: the name {part[:40]!r}… is {size} bytes long; file systems allow "
                f"{MAX_NAME_BYTES} per name, so shorten the template or the item's output."
            )


def format_template(template: str, values: Mapping[str, Any], *, option: str = "-o") -> str:
    """The name `template` gives for `values`, after `validate_template` and `check_name_length`."""
    validate_template(template, tuple(values), option=option)
    try:
        name = template.format(**values)
    except (ValueError, TypeError) as exc:  # e.g. a slug where an integer spec stands
        raise UsageError(f"{_subject(option, template)}: {exc}; e.g. use {{index:03d}}.") from exc
    check_name_length(name, option=option.rstrip("="))
    return name


# ---------------------------------------------------------------------------------------------------
# Limits before allocation.

MAX_SIDE = 8192  # pixels per side: 8K, already 16× the SD1.5 and 4× the SDXL training size
MAX_FRAMES = 4096
MAX_IMAGE_SIDE = 16384  # convert --resize: no model involved, only frames in memory
VAE_DECODER_CHANNELS = 128  # channels of the SD VAE decoder's last (full-resolution) up block
VAE_LIVE_TENSORS = 3  # input, output and one temporary of a full-resolution conv at the same time


def available_memory() -> int | None:
    """Bytes of memory this process can still use: the system's available memory, capped by a cgroup limit.

    psutil when it is installed (accelerate depends on it), else /proc/meminfo; None when unknown.
    """
    available: int | None = None
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except Exception:  # not installed, or no /proc: fall back
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            available = None
    cgroup = _cgroup_headroom()
    if cgroup is not None:
        available = cgroup if available is None else min(available, cgroup)
    return available


def _cgroup_headroom() -> int | None:
    """Limit minus usage of this process's cgroup (v2, or v1), or None without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        try:
            limit_text = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= 1 << 60:
            return None
        return max(0, int(limit_text) - usage)
    return None


def _gib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB"


def estimate_render_bytes(
    width: int, height: int, frames: int = 1, *, bytes_per_element: int = 4, decode_chunk: int = 4
) -> int:
    """A lower-bound estimate of the memory one render needs beyond the model weights.

    Counts only what must exist at once: the latents (4 channels at 1/8 size, twice for classifier-free
    guidance), the decoded frames as float32 RGBA and as uint8 RGBA, and the VAE decoder's full-resolution
    activations for one decode chunk (128 channels, 3 live tensors). Attention buffers, the UNet and
    allocator overhead come on top, so a render refused here could never have fitted.
    """
    pixels = width * height
    latents = frames * 4 * (pixels // 64) * bytes_per_element * 2
    decoded = frames * pixels * 4 * (4 + 1)  # float32 RGBA + uint8 RGBA
    vae = (
        min(frames, max(decode_chunk, 1))
        * pixels
        * VAE_DECODER_CHANNELS
        * bytes_per_element
        * VAE_LIVE_TENSORS
    )
    return latents + decoded + vae


def check_render_size(
    width: int,
    height: int,
    frames: int = 1,
    *,
    bytes_per_element: int = 4,
    decode_chunk: int = 4,
    available: int | None = None,
    max_side: int = MAX_SIDE,
    max_frames: int = MAX_FRAMES,
) -> None:
    """Refuse (UsageError) a render size over the hard limits or too big for the memory available.

    `available` is the memory of the device that decodes (`torch.cuda.mem_get_info()[0]` on CUDA); by
    default this machine's available RAM (`available_memory()`). Runs in microseconds, before any
    allocation, so 100000×100000 is refused at once instead of meeting the OOM killer.
    """
    for name, value in (("width", width), ("height", height)):
        if value > max_side:
            raise UsageError(
                f"{name} {value} is over the limit of {max_side} pixels per side; render at most "
                f"{max_side} (e.g. {name}=1024) and upscale afterwards."
            )
    if frames > max_frames:
        raise UsageError(
            f"frames {frames} is over the limit of {max_frames}; render fewer frames (e.g. frames=16)."
        )
    needed = estimate_render_bytes(
        width, height, frames, bytes_per_element=bytes_per_element, decode_chunk=decode_chunk
    )
    if available is None:
        available = available_memory()
    if available is not None and needed > available:
        raise UsageError(
            f"a {width}×{height} render of {frames} frame(s) needs at least {_gib(needed)} of memory but "
            f"only {_gib(available)} is available; lower width, height or frames (or decode_chunk_size)."
        )


def check_image_size(
    width: int,
    height: int,
    frames: int = 1,
    *,
    option: str | None = "resize",
    copies: int = 3,
    available: int | None = None,
    max_side: int = MAX_IMAGE_SIDE,
) -> None:
    """Refuse (UsageError) frames of `width`×`height` RGBA over the hard limit or too big for memory.

    For `convert --resize`: the clip is held as uint8 RGBA `copies` times at once (source, resized and the
    encoder's copy), so the estimate is `frames × width × height × 4 × copies` bytes. `option` names the
    argument that set the size (`resize=WxH`); None names `width` and `height` themselves.
    """
    label = f"{option}={width}x{height}" if option else f"width={width}, height={height}"
    for name, value in (("width", width), ("height", height)):
        if value > max_side:
            raise UsageError(
                f"{label}: the {name} is over the limit of {max_side} pixels; choose a smaller size."
            )
    needed = frames * width * height * 4 * copies
    if available is None:
        available = available_memory()
    if available is not None and needed > available:
        raise UsageError(
            f"{option} {width}x{height} for {frames} frame(s) needs about {_gib(needed)} of memory but only "
            f"{_gib(available)} is available; choose a smaller size."
        )


# ---------------------------------------------------------------------------------------------------
# OS errors and out-of-memory as one line.

_OS_REASONS: dict[int, tuple[str, str]] = {
    errno.EACCES: ("permission denied", "fix its permissions or choose another location"),
    errno.EPERM: ("operation not permitted", "fix its permissions or choose another location"),
    errno.EROFS: ("the file system is read-only", "choose a writable location"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose a folder path"),
    errno.ENOSPC: ("no space left on device", "free space or choose another location"),
    errno.EDQUOT: ("disk quota exceeded", "free space or choose another location"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter name"),
    errno.EISDIR: ("it is a folder", "give a file name"),
    errno.ENOENT: ("no such file or folder", "check the path, or create the folder first"),
    errno.EEXIST: ("it already exists", "choose another name"),
    errno.EMFILE: ("too many open files", "raise the open-file limit (ulimit -n)"),
}


def translate_os_error(
    exc: BaseException, path: str | Path | None = None, *, action: str = "write"
) -> LayerAnimError:
    """One-line `LayerAnimError` (exit 1) for an OSError: 'cannot write PATH: no space left on device; …'.

    Also recognises torch.save's disk-full RuntimeError ("enforce fail at inline_container.cc …").
    Unknown errors keep their strerror. Raise the result `from exc`.
    """
    shown = str(path) if path is not None else str(getattr(exc, "filename", None) or "the output")
    code = getattr(exc, "errno", None)
    if code is None and isinstance(exc, RuntimeError) and "inline_container" in str(exc):
        code = errno.ENOSPC if _disk_nearly_full(path) else None
        if code is None:
            return LayerAnimError(
                f"cannot {action} {shown!r}: the write failed part-way (a full disk, or a file-system "
                "error); free space or choose another location."
            )
    if code in _OS_REASONS:
        reason, fix = _OS_REASONS[code]
        return LayerAnimError(f"cannot {action} {shown!r}: {reason}; {fix}.")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return LayerAnimError(f"cannot {action} {shown!r}: {reason}.")


def _disk_nearly_full(path: str | Path | None, threshold: int = 64 << 20) -> bool:
    if path is None:
        return False
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free < threshold
    except OSError:
        return False


@contextmanager
def os_errors(path: str | Path, *, action: str = "write") -> Iterator[None]:
    """Inside the block, an OSError becomes `translate_os_error(exc, path, action=action)`."""
    try:
        yield
    except OSError as exc:
        raise translate_os_error(exc, path, action=action) from exc


def check_writable_dir(folder: str | Path, *, argument: str = "output") -> None:
    """Fail before any work when files cannot be created in `folder`, naming the reason.

    A missing folder or a file in its place is the user's input (UsageError, exit 2). Otherwise a probe
    file is created and removed, so read-only mounts, permissions, quotas and full disks show up with their
    own reason (`translate_os_error`, exit 1) — `os.access` alone cannot tell a read-only mount from a
    permission problem, and says yes to root on both.
    """
    folder = Path(folder)
    if not folder.exists():
        raise UsageError(f"{argument} folder {str(folder)!r} does not exist; create it first.")
    if not folder.is_dir():
        raise UsageError(f"{argument} folder {str(folder)!r} is not a directory; choose another path.")
    probe = partial_name(folder / "write-check", "")
    try:
        with open(probe, "xb"):
            pass
    except OSError as exc:
        raise translate_os_error(exc, folder) from exc
    finally:
        with suppress(OSError):
            probe.unlink()


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError (CUDA), or an MPS/CPU allocator RuntimeError saying so."""
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "failed to allocate" in text or "defaultcpuallocator" in text
    )


def oom_hint(exc: BaseException | None = None, *, device: str | None = None) -> str:
    """The one-line message for an out-of-memory failure, with what to lower (the CLI adds `Error: `)."""
    where = f" on {device}" if device else ""
    hints = ["lower width, height or frames", "lower decode_chunk_size"]
    if device is None or not device.startswith("cpu"):
        hints += ["try offload='model' (or 'sequential')", "use dtype='fp16'"]
    detail = ""
    if exc is not None:
        match = re.search(r"tried to allocate ([\d.]+ [KMGT]iB)", str(exc), re.IGNORECASE)
        if match:
            detail = f" (tried to allocate {match.group(1)})"
        elif isinstance(exc, MemoryError) and str(exc):
            detail = f" ({str(exc).splitlines()[0][:80]})"
    return f"out of memory{where}{detail}; " + ", ".join(hints) + "."


def known_failure(exc: BaseException, *, device: str | None = None) -> LayerAnimError | None:
    """The one-line `LayerAnimError` for an ordinary failure that reached the top, or None.

    For the CLI's error translator, before its "unexpected … report it" branch: file-system errors
    (`translate_os_error`, with the path the OSError carries), out-of-memory (`oom_hint`), torch.save's
    disk-full RuntimeError, and refused pickles (`unsafe_checkpoint_error`). Raise the result `from exc`.
    """
    if is_out_of_memory(exc):
        return LayerAnimError(oom_hint(exc, device=device))
    if is_unsafe_pickle_error(exc):
        return unsafe_checkpoint_error(exc, getattr(exc, "filename", None) or "the checkpoint")
    if isinstance(exc, OSError) and exc.errno is not None:
        # Only these can come from writing alone; anything else may have been a read.
        writing = exc.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT)
        return translate_os_error(exc, exc.filename, action="write" if writing else "use")
    if isinstance(exc, RuntimeError) and "inline_container" in str(exc):
        return translate_os_error(exc, None)
    return None


# ---------------------------------------------------------------------------------------------------
# Stale temporaries of killed runs.

_PARTIAL_TOKEN = r"(?:(?P<pid>\d+)-)?[0-9a-f]{8}"


def partial_name(target: str | Path, suffix: str | None = None) -> Path:
    """A hidden temporary name beside `target` recording the writer's PID: `.clip.4242-1a2b3c4d.partial.webm`.

    `suffix` defaults to the target's (muxers choose their format from it). `clean_stale_partials` removes
    such names once their writer is dead.
    """
    target = Path(target)
    ext = target.suffix if suffix is None else suffix
    stem = target.stem if suffix is None else target.name
    return target.parent / f".{stem}.{os.getpid()}-{secrets.token_hex(4)}.partial{ext}"


def _is_layeranim_temp(name: str) -> bool:
    return name.startswith(".") and (
        re.search(rf"\.{_PARTIAL_TOKEN}\.(partial|old)", name) is not None or name.endswith(".partial-frames")
    )


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return True
    return True


def clean_stale_partials(
    target: str | Path,
    *,
    max_age_s: float = 3600.0,
    now: float | None = None,
    pid_alive: Callable[[int], bool] = _pid_alive,
) -> list[Path]:
    """Remove the temporaries a killed run left beside `target`; returns what was removed.

    Matches `.STEM.TOKEN.partialEXT` (files, from `atomic_output`), `.NAME.TOKEN.partial` and
    `.NAME.TOKEN.old` (folders) for this exact target, and `.TOKEN.partial-frames` (frames staged for a
    PNG-sequence pattern) in its folder, where TOKEN is `PID-xxxxxxxx` (`partial_name`) or
    the older `xxxxxxxx`. One is stale when its PID is not a running process, or, without a PID, when it
    was last modified more than `max_age_s` ago. Live writers' temporaries are never touched.
    """
    target = Path(target)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        return []
    patterns = [
        re.compile(rf"^\.{re.escape(target.stem)}\.{_PARTIAL_TOKEN}\.partial{re.escape(target.suffix)}$"),
        re.compile(rf"^\.{re.escape(target.name)}\.{_PARTIAL_TOKEN}\.(?:partial|old)$"),
        re.compile(rf"^\.{_PARTIAL_TOKEN}\.partial-frames$"),  # frames staged for a `%d` pattern target
    ]
    current = time.time() if now is None else now
    removed = []
    try:
        candidates = list(directory.iterdir())
    except OSError:
        return []
    for path in candidates:
        match = next((m for p in patterns if (m := p.match(path.name))), None)
        if match is None:
            continue
        pid = match.group("pid")
        try:
            age = current - path.lstat().st_mtime
        except OSError:
            continue
        stale = not pid_alive(int(pid)) if pid is not None else age > max_age_s
        if not stale:
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            logger.debug("could not remove stale temporary %s: %s", path, exc)
            continue
        logger.info("removed %s, left by an interrupted run", path)
        removed.append(path)
    return removed


# ---------------------------------------------------------------------------------------------------
# Text inputs.


def decode_prompt_arg(value: str, source: str) -> str:
    """`value` unchanged when it is valid Unicode text; UsageError naming `source` when it is not UTF-8.

    Python hands undecodable command-line bytes over as lone surrogates (`\\udc80`-`\\udcff`,
    surrogateescape); a tokenizer then fails with an unrelated TypeError. `source` says where the text came
    from: 'prompt', 'negative_prompt (-n)', 'prompts.txt line 3'.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = value[exc.start]
        code = ord(char)
        shown = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise UsageError(
            f"{source} is not valid UTF-8 text ({shown} at character {exc.start + 1}); write it in UTF-8 "
            "(set a UTF-8 locale, or save the file as UTF-8)."
        ) from None
    return value


# ---------------------------------------------------------------------------------------------------
# Checkpoints refused by weights_only loading.


def is_unsafe_pickle_error(exc: BaseException) -> bool:
    """Whether `exc` is torch's weights_only refusal of a pickle with globals it will not run."""
    import pickle

    text = str(exc).lower()
    return "weights only load failed" in text or (
        isinstance(exc, pickle.UnpicklingError) and "global" in text
    )


def unsafe_checkpoint_error(
    exc: BaseException, path: str | Path, *, what: str = "checkpoint"
) -> WeightsError:
    """A `WeightsError` for a checkpoint that `torch.load(weights_only=True)` refused, in one line.

    Names the object the pickle wanted to build (e.g. `os.system`) and points at safetensors; never
    repeats torch's advice to pass `weights_only=False`, which would run the file's code.
    """
    text = str(exc)
    found = re.search(r"(?:Unsupported global|GLOBAL)\s*:?\s*(?:GLOBAL\s+)?([\w.]+)", text)
    culprit = f" (it asks to run {found.group(1)})" if found else ""
    return WeightsError(
        f"refused to load {what} {str(path)!r}: it is a pickle holding more than plain tensors{culprit}, "
        "and layeranim never runs code from a checkpoint. Use a .safetensors copy from a source you trust."
    )


__all__ = [
    "MAX_FRAMES",
    "MAX_NAME_BYTES",
    "MAX_SIDE",
    "OWNED_MARKER",
    "TEMPLATE_FIELDS",
    "available_memory",
    "check_image_size",
    "check_name_length",
    "check_render_size",
    "check_replaceable",
    "check_writable_dir",
    "clean_stale_partials",
    "decode_prompt_arg",
    "estimate_render_bytes",
    "foreign_entries",
    "format_template",
    "is_out_of_memory",
    "is_unsafe_pickle_error",
    "known_failure",
    "mark_owned",
    "oom_hint",
    "os_errors",
    "owned_entries",
    "partial_name",
    "replace_folder_contents",
    "resolve_inside",
    "translate_os_error",
    "unsafe_checkpoint_error",
]
