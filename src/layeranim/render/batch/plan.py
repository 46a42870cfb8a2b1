"""Planning a batch: per-item seeds, output names from a folder or a template, and shards."""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from layeranim import safety
from layeranim.errors import UsageError
from layeranim.render.batch.files import BatchItem

TEMPLATE_FIELDS = safety.TEMPLATE_FIELDS

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
    """Whether `output` names a directory: it is one, ends with `/`, or has no `{fields}` and no suffix."""
    text = str(output)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return True
    return "{" not in text and not Path(text).suffix


def render_output_path(
    template_or_dir: Path | str, item: BatchItem, seed: int, ext: str, *, allow_outside: bool = False
) -> Path:
    """The output path of one item under `output` (a directory or a template; see the module docstring).

    Templates (the output's and an item's `"output"`) go through `safety.format_template`: only the
    documented fields, plain or zero-padded, and names of at most 255 bytes. An item's own `"output"`
    must stay inside the output folder (`safety.resolve_inside`) unless `allow_outside`.
    """
    ext = ext.lstrip(".")
    fields = {"index": item.index, "slug": slugify(item.prompt), "seed": seed, "ext": ext}
    text = str(template_or_dir)
    if is_output_dir(text):
        directory = Path(text)
        default_name = f"{item.index:04d}-{fields['slug']}" + (f".{ext}" if ext else "")
    else:
        directory = Path(safety.format_template(text, fields, option="output=")).parent
        default_name = ""
    if item.output is not None:
        where = f"{item.label}: output"
        name = safety.format_template(item.output, fields, option=where)
        if ext and not Path(name).suffix:
            name = f"{name}.{ext}"
        return safety.resolve_inside(directory, name, allow_outside=allow_outside, item=item.label)
    if default_name:
        return directory / default_name
    return Path(safety.format_template(text, fields, option="output="))


@dataclass(frozen=True)
class BatchJob:
    """One planned render: the item, its seed, its output path, and whether that output may be replaced."""

    item: BatchItem
    seed: int
    output: Path
    replace: bool = False  # set by run_batch for a stale (or overwritten) output; pass it to the writer

    @property
    def index(self) -> int:
        return self.item.index


def plan_batch(
    items: Sequence[BatchItem], output: Path | str, *, base_seed: int, ext: str, allow_outside: bool = False
) -> list[BatchJob]:
    """Seeds and output paths for every item; two items sharing an output path is a UsageError.

    Every name is validated here, before anything renders: templates, name lengths, and items whose
    `"output"` would leave the output folder (unless `allow_outside`).

    Plan the whole batch before `select_shard`, so shards on different machines cannot collide either.
    """
    jobs: list[BatchJob] = []
    seen: dict[str, BatchItem] = {}
    for item in items:
        seed = item_seed(item, base_seed)
        path = render_output_path(output, item, seed, ext, allow_outside=allow_outside)
        key = os.path.normcase(os.path.abspath(path))
        if key in seen:
            raise UsageError(
                f"{seen[key].label} and {item.label} would both write {path}; put {{index}} or {{seed}} "
                'in output or give the items distinct "output" names.'
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
        raise UsageError(f"shard={text!r} is not I/N; write e.g. shard='1/4' for the first of four shards.")
    i, n = int(match.group(1)), int(match.group(2))
    if n < 1 or not 1 <= i <= n:
        raise UsageError(
            f"shard={text!r}: the shard number must be between 1 and the shard count; "
            f"e.g. shard='1/{max(n, 1)}'."
        )
    return i, n


def select_shard(items: Sequence[IndexedT], i: int, n: int) -> list[IndexedT]:
    """Shard `i` of `n` (1-based): the items with `index % n == i - 1`; shards 1..n partition the batch."""
    if n < 1 or not 1 <= i <= n:
        raise UsageError(f"shard='{i}/{n}': the shard number must be between 1 and {max(n, 1)}.")
    return [item for item in items if item.index % n == i - 1]
