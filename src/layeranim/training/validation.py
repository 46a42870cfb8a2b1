"""Optional validation renders during training: the current IFA weights animate one still, written as an
alpha video under `<output_dir>/validation/step-NNNNNN.<format>` (main process only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from layeranim.errors import UsageError
from layeranim.models.inter_frame_attention import middle_frame_index
from layeranim.training.config import Config
from layeranim.training.data import ClipDataset, ClipWindow, cut_clip
from layeranim.training.setup import TrainingModels

VALIDATION_DIR = "validation"


def check_validation_settings(config: Config) -> None:
    """Fail before training on what would only fail at the first validation render."""
    if not config.validation.every:
        return
    from layeranim import video_io

    video_io.resolve_output_format(f"validation.{config.validation.format}")
    if config.validation.image and not Path(config.validation.image).exists():
        raise UsageError(f"validation.image = {config.validation.image!r} does not exist; check the path.")


def validation_path(output_dir: Path, config: Config, step: int) -> Path:
    return output_dir / VALIDATION_DIR / f"step-{step:06d}.{config.validation.format}"


def validation_image(config: Config, dataset: ClipDataset) -> np.ndarray:
    """The still a validation render animates: `validation.image` cut to the training size, or the middle
    frame of the first clip."""
    from layeranim import video_io

    center = ClipWindow(start=0, offset_x=0.5, offset_y=0.5)
    if config.validation.image:
        clip = video_io.read_video(config.validation.image, stop=1)
        return cut_clip(clip.rgba_fhwc_uint8[:1], config.data.width, config.data.height, center)[0]
    rgba_fhwc_uint8 = dataset.load(0, center)
    return rgba_fhwc_uint8[middle_frame_index(rgba_fhwc_uint8.shape[0])]


def render_validation(
    models: TrainingModels,
    unet: torch.nn.Module,
    config: Config,
    image_hwc_uint8: np.ndarray,
    prompt: str,
    path: Path,
    fps: float,
    accelerator: Any,
) -> Path:
    """Animate the validation still with the current IFA weights and write it as an alpha video."""
    from layeranim import video_io
    from layeranim.pipelines.layeranimate import LayerAnimatePipeline

    pipeline = LayerAnimatePipeline(
        vae=models.vae,
        text_encoder=models.text_encoder,
        tokenizer=models.tokenizer,
        unet=unet,
        scheduler=models.inference_scheduler,
        transparent_decoder=models.transparent_decoder,
        transparent_encoder=models.transparent_encoder,
    )
    generator = torch.Generator("cpu").manual_seed(config.validation.seed)  # never the training stream
    with accelerator.autocast():
        output = pipeline(
            prompt,
            image=image_hwc_uint8,
            num_frames=config.data.frames,
            num_inference_steps=config.validation.steps,
            guidance_scale=config.validation.guidance_scale,
            generator=generator,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    video_io.write_video(path, output.frames, fps, overwrite=True)
    return path
