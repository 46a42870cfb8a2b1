"""`layeranim train`: train Inter-Frame Attention on a folder of RGBA clips (Layer-Animate §III-B).

The config is built from a preset (`--preset`), then an optional TOML file, then the flags below, then
`--set table.key=value` overrides, in that order. `--print-config` shows the result as TOML and exits.
Run it on several GPUs or nodes unchanged with `accelerate launch -m layeranim train …`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from layeranim.cli._common import JsonOpt, OverwriteOpt, QuietOpt, app, print_json, progress_bar

_DATA = "Data"
_RUN = "Run"
_CONFIG = "Config"


@app.command(
    "train",
    epilog="Examples:\n\n"
    "  layeranim dataset synth clips/ && layeranim train --preset tiny --data clips/ --output runs/tiny\n\n"
    "  layeranim train examples/train_tiny.toml --set optim.learning_rate=5e-4 --max-steps 200\n\n"
    "  layeranim train my.toml --resume latest          (continue after a crash)\n\n"
    "  accelerate launch --multi_gpu --num_processes 4 -m layeranim train my.toml   (4 GPUs)\n\n"
    "  layeranim train --preset sd15 --print-config > my.toml         (a config to edit)",
)
def train_command(
    config_file: Annotated[
        Path | None,
        typer.Argument(
            help="A TOML config with the tables data, model, optim, train, checkpoint, log and validation."
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="Start from a preset config: 'tiny' (random-weight miniatures, 64×64, seconds on a CPU; for "
            "demos) or 'sd15' (the real models). Default: the config file's model.preset, else sd15.",
            rich_help_panel=_CONFIG,
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Folder of RGBA clips; captions in metadata.jsonl or a .txt beside each clip (data.path).",
            rich_help_panel=_DATA,
        ),
    ] = None,
    frames: Annotated[
        int | None, typer.Option("--frames", help="Frames per clip (data.frames).", rich_help_panel=_DATA)
    ] = None,
    cache_latents: Annotated[
        bool | None,
        typer.Option(
            "--cache-latents/--no-cache-latents",
            help="Keep clip latents on disk so each clip goes through the VAE once (data.cache_latents).",
            rich_help_panel=_DATA,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Run folder: checkpoints and ifa.safetensors (train.output_dir).",
            rich_help_panel=_RUN,
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option("--max-steps", help="Optimizer steps (train.max_steps).", rich_help_panel=_RUN),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Random seed (train.seed).", rich_help_panel=_RUN)
    ] = None,
    mixed_precision: Annotated[
        str | None,
        typer.Option(
            "--mixed-precision", help="auto, no, fp16 or bf16 (train.mixed_precision).", rich_help_panel=_RUN
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device", help="auto or cpu (train.device); GPUs come from accelerate.", rich_help_panel=_RUN
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            help="'latest' (the run folder's newest checkpoint; a new run if there is none) or a checkpoint "
            "folder (checkpoint.resume).",
            rich_help_panel=_RUN,
        ),
    ] = None,
    log_json: Annotated[
        Path | None,
        typer.Option(
            "--log-json",
            help="Append one JSON object per log record to FILE (log.json_file).",
            rich_help_panel=_RUN,
        ),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override any config key: --set optim.learning_rate=5e-4 (repeatable; values are TOML).",
            rich_help_panel=_CONFIG,
        ),
    ] = None,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config", help="Print the effective config as TOML and exit.", rich_help_panel=_CONFIG
        ),
    ] = False,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train Inter-Frame Attention (W_Q', W_O' only) on RGBA clips; writes OUTPUT/ifa.safetensors.

    The middle frame of every clip stays noise-free; the other frames are noised and carry the loss (the paper's objective). Checkpoints are written every N steps; --resume latest continues a run after a crash.
    """  # noqa: E501
    from layeranim.training.config import (
        Config,
        apply_overrides,
        config_from_dict,
        config_to_toml,
        load_config_file,
        preset_config,
        with_remembered_data,
    )

    # 1. The effective config: preset → file → flags → --set.
    base: Config | None = preset_config(preset) if preset is not None else None
    config = (
        load_config_file(config_file, base) if config_file is not None else (base or preset_config("sd15"))
    )
    flags: dict[str, Any] = {
        "data.path": str(data) if data is not None else None,
        "data.frames": frames,
        "data.cache_latents": cache_latents,
        "train.output_dir": str(output) if output is not None else None,
        "train.max_steps": max_steps,
        "train.seed": seed,
        "train.mixed_precision": mixed_precision,
        "train.device": device,
        "checkpoint.resume": resume,
        "log.json_file": str(log_json) if log_json is not None else None,
    }
    for key, value in flags.items():
        if value is not None:
            table, name = key.split(".")
            config = config_from_dict({table: {name: value}}, config, source=f"--{name.replace('_', '-')}")
    config = apply_overrides(config, overrides or [])
    config = with_remembered_data(config)  # --resume without --data: the run's own data path
    if print_config:
        typer.echo(config_to_toml(config), nl=False)
        return

    # 2. Train.
    from accelerate import PartialState

    from layeranim.training.loop import train

    with progress_bar("training", config.train.max_steps, quiet) as update:
        result = train(
            config,
            overwrite=overwrite,
            on_log=lambda record: _print_record(record, quiet),
            progress=update,
        )
    if not PartialState().is_main_process:
        return

    # 3. Report: skipped clips (with reasons) on stderr, the weights on stdout.
    if len(result.skipped):
        note(f"skipped {len(result.skipped)} clip(s):", quiet)
        for line in result.skipped.lines():
            note(f"  {line}", quiet)
    if json_output:
        print_json(
            {
                "weights": str(result.weights),
                "output_dir": str(result.output_dir),
                "step": result.step,
                "last_loss": result.last_loss,
                "clips": result.clips,
                "resumed_from": str(result.resumed_from) if result.resumed_from else None,
                "checkpoints": [str(path) for path in result.checkpoints],
                "validations": [str(path) for path in result.validations],
                "skipped": result.skipped.to_list(),
            }
        )
    else:
        typer.echo(str(result.weights))


def note(message: str, quiet: bool) -> None:
    """A plain stderr line, never wrapped (paths stay copyable); silent with --quiet."""
    if not quiet:
        typer.echo(message, err=True)


def _print_record(record: dict[str, Any], quiet: bool) -> None:
    """One human line per log record on stderr."""
    event = record.get("event")
    if event == "start":
        resumed = f", resumed from {record['resumed_from']}" if record.get("resumed_from") else ""
        note(
            f"training IFA ({record['trainable_parameters']:,} parameters) on {record['clips']} clips, "
            f"{record['processes']} process(es) on {record['device']}, precision {record['mixed_precision']}"
            f"{resumed}",
            quiet,
        )
    elif event == "step":
        speed = f"  {record['clips_per_s']:.2f} clips/s" if record.get("clips_per_s") else ""
        grad = f"  grad {record['grad_norm']:.3g}" if record.get("grad_norm") is not None else ""
        note(
            f"step {record['step']}  loss {record['loss']:.4f}  lr {record['lr']:.1e}{grad}{speed}  "
            f"{record['s_per_step']:.2f} s/step",
            quiet,
        )
    elif event == "checkpoint":
        note(f"checkpoint {record['path']}", quiet)
    elif event == "validation":
        note(f"validation render {record['path']}", quiet)
