"""Resumable training checkpoints: `<output_dir>/checkpoints/step-NNNNNN`.

Hand-written rather than `accelerate.save_state`, because that buys two things here:
- atomic folders: each checkpoint is written to a hidden temporary folder and renamed into place, with
  `state.json` written last, so a run killed at any moment loses at most the steps since the last one
  and never leaves a half-written checkpoint that looks complete;
- safe loading: tensors are read back with `torch.load(weights_only=True)` (IFA weights as safetensors),
  never arbitrary pickles.
A checkpoint holds exactly what a resume needs: IFA weights, optimizer (and fp16 grad-scaler) state,
every process's RNG state, the step, the global data position, skipped clips and the config. The learning
rate is not stored: the schedule is a pure function of the step, so `loop.train` recomputes it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from layeranim import safety
from layeranim.errors import OutputExistsError, UsageError, WeightsError
from layeranim.models.inter_frame_attention import InterFrameAttnProcessor, load_ifa_weights, save_ifa_weights
from layeranim.training.config import Config, config_to_dict
from layeranim.training.data import SkipReport

if TYPE_CHECKING:
    from layeranim.training.setup import TrainingModels

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "layeranim-train-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PREFIX = "step-"
STATE_FILE = "state.json"  # written last: a checkpoint folder without it is incomplete
FINAL_WEIGHTS = "ifa.safetensors"


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
        f"resume={resume!r} is not a checkpoint folder (one with {STATE_FILE}); give "
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
        # The run folder is layeranim's: what overwrite=True may replace later (and nothing else).
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
                f"value to resume, or start a new run in another output_dir=DIR."
            )
    for table, key in (
        ("data", "path"),
        ("data", "frame_stride"),
        ("train", "seed"),
        ("train", "batch_size"),
        ("model", "noise_schedule"),
    ):
        before, now = getattr(getattr(saved, table), key), getattr(getattr(current, table), key)
        if before != now:
            logger.warning(
                "%s.%s changed from %r to %r since checkpoint %s: the run will differ from the "
                "uninterrupted one.",
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
                f"output_dir={str(output_dir)!r} already holds a training run; pass resume='latest' to "
                "continue it, overwrite=True to start over (its checkpoints are deleted), or another "
                "output_dir=DIR."
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
        "beta_schedule": str(models.noise_scheduler.config.beta_schedule),
        "objective": "layer-animate: middle frame clean, loss on the other frames (paper §III-B)",
    }
