"""Weights references, the default table and the hub cache, all offline (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from layeranim import weights
from layeranim.errors import UsageError, WeightsError
from layeranim.weights import WeightSource

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes], revision: str = "main") -> Path:
    """Lay files out the way huggingface_hub caches them (blobs + snapshot symlinks + refs)."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(COMMIT)
    snapshot = repo_dir / "snapshots" / COMMIT
    for name, data in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def test_default_table_is_complete_and_consistent() -> None:
    assert set(weights.DEFAULT_SOURCES) == set(weights.FAMILIES)
    for table in weights.DEFAULT_SOURCES.values():
        assert set(table) == set(weights.COMPONENTS)
        for source in table.values():
            assert source.revision  # explicit, so it can be pinned to a commit
            assert (source.filename is None) == (source.allow_patterns is not None)
    sd15 = weights.DEFAULT_SOURCES["sd15"]
    assert sd15["base"].repo_id == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert (
        sd15["transparent_attn"].ref
        == "LayerDiffusion/layerdiffusion-v1/layer_sd15_transparent_attn.safetensors"
    )
    assert sd15["motion_adapter"].repo_id == "guoyww/animatediff-motion-adapter-v1-5-2"
    assert weights.DEFAULT_SOURCES["sdxl"]["base"].repo_id == "stabilityai/stable-diffusion-xl-base-1.0"
    assert (
        weights.DEFAULT_SOURCES["sdxl"]["transparent_decoder"].filename
        == "vae_transparent_decoder.safetensors"
    )


def test_default_source_rejects_unknown_names() -> None:
    with pytest.raises(UsageError, match="family='sd3'"):
        weights.default_source("sd3", "base")
    with pytest.raises(UsageError, match="'vae'"):
        weights.default_source("sd15", "vae")


def test_parse_ref_forms(tmp_path: Path) -> None:
    local = tmp_path / "model.safetensors"
    local.write_bytes(b"x")
    assert weights.parse_ref(str(local)) == local
    assert weights.parse_ref("owner/name") == WeightSource("owner/name")
    assert weights.parse_ref("owner/name@v2") == WeightSource("owner/name", revision="v2")
    assert weights.parse_ref("owner/name/sub/file.ckpt") == WeightSource("owner/name", "sub/file.ckpt")
    assert weights.parse_ref("owner/name@abc/f.safetensors") == WeightSource(
        "owner/name", "f.safetensors", revision="abc"
    )
    folder = weights.parse_ref("owner/name/unet")
    assert isinstance(folder, WeightSource) and folder.subfolder == "unet" and folder.filename is None
    patterns = ("a.json",)
    assert weights.parse_ref("owner/name", allow_patterns=patterns).allow_patterns == patterns


@pytest.mark.parametrize("ref", ["./missing.safetensors", "/no/such/file.ckpt", "~/nope/x.ckpt", "justaname"])
def test_parse_ref_rejects_missing_paths_and_nonsense(ref: str) -> None:
    with pytest.raises(UsageError) as info:
        weights.parse_ref(ref)
    assert ref in str(info.value)


def test_missing_file_offline_names_files_repo_and_command(tmp_path: Path) -> None:
    source = weights.DEFAULT_SOURCES["sd15"]["transparent_attn"]
    assert not weights.is_cached(source, cache_dir=tmp_path)
    with pytest.raises(WeightsError) as info:
        weights.resolve(source, cache_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "layer_sd15_transparent_attn.safetensors" in message
    assert "LayerDiffusion/layerdiffusion-v1" in message
    assert "layeranim models download sd15 --component transparent_attn" in message
    assert "hf download LayerDiffusion/layerdiffusion-v1 layer_sd15_transparent_attn.safetensors" in message
    assert "HF_HUB_OFFLINE" in message


def test_missing_repo_offline_for_a_non_default_ref(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as info:
        weights.resolve("someone/adapter/mm.ckpt", cache_dir=tmp_path)
    assert "hf download someone/adapter mm.ckpt" in str(info.value)
    assert "layeranim models" not in str(info.value)


def test_cached_file_resolves_offline(tmp_path: Path) -> None:
    source = weights.DEFAULT_SOURCES["sd15"]["transparent_encoder"]
    fake_hub_cache(tmp_path, source.repo_id, {source.filename: b"weights"})
    assert weights.is_cached(source, cache_dir=tmp_path)
    path = weights.resolve(source, cache_dir=tmp_path)
    assert path.read_bytes() == b"weights"
    assert weights.resolve(source.ref, cache_dir=tmp_path) == path
    assert weights.file_sha256(path) == hashlib.sha256(b"weights").hexdigest()
    assert weights.describe_path(path) == f"{source.repo_id}@{COMMIT}/{source.filename}"
    # other files of the same repo are still missing
    assert not weights.is_cached(weights.DEFAULT_SOURCES["sd15"]["transparent_decoder"], cache_dir=tmp_path)


def test_folder_source_needs_every_pattern(tmp_path: Path) -> None:
    source = WeightSource("owner/diffusers-model", allow_patterns=("model_index.json", "unet/*", "vae/*"))
    snapshot = fake_hub_cache(
        tmp_path, source.repo_id, {"model_index.json": b"{}", "unet/config.json": b"{}"}
    )
    assert weights.missing_files(source, cache_dir=tmp_path) == ["vae/*"]
    assert weights.cached_path(source, cache_dir=tmp_path) is None
    with pytest.raises(WeightsError) as info:
        weights.resolve(source, cache_dir=tmp_path)
    assert "vae/*" in str(info.value) and "unet/*" not in str(info.value)
    assert "hf download owner/diffusers-model --include 'vae/*'" in str(info.value)

    fake_hub_cache(tmp_path, source.repo_id, {"vae/config.json": b"{}"})
    assert weights.is_cached(source, cache_dir=tmp_path)
    assert weights.resolve(source, cache_dir=tmp_path) == snapshot
    assert weights.describe_path(snapshot) == f"owner/diffusers-model@{COMMIT}"


def test_subfolder_ref_resolves_to_the_subfolder(tmp_path: Path) -> None:
    snapshot = fake_hub_cache(tmp_path, "owner/repo", {"unet/config.json": b"{}"})
    assert weights.resolve("owner/repo/unet", cache_dir=tmp_path) == snapshot / "unet"


def test_local_paths_pass_through_and_hash(tmp_path: Path) -> None:
    folder = tmp_path / "adapter"
    folder.mkdir()
    assert weights.resolve(folder) == folder
    file = tmp_path / "a.bin"
    file.write_bytes(b"abc")
    assert weights.file_sha256(file) == hashlib.sha256(b"abc").hexdigest()
    assert weights.describe_path(file) == str(file)


def test_layeranim_home_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAYERANIM_HOME", str(tmp_path))
    assert weights.layeranim_home() == tmp_path
    monkeypatch.delenv("LAYERANIM_HOME")
    assert weights.layeranim_home() == Path("~/.cache/layeranim").expanduser()


def test_hf_command_revision_and_patterns() -> None:
    source = WeightSource("o/n", allow_patterns=("a.json", "tok/*"), revision="abc")
    assert source.hf_command() == "hf download o/n a.json --include 'tok/*' --revision abc"
    assert WeightSource("o/n").hf_command() == "hf download o/n"
