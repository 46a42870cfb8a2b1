"""Everything a training run is built from: the frozen models with trainable IFA, accelerate, the data,
the optimizer and its learning-rate schedule. `loop.train` calls these in order, then runs the loop."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from layeranim.errors import UsageError
from layeranim.models.inter_frame_attention import InterFrameAttnProcessor, ifa_parameters
from layeranim.pipelines._schedulers import make_video_scheduler
from layeranim.training.config import Config, ModelConfig, OptimConfig, config_to_dict
from layeranim.training.data import ClipDataset, ClipSource, LatentCache, SkipReport, scan_clips
from layeranim.training.objective import make_noise_scheduler


@dataclass
class TrainingModels:
    """Everything a training run computes with; all frozen except the IFA processors' W_Q' and W_O'."""

    tokenizer: Any
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module  # diffusers UNetMotionModel with LayerDiffuse processors and IFA installed
    noise_scheduler: Any  # DDPMScheduler, AnimateDiff's betas: add_noise / get_velocity / prediction_type
    inference_scheduler: Any  # what validation renders sample with (stage two's default sampler)
    transparent_encoder: torch.nn.Module
    transparent_decoder: torch.nn.Module
    ifa_processors: dict[str, InterFrameAttnProcessor]
    sources: dict[str, str] = field(default_factory=dict)  # where each component came from

    def frozen_modules(self) -> dict[str, torch.nn.Module]:
        """The modules whose weights must never change (the UNet's IFA parameters excepted)."""
        return {
            "unet": self.unet,
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "transparent_encoder": self.transparent_encoder,
            "transparent_decoder": self.transparent_decoder,
        }


def model_spec(config: ModelConfig) -> Any:
    """The `components.ModelSpec` a model config names (empty references take the preset's defaults)."""
    from layeranim.render.components import ModelSpec

    overrides = {
        "base": config.base_model or None,
        "transparent_attn": config.transparent_attn or None,
        "transparent_encoder": config.transparent_encoder or None,
        "transparent_decoder": config.transparent_decoder or None,
        "motion_adapter": config.motion_adapter or None,
    }
    if config.preset == "tiny":
        return ModelSpec.for_preset("tiny", **overrides)
    return ModelSpec(family="sd15", **{key: value for key, value in overrides.items() if value is not None})


def load_training_models(config: ModelConfig, *, device: torch.device, dtype: torch.dtype) -> TrainingModels:
    """Load the frozen stage-one components and the motion adapter, and build the motion UNet with IFA.

    The IFA layers are float32 whatever `dtype` the frozen weights have (mixed precision trains fp32
    master weights), start as W_Q' = W_Q and W_O' = 0 (or from `init_ifa_weights`), and are the only
    parameters with `requires_grad=True`.
    """
    from layeranim.pipelines.layeranimate import build_motion_unet
    from layeranim.render.components import load_components, resolve_component, source_record
    from layeranim.speed import load_motion_weights

    spec = model_spec(config)
    components = load_components(spec, device=device, dtype=dtype)
    adapter_path = resolve_component(spec, "motion_adapter")
    # Any motion weights stage two reads, a speed preset's too (Lightning's bare diffusers-keyed file).
    adapter = load_motion_weights(adapter_path, dtype=dtype)
    init_weights = Path(config.init_ifa_weights) if config.init_ifa_weights else None
    motion = build_motion_unet(
        components.unet, adapter, components.layerdiffuse_processors, ifa_weights=init_weights
    )
    del adapter
    sources = {**components.sources, **source_record("motion_adapter", adapter_path)}
    models = TrainingModels(
        tokenizer=components.tokenizer,
        text_encoder=components.text_encoder,
        vae=components.vae,
        unet=motion.unet.to(device),
        noise_scheduler=make_noise_scheduler(components.scheduler.config, config.noise_schedule),
        inference_scheduler=make_video_scheduler(components.scheduler.config, schedule=config.noise_schedule),
        transparent_encoder=components.transparent_encoder,
        transparent_decoder=components.transparent_decoder,
        ifa_processors=motion.ifa_processors,
        sources=sources,
    )
    freeze_all_but_ifa(models)
    return models


def freeze_all_but_ifa(models: TrainingModels) -> list[torch.nn.Parameter]:
    """Eval mode and `requires_grad=False` everywhere, then W_Q'/W_O' in float32 with gradients (returned)."""
    for module in models.frozen_modules().values():
        module.eval()
        module.requires_grad_(False)
    for processor in models.ifa_processors.values():
        processor.to_q_ifa.float()
        processor.to_out_ifa.float()
    params = ifa_parameters(models.ifa_processors)
    for param in params:
        param.requires_grad_(True)
    return params


def resolve_mixed_precision(config: Config) -> str | None:
    """The accelerate precision: `auto` is bf16 (fp16 without bf16) on CUDA, no on the CPU.

    Under `accelerate launch --mixed_precision …`, `auto` leaves the choice to the launcher (None).
    """
    requested = config.train.mixed_precision
    if requested != "auto":
        return requested
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None
    if config.train.device != "cpu" and torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def tracker_names(report_to: str) -> list[str]:
    """Accelerate trackers for `log.report_to`: auto → TensorBoard when it is installed."""
    from accelerate.utils import is_tensorboard_available

    if report_to == "none":
        return []
    if report_to == "auto":
        return ["tensorboard"] if is_tensorboard_available() else []
    return [name.strip() for name in report_to.split(",") if name.strip()]


def flat_config(config: Config) -> dict[str, Any]:
    """`{"data.frames": 16, …}`: what trackers accept as hyper-parameters."""
    return {
        f"{table}.{key}": value
        for table, entries in config_to_dict(config).items()
        for key, value in entries.items()
    }


def make_accelerator(config: Config, output_dir: Path) -> tuple[Any, torch.dtype]:
    """accelerate's `Accelerator` for the run (one process per device, precision, trackers) and the dtype
    the frozen weights run in."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    trackers = tracker_names(config.log.report_to)
    accelerator = Accelerator(
        cpu=config.train.device == "cpu",
        mixed_precision=resolve_mixed_precision(config),
        log_with=trackers or None,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
    )
    if accelerator.device.type == "cpu" and accelerator.mixed_precision == "fp16":
        raise UsageError(
            "train.mixed_precision = 'fp16' needs a GPU; on the CPU use 'no' or 'bf16' (or 'auto')."
        )
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32
    )
    return accelerator, weight_dtype


def build_dataset(
    config: Config, models: TrainingModels, output_dir: Path
) -> tuple[ClipDataset, list[ClipSource], SkipReport, LatentCache | None]:
    """Scan the clip folder once and index it: a deterministic clip for every global sample position."""
    data_cfg = config.data
    cache = None
    if data_cfg.cache_latents:
        cache_dir = Path(data_cfg.cache_dir) if data_cfg.cache_dir else output_dir / "latent-cache"
        fingerprint = json.dumps(
            {k: v for k, v in sorted(models.sources.items()) if k.startswith(("base", "transparent_encoder"))}
        )
        cache = LatentCache(cache_dir, fingerprint)
    sources, skipped = scan_clips(
        data_cfg.path,
        frames=data_cfg.frames,
        frame_stride=data_cfg.frame_stride,
        exclude=[output_dir] + ([cache.folder] if cache is not None else []),
    )
    if not sources:
        shown = "; ".join(skipped.lines()[:3]) or "the folder holds no clips"
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        raise UsageError(
            f"data.path={data_cfg.path!r} has no usable RGBA clip: {shown}{more}. Give a folder of clips "
            "with alpha, each at least data.frames long."
        )
    dataset = ClipDataset(
        sources,
        frames=data_cfg.frames,
        frame_stride=data_cfg.frame_stride,
        width=data_cfg.width,
        height=data_cfg.height,
        crop=data_cfg.crop,
        shuffle=data_cfg.shuffle,
        seed=config.train.seed,
        cache=cache,
    )
    return dataset, sources, skipped, cache


def make_optimizer(params: list[torch.nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW over the IFA parameters only."""
    return torch.optim.AdamW(
        params,
        lr=optim.learning_rate,
        betas=(optim.beta1, optim.beta2),
        eps=optim.eps,
        weight_decay=optim.weight_decay,
    )


def make_lr_scheduler(
    optimizer: torch.optim.Optimizer, optim: OptimConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """diffusers' schedule (`get_scheduler`): linear warmup from 0, then cosine or constant.

    diffusers' cosine decays to 0; `optim.min_lr_ratio` r lifts it after the warmup to
    `lr · (r + (1 − r) · cosine)`, so it ends at `lr · r`. The schedule is a pure function of the step,
    so a resume recomputes it (`fast_forward`) instead of storing it.
    """
    from diffusers.optimization import get_scheduler

    name = "cosine" if optim.lr_schedule == "cosine" else "constant_with_warmup"
    schedule = get_scheduler(
        name, optimizer, num_warmup_steps=optim.warmup_steps, num_training_steps=max_steps
    )
    ratio, warmup = optim.min_lr_ratio, optim.warmup_steps
    if name == "cosine" and ratio > 0:
        cosines = schedule.lr_lambdas

        def lifted(step: int, cosine: Any) -> float:
            return cosine(step) if step < warmup else ratio + (1.0 - ratio) * cosine(step)

        schedule.lr_lambdas = [lambda step, cosine=cosine: lifted(step, cosine) for cosine in cosines]
    return schedule


def fast_forward(
    schedule: torch.optim.lr_scheduler.LambdaLR, optimizer: torch.optim.Optimizer, step: int
) -> None:
    """Put a fresh schedule and the optimizer's learning rates where `step` optimizer steps leave them
    (as `LambdaLR.step()` once per step would, without its warning before the first optimizer step)."""
    schedule.last_epoch = step
    for group, base, rate in zip(optimizer.param_groups, schedule.base_lrs, schedule.lr_lambdas, strict=True):
        group["lr"] = base * rate(step)
