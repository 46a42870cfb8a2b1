"""`layeranim models …`, `layeranim doctor` and the shared model options, through the CLI, offline."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import huggingface_hub
import pytest
from typer.testing import CliRunner

from layeranim import weights
from layeranim.cli import app
from layeranim.errors import UsageError
from layeranim.render import components, devices, settings
from layeranim.render.settings import ModelSettings

COMMIT = "b" * 40


@pytest.fixture
def hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty hub cache for this test (downloads are off: HF_HUB_OFFLINE=1 in conftest)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def cache_file(cache: Path, source: weights.WeightSource, data: bytes = b"weights") -> None:
    repo_dir = cache / f"models--{source.repo_id.replace('/', '--')}"
    blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = repo_dir / "snapshots" / COMMIT / source.path_in_repo
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error: ")]


def test_list_shows_every_default_and_what_is_cached(hub_cache: Path) -> None:
    cache_file(hub_cache, weights.DEFAULT_SOURCES["sd15"]["transparent_decoder"])
    result = run("models", "list")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["FAMILY", "COMPONENT", "REPO", "FILE", "REVISION", "CACHED"]
    assert len(lines) == 1 + len(weights.FAMILIES) * len(weights.COMPONENTS)
    decoder = next(line for line in lines if "layer_sd15_vae_transparent_decoder" in line)
    assert decoder.split()[-1] == "yes"
    assert next(line for line in lines if line.startswith("sd15") and " base " in line).split()[-1] == "no"
    assert str(hub_cache) in result.stderr


def test_list_json(hub_cache: Path) -> None:
    result = run("models", "list", "sd15", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["offline"] is True and report["cache_dir"] == str(hub_cache)
    assert [row["component"] for row in report["models"]] == list(weights.COMPONENTS)
    base = report["models"][0]
    assert base["repo_id"] == "stable-diffusion-v1-5/stable-diffusion-v1-5" and base["file"] is None
    assert base["revision"] == "main" and base["cached"] is False


def test_list_unknown_family_is_a_usage_error(hub_cache: Path) -> None:
    result = run("models", "list", "sd3")
    assert result.exit_code == 2 and result.stdout == ""
    assert error_lines(result.stderr) == [
        "Error: FAMILY 'sd3' is not a model family; use one of sd15, sdxl or all."
    ]


def test_download_offline_reports_what_is_missing_and_how_to_fetch_it(hub_cache: Path) -> None:
    result = run("models", "download", "sd15")
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = error_lines(result.stderr)
    assert "HF_HUB_OFFLINE=1" in line
    for repo in ("stable-diffusion-v1-5/stable-diffusion-v1-5", "LayerDiffusion/layerdiffusion-v1"):
        assert repo in line
    assert "layeranim models download sd15" in line
    assert "hf download LayerDiffusion/layerdiffusion-v1 layer_sd15_transparent_attn.safetensors" in line
    assert "Traceback" not in result.stderr


def test_download_one_missing_component_offline(hub_cache: Path) -> None:
    result = run("models", "download", "sdxl", "--component", "transparent_attn")
    assert result.exit_code == 1
    (line,) = error_lines(result.stderr)
    assert "layer_xl_transparent_attn.safetensors" in line
    assert "layeranim models download sdxl --component transparent_attn" in line


def test_download_of_cached_weights_prints_their_paths(hub_cache: Path) -> None:
    for part in ("transparent_encoder", "transparent_decoder"):
        cache_file(hub_cache, weights.DEFAULT_SOURCES["sd15"][part])
    result = run("models", "download", "-c", "transparent_encoder", "-c", "transparent_decoder", "--quiet")
    assert result.exit_code == 0, result.stderr
    paths = result.stdout.splitlines()
    assert [Path(p).name for p in paths] == [
        "layer_sd15_vae_transparent_encoder.safetensors",
        "layer_sd15_vae_transparent_decoder.safetensors",
    ]
    assert all(Path(p).is_file() for p in paths)


def test_download_unknown_component(hub_cache: Path) -> None:
    result = run("models", "download", "sd15", "--component", "vae")
    assert result.exit_code == 2
    assert error_lines(result.stderr)[0].startswith("Error: --component 'vae' is not a component")


def test_path_never_downloads(hub_cache: Path) -> None:
    missing = run("models", "path", "motion_adapter")
    assert missing.exit_code == 1 and missing.stdout == ""
    (line,) = error_lines(missing.stderr)
    assert "guoyww/animatediff-motion-adapter-v1-5-2" in line
    assert "layeranim models download sd15 --component motion_adapter" in line

    source = weights.DEFAULT_SOURCES["sdxl"]["transparent_decoder"]
    cache_file(hub_cache, source)
    found = run("models", "path", "transparent_decoder", "--family", "sdxl")
    assert found.exit_code == 0
    assert Path(found.stdout.strip()).read_bytes() == b"weights"
    assert run("models", "path", "base", "--family", "all").exit_code == 2


def test_doctor_json_and_text(hub_cache: Path) -> None:
    result = run("doctor", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["devices"]["available"][-1] == "cpu"
    assert report["devices"]["dtypes"]["cpu"] == {"fp32": True, "fp16": False, "bf16": True}
    assert report["libraries"]["torch"] and report["libraries"]["diffusers"]
    assert report["hub_cache"] == str(hub_cache)
    assert len(report["default_weights"]) == len(weights.FAMILIES) * len(weights.COMPONENTS)
    assert {codec["codec"] for codec in report["video"]["codecs"]} >= {"libvpx-vp9", "prores_ks"}

    text = run("doctor")
    assert text.exit_code == 0
    assert "device:" in text.stdout and "hub cache:" in text.stdout and "libvpx-vp9" in text.stdout


def test_model_option_constants_mirror_the_library() -> None:
    # The CLI's options read these from the torch-free settings module; the hub-backed table must agree.
    assert settings.FAMILIES == weights.FAMILIES
    assert settings.DEVICE_CHOICES == devices.DEVICE_CHOICES
    assert settings.PRESETS == components.PRESETS


def test_model_settings_spec(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = ModelSettings(family="SDXL", base="me/my-sdxl").spec()
    assert spec.family == "sdxl" and spec.base == "me/my-sdxl" and spec.preset is None
    with pytest.raises(UsageError, match="preset='tiny' is SD1"):
        ModelSettings(preset="tiny", family="sdxl")
    with pytest.raises(UsageError, match="preset='big'"):
        ModelSettings(preset="big")
    monkeypatch.setenv("LAYERANIM_HOME", str(tmp_path))
    spec = ModelSettings(preset="tiny", motion_adapter="owner/adapter").spec()
    assert spec.base == tmp_path / "presets" / "tiny-v1" / "base"
    assert spec.motion_adapter == "owner/adapter"
