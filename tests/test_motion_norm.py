"""Motion-module GroupNorm as AnimateDiff trained it: per frame in the temporal transformers, across
frames in v1's spatial ResNets; same state-dict keys; diffusers' behaviour still available."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D
from torch import nn

from layeranim.errors import UsageError
from layeranim.models.motion_norm import (
    FrameSpanningGroupNorm,
    PerFrameGroupNorm,
    apply_motion_norm,
    motion_module_version,
)

FRAMES = 4


def naive_group_norm(x: torch.Tensor, norm: nn.GroupNorm, frames_together: list[list[int]]) -> torch.Tensor:
    """GroupNorm written out: for each set of rows in `frames_together` and each group of channels, one
    mean and one (biased) variance over those rows, the group's channels and all pixels.

    x: (rows, c, h, w)."""
    out = torch.empty_like(x)
    per_group = x.shape[1] // norm.num_groups
    for rows in frames_together:
        for group in range(norm.num_groups):
            channels = slice(group * per_group, (group + 1) * per_group)
            block = x[rows, channels].double()
            mean, var = block.mean(), block.var(unbiased=False)
            out[rows, channels] = ((block - mean) / torch.sqrt(var + norm.eps)).to(x.dtype)
    return out * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]


def frames_with_different_means(videos: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """(videos * FRAMES, c, h, w) rows b*F + f; every frame has its own offset and scale (like Layer-Animate's
    one clean frame among noisy ones)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(videos * FRAMES, channels, size, size, generator=generator)
    offsets = torch.linspace(-3.0, 3.0, videos * FRAMES)[:, None, None, None]
    scales = torch.linspace(0.5, 2.5, videos * FRAMES)[:, None, None, None]
    return x * scales + offsets


def randomise_affine(module: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for norm in module.modules():
        if isinstance(norm, nn.GroupNorm):
            norm.weight.data = torch.rand(norm.weight.shape, generator=generator) + 0.5
            norm.bias.data = torch.randn(norm.bias.shape, generator=generator)


class Lambda(nn.Module):
    def __init__(self, function: object) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)  # type: ignore[operator]


def tiny_motion_unet(max_seq_length: int, mid_block: bool) -> UNetMotionModel:
    """diffusers' AnimateDiff test dummies (UNet2D + MotionAdapter), as a UNetMotionModel."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 8),
        layers_per_block=2,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=2,
    )
    adapter = MotionAdapter(
        block_out_channels=(8, 8),
        motion_layers_per_block=2,
        motion_norm_num_groups=2,
        motion_num_attention_heads=2,
        motion_max_seq_length=max_seq_length,
        use_motion_mid_block=mid_block,
    )
    motion = UNetMotionModel.from_unet2d(unet, adapter).eval()
    randomise_affine(motion, seed=1)
    return motion


def unet_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 4, FRAMES, 8, 8, generator=generator)
    sample = sample + torch.linspace(-2, 2, FRAMES)[None, None, :, None, None]  # frames differ in mean
    text = torch.randn(2 * FRAMES, 3, 8, generator=generator)
    return sample, torch.tensor([500]), text


def test_per_frame_temporal_norm_equals_a_naive_per_frame_computation() -> None:
    torch.manual_seed(0)
    module = AnimateDiffTransformer3D(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=16,
        norm_num_groups=4,
        double_self_attention=True,
        positional_embeddings="sinusoidal",
        num_positional_embeddings=32,
    ).eval()
    randomise_affine(module, seed=2)
    x = frames_with_different_means(videos=2, channels=16, size=4, seed=3)  # rows b*F + f
    with torch.no_grad():
        diffusers_out = module(x, num_frames=FRAMES)

        # The reference: diffusers' module with its norm replaced by the naive per-frame computation.
        naive = copy.deepcopy(module)
        plain_norm = naive.norm

        def per_frame(hidden_bcfhw: torch.Tensor) -> torch.Tensor:
            rows = hidden_bcfhw.permute(0, 2, 1, 3, 4).reshape(
                -1, *hidden_bcfhw.shape[1:2], *hidden_bcfhw.shape[3:]
            )
            normed = naive_group_norm(rows, plain_norm, [[row] for row in range(rows.shape[0])])
            return normed.reshape(hidden_bcfhw.shape[0], FRAMES, *normed.shape[1:]).permute(0, 2, 1, 3, 4)

        naive.norm = Lambda(per_frame)  # type: ignore[assignment]
        expected = naive(x, num_frames=FRAMES)

        counts = apply_motion_norm(module, "v2")
        assert counts["temporal_per_frame"] == 1 and isinstance(module.norm, PerFrameGroupNorm)
        patched = module(x, num_frames=FRAMES)

    torch.testing.assert_close(patched, expected, atol=2e-5, rtol=1e-5)
    assert (patched - diffusers_out).abs().max() > 1e-2  # diffusers' joint statistics really differ


def test_v1_spatial_resnets_span_frames_and_v2_stay_per_frame() -> None:
    sample, timestep, text = unet_inputs(seed=4)
    v1 = tiny_motion_unet(max_seq_length=24, mid_block=False)
    assert motion_module_version(v1.config) == "v1"  # the UNet carries the adapter's config entries
    reference = copy.deepcopy(v1)
    counts = apply_motion_norm(v1, {"use_motion_mid_block": False, "motion_max_seq_length": 24})
    resnets = [m for m in v1.modules() if isinstance(m, ResnetBlock2D)]
    assert counts["spatial_frame_spanning"] == 2 * len(resnets) + 1  # norm1, norm2 of each + conv_norm_out
    assert all(isinstance(r.norm1, FrameSpanningGroupNorm) for r in resnets)
    assert isinstance(v1.conv_norm_out, FrameSpanningGroupNorm)

    seen: dict[str, torch.Tensor] = {}
    target = v1.down_blocks[0].resnets[1].norm1
    target.register_forward_hook(lambda mod, args, out: seen.update(x=args[0], y=out))
    with torch.no_grad():
        v1_out = v1(sample, timestep, encoder_hidden_states=text).sample
        plain_out = reference(sample, timestep, encoder_hidden_states=text).sample
    videos = [list(range(b * FRAMES, (b + 1) * FRAMES)) for b in range(sample.shape[0])]
    expected = naive_group_norm(seen["x"], target, videos)  # one set of statistics per whole video
    torch.testing.assert_close(seen["y"], expected, atol=2e-5, rtol=1e-5)
    per_frame = naive_group_norm(seen["x"], target, [[row] for row in range(seen["x"].shape[0])])
    assert (seen["y"] - per_frame).abs().max() > 1e-2
    assert (v1_out - plain_out).abs().max() > 1e-4

    v2 = tiny_motion_unet(max_seq_length=32, mid_block=True)
    counts = apply_motion_norm(v2, "v2")
    assert counts["spatial_frame_spanning"] == 0
    assert all(type(m.norm1) is nn.GroupNorm for m in v2.modules() if isinstance(m, ResnetBlock2D))
    assert all(
        isinstance(m.norm, PerFrameGroupNorm) for m in v2.modules() if isinstance(m, AnimateDiffTransformer3D)
    )


def test_state_dict_keys_and_values_unchanged_and_diffusers_mode_restores() -> None:
    unet = tiny_motion_unet(max_seq_length=24, mid_block=False)
    before = {key: tensor.clone() for key, tensor in unet.state_dict().items()}
    sample, timestep, text = unet_inputs(seed=5)
    with torch.no_grad():
        plain = unet(sample, timestep, encoder_hidden_states=text).sample
    apply_motion_norm(unet, "v1")
    after = unet.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[key], before[key]) for key in before)
    unet.load_state_dict(before, strict=True)  # a plain diffusers state dict loads into the patched UNet

    copied = copy.deepcopy(unet)  # e.g. an EMA copy: fills its own frame count
    with torch.no_grad():
        original = unet(sample, timestep, encoder_hidden_states=text).sample
        torch.testing.assert_close(copied(sample, timestep, encoder_hidden_states=text).sample, original)
    apply_motion_norm(unet, "v1", mode="diffusers")
    assert not any(type(m) in (PerFrameGroupNorm, FrameSpanningGroupNorm) for m in unet.modules())
    with torch.no_grad():
        torch.testing.assert_close(unet(sample, timestep, encoder_hidden_states=text).sample, plain)
    with pytest.raises(UsageError, match="motion_norm"):
        apply_motion_norm(unet, "v1", mode="inflated")


def test_build_motion_unet_applies_the_adapter_version(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from layeranim.pipelines.layeranimate import build_motion_unet
    from layeranim.render.components import ModelSpec, load_components, load_motion_adapter

    monkeypatch.setenv("LAYERANIM_HOME", str(tmp_path))
    spec = ModelSpec.for_preset("tiny")
    c = load_components(spec, device=torch.device("cpu"), dtype=torch.float32)
    adapter = load_motion_adapter(spec.motion_adapter)
    motion = build_motion_unet(c.unet, adapter, c.layerdiffuse_processors).unet
    temporal = [m for m in motion.modules() if isinstance(m, AnimateDiffTransformer3D)]
    assert temporal and all(isinstance(m.norm, PerFrameGroupNorm) for m in temporal)
    plain = build_motion_unet(c.unet, adapter, c.layerdiffuse_processors, motion_norm="diffusers").unet
    assert not any(isinstance(m, PerFrameGroupNorm) for m in plain.modules())
