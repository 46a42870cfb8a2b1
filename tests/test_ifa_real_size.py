"""Inter-Frame Attention on the real SD1.5 + AnimateDiff v1-5-2 shape, built on the meta device."""

from __future__ import annotations

import torch
from diffusers import UNetMotionModel

from layeranim.models.inter_frame_attention import ifa_state_dict, install_inter_frame_attention

SD15_CHANNELS = (320, 640, 1280, 1280)


def sd15_motion_unet() -> UNetMotionModel:
    """SD1.5's UNet config with the default (v1-5-2) motion adapter: what stage two runs at full size."""
    with torch.device("meta"):
        return UNetMotionModel(
            block_out_channels=SD15_CHANNELS,
            down_block_types=("CrossAttnDownBlockMotion",) * 3 + ("DownBlockMotion",),
            up_block_types=("UpBlockMotion",) + ("CrossAttnUpBlockMotion",) * 3,
            cross_attention_dim=768,
            layers_per_block=2,
            num_attention_heads=8,
            motion_num_attention_heads=8,
            motion_max_seq_length=32,
            use_motion_mid_block=True,
        )


def test_ifa_adds_wq_and_wo_to_the_16_spatial_self_attentions_only() -> None:
    unet = sd15_motion_unet()
    before = len(unet.attn_processors)
    processors = install_inter_frame_attention(unet)
    assert before == len(unet.attn_processors) == 74  # 16 attn1 + 16 attn2 + 42 motion-module attentions
    assert len(processors) == 16
    assert all(".motion_modules." not in name and name.endswith("attn1.processor") for name in processors)

    weights = ifa_state_dict(processors)
    assert len(weights) == 16 * 3  # W_Q' (no bias), W_O' weight and bias
    channels = sorted(tensor.shape[0] for key, tensor in weights.items() if key.endswith("to_out_ifa.bias"))
    assert channels == [320] * 5 + [640] * 5 + [1280] * 6
    # 24.8 M new parameters (≈ 50 MB in fp16), against ~1.3 B in the motion UNet.
    assert sum(tensor.numel() for tensor in weights.values()) == 24_793_280
