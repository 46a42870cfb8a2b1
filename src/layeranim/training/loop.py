"""Training Inter-Frame Attention with the Layer-Animate objective (paper §III-B, Fig. 2).

One loop, read top to bottom (nanoGPT style): set the learning rate → forward/backward over the
gradient-accumulation micro-batches → clip → step → log → checkpoint → validate → stop.

The objective: a clip of F frames is encoded to adjusted latents; the middle frame m = (F − 1) // 2
stays noise-free in the UNet input (it is the base image, as at inference), every other frame is noised
at a sampled timestep, and the loss (epsilon or v, per the scheduler's prediction type) covers the other
frames only. Only W_Q' and W_O' of every Inter-Frame Attention train; the SD UNet, LayerDiffuse weights,
motion module, VAE, text encoder and transparency encoder/decoder are frozen (`requires_grad=False`,
eval mode).

Hugging Face accelerate does device placement, data parallelism (`accelerate launch -m layeranim train`),
mixed precision and gradient sync; checkpoints are written here, so they hold exactly what a resume
needs: IFA weights, optimizer (and fp16 grad-scaler) state, every process's RNG state, the step, the
global data position and the config. Each checkpoint is written to a hidden temporary folder and renamed
into place, so a run killed at any moment loses at most the steps since the last checkpoint.

Axis legend: b videos, c latent channels, f frames, h/w latent height/width, n text tokens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from layeranim import safety
from layeranim.errors import OutputExistsError, UsageError, WeightsError
from layeranim.models.inter_frame_attention import (
    InterFrameAttnProcessor,
    ifa_parameters,
    load_ifa_weights,
    middle_frame_index,
    save_ifa_weights,
)
from layeranim.training.config import (
    Config,
    ModelConfig,
    OptimConfig,
    config_from_dict,
    config_to_dict,
    validate_config,
)
from layeranim.training.data import (
    ClipDataset,
    ClipWindow,
    LatentCache,
    SkipReport,
    clip_loader,
    cut_clip,
    encode_clip,
    scan_clips,
)

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "layeranim-train-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step-"
STATE_FILE = "state.json"  # written last: a checkpoint folder without it is incomplete
FINAL_WEIGHTS = "ifa.safetensors"
VALIDATION_DIR = "validation"

LogFn = Callable[[dict[str, Any]], None]
ProgressFn = Callable[[int, int], None]


# ---------------------------------------------------------------------------------------------------
# Models


@dataclass
class TrainingModels:
    """Everything a training run computes with; all frozen except the IFA processors' W_Q' and W_O'."""

    tokenizer: Any
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module  # diffusers UNetMotionModel with LayerDiffuse processors and IFA installed
    noise_scheduler: Any  # DDPMScheduler: add_noise / get_velocity / prediction_type
    inference_scheduler: Any  # what validation renders sample with
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
    from diffusers import DDPMScheduler

    from layeranim.pipelines.layeranimate import build_motion_unet
    from layeranim.render.components import (
        load_components,
        load_motion_adapter,
        resolve_component,
        source_record,
    )

    spec = model_spec(config)
    components = load_components(spec, device=device, dtype=dtype)
    adapter_path = resolve_component(spec, "motion_adapter")
    adapter = load_motion_adapter(adapter_path, dtype=dtype)
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
        noise_scheduler=DDPMScheduler.from_config(components.scheduler.config),
        inference_scheduler=components.scheduler,
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


# ---------------------------------------------------------------------------------------------------
# The objective


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


def _finite(value: torch.Tensor | float | None) -> float | None:
    """A plain float for logs, or None for nothing/inf/nan (JSON has no infinities)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def learning_rate(step: int, optim: OptimConfig, max_steps: int) -> float:
    """Linear warmup to `learning_rate`, then constant or a cosine decay to `learning_rate * min_lr_ratio`."""
    if step < optim.warmup_steps:
        return optim.learning_rate * (step + 1) / optim.warmup_steps
    if optim.lr_schedule == "constant":
        return optim.learning_rate
    progress = min(1.0, (step - optim.warmup_steps) / max(1, max_steps - optim.warmup_steps))
    min_lr = optim.learning_rate * optim.min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (optim.learning_rate - min_lr)


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


def batch_latents(
    batch: dict[str, list[Any]],
    models: TrainingModels,
    cache: LatentCache | None,
    *,
    device: torch.device,
    chunk_size: int,
) -> torch.Tensor:
    """Adjusted latents (b, c, f, h, w) float32 of a micro-batch: cached, else encoded (and cached)."""
    latents: list[torch.Tensor] = []
    for cached, rgba_fhwc_uint8, key in zip(
        batch["latents_cfhw"], batch["rgba_fhwc_uint8"], batch["cache_key"], strict=True
    ):
        if cached is None:
            cached = encode_clip(
                models.vae, models.transparent_encoder, rgba_fhwc_uint8.to(device), chunk_size=chunk_size
            )
            if cache is not None and key is not None:
                cache.save(key, cached)
        latents.append(cached)
    return torch.stack(latents)


# ---------------------------------------------------------------------------------------------------
# Checkpoints


@dataclass
class TrainState:
    """Where a run is: optimizer steps done and global clip samples consumed (the data position)."""

    step: int = 0
    samples_seen: int = 0


def checkpoint_step(path: Path) -> int | None:
    """The step of a complete checkpoint folder `step-NNNNNN` (None for anything else)."""
    name = path.name
    if not name.startswith(CHECKPOINT_PREFIX) or not (path / STATE_FILE).is_file():
        return None
    digits = name.removeprefix(CHECKPOINT_PREFIX)
    return int(digits) if digits.isdigit() else None


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(output_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [(step, path) for path in folder.iterdir() if (step := checkpoint_step(path)) is not None]
    return [path for _, path in sorted(found)]


def resolve_resume(resume: str, output_dir: Path) -> Path | None:
    """`latest` → the newest complete checkpoint (None when there is none yet), or a checkpoint folder."""
    if not resume:
        return None
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume)
    if path.is_dir() and (path / STATE_FILE).is_file():
        return path
    if path.is_dir() and (path / CHECKPOINTS_DIR).is_dir():  # a run folder: its newest checkpoint
        checkpoints = list_checkpoints(path)
        if checkpoints:
            return checkpoints[-1]
    raise UsageError(
        f"--resume {resume!r} is not a checkpoint folder (one with {STATE_FILE}); give "
        f"{output_dir / CHECKPOINTS_DIR}/step-NNNNNN, a run folder, or 'latest'."
    )


def _remove_tree(path: Path) -> None:
    """Delete a folder by renaming it to a hidden name first, so no half-deleted checkpoint looks complete."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def save_checkpoint(
    accelerator: Any,
    output_dir: Path,
    *,
    state: TrainState,
    config: Config,
    processors: dict[str, InterFrameAttnProcessor],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    skipped: SkipReport,
    metadata: dict[str, str],
) -> Path:
    """Write `checkpoints/step-NNNNNN` atomically (hidden temporary folder, then rename); keep the last K."""
    folder = output_dir / CHECKPOINTS_DIR
    final = folder / f"{CHECKPOINT_PREFIX}{state.step:06d}"
    staging = folder / f".{final.name}.tmp"
    if accelerator.is_main_process:
        if staging.exists():
            shutil.rmtree(staging)
        with safety.os_errors(folder):
            staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        # Every process keeps its own random stream (noise, timesteps, caption dropout).
        torch.save(_rng_state(generator), staging / f"rng-{accelerator.process_index}.pt")
        if accelerator.is_main_process:
            save_ifa_weights(staging / FINAL_WEIGHTS, processors, metadata=metadata)
            torch.save(optimizer.state_dict(), staging / "optimizer.pt")
            if accelerator.scaler is not None:
                torch.save(accelerator.scaler.state_dict(), staging / "scaler.pt")
    except (OSError, RuntimeError) as exc:
        # A full disk (torch.save says "enforce fail at inline_container.cc"), a read-only mount …:
        # remove the half-written checkpoint, so nothing is left behind, and say it in one line.
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError) or "inline_container" in str(exc):
            raise safety.translate_os_error(exc, final) from exc
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        record = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "step": state.step,
            "samples_seen": state.samples_seen,
            "num_processes": accelerator.num_processes,
            "config": config_to_dict(config),
            "skipped": skipped.to_list(),
            "metadata": metadata,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (staging / STATE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if final.exists():  # the same step saved again (e.g. the end of a resumed, finished run)
            _remove_tree(final)
        os.replace(staging, final)
        for old in list_checkpoints(output_dir)[: -config.checkpoint.keep]:
            _remove_tree(old)
        # The run folder is layeranim's: what --overwrite may replace later (and nothing else).
        safety.mark_owned(output_dir, [final, *_owned_run_files(output_dir)])
    accelerator.wait_for_everyone()
    return final


def read_checkpoint_state(path: Path) -> dict[str, Any]:
    """The `state.json` of a checkpoint, checked for format and version."""
    try:
        record = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(
            f"checkpoint {path} has no readable {STATE_FILE} ({exc}); resume from another one."
        ) from exc
    if record.get("format") != CHECKPOINT_FORMAT or record.get("version") != CHECKPOINT_VERSION:
        raise WeightsError(
            f"{path} is not a layeranim training checkpoint (format {record.get('format')!r}, version "
            f"{record.get('version')!r}); resume from a folder `layeranim train` wrote."
        )
    return record


def check_resume_compatible(saved: Config, current: Config, path: Path) -> None:
    """Refuse to resume with a different model or clip shape; warn about other changes that matter."""
    for table, key in (
        ("model", "preset"),
        ("model", "base_model"),
        ("model", "transparent_attn"),
        ("model", "motion_adapter"),
        ("data", "frames"),
        ("data", "width"),
        ("data", "height"),
    ):
        before, now = getattr(getattr(saved, table), key), getattr(getattr(current, table), key)
        if before != now:
            raise UsageError(
                f"{table}.{key} = {now!r} but checkpoint {path} was trained with {before!r}; use the same "
                f"value to resume, or start a new run in another --output folder."
            )
    for table, key in (
        ("data", "path"),
        ("data", "frame_stride"),
        ("train", "seed"),
        ("train", "batch_size"),
    ):
        before, now = getattr(getattr(saved, table), key), getattr(getattr(current, table), key)
        if before != now:
            logger.warning(
                "%s.%s changed from %r to %r since checkpoint %s: the data order will differ from the "
                "uninterrupted run.",
                table,
                key,
                before,
                now,
                path,
            )


def _load_tensors(path: Path) -> Any:
    """`torch.load(weights_only=True)`; a pickle with code in it is refused without suggesting the unsafe
    switch (`safety.unsafe_checkpoint_error`)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if safety.is_unsafe_pickle_error(exc):
            raise safety.unsafe_checkpoint_error(exc, path) from exc
        raise


def load_checkpoint(
    path: Path,
    accelerator: Any,
    *,
    processors: dict[str, InterFrameAttnProcessor],
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> tuple[TrainState, SkipReport]:
    """Restore IFA weights, optimizer (+ scaler) and this process's RNG; return step, position and skips."""
    record = read_checkpoint_state(path)
    load_ifa_weights(processors, path / FINAL_WEIGHTS)
    optimizer.load_state_dict(_load_tensors(path / "optimizer.pt"))
    if accelerator.scaler is not None and (path / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(_load_tensors(path / "scaler.pt"))
    rng_file = path / f"rng-{accelerator.process_index}.pt"
    if rng_file.is_file():
        rng = _load_tensors(rng_file)
        generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    else:
        logger.warning(
            "checkpoint %s has no RNG state for process %d (it was saved by %d processes); this process "
            "draws a fresh random stream.",
            path,
            accelerator.process_index,
            record.get("num_processes", 1),
        )
    state = TrainState(step=int(record["step"]), samples_seen=int(record["samples_seen"]))
    return state, SkipReport.from_list(record.get("skipped", []))


# ---------------------------------------------------------------------------------------------------
# Setup helpers


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


def _owned_run_files(output_dir: Path) -> list[Path]:
    """What a run writes in its folder besides checkpoints (logs, caches, validations, the weights)."""
    names = (FINAL_WEIGHTS, CHECKPOINTS_DIR, "logs", "latent-cache", "validation", "train_log.jsonl")
    return [output_dir / name for name in names if (output_dir / name).exists()]


def _presumed_run_entry(relative: str) -> bool:
    """Entries of runs written before owned-markers existed: checkpoints, weights, logs, caches."""
    top = relative.split("/", 1)[0]
    return top in (FINAL_WEIGHTS, CHECKPOINTS_DIR, "logs", "latent-cache", "validation") or top.endswith(
        (".jsonl", ".log")
    )


def prepare_output_dir(output_dir: Path, resume_from: Path | None, overwrite: bool) -> None:
    """Refuse to start a new run over an old one unless asked; clear leftovers of interrupted saves.

    `overwrite` starts over only in a folder layeranim's runs wrote (`safety.check_replaceable`): a
    user's own file in it is named and kept.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(
            f"output_dir={str(output_dir)!r} is a file, not a folder; give a folder for the run."
        )
    checkpoints = list_checkpoints(output_dir)
    final = output_dir / FINAL_WEIGHTS
    if resume_from is None and (checkpoints or final.exists()):
        if not overwrite:
            raise OutputExistsError(
                f"--output {str(output_dir)!r} already holds a training run; pass --resume latest to "
                "continue it, --overwrite to start over (its checkpoints are deleted), or another "
                "--output folder."
            )
        safety.check_replaceable(output_dir, argument="output", presumed_owned=_presumed_run_entry)
        for old in checkpoints:
            _remove_tree(old)
        final.unlink(missing_ok=True)
    folder = output_dir / CHECKPOINTS_DIR
    with safety.os_errors(folder, action="create"):
        folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(".*"):
        shutil.rmtree(leftover, ignore_errors=True)


def ifa_file_metadata(models: TrainingModels, config: Config, step: int) -> dict[str, str]:
    """What an IFA weights file says about how it was trained (strings, as safetensors metadata wants)."""
    return {
        "base_model": models.sources.get("base", config.model.base_model or config.model.preset),
        "motion_adapter": models.sources.get(
            "motion_adapter", config.model.motion_adapter or config.model.preset
        ),
        "frames": str(config.data.frames),
        "width": str(config.data.width),
        "height": str(config.data.height),
        "frame_stride": str(config.data.frame_stride),
        "trained_steps": str(step),
        "prediction_type": str(models.noise_scheduler.config.prediction_type),
        "objective": "layer-animate: middle frame clean, loss on the other frames (paper §III-B)",
    }


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


# ---------------------------------------------------------------------------------------------------
# The run


@dataclass
class TrainResult:
    """What a `train` call did (as seen by the main process)."""

    output_dir: Path
    weights: Path  # the final IFA weights (`layeranim animate --ifa-weights`)
    step: int
    resumed_from: Path | None
    checkpoints: list[Path]
    history: list[dict[str, Any]]  # every record passed to `on_log`
    skipped: SkipReport
    clips: int  # usable clips in the dataset
    validations: list[Path] = field(default_factory=list)

    @property
    def last_loss(self) -> float | None:
        losses = [record["loss"] for record in self.history if record.get("event") == "step"]
        return losses[-1] if losses else None


def train(
    config: Config,
    *,
    models: TrainingModels | None = None,
    overwrite: bool = False,
    on_log: LogFn | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train Inter-Frame Attention on a folder of RGBA clips; returns where the weights are.

    `models` may be given (already built with `load_training_models`), otherwise they are loaded from
    `config.model`. `on_log(record)` gets every log record (`event`: start, step, checkpoint, validation,
    skip, done) on the main process; `progress(step, max_steps)` after every step.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    validate_config(config)
    data_cfg, optim_cfg, train_cfg = config.data, config.optim, config.train
    output_dir = Path(train_cfg.output_dir)
    history: list[dict[str, Any]] = []

    # 1. Accelerate: one process per device, precision, trackers
    mixed_precision = resolve_mixed_precision(config)
    trackers = tracker_names(config.log.report_to)
    accelerator = Accelerator(
        cpu=train_cfg.device == "cpu",
        mixed_precision=mixed_precision,
        log_with=trackers or None,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
    )
    device = accelerator.device
    if device.type == "cpu" and accelerator.mixed_precision == "fp16":
        raise UsageError(
            "train.mixed_precision = 'fp16' needs a GPU; on the CPU use 'no' or 'bf16' (or 'auto')."
        )
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32
    )
    rank, world = accelerator.process_index, accelerator.num_processes

    def emit(record: dict[str, Any]) -> None:
        if not accelerator.is_main_process:
            return
        history.append(record)
        if config.log.json_file:
            log_path = Path(config.log.json_file)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        if on_log is not None:
            on_log(record)

    # 2. Where to start: a new run, or a checkpoint (after checking what a late failure would waste)
    if config.validation.every:
        from layeranim import video_io

        video_io.resolve_output_format(f"validation.{config.validation.format}")
        if config.validation.image and not Path(config.validation.image).exists():
            raise UsageError(
                f"validation.image = {config.validation.image!r} does not exist; check the path."
            )
    resume_from = resolve_resume(config.checkpoint.resume, output_dir)
    if config.checkpoint.resume == "latest" and resume_from is None:
        logger.info("--resume latest: %s has no checkpoint yet; starting a new run", output_dir)
    if resume_from is not None:
        saved = config_from_dict(read_checkpoint_state(resume_from)["config"])
        check_resume_compatible(saved, config, resume_from)
    if accelerator.is_main_process:
        prepare_output_dir(output_dir, resume_from, overwrite)
    accelerator.wait_for_everyone()

    # 3. Models: everything frozen but W_Q' and W_O' (float32 master weights)
    if models is None:
        models = load_training_models(config.model, device=device, dtype=weight_dtype)
    for module in (models.vae, models.text_encoder, models.transparent_encoder, models.transparent_decoder):
        module.to(device)
    params = freeze_all_but_ifa(models)
    max_frames = int(models.unet.config.motion_max_seq_length)
    if data_cfg.frames > max_frames:
        raise UsageError(
            f"data.frames = {data_cfg.frames} is more than the motion module's window ({max_frames}); "
            f"use at most {max_frames}."
        )
    if train_cfg.gradient_checkpointing:
        models.unet.enable_gradient_checkpointing()

    # 4. Data: scan once, then a deterministic clip for every global sample position
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
            f"--data {data_cfg.path!r} has no usable RGBA clip: {shown}{more}. Give a folder of clips with "
            "alpha, each at least data.frames long."
        )
    dataset = ClipDataset(
        sources,
        frames=data_cfg.frames,
        frame_stride=data_cfg.frame_stride,
        width=data_cfg.width,
        height=data_cfg.height,
        crop=data_cfg.crop,
        shuffle=data_cfg.shuffle,
        seed=train_cfg.seed,
        cache=cache,
    )

    # 5. Optimizer over the IFA parameters only; accelerate wraps the UNet (DDP) and the optimizer
    optimizer = torch.optim.AdamW(
        params,
        lr=optim_cfg.learning_rate,
        betas=(optim_cfg.beta1, optim_cfg.beta2),
        eps=optim_cfg.eps,
        weight_decay=optim_cfg.weight_decay,
    )
    unet, optimizer = accelerator.prepare(models.unet, optimizer)
    generator = torch.Generator("cpu").manual_seed(train_cfg.seed + 1_000_003 * rank)
    state = TrainState()
    if resume_from is not None:
        state, previous_skips = load_checkpoint(
            resume_from,
            accelerator,
            processors=models.ifa_processors,
            optimizer=optimizer,
            generator=generator,
        )
        for path, reason in previous_skips.reasons.items():
            skipped.reasons.setdefault(path, reason)
    if trackers:
        accelerator.init_trackers("layeranim-ifa", config=flat_config(config))

    global_batch = train_cfg.batch_size * world
    accumulation = train_cfg.gradient_accumulation_steps
    emit(
        {
            "event": "start",
            "step": state.step,
            "max_steps": train_cfg.max_steps,
            "clips": len(sources),
            "skipped": len(skipped),
            "processes": world,
            "device": str(device),
            "mixed_precision": accelerator.mixed_precision,
            "trainable_parameters": sum(p.numel() for p in params),
            "resumed_from": str(resume_from) if resume_from else None,
            "samples_seen": state.samples_seen,
        }
    )
    for path, reason in skipped.reasons.items():
        emit({"event": "skip", "path": path, "reason": reason})

    validation_still: np.ndarray | None = None
    validation_prompt = config.validation.prompt or sources[0].caption
    validation_fps = max(1.0, (sources[0].fps or 8.0) / data_cfg.frame_stride)
    checkpoints: list[Path] = []
    validations: list[Path] = []
    batches = iter(
        clip_loader(
            dataset,
            start=state.samples_seen,
            batch_size=train_cfg.batch_size,
            rank=rank,
            world_size=world,
            num_workers=data_cfg.num_workers,
        )
    )

    # 6. The loop
    t_last, clips_since = time.perf_counter(), 0
    loss_sum = torch.zeros((), device=device)
    steps_since = 0
    try:
        while state.step < train_cfg.max_steps:
            # set this step's learning rate (warmup, then cosine or constant)
            lr = learning_rate(state.step, optim_cfg, train_cfg.max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr

            # forward/backward over the accumulation micro-batches; gradients sync on the last one only
            for micro_step in range(accumulation):
                batch = next(batches)
                state.samples_seen += global_batch
                for pairs in batch["skipped"]:
                    for path, reason in pairs:
                        if skipped.add(path, reason):
                            emit({"event": "skip", "path": path, "reason": reason})
                latents = batch_latents(
                    batch, models, cache, device=device, chunk_size=data_cfg.encode_chunk_size
                )
                latents = latents.to(device=device, dtype=weight_dtype)  # b c f h w
                captions = drop_captions(batch["caption"], data_cfg.caption_dropout, generator)
                text_embeds = encode_captions(models, captions, device).to(weight_dtype)  # b n c
                noise = torch.randn(latents.shape, generator=generator).to(device=device, dtype=weight_dtype)
                timesteps = torch.randint(
                    0,
                    models.noise_scheduler.config.num_train_timesteps,
                    (latents.shape[0],),
                    generator=generator,
                ).to(device)
                last = micro_step == accumulation - 1
                with contextlib.nullcontext() if last else accelerator.no_sync(unet), accelerator.autocast():
                    loss = ifa_loss(unet, models.noise_scheduler, latents, text_embeds, noise, timesteps)
                    accelerator.backward(loss / accumulation)
                loss_sum += loss.detach().float() / accumulation
            grad_norm = (
                accelerator.clip_grad_norm_(params, optim_cfg.max_grad_norm)
                if optim_cfg.max_grad_norm > 0
                else None
            )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            steps_since += 1
            clips_since += global_batch * accumulation

            # log: the loss averaged over the steps since the last record and over all processes
            if state.step % config.log.every == 0 or state.step == train_cfg.max_steps:
                mean_loss = accelerator.reduce(loss_sum / steps_since, reduction="mean").item()
                elapsed = time.perf_counter() - t_last
                record = {
                    "event": "step",
                    "step": state.step,
                    "loss": mean_loss,
                    "lr": lr,
                    "grad_norm": _finite(grad_norm),  # None when not clipped, or inf (a skipped fp16 step)
                    "epoch": state.samples_seen / len(dataset),
                    "samples_seen": state.samples_seen,
                    "clips_per_s": clips_since / elapsed if elapsed > 0 else None,
                    "s_per_step": elapsed / steps_since,
                }
                emit(record)
                accelerator.log(
                    {"loss": mean_loss, "lr": lr, "clips_per_s": record["clips_per_s"] or 0.0},
                    step=state.step,
                )
                loss_sum.zero_()
                t_last, clips_since, steps_since = time.perf_counter(), 0, 0

            # checkpoint every N steps and at the end
            every = config.checkpoint.every
            if (every and state.step % every == 0) or state.step == train_cfg.max_steps:
                saved_path = save_checkpoint(
                    accelerator,
                    output_dir,
                    state=state,
                    config=config,
                    processors=models.ifa_processors,
                    optimizer=optimizer,
                    generator=generator,
                    skipped=skipped,
                    metadata=ifa_file_metadata(models, config, state.step),
                )
                checkpoints.append(saved_path)
                emit({"event": "checkpoint", "step": state.step, "path": str(saved_path)})
                t_last = time.perf_counter()  # saving is not training time

            # an optional validation render with the current weights
            if config.validation.every and state.step % config.validation.every == 0:
                if accelerator.is_main_process:
                    if validation_still is None:
                        validation_still = validation_image(config, dataset)
                    target = output_dir / VALIDATION_DIR / f"step-{state.step:06d}.{config.validation.format}"
                    render_validation(
                        models,
                        accelerator.unwrap_model(unet),
                        config,
                        validation_still,
                        validation_prompt,
                        target,
                        validation_fps,
                        accelerator,
                    )
                    validations.append(target)
                    emit(
                        {
                            "event": "validation",
                            "step": state.step,
                            "path": str(target),
                            "prompt": validation_prompt,
                        }
                    )
                accelerator.wait_for_everyone()
                t_last = time.perf_counter()

            if progress is not None and accelerator.is_main_process:
                progress(state.step, train_cfg.max_steps)
    finally:
        del batches  # stops DataLoader workers
        if trackers:
            accelerator.end_training()

    # 7. The final weights: what `layeranim animate --ifa-weights` loads
    weights_path = output_dir / FINAL_WEIGHTS
    if accelerator.is_main_process:
        save_ifa_weights(
            weights_path,
            models.ifa_processors,
            metadata=ifa_file_metadata(models, config, state.step),
            overwrite=True,
        )
    accelerator.wait_for_everyone()
    emit({"event": "done", "step": state.step, "weights": str(weights_path), "skipped": len(skipped)})
    return TrainResult(
        output_dir=output_dir,
        weights=weights_path,
        step=state.step,
        resumed_from=resume_from,
        checkpoints=checkpoints,
        history=history,
        skipped=skipped,
        clips=len(sources),
        validations=validations,
    )


__all__ = [
    "FINAL_WEIGHTS",
    "TrainResult",
    "TrainState",
    "TrainingModels",
    "drop_captions",
    "freeze_all_but_ifa",
    "ifa_loss",
    "learning_rate",
    "list_checkpoints",
    "load_checkpoint",
    "load_training_models",
    "resolve_resume",
    "save_checkpoint",
    "train",
]
