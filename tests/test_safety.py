"""`layeranim.safety`: owned folders, containment, templates, size limits, OS errors, stale temporaries,
non-UTF-8 text and refused pickles (issue 16)."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from layeranim import safety
from layeranim.cli import app
from layeranim.errors import LayerAnimError, OutputExistsError, UsageError, WeightsError
from layeranim.training.synth import make_synthetic_dataset

GIB = 1 << 30


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------------------------------------------
# Owned folders


def test_synth_overwrite_keeps_the_users_files(tmp_path: Path) -> None:
    """The reported data loss: `dataset synth clips/ --overwrite` deleted thesis.txt."""
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "thesis.txt").write_text("four years of work")
    with pytest.raises(UsageError) as caught:
        make_synthetic_dataset(clips, clips=1, frames=2, format="mkv", overwrite=True)
    message = str(caught.value)
    assert "thesis.txt" in message and str(clips) in message
    assert "--overwrite" not in message and "overwrite=True" not in message
    assert not isinstance(caught.value, OutputExistsError)
    # Without --overwrite the refusal must not recommend the flag either.
    with pytest.raises(UsageError) as caught:
        make_synthetic_dataset(clips, clips=1, frames=2, format="mkv")
    assert "--overwrite" not in str(caught.value)
    assert (clips / "thesis.txt").read_text() == "four years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips"]  # no staging folder left behind


def test_synth_replaces_its_own_folder_and_marks_it(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    first = make_synthetic_dataset(clips, clips=2, frames=2, format="mkv", seed=1)
    owned = safety.owned_entries(clips)
    assert owned == {"clip_000.mkv", "clip_000.txt", "clip_001.mkv", "clip_001.txt"}
    assert [p.name for p in first.clips] == ["clip_000.mkv", "clip_001.mkv"]
    with pytest.raises(OutputExistsError, match="overwrite=True"):  # its own folder: overwrite is the fix
        make_synthetic_dataset(clips, clips=1, frames=2, format="mkv")
    make_synthetic_dataset(clips, clips=1, frames=2, format="mkv", seed=2, overwrite=True)
    assert sorted(p.name for p in clips.iterdir()) == [safety.OWNED_MARKER, "clip_000.mkv", "clip_000.txt"]
    # A user file added later makes the folder foreign again.
    (clips / "notes.md").write_text("mine")
    with pytest.raises(UsageError, match=r"notes\.md"):
        make_synthetic_dataset(clips, clips=1, frames=2, format="mkv", overwrite=True)
    assert (clips / "notes.md").read_text() == "mine"


def test_synth_overwrite_through_the_cli_is_one_line_without_the_flag_advice(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "thesis.txt").write_text("mine")
    result = CliRunner().invoke(app, ["dataset", "synth", str(clips), "--overwrite", "--clips", "1"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "thesis.txt" in lines[0], lines
    assert "--overwrite" not in lines[0]
    assert (clips / "thesis.txt").read_text() == "mine"


def test_replace_folder_contents_keeps_the_old_folder_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with safety.replace_folder_contents(target) as staging:
        (staging / "a.png").write_bytes(b"1")
        (staging / "sub").mkdir()
        (staging / "sub" / "b.png").write_bytes(b"2")
    assert safety.owned_entries(target) == {"a.png", "sub", "sub/b.png"}
    before = _tree(target)
    with pytest.raises(RuntimeError), safety.replace_folder_contents(target, overwrite=True) as staging:
        (staging / "c.png").write_bytes(b"3")
        raise RuntimeError("render failed")
    assert _tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_folder_contents_rechecks_for_files_that_arrive_while_writing(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with safety.replace_folder_contents(target) as staging:
        (staging / "a.png").write_bytes(b"1")
    with pytest.raises(UsageError, match=r"late\.txt"):  # noqa: SIM117
        with safety.replace_folder_contents(target, overwrite=True) as staging:
            (staging / "a.png").write_bytes(b"new")
            (target / "late.txt").write_text("user file written meanwhile")
    assert (target / "late.txt").exists() and (target / "a.png").read_bytes() == b"1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_presumed_owned_keeps_older_outputs_replaceable(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "frame_00000.png").write_bytes(b"old")  # written before layeranim kept markers
    (frames / "notes.txt").write_text("mine")
    is_frame = lambda entry: entry.endswith(".png") and "/" not in entry  # noqa: E731
    with pytest.raises(UsageError, match=r"notes\.txt") as caught:
        safety.check_replaceable(frames, presumed_owned=is_frame)
    assert "frame_00000.png" not in str(caught.value)
    (frames / "notes.txt").unlink()
    with safety.replace_folder_contents(frames, overwrite=True, presumed_owned=is_frame) as staging:
        (staging / "frame_00000.png").write_bytes(b"new")
    assert (frames / "frame_00000.png").read_bytes() == b"new"


def test_replace_folder_contents_puts_the_old_folder_back_when_the_swap_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out"
    with safety.replace_folder_contents(target) as staging:
        (staging / "a.png").write_bytes(b"1")
    real_replace = os.replace

    def failing_replace(src: object, dst: object) -> None:
        if Path(str(dst)) == target and ".partial" in str(src):  # the staging folder cannot move in
            raise OSError(errno.EIO, "Input/output error", str(dst))
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", failing_replace)
    with (
        pytest.raises(LayerAnimError, match="Input/output error"),
        safety.replace_folder_contents(target, overwrite=True) as staging,
    ):
        (staging / "a.png").write_bytes(b"2")
    monkeypatch.undo()
    assert (target / "a.png").read_bytes() == b"1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_foreign_entries_ignore_layeranim_temporaries_and_see_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "frame_00000.png").write_bytes(b"x")
    safety.mark_owned(tmp_path, ["frame_00000.png"])
    (tmp_path / ".frame.123-abcdef01.partial.png").write_bytes(b"x")
    assert safety.foreign_entries(tmp_path) == []
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    assert safety.foreign_entries(tmp_path) == ["empty", "full/x.txt"]
    safety.mark_owned(tmp_path, [tmp_path / "full" / "x.txt"])
    assert safety.foreign_entries(tmp_path) == ["empty"]
    safety.check_replaceable(tmp_path / "missing")  # nothing there: nothing to protect


def test_check_replaceable_refuses_a_file_or_a_link(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="a file"):
        safety.check_replaceable(tmp_path / "file")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UsageError, match="a link"):
        safety.check_replaceable(tmp_path / "link")


# ---------------------------------------------------------------------------------------------------
# Containment


@pytest.mark.parametrize(
    "relative, needle",
    [
        ("../../victim.webm", "'..'"),
        ("sub/../../victim.webm", "'..'"),
        ("..", "'..'"),
        ("/tmp/victim.webm", "absolute"),
        ("\\\\server\\share\\victim.webm", "absolute"),
    ],
)
def test_resolve_inside_refuses_escapes(tmp_path: Path, relative: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle) as caught:
        safety.resolve_inside(tmp_path, relative, item="line 3")
    assert str(caught.value).startswith("line 3: ") and repr(relative) in str(caught.value)
    assert "allow_outside=True" in str(caught.value)


def test_resolve_inside_follows_symlinks(tmp_path: Path) -> None:
    root, outside = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    (root / "inner").mkdir()
    (root / "alias").symlink_to(root / "inner")
    (root / "victim.webm").symlink_to(outside / "victim.webm")
    with pytest.raises(UsageError, match="symlink"):
        safety.resolve_inside(root, "escape/clip.webm")
    with pytest.raises(UsageError, match="symlink"):
        safety.resolve_inside(root, "victim.webm")
    assert safety.resolve_inside(root, "alias/clip.webm") == root / "alias" / "clip.webm"
    assert safety.resolve_inside(root, "a/b/clip.webm") == root / "a" / "b" / "clip.webm"
    assert safety.resolve_inside(root, "..hidden.webm") == root / "..hidden.webm"  # a name, not a step


def test_resolve_inside_allow_outside_is_the_opt_in(tmp_path: Path) -> None:
    assert (
        safety.resolve_inside(tmp_path / "out", "../x.webm", allow_outside=True) == tmp_path / "out/../x.webm"
    )
    assert safety.resolve_inside(tmp_path, "/abs/x.webm", allow_outside=True) == Path("/abs/x.webm")


# ---------------------------------------------------------------------------------------------------
# Templates


@pytest.mark.parametrize(
    "template",
    [
        "out/{index}-{slug}.{ext}",
        "out/{index:03d}_{seed:08d}.{ext}",
        "{seed:012d}.webm",
        "{index:d}.webm",
        "plain.webm",
        "braces {{literal}} {slug}.webm",
    ],
)
def test_templates_that_are_accepted(template: str) -> None:
    safety.validate_template(template)


@pytest.mark.parametrize(
    "template, needle",
    [
        ("{slug!r:>99999999}", "conversion"),
        ("{slug!s}", "conversion"),
        ("{slug!a}.webm", "conversion"),
        ("{slug:>9999999999}", "a format spec does not fit"),
        ("{slug:.20}", "a format spec does not fit"),
        ("{index:>5}", "only format spec allowed is zero padding"),
        ("{index:3d}", "zero padding"),
        ("{index:,d}", "zero padding"),
        ("{seed:x}", "zero padding"),
        ("{index:0{seed}d}", "zero padding"),
        ("{index:013d}", "at most 12"),
        ("{index:0999d}", "at most 12"),
        ("{seed.real}", "unknown field {seed.real}"),
        ("{slug[0]}", "unknown field {slug[0]}"),
        ("{}", "unknown field {}"),
        ("{0}", "unknown field {0}"),
        ("{name}", "the fields are"),
        ("{slug", "not a valid template"),
        ("}", "not a valid template"),
    ],
)
def test_templates_that_are_refused(template: str, needle: str) -> None:
    started = time.monotonic()
    with pytest.raises(UsageError, match=re.escape(needle)) as caught:
        safety.validate_template(template, option="-o")
    assert str(caught.value).startswith("-o ")
    assert time.monotonic() - started < 1.0


def test_format_template_checks_the_resulting_name_length() -> None:
    values = {"index": 3, "slug": "a-fox", "seed": 42, "ext": "webm"}
    assert safety.format_template("out/{index:04d}-{slug}-{seed}.{ext}", values) == "out/0003-a-fox-42.webm"
    with pytest.raises(UsageError, match="255"):
        safety.format_template("x" * 250 + "{seed:012d}.{ext}", values)
    with pytest.raises(UsageError, match="255"):
        safety.check_name_length("dir/" + "é" * 128 + ".webm")  # 256 bytes in UTF-8
    safety.check_name_length("dir/" + "é" * 120 + ".webm")


# ---------------------------------------------------------------------------------------------------
# Size limits


def test_huge_render_sizes_are_refused_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(UsageError, match="width 100000 is over the limit of 8192"):
        safety.check_render_size(100000, 100000, 16)
    with pytest.raises(UsageError, match="height 20000"):
        safety.check_render_size(512, 20000, 16)
    with pytest.raises(UsageError, match="frames 10000"):
        safety.check_render_size(512, 512, 10000)
    with pytest.raises(UsageError, match="resize=100000x100000"):
        safety.check_image_size(100000, 100000)
    assert time.monotonic() - started < 1.0


def test_render_size_against_available_memory() -> None:
    safety.check_render_size(512, 512, 16, available=64 * GIB)
    with pytest.raises(UsageError, match=r"needs at least [\d.]+ GiB of memory but only 1\.0 GiB"):
        safety.check_render_size(4096, 4096, 16, available=GIB)
    with pytest.raises(UsageError, match="choose a smaller size"):
        safety.check_image_size(8000, 8000, 300, available=8 * GIB)
    safety.check_image_size(1920, 1080, 300, available=8 * GIB)


def test_render_estimate_is_a_lower_bound_of_what_must_exist() -> None:
    """Recomputed here: the uint8 frames alone, and the decoder's 128-channel full-size activations."""
    width, height, frames = 512, 384, 16
    estimate = safety.estimate_render_bytes(width, height, frames, bytes_per_element=2, decode_chunk=4)
    assert estimate > frames * width * height * 4  # the output frames
    assert estimate > 4 * width * height * 128 * 2  # one decode chunk's activations in fp16
    assert estimate < 4 * GIB  # and not absurd for an ordinary render


def test_available_memory_is_a_positive_number_or_unknown() -> None:
    available = safety.available_memory()
    assert available is None or available > 0


# ---------------------------------------------------------------------------------------------------
# OS errors


@pytest.mark.parametrize(
    "code, needle",
    [
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "operation not permitted"),
        (errno.EROFS, "read-only"),
        (errno.ENOTDIR, "not a folder"),
        (errno.ENOSPC, "no space left on device; free space or choose another location"),
        (errno.ENAMETOOLONG, "too long"),
        (errno.EISDIR, "it is a folder"),
        (errno.ENOENT, "no such file"),
    ],
)
def test_os_errors_become_one_line(code: int, needle: str) -> None:
    error = safety.translate_os_error(OSError(code, os.strerror(code)), "/data/out.webm")
    assert type(error) is LayerAnimError and error.exit_code == 1
    assert str(error).startswith("cannot write '/data/out.webm': ") and needle in str(error)
    assert "\n" not in str(error)


def test_os_errors_context_translates_a_real_failure(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(LayerAnimError, match="not a folder") as caught, safety.os_errors(tmp_path / "file/x"):
        (tmp_path / "file" / "x").write_text("y")
    assert isinstance(caught.value.__cause__, NotADirectoryError)


def test_check_writable_dir_names_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    safety.check_writable_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []  # the probe is gone
    with pytest.raises(UsageError, match="does not exist"):
        safety.check_writable_dir(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        safety.check_writable_dir(tmp_path / "file")
    real_open = open

    def read_only_open(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        if "x" in mode:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return real_open(file, mode, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", read_only_open)
    with pytest.raises(LayerAnimError, match="read-only") as caught:
        safety.check_writable_dir(tmp_path)
    assert caught.value.exit_code == 1 and str(tmp_path) in str(caught.value)


def test_torch_save_disk_full_is_recognised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exc = RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")
    monkeypatch.setattr(safety, "_disk_nearly_full", lambda path: True)
    assert "no space left" in str(safety.translate_os_error(exc, tmp_path / "ckpt"))
    monkeypatch.setattr(safety, "_disk_nearly_full", lambda path: False)
    assert "the write failed part-way" in str(safety.translate_os_error(exc, tmp_path / "ckpt"))


def test_out_of_memory_is_recognised_with_hints() -> None:
    cuda_oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.50 GiB (GPU 0; 8 GiB total)")
    assert safety.is_out_of_memory(cuda_oom) and safety.is_out_of_memory(MemoryError())
    assert safety.is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"))
    assert not safety.is_out_of_memory(RuntimeError("shape mismatch"))
    hint = safety.oom_hint(cuda_oom, device="cuda")
    assert hint.startswith("out of memory on cuda (tried to allocate 2.50 GiB)")
    assert "offload=" in hint and "\n" not in hint
    assert "offload=" not in safety.oom_hint(MemoryError(), device="cpu")


def test_known_failure_maps_ordinary_failures_and_leaves_bugs_alone() -> None:
    disk_full = OSError(errno.ENOSPC, "No space left on device", "/data/out.webm")
    assert str(safety.known_failure(disk_full)) == (
        "cannot write '/data/out.webm': no space left on device; free space or choose another location."
    )
    oom = safety.known_failure(torch.OutOfMemoryError("CUDA out of memory."), device="cuda")
    assert oom is not None and str(oom).startswith("out of memory on cuda;")
    refused = safety.known_failure(pickle.UnpicklingError("Unsupported global: GLOBAL os.system"))
    assert isinstance(refused, WeightsError) and "os.system" in str(refused)
    assert safety.known_failure(RuntimeError("inline_container.cc:672 failed writing")) is not None
    denied = safety.known_failure(PermissionError(errno.EACCES, "Permission denied", "/data/in.webm"))
    assert str(denied).startswith("cannot use '/data/in.webm': permission denied")
    assert safety.known_failure(TypeError("a bug")) is None
    assert safety.known_failure(KeyError("x")) is None


# ---------------------------------------------------------------------------------------------------
# Stale temporaries


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_clean_stale_partials_removes_dead_writers_only(tmp_path: Path) -> None:
    target = tmp_path / "clip.webm"
    dead = tmp_path / f".clip.{_dead_pid()}-0123abcd.partial.webm"
    live = tmp_path / f".clip.{os.getpid()}-0123abcd.partial.webm"
    old_style_old = tmp_path / ".clip.deadbeef.partial.webm"
    old_style_new = tmp_path / ".clip.cafebabe.partial.webm"
    other_target = tmp_path / ".other.deadbeef.partial.webm"
    user_file = tmp_path / "clip.partial.webm"
    for path in (dead, live, old_style_old, old_style_new, other_target, user_file):
        path.write_bytes(b"x" * 10)
    stamp = time.time() - 7200
    os.utime(old_style_old, (stamp, stamp))
    os.utime(other_target, (stamp, stamp))
    removed = safety.clean_stale_partials(target, max_age_s=3600)
    assert sorted(removed) == sorted([dead, old_style_old])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, old_style_new, other_target, user_file)
    )


def test_clean_stale_partials_handles_folder_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "frames"
    staging = tmp_path / f".frames.{_dead_pid()}-0123abcd.partial"
    staging.mkdir()
    (staging / "frame_00000.png").write_bytes(b"x")
    old = tmp_path / f".frames.{_dead_pid()}-0123abcd.old"
    old.mkdir()
    pattern_frames = tmp_path / f".{_dead_pid()}-0123abcd.partial-frames"
    pattern_frames.mkdir()
    assert sorted(safety.clean_stale_partials(target)) == sorted([staging, old, pattern_frames])
    assert list(tmp_path.iterdir()) == []


def test_partial_name_carries_the_pid_and_the_extension(tmp_path: Path) -> None:
    name = safety.partial_name(tmp_path / "clip.webm")
    assert name.parent == tmp_path and name.suffix == ".webm"
    assert name.name.startswith(f".clip.{os.getpid()}-") and ".partial" in name.name
    assert safety.clean_stale_partials(tmp_path / "clip.webm") == []  # a live writer's name
    name.write_bytes(b"x")
    assert safety.clean_stale_partials(tmp_path / "clip.webm", pid_alive=lambda pid: False) == [name]


# ---------------------------------------------------------------------------------------------------
# Text and checkpoints


def test_decode_prompt_arg_refuses_undecodable_bytes() -> None:
    assert safety.decode_prompt_arg("a red fox, ünïcode ✓", "prompt") == "a red fox, ünïcode ✓"
    raw = b"caf\xe9 au lait".decode("utf-8", "surrogateescape")  # Latin-1 bytes on a UTF-8 system
    with pytest.raises(UsageError) as caught:
        safety.decode_prompt_arg(raw, "negative_prompt (-n)")
    assert str(caught.value).startswith(
        "negative_prompt (-n) is not valid UTF-8 text (byte 0xe9 at character 4)"
    )
    with pytest.raises(UsageError, match=r"prompts\.txt line 2 .*U\+D800"):
        safety.decode_prompt_arg("\ud800", "prompts.txt line 2")


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (os.getcwd, ())  # harmless, but a global that weights_only loading refuses


def test_unsafe_checkpoint_message_never_suggests_weights_only_false(tmp_path: Path) -> None:
    path = tmp_path / "motion.ckpt"
    with path.open("wb") as handle:
        torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Payload()}, handle)
    with pytest.raises(pickle.UnpicklingError) as caught:
        torch.load(path, map_location="cpu", weights_only=True)
    # torch's own advice, which we must not repeat
    assert re.search(r"weights_only.{0,20}False", str(caught.value).replace("`", ""))
    assert safety.is_unsafe_pickle_error(caught.value)
    assert not safety.is_unsafe_pickle_error(pickle.UnpicklingError("invalid load key, 'x'."))  # corrupt
    error = safety.unsafe_checkpoint_error(caught.value, path)
    assert isinstance(error, WeightsError) and error.exit_code == 1
    message = str(error)
    assert "weights_only" not in message and "False" not in message and "\n" not in message
    assert str(path) in message and "getcwd" in message and "safetensors" in message


def test_owned_marker_is_json_listing_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "a.webm").write_bytes(b"x")
    marker = safety.mark_owned(tmp_path, [tmp_path / "a.webm", "sub/b.webm"])
    data = json.loads(marker.read_text())
    assert data == {"format": "layeranim-owned/1", "files": ["a.webm", "sub", "sub/b.webm"]}
    (marker).write_text("not json")
    assert safety.owned_entries(tmp_path) == set()
