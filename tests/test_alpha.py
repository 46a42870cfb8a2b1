"""Pure RGBA math: the premultiply boundary, compositing, colour padding, alpha-correct resize, colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layeranim import alpha
from layeranim.errors import UsageError


def test_premultiply_then_unpremultiply_restores_straight_colour() -> None:
    rgb_01 = np.array([[1.0, 0.5, 0.0], [0.2, 0.4, 0.6], [0.9, 0.9, 0.9]], dtype=np.float32)
    alpha_01 = np.array([[0.25], [1.0], [0.0]], dtype=np.float32)
    premul = alpha.premultiply(rgb_01, alpha_01)
    np.testing.assert_allclose(premul[0], [0.25, 0.125, 0.0])
    restored = alpha.unpremultiply(premul, alpha_01)
    np.testing.assert_allclose(restored[:2], rgb_01[:2], atol=1e-6)
    np.testing.assert_array_equal(restored[2], [0.0, 0.0, 0.0])  # nothing to recover under alpha 0


def test_float_helpers_accept_torch_tensors() -> None:
    rgb = torch.tensor([[0.8, 0.2, 0.4]])
    a = torch.tensor([[0.5]])
    torch.testing.assert_close(alpha.unpremultiply(alpha.premultiply(rgb, a), a), rgb)
    torch.testing.assert_close(alpha.composite_over_gray(rgb, a), torch.tensor([[0.65, 0.35, 0.45]]))


def test_composite_over_gray_follows_the_formula() -> None:
    rgb_01 = np.array([0.0, 1.0, 0.25], dtype=np.float32)
    np.testing.assert_allclose(alpha.composite_over_gray(rgb_01, np.float32(0.0)), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(alpha.composite_over_gray(rgb_01, np.float32(1.0)), rgb_01)
    np.testing.assert_allclose(alpha.composite_over_gray(rgb_01, np.float32(0.5)), [0.25, 0.75, 0.375])


def test_flatten_onto_color_is_opaque_and_blends() -> None:
    rgba = np.array([[[255, 0, 0, 0], [255, 0, 0, 255], [255, 0, 0, 128]]], dtype=np.uint8)
    flat = alpha.flatten_onto_color(rgba, (0, 0, 255))
    np.testing.assert_array_equal(flat[..., 3], 255)
    np.testing.assert_array_equal(flat[0, 0, :3], [0, 0, 255])
    np.testing.assert_array_equal(flat[0, 1, :3], [255, 0, 0])
    np.testing.assert_array_equal(flat[0, 2, :3], [128, 0, 127])


def test_premultiply_uint8_round_trip() -> None:
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0], [255, 128, 0, 64]]], dtype=np.uint8)
    premul = alpha.premultiply_uint8(rgba)
    np.testing.assert_array_equal(premul[0, 0], rgba[0, 0])
    np.testing.assert_array_equal(premul[0, 1], [0, 0, 0, 0])
    np.testing.assert_array_equal(premul[0, 2], [64, 32, 0, 64])
    straight = alpha.unpremultiply_uint8(premul)
    np.testing.assert_array_equal(straight[0, 0], rgba[0, 0])
    assert np.abs(straight[0, 2].astype(int) - [255, 128, 0, 64]).max() <= 2


def test_pad_color_under_transparent_fills_only_transparent_pixels() -> None:
    rgba = np.zeros((2, 8, 8, 4), np.uint8)
    rgba[0, 2:6, 2:6] = [200, 100, 50, 255]
    rgba[0, 2, 2, 3] = 10  # a barely visible pixel keeps its colour too
    padded = alpha.pad_color_under_transparent(rgba)
    np.testing.assert_array_equal(padded[..., 3], rgba[..., 3])
    visible = rgba[..., 3] > 0
    np.testing.assert_array_equal(padded[visible], rgba[visible])
    np.testing.assert_array_equal(padded[0, 1, 3, :3], [200, 100, 50])  # grown from the neighbour
    np.testing.assert_array_equal(padded[0, 0, 0, :3], [200, 100, 50])  # far away: the mean colour
    np.testing.assert_array_equal(padded[1], rgba[1])  # an empty frame stays as it was
    np.testing.assert_array_equal(alpha.pad_color_under_transparent(rgba[0]), padded[0])


def test_pad_color_fills_mixed_2x2_blocks_with_their_alpha_weighted_mean() -> None:
    """Re-derived per block: what one 4:2:0 chroma sample covers gets the visible pixels' colour."""
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (3, 7, 9, 4), dtype=np.uint8)  # odd sizes: edge blocks are partial
    rgba[..., 3] = np.where(rng.random((3, 7, 9)) < 0.4, 0, rgba[..., 3])
    padded = alpha.pad_color_under_transparent(rgba)
    checked = 0
    for f in range(3):
        for y in range(0, 7, 2):
            for x in range(0, 9, 2):
                block = rgba[f, y : y + 2, x : x + 2].reshape(-1, 4).astype(np.float64)
                weights = block[:, 3]
                if weights.sum() == 0 or weights.min() > 0:
                    continue
                expected = np.rint((block[:, :3] * weights[:, None]).sum(0) / weights.sum())
                out_block = padded[f, y : y + 2, x : x + 2].reshape(-1, 4)
                np.testing.assert_array_equal(
                    out_block[weights == 0, :3], np.tile(expected, (int((weights == 0).sum()), 1))
                )
                checked += 1
    assert checked > 10
    visible = rgba[..., 3] > 0
    np.testing.assert_array_equal(padded[visible], rgba[visible])
    # Frame by frame or all at once: the same.
    np.testing.assert_array_equal(np.stack([alpha.pad_color_under_transparent(f) for f in rgba]), padded)


def test_pad_color_reaches_across_the_frame() -> None:
    rgba = np.zeros((1, 33, 40, 4), np.uint8)
    rgba[0, 30, 2] = [10, 200, 30, 7]  # one faint visible pixel in a corner
    padded = alpha.pad_color_under_transparent(rgba)
    assert np.all(padded[0, ..., :3] == [10, 200, 30])
    np.testing.assert_array_equal(padded[..., 3], rgba[..., 3])


def test_checkerboard_composite() -> None:
    rgba = np.zeros((1, 16, 16, 4), np.uint8)
    rgba[0, :, 8:] = [10, 20, 30, 255]
    rgb = alpha.composite_over_checkerboard(rgba, square=4)
    assert rgb.shape == (1, 16, 16, 3)
    assert rgb[0, 0, 0, 0] == alpha.CHECKER_LIGHT_UINT8
    assert rgb[0, 0, 4, 0] == alpha.CHECKER_DARK_UINT8
    np.testing.assert_array_equal(rgb[0, :, 8:], np.broadcast_to([10, 20, 30], (16, 8, 3)))


def test_resize_keeps_straight_colour_at_soft_edges() -> None:
    # An orange square on transparent *black*: a straight-colour resize would drag black into the edge.
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:24, 8:24] = [255, 128, 0, 255]
    small = alpha.resize_rgba(rgba, 13, 11)
    assert small.shape == (11, 13, 4)
    soft = (small[..., 3] > 8) & (small[..., 3] < 255)
    assert soft.any()
    assert np.abs(small[..., :3][small[..., 3] > 8].astype(int) - [255, 128, 0]).max() <= 2
    frames = alpha.resize_rgba_frames(np.stack([rgba, rgba]), 16, 16)
    assert frames.shape == (2, 16, 16, 4)
    with pytest.raises(UsageError):
        alpha.resize_rgba(rgba, 0, 4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#ff8000", (255, 128, 0)),
        ("#f80", (255, 136, 0)),
        ("white", (255, 255, 255)),
        ("Black", (0, 0, 0)),
        ("gray", (128, 128, 128)),
        ("255,128,0", (255, 128, 0)),
        (" 0, 10 ,20 ", (0, 10, 20)),
    ],
)
def test_parse_color(text: str, expected: tuple[int, int, int]) -> None:
    assert alpha.parse_color(text) == expected


@pytest.mark.parametrize("text", ["nope", "256,0,0", "#12", "1,2", "1,2,x", ""])
def test_parse_color_rejects_bad_values(text: str) -> None:
    with pytest.raises(UsageError, match="colour"):
        alpha.parse_color(text)
