"""Optical flow between consecutive frames, and the VBench-style dynamic degree computed from it.

Flow comes from RAFT (torchvision's `raft_large`, as VBench and the Layer-Animate paper use) when
torchvision is installed and its weights are available, otherwise from OpenCV's DIS optical flow
(`opencv-python-headless`). Every flow here is *backward*: `flow[t − 1]` maps frame t onto frame t−1
(OpenCV's convention, frame_t(x) ≈ frame_{t−1}(x + flow(x))), which is what warping the previous alpha
onto the current frame needs; its magnitude measures the motion between the two frames just as well.

Axis legend: f frames (or frame pairs), h height, w width, c channels; flows are (…, h, w, 2) as (dx, dy)
in pixels.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from layeranim.errors import UsageError
from layeranim.evaluation._opencv import cv2_module

logger = logging.getLogger(__name__)

FlowMethod = Literal["auto", "raft", "dis", "farneback"]
FLOW_METHODS: tuple[str, ...] = ("auto", "raft", "dis", "farneback")

# VBench's dynamic degree (vbench/dynamic_degree.py): a frame pair's score is the mean of its top 5 %
# flow magnitudes; a clip is "dynamic" when enough pairs exceed a threshold scaled to the frame size.
TOP_FRACTION = 0.05
VBENCH_THRESHOLD_AT_256 = 6.0  # pixels of flow at a 256-pixel short side
VBENCH_PAIRS_PER_16_FRAMES = 4


def raft_available() -> bool:
    """Whether torchvision (and so RAFT) can be imported."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def _raft_weights_cached() -> bool:
    """Whether torchvision's RAFT-large weights are already in the torch hub cache (no network)."""
    import os

    import torch
    from torchvision.models.optical_flow import Raft_Large_Weights

    name = os.path.basename(Raft_Large_Weights.DEFAULT.url)
    return os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", name))


def resolve_flow_method(method: str) -> str:
    """`auto` → `raft` when torchvision and its cached RAFT weights are there, else `dis`; others as given."""
    if method not in FLOW_METHODS:
        raise UsageError(f"flow method {method!r} is not one of {', '.join(FLOW_METHODS)}.")
    if method == "auto":
        return "raft" if raft_available() and _raft_weights_cached() else "dis"
    if method == "raft" and not raft_available():
        raise UsageError(
            "flow method 'raft' needs torchvision; install it (pip install torchvision) or use 'dis'."
        )
    return method


def backward_flows(
    rgb_fhwc_uint8: np.ndarray, method: str = "auto", device: str = "cpu"
) -> tuple[np.ndarray, str]:
    """Backward optical flow of every consecutive pair of opaque frames: ((f−1, h, w, 2) float32, method).

    `rgb_fhwc_uint8` are the frames as a viewer sees them (composited over a background). The method
    actually used is returned, so reports can say which one produced the numbers.
    """
    if rgb_fhwc_uint8.ndim != 4 or rgb_fhwc_uint8.shape[-1] != 3 or len(rgb_fhwc_uint8) < 2:
        raise UsageError(
            f"rgb_fhwc_uint8 has shape {tuple(rgb_fhwc_uint8.shape)}; expected (frames ≥ 2, h, w, 3)."
        )
    used = resolve_flow_method(method)
    if used == "raft":
        return _raft_flows(rgb_fhwc_uint8, device), used
    cv2 = cv2_module()
    gray_fhw = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in rgb_fhwc_uint8])
    flows = []
    if used == "dis":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        for t in range(1, len(gray_fhw)):
            flows.append(dis.calc(gray_fhw[t], gray_fhw[t - 1], None))
    else:
        for t in range(1, len(gray_fhw)):
            flows.append(
                cv2.calcOpticalFlowFarneback(
                    gray_fhw[t],
                    gray_fhw[t - 1],
                    None,
                    0.5,
                    4,
                    15,
                    3,
                    5,
                    1.2,
                    0,  # pyramid, window, iterations
                )
            )
    return np.stack(flows).astype(np.float32), used


def _raft_flows(rgb_fhwc_uint8: np.ndarray, device: str) -> np.ndarray:
    """RAFT-large backward flows (torchvision weights, fetched into the torch hub cache when missing)."""
    import torch
    import torch.nn.functional as F
    from einops import rearrange

    model = _raft_model(str(device))
    height, width = rgb_fhwc_uint8.shape[1:3]
    pad_h, pad_w = (-height) % 8, (-width) % 8  # RAFT needs sizes divisible by 8
    frames_fchw = rearrange(torch.from_numpy(rgb_fhwc_uint8), "f h w c -> f c h w").float() / 127.5 - 1.0
    frames_fchw = F.pad(frames_fchw, (0, pad_w, 0, pad_h), mode="replicate")
    flows = []
    with torch.inference_mode():
        for t in range(1, len(frames_fchw)):
            current = frames_fchw[t : t + 1].to(device)
            previous = frames_fchw[t - 1 : t].to(device)
            flow_12hw = model(current, previous, num_flow_updates=20)[-1]  # (1, 2, h, w), current → previous
            flows.append(rearrange(flow_12hw[0, :, :height, :width], "c h w -> h w c").float().cpu().numpy())
    return np.stack(flows)


@functools.lru_cache(maxsize=1)
def _raft_model(device: str) -> Any:
    """torchvision's RAFT-large with its default weights, loaded once per process (and device)."""
    from torchvision.models.optical_flow import Raft_Large_Weights, raft_large

    return raft_large(weights=Raft_Large_Weights.DEFAULT, progress=False).eval().to(device)


def vbench_frame_step(fps: float) -> int:
    """VBench reads every round(fps / 8)-th frame (at least every frame), so pairs are about 1/8 s apart."""
    return max(1, round(fps / 8.0))


def flow_magnitude(flow_fhw2: np.ndarray) -> np.ndarray:
    """Per-pixel flow length in pixels: (f, h, w)."""
    return np.hypot(flow_fhw2[..., 0], flow_fhw2[..., 1])


def top_fraction_mean(values: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Mean of the largest `fraction` of `values` (at least one value); 0 for no values (VBench's score)."""
    flat = np.ravel(values)
    if flat.size == 0:
        return 0.0
    count = max(1, int(flat.size * fraction))
    return float(np.partition(flat, flat.size - count)[flat.size - count :].mean())


@dataclass(frozen=True)
class DynamicDegree:
    """VBench's dynamic degree of one clip, and the numbers it comes from."""

    pair_scores: np.ndarray  # (f−1,) mean of the top 5 % flow magnitudes of each frame pair, pixels
    threshold: float  # pixels a pair must exceed to count as moving
    pairs_needed: int  # moving pairs needed for the clip to count as dynamic

    @property
    def score(self) -> float:
        """The mean pair score in pixels: the continuous per-clip dynamic degree."""
        return float(self.pair_scores.mean()) if self.pair_scores.size else 0.0

    @property
    def dynamic(self) -> bool:
        """VBench's verdict: at least `pairs_needed` pairs move more than `threshold`."""
        return int(np.count_nonzero(self.pair_scores > self.threshold)) >= max(1, self.pairs_needed)


def dynamic_degree(
    flow_fhw2: np.ndarray, fps: float, mask_fhw: np.ndarray | None = None, fraction: float = TOP_FRACTION
) -> DynamicDegree:
    """VBench's dynamic degree (Huang et al., VBench, 2024): top-`fraction` mean flow magnitude per pair.

    A pair scores the mean of its largest 5 % flow magnitudes, taken only over `mask_fhw` when given (the
    union of alpha > 0.5 in the pair, so transparent background does not dilute it). The clip is dynamic
    when round(4 · frames / 16) pairs exceed 6 · max(1, 8 / fps) · min(h, w) / 256 pixels.
    """
    magnitude_fhw = flow_magnitude(flow_fhw2)
    pairs, height, width = magnitude_fhw.shape
    if mask_fhw is not None and mask_fhw.shape != magnitude_fhw.shape:
        raise UsageError(f"mask_fhw has shape {mask_fhw.shape}; expected {magnitude_fhw.shape}.")
    scores = np.array(
        [
            top_fraction_mean(
                magnitude_fhw[t] if mask_fhw is None else magnitude_fhw[t][mask_fhw[t]], fraction
            )
            for t in range(pairs)
        ],
        dtype=np.float32,
    )
    threshold = VBENCH_THRESHOLD_AT_256 * max(1.0, 8.0 / fps) * min(height, width) / 256.0
    needed = round(VBENCH_PAIRS_PER_16_FRAMES * (pairs + 1) / 16.0)
    return DynamicDegree(pair_scores=scores, threshold=threshold, pairs_needed=needed)
