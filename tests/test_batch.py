"""The batch machinery without models: batch files, seeds, output names, shards, manifests, run_batch."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from layeranim import __version__
from layeranim.cli._batch import summary_lines, summary_table
from layeranim.errors import LayerAnimError, UsageError
from layeranim.render.batch import (
    ALLOWED_KEYS,
    BatchItem,
    BatchJob,
    BatchSummary,
    ItemResult,
    RenderResult,
    build_manifest,
    derive_seed,
    is_finished,
    is_output_dir,
    item_seed,
    manifest_path,
    parse_shard,
    plan_batch,
    read_batch_file,
    read_manifest,
    render_key,
    render_output_path,
    run_batch,
    select_shard,
    slugify,
    write_manifest,
)
from layeranim.safety import mark_owned, owned_entries

# ---------------------------------------------------------------------------------------------------
# Batch files.


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_text_prompts_skip_blank_and_comment_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "prompts.txt", "# header\n\n  a red fox  \n   # indented comment\nissue #1 poster\n"
    )
    items = read_batch_file(path)
    assert [item.prompt for item in items] == ["a red fox", "issue #1 poster"]  # only whole-line comments
    assert [item.index for item in items] == [0, 1]
    assert [item.source for item in items] == ["prompts.txt:3", "prompts.txt:5"]
    assert items[0] == BatchItem(index=0, prompt="a red fox", source="prompts.txt:3")


def test_text_file_with_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_bytes("\ufeffa lantern\r\na candle\r\n".encode())
    assert [item.prompt for item in read_batch_file(path)] == ["a lantern", "a candle"]


def test_inputs_text_lines_split_at_tab_or_bar(tmp_path: Path) -> None:
    absolute = tmp_path / "elsewhere" / "c.png"
    path = write(
        tmp_path / "inputs.txt",
        f"imgs/a.png\ta fox | with a bar\nb.png | a candle\n{absolute} |  a lantern \nd.png|a cat\n",
    )
    items = read_batch_file(path, kind="inputs")
    assert [item.prompt for item in items] == ["a fox | with a bar", "a candle", "a lantern", "a cat"]
    # Relative images are relative to the batch file's folder.
    assert [item.image for item in items] == [
        tmp_path / "imgs" / "a.png",
        tmp_path / "b.png",
        absolute,
        tmp_path / "d.png",
    ]


def test_stdin_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("# from a pipe\na fox\na candle\n"))
    items = read_batch_file("-")
    assert [(item.prompt, item.source) for item in items] == [
        ("a fox", "<stdin>:2"),
        ("a candle", "<stdin>:3"),
    ]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO('{"image": "a.png", "prompt": "wave"}\n'))
    (item,) = read_batch_file("-", kind="inputs")
    assert item.image == tmp_path / "a.png"
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(UsageError, match=r"^prompts_file='<stdin>' has no items"):
        read_batch_file("-")


def test_jsonl_by_suffix_with_every_key(tmp_path: Path) -> None:
    lines = [
        {"prompt": "a fox", "negative": "blurry", "seed": 7, "frames": 16, "fps": 12, "output": "fox.webm"},
        {"prompt": "a candle", "negative_prompt": "smoke", "seed": 2**64 - 1},
        {"prompt": "a lantern", "seed": None, "fps": 7.5},
    ]
    text = "# comment\n" + "\n\n".join(json.dumps(line) for line in lines) + "\n"
    items = read_batch_file(write(tmp_path / "batch.jsonl", text))
    assert items[0] == BatchItem(
        index=0,
        prompt="a fox",
        negative_prompt="blurry",
        seed=7,
        frames=16,
        fps=12.0,
        output="fox.webm",
        source="batch.jsonl:2",
    )
    assert items[1].negative_prompt == "smoke"
    assert items[1].seed == 2**64 - 1
    assert items[2].seed is None
    assert items[2].fps == 7.5
    assert items[2].source == "batch.jsonl:6"


def test_jsonl_detected_by_first_item_line_in_a_txt_file(tmp_path: Path) -> None:
    path = write(tmp_path / "list.txt", '# JSONL without the suffix\n{"prompt": "a fox", "seed": 3}\n')
    assert read_batch_file(path) == [BatchItem(index=0, prompt="a fox", seed=3, source="list.txt:2")]


def test_inputs_jsonl_needs_and_resolves_image(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", '{"image": "a.png", "prompt": "wave", "frames": 8}\n')
    (item,) = read_batch_file(path, kind="inputs")
    assert item.image == tmp_path / "a.png"
    assert item.frames == 8


def test_json_array_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "batch.json", '[\n  {"prompt": "a fox"},\n  {"prompt": "a candle", "seed": 1}\n]\n'
    )
    items = read_batch_file(path)
    assert [(item.prompt, item.seed, item.source) for item in items] == [
        ("a fox", None, "batch.json#0"),
        ("a candle", 1, "batch.json#1"),
    ]


@pytest.mark.parametrize(
    ("name", "text", "kind", "expected"),
    [
        ("empty.txt", "# only a comment\n\n", "prompts", "has no items"),
        ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": "a fox",}\n', "prompts", "line 2: not valid JSON"),
        ("keys.jsonl", '{"prompt": "a", "sed": 1}\n', "prompts", "unknown key 'sed'; the allowed keys are"),
        ("noprompt.jsonl", '{"seed": 1}\n', "prompts", 'line 1: the "prompt" key is missing'),
        ("emptyprompt.jsonl", '{"prompt": "  "}\n', "prompts", '"prompt" is empty'),
        ("promptint.jsonl", '{"prompt": 3}\n', "prompts", '"prompt" must be a string, not a number'),
        ("seedstr.jsonl", '{"prompt": "a", "seed": "1"}\n', "prompts", '"seed" must be an integer, not "1"'),
        ("seedbool.jsonl", '{"prompt": "a", "seed": true}\n', "prompts", '"seed" must be an integer'),
        ("seedneg.jsonl", '{"prompt": "a", "seed": -1}\n', "prompts", '"seed" -1 is outside'),
        ("seedfloat.jsonl", '{"prompt": "a", "seed": 1.5}\n', "prompts", '"seed" must be an integer'),
        ("frames.jsonl", '{"prompt": "a", "frames": 0}\n', "prompts", '"frames" 0 must be a positive'),
        ("fps.jsonl", '{"prompt": "a", "fps": -2}\n', "prompts", '"fps" must be a positive number'),
        ("outdir.jsonl", '{"prompt": "a", "output": "sub/"}\n', "prompts", "must be a file name"),
        ("both.jsonl", '{"prompt": "a", "negative": "x", "negative_prompt": "y"}\n', "prompts", "not both"),
        ("array.jsonl", '["a fox"]\n', "prompts", "expected a JSON object"),
        ("img.jsonl", '{"prompt": "a", "image": "x.png"}\n', "prompts", "belongs in an inputs batch"),
        ("noimg.jsonl", '{"prompt": "a"}\n', "inputs", 'the "image" key is missing'),
        ("noprompt.txt", "a.png\n", "inputs", "has no prompt; write IMAGE<TAB>PROMPT"),
        ("emptyprompt.txt", "a.png\t \n", "inputs", "the prompt after 'a.png' is empty"),
        ("emptyimage.txt", " | a fox\n", "inputs", "the image path is empty"),
        ("emptyarray.json", "[]\n", "prompts", "non-empty JSON array"),
    ],
)
def test_batch_file_errors_are_one_line_usage_errors(
    tmp_path: Path, name: str, text: str, kind: str, expected: str
) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(UsageError) as info:
        read_batch_file(path, kind=kind)  # type: ignore[arg-type]
    message = str(info.value)
    assert expected in message
    assert message.startswith(f"{kind}_file={str(path)!r}")
    assert "\n" not in message


def test_unknown_key_message_lists_every_allowed_key(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        read_batch_file(write(tmp_path / "k.jsonl", '{"prompt": "a", "steps": 4}\n'))
    assert all(key in str(info.value) for key in ALLOWED_KEYS)


def test_missing_folder_and_non_utf8_batch_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        read_batch_file(tmp_path / "missing.txt")
    with pytest.raises(UsageError, match="is a folder"):
        read_batch_file(tmp_path, kind="inputs")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(UsageError, match="not UTF-8"):
        read_batch_file(latin1)


# ---------------------------------------------------------------------------------------------------
# Seeds.


def test_derive_seed_is_pinned() -> None:
    # Computed once from the definition (sha256 of "base:index", first 4 bytes, big-endian); these values
    # must never change, or re-runs of old batches would render different pictures.
    assert [derive_seed(0, index) for index in range(3)] == [2893166218, 4011020074, 2468915676]
    assert derive_seed(42, 0) == 1416840650
    assert derive_seed(42, 7) == 1969073207
    assert derive_seed(2**40, 3) == 275209245


def test_derive_seed_range_and_spread() -> None:
    seeds = [derive_seed(base, index) for base in (0, 1, 12345) for index in range(200)]
    assert all(0 <= seed <= 2**32 - 1 for seed in seeds)
    assert len(set(seeds)) == len(seeds)


def test_item_seed_prefers_the_items_own() -> None:
    assert item_seed(BatchItem(index=3, prompt="a", seed=11), base_seed=5) == 11
    assert item_seed(BatchItem(index=3, prompt="a", seed=0), base_seed=5) == 0
    assert item_seed(BatchItem(index=3, prompt="a"), base_seed=5) == derive_seed(5, 3)


# ---------------------------------------------------------------------------------------------------
# Output names.


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("A red fox, jumping!", "a-red-fox-jumping"),
        ("Ünïcödé café", "unicode-cafe"),
        ("日本の灯籠", "item"),
        ("  --  ", "item"),
        ("x" * 60, "x" * 48),
        ("word " * 20, "word-word-word-word-word-word-word-word-word"),
    ],
)
def test_slugify(text: str, slug: str) -> None:
    assert slugify(text) == slug
    assert len(slugify(text)) <= 48


def test_slugify_max_len() -> None:
    assert slugify("a paper lantern swaying", max_len=10) == "a-paper"
    assert slugify("abcdefghijkl", max_len=5) == "abcde"


def test_is_output_dir(tmp_path: Path) -> None:
    assert is_output_dir(tmp_path)  # exists
    assert is_output_dir("renders/")
    assert is_output_dir("renders")  # no fields, no suffix
    assert not is_output_dir("renders/{index}.webm")
    assert not is_output_dir("clip.webm")


def test_directory_output_default_names(tmp_path: Path) -> None:
    item = BatchItem(index=3, prompt="A red fox!")
    assert render_output_path(tmp_path, item, 9, "webm") == tmp_path / "0003-a-red-fox.webm"
    assert render_output_path("out/", item, 9, ".mov") == Path("out/0003-a-red-fox.mov")
    assert render_output_path("out", item, 9, "") == Path("out/0003-a-red-fox")  # PNG-sequence folder


def test_template_fields_and_format_specs() -> None:
    item = BatchItem(index=5, prompt="a candle flame")
    path = render_output_path("out/{index:03d}_{slug}_{seed}.{ext}", item, 1234, "webm")
    assert path == Path("out/005_a-candle-flame_1234.webm")
    assert render_output_path("clips/s{seed:08d}.mov", item, 42, "mov") == Path("clips/s00000042.mov")
    # Fields in the directory part work too.
    assert render_output_path("out/{index}/clip.{ext}", item, 1, "webm") == Path("out/5/clip.webm")


def test_item_output_overrides_inside_the_directory_or_template_folder() -> None:
    item = BatchItem(index=1, prompt="a fox", output="hero")
    assert render_output_path("out/", item, 7, "webm") == Path("out/hero.webm")
    assert render_output_path("out/{index}-{slug}.webm", item, 7, "webm") == Path("out/hero.webm")
    named = BatchItem(index=1, prompt="a fox", output="fox-{seed}.mov")
    assert render_output_path("out/", named, 7, "webm") == Path("out/fox-7.mov")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("out/{name}.webm", "unknown field {name}"),
        ("out/{}.webm", "unknown field {}"),
        ("out/{0}.webm", "unknown field {0}"),
        ("out/{index.real}.webm", "unknown field {index.real}"),
        ("out/{index.webm", "not a valid template"),
        ("out/{slug:03d}.webm", "a format spec does not fit"),
    ],
)
def test_bad_templates_are_usage_errors(template: str, expected: str) -> None:
    with pytest.raises(UsageError, match=r"^output=") as info:
        render_output_path(template, BatchItem(index=0, prompt="a"), 1, "webm")
    assert expected in str(info.value)


def test_bad_item_output_template_names_the_item() -> None:
    item = BatchItem(index=2, prompt="a", output="{prompt}.webm", source="b.jsonl:3")
    with pytest.raises(UsageError, match=r"item 2 \(b.jsonl:3\): output .*unknown field \{prompt\}"):
        render_output_path("out/", item, 1, "webm")


def test_plan_batch_assigns_seeds_and_outputs(tmp_path: Path) -> None:
    items = [BatchItem(index=0, prompt="a fox"), BatchItem(index=1, prompt="a fox", seed=5)]
    jobs = plan_batch(items, tmp_path, base_seed=42, ext="webm")
    assert [job.seed for job in jobs] == [derive_seed(42, 0), 5]
    assert [job.output.name for job in jobs] == ["0000-a-fox.webm", "0001-a-fox.webm"]
    assert [job.index for job in jobs] == [0, 1]
    assert not any(job.replace for job in jobs)


@pytest.mark.parametrize(
    ("output", "items"),
    [
        ("out/{slug}.webm", [BatchItem(0, "a fox", source="p:1"), BatchItem(1, "A fox!", source="p:2")]),
        ("out/clip.webm", [BatchItem(0, "a", source="p:1"), BatchItem(1, "b", source="p:2")]),
        (
            "out/",
            [BatchItem(0, "a", output="x.webm", source="p:1"), BatchItem(1, "b", output="x", source="p:2")],
        ),
        (
            "out/{seed}.webm",
            [BatchItem(0, "a", seed=1, source="p:1"), BatchItem(1, "b", seed=1, source="p:2")],
        ),
    ],
)
def test_plan_batch_rejects_two_items_sharing_an_output(output: str, items: list[BatchItem]) -> None:
    with pytest.raises(UsageError, match=r"item 0 \(p:1\) and item 1 \(p:2\) would both write"):
        plan_batch(items, output, base_seed=0, ext="webm")


# ---------------------------------------------------------------------------------------------------
# Shards.


@pytest.mark.parametrize(
    ("text", "expected"), [("1/2", (1, 2)), ("2/2", (2, 2)), (" 3 / 10 ", (3, 10)), ("1/1", (1, 1))]
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "2", "a/b", "-1/2", "1/2/3", ""])
def test_parse_shard_rejects(text: str) -> None:
    with pytest.raises(UsageError, match=r"^shard="):
        parse_shard(text)


def test_shards_partition_every_batch() -> None:
    for size in (0, 1, 2, 5, 17, 30):
        items = [BatchItem(index=index, prompt=f"p{index}") for index in range(size)]
        for n in range(1, 13):
            shards = [select_shard(items, i, n) for i in range(1, n + 1)]
            covered = sorted(item.index for shard in shards for item in shard)
            assert covered == list(range(size)), (size, n)  # every item exactly once
            assert max(len(shard) for shard in shards) - min(len(shard) for shard in shards) <= 1
            assert all(shard == sorted(shard, key=lambda item: item.index) for shard in shards)


def test_select_shard_works_on_planned_jobs_and_is_deterministic(tmp_path: Path) -> None:
    items = [BatchItem(index=index, prompt=f"p{index}") for index in range(5)]
    jobs = plan_batch(items, tmp_path, base_seed=0, ext="webm")
    assert [job.index for job in select_shard(jobs, 1, 2)] == [0, 2, 4]
    assert [job.index for job in select_shard(jobs, 2, 2)] == [1, 3]
    with pytest.raises(UsageError, match="shard='3/2'"):
        select_shard(jobs, 3, 2)


# ---------------------------------------------------------------------------------------------------
# Manifests.

PARAMS = {"steps": 4, "guidance": 7.5, "width": 64, "height": 64, "frames": 8, "fps": 8.0, "format": "webm"}
SOURCES = {"base": {"path": "presets/tiny-v1/base", "sha256": "ab" * 32}, "motion_adapter": "owner/name@main"}


def key_for(item: BatchItem, **overrides: object) -> str:
    kwargs: dict = {
        "item": item,
        "seed": 42,
        "params": PARAMS,
        "sources": SOURCES,
        "device": "cpu",
        "dtype": "float32",
    }
    kwargs.update(overrides)
    return render_key(**kwargs)


def test_manifest_path() -> None:
    assert manifest_path(Path("out/clip.webm")) == Path("out/clip.webm.json")
    assert manifest_path("out/frames/") == Path("out/frames.json")


def test_render_key_is_stable_and_covers_what_determines_the_pixels(tmp_path: Path) -> None:
    item = BatchItem(index=0, prompt="a fox", negative_prompt="blurry", source="p.txt:1")
    key = key_for(item)
    assert len(key) == 64
    assert key == key_for(item, params=dict(reversed(PARAMS.items())))  # key order does not matter
    assert key == key_for(item, device="cpu:0")
    assert key_for(item, device="cuda:0") == key_for(item, device="cuda:1")  # which GPU does not matter
    # Where the item sits in the file (index, line) is not a determinant; its text is.
    assert key == key_for(BatchItem(index=9, prompt="a fox", negative_prompt="blurry", source="q:7"))
    changed = [
        key_for(BatchItem(index=0, prompt="a cat", negative_prompt="blurry")),
        key_for(BatchItem(index=0, prompt="a fox")),
        key_for(item, seed=43),
        key_for(item, params={**PARAMS, "steps": 5}),
        key_for(item, sources={**SOURCES, "motion_adapter": "owner/name@v2"}),
        key_for(item, device="cuda"),
        key_for(item, dtype="float16"),
    ]
    assert len({key, *changed}) == len(changed) + 1


def test_render_key_hashes_the_input_images_content(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"one")
    item = BatchItem(index=0, prompt="wave", image=image)
    first = key_for(item)
    image.write_bytes(b"two")
    assert key_for(item) != first
    moved = tmp_path / "b.png"
    image.rename(moved)
    assert key_for(BatchItem(index=0, prompt="wave", image=moved)) == key_for(
        BatchItem(index=0, prompt="wave", image=moved)
    )
    assert key_for(BatchItem(index=0, prompt="wave", image=moved)) != first


def test_build_manifest_contents(tmp_path: Path) -> None:
    item = BatchItem(index=2, prompt="a fox", seed=42, source="p.jsonl:3")
    output = tmp_path / "fox.webm"
    manifest = build_manifest(
        item=item,
        seed=42,
        params=PARAMS,
        sources=SOURCES,
        device="cuda:0",
        dtype="float16",
        timings={"load": 1.23456, "image": 2.0, "animate": 3.5},
        output=output,
    )
    assert manifest["render_key"] == key_for(item, device="cuda:0", dtype="float16")
    assert manifest["layeranim_version"] == __version__
    assert manifest["seed"] == 42
    assert manifest["params"] == PARAMS
    assert manifest["sources"] == SOURCES
    assert manifest["device"] == "cuda:0"
    assert manifest["dtype"] == "float16"
    assert manifest["timings"] == {"load": 1.2346, "image": 2.0, "animate": 3.5}
    assert manifest["output"] == "fox.webm"
    assert manifest["item"]["prompt"] == "a fox"
    assert manifest["item"]["source"] == "p.jsonl:3"
    assert set(manifest["versions"]) >= {"python", "torch", "diffusers", "transformers"}
    assert manifest["versions"]["torch"] is not None
    assert "re-run" in manifest["note"]
    json.dumps(manifest)  # plain JSON


def test_build_manifest_rejects_values_json_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not JSON serialisable"):
        build_manifest(
            item=BatchItem(index=0, prompt="a"),
            seed=1,
            params={"scheduler": object()},
            sources={},
            device="cpu",
            dtype="float32",
            timings={},
            output=tmp_path / "a.webm",
        )


def test_write_manifest_is_atomic_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "clip.webm.json"
    write_manifest(path, {"render_key": "a", "path": tmp_path})
    assert read_manifest(path) == {"render_key": "a", "path": str(tmp_path)}
    write_manifest(path, {"render_key": "b"})
    assert read_manifest(path) == {"render_key": "b"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["clip.webm.json"]  # no temp files left


def test_read_manifest_tolerates_missing_and_corrupt_files(tmp_path: Path) -> None:
    assert read_manifest(tmp_path / "missing.json") is None
    assert read_manifest(write(tmp_path / "bad.json", "{not json")) is None
    assert read_manifest(write(tmp_path / "list.json", "[1, 2]")) is None


def test_is_finished(tmp_path: Path) -> None:
    output = tmp_path / "clip.webm"
    assert not is_finished(output, "k")  # nothing there
    write_manifest(manifest_path(output), {"render_key": "k"})
    assert not is_finished(output, "k")  # manifest without output
    output.write_bytes(b"video")
    assert is_finished(output, "k")
    assert not is_finished(output, "other")  # parameters changed
    manifest_path(output).unlink()
    assert not is_finished(output, "k")  # output without manifest
    write(manifest_path(output), "{truncated")
    assert not is_finished(output, "k")
    frames = tmp_path / "frames"  # a PNG-sequence folder output
    frames.mkdir()
    write_manifest(tmp_path / "frames.json", {"render_key": "k"})
    assert is_finished(frames, "k")


# ---------------------------------------------------------------------------------------------------
# run_batch with a fake render.


class FakeRenderer:
    """Writes a small file per job and its manifest; fails on chosen prompts."""

    def __init__(self, params: dict | None = None, fail: dict[str, Exception] | None = None) -> None:
        self.params = params or PARAMS
        self.fail = fail or {}
        self.calls: list[BatchJob] = []

    def key(self, job: BatchJob) -> str:
        return render_key(
            item=job.item, seed=job.seed, params=self.params, sources=SOURCES, device="cpu", dtype="float32"
        )

    def __call__(self, job: BatchJob) -> RenderResult:
        self.calls.append(job)
        if job.item.prompt in self.fail:
            raise self.fail[job.item.prompt]
        if job.output.exists() and not job.replace:
            raise AssertionError(f"run_batch let the render replace {job.output}")
        job.output.parent.mkdir(parents=True, exist_ok=True)
        job.output.write_text(f"{job.item.prompt} {job.seed} {self.params['steps']}")
        manifest = build_manifest(
            item=job.item,
            seed=job.seed,
            params=self.params,
            sources=SOURCES,
            device="cpu",
            dtype="float32",
            timings={"render": 0.01},
            output=job.output,
        )
        return RenderResult(output=job.output, manifest=manifest)


def three_jobs(tmp_path: Path) -> list[BatchJob]:
    path = write(tmp_path / "prompts.txt", "a paper lantern\na bad item\na red fox\n")
    return plan_batch(read_batch_file(path), tmp_path / "out", base_seed=7, ext="webm")


def test_run_batch_one_failure_does_not_stop_the_batch(tmp_path: Path) -> None:
    jobs = three_jobs(tmp_path)
    render = FakeRenderer(
        fail={"a bad item": UsageError("--frames 99 is outside 2..32; pick a value in range.")}
    )
    seen: list[ItemResult] = []
    started: list[tuple[int, int, int]] = []
    summary = run_batch(
        jobs,
        render,
        render_key_for=render.key,
        on_start=lambda job, position, total: started.append((job.index, position, total)),
        on_result=seen.append,
    )
    assert summary.exit_code == 1
    assert summary.counts == {"ok": 2, "failed": 1, "skipped": 0}
    assert seen == summary.results
    assert started == [(0, 0, 3), (1, 1, 3), (2, 2, 3)]
    ok, bad, fox = summary.results
    assert (ok.status, bad.status, fox.status) == ("ok", "failed", "ok")
    assert bad.error == "--frames 99 is outside 2..32; pick a value in range."
    assert bad.output is None and bad.manifest is None
    assert bad.label == "item 1 (prompts.txt:2)"
    for result, job in ((ok, jobs[0]), (fox, jobs[2])):
        assert result.output == job.output and result.output.is_file()
        assert result.manifest == manifest_path(job.output)
        assert read_manifest(result.manifest)["render_key"] == render.key(job)  # type: ignore[index]
        assert result.seed == derive_seed(7, job.index)
    assert not manifest_path(jobs[1].output).exists()
    line = json.loads(json.dumps(bad.to_json()))
    assert line == {
        "index": 1,
        "prompt": "a bad item",
        "status": "failed",
        "output": None,
        "manifest": None,
        "seed": derive_seed(7, 1),
        "error": "--frames 99 is outside 2..32; pick a value in range.",
        "seconds": line["seconds"],
        "source": "prompts.txt:2",
    }
    assert json.loads(json.dumps(ok.to_json()))["output"] == str(jobs[0].output)
    assert summary.to_json()["exit_code"] == 1


def test_run_batch_reports_unexpected_exceptions_by_type(tmp_path: Path) -> None:
    jobs = three_jobs(tmp_path)
    render = FakeRenderer(fail={"a red fox": RuntimeError("CUDA out of memory")})
    summary = run_batch(jobs, render, render_key_for=render.key)
    assert summary.results[2].error == "unexpected RuntimeError: CUDA out of memory"
    assert summary.exit_code == 1


def test_run_batch_exit_code_zero_when_all_succeed(tmp_path: Path) -> None:
    render = FakeRenderer()
    summary = run_batch(three_jobs(tmp_path), render, render_key_for=render.key)
    assert summary.exit_code == 0
    assert summary.counts == {"ok": 3, "failed": 0, "skipped": 0}
    assert BatchSummary().exit_code == 0


def test_run_batch_keyboard_interrupt_propagates(tmp_path: Path) -> None:
    render = FakeRenderer(fail={"a bad item": KeyboardInterrupt()})  # type: ignore[dict-item]
    with pytest.raises(KeyboardInterrupt):
        run_batch(three_jobs(tmp_path), render, render_key_for=render.key)


def test_rerun_skips_finished_items_and_retries_failed_ones(tmp_path: Path) -> None:
    jobs = three_jobs(tmp_path)
    first = FakeRenderer(fail={"a bad item": LayerAnimError("transient")})
    run_batch(jobs, first, render_key_for=first.key)
    before = {job.index: job.output.stat().st_mtime_ns for job in jobs if job.output.exists()}

    again = FakeRenderer()
    summary = run_batch(jobs, again, render_key_for=again.key)
    assert [result.status for result in summary.results] == ["skipped", "ok", "skipped"]
    assert [job.index for job in again.calls] == [1]
    assert summary.exit_code == 0
    assert summary.results[0].manifest == manifest_path(jobs[0].output)
    assert {i: jobs[i].output.stat().st_mtime_ns for i in before} == before  # untouched

    # skip_finished=False renders again, but never replaces without overwrite.
    forced = FakeRenderer()
    summary = run_batch(jobs, forced, render_key_for=forced.key, skip_finished=False)
    assert [result.status for result in summary.results] == ["failed"] * 3
    assert "exists and is already rendered; pass overwrite=True" in (summary.results[0].error or "")
    summary = run_batch(jobs, forced, render_key_for=forced.key, skip_finished=False, overwrite=True)
    assert [result.status for result in summary.results] == ["ok"] * 3
    assert all(job.replace for job in forced.calls)


def test_changed_parameters_render_again_and_replace(tmp_path: Path) -> None:
    jobs = three_jobs(tmp_path)
    first = FakeRenderer()
    run_batch(jobs, first, render_key_for=first.key)
    changed = FakeRenderer(params={**PARAMS, "steps": 8})
    summary = run_batch(jobs, changed, render_key_for=changed.key)
    assert [result.status for result in summary.results] == ["ok"] * 3
    assert all(job.replace for job in changed.calls)
    assert jobs[0].output.read_text().endswith(" 8")
    assert all(is_finished(job.output, changed.key(job)) for job in jobs)


def test_existing_output_without_manifest_is_never_replaced_silently(tmp_path: Path) -> None:
    jobs = three_jobs(tmp_path)
    jobs[1].output.parent.mkdir(parents=True)
    jobs[1].output.write_text("someone else's file")
    render = FakeRenderer()
    summary = run_batch(jobs, render, render_key_for=render.key)
    assert [result.status for result in summary.results] == ["ok", "failed", "ok"]
    assert "layeranim did not write it" in (summary.results[1].error or "")
    assert "overwrite" not in (summary.results[1].error or "")  # it would not help: never suggest it
    assert jobs[1].output.read_text() == "someone else's file"
    # Not even overwrite=True replaces a file layeranim did not write (issue 16) ...
    summary = run_batch(jobs, render, render_key_for=render.key, overwrite=True)
    assert [result.status for result in summary.results] == ["skipped", "failed", "skipped"]
    assert jobs[1].output.read_text() == "someone else's file"
    # ... but a file the folder's owned-marker lists (written by layeranim, manifest lost) is replaced.
    mark_owned(jobs[1].output.parent, [jobs[1].output])
    summary = run_batch(jobs, render, render_key_for=render.key, overwrite=True)
    assert [result.status for result in summary.results] == ["skipped", "ok", "skipped"]
    assert jobs[1].output.read_text() != "someone else's file"


def test_batch_outputs_and_manifests_are_marked_owned(tmp_path: Path) -> None:
    jobs = three_jobs(tmp_path)
    render = FakeRenderer()
    run_batch(jobs, render, render_key_for=render.key)
    owned = owned_entries(jobs[0].output.parent)
    for job in jobs:
        assert {job.output.name, manifest_path(job.output).name} <= owned


def test_render_key_disagreement_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    render = FakeRenderer()
    jobs = three_jobs(tmp_path)[:1]
    summary = run_batch(jobs, render, render_key_for=lambda job: "something else")
    assert summary.results[0].status == "ok"
    assert "render_key differs" in caplog.text


# ---------------------------------------------------------------------------------------------------
# The summary table.


def test_summary_table_rows_and_counts(tmp_path: Path) -> None:
    summary = BatchSummary(
        [
            ItemResult(0, "a [bold]fox[/bold]", "ok", tmp_path / "[x].webm", None, 1, seconds=1.5),
            ItemResult(1, "a bad item", "failed", None, None, 2, error="--frames 99 is outside 2..32"),
            ItemResult(2, "a candle", "skipped", tmp_path / "c.webm", None, 3),
        ]
    )
    console = Console(record=True, width=200, force_terminal=False)
    console.print(summary_table(summary))
    text = console.export_text()
    assert "a [bold]fox[/bold]" in text  # user text is not read as markup
    assert "[x].webm" in text
    assert "--frames 99 is outside 2..32" in text
    assert "1 ok, 1 failed, 1 skipped" in text
    for status in ("ok", "failed", "skipped"):
        assert status in text
    assert os.fspath(tmp_path / "c.webm") in text


def test_summary_off_a_terminal_is_one_plain_untruncated_line_per_item(tmp_path: Path) -> None:
    long_prompt = "a very long prompt " * 8
    long_seed = 2**63 - 1
    summary = BatchSummary(
        [
            ItemResult(
                0, long_prompt, "ok", tmp_path / "a" / "deep" / "folder" / "clip.webm", None, long_seed
            ),
            ItemResult(1, "a bad item", "failed", None, None, 2, error="--frames 99 is outside 2..32"),
        ]
    )
    lines = summary_lines(summary)
    assert len(lines) == 3  # one per item, then the counts
    assert f"seed {long_seed}" in lines[0] and long_prompt in lines[0]
    assert str(tmp_path / "a" / "deep" / "folder" / "clip.webm") in lines[0]
    assert lines[1].startswith("item 1: failed, seed 2") and "--frames 99 is outside 2..32" in lines[1]
    assert lines[2].startswith("1 ok, 1 failed, 0 skipped")
    assert not any("…" in line for line in lines)


# ---------------------------------------------------------------------------------------------------
# The examples, driven through a stand-in for `layeranim generate` built on this module (the real command
# is exercised end to end on the tiny preset in tests/test_cli_batch.py).

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "batch_render.sh"
CI_JOB = REPO / "examples" / "ci" / "render-assets.yml"

FAKE_LAYERANIM = """
import argparse, json, os, sys
from pathlib import Path
from layeranim.render.batch import (BatchJob, RenderResult, build_manifest, parse_shard, plan_batch,
                             read_batch_file, render_key, run_batch, select_shard)

Path(os.environ["FAKE_ARGV"]).write_text(json.dumps(sys.argv[1:]))
parser = argparse.ArgumentParser()
parser.add_argument("command", choices=["generate"])
parser.add_argument("--prompts", required=True)
parser.add_argument("--preset", required=True)
parser.add_argument("-o", required=True)
parser.add_argument("--json", action="store_true")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--shard")
args = parser.parse_args()
jobs = plan_batch(read_batch_file(args.prompts), args.o, base_seed=args.seed, ext="webm")
if args.shard:
    jobs = select_shard(jobs, *parse_shard(args.shard))

def key(job):
    return render_key(item=job.item, seed=job.seed, params={}, sources={}, device="cpu", dtype="float32")

def render(job):
    if job.item.prompt == os.environ.get("FAKE_FAIL"):
        raise RuntimeError("boom")
    job.output.write_bytes(b"webm")
    manifest = build_manifest(item=job.item, seed=job.seed, params={}, sources={}, device="cpu",
                              dtype="float32", timings={}, output=job.output)
    return RenderResult(job.output, manifest)

summary = run_batch(jobs, render, render_key_for=key,
                    on_result=lambda result: print(json.dumps(result.to_json()), flush=True))
sys.exit(summary.exit_code)
"""


def run_example(
    tmp_path: Path, command: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "fake_layeranim.py"
    fake.write_text(FAKE_LAYERANIM)
    full_env = {
        **os.environ,
        "LAYERANIM": f"{sys.executable} {fake}",
        "FAKE_ARGV": str(tmp_path / "argv.json"),
        **(env or {}),
    }
    return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=120)


def prompts_in_example() -> list[str]:
    return [item.prompt for item in read_batch_file(REPO / "examples" / "prompts.txt")]


needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@needs_bash
def test_batch_render_script_renders_then_skips(tmp_path: Path) -> None:
    outdir = tmp_path / "renders"
    done = run_example(tmp_path, ["bash", str(SCRIPT), str(outdir), "--seed", "7"])
    assert done.returncode == 0, done.stderr
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv == [
        "generate",
        "--prompts",
        str(REPO / "examples" / "prompts.txt"),
        "--preset",
        "tiny",
        "-o",
        f"{outdir}/",
        "--json",
        "--seed",
        "7",
    ]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["prompt"] for line in lines] == prompts_in_example()
    assert all(line["status"] == "ok" for line in lines)
    assert (outdir / "results.jsonl").read_text() == done.stdout
    for line in lines:
        assert Path(line["output"]).is_file()
        assert read_manifest(Path(line["manifest"]))["seed"] == derive_seed(7, line["index"])  # type: ignore[index]
    assert f"3 rendered, 0 skipped, 0 failed (exit 0); clips and manifests in {outdir}/" in done.stderr

    again = run_example(tmp_path, ["bash", str(SCRIPT), str(outdir), "--seed", "7"])
    assert again.returncode == 0
    assert [json.loads(line)["status"] for line in again.stdout.splitlines()] == ["skipped"] * 3
    assert "0 rendered, 3 skipped, 0 failed (exit 0)" in again.stderr


@needs_bash
def test_batch_render_script_passes_the_exit_code_through(tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    failing = prompts_in_example()[1]
    done = run_example(tmp_path, ["bash", str(SCRIPT), str(outdir)], env={"FAKE_FAIL": failing})
    assert done.returncode == 1
    statuses = [json.loads(line)["status"] for line in done.stdout.splitlines()]
    assert statuses == ["ok", "failed", "ok"]
    assert "2 rendered, 0 skipped, 1 failed (exit 1)" in done.stderr
    usage = run_example(tmp_path, ["bash", str(SCRIPT), str(outdir), "--shard", "3/2"])
    assert usage.returncode != 0


@needs_bash
def test_batch_render_script_shards_share_a_folder(tmp_path: Path) -> None:
    outdir = tmp_path / "renders"
    seen: list[int] = []
    for shard in ("1/2", "2/2"):
        done = run_example(tmp_path, ["bash", str(SCRIPT), str(outdir), "--shard", shard])
        assert done.returncode == 0, done.stderr
        results = outdir / f"results-shard-{shard.replace('/', '-of-')}.jsonl"
        assert results.read_text() == done.stdout
        seen += [json.loads(line)["index"] for line in done.stdout.splitlines()]
    assert sorted(seen) == list(range(len(prompts_in_example())))


def test_ci_job_renders_every_shard_and_keeps_the_manifests(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load(CI_JOB.read_text())
    job = workflow["jobs"]["render"]
    matrix = job["strategy"]["matrix"]
    (shards,) = matrix["shards"]
    assert sorted(matrix["shard"]) == list(range(1, shards + 1))  # the matrix covers every shard
    assert job["strategy"]["fail-fast"] is False
    render_step = next(step for step in job["steps"] if "batch_render.sh" in step.get("run", ""))
    upload = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"  # keep what rendered even when an item failed
    patterns = upload["with"]["path"].split()

    if shutil.which("bash") is None:
        pytest.skip("needs bash to run the render step")
    # Run the render step once per matrix entry, as the runner would (with a stand-in layeranim).
    env = {key: str(value) for key, value in workflow["env"].items() if "${{" not in str(value)}
    for shard in matrix["shard"]:
        command = (
            render_step["run"]
            .replace("${{ matrix.shard }}", str(shard))
            .replace("${{ matrix.shards }}", str(shards))
            .replace("examples/batch_render.sh renders", f"examples/batch_render.sh {tmp_path / 'renders'}")
        )
        assert "${{" not in command
        done = run_example(tmp_path, ["bash", "-euo", "pipefail", "-c", command], env=env)
        assert done.returncode == 0, done.stderr
    kept = {
        path.name for pattern in patterns for path in tmp_path.glob(pattern) if path.is_file()
    }  # what upload-artifact would keep
    outputs = sorted((tmp_path / "renders").glob("*.webm"))
    assert len(outputs) == len(prompts_in_example())
    for output in outputs:
        assert output.name in kept
        assert manifest_path(output).name in kept
    assert {f"results-shard-{shard}-of-{shards}.jsonl" for shard in matrix["shard"]} <= kept
