"""`layeranim doctor`: what this machine can run, which libraries it has, and which weights are here."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

import typer

from layeranim import weights
from layeranim._version import __version__
from layeranim.cli._common import JsonOpt, app, print_json
from layeranim.errors import UsageError

_LIBRARIES = (
    "torch",
    "diffusers",
    "transformers",
    "huggingface_hub",
    "av",
    "safetensors",
    "accelerate",
    "numpy",
    "typer",
)
# (codec, mode, what layeranim uses it for)
_CODECS = (
    ("libvpx-vp9", "w", "WebM VP9 with alpha (write)"),
    ("libvpx-vp9", "r", "WebM VP9 with alpha (read; FFmpeg's native vp9 decoder drops alpha)"),
    ("prores_ks", "w", "ProRes 4444 with alpha (write)"),
    ("apng", "w", "animated PNG"),
    ("png", "w", "PNG frames"),
    ("gif", "w", "GIF previews"),
    ("libx264", "w", "MP4 previews"),
)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def collect_devices() -> dict[str, Any]:
    """Devices, the auto choices, and which dtypes each available device accepts."""
    import torch

    from layeranim.render import devices

    report: dict[str, Any] = {
        "available": devices.available_devices(),
        "cuda": [],
        "mps": devices.mps_available(),
    }
    if devices.cuda_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            report["cuda"].append(
                {
                    "index": index,
                    "name": props.name,
                    "capability": f"{props.major}.{props.minor}",
                    "memory_gib": round(props.total_memory / 2**30, 1),
                }
            )
        report["cuda_version"] = torch.version.cuda
    auto = devices.select_device("auto")
    report["auto_device"] = str(auto)
    report["cpu_threads"] = torch.get_num_threads()
    report["auto_dtype"] = devices.dtype_name(devices.select_dtype(auto, "auto"))
    support: dict[str, dict[str, bool]] = {}
    for kind in report["available"]:
        device = torch.device(kind)
        support[kind] = {}
        for name in ("fp32", "fp16", "bf16"):
            try:
                devices.select_dtype(device, name)
                support[kind][name] = True
            except UsageError:
                support[kind][name] = False
    report["dtypes"] = support
    return report


def collect_video() -> dict[str, Any]:
    """FFmpeg (inside PyAV) and the codecs that alpha video needs."""
    try:
        import av
    except ImportError:
        return {"ffmpeg": None, "codecs": []}
    codecs = []
    for name, mode, purpose in _CODECS:
        try:
            av.codec.Codec(name, mode)
            found = True
        except Exception:  # PyAV raises its own UnknownCodecError / ValueError depending on version
            found = False
        codecs.append(
            {"codec": name, "mode": "encode" if mode == "w" else "decode", "purpose": purpose, "ok": found}
        )
    return {"ffmpeg": getattr(av, "ffmpeg_version_info", None), "codecs": codecs}


def collect_weights() -> dict[str, Any]:
    """The caches, and which default weights are present (no network)."""
    from layeranim.render.presets import tiny_preset_root

    rows = [
        {
            "family": family,
            "component": component,
            "ref": source.ref,
            "cached": weights.is_cached(source),
        }
        for family, table in weights.DEFAULT_SOURCES.items()
        for component, source in table.items()
    ]
    tiny = tiny_preset_root()
    return {
        "hub_cache": str(weights.hub_cache_dir()),
        "offline": weights.hub_offline(),
        "layeranim_home": str(weights.layeranim_home()),
        "tiny_preset": str(tiny) if (tiny / "preset.json").is_file() else None,
        "default_weights": rows,
    }


@app.command("doctor")
def doctor(json_output: JsonOpt = False) -> None:
    """Check this machine: devices and dtypes, library versions, video codecs, caches and weights.

    Examples:
      layeranim doctor
      layeranim doctor --json
    """
    report = {
        "layeranim": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": {name: _version(name) for name in _LIBRARIES},
        "devices": collect_devices(),
        "video": collect_video(),
        **collect_weights(),
    }
    if json_output:
        print_json(report)
        return
    echo = typer.echo
    yes_no = {True: "yes", False: "no"}
    dev = report["devices"]
    echo(f"layeranim {report['layeranim']} (Python {report['python']}, {report['platform']})")
    available = ", ".join(dev["available"])
    echo(f"device: {dev['auto_device']} with {dev['auto_dtype']} by default (available: {available})")
    for gpu in dev["cuda"]:
        echo(
            f"  cuda:{gpu['index']}: {gpu['name']}, compute {gpu['capability']}, {gpu['memory_gib']} GiB "
            f"(CUDA {dev.get('cuda_version')})"
        )
    if not dev["cuda"]:
        echo("  cuda: not available")
    echo(f"  mps: {'available' if dev['mps'] else 'not available'}")
    echo(f"  cpu threads: {dev['cpu_threads']} (set with `layeranim --threads N`)")
    for kind, support in dev["dtypes"].items():
        echo(f"  dtypes on {kind}: " + ", ".join(f"{name} {yes_no[ok]}" for name, ok in support.items()))
    echo(
        "libraries: "
        + ", ".join(f"{name} {version or 'MISSING'}" for name, version in report["libraries"].items())
    )
    video = report["video"]
    echo(f"video: FFmpeg {video['ffmpeg'] or 'MISSING (install av)'} via PyAV")
    for codec in video["codecs"]:
        echo(f"  {codec['codec']} {codec['mode']}: {yes_no[codec['ok']]} ({codec['purpose']})")
    echo(f"hub cache: {report['hub_cache']} (offline: {yes_no[report['offline']]})")
    tiny = "built" if report["tiny_preset"] else "not built"
    echo(f"layeranim home: {report['layeranim_home']} (tiny preset: {tiny})")
    echo("default weights:")
    for row in report["default_weights"]:
        state = "cached" if row["cached"] else "missing"
        echo(f"  {row['family']:<5} {row['component']:<20} {state:<8} {row['ref']}")
    if not all(row["cached"] for row in report["default_weights"]):
        echo("  (fetch with `layeranim models download [sd15|sdxl]`; `--preset tiny` needs none)")
