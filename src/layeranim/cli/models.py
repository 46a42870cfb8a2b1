"""`layeranim models list|download|path`: the default weights table, the hub cache, and what is missing."""

from __future__ import annotations

from typing import Annotated

import typer

from layeranim import weights
from layeranim.cli._common import JsonOpt, QuietOpt, app, note, print_json
from layeranim.errors import UsageError, WeightsError

models_app = typer.Typer(
    name="models",
    help="List, download and locate the default weights (kept in the Hugging Face hub cache).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(models_app, name="models")

FamilyArg = Annotated[
    str,
    typer.Argument(help=f"Model family: {', '.join(weights.FAMILIES)} or all.", show_default=True),
]
ComponentsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--component",
        "-c",
        help=f"Only this component (repeatable): {', '.join(weights.COMPONENTS)}.",
    ),
]


def _families(family: str, option: str = "FAMILY", allow_all: bool = True) -> list[str]:
    name = family.strip().lower()
    if name == "all" and allow_all:
        return list(weights.FAMILIES)
    if name not in weights.FAMILIES:
        choices = ", ".join(weights.FAMILIES) + (" or all" if allow_all else "")
        raise UsageError(f"{option} {family!r} is not a model family; use one of {choices}.")
    return [name]


def _components(components: list[str] | None, option: str = "--component") -> list[str]:
    if not components:
        return list(weights.COMPONENTS)
    unknown = [name for name in components if name not in weights.COMPONENTS]
    if unknown:
        raise UsageError(
            f"{option} {unknown[0]!r} is not a component; use one of {', '.join(weights.COMPONENTS)}."
        )
    return list(dict.fromkeys(components))


def _missing(source: weights.WeightSource) -> list[str]:
    return weights.missing_files(source) or source.files()


def _file_column(source: weights.WeightSource) -> str:
    return source.path_in_repo or "(diffusers folder)"


@models_app.command("list")
def list_models(
    family: FamilyArg = "all",
    json_output: JsonOpt = False,
) -> None:
    """List the default weights and whether each is in the local cache (no network).

    Examples:
      layeranim models list
      layeranim models list sd15 --json
    """
    rows = []
    for name in _families(family):
        for component, source in weights.DEFAULT_SOURCES[name].items():
            rows.append(
                {
                    "family": name,
                    "component": component,
                    "repo_id": source.repo_id,
                    "file": source.path_in_repo,
                    "files": source.files(),
                    "revision": source.revision,
                    "cached": weights.is_cached(source),
                    "description": source.description,
                }
            )
    if json_output:
        print_json(
            {"cache_dir": str(weights.hub_cache_dir()), "offline": weights.hub_offline(), "models": rows}
        )
        return
    table = [("FAMILY", "COMPONENT", "REPO", "FILE", "REVISION", "CACHED")]
    for row in rows:
        source = weights.DEFAULT_SOURCES[row["family"]][row["component"]]
        table.append(
            (
                row["family"],
                row["component"],
                row["repo_id"],
                _file_column(source),
                row["revision"],
                "yes" if row["cached"] else "no",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    note(f"hub cache: {weights.hub_cache_dir()}")


@models_app.command("download")
def download(
    family: FamilyArg = "sd15",
    component: ComponentsOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Download default weights into the hub cache (respects HF_HOME, HF_HUB_CACHE, HF_TOKEN).

    Prints the local path of each component. Offline (HF_HUB_OFFLINE=1), it reports what is missing and
    how to fetch it, and exits 1.

    Examples:
      layeranim models download                       # SD1.5: base, LayerDiffuse, motion adapter
      layeranim models download sdxl -c transparent_attn -c transparent_decoder
    """
    if quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    wanted = [(name, part) for name in _families(family) for part in _components(component)]
    missing_parts = [
        (name, part) for name, part in wanted if not weights.is_cached(weights.DEFAULT_SOURCES[name][part])
    ]
    missing = [weights.DEFAULT_SOURCES[name][part] for name, part in missing_parts]
    again = f"layeranim models download {family}" + (
        "".join(f" --component {part}" for part in dict.fromkeys(p for _, p in missing_parts))
        if component
        else ""
    )
    if missing:  # no network: one line at once, not a retry line per file
        reason = "downloads are off (HF_HUB_OFFLINE=1)" if weights.hub_offline() else None
        reason = reason or weights.hub_unreachable_reason()
        if reason is not None:
            commands = " && ".join(
                source.hf_command(weights.missing_files(source) or None) for source in missing
            )
            raise WeightsError(
                f"cannot download {len(missing)} of {len(wanted)} weights: the Hub is offline here — "
                f"{reason}. Run `{again}` on a machine with network access "
                f"(or: {commands}), then copy its hub cache (HF_HOME/HF_HUB_CACHE) here."
            )
    results: list[dict[str, str]] = []
    failures: list[tuple[str, str, weights.WeightSource, WeightsError]] = []
    for name, part in wanted:
        source = weights.DEFAULT_SOURCES[name][part]
        if weights.is_cached(source):
            note(f"{name} {part}: already in the cache", quiet)
        else:
            note(f"{name} {part}: downloading {source.ref} …", quiet)
        try:
            path = weights.resolve_source(source)
        except WeightsError as exc:
            failures.append((name, part, source, exc))
            continue
        results.append({"family": name, "component": part, "path": str(path)})
        if not json_output:
            typer.echo(str(path))
    if json_output:
        print_json({"downloaded": results, "failed": [f"{name}/{part}" for name, part, _, _ in failures]})
    if len(failures) == 1:
        raise failures[0][3]
    if failures:
        missing = "; ".join(
            f"{name}/{part}: {', '.join(_missing(source))} from {source.repo_id}"
            for name, part, source, _ in failures
        )
        commands = " && ".join(
            source.hf_command(weights.missing_files(source) or None) for *_, source, _ in failures
        )
        why = "downloads are off (HF_HUB_OFFLINE=1)" if weights.hub_offline() else "the downloads failed"
        raise WeightsError(
            f"{len(failures)} of {len(wanted)} weights are missing and {why}: {missing}. Fetch them with "
            f"`layeranim models download {family}` on a machine with network access (or: {commands}); "
            f"first error: {failures[0][3]}"
        )


@models_app.command("path")
def path(
    component: Annotated[str, typer.Argument(help=f"One of {', '.join(weights.COMPONENTS)}.")],
    family: Annotated[
        str, typer.Option("--family", help=f"Model family: {', '.join(weights.FAMILIES)}.")
    ] = "sd15",
) -> None:
    """Print the local path of a default component (never downloads; exit 1 if it is not cached).

    Examples:
      layeranim models path transparent_decoder
      layeranim models path base --family sdxl
    """
    (part,) = _components([component], option="COMPONENT")
    (name,) = _families(family, option="--family", allow_all=False)
    typer.echo(str(weights.resolve_source(weights.DEFAULT_SOURCES[name][part], local_files_only=True)))
