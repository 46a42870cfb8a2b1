"""Batch files: text (one prompt, or IMAGE<TAB>PROMPT, per line) or JSONL, read into `BatchItem`s."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from layeranim import safety
from layeranim.errors import UsageError

BatchKind = Literal["prompts", "inputs"]

JSONL_SUFFIXES = (".jsonl", ".json")
ALLOWED_KEYS = (
    "prompt",
    "negative",
    "negative_prompt",
    "seed",
    "frames",
    "fps",
    "base_position",
    "seamless",
    "output",
    "image",
)
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes up to this


# ---------------------------------------------------------------------------------------------------
# Batch items and batch files.


@dataclass(frozen=True)
class BatchItem:
    """One line of a batch file: what to render, with the per-item overrides it gave (None: the default)."""

    index: int  # 0-based position among the file's items (not its line number)
    prompt: str
    negative_prompt: str | None = None
    seed: int | None = None
    frames: int | None = None
    fps: float | None = None
    base_position: str | int | None = None  # "middle", "start", "end" or a frame index
    seamless: bool | None = None
    output: str | None = None  # a file name inside the output directory (may use template fields)
    image: Path | None = None  # inputs batches only: the RGBA image to animate
    source: str = ""  # where it came from, for messages: "prompts.txt:3"

    @property
    def label(self) -> str:
        """How messages name this item: `item 2 (prompts.txt:3)`."""
        return f"item {self.index} ({self.source})" if self.source else f"item {self.index}"


def read_batch_file(path: Path | str, *, kind: BatchKind = "prompts") -> list[BatchItem]:
    """Read a batch file (text or JSONL, see the module docstring) into items; any problem is a UsageError."""
    if kind not in ("prompts", "inputs"):
        raise UsageError(f"kind={kind!r} is not a batch kind; use 'prompts' or 'inputs'.", argument="kind")
    option = f"{kind}_file"
    if str(path) == "-":
        return _parse_batch_text(sys.stdin.read(), Path("<stdin>"), kind=kind, base_dir=Path.cwd())
    path = Path(path)
    if not path.exists():
        raise UsageError(
            f"{option}={str(path)!r}: no such file; give a text or JSONL file with one item per line."
        )
    if path.is_dir():
        raise UsageError(
            f"{option}={str(path)!r} is a folder; give a text or JSONL file with one item per line."
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"{option}={str(path)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8 and try again."
        ) from exc
    except OSError as exc:
        raise UsageError(f"{option}={str(path)!r} cannot be read ({exc.strerror or exc}).") from exc
    return _parse_batch_text(text, path, kind=kind, base_dir=path.parent)


def _parse_batch_text(text: str, path: Path, *, kind: BatchKind, base_dir: Path) -> list[BatchItem]:
    option = f"{kind}_file"
    lines = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if _is_item_line(line)]
    if not lines:
        example = "IMAGE<TAB>PROMPT" if kind == "inputs" else "one prompt"
        raise UsageError(
            f"{option}={str(path)!r} has no items (only blank or '#' comment lines); write {example} "
            "per line, "
            'or one JSON object per line such as {"prompt": "a red fox"}.'
        )
    if path.suffix.lower() == ".json" and lines[0][1].lstrip().startswith("["):
        return _read_json_array(path, text, kind=kind, base_dir=base_dir)
    if path.suffix.lower() in JSONL_SUFFIXES or lines[0][1].lstrip().startswith("{"):
        items = []
        for index, (number, line) in enumerate(lines):
            where = f"{option}={str(path)!r}, line {number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); "
                    "write one JSON object per line."
                ) from exc
            items.append(_item_from_json(obj, index, f"{path.name}:{number}", where, kind, base_dir))
        return items
    return [
        _item_from_text(
            line, index, f"{path.name}:{number}", f"{option}={str(path)!r}, line {number}", kind, base_dir
        )
        for index, (number, line) in enumerate(lines)
    ]


def _is_item_line(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _read_json_array(path: Path, text: str, *, kind: BatchKind, base_dir: Path) -> list[BatchItem]:
    option = f"{kind}_file"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{option}={str(path)!r}, line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})."
        ) from exc
    if not isinstance(data, list) or not data:
        raise UsageError(
            f"{option}={str(path)!r}: expected a non-empty JSON array of objects, or one object per line."
        )
    return [
        _item_from_json(
            obj, index, f"{path.name}#{index}", f"{option}={str(path)!r}, item {index}", kind, base_dir
        )
        for index, obj in enumerate(data)
    ]


def _item_from_text(
    line: str, index: int, source: str, where: str, kind: BatchKind, base_dir: Path
) -> BatchItem:
    if kind == "prompts":
        return BatchItem(index=index, prompt=line.strip(), source=source)
    text = line.strip("\r\n")
    if "\t" in text:
        image, _, prompt = text.partition("\t")
    elif "|" in text:
        image, _, prompt = text.partition("|")
    else:
        raise UsageError(
            f"{where}: {_short(text.strip())!r} has no prompt; write IMAGE<TAB>PROMPT or IMAGE | PROMPT "
            "on each line."
        )
    image, prompt = image.strip(), prompt.strip()
    if not image:
        raise UsageError(f"{where}: the image path is empty; write IMAGE<TAB>PROMPT or IMAGE | PROMPT.")
    if not prompt:
        raise UsageError(f"{where}: the prompt after {image!r} is empty; write IMAGE<TAB>PROMPT.")
    return BatchItem(index=index, prompt=prompt, image=_resolve_image(image, base_dir), source=source)


def _item_from_json(
    obj: Any, index: int, source: str, where: str, kind: BatchKind, base_dir: Path
) -> BatchItem:
    if not isinstance(obj, dict):
        raise UsageError(
            f'{where}: expected a JSON object such as {{"prompt": "..."}}, got {_json_type(obj)}.'
        )
    unknown = [key for key in obj if key not in ALLOWED_KEYS]
    if unknown:
        raise UsageError(
            f"{where}: unknown key {unknown[0]!r}; the allowed keys are {', '.join(ALLOWED_KEYS)}."
        )
    if "negative" in obj and "negative_prompt" in obj:
        raise UsageError(f"{where}: give 'negative' or 'negative_prompt', not both.")

    prompt = obj.get("prompt")
    if prompt is None:
        raise UsageError(f'{where}: the "prompt" key is missing; every item needs a prompt.')
    prompt = safety.decode_prompt_arg(_expect_str(prompt, "prompt", where), f'{where}: "prompt"')
    if not prompt:
        raise UsageError(f'{where}: "prompt" is empty; write the text to render.')
    negative_key = "negative_prompt" if "negative_prompt" in obj else "negative"
    negative = obj.get(negative_key)
    if negative is not None:
        negative = safety.decode_prompt_arg(
            _expect_str(negative, negative_key, where), f'{where}: "{negative_key}"'
        )

    seed = obj.get("seed")
    if seed is not None:
        seed = _expect_int(seed, "seed", where)
        if not 0 <= seed <= SEED_MAX:
            raise UsageError(f'{where}: "seed" {seed} is outside 0..{SEED_MAX}; give a non-negative integer.')
    frames = obj.get("frames")
    if frames is not None:
        frames = _expect_int(frames, "frames", where)
        if frames < 1:
            raise UsageError(f'{where}: "frames" {frames} must be a positive integer.')
    fps = obj.get("fps")
    if fps is not None:
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
            raise UsageError(f'{where}: "fps" must be a positive number, not {json.dumps(fps)}.')
        fps = float(fps)
    base_position = obj.get("base_position")
    if base_position is not None:
        if isinstance(base_position, bool) or not isinstance(base_position, (str, int)):
            raise UsageError(
                f'{where}: "base_position" must be "middle", "start", "end" or a frame index, not '
                f"{json.dumps(base_position)}."
            )
        if isinstance(base_position, str):
            base_position = base_position.strip().lower()
            if base_position not in ("middle", "start", "end"):
                raise UsageError(
                    f'{where}: "base_position" {json.dumps(base_position)} is not "middle", "start", "end" '
                    "or a frame index (a JSON integer)."
                )
    seamless = obj.get("seamless")
    if seamless is not None and not isinstance(seamless, bool):
        raise UsageError(f'{where}: "seamless" must be true or false, not {json.dumps(seamless)}.')
    output = obj.get("output")
    if output is not None:
        output = _expect_str(output, "output", where)
        if not output or output.endswith(("/", os.sep)):
            raise UsageError(f'{where}: "output" {output!r} must be a file name such as "hero.webm".')
    image = obj.get("image")
    image_path = None
    if image is not None:
        image = _expect_str(image, "image", where)
        if not image:
            raise UsageError(f'{where}: "image" is empty; give the path of the RGBA image to animate.')
        image_path = _resolve_image(image, base_dir)
    if kind == "inputs" and image_path is None:
        raise UsageError(
            f'{where}: the "image" key is missing; every item of an inputs batch needs an image to animate.'
        )
    if kind == "prompts" and image_path is not None:
        raise UsageError(
            f'{where}: "image" belongs in an inputs batch (animate), not in a prompts batch (generate).'
        )
    return BatchItem(
        index=index,
        prompt=prompt,
        negative_prompt=negative,
        seed=seed,
        frames=frames,
        fps=fps,
        base_position=base_position,
        seamless=seamless,
        output=output,
        image=image_path,
        source=source,
    )


def _expect_str(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f'{where}: "{key}" must be a string, not {_json_type(value)}.')
    return value.strip()


def _expect_int(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f'{where}: "{key}" must be an integer, not {json.dumps(value)}.')
    return value


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _resolve_image(image: str, base_dir: Path) -> Path:
    path = Path(image).expanduser()
    return path if path.is_absolute() else base_dir / path


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
