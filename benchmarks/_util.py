"""Shared helpers for the benchmark scripts: interleaved A/B timing, a machine header, model builders.

Timing: every case is warmed up, then run `repeats` rounds; in each round every case runs once, in an
order that rotates from round to round (A B C, B C A, C A B, …). Load from other processes on a shared
machine therefore lands on all cases alike, and the figures to quote are the medians and their ratios,
never a single run. On CUDA the device is synchronised before and after each run.

Model builders make SD1.5-shaped (or reduced) diffusers `UNetMotionModel`s straight from configs with
random weights — nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import torch

# Benchmarks never reach the hub; set before diffusers/transformers are imported by the scripts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# SD1.5 UNet + AnimateDiff v1-5-2 MotionAdapter defaults (internals.md), as `UNetMotionModel` kwargs.
SD15_MOTION_UNET_CONFIG: dict[str, Any] = {
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": (
        "CrossAttnDownBlockMotion",
        "CrossAttnDownBlockMotion",
        "CrossAttnDownBlockMotion",
        "DownBlockMotion",
    ),
    "up_block_types": (
        "UpBlockMotion",
        "CrossAttnUpBlockMotion",
        "CrossAttnUpBlockMotion",
        "CrossAttnUpBlockMotion",
    ),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "num_attention_heads": 8,  # SD1.5's "attention_head_dim": 8 is really the head count
    "norm_num_groups": 32,
    "motion_num_attention_heads": 8,
    "motion_max_seq_length": 32,
    "use_motion_mid_block": True,
    "sample_size": 64,
}

# A reduced SD1.5-like motion UNet for CPU runs: two levels, both with spatial attention (SD1.5 has
# attention on every level but the 8×8 one, which costs little), 8 heads, CLIP-sized text context.
REDUCED_MOTION_UNET_CONFIG: dict[str, Any] = {
    **SD15_MOTION_UNET_CONFIG,
    "block_out_channels": (64, 128),
    "down_block_types": ("CrossAttnDownBlockMotion", "CrossAttnDownBlockMotion"),
    "up_block_types": ("CrossAttnUpBlockMotion", "CrossAttnUpBlockMotion"),
    "sample_size": 32,
}

SD_VAE_CONFIG: dict[str, Any] = {  # stable-diffusion-v1-5/vae/config.json
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
QUARTER_VAE_CONFIG: dict[str, Any] = {**SD_VAE_CONFIG, "block_out_channels": (32, 64, 128, 128)}
UNET1024_CONFIG: dict[str, Any] = {}  # TransparentVAEDecoder's defaults are the released UNet1024
QUARTER_DECODER_CONFIG: dict[str, Any] = {"block_out_channels": (8, 8, 16, 32, 64, 128, 128)}


# --------------------------------------------------------------------------------------------------
# Timing


@dataclass(frozen=True)
class Timing:
    """The wall-clock seconds of one case's timed runs (warm-up runs excluded)."""

    label: str
    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def spread(self) -> float:
        """(max − min) / median of the timed runs: how noisy this case was."""
        return (max(self.seconds) - min(self.seconds)) / self.median


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued device work (CUDA) so wall-clock time covers it; a no-op elsewhere."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def compare(
    cases: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    device: torch.device | str | None = None,
) -> dict[str, Timing]:
    """Time each case `repeats` times, interleaved in rotating order after `warmup` runs of each."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be ≥ 1 and warmup ≥ 0, got repeats={repeats}, warmup={warmup}.")
    labels = list(cases)
    for _ in range(warmup):
        for label in labels:
            cases[label]()
    synchronize(device)
    seconds: dict[str, list[float]] = {label: [] for label in labels}
    for round_index in range(repeats):
        shift = round_index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            synchronize(device)
            start = time.perf_counter()
            cases[label]()
            synchronize(device)
            seconds[label].append(time.perf_counter() - start)
    return {label: Timing(label, tuple(values)) for label, values in seconds.items()}


def peak_memory(device: torch.device, run: Callable[[], object]) -> float | None:
    """Peak CUDA memory allocated (GiB) during one `run()`; None on devices without that counter."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def format_gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} GiB"


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A plain Markdown table on stdout (pastes into benchmarks/README.md as is)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def print_header(title: str, device: torch.device, dtype: torch.dtype | None, settings: str) -> None:
    """Title, date, machine, versions and settings, so that a pasted result describes itself."""
    import diffusers

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        where = f"CPU, {cpus} cores, {torch.get_num_threads()} torch threads"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {title}")
    print(f"date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"machine: {platform.machine()} {platform.system()}, {where}, 1-min load {load:.1f}")
    print(
        f"software: python {platform.python_version()}, torch {torch.__version__}, "
        f"diffusers {diffusers.__version__}"
        + (f", dtype {str(dtype).removeprefix('torch.')}" if dtype else "")
    )
    print(f"settings: {settings}")
    print()


# --------------------------------------------------------------------------------------------------
# Command line, devices and models


def add_common_arguments(parser: argparse.ArgumentParser, repeats: int, warmup: int = 1) -> None:
    """--device, --dtype, --threads, --repeats, --warmup, shared by the scripts."""
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 …")
    parser.add_argument("--dtype", default="auto", help="auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is steadier on an overloaded shared machine)",
    )
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"timed runs per case (default {repeats})"
    )
    parser.add_argument(
        "--warmup", type=int, default=warmup, help=f"untimed runs per case (default {warmup})"
    )


def usage_error(message: str) -> NoReturn:
    """`Error: …` on stderr and exit 2, like the layeranim CLI's usage errors."""
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(2)


def apply_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            usage_error(f"--threads {threads}: use 1 or more.")
        torch.set_num_threads(threads)


def resolve_device(name: str) -> torch.device:
    """`auto` → cuda when available, else cpu; asking for cuda without it exits 2 with a message."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        usage_error(f"--device {name}: CUDA is not available on this machine; use --device cpu.")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` → fp16 on CUDA, fp32 on the CPU; else fp32/fp16/bf16."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in dtypes:
        usage_error(f"--dtype {name!r} is unknown; use auto, fp32, fp16 or bf16.")
    return dtypes[name]


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Create parameters in `dtype` directly: no second full-size copy, no cast warnings."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_motion_unet(
    config: Mapping[str, Any], device: torch.device, dtype: torch.dtype, seed: int = 0
) -> torch.nn.Module:
    """A random-weight `UNetMotionModel` from `config`, built directly on `device` in `dtype`."""
    from diffusers import UNetMotionModel

    torch.manual_seed(seed)
    with default_dtype(dtype), torch.device(device):
        unet = UNetMotionModel(**config)
    return unet.eval().requires_grad_(False)


def build_decode_models(
    vae_config: Mapping[str, Any], decoder_config: Mapping[str, Any], device: torch.device, dtype: torch.dtype
) -> tuple[Any, Any]:
    """Random-weight `AutoencoderKL` and `TransparentVAEDecoder` (its latent input non-zero, as released)."""
    from diffusers import AutoencoderKL

    from layeranim.models.transparent_vae import TransparentVAEDecoder

    torch.manual_seed(0)
    with default_dtype(dtype), torch.device(device):
        vae = AutoencoderKL(**vae_config)
        decoder = TransparentVAEDecoder(**decoder_config)
    with torch.no_grad():
        decoder.latent_conv_in.weight.normal_(std=0.02)
    return vae.eval().requires_grad_(False), decoder.eval().requires_grad_(False)


@torch.no_grad()
def randomise_ifa_output_(processors: Mapping[str, Any], seed: int = 0, std: float = 0.02) -> None:
    """Give every IFA W_O' small random weights, as after training (zero W_O' is the untrained start)."""
    generator = torch.Generator().manual_seed(seed)
    for processor in processors.values():
        for param in processor.to_out_ifa.parameters():
            noise = torch.randn(param.shape, generator=generator) * std
            param.copy_(noise.to(device=param.device, dtype=param.dtype))


def random_layerdiffuse_sd15_state_dict(unet: torch.nn.Module, rank: int, seed: int = 0) -> dict[str, Any]:
    """Random tensors in the released `layer_sd15_transparent_attn` key layout for this UNet (fp16)."""
    from layeranim.models.layerdiffuse_unet import sd15_attn_state_dict_shapes

    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for key, shape in sd15_attn_state_dict_shapes(unet, rank=rank).items():
        noise = 0.1 * torch.randn(shape, generator=generator)
        state_dict[key] = (1.0 + noise if key.endswith("temporal_n.weight") else noise).half()  # LN scale ≈ 1
    return state_dict


def unet_inputs(
    config: Mapping[str, Any],
    videos: int,
    frames: int,
    latent_size: int,
    device: torch.device,
    dtype: torch.dtype,
    seed: int = 0,
) -> dict[str, Any]:
    """Keyword arguments for one direct `UNetMotionModel` call (text context repeated per frame)."""
    generator = torch.Generator().manual_seed(seed)
    sample_bcfhw = torch.randn(videos, 4, frames, latent_size, latent_size, generator=generator)
    text_bnc = torch.randn(videos, 77, config["cross_attention_dim"], generator=generator)
    text_rows_nc = text_bnc.repeat_interleave(frames, dim=0)  # rows b*F + f, like the UNet's folded frames
    return {
        "sample": sample_bcfhw.to(device=device, dtype=dtype),
        "timestep": torch.tensor(500, device=device),
        "encoder_hidden_states": text_rows_nc.to(device=device, dtype=dtype),
    }
