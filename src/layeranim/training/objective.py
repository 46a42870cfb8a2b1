"""Layer-Animate's training objective (paper §III-B, Fig. 2) and the noise it is trained with.

A clip of F frames is encoded to adjusted latents; the middle frame m = (F − 1) // 2 stays noise-free in
the UNet input (it is the base image, as at inference), every other frame is noised at a sampled timestep,
and the loss (epsilon or v, per the scheduler's prediction type) covers the other frames only.

The noise follows AnimateDiff's training schedule (linear betas 0.00085 → 0.012, guoyww/AnimateDiff
`configs/training/v1/training.yaml`): the frozen motion modules were trained with it, so IFA must see the
noise levels they expect at each timestep (`pipelines/_schedulers.py`).

Axis legend: b videos, c latent channels, f frames, h/w latent height/width, n text tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from einops import rearrange

from layeranim.errors import WeightsError
from layeranim.models.inter_frame_attention import middle_frame_index
from layeranim.pipelines._schedulers import schedule_overrides

if TYPE_CHECKING:
    from diffusers import DDPMScheduler

    from layeranim.training.setup import TrainingModels


def make_noise_scheduler(base_config: Any, schedule: str = "animatediff") -> DDPMScheduler:
    """The DDPM scheduler training noises with: AnimateDiff's betas (default) or the base model's ("base")."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(base_config, **schedule_overrides(schedule))


def ifa_loss(
    unet: Callable[..., Any],
    noise_scheduler: Any,
    latents_bcfhw: torch.Tensor,
    text_embeds_bnc: torch.Tensor,
    noise_bcfhw: torch.Tensor,
    timesteps_b: torch.Tensor,
) -> torch.Tensor:
    """Layer-Animate's objective (§III-B, Fig. 2): clean middle frame in, MSE on every other frame out."""
    frames = latents_bcfhw.shape[2]
    middle = middle_frame_index(frames)
    noisy_bcfhw = noise_scheduler.add_noise(latents_bcfhw, noise_bcfhw, timesteps_b)
    is_middle_f = torch.arange(frames, device=latents_bcfhw.device) == middle
    is_middle = rearrange(is_middle_f, "f -> 1 1 f 1 1")
    model_input = torch.where(is_middle, latents_bcfhw, noisy_bcfhw)  # the base frame stays noise-free
    text_embeds = text_embeds_bnc.repeat_interleave(frames, dim=0)  # ((b f), n, c): rows b*F + f
    prediction = unet(model_input, timesteps_b, encoder_hidden_states=text_embeds).sample

    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise_bcfhw
    elif prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents_bcfhw, noise_bcfhw, timesteps_b)
    else:
        raise WeightsError(
            f"the scheduler predicts {prediction_type!r}; training supports epsilon and v_prediction models."
        )
    others = [f for f in range(frames) if f != middle]  # the middle frame contributes no loss
    return F.mse_loss(prediction[:, :, others].float(), target[:, :, others].float())


def sample_noise(
    latents_bcfhw: torch.Tensor, num_train_timesteps: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian noise like the latents and one uniform timestep per video, from the run's CPU stream.

    Drawn on the CPU so every device gives the same numbers for the same seed (and a resume continues
    the stream exactly); moved to the latents' device and dtype.
    """
    noise = torch.randn(latents_bcfhw.shape, generator=generator)
    timesteps = torch.randint(0, num_train_timesteps, (latents_bcfhw.shape[0],), generator=generator)
    return (
        noise.to(device=latents_bcfhw.device, dtype=latents_bcfhw.dtype),
        timesteps.to(latents_bcfhw.device),
    )


def drop_captions(captions: list[str], probability: float, generator: torch.Generator) -> list[str]:
    """Replace each caption by '' with `probability`, so the model also learns the unconditional branch."""
    keep = torch.rand(len(captions), generator=generator) >= probability
    return [caption if kept else "" for caption, kept in zip(captions, keep.tolist(), strict=True)]


@torch.no_grad()
def encode_captions(models: TrainingModels, captions: list[str], device: torch.device) -> torch.Tensor:
    """CLIP last hidden state per caption (b, n, c), as the pipelines condition on it."""
    from layeranim.pipelines._prompts import encode_prompt_sd15

    return encode_prompt_sd15(
        models.tokenizer, models.text_encoder, captions, [], device=device, guidance=False
    ).embeds_bnc


__all__ = ["drop_captions", "encode_captions", "ifa_loss", "make_noise_scheduler", "sample_noise"]
