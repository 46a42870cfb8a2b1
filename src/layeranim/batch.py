"""Batch rendering for shells and CI pipelines: batch files, output naming, seeds, shards, manifests, results.

This module holds no model code. The CLI (`layeranim generate --prompts FILE`, `layeranim animate --inputs
FILE`) reads a batch file, plans every item's seed and output path up front (so a bad template or two items
sharing an output fail before anything loads), picks its shard, and hands the jobs to `run_batch` together
with a `render` callable that loads the models once and renders one job.

Batch files (UTF-8):

- A text file: one prompt per line. Blank lines and lines whose first non-blank character is `#` are skipped
  (only whole-line comments: a `#` inside a prompt is kept). For `--inputs`, a line is `IMAGE<TAB>PROMPT`, or
  `IMAGE | PROMPT` when the line has no tab (split at the first tab, else at the first `|`).
- JSONL: one JSON object per line (same comment and blank-line rules), used for files ending in `.jsonl` or
  `.json` and for any file whose first item line starts with `{`. A `.json` file may also hold one JSON
  array of objects. Keys: `prompt`, `negative` (or `negative_prompt`), `seed`, `frames`, `fps`, `output`,
  `image`; any other key is an error. `prompt` is required, and `image` too for `--inputs`.

Relative `image` paths are relative to the batch file's folder, so a batch file can travel with its images.
A path of `-` reads the batch from stdin (images then relative to the current folder).

Seeds: an item's own `seed` wins; otherwise `derive_seed(base_seed, index)` (sha256-based, the same on every
platform and Python version). `index` is the item's 0-based position among the file's items, so inserting
an item shifts the derived seeds of the items after it; give explicit seeds to pin them.

Outputs: `-o` is a directory (`DIR/{index:04d}-{slug}.{ext}`) or a template with `{index}`, `{slug}`,
`{seed}`, `{ext}` (format specs allowed: `{index:03d}`). An item's `output` names its file inside that
directory (or the template's directory), and may use the same fields.

Resuming: each output gets a JSON manifest beside it (`clip.webm.json`) holding every parameter, the seed,
the model sources, versions, device, dtype and per-stage timings, and a `render_key`: the sha256 of
everything that determines the pixels. A re-run skips an item whose output exists and whose manifest has
the same `render_key`; when a parameter changed, the item is rendered again and its output replaced. An
existing output without a manifest (not a finished layeranim render) is never replaced without `--overwrite`.

Shards: `--shard I/N` keeps the items whose `index % N == I - 1`, so shards 1..N cover the batch exactly once
(SLURM arrays: `--shard $((SLURM_ARRAY_TASK_ID + 1))/$SLURM_ARRAY_TASK_COUNT` with 0-based task ids).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import string
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from rich.markup import escape
from rich.table import Table

from layeranim import __version__
from layeranim.errors import LayerAnimError, UsageError

logger = logging.getLogger(__name__)

BatchKind = Literal["prompts", "inputs"]
Status = Literal["ok", "failed", "skipped"]

JSONL_SUFFIXES = (".jsonl", ".json")
ALLOWED_KEYS = ("prompt", "negative", "negative_prompt", "seed", "frames", "fps", "output", "image")
TEMPLATE_FIELDS = ("index", "slug", "seed", "ext")
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes up to this
MANIFEST_SCHEMA = 1
MANIFEST_NOTE = (
    "render_key is the sha256 of the canonical JSON of everything that determines the pixels (prompt, "
    "negative prompt, input image hash, params, seed, model sources, dtype, device type, layeranim "
    "version). A batch re-run skips this output while the render_key matches and renders it again "
    "(replacing it) when any of these changed."
)


# ---------------------------------------------------------------------------------------------------
# Batch items and batch files.


@dataclass(frozen=True)
class BatchItem:
    """One line of a batch file: what to render, with the per-item overrides it gave (None: the default)."""

    index: int  # 0-based position among the file's items (not its line number)
    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    frames: int | None = None
    fps: float | None = None
    output: str | None = None  # a file name inside the output directory (may use template fields)
    image: Path | None = None  # `--inputs` only: the RGBA image to animate
    source: str = ""  # where it came from, for messages: "prompts.txt:3"

    @property
    def label(self) -> str:
        """How messages name this item: `item 2 (prompts.txt:3)`."""
        return f"item {self.index} ({self.source})" if self.source else f"item {self.index}"


def read_batch_file(path: Path | str, *, kind: BatchKind = "prompts") -> list[BatchItem]:
    """Read a batch file (text or JSONL, see the module docstring) into items; any problem is a UsageError."""
    if kind not in ("prompts", "inputs"):
        raise ValueError(f"kind must be 'prompts' or 'inputs', not {kind!r}")
    option = f"--{kind}"
    if str(path) == "-":
        return _parse_batch_text(sys.stdin.read(), Path("<stdin>"), kind=kind, base_dir=Path.cwd())
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{option} {path}: no such file; give a text or JSONL file with one item per line.")
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a text or JSONL file with one item per line.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{option} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 and try again."
        ) from exc
    except OSError as exc:
        raise UsageError(f"{option} {path} cannot be read ({exc.strerror or exc}).") from exc
    return _parse_batch_text(text, path, kind=kind, base_dir=path.parent)


def _parse_batch_text(text: str, path: Path, *, kind: BatchKind, base_dir: Path) -> list[BatchItem]:
    option = f"--{kind}"
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if _is_item_line(line)]
    if not lines:
        example = "IMAGE<TAB>PROMPT" if kind == "inputs" else "one prompt"
        raise UsageError(
            f"{option} {path} has no items (only blank or '#' comment lines); write {example} per line, "
            'or one JSON object per line such as {"prompt": "a red fox"}.'
        )
    if path.suffix.lower() == ".json" and lines[0][1].lstrip().startswith("["):
        return _read_json_array(path, text, kind=kind, base_dir=base_dir)
    if path.suffix.lower() in JSONL_SUFFIXES or lines[0][1].lstrip().startswith("{"):
        items = []
        for index, (number, line) in enumerate(lines):
            where = f"{option} {path}, line {number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); "
                    "write one JSON object per line."
                ) from exc
            items.append(_item_from_json(obj, index, f"{path.name}:{number}", where, kind, base_dir))
        return items
    return [
        _item_from_text(
            line, index, f"{path.name}:{number}", f"{option} {path}, line {number}", kind, base_dir
        )
        for index, (number, line) in enumerate(lines)
    ]


def _is_item_line(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _read_json_array(path: Path, text: str, *, kind: BatchKind, base_dir: Path) -> list[BatchItem]:
    option = f"--{kind}"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{option} {path}, line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})."
        ) from exc
    if not isinstance(data, list) or not data:
        raise UsageError(
            f"{option} {path}: expected a non-empty JSON array of objects, or one object per line."
        )
    return [
        _item_from_json(obj, index, f"{path.name}#{index}", f"{option} {path}, item {index}", kind, base_dir)
        for index, obj in enumerate(data)
    ]


def _item_from_text(
    line: str, index: int, source: str, where: str, kind: BatchKind, base_dir: Path
) -> BatchItem:
    if kind == "prompts":
        return BatchItem(index=index, prompt=line.strip(), source=source)
    text = line.strip("\r\n")
    if "\t" in text:
        image, _, prompt = text.partition("\t")
    elif "|" in text:
        image, _, prompt = text.partition("|")
    else:
        raise UsageError(
            f"{where}: {_short(text.strip())!r} has no prompt; write IMAGE<TAB>PROMPT or IMAGE | PROMPT "
            "on each line."
        )
    image, prompt = image.strip(), prompt.strip()
    if not image:
        raise UsageError(f"{where}: the image path is empty; write IMAGE<TAB>PROMPT or IMAGE | PROMPT.")
    if not prompt:
        raise UsageError(f"{where}: the prompt after {image!r} is empty; write IMAGE<TAB>PROMPT.")
    return BatchItem(index=index, prompt=prompt, image=_resolve_image(image, base_dir), source=source)


def _item_from_json(
    obj: Any, index: int, source: str, where: str, kind: BatchKind, base_dir: Path
) -> BatchItem:
    if not isinstance(obj, dict):
        raise UsageError(
            f'{where}: expected a JSON object such as {{"prompt": "..."}}, got {_json_type(obj)}.'
        )
    unknown = [key for key in obj if key not in ALLOWED_KEYS]
    if unknown:
        raise UsageError(
            f"{where}: unknown key {unknown[0]!r}; the allowed keys are {', '.join(ALLOWED_KEYS)}."
        )
    if "negative" in obj and "negative_prompt" in obj:
        raise UsageError(f"{where}: give 'negative' or 'negative_prompt', not both.")

    prompt = obj.get("prompt")
    if prompt is None:
        raise UsageError(f'{where}: the "prompt" key is missing; every item needs a prompt.')
    prompt = _expect_str(prompt, "prompt", where)
    if not prompt:
        raise UsageError(f'{where}: "prompt" is empty; write the text to render.')
    negative_key = "negative_prompt" if "negative_prompt" in obj else "negative"
    negative = obj.get(negative_key)
    negative = None if negative is None else _expect_str(negative, negative_key, where)

    seed = obj.get("seed")
    if seed is not None:
        seed = _expect_int(seed, "seed", where)
        if not 0 <= seed <= SEED_MAX:
            raise UsageError(f'{where}: "seed" {seed} is outside 0..{SEED_MAX}; give a non-negative integer.')
    frames = obj.get("frames")
    if frames is not None:
        frames = _expect_int(frames, "frames", where)
        if frames < 1:
            raise UsageError(f'{where}: "frames" {frames} must be a positive integer.')
    fps = obj.get("fps")
    if fps is not None:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
            raise UsageError(f'{where}: "fps" must be a positive number, not {json.dumps(fps)}.')
        fps = float(fps)
    output = obj.get("output")
    if output is not None:
        output = _expect_str(output, "output", where)
        if not output or output.endswith(("/", os.sep)):
            raise UsageError(f'{where}: "output" {output!r} must be a file name such as "hero.webm".')
    image = obj.get("image")
    image_path = None
    if image is not None:
        image = _expect_str(image, "image", where)
        if not image:
            raise UsageError(f'{where}: "image" is empty; give the path of the RGBA image to animate.')
        image_path = _resolve_image(image, base_dir)
    if kind == "inputs" and image_path is None:
        raise UsageError(
            f'{where}: the "image" key is missing; every --inputs item needs an image to animate.'
        )
    if kind == "prompts" and image_path is not None:
        raise UsageError(
            f'{where}: "image" belongs in an --inputs file for `layeranim animate`, not --prompts.'
        )
    return BatchItem(
        index=index,
        prompt=prompt,
        negative_prompt=negative,
        seed=seed,
        frames=frames,
        fps=fps,
        output=output,
        image=image_path,
        source=source,
    )


def _expect_str(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f'{where}: "{key}" must be a string, not {_json_type(value)}.')
    return value.strip()


def _expect_int(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f'{where}: "{key}" must be an integer, not {json.dumps(value)}.')
    return value


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _resolve_image(image: str, base_dir: Path) -> Path:
    path = Path(image).expanduser()
    return path if path.is_absolute() else base_dir / path


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------------
# Seeds.


def derive_seed(base_seed: int, index: int) -> int:
    """Item `index`'s seed in a batch with `base_seed`: first 4 bytes of sha256("base:index"), 0..2**32-1."""
    digest = hashlib.sha256(f"{base_seed}:{index}".encode("ascii")).digest()
    return int.from_bytes(digest[:4], "big")


def item_seed(item: BatchItem, base_seed: int) -> int:
    """The item's own seed if it gave one, else the one derived from the batch's base seed and its index."""
    return item.seed if item.seed is not None else derive_seed(base_seed, item.index)


# ---------------------------------------------------------------------------------------------------
# Output names.


def slugify(text: str, max_len: int = 48) -> str:
    """A lowercase ASCII file-name fragment of `text` (`a-red-fox`), at most `max_len` long; else `item`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    if len(slug) > max_len:
        cut = slug[:max_len]
        # Prefer cutting at a word boundary when one is in the second half.
        boundary = cut.rfind("-")
        slug = cut[:boundary] if boundary >= max_len // 2 else cut
        slug = slug.strip("-")
    return slug or "item"


def is_output_dir(output: Path | str) -> bool:
    """Whether `-o` names a directory: it is one, ends with `/`, or has no `{fields}` and no suffix."""
    text = str(output)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return True
    return "{" not in text and not Path(text).suffix


def render_output_path(template_or_dir: Path | str, item: BatchItem, seed: int, ext: str) -> Path:
    """The output path of one item under `-o` (a directory or a template; see the module docstring)."""
    ext = ext.lstrip(".")
    fields = {"index": item.index, "slug": slugify(item.prompt), "seed": seed, "ext": ext}
    text = str(template_or_dir)
    if is_output_dir(text):
        directory = Path(text)
        default_name = f"{item.index:04d}-{fields['slug']}" + (f".{ext}" if ext else "")
    else:
        _check_template(text, "-o", text)
        directory = Path(_format_template(text, fields, "-o")).parent
        default_name = ""
    if item.output is not None:
        where = f"{item.label}: output"
        _check_template(item.output, where, item.output)
        name = _format_template(item.output, fields, where)
        if ext and not Path(name).suffix:
            name = f"{name}.{ext}"
        return directory / name
    if default_name:
        return directory / default_name
    return Path(_format_template(text, fields, "-o"))


def _check_template(template: str, option: str, value: str) -> None:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(
            f"{option} {value!r} is not a valid template ({exc}); write {{{{ or }}}} for a literal brace."
        ) from exc
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            shown = "{" + name + "}" if name else "{}"
            raise UsageError(
                f"{option} {value!r} uses the unknown field {shown}; the fields are "
                f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}."
            )


def _format_template(template: str, fields: dict[str, Any], option: str) -> str:
    try:
        return template.format(**fields)
    except (ValueError, TypeError) as exc:
        raise UsageError(
            f"{option} {template!r}: a format spec does not fit its field ({exc}); e.g. use {{index:03d}}, "
            "{seed:010d}, {slug:.20}."
        ) from exc


@dataclass(frozen=True)
class BatchJob:
    """One planned render: the item, its seed, its output path, and whether that output may be replaced."""

    item: BatchItem
    seed: int
    output: Path
    replace: bool = False  # set by run_batch for a stale (or --overwrite) output; pass it to the writer

    @property
    def index(self) -> int:
        return self.item.index


def plan_batch(items: Sequence[BatchItem], output: Path | str, *, base_seed: int, ext: str) -> list[BatchJob]:
    """Seeds and output paths for every item; two items sharing an output path is a UsageError.

    Plan the whole batch before `select_shard`, so shards on different machines cannot collide either.
    """
    jobs: list[BatchJob] = []
    seen: dict[str, BatchItem] = {}
    for item in items:
        seed = item_seed(item, base_seed)
        path = render_output_path(output, item, seed, ext)
        key = os.path.normcase(os.path.abspath(path))
        if key in seen:
            raise UsageError(
                f"{seen[key].label} and {item.label} would both write {path}; put {{index}} or {{seed}} "
                'in -o or give the items distinct "output" names.'
            )
        seen[key] = item
        jobs.append(BatchJob(item=item, seed=seed, output=path))
    return jobs


# ---------------------------------------------------------------------------------------------------
# Shards.


class _Indexed(Protocol):
    @property
    def index(self) -> int: ...


IndexedT = TypeVar("IndexedT", bound=_Indexed)


def parse_shard(text: str) -> tuple[int, int]:
    """`"I/N"` → `(I, N)` with 1 <= I <= N (1-based, like SLURM array bounds and CI matrices)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise UsageError(f"--shard {text!r} is not I/N; write e.g. --shard 1/4 for the first of four shards.")
    i, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 1 <= i <= n:
        raise UsageError(
            f"--shard {text!r}: the shard number must be between 1 and the shard count; "
            f"e.g. --shard 1/{max(n, 1)}."
        )
    return i, n


def select_shard(items: Sequence[IndexedT], i: int, n: int) -> list[IndexedT]:
    """Shard `i` of `n` (1-based): the items with `index % n == i - 1`; shards 1..n partition the batch."""
    if n < 1 or not 1 <= i <= n:
        raise UsageError(f"--shard {i}/{n}: the shard number must be between 1 and {max(n, 1)}.")
    return [item for item in items if item.index % n == i - 1]


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


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


# ---------------------------------------------------------------------------------------------------
# Running a batch.


@dataclass
class RenderResult:
    """What a `render` callable returns: where the output went and its manifest (from `build_manifest`)."""

    output: Path
    manifest: dict[str, Any]


@dataclass
class ItemResult:
    """How one item of a batch ended."""

    index: int
    prompt: str
    status: Status
    output: Path | None
    manifest: Path | None
    seed: int
    error: str | None = None
    seconds: float = 0.0
    source: str = ""

    @property
    def label(self) -> str:
        return f"item {self.index} ({self.source})" if self.source else f"item {self.index}"

    def to_json(self) -> dict[str, Any]:
        """The item's JSON line (`--json`): plain types only."""
        return {
            "index": self.index,
            "prompt": self.prompt,
            "status": self.status,
            "output": str(self.output) if self.output is not None else None,
            "manifest": str(self.manifest) if self.manifest is not None else None,
            "seed": self.seed,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "source": self.source,
        }


@dataclass
class BatchSummary:
    """Every item's result, in batch order."""

    results: list[ItemResult] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts = {"ok": 0, "failed": 0, "skipped": 0}
        for result in self.results:
            counts[result.status] += 1
        return counts

    @property
    def failed(self) -> list[ItemResult]:
        return [result for result in self.results if result.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0 if no item failed, else 1 (the other items still ran)."""
        return 1 if self.failed else 0

    @property
    def seconds(self) -> float:
        return sum(result.seconds for result in self.results)

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": True,
            **self.counts,
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
        }


def run_batch(
    jobs: Sequence[BatchJob],
    render: Callable[[BatchJob], RenderResult],
    *,
    render_key_for: Callable[[BatchJob], str],
    skip_finished: bool = True,
    overwrite: bool = False,
    on_start: Callable[[BatchJob, int, int], None] | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
) -> BatchSummary:
    """Render `jobs` in order, one failure never stopping the batch; write each output's manifest after it.

    An existing output is skipped when its manifest's render_key matches (`skip_finished`); it is rendered
    again and replaced (`job.replace=True`) when its manifest shows other parameters, or with `overwrite`.
    An existing output without a layeranim manifest is never replaced without `overwrite`: that item fails.
    `render_key_for` is only called for items whose output exists. `on_start(job, position, total)` runs
    before each item, `on_result(result)` after each (skipped and failed too). KeyboardInterrupt propagates.
    """
    summary = BatchSummary()
    total = len(jobs)
    for position, job in enumerate(jobs):
        if on_start is not None:
            on_start(job, position, total)
        result = _run_one(job, render, render_key_for, skip_finished=skip_finished, overwrite=overwrite)
        summary.results.append(result)
        if on_result is not None:
            on_result(result)
    return summary


def _run_one(
    job: BatchJob,
    render: Callable[[BatchJob], RenderResult],
    render_key_for: Callable[[BatchJob], str],
    *,
    skip_finished: bool,
    overwrite: bool,
) -> ItemResult:
    item = job.item
    started = time.perf_counter()

    def ended(status: Status, output: Path | None, manifest: Path | None, error: str | None) -> ItemResult:
        return ItemResult(
            index=item.index,
            prompt=item.prompt,
            status=status,
            output=output,
            manifest=manifest,
            seed=job.seed,
            error=error,
            seconds=time.perf_counter() - started,
            source=item.source,
        )

    try:
        if job.output.exists():
            key = render_key_for(job)
            existing = read_manifest(manifest_path(job.output))
            recorded = existing.get("render_key") if existing is not None else None
            if skip_finished and recorded == key:
                logger.debug("%s: %s is finished (render_key matches); skipping", item.label, job.output)
                return ended("skipped", job.output, manifest_path(job.output), None)
            stale = skip_finished and recorded is not None
            if not (overwrite or stale):
                why = "is already rendered" if recorded is not None else "has no layeranim manifest beside it"
                raise LayerAnimError(
                    f"{job.output} exists and {why}; pass --overwrite to replace it, or remove it."
                )
            logger.debug("%s: replacing %s (%s)", item.label, job.output, "stale" if stale else "overwrite")
            job = dataclasses.replace(job, replace=True)
        rendered = render(job)
        manifest_file = manifest_path(rendered.output)
        write_manifest(manifest_file, rendered.manifest)
    except LayerAnimError as exc:
        logger.debug("%s failed", item.label, exc_info=True)
        return ended("failed", None, None, str(exc))
    except Exception as exc:
        logger.debug("%s failed", item.label, exc_info=True)
        return ended("failed", None, None, f"unexpected {type(exc).__name__}: {exc}")
    _check_key(job, rendered, render_key_for)
    return ended("ok", rendered.output, manifest_file, None)


def _check_key(job: BatchJob, rendered: RenderResult, render_key_for: Callable[[BatchJob], str]) -> None:
    """Warn when the manifest's key disagrees with `render_key_for`: the item would re-render on every run."""
    try:
        expected = render_key_for(job)
    except Exception:
        logger.debug("render_key_for failed after rendering %s", job.item.label, exc_info=True)
        return
    if rendered.manifest.get("render_key") != expected:
        logger.warning(
            "%s: the manifest's render_key differs from render_key_for(); a re-run will render it again",
            job.item.label,
        )


def summary_table(summary: BatchSummary) -> Table:
    """The end-of-batch table (for a stderr console): one row per item, counts in the caption."""
    table = Table(title="layeranim batch", show_lines=False, expand=False)
    table.add_column("#", justify="right")
    table.add_column("status")
    table.add_column("seed", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("prompt", overflow="ellipsis", max_width=40, no_wrap=True)
    table.add_column("output / error", overflow="fold")
    styles = {"ok": "green", "failed": "bold red", "skipped": "dim"}
    for result in summary.results:
        detail = result.error if result.status == "failed" else str(result.output)
        table.add_row(
            str(result.index),
            f"[{styles[result.status]}]{result.status}[/]",
            str(result.seed),
            f"{result.seconds:.1f}",
            escape(result.prompt),
            escape(detail or ""),
        )
    counts = summary.counts
    table.caption = (
        f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped "
        f"in {summary.seconds:.1f} s"
    )
    return table
