"""ModelSpec, load_components and the motion-adapter loader (incl. original AnimateDiff files), offline."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch
from diffusers import MotionAdapter, StableDiffusionPipeline
from safetensors.torch import save_file

from layeranim import weights
from layeranim.errors import StateDictMismatchError, UsageError, WeightsError
from layeranim.render import components
from layeranim.render.components import ModelSpec, load_components, load_motion_adapter
from layeranim.render.presets import ensure_tiny_preset

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_tiny_preset(tmp_path_factory.mktemp("preset") / "tiny")


@pytest.fixture
def empty_hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_spec_validation_and_defaults(tiny_root: Path) -> None:
    with pytest.raises(UsageError, match="family='sd2'"):
        ModelSpec(family="sd2")
    with pytest.raises(UsageError, match="preset='huge'"):
        ModelSpec.for_preset("huge", root=tiny_root)
    spec = ModelSpec(family="sdxl")
    assert spec.ref("base") == weights.DEFAULT_SOURCES["sdxl"]["base"]
    spec = ModelSpec.for_preset("tiny", root=tiny_root, motion_adapter="owner/adapter", base=None)
    assert spec.motion_adapter == "owner/adapter"
    assert spec.base == tiny_root / "base"


def test_load_components_freezes_and_records_sources(tiny_root: Path) -> None:
    parts = load_components(ModelSpec.for_preset("tiny", root=tiny_root), device=CPU, dtype=torch.bfloat16)
    for model in (
        parts.unet,
        parts.vae,
        parts.text_encoder,
        parts.transparent_encoder,
        parts.transparent_decoder,
    ):
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())
        assert next(model.parameters()).dtype == torch.bfloat16
    assert parts.tokenizer_2 is None and parts.text_encoder_2 is None
    processor = next(iter(parts.layerdiffuse_processors.values()))
    assert processor.temporal_i.weight.dtype == torch.bfloat16
    assert parts.sources["preset"] == "tiny"
    assert parts.sources["base"] == str(tiny_root / "base")
    assert re.fullmatch(r"[0-9a-f]{64}", parts.sources["transparent_attn.sha256"])
    assert type(parts.scheduler).__name__ == "EulerAncestralDiscreteScheduler"


def test_not_a_diffusers_folder(tiny_root: Path, tmp_path: Path) -> None:
    spec = ModelSpec.for_preset("tiny", root=tiny_root, base=tmp_path)
    with pytest.raises(WeightsError, match="not a diffusers sd15 folder"):
        load_components(spec, device=CPU, dtype=torch.float32)


def test_wrong_transparent_attn_file(tiny_root: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.safetensors"
    save_file({"hookers.layers.0.nonsense": torch.zeros(2)}, str(bogus))
    spec = ModelSpec.for_preset("tiny", root=tiny_root, transparent_attn=bogus)
    with pytest.raises(StateDictMismatchError):
        load_components(spec, device=CPU, dtype=torch.float32)


def test_single_file_base_offline_without_default_configs(
    tiny_root: Path, tmp_path: Path, empty_hub_cache: Path
) -> None:
    checkpoint = tmp_path / "community.safetensors"
    save_file({"x": torch.zeros(1)}, str(checkpoint))
    spec = ModelSpec.for_preset("tiny", root=tiny_root, base=checkpoint)
    with pytest.raises(WeightsError) as info:
        load_components(spec, device=CPU, dtype=torch.float32)
    message = str(info.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message
    assert "layeranim models download sd15 --component base" in message


def test_single_file_base_uses_the_cached_default_repo_as_config(
    tiny_root: Path, tmp_path: Path, empty_hub_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Put a copy of the tiny base where the default SD1.5 repo would be cached.
    default = weights.DEFAULT_SOURCES["sd15"]["base"]
    repo_dir = empty_hub_cache / f"models--{default.repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / ("a" * 40)
    shutil.copytree(tiny_root / "base", snapshot)
    for name in ("feature_extractor/preprocessor_config.json", "tokenizer/vocab.json"):
        (snapshot / name).parent.mkdir(exist_ok=True)
        (snapshot / name).write_text("{}")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("a" * 40)
    assert weights.is_cached(default)

    seen: dict[str, Any] = {}

    def fake_from_single_file(path: str, **kwargs: Any) -> StableDiffusionPipeline:
        seen.update(kwargs, path=path)
        return StableDiffusionPipeline.from_pretrained(tiny_root / "base", safety_checker=None)

    monkeypatch.setattr(StableDiffusionPipeline, "from_single_file", fake_from_single_file)
    checkpoint = tmp_path / "community.safetensors"
    save_file({"x": torch.zeros(1)}, str(checkpoint))
    parts = load_components(
        ModelSpec.for_preset("tiny", root=tiny_root, base=checkpoint), device=CPU, dtype=torch.float32
    )
    assert seen["path"] == str(checkpoint)
    assert Path(seen["config"]) == snapshot
    assert seen["local_files_only"] is True and seen["safety_checker"] is None
    assert len(parts.layerdiffuse_processors) == 12
    assert "base.sha256" in parts.sources


# ---------------------------------------------------------------------------------------------------
# Motion adapters.


def tiny_adapter(use_mid_block: bool = True, max_len: int = 32) -> MotionAdapter:
    torch.manual_seed(0)
    return MotionAdapter(
        block_out_channels=(32, 64),
        motion_layers_per_block=2,
        motion_num_attention_heads=4,
        motion_norm_num_groups=32,
        motion_max_seq_length=max_len,
        use_motion_mid_block=use_mid_block,
    )


def to_original_layout(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers MotionAdapter keys → original AnimateDiff keys (the reverse of diffusers' rules)."""
    original = {}
    for key, tensor in state_dict.items():
        key = re.sub(r"(motion_modules\.\d+)\.", r"\1.temporal_transformer.", key)
        if key.endswith("pos_embed.pe"):
            stem = key.removesuffix("pos_embed.pe")
            original[f"{stem}attention_blocks.0.pos_encoder.pe"] = tensor.clone()
            original[f"{stem}attention_blocks.1.pos_encoder.pe"] = tensor.clone()
            continue
        for new, old in ((".norm1", ".norms.0"), (".norm2", ".norms.1"), (".norm3", ".ff_norm")):
            key = key.replace(new, old)
        key = key.replace(".attn1", ".attention_blocks.0").replace(".attn2", ".attention_blocks.1")
        original[key] = tensor.clone()
    return original


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_original_motion_module_converts_back_exactly(tmp_path: Path, suffix: str) -> None:
    adapter = tiny_adapter()
    original = to_original_layout(adapter.state_dict())
    prefix = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0."
    assert f"{prefix}attention_blocks.0.to_q.weight" in original and f"{prefix}ff_norm.weight" in original
    path = tmp_path / f"mm_tiny{suffix}"
    if suffix == ".ckpt":
        torch.save({"state_dict": original}, path)
    else:
        save_file(original, str(path))
    loaded = load_motion_adapter(path, num_attention_heads=4)
    assert list(loaded.config.block_out_channels) == [32, 64]
    assert loaded.config.use_motion_mid_block is True
    assert loaded.config.motion_max_seq_length == 32
    expected, got = adapter.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_motion_module_versions() -> None:
    v2 = to_original_layout(tiny_adapter(use_mid_block=True).state_dict())
    v3 = to_original_layout(tiny_adapter(use_mid_block=False).state_dict())
    v1 = to_original_layout(tiny_adapter(use_mid_block=False, max_len=24).state_dict())
    assert components.detect_motion_module_version(v2) == "v2"
    assert components.detect_motion_module_version(v3) == "v3"
    assert components.detect_motion_module_version(v1) == "v1"
    assert components.motion_adapter_config_from_original(v1)["motion_max_seq_length"] == 24
    with pytest.raises(StateDictMismatchError, match="not an AnimateDiff motion module"):
        components.detect_motion_module_version({"a.weight": torch.zeros(1)})


def test_motion_adapter_folder_and_dtype(tiny_root: Path) -> None:
    adapter = load_motion_adapter(tiny_root / "motion_adapter", dtype=torch.bfloat16)
    assert next(adapter.parameters()).dtype == torch.bfloat16
    assert adapter.config.motion_max_seq_length == 32 and not adapter.training


class NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": NotATensor()}}, path)
    with pytest.raises(WeightsError, match="never runs code from a checkpoint") as refused:
        load_motion_adapter(path)
    assert "weights_only" not in str(refused.value)  # never point users at the unsafe switch (issue 16)


def test_motion_adapter_bad_suffix(tmp_path: Path) -> None:
    path = tmp_path / "adapter.txt"
    path.write_text("x")
    with pytest.raises(UsageError, match="motion_adapter="):
        load_motion_adapter(path)
