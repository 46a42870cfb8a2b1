"""The progress-callback types every layer of the library reports through (the CLI draws them as bars).

One owner for these shapes, so a callback written for one part fits every other part with the same shape.
Totals may be 0 when not known in advance (a stream of frames).
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int], None]
"""progress(done, total): frames written, denoising steps, files delivered, …"""

PhaseProgress = Callable[[str, int, int], None]
"""progress(phase, done, total): phase "denoise", "decode", "read", "write", …"""

StageProgress = Callable[[str, str, int, int], None]
"""progress(stage, phase, done, total): stage "image" or "video" (a layer's name in scenes)."""
