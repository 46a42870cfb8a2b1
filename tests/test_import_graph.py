"""The layering, read off the source with `ast`: the library never reaches into the CLI or the terminal,
and the pipelines never reach into I/O (they return arrays; `layeranim.render` writes files)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "layeranim"
TERMINAL = ("typer", "rich", "click", "layeranim.cli")
IO_FOR_PIPELINES = ("layeranim.video_io", "layeranim.render")


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from … import` in `path` names, at any depth (functions included)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def reaches(names: set[str], targets: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names for t in targets if n == t or n.startswith(t + "."))


def library_files() -> list[Path]:
    """Every module but `cli/` and `__main__.py` (`python -m layeranim`, which runs the CLI)."""
    return sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if "cli" not in p.relative_to(PACKAGE).parts and p != PACKAGE / "__main__.py"
    )


def test_the_walk_sees_the_package() -> None:
    files = library_files()
    assert PACKAGE / "render" / "api.py" in files and PACKAGE / "pipelines" / "layerdiffuse.py" in files
    assert not any("cli" in p.relative_to(PACKAGE).parts for p in files)
    # The checker itself finds imports hidden in functions (what the rules below rely on).
    assert "layeranim.video_io" in imported_modules(PACKAGE / "render" / "outputs.py")
    assert reaches(imported_modules(PACKAGE / "cli" / "_common.py"), TERMINAL)


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_outside_cli_imports_the_cli_or_the_terminal(path: Path) -> None:
    assert reaches(imported_modules(path), TERMINAL) == []


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "pipelines").rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_pipelines_import_no_io(path: Path) -> None:
    assert reaches(imported_modules(path), IO_FOR_PIPELINES) == []


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_below_cli_imports_the_package_root_for_its_version(path: Path) -> None:
    assert "layeranim.__version__" not in imported_modules(path)
