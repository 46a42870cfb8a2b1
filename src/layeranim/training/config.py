"""The training configuration: one typed dataclass per TOML table, TOML files, `key=value` overrides.

A config is built from, in order: the defaults below (or a named preset: `tiny` for demos, `sd15` for
real runs), a TOML file whose tables mirror the dataclasses (`[data]`, `[model]`, `[optim]`, `[train]`,
`[checkpoint]`, `[log]`, `[validation]`), then `table.key=value` overrides from the command line. Every
value is type-checked and range-checked in `validate_config`, which names the key, the value and the fix.
`config_to_toml` writes the effective config back as TOML (what `--print-config` shows and what every
checkpoint stores).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layeranim.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project's venv is 3.11; 3.10 needs the tomli backport
    try:
        import tomli as tomllib
    except ImportError:  # pragma: no cover
        tomllib = None  # type: ignore[assignment]

CROPS = ("center", "random")
LR_SCHEDULES = ("cosine", "constant")
MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")
TRAIN_DEVICES = ("auto", "cpu")
PRESETS = ("sd15", "tiny")
NOISE_SCHEDULES = ("animatediff", "base")  # layeranim.pipelines._schedulers.SCHEDULES
SIZE_MULTIPLE = 64  # the transparency decoder works on multiples of 64 pixels


@dataclass
class DataConfig:
    """Where the clips come from and how they are cut, sized and encoded."""

    path: str = ""  # a folder of RGBA videos; captions in <clip>.txt beside each, or metadata.jsonl
    frames: int = 16  # F, frames per clip; the middle frame m = (F - 1) // 2 is the clean base frame
    frame_stride: int = 1  # take every n-th source frame (2 halves the frame rate)
    width: int = 512  # training size in pixels, a multiple of 64
    height: int = 512
    crop: str = "center"  # center | random: where the training-size window is cut after resizing
    shuffle: bool = True  # a new clip order every epoch (seeded)
    caption_dropout: float = 0.1  # probability of training on the empty caption (classifier-free guidance)
    cache_latents: bool = False  # keep each clip's latents on disk, so it goes through the VAE once
    cache_dir: str = ""  # default: <train.output_dir>/latent-cache
    num_workers: int = 2  # DataLoader worker processes that read and resize clips (0: in the main process)
    encode_chunk_size: int = 8  # frames per VAE call when encoding clips


@dataclass
class ModelConfig:
    """Which weights to start from. Empty references take the preset's defaults."""

    preset: str = "sd15"  # sd15 | tiny (tiny random-weight models for demos and tests)
    base_model: str = ""  # SD1.5 diffusers folder / hub id (the LayerDiffuse base)
    transparent_attn: str = ""  # LayerDiffuse SD1.5 transparent attention weights
    transparent_encoder: str = ""  # LayerDiffuse latent transparency encoder
    transparent_decoder: str = ""  # LayerDiffuse latent transparency decoder (validation renders)
    motion_adapter: str = ""  # AnimateDiff motion adapter
    init_ifa_weights: str = ""  # start from these IFA weights instead of W_Q' = W_Q, W_O' = 0
    # The noise schedule: "animatediff" (linear betas, what the motion modules were trained with) or
    # "base" (the base model's own, e.g. scaled_linear for SD1.5).
    noise_schedule: str = "animatediff"


@dataclass
class OptimConfig:
    """AdamW on W_Q' and W_O' only, with linear warmup then cosine decay (or a constant rate).

    The schedule is diffusers' (`diffusers.optimization.get_scheduler`: warmup from 0, then "cosine" or
    "constant_with_warmup"), with the cosine lifted to end at `learning_rate * min_lr_ratio`.
    """

    learning_rate: float = 1e-4
    lr_schedule: str = "cosine"  # cosine | constant (both after the warmup)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio at train.max_steps
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    max_grad_norm: float = 1.0  # clip the global gradient norm; 0 turns clipping off


@dataclass
class TrainConfig:
    """How long, how big, in what precision, and where the run writes."""

    output_dir: str = "runs/ifa"
    max_steps: int = 10_000  # optimizer steps
    batch_size: int = 1  # clips per process per micro-step
    gradient_accumulation_steps: int = 1  # micro-steps per optimizer step
    mixed_precision: str = "auto"  # auto (bf16/fp16 on GPU, no on CPU) | no | fp16 | bf16
    gradient_checkpointing: bool = False  # recompute UNet activations in the backward pass (less memory)
    seed: int = 0
    device: str = "auto"  # auto (accelerate's choice per process) | cpu


@dataclass
class CheckpointConfig:
    """Resumable checkpoints under <output_dir>/checkpoints/step-NNNNNN."""

    every: int = 500  # steps between checkpoints (0: only at the end)
    keep: int = 3  # how many of the newest checkpoints to keep
    resume: str = ""  # "" (new run) | latest | a checkpoint folder


@dataclass
class LogConfig:
    """Where the loss goes: the callback (stderr in the CLI), JSON lines, accelerate trackers."""

    every: int = 10  # steps between log records
    json_file: str = ""  # append one JSON object per log record to this file
    report_to: str = "auto"  # auto (TensorBoard when installed) | none | tensorboard,wandb,… (accelerate)


@dataclass
class ValidationConfig:
    """An optional periodic render of `prompt` animated from `image`, written as a video."""

    every: int = 0  # steps between validation renders (0: off)
    prompt: str = ""
    image: str = ""  # an RGBA image (or video: its first frame); default: the middle frame of the first clip
    steps: int = 20  # denoising steps
    guidance_scale: float = 7.5
    seed: int = 0
    format: str = "webm"  # file extension of the rendered video (any alpha format video_io writes)


@dataclass
class Config:
    """The whole training configuration (what every checkpoint stores)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)


def preset_config(name: str) -> Config:
    """The starting config for a preset: `sd15` (the dataclass defaults) or `tiny` (seconds on a CPU)."""
    if name == "sd15":
        return Config()
    if name == "tiny":
        return Config(
            data=DataConfig(frames=8, width=64, height=64, caption_dropout=0.1, num_workers=0),
            model=ModelConfig(preset="tiny"),
            optim=OptimConfig(learning_rate=1e-3, warmup_steps=5, weight_decay=0.0),
            train=TrainConfig(output_dir="runs/ifa-tiny", max_steps=50, mixed_precision="no"),
            checkpoint=CheckpointConfig(every=25, keep=2),
            log=LogConfig(every=5),
            validation=ValidationConfig(steps=4),
        )
    raise UsageError(f"preset {name!r} is not one of {', '.join(PRESETS)}; pick one of those.")


# ---------------------------------------------------------------------------------------------------
# Dict / TOML conversion


def config_to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """The config as nested plain dicts (TOML tables)."""
    return dataclasses.asdict(config)


def config_from_dict(
    values: Mapping[str, Any], base: Config | None = None, *, source: str = "config"
) -> Config:
    """Apply nested `{table: {key: value}}` onto `base` (default: the sd15 defaults), type-checked."""
    config = _copy(base if base is not None else Config())
    for table, entries in values.items():
        if table not in _tables():
            raise UsageError(
                f"{source}: unknown table [{table}]; the tables are {', '.join(f'[{t}]' for t in _tables())}."
            )
        if not isinstance(entries, Mapping):
            raise UsageError(f"{source}: {table} must be a table ([{table}] with key = value lines).")
        section = getattr(config, table)
        for key, value in entries.items():
            _set_field(section, table, key, value, source)
    return config


def load_config_file(path: str | Path, base: Config | None = None) -> Config:
    """Read a TOML config file onto `base` (its `[model] preset`, when set, picks the base preset)."""
    if tomllib is None:  # pragma: no cover - Python 3.10 without tomli
        raise UsageError("reading TOML configs needs Python 3.11+ or the 'tomli' package; pip install tomli.")
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file {str(path)!r} does not exist; check the path.")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"config file {str(path)!r} is not valid TOML ({exc}); fix the line it names."
        ) from exc
    if base is None:
        preset = values.get("model", {}).get("preset") if isinstance(values.get("model"), Mapping) else None
        base = preset_config(preset) if isinstance(preset, str) else Config()
    return config_from_dict(values, base, source=str(path))


def parse_override(text: str) -> tuple[str, str, Any]:
    """`table.key=value` → (table, key, value); the value is read as TOML, else as a plain string."""
    if "=" not in text:
        raise UsageError(
            f"overrides={text!r} is not table.key=value; e.g. overrides='optim.learning_rate=1e-4'."
        )
    name, raw = text.split("=", 1)
    name = name.strip()
    if name.count(".") != 1:
        raise UsageError(
            f"overrides={text!r}: {name!r} is not table.key; e.g. train.max_steps=100 "
            f"(tables: {', '.join(_tables())})."
        )
    table, key = name.split(".")
    raw = raw.strip()
    value: Any
    try:
        value = tomllib.loads(f"value = {raw}")["value"] if tomllib is not None else raw
    except tomllib.TOMLDecodeError:
        value = raw  # a bare string such as a path: data.path=/videos
    return table, key, value


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """Apply `table.key=value` overrides (later ones win)."""
    for text in overrides:
        table, key, value = parse_override(text)
        config = config_from_dict({table: {key: value}}, config, source=f"overrides={text!r}")
    return config


def config_to_toml(config: Config) -> str:
    """The config as a TOML document that `load_config_file` reads back to an equal config."""
    lines: list[str] = []
    for table, entries in config_to_dict(config).items():
        if lines:
            lines.append("")
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in entries.items())
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else f"{value:+}")
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _tables() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def _copy(config: Config) -> Config:
    return Config(**{name: dataclasses.replace(getattr(config, name)) for name in _tables()})


def _set_field(section: Any, table: str, key: str, value: Any, source: str) -> None:
    """Set one key, accepting an int where a float is expected and nothing else loosely."""
    fields = {f.name: f for f in dataclasses.fields(section)}
    if key not in fields:
        raise UsageError(f"{source}: [{table}] has no key {key!r}; its keys are {', '.join(fields)}.")
    expected = type(getattr(type(section)(), key))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        raise UsageError(
            f"{source}: {table}.{key} = {value!r} must be {_TYPE_NAMES[expected]} "
            f"(e.g. {table}.{key} = {_toml_value(getattr(type(section)(), key))})."
        )
    setattr(section, key, value)


# ---------------------------------------------------------------------------------------------------
# Validation


def with_remembered_data(config: Config) -> Config:
    """On a resume without `data.path`: the data path the run was trained on, from its checkpoint.

    A checkpoint's `state.json` holds the whole config it was trained with (`training.loop`), so
    `layeranim train my.toml --resume latest` continues on the same clips without `data.path` again.
    Returns `config` unchanged when it names its data, is not a resume, or no checkpoint says.
    """
    resume = config.checkpoint.resume
    if config.data.path or not resume:
        return config
    run = Path(config.train.output_dir) if resume == "latest" else Path(resume)
    # Layout of training.loop: RUN/checkpoints/step-NNNNNN/state.json (a checkpoint folder itself works too).
    candidates = [run] if (run / "state.json").is_file() else sorted(run.glob("checkpoints/step-*"))
    for checkpoint in reversed(candidates):
        try:
            record = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
            path = record["config"]["data"]["path"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(path, str) and path:
            return config_from_dict({"data": {"path": path}}, config, source=str(checkpoint / "state.json"))
    return config


def check_run_paths(config: Config) -> None:
    """The data must exist and the run folder must be a folder: refused before any model loads."""
    data_path, output_dir = Path(config.data.path), Path(config.train.output_dir)
    if not data_path.exists():
        raise UsageError(
            f"data.path = {config.data.path!r}: no such file or folder; give the folder of RGBA training "
            "videos (data.path=DIR)."
        )
    blocking = next((p for p in (output_dir, *output_dir.parents) if p.exists() or p.is_symlink()), None)
    if blocking is not None and not blocking.is_dir():
        where = "is" if blocking == output_dir else f"lies under {str(blocking)!r}, which is"
        raise UsageError(
            f"train.output_dir = {config.train.output_dir!r} {where} a file, not a folder; give a folder "
            "for the run (train.output_dir=DIR)."
        )


def validate_config(config: Config) -> None:
    """Raise `UsageError` for the first value a run cannot use, naming the key, the value and the fix."""
    data, optim, train = config.data, config.optim, config.train

    def bad(key: str, value: Any, fix: str) -> UsageError:
        return UsageError(f"{key} = {value!r}: {fix}")

    if not data.path:
        raise bad("data.path", data.path, "give the folder of RGBA training videos (data.path=DIR).")
    if data.frames < 2:
        raise bad("data.frames", data.frames, "a clip needs at least 2 frames (the paper uses 16).")
    if data.frame_stride < 1:
        raise bad("data.frame_stride", data.frame_stride, "must be at least 1.")
    for key in ("width", "height"):
        value = getattr(data, key)
        if value < SIZE_MULTIPLE or value % SIZE_MULTIPLE:
            fixed = max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)
            raise bad(f"data.{key}", value, f"must be a positive multiple of {SIZE_MULTIPLE}; try {fixed}.")
    if data.crop not in CROPS:
        raise bad("data.crop", data.crop, f"use one of {', '.join(CROPS)}.")
    if data.cache_latents and data.crop == "random":
        raise bad(
            "data.crop",
            data.crop,
            "a random crop is a different clip every time, so cached latents would never be reused; "
            "use data.crop = center with data.cache_latents = true.",
        )
    if not 0.0 <= data.caption_dropout <= 1.0:
        raise bad("data.caption_dropout", data.caption_dropout, "must be a probability in [0, 1].")
    if data.num_workers < 0:
        raise bad("data.num_workers", data.num_workers, "must be 0 or more.")
    if data.encode_chunk_size < 1:
        raise bad("data.encode_chunk_size", data.encode_chunk_size, "must be at least 1.")
    if config.model.preset not in PRESETS:
        raise bad("model.preset", config.model.preset, f"use one of {', '.join(PRESETS)}.")
    if config.model.noise_schedule not in NOISE_SCHEDULES:
        raise bad(
            "model.noise_schedule", config.model.noise_schedule, f"use one of {', '.join(NOISE_SCHEDULES)}."
        )

    if not (optim.learning_rate > 0 and math.isfinite(optim.learning_rate)):
        raise bad("optim.learning_rate", optim.learning_rate, "must be a positive number such as 1e-4.")
    if optim.lr_schedule not in LR_SCHEDULES:
        raise bad("optim.lr_schedule", optim.lr_schedule, f"use one of {', '.join(LR_SCHEDULES)}.")
    if optim.warmup_steps < 0:
        raise bad("optim.warmup_steps", optim.warmup_steps, "must be 0 or more.")
    if not 0.0 <= optim.min_lr_ratio <= 1.0:
        raise bad("optim.min_lr_ratio", optim.min_lr_ratio, "must be in [0, 1].")
    if optim.weight_decay < 0:
        raise bad("optim.weight_decay", optim.weight_decay, "must be 0 or more.")
    for key in ("beta1", "beta2"):
        if not 0.0 <= getattr(optim, key) < 1.0:
            raise bad(f"optim.{key}", getattr(optim, key), "must be in [0, 1).")
    if optim.eps <= 0:
        raise bad("optim.eps", optim.eps, "must be positive, e.g. 1e-8.")
    if optim.max_grad_norm < 0:
        raise bad("optim.max_grad_norm", optim.max_grad_norm, "must be 0 (no clipping) or positive.")

    if not train.output_dir:
        raise bad(
            "train.output_dir", train.output_dir, "give a folder for checkpoints (train.output_dir=DIR)."
        )
    if train.max_steps < 1:
        raise bad("train.max_steps", train.max_steps, "must be at least 1.")
    if train.batch_size < 1:
        raise bad("train.batch_size", train.batch_size, "must be at least 1.")
    if train.gradient_accumulation_steps < 1:
        raise bad(
            "train.gradient_accumulation_steps", train.gradient_accumulation_steps, "must be at least 1."
        )
    if train.mixed_precision not in MIXED_PRECISIONS:
        raise bad(
            "train.mixed_precision", train.mixed_precision, f"use one of {', '.join(MIXED_PRECISIONS)}."
        )
    if train.device not in TRAIN_DEVICES:
        raise bad(
            "train.device",
            train.device,
            f"use one of {', '.join(TRAIN_DEVICES)} "
            "(pick GPUs with `accelerate launch` or CUDA_VISIBLE_DEVICES).",
        )
    if train.seed < 0:
        raise bad("train.seed", train.seed, "must be 0 or more.")

    if config.checkpoint.every < 0:
        raise bad("checkpoint.every", config.checkpoint.every, "must be 0 (only at the end) or more.")
    if config.checkpoint.keep < 1:
        raise bad("checkpoint.keep", config.checkpoint.keep, "must be at least 1.")
    if config.log.every < 1:
        raise bad("log.every", config.log.every, "must be at least 1.")
    validation = config.validation
    if validation.every < 0:
        raise bad("validation.every", validation.every, "must be 0 (off) or more.")
    if validation.steps < 1:
        raise bad("validation.steps", validation.steps, "must be at least 1.")
    if validation.guidance_scale < 0:
        raise bad("validation.guidance_scale", validation.guidance_scale, "must be 0 or more.")
