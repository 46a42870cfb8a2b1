"""The scene file: a TOML canvas and its layers, bottom to top, read and validated once into dataclasses.

```toml
[canvas]
width = 512
height = 512
frames = 16
fps = 8
background = "transparent"   # or a colour: "#ffffff", "255,255,255", "white"

[[layer]]
name = "sky"
image = "sky.png"            # an RGBA still; static without `motion`

[[layer]]
name = "kite"
image = "kite.png"
position = [180, 60]         # top-left corner on the canvas; layers keep their own size
motion = "a kite fluttering in the wind"
region = [160, 40, 420, 300] # x0, y0, x1, y1 on the canvas, or a canvas-sized mask image path
seed = 7

[[layer]]
name = "title"
prompt = "hand-lettered word 'Spring', white ink"   # stage one makes the still
size = [256, 64]
position = [64, 400]
```

A layer takes its pixels from exactly one of `image` (an RGBA still), `prompt` (stage one makes the
still, at `size`, default the canvas size) or `video` (an existing clip, used as is: for `compose`).
Paths are relative to the scene file. Every problem is a `SceneError` naming the layer (by name, or by
number when it has none), the key, the value and the fix; unknown keys are refused, never ignored.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from layeranim.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CANVAS_KEYS = ("width", "height", "frames", "fps", "background")
LAYER_KEYS = (
    "name",
    "image",
    "prompt",
    "video",
    "negative_prompt",
    "size",
    "position",
    "motion",
    "region",
    "margin",
    "seed",
    "ifa_weights",
    "frames",
    "seamless",
    "opacity",
    "visible",
    "start",
)
TOP_KEYS = ("canvas", "layer")
DEFAULT_FRAMES = 16
DEFAULT_FPS = 8.0
DEFAULT_MARGIN = 8  # pixels of feathered margin around a region where generated pixels fade into the still
LATENT_FACTOR = 8  # stage two works on a latent grid 8× smaller than the pixels
SEED_MAX = 2**63 - 1


class SceneError(UsageError):
    """A scene file is wrong; the message names the file, the layer, the key, the value and the fix."""

    def __init__(self, message: str, *, layer: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.layer = layer
        self.key = key


@dataclass(frozen=True)
class Box:
    """A rectangle in canvas pixels: x0, y0 inclusive, x1, y1 exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


@dataclass(frozen=True)
class Canvas:
    width: int
    height: int
    frames: int = DEFAULT_FRAMES
    fps: float = DEFAULT_FPS
    background: tuple[int, int, int] | None = None  # None: transparent

    def to_json(self) -> dict[str, Any]:
        background = (
            "transparent" if self.background is None else "#{:02x}{:02x}{:02x}".format(*self.background)
        )
        return {
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "fps": self.fps,
            "background": background,
        }


@dataclass(frozen=True)
class Layer:
    """One validated layer. `width`/`height` are its own size (read from `image`/`video`, or `size`)."""

    index: int  # 0-based, bottom to top
    name: str
    width: int
    height: int
    image: Path | None = None
    prompt: str | None = None
    video: Path | None = None
    negative_prompt: str = ""
    position: tuple[int, int] = (0, 0)
    motion: str | None = None
    region: Box | Path | None = None  # a box or a mask image, both in canvas coordinates; None: whole layer
    margin: int = DEFAULT_MARGIN
    seed: int | None = None
    ifa_weights: Path | None = None
    frames: int | None = None
    seamless: bool = False
    opacity: float = 1.0
    visible: bool = True
    start: int = 0

    @property
    def dynamic(self) -> bool:
        """Animated with stage two (it has a motion prompt)."""
        return self.motion is not None

    @property
    def label(self) -> str:
        """How messages name the layer: `layer 2 ("kite")`."""
        return f'layer {self.index + 1} ("{self.name}")'

    @property
    def slug(self) -> str:
        """`02-kite`: the layer's file name stem in OUT/layers/."""
        return f"{self.index + 1:02d}-{slugify(self.name)}"

    @property
    def bounds(self) -> Box:
        """Where the layer lies on the canvas."""
        x, y = self.position
        return Box(x, y, x + self.width, y + self.height)


@dataclass(frozen=True)
class Scene:
    canvas: Canvas
    layers: tuple[Layer, ...]
    path: Path | None = None  # the scene file, if read from one

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path is not None else Path.cwd()


# ---------------------------------------------------------------------------------------------------
# Reading.


def load_scene(path: str | Path) -> Scene:
    """Read and validate a scene file (see the module docstring). Raises `SceneError`."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise SceneError(f"scene file {where!r} does not exist; give a .toml scene file.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SceneError(f"scene file {where!r} is not UTF-8 text; save it as UTF-8 TOML.") from None
    except tomllib.TOMLDecodeError as exc:
        raise SceneError(f"scene file {where!r} is not valid TOML ({exc}); fix the syntax.") from None
    return parse_scene(data, base_dir=path.parent, source=where, path=path)


def parse_scene(
    data: dict[str, Any], *, base_dir: Path, source: str = "scene", path: Path | None = None
) -> Scene:
    """Validate a scene already parsed from TOML (a dict); relative paths are relative to `base_dir`."""
    for key in data:
        if key not in TOP_KEYS:
            raise SceneError(
                f"{source}: unknown table {key!r}; a scene has [canvas] and [[layer]] tables only.", key=key
            )
    canvas = _parse_canvas(data.get("canvas"), source)
    raw_layers = data.get("layer", [])
    if not isinstance(raw_layers, list) or not all(isinstance(item, dict) for item in raw_layers):
        raise SceneError(
            f"{source}: `layer` must be an array of tables: write each as [[layer]].", key="layer"
        )
    if not raw_layers:
        raise SceneError(
            f"{source}: the scene has zero layers; add at least one [[layer]] table with an image or prompt.",
            key="layer",
        )
    layers: list[Layer] = []
    names: set[str] = set()
    for index, raw in enumerate(raw_layers):
        layer = _parse_layer(raw, index, canvas, base_dir, source)
        if layer.name in names:
            raise SceneError(
                f'{source}: {layer.label}: name = "{layer.name}" is used by an earlier layer; give each '
                "layer its own name (it names the layer's file).",
                layer=layer.name,
                key="name",
            )
        names.add(layer.name)
        layers.append(layer)
    _check_one_ifa_weights(layers, source)
    return Scene(canvas=canvas, layers=tuple(layers), path=path)


def _parse_canvas(raw: Any, source: str) -> Canvas:
    if raw is None:
        raise SceneError(
            f"{source}: the [canvas] table is missing; add one with width and height (frames, fps, "
            "background optional).",
            key="canvas",
        )
    if not isinstance(raw, dict):
        raise SceneError(f"{source}: `canvas` must be a table: write [canvas].", key="canvas")
    for key in raw:
        if key not in CANVAS_KEYS:
            raise SceneError(
                f"{source}: [canvas]: unknown key {key!r}; use {', '.join(CANVAS_KEYS)}.",
                layer="canvas",
                key=key,
            )
    where = f"{source}: [canvas]"
    for key in ("width", "height"):
        if key not in raw:
            raise SceneError(f"{where}: {key} is missing; give the canvas {key} in pixels.", key=key)
    width = _int(raw["width"], where, "width", low=1)
    height = _int(raw["height"], where, "height", low=1)
    frames = _int(raw.get("frames", DEFAULT_FRAMES), where, "frames", low=1)
    fps = _number(raw.get("fps", DEFAULT_FPS), where, "fps")
    if fps <= 0:
        raise SceneError(f"{where}: fps = {fps!r} must be positive (e.g. 8).", key="fps")
    background = parse_background(raw.get("background", "transparent"), where=where)
    return Canvas(width=width, height=height, frames=frames, fps=float(fps), background=background)


def parse_background(value: Any, *, where: str = "background") -> tuple[int, int, int] | None:
    """`"transparent"` → None; a colour (`#rrggbb`, `r,g,b`, a name) → its RGB."""
    from layeranim.alpha import parse_color

    if not isinstance(value, str):
        raise SceneError(
            f'{where}: background = {value!r} must be a string: "transparent" or a colour like "#ffffff".',
            key="background",
        )
    if value.strip().lower() in ("transparent", "none", ""):
        return None
    try:
        return parse_color(value)
    except UsageError:
        raise SceneError(
            f'{where}: background = "{value}" is not a colour; write "transparent", "#rrggbb", "r,g,b" or a '
            "name like white.",
            key="background",
        ) from None


def _parse_layer(raw: dict[str, Any], index: int, canvas: Canvas, base_dir: Path, source: str) -> Layer:
    name_value = raw.get("name")
    if name_value is not None and (not isinstance(name_value, str) or not name_value.strip()):
        raise SceneError(
            f"{source}: layer {index + 1}: name = {name_value!r} must be a non-empty string.",
            layer=str(index + 1),
            key="name",
        )
    name = name_value.strip() if isinstance(name_value, str) else f"layer{index + 1}"
    label = f'layer {index + 1} ("{name}")'
    where = f"{source}: {label}"

    def fail(key: str, message: str) -> SceneError:
        return SceneError(f"{where}: {message}", layer=name, key=key)

    for key in raw:
        if key not in LAYER_KEYS:
            raise fail(key, f"unknown key {key!r}; a layer takes {', '.join(LAYER_KEYS)}.")

    sources = [key for key in ("image", "prompt", "video") if key in raw]
    if len(sources) != 1:
        given = " and ".join(sources) if sources else "none of them"
        raise fail(
            sources[-1] if sources else "image",
            f"give exactly one of image (an RGBA still), prompt (stage one makes the still) or video (an "
            f"existing clip); it has {given}.",
        )
    image = video = None
    prompt = None
    size: tuple[int, int]
    if "image" in raw:
        image = _existing_file(raw["image"], base_dir, "image", fail)
        size = _image_size_with_alpha(image, raw["image"], fail)
        if "size" in raw:
            raise fail(
                "size", "size is only for prompt layers; an image layer has its image's size. Drop it."
            )
    elif "video" in raw:
        video = _existing_file(raw["video"], base_dir, "video", fail)
        size = _video_size(video, raw["video"], fail)
        if "size" in raw:
            raise fail("size", "size is only for prompt layers; a video layer has its video's size. Drop it.")
    else:
        prompt = _string(raw["prompt"], "prompt", fail)
        size = (canvas.width, canvas.height)
        if "size" in raw:
            size = _pair(raw["size"], "size", fail, low=1)
    width, height = size

    position = _pair(raw.get("position", [0, 0]), "position", fail)
    motion = _string(raw["motion"], "motion", fail) if "motion" in raw else None
    if motion is not None and video is not None:
        raise fail(
            "motion", "a video layer is used as it is; motion animates an image or prompt layer. Drop it."
        )
    if motion is not None or prompt is not None:
        for key, value in (("width", width), ("height", height)):
            if value % LATENT_FACTOR:
                what = "size" if prompt is not None else "image"
                raise fail(
                    what,
                    f"the layer is {width}x{height}: the models need a {key} that is a multiple of "
                    f"{LATENT_FACTOR}; make it {max(8, round(value / 8) * 8)}.",
                )
    frames = _int(raw["frames"], where, "frames", low=1, layer=name) if "frames" in raw else None
    if frames is not None and motion is not None and frames < 2:
        raise fail("frames", f"frames = {frames} is too few to animate; use 2 or more.")
    layer = Layer(
        index=index,
        name=name,
        width=width,
        height=height,
        image=image,
        prompt=prompt,
        video=video,
        negative_prompt=_string(raw["negative_prompt"], "negative_prompt", fail, empty_ok=True)
        if "negative_prompt" in raw
        else "",
        position=position,
        motion=motion,
        margin=_int(raw.get("margin", DEFAULT_MARGIN), where, "margin", low=0, layer=name),
        seed=_int(raw["seed"], where, "seed", low=0, high=SEED_MAX, layer=name) if "seed" in raw else None,
        ifa_weights=_existing_file(raw["ifa_weights"], base_dir, "ifa_weights", fail)
        if "ifa_weights" in raw
        else None,
        frames=frames,
        seamless=_bool(raw.get("seamless", False), "seamless", fail),
        opacity=_opacity(raw.get("opacity", 1.0), fail),
        visible=_bool(raw.get("visible", True), "visible", fail),
        start=_int(raw.get("start", 0), where, "start", low=0, layer=name),
    )
    for key in ("ifa_weights", "seamless", "margin"):
        if key in raw and motion is None:
            raise fail(key, f'{key} only matters for an animated layer; add motion = "…" or drop {key}.')
    if "region" in raw:
        if motion is None:
            raise fail("region", 'region is where motion happens; add motion = "…" or drop region.')
        region = _parse_region(raw["region"], layer, canvas, base_dir, fail)
        layer = replace(layer, region=region)
    return layer


def _parse_region(value: Any, layer: Layer, canvas: Canvas, base_dir: Path, fail: Any) -> Box | Path:
    bounds = layer.bounds
    if isinstance(value, str):
        mask_path = _existing_file(value, base_dir, "region", fail)
        from PIL import Image

        try:
            with Image.open(mask_path) as image:
                mask_size = image.size
        except OSError:
            raise fail("region", f'region = "{value}" is not an image; give a mask PNG or a box.') from None
        if mask_size != (canvas.width, canvas.height):
            raise fail(
                "region",
                f'region = "{value}" is {mask_size[0]}x{mask_size[1]}; a mask image is in canvas '
                f"coordinates, so make it {canvas.width}x{canvas.height} (white where motion may happen).",
            )
        from layeranim.scene.region import region_mask

        if not region_mask(layer, canvas, mask_path).any():
            raise fail(
                "region",
                f'region = "{value}" has no white pixel over the layer (at {bounds.as_list()} on the '
                "canvas); paint the motion area white where the layer is.",
            )
        return mask_path
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise fail(
            "region",
            f"region = {value!r} must be a box [x0, y0, x1, y1] of integers in canvas pixels, or a mask "
            "image path.",
        )
    box = Box(*value)
    if box.x1 <= box.x0 or box.y1 <= box.y0:
        raise fail("region", f"region = {value!r} is empty; write [x0, y0, x1, y1] with x0 < x1 and y0 < y1.")
    if box.x1 <= bounds.x0 or box.x0 >= bounds.x1 or box.y1 <= bounds.y0 or box.y0 >= bounds.y1:
        raise fail(
            "region",
            f"region = {value!r} lies outside the layer, which covers {bounds.as_list()} on the canvas "
            "(region is in canvas coordinates); give a box that overlaps it.",
        )
    return box


def _check_one_ifa_weights(layers: list[Layer], source: str) -> None:
    """All animated layers share one motion UNet, so they share one set of Inter-Frame Attention weights."""
    first: Layer | None = None
    for layer in layers:
        if layer.ifa_weights is None:
            continue
        if first is None:
            first = layer
        elif layer.ifa_weights.resolve() != first.ifa_weights.resolve():  # type: ignore[union-attr]
            raise SceneError(
                f'{source}: {layer.label}: ifa_weights = "{layer.ifa_weights}" differs from {first.label}\'s '
                f'"{first.ifa_weights}"; a scene loads one motion UNet, so give every layer the same '
                "ifa_weights (or render them in separate scenes).",
                layer=layer.name,
                key="ifa_weights",
            )


def scene_ifa_weights(scene: Scene) -> Path | None:
    """The scene's Inter-Frame Attention weights (every layer that names them names the same file)."""
    return next((layer.ifa_weights for layer in scene.layers if layer.ifa_weights is not None), None)


# ---------------------------------------------------------------------------------------------------
# Value checks. Each names the layer and key through `fail` (or `where`).


def _existing_file(value: Any, base_dir: Path, key: str, fail: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise fail(key, f"{key} = {value!r} must be a file path (relative to the scene file).")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise fail(
            key, f'{key} = "{value}": no such file ({path}); check the path (relative to the scene file).'
        )
    return path


def _image_size_with_alpha(path: Path, value: str, fail: Any) -> tuple[int, int]:
    from PIL import Image

    from layeranim.errors import LayerAnimError
    from layeranim.video_io import image_has_alpha

    try:
        has_alpha = image_has_alpha(path)
        with Image.open(path) as image:
            size = image.size
    except (LayerAnimError, OSError):
        raise fail(
            "image", f'image = "{value}" cannot be read as an image; give an RGBA PNG or WebP.'
        ) from None
    if not has_alpha:
        raise fail(
            "image",
            f'image = "{value}" is RGB only (no alpha channel); a layer needs transparency: save it as an '
            "RGBA PNG or WebP (or cut the subject out first).",
        )
    return int(size[0]), int(size[1])


def _video_size(path: Path, value: str, fail: Any) -> tuple[int, int]:
    from layeranim.errors import LayerAnimError
    from layeranim.video_io import probe

    try:
        info = probe(path)
    except LayerAnimError as exc:
        raise fail(
            "video", f'video = "{value}" cannot be read ({exc}); give a clip layeranim reads.'
        ) from None
    return info.width, info.height


def _string(value: Any, key: str, fail: Any, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (not empty_ok and not value.strip()):
        raise fail(key, f"{key} = {value!r} must be a {'' if empty_ok else 'non-empty '}string.")
    return value


def _bool(value: Any, key: str, fail: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(key, f"{key} = {value!r} must be true or false.")
    return value


def _opacity(value: Any, fail: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise fail("opacity", f"opacity = {value!r} must be a number from 0 (invisible) to 1 (as is).")
    return float(value)


def _pair(value: Any, key: str, fail: Any, *, low: int | None = None) -> tuple[int, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise fail(key, f"{key} = {value!r} must be two integers, [x, y] or [width, height].")
    if low is not None and min(value) < low:
        raise fail(key, f"{key} = {value!r} must be at least {low} in both entries.")
    return int(value[0]), int(value[1])


def _int(
    value: Any,
    where: str,
    key: str,
    *,
    low: int | None = None,
    high: int | None = None,
    layer: str | None = None,
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SceneError(f"{where}: {key} = {value!r} must be an integer.", layer=layer, key=key)
    if low is not None and value < low:
        raise SceneError(f"{where}: {key} = {value} must be at least {low}.", layer=layer, key=key)
    if high is not None and value > high:
        raise SceneError(f"{where}: {key} = {value} must be at most {high}.", layer=layer, key=key)
    return value


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SceneError(f"{where}: {key} = {value!r} must be a number.", key=key)
    return float(value)


def slugify(text: str, max_len: int = 40) -> str:
    """A lowercase ASCII file-name fragment (`a-red-kite`); `layer` when nothing is left."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_len].strip("-") or "layer"
