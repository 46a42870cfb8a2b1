"""Getting alpha video to where users put it: delivery targets, sprite sheets, engine metadata, web pages.

- `targets`: the table of delivery targets (`web`, `unity`, `godot`, `sprites`, editors, `apple`) and
  `deliver(...)`, which writes what a target promises.
- `sprites`, `godot`: sprite sheets with TexturePacker / Aseprite JSON, Godot 4 SpriteFrames `.tres`.
- `web`: the stacked-alpha player page and the `web` target's snippet (the project's own JavaScript).
- `preview`: the `layeranim preview` page: clips over a checkerboard, colours and as alpha only.
"""

from __future__ import annotations

from layeranim.delivery.targets import (
    TARGETS,
    Delivered,
    Target,
    check_delivery,
    deliver,
    get_target,
    target_names,
    targets_table,
)
from layeranim.delivery.web import write_stacked_html

__all__ = [
    "TARGETS",
    "Delivered",
    "Target",
    "check_delivery",
    "deliver",
    "get_target",
    "target_names",
    "targets_table",
    "write_stacked_html",
]
