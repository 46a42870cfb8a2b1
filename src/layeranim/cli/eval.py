"""`layeranim eval`: the paper's metrics and the transparency metrics of clips, sets and A/B comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from layeranim.cli._common import JsonOpt, OverwriteOpt, QuietOpt, app, error_line, note, print_json
from layeranim.errors import LayerAnimError, UsageError, WeightsError

EVAL_EPILOG = """\
[bold]Examples[/bold]

  layeranim eval fox.webm --prompt "a red fox running"     [dim]# one clip[/dim]

  layeranim eval out/ --html report.html                   [dim]# a batch folder; prompts from manifests[/dim]

  layeranim eval ifa/ baseline/ --json                     [dim]# A vs B, paired by item (Table I)[/dim]

  layeranim eval clip.webm --still still.png --no-clip     [dim]# base-frame fidelity, no CLIP model[/dim]

  layeranim eval clip.webm --preset tiny --prompt test     [dim]# tiny random CLIP: offline smoke test[/dim]
"""

FLOW_CHOICES = ("auto", "dis", "farneback", "raft")


@app.command("eval", epilog=EVAL_EPILOG)
def eval_command(
    clips: Annotated[
        list[Path],
        typer.Argument(
            help="Clips to measure (.webm .mov .apng …, or PNG-frame folders), or folders of clips. Two "
            "folders of clips are compared: A/ B/, paired by manifest index or file name.",
            show_default=False,
        ),
    ],
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt", help="Text for the CLIP score (default: each clip's manifest).", show_default=False
        ),
    ] = None,
    still: Annotated[
        Path | None,
        typer.Option(
            "--still",
            help="The RGBA still the clip was animated from, for base-frame fidelity (default: the "
            "manifest's image). One clip only.",
            show_default=False,
        ),
    ] = None,
    still_frame: Annotated[
        int | None,
        typer.Option(
            "--still-frame",
            help="Index of the frame made from the still (default: the manifest's, else the middle frame).",
            show_default=False,
        ),
    ] = None,
    background: Annotated[
        str | None,
        typer.Option(
            "--background",
            metavar="COLOR",
            help="Colour the frames are composited over for CLIP and flow (#rrggbb, r,g,b or a name); "
            "default 50 % gray, as in the paper.",
            show_default=False,
        ),
    ] = None,
    no_clip: Annotated[
        bool, typer.Option("--no-clip", help="Skip the CLIP score (no CLIP model is loaded).")
    ] = False,
    clip_model: Annotated[
        str | None,
        typer.Option(
            "--clip-model",
            help="CLIP weights: a local folder or a hub repo (owner/name). Default: "
            "openai/clip-vit-large-patch14 from the weights table.",
            show_default=False,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="'tiny': a tiny random-weight CLIP that runs offline (its scores mean nothing; for tests).",
            show_default=False,
        ),
    ] = None,
    flow: Annotated[
        str,
        typer.Option(
            "--flow",
            help="Optical flow: auto (RAFT when torchvision and its weights are there, else dis), dis, "
            "farneback, raft.",
        ),
    ] = "auto",
    device: Annotated[
        str, typer.Option("--device", help="Where CLIP and RAFT run: auto, cpu, cuda, mps.")
    ] = "auto",
    html_report: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Also write an HTML report here (clips over checkerboard and gray, contact sheets, plots).",
            show_default=False,
        ),
    ] = None,
    save_to_manifest: Annotated[
        bool,
        typer.Option(
            "--save-to-manifest", help="Store each clip's metrics in its manifest (an 'eval' entry)."
        ),
    ] = False,
    overwrite: OverwriteOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Measure transparent clips: CLIP score, dynamic degree, alpha stability, colour leak, loop seam, ….

    Prompts, stills and the still's frame come from each clip's manifest (clip.webm.json) unless given.
    """
    from layeranim import alpha as alpha_ops
    from layeranim.evaluation import evaluate as ev

    # 1. Check every argument before reading anything heavy.
    if flow not in FLOW_CHOICES:
        raise UsageError(f"--flow {flow!r} is not one of {', '.join(FLOW_CHOICES)}.")
    if preset is not None and preset.strip().lower() != "tiny":
        raise UsageError(f"--preset {preset!r} is not a preset; use --preset tiny.")
    if preset is not None and clip_model is not None:
        raise UsageError("--preset tiny and --clip-model both choose the CLIP model; give one.")
    if still_frame is not None and still_frame < 0:
        raise UsageError(f"--still-frame {still_frame} must be 0 or more.")
    background_rgb = alpha_ops.parse_color(background) if background is not None else (128, 128, 128)
    background_01 = tuple(c / 255.0 for c in background_rgb) if background is not None else None
    if html_report is not None:
        _check_report_target(html_report, overwrite)
    compare_mode = len(clips) == 2 and all(_is_set_folder(p) for p in clips)
    sets = [ev.collect_clips([p]) for p in clips] if compare_mode else [ev.collect_clips(clips)]
    total = sum(len(s) for s in sets)
    if still is not None and total != 1:
        raise UsageError(f"--still names one image but {total} clips were given; give one clip with --still.")
    device_name = _device(device)
    scorer = None if no_clip else _load_scorer(preset, clip_model, device_name)
    if compare_mode:
        note(
            f"comparing A = {clips[0]} ({len(sets[0])} clips) with B = {clips[1]} ({len(sets[1])} clips)",
            quiet,
        )

    # 2. Measure.
    kwargs: dict[str, Any] = {
        "prompt": prompt,
        "still": still,
        "still_index": still_frame,
        "clip_scorer": scorer,
        "flow_method": flow,
        "device": device_name,
    }
    if background_01 is not None:
        kwargs["background_rgb_01"] = background_01
    single = total == 1 and not compare_mode
    if single:
        results_sets = [[ev.evaluate_clip(sets[0][0], **kwargs)]]  # errors become the one Error: line
    else:
        results_sets = [ev.evaluate_set(s, on_clip=_reporter(quiet), **kwargs) for s in sets]
    failed = sum(1 for results in results_sets for r in results if "error" in r)
    for results in results_sets:
        _note_missing_prompts(results, scorer is not None, quiet)
        if save_to_manifest:
            for result in results:
                if "error" in result:
                    continue
                if ev.read_manifest(result["clip"]) is None:
                    note(f"note: {result['clip']} has no manifest; its metrics were not stored.", quiet)
                else:
                    ev.update_manifest(result["clip"], result)

    # 3. Compare, aggregate, report.
    comparison = ev.compare(results_sets[0], results_sets[1]) if compare_mode else None
    aggregates = [ev.aggregate(results) for results in results_sets]
    written = None
    if html_report is not None:
        from layeranim.evaluation.report import write_report

        written = write_report(
            html_report,
            results_sets[0],
            aggregates=aggregates[0] if len(results_sets[0]) > 1 else None,
            results_b=results_sets[1] if compare_mode else None,
            comparison=comparison,
            background_rgb=background_rgb,
            overwrite=overwrite,
        )
        note(f"report: {written}", quiet)

    if json_output:
        if compare_mode:
            payload: dict[str, Any] = {
                "a": {"path": str(clips[0]), "clips": results_sets[0], "aggregate": aggregates[0]},
                "b": {"path": str(clips[1]), "clips": results_sets[1], "aggregate": aggregates[1]},
                "comparison": comparison,
            }
        else:
            payload = {"clips": results_sets[0], "aggregate": aggregates[0]}
        payload.update(failed=failed, html=str(written) if written is not None else None)
        print_json(ev.json_ready(payload))
    elif compare_mode and comparison is not None:
        _print_comparison(comparison)
    else:
        _print_table(results_sets[0], aggregates[0])
    if failed:
        raise typer.Exit(1)


def _check_report_target(path: Path, overwrite: bool) -> None:
    from layeranim.errors import OutputExistsError
    from layeranim.evaluation.report import assets_dir

    if path.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--html {str(path)!r}: name the report with .html.")
    for target in (path, assets_dir(path)):
        if target.exists() and not overwrite:
            raise OutputExistsError(f"--html: {str(target)!r} exists; pass --overwrite to replace it.")


def _is_set_folder(path: Path) -> bool:
    """A folder holding clips (not itself a folder of PNG frames)."""
    from layeranim.evaluation.evaluate import collect_clips

    if not path.is_dir():
        return False
    try:
        return collect_clips([path]) != [path]
    except UsageError:
        return True  # an empty folder: collect_clips reports it later with the right message


def _device(requested: str) -> str:
    from layeranim.render.devices import select_device

    return str(select_device(requested))


def _load_scorer(preset: str | None, clip_model: str | None, device: str) -> Any:
    from layeranim.evaluation.clip_score import load_clip_scorer, load_tiny_clip

    if preset is not None:
        return load_tiny_clip(device=device)
    try:
        return load_clip_scorer(clip_model, device=device)
    except WeightsError as exc:
        raise WeightsError(f"{exc} Or pass --no-clip to skip the CLIP score.") from exc


def _reporter(quiet: bool) -> Any:
    def on_clip(path: Path, result: dict[str, Any] | None, error: LayerAnimError | None) -> None:
        if error is not None:
            error_line(f"{path}: {error}")
        else:
            note(f"measured {path}", quiet)

    return on_clip


def _note_missing_prompts(results: list[dict[str, Any]], clip_wanted: bool, quiet: bool) -> None:
    if not clip_wanted:
        return
    missing = [Path(r["clip"]).name for r in results if "error" not in r and not r.get("prompt")]
    if missing:
        note(
            f"note: no prompt for {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}: CLIP score "
            "skipped (give --prompt, or render with a manifest).",
            quiet,
        )


_TABLE_KEYS = (
    ("clip_score", "clip"),
    ("dynamic_degree", "dyn"),
    ("alpha_stability", "dα"),
    ("alpha_stability_motion_compensated", "flicker"),
    ("colour_leak", "leak"),
    ("loop_seam", "seam"),
    ("still_psnr_db", "psnr"),
)


def _cell(key: str, value: Any, result: dict[str, Any] | None = None) -> str:
    from layeranim.evaluation.report import format_value

    if key == "still_psnr_db" and result is not None and result["metrics"].get("still_identical"):
        return "∞"
    return format_value(key, value)


def _print_table(results: list[dict[str, Any]], aggregates: dict[str, dict[str, Any]]) -> None:
    """One line per clip (stdout), then means ± std over the set."""
    header = ["clip", *(label for _, label in _TABLE_KEYS)]
    rows = []
    for result in results:
        name = Path(result["clip"]).name
        if "error" in result:
            rows.append([name, "failed"])  # the reason went to stderr as an Error: line
            continue
        rows.append([name, *(_cell(key, result["metrics"].get(key), result) for key, _ in _TABLE_KEYS)])
    if len(results) > 1:
        means = []
        for key, _ in _TABLE_KEYS:
            stats = aggregates.get(key)
            means.append(
                "–" if not stats or stats["mean"] is None else f"{stats['mean']:.4g}±{stats['std']:.2g}"
            )
        rows.append(["mean±std", *means])
    widths = [max(len(str(row[i])) for row in [header, *rows] if i < len(row)) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def _print_comparison(comparison: dict[str, Any]) -> None:
    header = ["metric", "A", "B", "B-A", "pairs"]
    rows = [
        [key, f"{s['a']:.4g}", f"{s['b']:.4g}", f"{s['diff']:+.4g}", str(s["n"])]
        for key, s in comparison["metrics"].items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
