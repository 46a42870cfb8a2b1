"""Batch rendering for shells and CI pipelines: batch files, output naming, seeds, shards, manifests, results.

This package holds no model code. `layeranim.render.run_batch(BatchRequest)` (what the CLI's generate and
animate batch modes call) reads a batch file, plans every item's seed and output path up front (so a bad
template or two items sharing an output fail before anything loads), picks its shard, and hands the jobs to
`run_batch` here together with a `render` callable that renders one job with models loaded once.

Modules: `files` (batch files → `BatchItem`s), `plan` (seeds, output names, shards → `BatchJob`s),
`manifest` (the JSON sidecars and `render_key`), `run` (the loop: skip, render, report).

Batch files (UTF-8):

- A text file: one prompt per line. Blank lines and lines whose first non-blank character is `#` are skipped
  (only whole-line comments: a `#` inside a prompt is kept). For an inputs batch (`kind="inputs"`), a line
  is `IMAGE<TAB>PROMPT`, or `IMAGE | PROMPT` when the line has no tab (split at the first tab, else at
  the first `|`).
- JSONL: one JSON object per line (same comment and blank-line rules), used for files ending in `.jsonl` or
  `.json` and for any file whose first item line starts with `{`. A `.json` file may also hold one JSON
  array of objects. Keys: `prompt`, `negative` (or `negative_prompt`), `seed`, `frames`, `fps`,
  `base_position` ("middle", "start", "end" or a frame index), `seamless` (true/false), `output`, `image`;
  any other key is an error. `prompt` is required, and `image` too for an inputs batch.

Relative `image` paths are relative to the batch file's folder, so a batch file can travel with its images.
A path of `-` reads the batch from stdin (images then relative to the current folder).

Seeds: an item's own `seed` wins; otherwise `derive_seed(base_seed, index)` (sha256-based, the same on every
platform and Python version). `index` is the item's 0-based position among the file's items, so inserting
an item shifts the derived seeds of the items after it; give explicit seeds to pin them.

Outputs: `output` is a directory (`DIR/{index:04d}-{slug}.{ext}`) or a template with `{index}`, `{slug}`,
`{seed}`, `{ext}` (format specs allowed: `{index:03d}`). An item's `output` names its file inside that
directory (or the template's directory), and may use the same fields.

Resuming: each output gets a JSON manifest beside it (`clip.webm.json`) holding every parameter, the seed,
the model sources, versions, device, dtype and per-stage timings, and a `render_key`: the sha256 of
everything that determines the pixels. A re-run skips an item whose output exists and whose manifest has
the same `render_key`; when a parameter changed, the item is rendered again and its output replaced. An
existing output without a manifest (not a finished layeranim render) is never replaced without
`overwrite=True`.

Shards: shard `"I/N"` keeps the items whose `index % N == I - 1`, so shards 1..N cover the batch exactly once
(SLURM arrays: shard `$((SLURM_ARRAY_TASK_ID + 1))/$SLURM_ARRAY_TASK_COUNT` with 0-based task ids).
"""

from layeranim.render.batch.files import (
    ALLOWED_KEYS,
    JSONL_SUFFIXES,
    SEED_MAX,
    BatchItem,
    BatchKind,
    read_batch_file,
)
from layeranim.render.batch.manifest import (
    MANIFEST_NOTE,
    MANIFEST_SCHEMA,
    build_manifest,
    canonical_json,
    device_type,
    is_finished,
    manifest_path,
    package_versions,
    read_manifest,
    render_key,
    write_manifest,
)
from layeranim.render.batch.plan import (
    TEMPLATE_FIELDS,
    BatchJob,
    derive_seed,
    is_output_dir,
    item_seed,
    parse_shard,
    plan_batch,
    render_output_path,
    select_shard,
    slugify,
)
from layeranim.render.batch.run import BatchSummary, ItemResult, RenderResult, Status, run_batch

__all__ = [
    "ALLOWED_KEYS",
    "JSONL_SUFFIXES",
    "MANIFEST_NOTE",
    "MANIFEST_SCHEMA",
    "SEED_MAX",
    "TEMPLATE_FIELDS",
    "BatchItem",
    "BatchJob",
    "BatchKind",
    "BatchSummary",
    "ItemResult",
    "RenderResult",
    "Status",
    "build_manifest",
    "canonical_json",
    "derive_seed",
    "device_type",
    "is_finished",
    "is_output_dir",
    "item_seed",
    "manifest_path",
    "package_versions",
    "parse_shard",
    "plan_batch",
    "read_batch_file",
    "read_manifest",
    "render_key",
    "render_output_path",
    "run_batch",
    "select_shard",
    "slugify",
    "write_manifest",
]
