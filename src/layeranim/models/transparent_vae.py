"""LayerDiffuse transparency encoder (RGBA → latent offset) and decoder (latent → alpha + straight colour).

The SD VAE sees transparent content composited over 50 % gray (internals §4). LayerDiffuse adds the alpha
information in two places:

- `TransparentVAEEncoder` predicts an offset for the VAE posterior of the gray composite:
  `z_raw = mean + std · offset_scale · encoder([alpha, pad_rgb(rgb, alpha)])` (internals §1);
- `TransparentVAEDecoder` ("UNet1024") reads the VAE-decoded gray composite plus the raw latent and predicts
  alpha and the straight (un-composited) foreground colour (internals §2), optionally with the 8-way
  flip/rotate test-time augmentation of the reference implementations.

Both work on the raw latent (`latents_unet / vae.config.scaling_factor`). Tensors are (b, c, h, w); names say
range: `_01` is [0, 1], `_pm1` is [-1, 1]; RGBA channel order is R, G, B, A with straight alpha.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block, get_up_block
from einops import rearrange
from torch import nn

from layeranim.errors import WeightsError
from layeranim.models.layerdiffuse_unet import check_state_dict, load_safetensors_file
from layeranim.progress import Progress as ProgressFn

logger = logging.getLogger(__name__)

DIFFUSERS_OFFSET_SCALE = 300.0  # `LayerDiffuse_Diffusers/ld_diffusers_*` encoders ("like LoRA alpha")
LAYERDIFFUSION_V1_OFFSET_SCALE = 1.0  # `LayerDiffusion/layerdiffusion-v1` encoders (Forge, ComfyUI)

DecoderFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _state_dict_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


def _load_strict(model: nn.Module, path: Path, torch_dtype: torch.dtype | None, what: str, hint: str) -> None:
    """Check a file against the model's keys and shapes, then assign its tensors (cast to `torch_dtype`)."""
    state_dict = load_safetensors_file(path)
    check_state_dict(_state_dict_shapes(model), state_dict, what=f"{what} {path}", hint=hint)
    dtype = torch.float32 if torch_dtype is None else torch_dtype
    model.load_state_dict(
        {key: tensor.to(dtype) for key, tensor in state_dict.items()}, strict=True, assign=True
    )
    model.eval()


# --------------------------------------------------------------------------------------------------
# Encoder


class TransparentVAEEncoder(ModelMixin, ConfigMixin):
    """LayerDiffuse's `LatentTransparencyOffsetEncoder`: [alpha, padded RGB] in [0, 1] → a latent offset.

    A plain conv stack with three stride-2 stages, so the offset lines up with the SD latent (H/8, W/8).
    The last conv starts at zero. `offset_scale` multiplies the output when it is applied to the posterior
    (`encode_adjusted_latent`); it belongs to the weight family (×1 for layerdiffusion-v1, ×300 for the
    `ld_diffusers_*` files).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        block_out_channels: tuple[int, ...] = (32, 64, 128, 256),
        latent_channels: int = 4,
        offset_scale: float = 1.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1),
            nn.SiLU(),
            nn.Conv2d(block_out_channels[0], block_out_channels[0], kernel_size=3, padding=1),
            nn.SiLU(),
        ]
        for previous, channels in itertools.pairwise(block_out_channels):
            layers += [
                nn.Conv2d(previous, channels, kernel_size=3, padding=1, stride=2),
                nn.SiLU(),
                nn.Conv2d(channels, channels, kernel_size=3, padding=1),
                nn.SiLU(),
            ]
        last = nn.Conv2d(block_out_channels[-1], latent_channels, kernel_size=3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.blocks = nn.Sequential(*layers)

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent cell (8 at the default config)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    def forward(self, alpha_padded_rgb_b4hw_01: torch.Tensor) -> torch.Tensor:
        """(b, 4, H, W) [alpha, padded r, g, b] in [0, 1] → offset (b, 4, ⌈H/8⌉, ⌈W/8⌉), unscaled."""
        if alpha_padded_rgb_b4hw_01.ndim != 4 or alpha_padded_rgb_b4hw_01.shape[1] != self.config.in_channels:
            raise ValueError(
                f"TransparentVAEEncoder expects (b, {self.config.in_channels}, h, w) [alpha, r, g, b], "
                f"got {tuple(alpha_padded_rgb_b4hw_01.shape)}."
            )
        return self.blocks(alpha_padded_rgb_b4hw_01)

    @classmethod
    def from_single_file(
        cls,
        path: str | PathLike[str],
        torch_dtype: torch.dtype | None = None,
        offset_scale: float | None = None,
        **config: Any,
    ) -> TransparentVAEEncoder:
        """Load a released encoder file (`layer_sd15_vae_transparent_encoder.safetensors`, …), strictly.

        `offset_scale=None` picks it from the file name: 300.0 for `ld_diffusers_*` files (the official
        diffusers port multiplies the output by 300), else 1.0 (layerdiffusion-v1, as Forge and ComfyUI).
        The fp16 tensors are cast to `torch_dtype` (default float32). `config` overrides the architecture.
        """
        file = Path(path)
        if offset_scale is None:
            diffusers_family = file.name.startswith("ld_diffusers_")
            offset_scale = DIFFUSERS_OFFSET_SCALE if diffusers_family else LAYERDIFFUSION_V1_OFFSET_SCALE
        with torch.device("meta"):
            model = cls(offset_scale=offset_scale, **config)
        _load_strict(
            model,
            file,
            torch_dtype,
            what="transparency encoder",
            hint="Expected layer_sd15_vae_transparent_encoder or vae_transparent_encoder.safetensors.",
        )
        return model


def area_weights(source: int, target: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(target, source) weights of an exact area-average downscale along one axis (OpenCV `INTER_AREA`).

    Output cell i covers the source interval [i·s, (i + 1)·s) with s = source / target; each source pixel
    j weighs its overlap with that interval divided by s (fractional coverage at both ends). As in
    OpenCV's `computeResizeAreaTab`, partial overlaps of at most 1e-3 are dropped (not renormalised).
    """
    if not 1 <= target <= source:
        raise ValueError(f"area_weights downscales: need 1 <= target <= source, got {target} and {source}.")
    scale = source / target
    start = torch.arange(target, dtype=torch.float64)[:, None] * scale  # i·s
    left = torch.arange(source, dtype=torch.float64)[None, :]  # pixel j spans [j, j + 1)
    overlap = ((start + scale).clamp(max=source).minimum(left + 1) - start.maximum(left)).clamp(min=0)
    overlap = torch.where(overlap > 1e-3, overlap, torch.zeros_like(overlap))
    return (overlap / scale).to(dtype)


def area_downsample(x_bchw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Downscale (b, c, h, w) to `size` = (height, width) by exact area averaging (separable, no OpenCV)."""
    rows = area_weights(x_bchw.shape[-2], size[0], dtype=x_bchw.dtype).to(x_bchw.device)  # (H', h)
    cols = area_weights(x_bchw.shape[-1], size[1], dtype=x_bchw.dtype).to(x_bchw.device)  # (W', w)
    return torch.einsum("oh,bchw,pw->bcop", rows, x_bchw, cols)


def pad_rgb(rgb_b3hw_01: torch.Tensor, alpha_b1hw_01: torch.Tensor, factor: float = 1.2) -> torch.Tensor:
    """Fill colour under low alpha from an alpha-weighted pyramid (LayerDiffuse `pad_rgb`, internals §1).

    As LayerDiffuse's `build_alpha_pyramid` + `pad_rgb`: downscale the premultiplied colour and the alpha by
    `factor` per level (sizes truncated, OpenCV `INTER_AREA`: `area_downsample`) until a side is 1, start
    from the alpha-weighted mean colour, then from coarse to fine upsample bilinearly (half-pixel centres,
    as OpenCV `INTER_LINEAR`) and set `fill = colour + fill · (1 − alpha)`. Equals `rgb` where alpha = 1;
    where alpha = 0 it is a smooth extrapolation of the nearby colours.
    """
    premultiplied = rgb_b3hw_01.float() * alpha_b1hw_01.float()
    alpha = alpha_b1hw_01.float()
    levels = [torch.cat([premultiplied, alpha], dim=1)]  # colour and alpha downscale together
    while min(levels[-1].shape[-2:]) > 1:  # downscale by `factor` per level until a side is 1
        height, width = levels[-1].shape[-2:]
        levels.append(
            area_downsample(levels[-1], (max(int(height / factor), 1), max(int(width / factor), 1)))
        )

    top_color, top_alpha = levels[-1][:, :3], levels[-1][:, 3:]
    fill = top_color.sum(dim=(2, 3), keepdim=True) / top_alpha.sum(dim=(2, 3), keepdim=True).clamp_min(1e-8)
    for level in reversed(levels):  # coarse → fine
        level_color, level_alpha = level[:, :3], level[:, 3:]
        fill = F.interpolate(fill, size=level_color.shape[-2:], mode="bilinear", align_corners=False)
        fill = level_color + fill * (1.0 - level_alpha)
    return fill.to(rgb_b3hw_01.dtype)


def _pad_to_multiple(x_bchw: torch.Tensor, multiple: int, mode: str, value: float = 0.0) -> torch.Tensor:
    """Pad bottom/right so both sides are multiples of `multiple` (crop `[..., :h, :w]` to undo)."""
    height, width = x_bchw.shape[-2:]
    pad_h = math.ceil(height / multiple) * multiple - height
    pad_w = math.ceil(width / multiple) * multiple - width
    if pad_h == 0 and pad_w == 0:
        return x_bchw
    if mode == "constant":
        return F.pad(x_bchw, (0, pad_w, 0, pad_h), mode="constant", value=value)
    return F.pad(x_bchw.float(), (0, pad_w, 0, pad_h), mode=mode).to(x_bchw.dtype)  # no half replicate on CPU


def _check_rgba(rgba_b4hw_01: torch.Tensor) -> None:
    if rgba_b4hw_01.ndim != 4 or rgba_b4hw_01.shape[1] != 4:
        raise ValueError(
            f"rgba_b4hw_01 must be (b, 4, h, w) RGBA in [0, 1], got {tuple(rgba_b4hw_01.shape)}."
        )


@torch.no_grad()
def encode_adjusted_latent(
    vae: ModelMixin, encoder: TransparentVAEEncoder, rgba_b4hw_01: torch.Tensor
) -> torch.Tensor:
    """RGBA → raw latent: VAE posterior of the gray composite, `mean + std · offset_scale · encoder(...)`.

    Returns the RAW latent; multiply by `vae.config.scaling_factor` for the UNet. Any size is accepted: the
    image is padded at the bottom/right with transparent pixels to a multiple of 8, so the latent is
    (b, 4, ⌈H/8⌉, ⌈W/8⌉) and its extra cells hold transparency. The VAE must downsample by 8 like SD's.
    """
    _check_rgba(rgba_b4hw_01)
    factor = encoder.downsample_factor
    rgba_b4hw_01 = _pad_to_multiple(rgba_b4hw_01.float(), factor, mode="constant", value=0.0)
    rgb_b3hw_01, alpha_b1hw_01 = rgba_b4hw_01[:, :3], rgba_b4hw_01[:, 3:]

    gray_composite_b3hw_pm1 = (rgb_b3hw_01 * 2.0 - 1.0) * alpha_b1hw_01  # = over 50 % gray, in [-1, 1]
    posterior = vae.encode(gray_composite_b3hw_pm1.to(device=vae.device, dtype=vae.dtype)).latent_dist

    encoder_input_b4hw_01 = torch.cat([alpha_b1hw_01, pad_rgb(rgb_b3hw_01, alpha_b1hw_01)], dim=1)
    offset = encoder(encoder_input_b4hw_01.to(device=encoder.device, dtype=encoder.dtype))
    if offset.shape != posterior.mean.shape:
        raise WeightsError(
            f"the transparency encoder gives latents of shape {tuple(offset.shape)} but the VAE gives "
            f"{tuple(posterior.mean.shape)}; the VAE must downsample by {factor} with 4 latent channels "
            "(an SD/SDXL VAE)."
        )
    offset = offset.to(device=posterior.mean.device, dtype=posterior.mean.dtype)
    return posterior.mean + posterior.std * (offset * encoder.config.offset_scale)


# --------------------------------------------------------------------------------------------------
# Decoder


def _by_rows(function: Callable[..., Any], rows: int, *tensors: torch.Tensor) -> Any:
    """`function(*tensors)` on parts of `rows` along the batch axis, concatenated (tuples element-wise)."""
    if rows >= tensors[0].shape[0]:
        return function(*tensors)
    parts = [function(*part) for part in zip(*(t.split(rows) for t in tensors), strict=True)]
    if isinstance(parts[0], tuple):  # (sample, residuals) of a down block
        sample = torch.cat([part[0] for part in parts])
        residuals = tuple(torch.cat(items) for items in zip(*(part[1] for part in parts), strict=True))
        return sample, residuals
    return torch.cat(parts)


class TransparentVAEDecoder(ModelMixin, ConfigMixin):
    """LayerDiffuse's `UNet1024`: RGB-over-gray in [0, 1] plus the raw latent → alpha + straight foreground.

    A diffusers-block UNet without time embedding. The raw latent enters through a zero-initialised 1×1
    conv, added at the input of down block `latent_injection_block` (1/8 resolution at the default config).
    Inputs must have sides that are multiples of 64 (six stride-2 stages); `decode_rgba` pads for you.
    Output (b, 4, H, W): channel 0 = alpha, 1..3 = straight foreground RGB (unclipped).

    Every block is per sample (GroupNorm statistics are per image), so a batch may run through a block in
    parts with the same result: on the CPU, high-resolution blocks take `cpu_block_pixels` pixels at a
    time while low-resolution blocks take the whole batch (None: always the whole batch).
    """

    cpu_block_pixels: int | None = 128 * 128  # measured best of 64², 128², 256² on a 2-core CPU

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 4,
        latent_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "AttnDownBlock2D",
            "AttnDownBlock2D",
            "AttnDownBlock2D",
        ),
        up_block_types: tuple[str, ...] = (
            "AttnUpBlock2D",
            "AttnUpBlock2D",
            "AttnUpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
        ),
        block_out_channels: tuple[int, ...] = (32, 32, 64, 128, 256, 512, 512),
        layers_per_block: int = 2,
        mid_block_scale_factor: float = 1.0,
        downsample_padding: int = 1,
        downsample_type: str = "conv",
        upsample_type: str = "conv",
        dropout: float = 0.0,
        act_fn: str = "silu",
        attention_head_dim: int = 8,
        norm_num_groups: int = 4,
        norm_eps: float = 1e-5,
        latent_injection_block: int = 3,
    ) -> None:
        super().__init__()
        if not 1 <= latent_injection_block < len(block_out_channels):
            raise ValueError(
                f"latent_injection_block must be in [1, {len(block_out_channels) - 1}], "
                f"got {latent_injection_block}."
            )
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.latent_conv_in = nn.Conv2d(
            latent_channels, block_out_channels[latent_injection_block - 1], kernel_size=1
        )
        nn.init.zeros_(self.latent_conv_in.weight)
        nn.init.zeros_(self.latent_conv_in.bias)

        self.down_blocks = nn.ModuleList([])
        output_channel = block_out_channels[0]
        for index, down_block_type in enumerate(down_block_types):
            input_channel = output_channel
            output_channel = block_out_channels[index]
            self.down_blocks.append(
                get_down_block(
                    down_block_type,
                    num_layers=layers_per_block,
                    in_channels=input_channel,
                    out_channels=output_channel,
                    temb_channels=None,
                    add_downsample=index < len(block_out_channels) - 1,
                    resnet_eps=norm_eps,
                    resnet_act_fn=act_fn,
                    resnet_groups=norm_num_groups,
                    attention_head_dim=attention_head_dim,
                    downsample_padding=downsample_padding,
                    resnet_time_scale_shift="default",
                    downsample_type=downsample_type,
                    dropout=dropout,
                )
            )

        self.mid_block = UNetMidBlock2D(
            in_channels=block_out_channels[-1],
            temb_channels=None,
            dropout=dropout,
            resnet_eps=norm_eps,
            resnet_act_fn=act_fn,
            output_scale_factor=mid_block_scale_factor,
            resnet_time_scale_shift="default",
            attention_head_dim=attention_head_dim,
            resnet_groups=norm_num_groups,
            attn_groups=None,
            add_attention=True,
        )

        self.up_blocks = nn.ModuleList([])
        reversed_channels = list(reversed(block_out_channels))
        output_channel = reversed_channels[0]
        for index, up_block_type in enumerate(up_block_types):
            prev_output_channel = output_channel
            output_channel = reversed_channels[index]
            input_channel = reversed_channels[min(index + 1, len(block_out_channels) - 1)]
            self.up_blocks.append(
                get_up_block(
                    up_block_type,
                    num_layers=layers_per_block + 1,
                    in_channels=input_channel,
                    out_channels=output_channel,
                    prev_output_channel=prev_output_channel,
                    temb_channels=None,
                    add_upsample=index < len(block_out_channels) - 1,
                    resnet_eps=norm_eps,
                    resnet_act_fn=act_fn,
                    resnet_groups=norm_num_groups,
                    attention_head_dim=attention_head_dim,
                    resnet_time_scale_shift="default",
                    upsample_type=upsample_type,
                    dropout=dropout,
                )
            )

        self.conv_norm_out = nn.GroupNorm(
            num_channels=block_out_channels[0], num_groups=norm_num_groups, eps=norm_eps
        )
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[0], out_channels, kernel_size=3, padding=1)

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (64 at the default config)."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def latent_factor(self) -> int:
        """Pixels per latent cell (8 at the default config)."""
        return 2**self.config.latent_injection_block

    def forward(self, pixel_b3hw_01: torch.Tensor, latent_raw_b4hw: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) RGB over gray in [0, 1] + (b, 4, H/8, W/8) raw latent → (b, 4, H, W) [a, r, g, b]."""
        height, width = pixel_b3hw_01.shape[-2:]
        multiple, factor = self.size_multiple, self.latent_factor
        if height % multiple or width % multiple:
            raise ValueError(
                f"TransparentVAEDecoder needs sides that are multiples of {multiple}, got {height}×{width}; "
                "pad the input (decode_rgba does this)."
            )
        if tuple(latent_raw_b4hw.shape[-2:]) != (height // factor, width // factor):
            raise ValueError(
                f"latent_raw_b4hw must be {height // factor}×{width // factor} for a {height}×{width} image, "
                f"got {tuple(latent_raw_b4hw.shape[-2:])}."
            )

        rows = self._rows_per_call(pixel_b3hw_01)
        latent_features = self.latent_conv_in(latent_raw_b4hw)
        sample = _by_rows(self.conv_in, rows(pixel_b3hw_01), pixel_b3hw_01)
        skips: tuple[torch.Tensor, ...] = (sample,)
        for index, down_block in enumerate(self.down_blocks):
            if index == self.config.latent_injection_block:
                sample = sample + latent_features
            sample, residuals = _by_rows(
                lambda x, block=down_block: block(hidden_states=x, temb=None), rows(sample), sample
            )
            skips += residuals

        sample = _by_rows(lambda x: self.mid_block(x, None), rows(sample), sample)

        for up_block in self.up_blocks:
            count = len(up_block.resnets)
            residuals, skips = skips[-count:], skips[:-count]
            sample = _by_rows(
                lambda x, *skip, block=up_block: block(x, skip, None), rows(sample), sample, *residuals
            )

        def head(x: torch.Tensor) -> torch.Tensor:
            return self.conv_out(self.conv_act(self.conv_norm_out(x)))

        return _by_rows(head, rows(sample), sample)

    def _rows_per_call(self, pixel_bchw: torch.Tensor) -> Callable[[torch.Tensor], int]:
        """How many images each block processes at once: on the CPU, at most `cpu_block_pixels` pixels
        (large activations stream from memory, small batches stay in cache); elsewhere, the whole batch."""
        budget = self.cpu_block_pixels if pixel_bchw.device.type == "cpu" else None
        if budget is None:
            return lambda x: x.shape[0]
        return lambda x: max(1, budget // (x.shape[-2] * x.shape[-1]))

    @classmethod
    def from_single_file(
        cls, path: str | PathLike[str], torch_dtype: torch.dtype | None = None, **config: Any
    ) -> TransparentVAEDecoder:
        """Load a released decoder file (`layer_sd15_vae_transparent_decoder.safetensors`, …), strictly.

        The fp16 tensors are cast to `torch_dtype` (default float32). `config` overrides the architecture.
        """
        with torch.device("meta"):
            model = cls(**config)
        _load_strict(
            model,
            Path(path),
            torch_dtype,
            what="transparency decoder",
            hint="Expected layer_sd15_vae_transparent_decoder or vae_transparent_decoder.safetensors.",
        )
        return model


def lower_median(values_vbchw: torch.Tensor) -> torch.Tensor:
    """Median over the first axis; for an even count the LOWER middle value, like `torch.median`.

    Sorting a 2-D view keeps it MPS-safe (`torch.median` along a dim of a >4-D tensor fails on MPS).
    """
    count, batch, channels, height, width = values_vbchw.shape
    flat = rearrange(values_vbchw, "v b c h w -> v (b c h w)")
    middle = flat.sort(dim=0).values[(count - 1) // 2]
    return rearrange(middle, "(b c h w) -> b c h w", b=batch, c=channels, h=height, w=width)


def estimate_single_pass(
    decoder: DecoderFn, pixel_b3hw_01: torch.Tensor, latent_raw_b4hw: torch.Tensor
) -> torch.Tensor:
    """One decoder pass, clipped to [0, 1] (8× cheaper than `estimate_augmented`)."""
    return decoder(pixel_b3hw_01, latent_raw_b4hw).clip(0, 1)


def estimate_augmented(
    decoder: DecoderFn, pixel_b3hw_01: torch.Tensor, latent_raw_b4hw: torch.Tensor
) -> torch.Tensor:
    """LayerDiffuse's test-time augmentation: 8 flip/rot90 variants, each undone, lower median, clipped.

    Variants in the reference order F0..F3, T0..T3 (flip the width, then rotate by k·90°); every output is
    clipped before the median and the median again after. Sides must be multiples of 64 (rotations swap them).
    """
    outputs = []
    for flip in (False, True):
        for turns in range(4):
            pixel, latent = pixel_b3hw_01, latent_raw_b4hw
            if flip:
                pixel, latent = pixel.flip(3), latent.flip(3)
            pixel, latent = torch.rot90(pixel, turns, dims=(2, 3)), torch.rot90(latent, turns, dims=(2, 3))
            estimate = torch.rot90(decoder(pixel, latent).clip(0, 1), -turns, dims=(2, 3))
            outputs.append(estimate.flip(3) if flip else estimate)
    return lower_median(torch.stack(outputs)).clip(0, 1)


TTA_VARIANTS: tuple[tuple[bool, int], ...] = tuple(
    (flip, turns) for flip in (False, True) for turns in range(4)
)
DEFAULT_DECODE_PIXELS = 8 * 256 * 256  # decoder input pixels per call (batch · H · W)


def _augment(x_bchw: torch.Tensor, flip: bool, turns: int) -> torch.Tensor:
    return torch.rot90(x_bchw.flip(3) if flip else x_bchw, turns, dims=(2, 3))


def _unaugment(y_bchw: torch.Tensor, flip: bool, turns: int) -> torch.Tensor:
    y_bchw = torch.rot90(y_bchw, -turns, dims=(2, 3))
    return y_bchw.flip(3) if flip else y_bchw


def estimate_batched(
    decoder: DecoderFn,
    pixel_b3hw_01: torch.Tensor,
    latent_raw_b4hw: torch.Tensor,
    *,
    tta: bool = True,
    max_pixels: int = DEFAULT_DECODE_PIXELS,
) -> torch.Tensor:
    """`estimate_augmented` (`tta=True`) or `estimate_single_pass`, with variants and images batched.

    The same computation as the reference loop, which calls the decoder once per variant and image:
    here every (variant, image) pair is one row, rows of the same orientation (the rotations by 90° and
    270° swap H and W) share decoder calls, and each call takes as many rows as fit in `max_pixels`
    input pixels (one 256² image's 8 variants by default: batching more gains nothing on a CPU, and the
    bound keeps peak memory independent of the number of images).
    """
    variants = TTA_VARIANTS if tta else ((False, 0),)
    images, _, height, width = pixel_b3hw_01.shape
    per_call = max(1, max_pixels // (height * width))
    jobs = [(index, image) for index in range(len(variants)) for image in range(images)]
    if height != width:  # one orientation per call
        jobs.sort(key=lambda job: variants[job[0]][1] % 2)
    estimates: list[list[torch.Tensor | None]] = [[None] * images for _ in variants]
    start = 0
    while start < len(jobs):
        parity = variants[jobs[start][0]][1] % 2
        part = [
            job
            for job in jobs[start : start + per_call]
            if height == width or variants[job[0]][1] % 2 == parity
        ]
        pixel = torch.cat([_augment(pixel_b3hw_01[i : i + 1], *variants[v]) for v, i in part])
        latent = torch.cat([_augment(latent_raw_b4hw[i : i + 1], *variants[v]) for v, i in part])
        output = decoder(pixel, latent).clip(0, 1)
        for row, (v, i) in enumerate(part):
            estimates[v][i] = _unaugment(output[row : row + 1], *variants[v])
        start += len(part)
    stacked_vbchw = torch.stack([torch.cat(per_variant) for per_variant in estimates])  # type: ignore[arg-type]
    return lower_median(stacked_vbchw).clip(0, 1) if tta else stacked_vbchw[0]


@torch.no_grad()
def decode_rgba(
    vae: ModelMixin,
    decoder: TransparentVAEDecoder,
    latents_raw_b4hw: torch.Tensor,
    *,
    tta: bool = True,
    chunk_size: int | None = None,
    progress: ProgressFn | None = None,
    max_pixels: int = DEFAULT_DECODE_PIXELS,
) -> torch.Tensor:
    """Raw latents → straight RGBA (b, 4, H, W) float32 in [0, 1], channel order R, G, B, A.

    Per chunk of latents: `pixel = clamp(vae.decode(z).sample · 0.5 + 0.5, 0, 1)`, pad pixel and latent
    (edge-replicated, bottom/right) to the decoder's multiple of 64, run the 8-way augmentation (`tta=True`,
    LayerDiffuse's `estimate_augmented`) or one pass, crop back. The transparency decoder runs batched over
    variants and images, at most `max_pixels` input pixels per call (`estimate_batched`). `chunk_size`
    latents go through the VAE at once; None chooses by pixel count, so that one chunk's decoder inputs
    fill `max_pixels` (one 256² frame with TTA). Memory is bounded by the chunk, not the clip: only the
    result grows with the number of latents. `progress(done, total)` counts images after each chunk.
    The result lives on the latents' device.
    """
    if latents_raw_b4hw.ndim != 4:
        raise ValueError(f"latents_raw_b4hw must be (b, c, h, w), got {tuple(latents_raw_b4hw.shape)}.")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}.")
    factor, multiple = decoder.latent_factor, decoder.size_multiple
    total, _, latent_height, latent_width = latents_raw_b4hw.shape
    if chunk_size is None:
        passes = len(TTA_VARIANTS) if tta else 1
        padded_height = math.ceil(latent_height * factor / multiple) * multiple
        padded_width = math.ceil(latent_width * factor / multiple) * multiple
        chunk_size = max(1, max_pixels // (passes * padded_height * padded_width))
    result = torch.empty(
        total,
        4,
        latent_height * factor,
        latent_width * factor,
        device=latents_raw_b4hw.device,
        dtype=torch.float32,
    )
    for start in range(0, total, chunk_size):
        latent_raw = latents_raw_b4hw[start : start + chunk_size].to(device=vae.device, dtype=vae.dtype)
        pixel_b3hw_01 = (vae.decode(latent_raw).sample * 0.5 + 0.5).clamp(0, 1)

        height, width = pixel_b3hw_01.shape[-2:]
        if (height, width) != (latent_raw.shape[-2] * factor, latent_raw.shape[-1] * factor):
            raise WeightsError(
                f"the VAE decodes a {latent_raw.shape[-2]}×{latent_raw.shape[-1]} latent to {height}×{width} "
                f"pixels, but the transparency decoder needs {factor}× upsampling (an SD/SDXL VAE)."
            )
        pixel_padded = _pad_to_multiple(pixel_b3hw_01, multiple, mode="replicate")
        latent_padded = _pad_to_multiple(latent_raw, multiple // factor, mode="replicate")
        output_b4hw_01 = estimate_batched(
            decoder,
            pixel_padded.to(device=decoder.device, dtype=decoder.dtype),
            latent_padded.to(device=decoder.device, dtype=decoder.dtype),
            tta=tta,
            max_pixels=max_pixels,
        )[..., :height, :width]

        stop = start + latent_raw.shape[0]
        result[start:stop, :3] = output_b4hw_01[:, 1:]  # straight foreground R, G, B
        result[start:stop, 3:] = output_b4hw_01[:, :1]  # alpha
        if progress is not None:
            progress(stop, total)
    return result


def rgba_to_uint8(rgba_b4hw_01: torch.Tensor) -> torch.Tensor:
    """(b, 4, h, w) in [0, 1] → (b, h, w, 4) uint8, rounded to nearest (the reference truncates)."""
    rgba_bhwc_01 = rearrange(rgba_b4hw_01.float().clamp(0, 1), "b c h w -> b h w c")
    return (rgba_bhwc_01 * 255.0).round().to(torch.uint8)
