"""Stage two: an RGBA still (or stage one's adjusted latent) → F transparent frames.

A diffusers `UNetMotionModel` (AnimateDiff) whose spatial attention keeps LayerDiffuse's transparency
processors, plus Inter-Frame Attention on every spatial self-attention (paper §III-B, eq. 3). The middle
frame m = (F − 1) // 2 is the clean base latent in every UNet call and after every scheduler step; every
frame decodes through the SD VAE and the transparency decoder to straight RGBA.

Axes: b = video, c = latent channels, f = frame, h/w = latent height/width (pixels / 8).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from einops import rearrange
from transformers import CLIPTextModel, CLIPTokenizer

from layeranim.errors import UsageError
from layeranim.models.inter_frame_attention import (
    InterFrameAttnProcessor,
    install_inter_frame_attention,
    load_ifa_weights,
    middle_frame_index,
)
from layeranim.models.layerdiffuse_unet import (
    LayerDiffuseAttnProcessor,
    reinstall_processors,
    remove_processors,
)
from layeranim.models.motion_norm import apply_motion_norm
from layeranim.models.transparent_vae import (
    TransparentVAEDecoder,
    TransparentVAEEncoder,
    decode_rgba,
    encode_adjusted_latent,
    rgba_to_uint8,
)
from layeranim.pipelines._prompts import encode_prompt_sd15
from layeranim.pipelines.layerdiffuse import ProgressFn, as_list, check_size

logger = logging.getLogger(__name__)

DEFAULT_FRAMES = 16


@dataclass
class LayerAnimateOutput(BaseOutput):
    """Stage-two result."""

    frames: np.ndarray  # (f, H, W, 4) uint8, straight alpha
    latents: torch.Tensor  # (1, c, f, h, w) final latents in the UNet's (scaled) space, float32 on CPU
    middle_index: int


@dataclass
class MotionUNet:
    """A motion UNet ready for stage two, and what was put into it."""

    unet: UNetMotionModel
    ifa_processors: dict[str, InterFrameAttnProcessor]
    ifa_metadata: dict[str, str] | None  # None: no IFA weights (the motion-module baseline)


def build_motion_unet(
    unet: UNet2DConditionModel,
    motion_adapter: MotionAdapter,
    layerdiffuse_processors: dict[str, LayerDiffuseAttnProcessor],
    ifa_weights: Path | None = None,
    motion_norm: str = "original",
) -> MotionUNet:
    """Stage one's LayerDiffuse UNet + an AnimateDiff adapter → `UNetMotionModel` with IFA installed.

    `from_unet2d` drops custom processors, so LayerDiffuse's are put back first (the frames must live in the
    transparent latent space), then IFA wraps every spatial self-attention. Without `ifa_weights` IFA is
    installed untrained (W_O' = 0), which is exactly the paper's "motion module" baseline.
    `motion_norm="original"` normalises as the adapter's AnimateDiff version was trained
    (`apply_motion_norm`); "diffusers" keeps diffusers' GroupNorms.
    """
    # from_unet2d copies attention blocks with a strict load_state_dict, in which the LayerDiffuse processors'
    # own weights would be unexpected keys: take them off for the copy and put them on both UNets after.
    if layerdiffuse_processors:
        remove_processors(unet, layerdiffuse_processors)
    try:
        motion = UNetMotionModel.from_unet2d(unet, motion_adapter)
    finally:
        if layerdiffuse_processors:
            reinstall_processors(unet, layerdiffuse_processors)
    motion = motion.to(unet.device)  # from_unet2d already casts to unet.dtype
    apply_motion_norm(motion, motion_adapter.config, mode=motion_norm)  # same keys, original statistics
    if layerdiffuse_processors:
        reinstall_processors(motion, layerdiffuse_processors)
    processors = install_inter_frame_attention(motion)
    for proc in processors.values():
        proc.to(device=unet.device, dtype=unet.dtype)
    metadata = load_ifa_weights(motion, ifa_weights) if ifa_weights is not None else None
    motion.eval().requires_grad_(False)
    return MotionUNet(unet=motion, ifa_processors=processors, ifa_metadata=metadata)


class LayerAnimatePipeline(DiffusionPipeline):
    """RGBA image or adjusted latent → transparent video frames (Layer-Animate stage two)."""

    model_cpu_offload_seq = "text_encoder->unet->vae->transparent_decoder"
    _optional_components: ClassVar[list[str]] = ["transparent_encoder"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNetMotionModel,
        scheduler: SchedulerMixin,
        transparent_decoder: TransparentVAEDecoder,
        transparent_encoder: TransparentVAEEncoder | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            transparent_decoder=transparent_decoder,
            transparent_encoder=transparent_encoder,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def max_frames(self) -> int:
        return int(self.unet.config.motion_max_seq_length)

    @torch.no_grad()
    def encode_image(self, rgba_hwc_uint8: np.ndarray) -> torch.Tensor:
        """An RGBA still → its adjusted latent (1, c, h, w) in the UNet's space (paper §III-B, Fig. 2)."""
        if self.transparent_encoder is None:
            raise UsageError("an RGBA input image needs the transparency encoder; load it with the pipeline.")
        height, width = rgba_hwc_uint8.shape[:2]
        check_size("image height", height)
        check_size("image width", width)
        rgba = torch.from_numpy(np.ascontiguousarray(rgba_hwc_uint8)).to(self._execution_device)
        rgba_b4hw_01 = rearrange(rgba, "h w c -> 1 c h w").float() / 255.0
        raw = encode_adjusted_latent(self.vae, self.transparent_encoder, rgba_b4hw_01.to(self.vae.dtype))
        return raw.float() * self.vae.config.scaling_factor

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        negative_prompt: str | None = None,
        *,
        image: np.ndarray | None = None,
        base_latent: torch.Tensor | None = None,
        num_frames: int = DEFAULT_FRAMES,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        generator: torch.Generator | None = None,
        tta: bool = True,
        decode_chunk_size: int = 4,
        progress: ProgressFn | None = None,
    ) -> LayerAnimateOutput:
        # 1. Check inputs
        if (image is None) == (base_latent is None):
            raise UsageError("give exactly one of an RGBA image or a stage-one latent.")
        if not 2 <= num_frames <= self.max_frames:
            raise UsageError(
                f"--frames {num_frames} is outside 2..{self.max_frames} (the motion module's window); "
                f"pick a value in that range."
            )
        if num_inference_steps < 1:
            raise UsageError(f"--steps {num_inference_steps} must be at least 1.")
        if decode_chunk_size < 1:
            raise UsageError(f"--decode-chunk-size {decode_chunk_size} must be at least 1.")
        device = self._execution_device
        dtype = self.unet.dtype
        guidance = guidance_scale > 1.0
        middle = middle_frame_index(num_frames)

        # 2. The base latent: clean, in the UNet's (scaled) transparent latent space
        base = self.encode_image(image) if image is not None else base_latent
        assert base is not None
        if base.ndim != 4 or base.shape[0] != 1 or base.shape[1] != self.unet.config.in_channels:
            raise UsageError(f"the base latent has shape {tuple(base.shape)}; expected (1, 4, h, w).")
        base_b1chw = rearrange(base.to(device=device, dtype=dtype), "b c h w -> b c 1 h w")
        height, width = base.shape[-2] * self.vae_scale_factor, base.shape[-1] * self.vae_scale_factor

        # 3. Encode the prompt; rows are video-major, frame-minor (b*F + f), so repeat per frame
        text = encode_prompt_sd15(
            self.tokenizer,
            self.text_encoder,
            [prompt],
            as_list(negative_prompt, 1),
            device=device,
            guidance=guidance,
        )
        text_embeds = text.embeds_bnc.to(dtype).repeat_interleave(num_frames, dim=0)  # ((b f), n, c)

        # 4. Timesteps and initial noise for every frame (the middle one is replaced by the base)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        shape = (1, self.unet.config.in_channels, num_frames, base.shape[-2], base.shape[-1])
        gen_device = generator.device if generator is not None else torch.device("cpu")
        latents = torch.randn(shape, generator=generator, device=gen_device, dtype=torch.float32)
        latents = (latents * self.scheduler.init_noise_sigma).to(device=device, dtype=dtype)
        latents[:, :, middle : middle + 1] = base_b1chw

        # 5. Denoising loop. The middle frame enters every UNet call clean (after the scheduler's input
        # scaling, as in training: no noise, no scaling) and is put back after every step.
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if guidance else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            model_input[:, :, middle : middle + 1] = base_b1chw
            noise_pred = self.unet(model_input, t, encoder_hidden_states=text_embeds).sample
            if guidance:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, generator=generator).prev_sample
            latents[:, :, middle : middle + 1] = base_b1chw
            if progress is not None:
                progress("denoise", i + 1, len(timesteps))

        # 6. Decode every frame through the SD VAE and the transparency decoder. The middle frame is decoded
        # on its own, exactly as stage one decodes an image, so it is bit-identical to stage one's still.
        raw_fchw = rearrange(latents[0], "c f h w -> f c h w") / self.vae.config.scaling_factor
        frames: list[np.ndarray | None] = [None] * num_frames
        frames[middle] = rgba_to_uint8(
            decode_rgba(
                self.vae, self.transparent_decoder, raw_fchw[middle : middle + 1], tta=tta, chunk_size=1
            )
        )[0]
        others = [f for f in range(num_frames) if f != middle]
        done = 1
        for start in range(0, len(others), decode_chunk_size):
            idx = others[start : start + decode_chunk_size]
            rgba = decode_rgba(
                self.vae, self.transparent_decoder, raw_fchw[idx], tta=tta, chunk_size=decode_chunk_size
            )
            for j, f in enumerate(idx):
                frames[f] = rgba_to_uint8(rgba[j : j + 1])[0]
            done += len(idx)
            if progress is not None:
                progress("decode", done, num_frames)
        self.maybe_free_model_hooks()
        out = np.stack([f for f in frames if f is not None])
        assert out.shape[0] == num_frames and out.shape[1:3] == (height, width)
        return LayerAnimateOutput(frames=out, latents=latents.float().cpu(), middle_index=middle)
