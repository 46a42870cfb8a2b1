"""The tiny preset: deterministic, complete, loadable through the normal loader, and honest about noise."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from layeranim.render import presets
from layeranim.render.components import ModelSpec, _emit_tiny_notice, load_components


def file_digests(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return presets.ensure_tiny_preset(tmp_path_factory.mktemp("preset") / "tiny")


def test_building_twice_gives_identical_bytes(tiny_root: Path, tmp_path: Path) -> None:
    again = presets.ensure_tiny_preset(tmp_path / "again")
    first, second = file_digests(tiny_root), file_digests(again)
    assert first == second
    assert {
        "base/model_index.json",
        "base/unet/diffusion_pytorch_model.safetensors",
        "base/vae/diffusion_pytorch_model.safetensors",
        "base/text_encoder/model.safetensors",
        "base/scheduler/scheduler_config.json",
        "layerdiffuse/layer_sd15_transparent_attn.safetensors",
        "layerdiffuse/transparent_encoder/config.json",
        "layerdiffuse/transparent_decoder/diffusion_pytorch_model.safetensors",
        "motion_adapter/config.json",
        "preset.json",
    } <= set(first)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_existing_preset_is_reused(tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(folder: Path) -> None:
        raise AssertionError("should not rebuild")

    monkeypatch.setattr(presets, "build_tiny_preset", fail)
    assert presets.ensure_tiny_preset(tiny_root) == tiny_root


def test_a_concurrent_build_that_finishes_first_wins(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "tiny"

    def build_while_another_process_finishes(folder: Path) -> None:
        shutil.copytree(tiny_root, folder)
        shutil.copytree(tiny_root, target)  # the other process renames its folder first

    monkeypatch.setattr(presets, "build_tiny_preset", build_while_another_process_finishes)
    assert presets.ensure_tiny_preset(target) == target
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_default_root_is_under_layeranim_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAYERANIM_HOME", str(tmp_path))
    assert presets.tiny_preset_root() == tmp_path / "presets" / presets.TINY_NAME


def test_layerdiffuse_file_has_the_real_key_layout_at_small_rank(tiny_root: Path) -> None:
    state_dict = load_file(tiny_root / "layerdiffuse" / "layer_sd15_transparent_attn.safetensors")
    # 2 down + 3 up + 1 mid spatial transformers, attn1 and attn2 each, 20 tensors per module
    assert len(state_dict) == 12 * 20
    assert {t.dtype for t in state_dict.values()} == {torch.float16}
    assert state_dict["hookers.layers.0.to_q_lora.0.down.weight"].shape == (
        presets.TINY_LAYERDIFFUSE_RANK,
        32,
    )
    assert state_dict["hookers.layers.1.to_k_lora.0.down.weight"].shape == (
        presets.TINY_LAYERDIFFUSE_RANK,
        32,
    )
    assert all(bool(t.any()) for t in state_dict.values())


def test_preset_loads_through_the_normal_loader_and_exercises_every_path(tiny_root: Path) -> None:
    spec = ModelSpec.for_preset("tiny", root=tiny_root)
    parts = load_components(spec, device=torch.device("cpu"), dtype=torch.float32)
    assert parts.tokenizer.model_max_length == 77
    assert parts.tokenizer("lower newer").input_ids == [21, 10, 2, 16, 9, 3, 2, 16, 22]
    assert parts.vae.config.block_out_channels == [32, 32, 32, 32]  # 8× latents
    assert len(parts.layerdiffuse_processors) == 12
    # zero-initialised layers of the real architecture were re-randomised
    assert bool(parts.transparent_decoder.latent_conv_in.weight.any())
    assert bool(parts.transparent_encoder.blocks[-1].weight.any())
    assert max(parts.transparent_decoder.config.block_out_channels) == 8

    # the LayerDiffuse weights change what the UNet predicts
    from diffusers import UNet2DConditionModel

    plain = UNet2DConditionModel.from_pretrained(tiny_root / "base", subfolder="unet").eval()
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    context = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with_layerdiffuse = parts.unet(sample, 10, encoder_hidden_states=context).sample
        without = plain(sample, 10, encoder_hidden_states=context).sample
    assert not torch.allclose(with_layerdiffuse, without, atol=1e-4)


def test_tiny_notice_is_logged_once(tiny_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert "noise" in presets.TINY_NOTICE
    _emit_tiny_notice.cache_clear()
    with caplog.at_level(logging.WARNING, logger="layeranim.render.components"):
        ModelSpec.for_preset("tiny", root=tiny_root)
        ModelSpec.for_preset("tiny", root=tiny_root)
    assert [r.getMessage() for r in caplog.records].count(presets.TINY_NOTICE) == 1
