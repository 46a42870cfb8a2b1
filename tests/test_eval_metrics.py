"""The evaluation metrics on constructed clips whose answers are known (derived here, not from our output)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from layeranim.alpha import pad_color_under_transparent
from layeranim.errors import UsageError
from layeranim.evaluation import evaluate as ev
from layeranim.evaluation import flow as flow_ops
from layeranim.evaluation import metrics

HEIGHT, WIDTH = 64, 96
SPRITE = 24  # a SPRITE×SPRITE textured, opaque square


def _texture(seed: int = 0) -> np.ndarray:
    """Random blocks of 3×3 pixels: texture that optical flow can lock onto."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (SPRITE // 3, SPRITE // 3, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 3, axis=0), 3, axis=1)


def sprite_clip(frames: int = 8, dx: int = 0, x0: int = 20, y0: int = 20) -> np.ndarray:
    """An opaque textured sprite moving `dx` pixels right per frame over full transparency (RGB 0)."""
    texture = _texture()
    clip = np.zeros((frames, HEIGHT, WIDTH, 4), np.uint8)
    for f in range(frames):
        x = x0 + dx * f
        clip[f, y0 : y0 + SPRITE, x : x + SPRITE, :3] = texture
        clip[f, y0 : y0 + SPRITE, x : x + SPRITE, 3] = 255
    return clip


# ---------------------------------------------------------------------------------------------------
# Alpha stability.


def test_static_clip_has_zero_alpha_change_raw_and_motion_compensated() -> None:
    result = ev.evaluate_frames(sprite_clip(dx=0), fps=8, flow_method="dis")
    assert result["metrics"]["alpha_stability"] == 0.0
    assert result["metrics"]["alpha_stability_motion_compensated"] == 0.0
    assert result["metrics"]["dynamic_degree"] == 0.0


def test_alternate_frame_toggle_gives_the_toggled_area_times_the_alpha_step() -> None:
    clip = np.zeros((6, HEIGHT, WIDTH, 4), np.uint8)
    clip[..., :3] = 90
    clip[:, 8:24, 10:42, 3] = 255  # always opaque
    clip[0::2, 32:48, 50:82, 3] = 255  # toggles: 255 on even frames, 51 (alpha 0.2) on odd ones
    clip[1::2, 32:48, 50:82, 3] = 51
    expected = 16 * 32 / (HEIGHT * WIDTH) * (1.0 - 0.2)  # toggled area share × |Δalpha|
    np.testing.assert_allclose(metrics.alpha_change(clip), expected, rtol=1e-6)
    assert metrics.alpha_change(clip).shape == (5,)
    result = ev.evaluate_frames(clip, fps=8, flow_method="dis")
    assert result["metrics"]["alpha_stability"] == pytest.approx(expected, rel=1e-6)
    # Flicker in place is not motion: compensation cannot explain it away.
    assert result["metrics"]["alpha_stability_motion_compensated"] > 0.5 * expected


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_uniform_translation_is_large_raw_and_about_zero_motion_compensated(method: str) -> None:
    dx = 2
    result = ev.evaluate_frames(sprite_clip(dx=dx), fps=8, flow_method=method)
    # Raw: each step uncovers and covers a dx-wide strip on either side of the sprite, fully.
    raw_expected = 2 * dx * SPRITE / (HEIGHT * WIDTH)
    assert result["metrics"]["alpha_stability"] == pytest.approx(raw_expected, rel=1e-6)
    compensated = result["metrics"]["alpha_stability_motion_compensated"]
    assert compensated < 0.2 * raw_expected, (compensated, raw_expected)
    assert result["flow_method"] == method


def test_warp_backward_moves_the_previous_frame_onto_the_current_one() -> None:
    previous = np.zeros((8, 8), np.float32)
    previous[2, 3] = 1.0
    flow = np.zeros((8, 8, 2), np.float32)
    flow[..., 0] = -2.0  # current(x) = previous(x − 2): the content moved 2 px right
    warped = metrics.warp_backward(previous, flow)
    assert warped[2, 5] == 1.0 and warped.sum() == 1.0


# ---------------------------------------------------------------------------------------------------
# Motion.


def test_moving_sprite_has_a_higher_dynamic_degree_than_a_still_one() -> None:
    moving = ev.evaluate_frames(sprite_clip(dx=3), fps=8, flow_method="dis")["metrics"]
    still = ev.evaluate_frames(sprite_clip(dx=0), fps=8, flow_method="dis")["metrics"]
    assert moving["dynamic_degree"] > still["dynamic_degree"] + 1.0
    assert moving["dynamic_degree"] == pytest.approx(3.0, abs=0.75)  # about the true 3 px per frame
    assert moving["flow_mean"] == pytest.approx(3.0, abs=0.75)
    assert moving["dynamic"] is True and still["dynamic"] is False


def test_dynamic_degree_follows_vbench_threshold_and_top_fraction() -> None:
    flow = np.zeros((15, 256, 512, 2), np.float32)
    flow[:, :, :, 0] = np.linspace(0, 10, 512)[None, None, :]  # magnitude rises left to right
    result = flow_ops.dynamic_degree(flow, fps=8)
    top = np.sort(np.linspace(0, 10, 512))[-int(512 * 0.05) :].mean()  # 5 % of pixels = 5 % of columns
    assert result.score == pytest.approx(top, rel=2e-3)
    assert result.threshold == pytest.approx(6.0)  # 6 px at a 256-pixel short side, 8 fps
    assert result.pairs_needed == 4  # 16 frames
    assert result.dynamic
    masked = flow_ops.dynamic_degree(flow, fps=8, mask_fhw=np.zeros((15, 256, 512), bool))
    assert masked.score == 0.0 and not masked.dynamic


def test_unknown_flow_method_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="flow method 'optical'"):
        ev.evaluate_frames(sprite_clip(), fps=8, flow_method="optical")


# ---------------------------------------------------------------------------------------------------
# Coverage, soft edges, colour leak.


def test_coverage_drift_is_relative_to_the_still_frame() -> None:
    clip = np.zeros((3, 10, 10, 4), np.uint8)
    clip[0, :4, :5, 3] = 255  # 20 px
    clip[1, :4, :, 3] = 255  # 40 px: the still
    clip[2, :6, :, 3] = 255  # 60 px
    assert metrics.alpha_coverage_drift(clip, still_index=1) == pytest.approx(0.5)
    assert metrics.alpha_coverage_drift(clip, still_index=0) == pytest.approx(2.0)
    assert metrics.alpha_coverage_drift(np.zeros((2, 4, 4, 4), np.uint8), 0) is None


def test_soft_edge_fraction_counts_partly_transparent_visible_pixels() -> None:
    clip = np.zeros((2, 10, 10, 4), np.uint8)
    clip[:, :3, :, 3] = 255  # 30 opaque
    clip[:, 3:4, :, 3] = 128  # 10 soft
    clip[:, 4:5, :, 3] = 1  # 10 soft
    assert metrics.soft_edge_fraction(clip) == pytest.approx(20 / 50)
    assert metrics.soft_edge_fraction(np.zeros((1, 4, 4, 4), np.uint8)) == 0.0


def test_colour_leak_is_zero_for_edge_padded_straight_alpha_and_positive_for_hidden_colour() -> None:
    clip = np.zeros((2, 32, 32, 4), np.uint8)
    colour = (200, 100, 50)
    clip[:, 10:20, 10:20, :3] = colour
    clip[:, 10:20, 10:20, 3] = 255
    # Black under alpha 0 (RGB 0): padding would put the sprite's colour around it, so all of the band's
    # colour is hidden colour: leak = mean |0 − colour| / 255 over the channels.
    assert metrics.colour_leak(clip) == pytest.approx(np.mean(colour) / 255.0, rel=1e-6)
    padded = pad_color_under_transparent(clip)
    assert metrics.colour_leak(padded) == 0.0
    # Colour far from any visible pixel (beyond the padding band) never reaches an edge: not a leak.
    far = padded.copy()
    far[:, 28:, 28:, :3] = (0, 255, 0)
    assert metrics.colour_leak(far) == 0.0
    near = padded.copy()
    near[:, 21, 10:20, :3] = (0, 255, 0)  # right next to the sprite
    assert metrics.colour_leak(near) > 0.0


# ---------------------------------------------------------------------------------------------------
# The still frame and the loop.


def test_base_frame_fidelity_is_infinite_for_an_identical_still_and_ignores_hidden_colour() -> None:
    clip = sprite_clip(frames=5, dx=1)
    still = clip[2].copy()
    still[0, 0, :3] = (255, 0, 255)  # colour under alpha 0 does not show
    fidelity = metrics.base_frame_fidelity(clip[2], still)
    assert fidelity.psnr_db == math.inf and fidelity.max_diff == 0.0 and fidelity.identical
    changed = still.copy()
    changed[25, 25, 0] = int(changed[25, 25, 0]) ^ 4  # one opaque channel off by 4 levels
    fidelity = metrics.base_frame_fidelity(clip[2], changed)
    mse = 4.0**2 / (HEIGHT * WIDTH * 4)
    assert fidelity.psnr_db == pytest.approx(10 * math.log10(255.0**2 / mse), rel=1e-6)
    assert fidelity.max_diff == pytest.approx(4.0) and not fidelity.identical
    with pytest.raises(UsageError, match="still has size"):
        metrics.base_frame_fidelity(clip[0], still[:10])


def test_loop_seam_is_one_for_a_perfect_loop_and_large_for_a_jump_cut() -> None:
    frames, dx = 8, 12  # the sprite wraps around the 96-pixel width in exactly 8 steps
    base = sprite_clip(frames=1)[0]
    loop = np.stack([np.roll(base, dx * f, axis=1) for f in range(frames)])
    assert metrics.loop_seam_score(loop) == pytest.approx(1.0)
    cut = sprite_clip(frames=frames, dx=1, x0=10)
    cut[..., :3] = (
        200,
        40,
        40,
    )  # a flat sprite: each 1-px step changes two 1-px strips, the seam two 7-px ones
    assert metrics.loop_seam_score(cut) == pytest.approx(7.0)
    assert metrics.loop_seam_score(sprite_clip(dx=0)) == 1.0  # nothing changes anywhere


# ---------------------------------------------------------------------------------------------------
# Sets.


def _result(clip: str, item: str, **values: float) -> dict[str, object]:
    return {"clip": clip, "item": item, "metrics": dict(values)}


def test_aggregate_reports_mean_std_and_counts_infinities_apart() -> None:
    results = [
        _result("a.webm", "a", clip_score=20.0, still_psnr_db=math.inf, dynamic=True),
        _result("b.webm", "b", clip_score=30.0, still_psnr_db=40.0, dynamic=False),
    ]
    stats = ev.aggregate(results)
    assert stats["clip_score"] == {"n": 2, "n_inf": 0, "mean": 25.0, "std": 5.0, "min": 20.0, "max": 30.0}
    assert stats["still_psnr_db"]["n_inf"] == 1 and stats["still_psnr_db"]["mean"] == 40.0
    assert stats["dynamic"]["mean"] == 0.5  # VBench's set-level dynamic degree: the share that moves


def test_compare_pairs_by_file_name_and_reports_b_minus_a() -> None:
    a = [_result("A/x.webm", "x", clip_score=20.0), _result("A/y.webm", "y", clip_score=22.0)]
    b = [_result("B/y.mov", "y", clip_score=25.0), _result("B/x.mov", "x", clip_score=21.0)]
    comparison = ev.compare(a, b)
    assert comparison["metrics"]["clip_score"]["diff"] == pytest.approx(2.0)
    assert {row["item"]: row["diff"]["clip_score"] for row in comparison["pairs"]} == {"x": 1.0, "y": 3.0}
    with pytest.raises(UsageError, match=r"only in B: z\.mov"):
        ev.compare(a, [*b, _result("B/z.mov", "z", clip_score=1.0)])


def test_json_ready_turns_infinity_into_null() -> None:
    assert ev.json_ready({"psnr": math.inf, "x": [np.float32(1.5), np.bool_(True)]}) == {
        "psnr": None,
        "x": [1.5, True],
    }


def test_auto_flow_falls_back_to_opencv_dis_without_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow_ops, "raft_available", lambda: False)
    assert flow_ops.resolve_flow_method("auto") == "dis"
    with pytest.raises(UsageError, match="needs torchvision"):
        flow_ops.resolve_flow_method("raft")


def test_fast_clips_are_subsampled_to_about_8_fps_like_vbench() -> None:
    slow = ev.evaluate_frames(sprite_clip(frames=9, dx=1), fps=8, flow_method="dis")
    fast = ev.evaluate_frames(sprite_clip(frames=9, dx=1), fps=24, flow_method="dis")  # every 3rd frame
    assert flow_ops.vbench_frame_step(24) == 3 and flow_ops.vbench_frame_step(12) == 2
    assert slow["metrics"]["dynamic_degree"] == pytest.approx(1.0, abs=0.3)
    assert fast["metrics"]["dynamic_degree"] == pytest.approx(3.0, abs=0.75)  # 3 px per sampled pair
    assert fast["metrics"]["flow_mean"] == pytest.approx(slow["metrics"]["flow_mean"])  # all frames
