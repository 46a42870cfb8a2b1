"""Training Inter-Frame Attention on RGBA clips (Layer-Animate §III-B): config, data, objective, setup,
checkpoints, validation renders, the loop, synthetic data."""

from __future__ import annotations

from layeranim.training.config import (
    Config,
    apply_overrides,
    config_to_toml,
    load_config_file,
    preset_config,
    validate_config,
)
from layeranim.training.data import ClipDataset, ClipSource, LatentCache, SkipReport, scan_clips
from layeranim.training.loop import (
    FINAL_WEIGHTS,
    TrainingModels,
    TrainResult,
    ifa_loss,
    list_checkpoints,
    load_training_models,
    train,
)
from layeranim.training.synth import make_synthetic_dataset

__all__ = [
    "FINAL_WEIGHTS",
    "ClipDataset",
    "ClipSource",
    "Config",
    "LatentCache",
    "SkipReport",
    "TrainResult",
    "TrainingModels",
    "apply_overrides",
    "config_to_toml",
    "ifa_loss",
    "list_checkpoints",
    "load_config_file",
    "load_training_models",
    "make_synthetic_dataset",
    "preset_config",
    "scan_clips",
    "train",
    "validate_config",
]
