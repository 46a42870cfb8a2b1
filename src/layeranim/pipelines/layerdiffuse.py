"""Stage one: text → transparent RGBA image with LayerDiffuse (SD1.5 or SDXL), plus its adjusted latent.

The UNet carries LayerDiffuse's transparency weights, so it samples in the "transparent latent space"
(paper §III-A): the SD VAE decodes such a latent to the foreground over 50 % gray, and the transparency
decoder turns that (with the raw latent) into straight RGBA.

Axes: b = image in the batch, c = latent channels, h/w = latent height/width (pixels / 8).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.loaders import TextualInversionLoaderMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from layeranim.errors import UsageError, WeightsError
from layeranim.models.alignment import realign_weights_
from layeranim.models.layerdiffuse_unet import (
    layerdiffuse_processors,
    load_layerdiffuse_processors,
    plain_attention_processors,
    save_layerdiffuse_processors,
)
from layeranim.models.transparent_vae import (
    TransparentVAEDecoder,
    TransparentVAEEncoder,
    decode_rgba,
    rgba_to_uint8,
)
from layeranim.pipelines._prompts import PromptEmbeddings, encode_prompt_sd15, encode_prompt_sdxl
from layeranim.progress import PhaseProgress as ProgressFn

StepEndCallback = Callable[[DiffusionPipeline, int, Any, dict[str, Any]], dict[str, Any]]
"""callback_on_step_end(pipe, step, timestep, callback_kwargs) -> dict of tensors to replace."""

OUTPUT_TYPES = ("np", "pt", "pil", "latent")
PROCESSORS_FILE = "layerdiffuse_processors.safetensors"
"""Inside a saved pipeline's `unet/`: the LayerDiffuse processors' weights (`save_pretrained`)."""


@dataclass
class LayerDiffuseOutput(BaseOutput):
    """Stage-one result.

    `images` by `output_type`: "np" (b, H, W, 4) uint8 straight RGBA; "pt" (b, 4, H, W) float32 in [0, 1];
    "pil" a list of RGBA `PIL.Image`s; "latent" the latents again (nothing decoded).
    """

    images: np.ndarray | torch.Tensor | list[PIL.Image.Image]
    latents: torch.Tensor  # (b, 4, h, w) adjusted latents in the UNet's (scaled) space, float32 on CPU


def check_size(name: str, value: int, multiple: int = 8) -> None:
    if value <= 0 or value % multiple:
        nearest = max(multiple, round(value / multiple) * multiple)
        raise UsageError(f"{name}={value} must be a positive multiple of {multiple}; try {nearest}.")


def as_list(text: str | list[str] | None, n: int, name: str = "negative_prompt") -> list[str]:
    if text is None:
        return [""] * n
    if isinstance(text, str):
        return [text] * n
    if len(text) != n:
        raise UsageError(f"{name} has {len(text)} entries for {n} prompts; give one per prompt.")
    return list(text)


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise UsageError(f"output_type={output_type!r} is not one of {', '.join(OUTPUT_TYPES)}.")


def check_callback_inputs(names: list[str], allowed: list[str]) -> None:
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise UsageError(
            f"callback_on_step_end_tensor_inputs={unknown} are not among {allowed}; pass names from it."
        )


def check_generators(generator: torch.Generator | list[torch.Generator] | None, batch: int) -> None:
    if isinstance(generator, list) and len(generator) != batch:
        raise UsageError(
            f"generator is a list of {len(generator)} for {batch} outputs; give one per output "
            "(prompts × per-prompt count) or a single generator.",
        )


def first_generator(generator: torch.Generator | list[torch.Generator] | None) -> torch.Generator | None:
    return generator[0] if isinstance(generator, list) else generator


def rgba_output(rgba_b4hw_01: torch.Tensor, output_type: str) -> np.ndarray | torch.Tensor | list:
    """Decoded straight RGBA in [0, 1] → the requested `output_type` ("np" rounds to uint8 like "pil")."""
    if output_type == "pt":
        return rgba_b4hw_01.float().clamp(0, 1)
    rgba_bhwc_uint8 = rgba_to_uint8(rgba_b4hw_01).cpu().numpy()
    if output_type == "pil":
        return [PIL.Image.fromarray(rgba) for rgba in rgba_bhwc_uint8]
    return rgba_bhwc_uint8


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


class LayerDiffusePipeline(DiffusionPipeline, TextualInversionLoaderMixin):
    """Text-to-RGBA with a LayerDiffuse-patched SD1.5 or SDXL UNet.

    The UNet is expected to carry the LayerDiffuse weights already (see `layeranim.render.components`).
    `save_pretrained` writes a diffusers folder plus the LayerDiffuse processors' weights in `unet/`;
    `from_pretrained` puts them back.
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->unet->vae->transparent_decoder"
    _optional_components: ClassVar[list[str]] = ["transparent_encoder", "text_encoder_2", "tokenizer_2"]
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents", "prompt_embeds"]

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
        self._interrupt = False

    @property
    def is_sdxl(self) -> bool:
        return self.unet.config.get("addition_embed_type") == "text_time"

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` (e.g. in `callback_on_step_end`) to skip the remaining steps."""
        return self._interrupt

    # ---------------------------------------------------------------------------------------------
    # save_pretrained / from_pretrained: diffusers' folder, plus the processors it cannot rebuild

    def save_pretrained(self, save_directory: str | os.PathLike[str], **kwargs: Any) -> None:
        """A diffusers pipeline folder; the LayerDiffuse processors' weights go to `unet/PROCESSORS_FILE`."""
        processors = layerdiffuse_processors(self.unet)
        with plain_attention_processors(self.unet):  # the UNet's own weights in the diffusers layout
            super().save_pretrained(save_directory, **kwargs)
        if processors:
            save_layerdiffuse_processors(Path(save_directory) / "unet" / PROCESSORS_FILE, processors)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any
    ) -> LayerDiffusePipeline:
        """Load a folder `save_pretrained` wrote (or a Hub id) and put its LayerDiffuse processors back."""
        folder = pipeline_folder(cls, pretrained_model_name_or_path, kwargs, (f"unet/{PROCESSORS_FILE}",))
        pipe = super().from_pretrained(folder, **kwargs)
        realign_loaded_weights_(pipe)
        processors_file = folder / "unet" / PROCESSORS_FILE
        if processors_file.is_file():
            load_layerdiffuse_processors(pipe.unet, processors_file)
        return pipe

    # ---------------------------------------------------------------------------------------------
    # The steps of __call__

    def encode_text(
        self, prompts: list[str], negatives: list[str], guidance: bool, clip_skip: int | None = None
    ) -> PromptEmbeddings:
        """[uncond..., cond...] CLIP conditioning (SDXL: both encoders and the pooled projection)."""
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
                clip_skip=clip_skip,
            )
        return encode_prompt_sd15(
            self.tokenizer,
            self.text_encoder,
            prompts,
            negatives,
            device=self._execution_device,
            guidance=guidance,
            clip_skip=clip_skip,
        )

    def check_inputs(
        self,
        prompt: str | list[str] | None,
        height: int,
        width: int,
        num_inference_steps: int,
        num_images_per_prompt: int,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str],
    ) -> None:
        """Refuse bad arguments before any model runs, naming the argument, its value and the fix."""
        if prompt is None or not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not prompt):
            raise UsageError(f"prompt={prompt!r} must be a string or a non-empty list of strings.")
        check_size("height", height)
        check_size("width", width)
        if num_inference_steps < 1:
            raise UsageError(f"num_inference_steps={num_inference_steps} must be at least 1.")
        if num_images_per_prompt < 1:
            raise UsageError(f"num_images_per_prompt={num_images_per_prompt} must be at least 1.")
        check_output_type(output_type)
        check_callback_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    def prepare_latents(
        self,
        batch: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial noise (b, c, h, w) × the scheduler's `init_noise_sigma`, drawn in fp32 on the generator's
        device (the CPU without one), so a seed gives the same picture on every device and dtype."""
        shape = (
            batch,
            self.unet.config.in_channels,
            height // self.vae_scale_factor,
            width // self.vae_scale_factor,
        )
        if latents is None:
            first = first_generator(generator)
            gen_device = first.device if first is not None else torch.device("cpu")
            latents = randn_tensor(shape, generator=generator, device=gen_device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise UsageError(f"latents has shape {tuple(latents.shape)}; expected {shape} for this call.")
        return (latents.float() * self.scheduler.init_noise_sigma).to(device=device, dtype=dtype)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        *,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.0,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        clip_skip: int | None = None,
        tta: bool = True,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        progress: ProgressFn | None = None,
    ) -> LayerDiffuseOutput | tuple[Any, ...]:
        """Generate straight-RGBA images (and their adjusted latents) from text.

        Args:
            prompt: the text, or one per image.
            negative_prompt: what guidance steers away from; one for all prompts or one per prompt.
            height, width: pixels, multiples of 8 (the transparency decoder pads to 64 internally); default
                the UNet's sample size.
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance weight; ≤ 1 turns guidance off.
            num_images_per_prompt: images for each prompt (rows prompt-major).
            generator: a `torch.Generator`, or a list with one per image (then image i depends only on
                generator i).
            latents: initial noise (b, 4, h, w) instead of drawing it (scaled by `init_noise_sigma`).
            clip_skip: CLIP layers to skip from the end (diffusers' `encode_prompt`).
            tta: decode with the transparency decoder's test-time augmentation (slower, cleaner alpha).
            output_type: "np" (uint8), "pt" (float in [0, 1]), "pil", or "latent" (no decoding).
            return_dict: a `LayerDiffuseOutput`, or the tuple `(images, latents)` when False.
            callback_on_step_end: `callback(pipe, step, timestep, tensors) -> dict` after every step; tensors
                it returns (`latents`, `prompt_embeds`) replace the pipeline's. `pipe._interrupt = True`
                skips the remaining steps (the latents so far are decoded).
            callback_on_step_end_tensor_inputs: the names passed to the callback (default `["latents"]`).
            progress: `progress(phase, done, total)`, phase "denoise" or "decode".
        """
        # 1. Check inputs
        default_size = int(self.unet.config.sample_size) * self.vae_scale_factor
        height = height or default_size
        width = width or default_size
        tensor_inputs = (
            ["latents"]
            if callback_on_step_end_tensor_inputs is None
            else list(callback_on_step_end_tensor_inputs)
        )
        self.check_inputs(
            prompt, height, width, num_inference_steps, num_images_per_prompt, output_type, tensor_inputs
        )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)  # type: ignore[arg-type]
        negatives = as_list(negative_prompt, len(prompts))
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        negatives = [n for n in negatives for _ in range(num_images_per_prompt)]
        batch = len(prompts)
        check_generators(generator, batch)
        guidance = guidance_scale > 1.0
        device = self._execution_device
        dtype = self.unet.dtype
        self._interrupt = False

        # 2. Encode the prompt ([uncond, cond] with guidance)
        text = self.encode_text(prompts, negatives, guidance, clip_skip)
        prompt_embeds = text.embeds_bnc.to(dtype)
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

        # 4. Initial noise
        latents = self.prepare_latents(batch, height, width, dtype, device, generator, latents)

        # 5. Denoising loop
        for i, t in enumerate(timesteps):
            if self.interrupt:
                continue
            model_input = torch.cat([latents] * 2) if guidance else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            noise_pred = self.unet(
                model_input, t, encoder_hidden_states=prompt_embeds, added_cond_kwargs=added_cond
            ).sample
            if guidance:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, generator=generator).prev_sample
            if callback_on_step_end is not None:
                tensors = {"latents": latents, "prompt_embeds": prompt_embeds}
                returned = callback_on_step_end(self, i, t, {k: tensors[k] for k in tensor_inputs}) or {}
                latents = returned.pop("latents", latents)
                prompt_embeds = returned.pop("prompt_embeds", prompt_embeds)
            if progress is not None:
                progress("denoise", i + 1, len(timesteps))
        latents_out = latents.float().cpu()

        # 6. Decode: SD VAE over gray, then the transparency decoder, one image at a time so that an image's
        # pixels never depend on what else is in the batch (stage two re-decodes the same latent bit-exactly).
        if output_type == "latent":
            self.maybe_free_model_hooks()
            output = LayerDiffuseOutput(images=latents_out, latents=latents_out)
            return output if return_dict else output.to_tuple()
        decoded = []
        for b in range(batch):
            raw = latents[b : b + 1] / self.vae.config.scaling_factor
            decoded.append(decode_rgba(self.vae, self.transparent_decoder, raw, tta=tta, chunk_size=1))
            if progress is not None:
                progress("decode", b + 1, batch)
        self.maybe_free_model_hooks()
        images = rgba_output(torch.cat(decoded), output_type)
        output = LayerDiffuseOutput(images=images, latents=latents_out)
        return output if return_dict else output.to_tuple()


def realign_loaded_weights_(pipe: DiffusionPipeline) -> None:
    """`realign_weights_` on every model of the pipeline (see `layeranim.models.alignment`: a pipeline
    loaded from safetensors then computes bit-identically to the one that was saved)."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            realign_weights_(component)


def _download_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The `from_pretrained` keywords that `DiffusionPipeline.download` also takes."""
    names = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "variant")
    return {name: kwargs[name] for name in names if name in kwargs}


def pipeline_folder(
    cls: type[DiffusionPipeline],
    pretrained_model_name_or_path: str | os.PathLike[str],
    kwargs: dict[str, Any],
    extra_files: tuple[str, ...],
) -> Path:
    """A local pipeline folder, downloading a Hub repository first (diffusers' own `download`).

    diffusers fetches only the weight files it knows inside a model folder, so the processor files
    (`extra_files`, paths inside the repository) are fetched into the same snapshot as well.
    """
    folder = Path(pretrained_model_name_or_path)
    if folder.is_dir():
        return folder
    download = _download_kwargs(kwargs)
    folder = Path(cls.download(pretrained_model_name_or_path, **download))
    from huggingface_hub import snapshot_download

    download.pop("variant", None)
    snapshot_download(str(pretrained_model_name_or_path), allow_patterns=list(extra_files), **download)
    return folder
