"""Stage one: text → transparent RGBA image with LayerDiffuse (SD1.5 or SDXL), plus its adjusted latent.

The UNet carries LayerDiffuse's transparency weights, so it samples in the "transparent latent space"
(paper §III-A): the SD VAE decodes such a latent to the foreground over 50 % gray, and the transparency
decoder turns that (with the raw latent) into straight RGBA.

Axes: b = image in the batch, c = latent channels, h/w = latent height/width (pixels / 8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from transformers import CLIPTextModel, CLIPTokenizer

from layeranim.errors import UsageError, WeightsError
from layeranim.models.transparent_vae import (
    TransparentVAEDecoder,
    TransparentVAEEncoder,
    decode_rgba,
    rgba_to_uint8,
)
from layeranim.pipelines._prompts import PromptEmbeddings, encode_prompt_sd15, encode_prompt_sdxl

ProgressFn = Callable[[str, int, int], None]
"""progress(phase, done, total) with phase "denoise" or "decode"."""


@dataclass
class LayerDiffuseOutput(BaseOutput):
    """Stage-one result."""

    images: np.ndarray  # (b, H, W, 4) uint8, straight alpha
    latents: torch.Tensor  # (b, 4, h, w) adjusted latents in the UNet's (scaled) space, float32 on CPU


def check_size(name: str, value: int, multiple: int = 8) -> None:
    if value <= 0 or value % multiple:
        nearest = max(multiple, round(value / multiple) * multiple)
        raise UsageError(f"--{name} {value} must be a positive multiple of {multiple}; try {nearest}.")


def as_list(text: str | list[str] | None, n: int) -> list[str]:
    if text is None:
        return [""] * n
    if isinstance(text, str):
        return [text] * n
    if len(text) != n:
        raise UsageError(f"negative_prompt has {len(text)} entries for {n} prompts; give one per prompt.")
    return list(text)


def check_sdxl_conditioning(unet_config: Any, text: PromptEmbeddings, *, num_time_ids: int) -> None:
    """Refuse text encoders and a UNet that do not fit together, before the UNet fails on a matmul."""
    context = int(text.embeds_bnc.shape[-1])
    if context != unet_config.cross_attention_dim:
        raise WeightsError(
            f"the two text encoders give {context}-wide embeddings but the SDXL UNet's "
            f"cross_attention_dim is {unet_config.cross_attention_dim}; load the UNet and both text "
            "encoders from the same SDXL base."
        )
    pooled = int(text.pooled_bc.shape[-1]) if text.pooled_bc is not None else 0
    time_features = unet_config.addition_time_embed_dim * num_time_ids
    given, expected = time_features + pooled, unet_config.projection_class_embeddings_input_dim
    if given != expected:
        raise WeightsError(
            f"the SDXL UNet's added conditioning takes {expected} features, but {num_time_ids} size ids "
            f"({time_features}) plus text_encoder_2's pooled output ({pooled}) give {given}; "
            "use an SDXL base UNet (not the refiner) with its own text_encoder_2."
        )


class LayerDiffusePipeline(DiffusionPipeline):
    """Text-to-RGBA with a LayerDiffuse-patched SD1.5 or SDXL UNet.

    The UNet is expected to carry the LayerDiffuse weights already (see `layeranim.render.components`).
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->unet->vae->transparent_decoder"
    _optional_components: ClassVar[list[str]] = ["transparent_encoder", "text_encoder_2", "tokenizer_2"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        transparent_decoder: TransparentVAEDecoder,
        transparent_encoder: TransparentVAEEncoder | None = None,
        text_encoder_2: torch.nn.Module | None = None,
        tokenizer_2: CLIPTokenizer | None = None,
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
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def is_sdxl(self) -> bool:
        return self.unet.config.get("addition_embed_type") == "text_time"

    def encode_text(self, prompts: list[str], negatives: list[str], guidance: bool) -> PromptEmbeddings:
        if self.is_sdxl:
            if self.text_encoder_2 is None or self.tokenizer_2 is None:
                raise UsageError(
                    "an SDXL UNet needs text_encoder_2 and tokenizer_2; load the SDXL base model."
                )
            return encode_prompt_sdxl(
                (self.tokenizer, self.tokenizer_2),
                (self.text_encoder, self.text_encoder_2),
                prompts,
                negatives,
                device=self._execution_device,
                guidance=guidance,
            )
        return encode_prompt_sd15(
            self.tokenizer,
            self.text_encoder,
            prompts,
            negatives,
            device=self._execution_device,
            guidance=guidance,
        )

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.0,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | None = None,
        tta: bool = True,
        progress: ProgressFn | None = None,
    ) -> LayerDiffuseOutput:
        # 1. Check inputs
        default_size = int(self.unet.config.sample_size) * self.vae_scale_factor
        height = height or default_size
        width = width or default_size
        check_size("height", height)
        check_size("width", width)
        if num_inference_steps < 1:
            raise UsageError(f"--steps {num_inference_steps} must be at least 1.")
        if num_images_per_prompt < 1:
            raise UsageError(f"--batch {num_images_per_prompt} must be at least 1.")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = as_list(negative_prompt, len(prompts))
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        negatives = [n for n in negatives for _ in range(num_images_per_prompt)]
        batch = len(prompts)
        guidance = guidance_scale > 1.0
        device = self._execution_device
        dtype = self.unet.dtype

        # 2. Encode the prompt ([uncond, cond] with guidance)
        text = self.encode_text(prompts, negatives, guidance)
        added_cond: dict[str, torch.Tensor] | None = None
        if self.is_sdxl:
            if text.pooled_bc is None:
                raise ValueError("SDXL prompt encoding returned no pooled embeddings")
            # SDXL's micro-conditioning: original size, crop top-left, target size (no crop, no resize).
            time_ids = torch.tensor([[height, width, 0, 0, height, width]], device=device, dtype=dtype)
            check_sdxl_conditioning(self.unet.config, text, num_time_ids=time_ids.shape[1])
            added_cond = {
                "text_embeds": text.pooled_bc.to(dtype),
                "time_ids": time_ids.repeat(text.embeds_bnc.shape[0], 1),
            }

        # 3. Timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 4. Initial noise (drawn on the generator's device, in fp32, for reproducibility across dtypes)
        latent_shape = (
            batch,
            self.unet.config.in_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        gen_device = generator.device if generator is not None else torch.device("cpu")
        latents = torch.randn(latent_shape, generator=generator, device=gen_device, dtype=torch.float32)
        latents = (latents * self.scheduler.init_noise_sigma).to(device=device, dtype=dtype)

        # 5. Denoising loop
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if guidance else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            noise_pred = self.unet(
                model_input, t, encoder_hidden_states=text.embeds_bnc.to(dtype), added_cond_kwargs=added_cond
            ).sample
            if guidance:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, generator=generator).prev_sample
            if progress is not None:
                progress("denoise", i + 1, len(timesteps))

        # 6. Decode: SD VAE over gray, then the transparency decoder, one image at a time so that an image's
        # pixels never depend on what else is in the batch (stage two re-decodes the same latent bit-exactly).
        images = []
        for b in range(batch):
            raw = latents[b : b + 1] / self.vae.config.scaling_factor
            rgba = decode_rgba(self.vae, self.transparent_decoder, raw, tta=tta, chunk_size=1)
            images.append(rgba_to_uint8(rgba)[0].cpu().numpy())
            if progress is not None:
                progress("decode", b + 1, batch)
        self.maybe_free_model_hooks()
        return LayerDiffuseOutput(images=np.stack(images), latents=latents.float().cpu())
