"""The one place where the compute device, the dtype and the random generator are chosen.

`select_device("auto")` prefers CUDA, then Apple MPS, then the CPU. `select_dtype(device, "auto")` picks
fp16 on CUDA and MPS and fp32 on the CPU. Asking for something the machine cannot do is a `UsageError`
that names the option, the value and what would work instead.
"""

from __future__ import annotations

import logging

import torch

from layeranim.errors import UsageError
from layeranim.render.settings import DEVICE_CHOICES, DTYPE_CHOICES

logger = logging.getLogger(__name__)


_DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def available_devices() -> list[str]:
    """The device kinds this machine can use, best first (the CPU is always last)."""
    found = []
    if cuda_available():
        found.append("cuda")
    if mps_available():
        found.append("mps")
    found.append("cpu")
    return found


def select_device(requested: str = "auto") -> torch.device:
    """The device to run on: `auto` takes the first of cuda > mps > cpu that is available."""
    name = requested.strip().lower()
    available = available_devices()
    if name == "auto":
        device = torch.device(available[0])
        logger.debug("device auto-selected: %s (available: %s)", device, ", ".join(available))
        return device
    kind = name.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise UsageError(
            f"device={requested!r} is not a device; use one of {', '.join(DEVICE_CHOICES)} "
            f"(available here: {', '.join(available)})."
        )
    if kind not in available:
        hint = " (is a CUDA build of torch installed?)" if kind == "cuda" else ""
        raise UsageError(
            f"device={requested!r} is not available on this machine{hint}; available: "
            f"{', '.join(available)}, or use device='auto'."
        )
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"device={requested!r} is not a valid device name ({exc}).") from exc
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(
            f"device={requested!r}: there are only {torch.cuda.device_count()} CUDA device(s) "
            f"(use cuda:0 … cuda:{torch.cuda.device_count() - 1})."
        )
    return device


def parse_dtype(requested: str) -> torch.dtype | None:
    """`fp16`/`float16`, `bf16`/`bfloat16`, `fp32`/`float32` → a torch dtype; `auto` → None."""
    name = requested.strip().lower().removeprefix("torch.")
    if name == "auto":
        return None
    if name not in _DTYPE_NAMES:
        raise UsageError(f"dtype={requested!r} is not a dtype; use one of {', '.join(DTYPE_CHOICES)}.")
    return _DTYPE_NAMES[name]


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 kernels run on `device` (CUDA needs compute capability 8.0 or newer)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return True  # the CPU runs bf16 (and is ~2× faster than fp32 there); recent MPS does too


def select_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """The weight/activation dtype for `device`: `auto` is fp16 on CUDA and MPS, fp32 on the CPU."""
    dtype = parse_dtype(requested)
    if dtype is None:
        if device.type == "cuda":
            return torch.float16
        if device.type == "mps":
            # MPS has no fp64 and only recent macOS has bf16; fp16 is what Apple's Metal kernels are
            # tuned for, and what diffusers' own MPS guide uses for Stable Diffusion.
            return torch.float16
        return torch.float32
    if dtype == torch.float16 and device.type == "cpu":
        raise UsageError(
            "dtype='fp16' is not supported on the CPU (many CPU kernels have no half-precision version); "
            "use dtype='fp32' or dtype='bf16'."
        )
    if dtype == torch.bfloat16 and not bf16_supported(device):
        raise UsageError(
            f"dtype='bf16' is not supported by this GPU ({device}); use dtype='fp16' (or dtype='auto')."
        )
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """torch.float16 → 'fp16' (the spelling the CLI accepts)."""
    for name in ("fp32", "fp16", "bf16"):
        if _DTYPE_NAMES[name] == dtype:
            return name
    return str(dtype).removeprefix("torch.")


def generator_for(device: torch.device, seed: int) -> torch.Generator:
    """A seeded generator for sampling noise that belongs on `device`.

    MPS gets a CPU generator: MPS generators do not give the same numbers across macOS/torch versions,
    and diffusers' `randn_tensor` draws on the CPU and moves the noise for MPS anyway, so a CPU generator
    keeps a seed reproducible there.
    """
    generator_device = "cpu" if device.type in ("mps", "cpu") else device
    return torch.Generator(device=generator_device).manual_seed(int(seed))
