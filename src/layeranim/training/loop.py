"""Training Inter-Frame Attention with the Layer-Animate objective (paper §III-B, Fig. 2).

One loop, read top to bottom (nanoGPT style): forward/backward over the gradient-accumulation
micro-batches → clip → step (optimizer, then the learning-rate schedule) → log → checkpoint → validate →
stop. What it calls lives beside it:

- `objective.py`: the loss (clean middle frame in, MSE on the other frames) and AnimateDiff's noise;
- `setup.py`: frozen models with trainable W_Q'/W_O', accelerate, the dataset, optimizer and LR schedule;
- `checkpoint.py`: atomic, resumable checkpoints;
- `validation.py`: optional renders with the current weights.

Only W_Q' and W_O' of every Inter-Frame Attention train; the SD UNet, LayerDiffuse weights, motion
module, VAE, text encoder and transparency encoder/decoder are frozen. Hugging Face accelerate does
device placement, data parallelism (`accelerate launch -m layeranim train`), mixed precision and
gradient sync.

Axis legend: b videos, c latent channels, f frames, h/w latent height/width, n text tokens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layeranim.errors import UsageError
from layeranim.models.inter_frame_attention import save_ifa_weights
from layeranim.progress import Progress as ProgressFn
from layeranim.training.checkpoint import (
    FINAL_WEIGHTS,
    TrainState,
    check_resume_compatible,
    ifa_file_metadata,
    list_checkpoints,
    load_checkpoint,
    prepare_output_dir,
    read_checkpoint_state,
    resolve_resume,
    save_checkpoint,
)
from layeranim.training.config import (
    Config,
    check_run_paths,
    config_from_dict,
    validate_config,
    with_remembered_data,
)
from layeranim.training.data import LatentCache, SkipReport, clip_loader, encode_clip
from layeranim.training.objective import drop_captions, encode_captions, ifa_loss, sample_noise
from layeranim.training.setup import (
    TrainingModels,
    build_dataset,
    fast_forward,
    flat_config,
    freeze_all_but_ifa,
    load_training_models,
    make_accelerator,
    make_lr_scheduler,
    make_optimizer,
    tracker_names,
)
from layeranim.training.validation import (
    check_validation_settings,
    render_validation,
    validation_image,
    validation_path,
)

logger = logging.getLogger(__name__)

LogFn = Callable[[dict[str, Any]], None]


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


def _finite(value: torch.Tensor | float | None) -> float | None:
    """A plain float for logs, or None for nothing/inf/nan (JSON has no infinities)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


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


@dataclass
class RunLog:
    """Log records of the main process: kept in `history`, appended to `log.json_file`, passed to `on_log`."""

    is_main: bool
    json_file: str = ""
    on_log: LogFn | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        self.history.append(record)
        if self.json_file:
            path = Path(self.json_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        if self.on_log is not None:
            self.on_log(record)


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
    skip, done) on the main process; `progress(step, max_steps)` after every step. A resume without
    `data.path` continues on the data the run was trained on (`with_remembered_data`).
    """
    config = with_remembered_data(config)
    validate_config(config)
    check_run_paths(config)  # the data exists and the run folder can be a folder: before any model loads
    data_cfg, optim_cfg, train_cfg = config.data, config.optim, config.train
    output_dir = Path(train_cfg.output_dir)

    # 1. Accelerate: one process per device, precision, trackers
    accelerator, weight_dtype = make_accelerator(config, output_dir)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    emit = RunLog(accelerator.is_main_process, config.log.json_file, on_log)

    # 2. Where to start: a new run, or a checkpoint (after checking what a late failure would waste)
    check_validation_settings(config)
    resume_from = resolve_resume(config.checkpoint.resume, output_dir)
    if config.checkpoint.resume == "latest" and resume_from is None:
        logger.info("resume='latest': %s has no checkpoint yet; starting a new run", output_dir)
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
    dataset, sources, skipped, cache = build_dataset(config, models, output_dir)

    # 5. Optimizer and LR schedule over the IFA parameters; accelerate wraps the UNet (DDP) and optimizer
    optimizer = make_optimizer(params, optim_cfg)
    lr_schedule = make_lr_scheduler(optimizer, optim_cfg, train_cfg.max_steps)
    unet, optimizer = accelerator.prepare(models.unet, optimizer)
    generator = torch.Generator("cpu").manual_seed(train_cfg.seed + 1_000_003 * rank)  # noise, t, captions
    state = TrainState()
    if resume_from is not None:
        state, previous_skips = load_checkpoint(
            resume_from,
            accelerator,
            processors=models.ifa_processors,
            optimizer=optimizer,
            generator=generator,
        )
        fast_forward(lr_schedule, optimizer, state.step)
        for path, reason in previous_skips.reasons.items():
            skipped.reasons.setdefault(path, reason)
    trackers = tracker_names(config.log.report_to)
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
    t_last, clips_since, steps_since = time.perf_counter(), 0, 0
    loss_sum = torch.zeros((), device=device)
    try:
        while state.step < train_cfg.max_steps:
            lr = optimizer.param_groups[0]["lr"]  # this step's rate (the schedule moved it after the last)

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
                noise, timesteps = sample_noise(
                    latents, models.noise_scheduler.config.num_train_timesteps, generator
                )
                last = micro_step == accumulation - 1
                with contextlib.nullcontext() if last else accelerator.no_sync(unet), accelerator.autocast():
                    loss = ifa_loss(unet, models.noise_scheduler, latents, text_embeds, noise, timesteps)
                    accelerator.backward(loss / accumulation)
                loss_sum += loss.detach().float() / accumulation

            # clip, step, and move the learning rate to the next step's
            grad_norm = (
                accelerator.clip_grad_norm_(params, optim_cfg.max_grad_norm)
                if optim_cfg.max_grad_norm > 0
                else None
            )
            optimizer.step()
            lr_schedule.step()
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
                    target = validation_path(output_dir, config, state.step)
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
        history=emit.history,
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
    "encode_captions",
    "freeze_all_but_ifa",
    "ifa_loss",
    "list_checkpoints",
    "load_checkpoint",
    "load_training_models",
    "resolve_resume",
    "save_checkpoint",
    "train",
]
