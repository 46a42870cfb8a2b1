"""LayerDiffuse UNet weights: SD1.5 attention sharing (merged form vs reference form) and the SDXL LoRA."""

from __future__ import annotations

import ast
import copy
import math
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from einops import rearrange
from safetensors.torch import save_file
from torch import nn

from layeranim.errors import StateDictMismatchError, WeightsError
from layeranim.models import (
    LayerDiffuseAttnProcessor,
    apply_layerdiffuse_sd15,
    apply_layerdiffuse_sdxl,
    load_safetensors_file,
    reinstall_processors,
    remove_processors,
    sd15_attn_state_dict_shapes,
    sdxl_attn_state_dict_shapes,
    spatial_attention_names,
)

KEYS_FILE = Path(__file__).parent / "data" / "layerdiffuse_keys.txt"
SD15_SECTION = "layer_sd15_transparent_attn"
RANK = 4


def listed_sd15() -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """The SD1.5 attn file's keys/shapes and its `# index i -> diffusers NAME` table from the listing."""
    shapes: dict[str, tuple[int, ...]] = {}
    modules: list[str] = []
    inside = False
    for line in KEYS_FILE.read_text().splitlines():
        if line.startswith("## "):
            inside = line.removeprefix("## ").startswith(SD15_SECTION)
        elif inside and (match := re.match(r"# index (\d+) -> diffusers (\S+)", line)):
            assert int(match.group(1)) == len(modules)
            modules.append(match.group(2))
        elif inside and "\t" in line:
            key, shape = line.split("\t")
            shapes[key] = tuple(ast.literal_eval(shape))
    return shapes, modules


def tiny_sd15_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        sample_size=16,
    ).eval()


def tiny_motion_adapter() -> MotionAdapter:
    torch.manual_seed(1)
    return MotionAdapter(
        block_out_channels=(32, 64),
        motion_layers_per_block=2,
        motion_num_attention_heads=4,
        motion_norm_num_groups=32,
        motion_max_seq_length=32,
    )


def random_state_dict(shapes: Mapping[str, tuple[int, ...]], seed: int = 2) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=generator) * 0.15 for key, shape in shapes.items()}


def run_unet(unet: nn.Module, frames: int | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    batch = 2 * (frames or 1)
    sample_shape = (2, 4, frames, 16, 16) if frames else (2, 4, 16, 16)
    sample = torch.randn(sample_shape, generator=generator)
    context = torch.randn(batch, 7, 32, generator=generator)
    with torch.no_grad():
        return unet(sample, torch.tensor([10]), encoder_hidden_states=context).sample


# --- layouts --------------------------------------------------------------------------------------


def test_full_size_sd15_key_set_matches_released_file() -> None:
    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768)  # the SD1.5 architecture
    listed, listed_modules = listed_sd15()
    shapes = sd15_attn_state_dict_shapes(unet)
    assert len(listed) == 640 and shapes == listed
    assert sum(math.prod(shape) for shape in shapes.values()) == 175_098_496
    assert spatial_attention_names(unet) == listed_modules  # index i ↔ module (down, up, mid last)


def test_full_size_sdxl_key_set_covers_all_140_attention_modules() -> None:
    with torch.device("meta"):
        unet = UNet2DConditionModel(
            block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10),
            cross_attention_dim=2048,
            attention_head_dim=(5, 10, 20),
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
            use_linear_projection=True,
        )
    shapes = sdxl_attn_state_dict_shapes(unet)
    assert len(spatial_attention_names(unet)) == 140 and len(shapes) == 140 * 4 * 2
    assert sum(math.prod(shape) for shape in shapes.values()) == 371_589_120  # 743.2 MB in fp16
    # keys quoted from the released file (internals §3, forge#153)
    assert shapes["diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight::lora::0"] == (
        640,
        256,
    )
    assert shapes["diffusion_model.output_blocks.2.1.transformer_blocks.9.attn2.to_v.weight::lora::1"] == (
        256,
        2048,
    )
    assert "diffusion_model.middle_block.1.transformer_blocks.9.attn2.to_out.0.weight::lora::1" in shapes


# --- SD1.5: merged form equals the reference attention-sharing form --------------------------------


class ReferenceAttentionSharing(nn.Module):
    """The per-module LayerDiffuse form (internals §3 pseudo-code): unmerged LoRAs + frame attention."""

    def __init__(self, weights: Mapping[str, torch.Tensor], frames: int = 1) -> None:
        super().__init__()
        self.weights = dict(weights)
        self.frames = frames

    def lin(self, z: torch.Tensor, lora: str, base: nn.Linear) -> torch.Tensor:
        delta = self.weights[f"{lora}.0.up.weight"] @ self.weights[f"{lora}.0.down.weight"]
        return F.linear(z, base.weight + delta, base.bias)

    def affine(self, z: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(z, self.weights[f"temporal_{name}.weight"], self.weights[f"temporal_{name}.bias"])

    @staticmethod
    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (q, k, v))
        weights = (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(dim=-1)
        return rearrange(weights @ v, "b h n d -> b n (h d)")

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        h = hidden_states
        context = h if encoder_hidden_states is None else encoder_hidden_states
        q = self.lin(h, "to_q_lora", attn.to_q)
        k = self.lin(context, "to_k_lora", attn.to_k)
        v = self.lin(context, "to_v_lora", attn.to_v)
        o = attn.to_out[1](self.lin(self.attention(q, k, v, attn.heads), "to_out_lora", attn.to_out[0]))
        m = h + o
        normed = F.layer_norm(
            m, m.shape[-1:], self.weights["temporal_n.weight"], self.weights["temporal_n.bias"], 1e-6
        )
        t = rearrange(self.affine(normed, "i"), "(b f) d c -> (b d) f c", f=self.frames)
        t = self.attention(self.affine(t, "q"), self.affine(t, "k"), self.affine(t, "v"), attn.heads)
        t = self.affine(rearrange(t, "(b d) f c -> (b f) d c", d=h.shape[1]), "o")
        return (m + t) - h


def install_reference(unet: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    processors = dict(unet.attn_processors)
    for index, name in enumerate(spatial_attention_names(unet)):
        prefix = f"hookers.layers.{index}."
        own = {key.removeprefix(prefix): t for key, t in state_dict.items() if key.startswith(prefix)}
        processors[f"{name}.processor"] = ReferenceAttentionSharing(own)
    unet.set_attn_processor(processors)


def test_merged_form_equals_reference_attention_sharing_form() -> None:
    unet = tiny_sd15_unet()
    state_dict = random_state_dict(sd15_attn_state_dict_shapes(unet, rank=RANK))
    plain = run_unet(unet)

    reference_unet = copy.deepcopy(unet)
    install_reference(reference_unet, state_dict)
    processors = apply_layerdiffuse_sd15(unet, state_dict)

    assert len(processors) == 12 and all(name.endswith(".processor") for name in processors)
    merged = run_unet(unet)
    reference = run_unet(reference_unet)
    assert (merged - plain).abs().max() > 1e-2  # the weights do something
    torch.testing.assert_close(merged, reference, atol=1e-5, rtol=1e-4)


def test_processor_drops_temporal_q_and_k_at_one_frame() -> None:
    processor = LayerDiffuseAttnProcessor(16)
    h, o = torch.randn(3, 5, 16), torch.randn(3, 5, 16)
    before = processor.transparency_branch(h, o)
    with torch.no_grad():
        processor.temporal_q.weight.normal_()
        processor.temporal_k.bias.normal_()
    assert torch.equal(processor.transparency_branch(h, o), before)
    assert processor.temporal_n.eps == 1e-6


def test_file_with_real_layout_loads_and_applies(tmp_path: Path) -> None:
    unet = tiny_sd15_unet()
    state_dict = {
        k: t.half() for k, t in random_state_dict(sd15_attn_state_dict_shapes(unet, rank=RANK)).items()
    }
    path = tmp_path / "layer_sd15_transparent_attn.safetensors"
    save_file(state_dict, str(path))
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    before = unet.get_submodule(name).to_k.weight.clone()

    processors = apply_layerdiffuse_sd15(unet, load_safetensors_file(path))

    delta = (
        state_dict["hookers.layers.1.to_k_lora.0.up.weight"].float()
        @ state_dict["hookers.layers.1.to_k_lora.0.down.weight"].float()
    )
    torch.testing.assert_close(unet.get_submodule(name).to_k.weight, before + delta)
    processor = processors[f"{name}.processor"]
    assert processor.temporal_i.weight.dtype == torch.float32
    assert torch.equal(processor.temporal_o.bias, state_dict["hookers.layers.1.temporal_o.bias"].float())
    assert unet.attn_processors[f"{name}.processor"] is processor


@pytest.mark.parametrize("defect", ["missing", "unexpected", "misshaped"])
def test_mismatched_sd15_file_names_the_key_and_leaves_the_unet_alone(defect: str) -> None:
    unet = tiny_sd15_unet()
    state_dict = random_state_dict(sd15_attn_state_dict_shapes(unet, rank=RANK))
    if defect == "missing":
        del state_dict["hookers.layers.3.temporal_v.bias"]
        expected = "1 missing key(s): hookers.layers.3.temporal_v.bias"
    elif defect == "unexpected":
        state_dict["hookers.layers.12.temporal_v.bias"] = torch.zeros(32)
        expected = "1 unexpected key(s): hookers.layers.12.temporal_v.bias"
    else:
        state_dict["hookers.layers.0.temporal_i.weight"] = torch.zeros(32, 16)
        expected = "hookers.layers.0.temporal_i.weight (32, 16) (expected (32, 32))"
    before = {key: t.clone() for key, t in unet.state_dict().items()}
    with pytest.raises(StateDictMismatchError, match=r"LayerDiffuse SD1\.5 attention weights") as info:
        apply_layerdiffuse_sd15(unet, state_dict)
    assert expected in str(info.value)
    assert all(torch.equal(t, before[key]) for key, t in unet.state_dict().items())
    assert not any(isinstance(p, LayerDiffuseAttnProcessor) for p in unet.attn_processors.values())


def test_sd15_file_on_an_sdxl_shaped_unet_is_refused() -> None:
    state_dict = random_state_dict(sd15_attn_state_dict_shapes(tiny_sd15_unet(), rank=RANK))
    with pytest.raises(StateDictMismatchError, match="mis-shaped"):
        apply_layerdiffuse_sd15(tiny_sdxl_unet(), state_dict)


def test_applying_twice_is_refused() -> None:
    unet = tiny_sd15_unet()
    state_dict = random_state_dict(sd15_attn_state_dict_shapes(unet, rank=RANK))
    apply_layerdiffuse_sd15(unet, state_dict)
    with pytest.raises(WeightsError, match="already applied"):
        apply_layerdiffuse_sd15(unet, state_dict)


def test_load_safetensors_file_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_safetensors_file(tmp_path / "absent.safetensors")
    (tmp_path / "attn.bin").write_bytes(b"PK")
    with pytest.raises(WeightsError, match="only safetensors"):
        load_safetensors_file(tmp_path / "attn.bin")
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(WeightsError, match="cannot read"):
        load_safetensors_file(tmp_path / "bad.safetensors")


# --- SD1.5 on the motion UNet ----------------------------------------------------------------------


def test_motion_unet_gets_the_same_processors_and_keeps_its_motion_modules() -> None:
    unet = tiny_sd15_unet()
    state_dict = random_state_dict(sd15_attn_state_dict_shapes(unet, rank=RANK))
    motion = UNetMotionModel.from_unet2d(copy.deepcopy(unet), tiny_motion_adapter())
    assert spatial_attention_names(motion) == spatial_attention_names(unet)

    processors = apply_layerdiffuse_sd15(motion, state_dict)

    installed = motion.attn_processors
    ours = {name for name, p in installed.items() if isinstance(p, LayerDiffuseAttnProcessor)}
    assert ours == set(processors) and len(installed) > len(ours)
    assert all(".motion_modules." in name for name in set(installed) - ours)
    assert run_unet(motion, frames=3).shape == (2, 4, 3, 16, 16)

    # Converting an already-patched 2-D UNet: remove, convert, reinstall gives the same model.
    patched_processors = apply_layerdiffuse_sd15(unet, state_dict)
    remove_processors(unet, patched_processors)
    assert not any(isinstance(p, LayerDiffuseAttnProcessor) for p in unet.attn_processors.values())
    converted = UNetMotionModel.from_unet2d(unet, tiny_motion_adapter())
    reinstall_processors(converted, patched_processors)
    torch.testing.assert_close(run_unet(converted, frames=3), run_unet(motion, frames=3))


# --- SDXL ------------------------------------------------------------------------------------------


def tiny_sdxl_unet(seed: int = 3) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        cross_attention_dim=32,
        norm_num_groups=32,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,
        sample_size=16,
    ).eval()


def ldm_name(diffusers_module: str) -> str:
    """rootonchair's rule inverted: down b, layer l ↔ input_blocks.{3b+l+1}; up ↔ output_blocks.{3b+l}."""
    block, rest = diffusers_module.split(".transformer_blocks.")
    if block == "mid_block.attentions.0":
        return f"middle_block.1.transformer_blocks.{rest}"
    kind, index, _, layer = block.split(".")
    number = 3 * int(index) + int(layer) + (1 if kind == "down_blocks" else 0)
    return f"{'input' if kind == 'down_blocks' else 'output'}_blocks.{number}.1.transformer_blocks.{rest}"


def sdxl_file(unet: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A random LoRA in the released LDM naming, and the merged weights it should give (diffusers names)."""
    generator = torch.Generator().manual_seed(4)
    state_dict, merged = {}, {}
    for name in spatial_attention_names(unet):
        for projection in ("to_q", "to_k", "to_v", "to_out.0"):
            linear = unet.get_submodule(f"{name}.{projection}")
            up = torch.randn(linear.out_features, RANK, generator=generator).half()
            down = torch.randn(RANK, linear.in_features, generator=generator).half()
            key = f"diffusion_model.{ldm_name(name)}.{projection}.weight"
            state_dict[f"{key}::lora::0"], state_dict[f"{key}::lora::1"] = up, down
            merged[f"{name}.{projection}.weight"] = linear.weight + up.float() @ down.float()
    return state_dict, merged


def test_sdxl_lora_is_merged_under_diffusers_names(tmp_path: Path) -> None:
    unet = tiny_sdxl_unet()
    state_dict, merged = sdxl_file(unet)
    assert "diffusion_model.output_blocks.2.1.transformer_blocks.1.attn2.to_v.weight::lora::1" in state_dict
    assert set(sdxl_attn_state_dict_shapes(unet, rank=RANK)) == set(state_dict)
    path = tmp_path / "layer_xl_transparent_attn.safetensors"
    save_file(state_dict, str(path))
    untouched = {k: t.clone() for k, t in unet.state_dict().items() if k not in merged}

    apply_layerdiffuse_sdxl(unet, load_safetensors_file(path))

    weights = unet.state_dict()
    for key, expected in merged.items():
        torch.testing.assert_close(weights[key], expected)
    assert all(torch.equal(weights[key], t) for key, t in untouched.items())
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())


@pytest.mark.parametrize("defect", ["missing", "unexpected", "misshaped"])
def test_mismatched_sdxl_file_names_the_key(defect: str) -> None:
    unet = tiny_sdxl_unet()
    state_dict, _ = sdxl_file(unet)
    if defect == "missing":
        key = "diffusion_model.middle_block.1.transformer_blocks.1.attn1.to_out.0.weight::lora::0"
        del state_dict[key]
        expected = f"1 missing key(s): {key}"
    elif defect == "unexpected":
        key = (
            "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight::lora::0"  # no attention
        )
        state_dict[key] = torch.zeros(32, RANK)
        expected = f"1 unexpected key(s): {key}"
    else:
        key = "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight::lora::1"
        state_dict[key] = torch.zeros(RANK, 64)
        expected = f"{key} (4, 64) (expected (4, 32))"
    with pytest.raises(StateDictMismatchError, match="LayerDiffuse SDXL attention weights") as info:
        apply_layerdiffuse_sdxl(unet, state_dict)
    assert expected in str(info.value)


# --- saving and restoring installed processors (what a pipeline's save_pretrained needs) ----------


def test_processors_save_and_load_onto_a_fresh_unet_to_identical_output(tmp_path: Path) -> None:
    from layeranim.models.layerdiffuse_unet import (
        layerdiffuse_processors,
        load_layerdiffuse_processors,
        plain_attention_processors,
        save_layerdiffuse_processors,
    )

    unet = tiny_sd15_unet()
    processors = apply_layerdiffuse_sd15(
        unet, random_state_dict(sd15_attn_state_dict_shapes(unet, rank=RANK))
    )
    assert layerdiffuse_processors(unet).keys() == processors.keys()
    expected = run_unet(unet)
    with plain_attention_processors(unet):  # the diffusers layout only, while saving
        assert not [key for key in unet.state_dict() if ".processor." in key]
        merged = copy.deepcopy(unet.state_dict())
    assert all(unet.attn_processors[name] is p for name, p in processors.items())  # put back

    path = tmp_path / "processors.safetensors"
    save_layerdiffuse_processors(path, processors)
    fresh = tiny_sd15_unet(seed=3)
    fresh.load_state_dict(merged)
    assert not torch.equal(run_unet(fresh), expected)  # the processors are missing: not the same model
    restored = load_layerdiffuse_processors(fresh, path)
    assert restored.keys() == processors.keys()
    assert torch.equal(run_unet(fresh), expected)

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsError, match="not a LayerDiffuse processors file"):
        load_layerdiffuse_processors(fresh, tmp_path / "other.safetensors")
