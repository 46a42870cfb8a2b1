"""LayerDiffuse transparency encoder/decoder: released layouts, strict loading, TTA, encode/decode paths."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from layeranim.errors import StateDictMismatchError, WeightsError
from layeranim.models import (
    TransparentVAEDecoder,
    TransparentVAEEncoder,
    decode_rgba,
    encode_adjusted_latent,
    estimate_augmented,
    estimate_single_pass,
    pad_rgb,
    rgba_to_uint8,
)
from layeranim.models.transparent_vae import area_downsample, estimate_batched, lower_median

KEYS_FILE = Path(__file__).parent / "data" / "layerdiffuse_keys.txt"
TINY_DECODER = {"block_out_channels": (8,) * 7, "norm_num_groups": 4}


def listed_shapes(section_start: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of one `## file` section of tests/data/layerdiffuse_keys.txt."""
    shapes: dict[str, tuple[int, ...]] = {}
    inside = False
    for line in KEYS_FILE.read_text().splitlines():
        if line.startswith("## "):
            inside = line.removeprefix("## ").startswith(section_start)
        elif inside and "\t" in line and not line.startswith("#"):
            key, shape = line.split("\t")
            shapes[key] = tuple(ast.literal_eval(shape))
    return shapes


def meta_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(32,) * 4,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=32,
        layers_per_block=1,
        sample_size=64,
    ).eval()


@pytest.fixture(scope="module")
def tiny_decoder() -> TransparentVAEDecoder:
    torch.manual_seed(1)
    decoder = TransparentVAEDecoder(**TINY_DECODER).eval()
    with torch.no_grad():  # the released latent_conv_in is not zero; make the latent matter here too
        decoder.latent_conv_in.weight.normal_(std=0.5)
    return decoder


@pytest.fixture(scope="module")
def random_encoder() -> TransparentVAEEncoder:
    torch.manual_seed(2)
    encoder = TransparentVAEEncoder().eval()
    with torch.no_grad():
        encoder.blocks[-1].weight.normal_(std=0.01)
    return encoder


def random_rgba(height: int, width: int, batch: int = 1, seed: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rgba_b4hw_01 = torch.rand(batch, 4, height, width, generator=generator)
    rgba_b4hw_01[:, 3, : height // 3] = 0.0  # a fully transparent band
    rgba_b4hw_01[:, 3, -height // 3 :] = 1.0  # an opaque band
    return rgba_b4hw_01


# --- released layouts -----------------------------------------------------------------------------


def test_full_size_decoder_matches_released_layout() -> None:
    with torch.device("meta"):
        decoder = TransparentVAEDecoder()
    listed = listed_shapes("layer_sd15_vae_transparent_decoder")
    assert len(listed) == 538
    assert meta_shapes(decoder) == listed
    assert sum(p.numel() for p in decoder.parameters()) == 104_104_804


def test_full_size_encoder_matches_released_layout_and_starts_at_zero() -> None:
    listed = listed_shapes("layer_sd15_vae_transparent_encoder")
    assert len(listed) == 18
    encoder = TransparentVAEEncoder()
    assert meta_shapes(encoder) == listed
    assert sum(p.numel() for p in encoder.parameters()) == 1_181_764
    assert not encoder.blocks[16].weight.any() and not encoder.blocks[16].bias.any()
    assert encoder(torch.rand(1, 4, 24, 40)).shape == (1, 4, 3, 5)


# --- strict single-file loading -------------------------------------------------------------------


def write_fp16(model: torch.nn.Module, path: Path) -> dict[str, torch.Tensor]:
    state_dict = {key: tensor.detach().half().contiguous() for key, tensor in model.state_dict().items()}
    save_file(state_dict, str(path))
    return state_dict


def test_encoder_file_with_real_layout_loads_strictly(
    tmp_path: Path, random_encoder: TransparentVAEEncoder
) -> None:
    path = tmp_path / "layer_sd15_vae_transparent_encoder.safetensors"
    written = write_fp16(random_encoder, path)
    loaded = TransparentVAEEncoder.from_single_file(path)
    assert loaded.config.offset_scale == 1.0
    assert loaded.dtype == torch.float32
    assert torch.equal(loaded.blocks[16].weight, written["blocks.16.weight"].float())
    assert TransparentVAEEncoder.from_single_file(path, torch_dtype=torch.float16).dtype == torch.float16
    assert TransparentVAEEncoder.from_single_file(path, offset_scale=7.0).config.offset_scale == 7.0


def test_encoder_offset_scale_follows_weight_family(tmp_path: Path) -> None:
    path = tmp_path / "ld_diffusers_sdxl_vae_transparent_encoder.safetensors"
    write_fp16(TransparentVAEEncoder(), path)
    assert TransparentVAEEncoder.from_single_file(path).config.offset_scale == 300.0


def test_decoder_file_loads_strictly(tmp_path: Path, tiny_decoder: TransparentVAEDecoder) -> None:
    path = tmp_path / "layer_sd15_vae_transparent_decoder.safetensors"
    written = write_fp16(tiny_decoder, path)
    loaded = TransparentVAEDecoder.from_single_file(path, **TINY_DECODER)
    assert not loaded.training and loaded.dtype == torch.float32
    loaded_state = loaded.state_dict()
    assert all(torch.equal(loaded_state[key], tensor.float()) for key, tensor in written.items())
    with torch.no_grad():
        assert loaded(torch.rand(1, 3, 64, 64), torch.randn(1, 4, 8, 8)).shape == (1, 4, 64, 64)


@pytest.mark.parametrize("defect", ["missing", "unexpected", "misshaped"])
def test_mismatched_encoder_file_names_the_key(tmp_path: Path, defect: str) -> None:
    state_dict = {key: t.half() for key, t in TransparentVAEEncoder().state_dict().items()}
    if defect == "missing":
        del state_dict["blocks.6.bias"]
        expected = "1 missing key(s): blocks.6.bias"
    elif defect == "unexpected":
        state_dict["blocks.18.weight"] = torch.zeros(4, 4, dtype=torch.float16)
        expected = "1 unexpected key(s): blocks.18.weight"
    else:
        state_dict["blocks.16.weight"] = torch.zeros(4, 128, 3, 3, dtype=torch.float16)
        expected = "blocks.16.weight (4, 128, 3, 3) (expected (4, 256, 3, 3))"
    path = tmp_path / "vae_transparent_encoder.safetensors"
    save_file(state_dict, str(path))
    with pytest.raises(StateDictMismatchError, match="transparency encoder") as info:
        TransparentVAEEncoder.from_single_file(path)
    assert expected in str(info.value)


def test_decoder_file_of_another_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not_a_decoder.safetensors"
    write_fp16(TransparentVAEEncoder(), path)
    with pytest.raises(StateDictMismatchError, match=r"538 missing key\(s\): conv_in.weight, conv_in.bias"):
        TransparentVAEDecoder.from_single_file(path)


def test_unreadable_files_raise_weights_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        TransparentVAEDecoder.from_single_file(tmp_path / "absent.safetensors")
    pickle_path = tmp_path / "decoder.ckpt"
    pickle_path.write_bytes(b"\x80\x04")
    with pytest.raises(WeightsError, match="only safetensors"):
        TransparentVAEDecoder.from_single_file(pickle_path)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"garbage!" * 4)
    with pytest.raises(WeightsError, match="cannot read"):
        TransparentVAEEncoder.from_single_file(broken)


def test_pretrained_round_trip_keeps_config(tmp_path: Path, random_encoder: TransparentVAEEncoder) -> None:
    random_encoder.register_to_config(offset_scale=300.0)
    random_encoder.save_pretrained(tmp_path / "encoder")
    random_encoder.register_to_config(offset_scale=1.0)
    loaded = TransparentVAEEncoder.from_pretrained(tmp_path / "encoder")
    assert loaded.config.offset_scale == 300.0
    torch.testing.assert_close(loaded.blocks[16].weight, random_encoder.blocks[16].weight)


# --- decoder forward and test-time augmentation -----------------------------------------------------


def test_decoder_refuses_sizes_that_are_not_multiples_of_64(tiny_decoder: TransparentVAEDecoder) -> None:
    with pytest.raises(ValueError, match="multiples of 64, got 96×64"):
        tiny_decoder(torch.rand(1, 3, 96, 64), torch.randn(1, 4, 12, 8))
    with pytest.raises(ValueError, match="must be 8×8"):
        tiny_decoder(torch.rand(1, 3, 64, 64), torch.randn(1, 4, 4, 4))


def test_lower_median_of_eight_is_the_lower_middle_value() -> None:
    values = torch.tensor([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4])
    stack = values.view(8, 1, 1, 1, 1).expand(8, 2, 3, 4, 5)
    assert torch.equal(lower_median(stack), torch.full((2, 3, 4, 5), 0.4))  # sorted[3], not (0.4 + 0.5) / 2
    random_stack = torch.rand(8, 2, 4, 6, 5)
    assert torch.equal(lower_median(random_stack), torch.median(random_stack, dim=0).values)


def test_augmented_estimate_takes_the_lower_median_of_the_eight_variants() -> None:
    values = iter([0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4])
    seen_shapes = []

    def constant_model(pixel: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        seen_shapes.append(tuple(pixel.shape[-2:]))
        return torch.full((pixel.shape[0], 4, *pixel.shape[-2:]), next(values))

    result = estimate_augmented(constant_model, torch.rand(1, 3, 64, 128), torch.randn(1, 4, 8, 16))
    assert torch.equal(result, torch.full((1, 4, 64, 128), 0.4))
    assert seen_shapes == [(64, 128), (128, 64)] * 4  # odd quarter turns swap the sides


def equivariant_model(pixel_b3hw: torch.Tensor, latent_b4hw: torch.Tensor) -> torch.Tensor:
    """A per-pixel stand-in (commutes with flips and rotations) whose output range exceeds [0, 1]."""
    latent_up = latent_b4hw.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    return 1.5 * torch.cat([pixel_b3hw.mean(1, keepdim=True), pixel_b3hw], dim=1) + 0.3 * latent_up - 0.2


def test_augmented_estimate_inverts_its_transforms() -> None:
    pixel, latent = torch.rand(2, 3, 64, 128), torch.randn(2, 4, 8, 16)
    single = estimate_single_pass(equivariant_model, pixel, latent)
    assert single.min() == 0 and single.max() == 1  # clipped
    torch.testing.assert_close(estimate_augmented(equivariant_model, pixel, latent), single)


def test_augmented_estimate_with_tiny_decoder(tiny_decoder: TransparentVAEDecoder) -> None:
    pixel, latent = torch.rand(1, 3, 64, 128), torch.randn(1, 4, 8, 16)
    with torch.no_grad():
        result = estimate_augmented(tiny_decoder, pixel, latent)
    assert result.shape == (1, 4, 64, 128)
    assert result.min() >= 0 and result.max() <= 1


def reference_per_image_tta(
    decoder: TransparentVAEDecoder, pixel: torch.Tensor, latent: torch.Tensor
) -> torch.Tensor:
    """LayerDiffuse's decode loop restated: per image, 8 calls (flip width, then k quarter turns), each
    undone and clipped; torch.median over the 8 (the lower middle value), clipped again."""
    results = []
    for index in range(pixel.shape[0]):
        p, lat = pixel[index : index + 1], latent[index : index + 1]
        outs = []
        for flip in (False, True):
            for k in range(4):
                a, b = (p.flip(3), lat.flip(3)) if flip else (p, lat)
                y = torch.rot90(
                    decoder(torch.rot90(a, k, (2, 3)), torch.rot90(b, k, (2, 3))).clip(0, 1), -k, (2, 3)
                )
                outs.append(y.flip(3) if flip else y)
        results.append(torch.median(torch.stack(outs), dim=0).values.clip(0, 1))
    return torch.cat(results)


@pytest.mark.parametrize("max_pixels", [64 * 128, 8 * 64 * 128, 10**9])
def test_batched_tta_equals_the_per_image_reference(
    tiny_decoder: TransparentVAEDecoder, max_pixels: int
) -> None:
    generator = torch.Generator().manual_seed(7)
    pixel, latent = (
        torch.rand(3, 3, 64, 128, generator=generator),
        torch.randn(3, 4, 8, 16, generator=generator),
    )
    rows: list[int] = []

    def counting(p: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        rows.append(p.shape[0])
        assert len({tuple(p.shape[-2:])}) == 1
        return tiny_decoder(p, lat)

    with torch.no_grad():
        expected = reference_per_image_tta(tiny_decoder, pixel, latent)
        batched = estimate_batched(counting, pixel, latent, max_pixels=max_pixels)
        single = estimate_batched(tiny_decoder, pixel, latent, tta=False, max_pixels=max_pixels)
        single_expected = estimate_single_pass(tiny_decoder, pixel, latent)
    torch.testing.assert_close(batched, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(single, single_expected, atol=1e-5, rtol=0)
    assert sum(rows) == 24 and max(rows) <= max(1, max_pixels // (64 * 128))
    assert len(rows) == {64 * 128: 24, 8 * 64 * 128: 4, 10**9: 2}[max_pixels]  # two orientations


# --- padding and the gray-background encode ---------------------------------------------------------


def test_pad_rgb_keeps_opaque_colour_and_extrapolates_under_zero_alpha() -> None:
    rgb = torch.rand(2, 3, 30, 45)
    alpha = torch.zeros(2, 1, 30, 45)
    alpha[:, :, 10:20, 5:25] = 1.0
    padded = pad_rgb(rgb, alpha)
    torch.testing.assert_close(padded[:, :, 10:20, 5:25], rgb[:, :, 10:20, 5:25])

    colour = torch.tensor([0.2, 0.6, 0.9]).view(1, 3, 1, 1)
    flat = pad_rgb(
        colour.expand(1, 3, 30, 45) * alpha[:1] + (1 - alpha[:1]) * torch.rand(1, 3, 30, 45), alpha[:1]
    )
    torch.testing.assert_close(flat, colour.expand(1, 3, 30, 45))  # a single colour fills everything


def layerdiffuse_pad_rgb_cv2(rgba_hwc_01: np.ndarray) -> np.ndarray:
    """LayerDiffuse's `build_alpha_pyramid` + `pad_rgb` (lib_layerdiffusion/utils.py), restated with OpenCV:
    INTER_AREA down by 1.2 per level (sizes truncated) until a side is 1, INTER_LINEAR back up."""
    cv2 = pytest.importorskip("cv2")
    color, alpha = rgba_hwc_01[..., :3], rgba_hwc_01[..., 3:]
    pyramid = []
    level_color, level_alpha = color * alpha, alpha
    while True:
        pyramid.append((level_color, level_alpha))
        height, width = level_alpha.shape[:2]
        if min(height, width) == 1:
            break
        size = (int(width / 1.2), int(height / 1.2))  # OpenCV sizes are (width, height)
        level_color = cv2.resize(level_color, size, interpolation=cv2.INTER_AREA)
        level_alpha = cv2.resize(level_alpha, size, interpolation=cv2.INTER_AREA)[:, :, None]
    top_color, top_alpha = pyramid[-1]
    fill = top_color.sum(axis=(0, 1), keepdims=True) / top_alpha.sum(axis=(0, 1), keepdims=True).clip(1e-8)
    for level_color, level_alpha in reversed(pyramid):
        height, width = level_color.shape[:2]
        fill = cv2.resize(fill, (width, height), interpolation=cv2.INTER_LINEAR)
        fill = level_color + fill * (1.0 - level_alpha)
    return fill


@pytest.mark.parametrize(("height", "width"), [(64, 64), (100, 83), (37, 130)])
def test_pad_rgb_equals_layerdiffuse_with_opencv_inter_area(height: int, width: int) -> None:
    generator = np.random.default_rng(height * 1000 + width)
    rgba = generator.random((height, width, 4), dtype=np.float32)
    rgba[..., 3] = np.where(generator.random((height, width)) < 0.4, 0.0, rgba[..., 3])  # holes to fill
    rgba[height // 3 :, : width // 2, 3] = 0.0  # and a large transparent region
    expected = layerdiffuse_pad_rgb_cv2(rgba)
    rgba_b4hw = torch.from_numpy(rgba).permute(2, 0, 1)[None]
    padded = pad_rgb(rgba_b4hw[:, :3], rgba_b4hw[:, 3:])[0].permute(1, 2, 0).numpy()
    assert np.abs(padded - expected).max() < 1e-5
    # torch's own "area" mode is not OpenCV's at these fractional ratios: the test can tell them apart.
    level = torch.from_numpy(rgba[..., :1]).permute(2, 0, 1)[None]
    size = (int(height / 1.2), int(width / 1.2))
    cv2 = pytest.importorskip("cv2")
    reference = cv2.resize(rgba[..., 0], size[::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(area_downsample(level, size)[0, 0].numpy() - reference).max() < 1e-6
    assert np.abs(F.interpolate(level, size=size, mode="area")[0, 0].numpy() - reference).max() > 1e-3


def test_encode_uses_the_gray_composite_and_alpha_first_encoder_input(
    tiny_vae: AutoencoderKL, random_encoder: TransparentVAEEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    rgba = random_rgba(64, 64)
    seen = {}
    vae_encode, encoder_forward = tiny_vae.encode, random_encoder.forward
    monkeypatch.setattr(tiny_vae, "encode", lambda x: seen.setdefault("vae", x) is not None and vae_encode(x))
    monkeypatch.setattr(
        random_encoder, "forward", lambda x: seen.setdefault("enc", x) is not None and encoder_forward(x)
    )
    encode_adjusted_latent(tiny_vae, random_encoder, rgba)

    rgb, alpha = rgba[:, :3], rgba[:, 3:]
    torch.testing.assert_close(seen["vae"], (rgb * 2 - 1) * alpha)  # over 50 % gray, in [-1, 1]
    assert not seen["vae"][:, :, : 64 // 3].any()  # transparent → exactly mid-gray
    torch.testing.assert_close(seen["enc"][:, :1], alpha)
    torch.testing.assert_close(seen["enc"][:, 1:], pad_rgb(rgb, alpha))


def test_encode_is_posterior_mean_plus_scaled_offset(
    tiny_vae: AutoencoderKL, random_encoder: TransparentVAEEncoder
) -> None:
    rgba = random_rgba(64, 64, batch=2)
    rgb, alpha = rgba[:, :3], rgba[:, 3:]
    with torch.no_grad():
        posterior = tiny_vae.encode((rgb * 2 - 1) * alpha).latent_dist
        offset = random_encoder(torch.cat([alpha, pad_rgb(rgb, alpha)], dim=1))
    assert offset.abs().max() > 0

    zero_encoder = TransparentVAEEncoder()
    torch.testing.assert_close(encode_adjusted_latent(tiny_vae, zero_encoder, rgba), posterior.mean)
    random_encoder.register_to_config(offset_scale=300.0)
    try:
        latent = encode_adjusted_latent(tiny_vae, random_encoder, rgba)
    finally:
        random_encoder.register_to_config(offset_scale=1.0)
    torch.testing.assert_close(latent, posterior.mean + posterior.std * offset * 300.0)


def test_encode_pads_odd_sizes_with_transparent_pixels(
    tiny_vae: AutoencoderKL, random_encoder: TransparentVAEEncoder
) -> None:
    rgba = random_rgba(37, 50)
    latent = encode_adjusted_latent(tiny_vae, random_encoder, rgba)
    assert latent.shape == (1, 4, 5, 7)
    padded = torch.zeros(1, 4, 40, 56)
    padded[:, :, :37, :50] = rgba
    torch.testing.assert_close(latent, encode_adjusted_latent(tiny_vae, random_encoder, padded))


# --- decode ----------------------------------------------------------------------------------------


class SpyDecoder(TransparentVAEDecoder):
    """Records its inputs and answers alpha 0.25 with foreground (0.1, 0.2, 0.3)."""

    calls: list[tuple[torch.Tensor, torch.Tensor]]

    def forward(self, pixel_b3hw_01: torch.Tensor, latent_raw_b4hw: torch.Tensor) -> torch.Tensor:
        self.calls.append((pixel_b3hw_01, latent_raw_b4hw))
        values = torch.tensor([0.25, 0.1, 0.2, 0.3]).view(1, 4, 1, 1)
        return values.expand(pixel_b3hw_01.shape[0], 4, *pixel_b3hw_01.shape[-2:])


def test_decode_feeds_gray_pixels_and_raw_latent_and_orders_rgba(tiny_vae: AutoencoderKL) -> None:
    spy = SpyDecoder(**TINY_DECODER)
    spy.calls = []
    latent = torch.randn(1, 4, 8, 8)
    rgba = decode_rgba(tiny_vae, spy, latent, tta=False)
    pixel, latent_seen = spy.calls[0]
    with torch.no_grad():
        expected_pixel = (tiny_vae.decode(latent).sample * 0.5 + 0.5).clamp(0, 1)
    torch.testing.assert_close(pixel, expected_pixel)
    assert torch.equal(latent_seen, latent)
    assert torch.equal(rgba[0, :, 0, 0], torch.tensor([0.1, 0.2, 0.3, 0.25]))  # R, G, B, A


def test_decode_pads_sizes_that_are_not_multiples_of_64_and_crops_back(tiny_vae: AutoencoderKL) -> None:
    spy = SpyDecoder(**TINY_DECODER)
    spy.calls = []
    latent = torch.randn(1, 4, 5, 7)
    rgba = decode_rgba(tiny_vae, spy, latent, tta=False)
    assert rgba.shape == (1, 4, 40, 56)
    pixel, latent_seen = spy.calls[0]
    assert pixel.shape == (1, 3, 64, 64) and latent_seen.shape == (1, 4, 8, 8)
    assert torch.equal(latent_seen[..., :5, :7], latent)


def test_decode_in_chunks_with_progress_and_tta(
    tiny_vae: AutoencoderKL, tiny_decoder: TransparentVAEDecoder
) -> None:
    latents = torch.randn(3, 4, 5, 7)
    reports: list[tuple[int, int]] = []
    chunked = decode_rgba(
        tiny_vae, tiny_decoder, latents, chunk_size=2, progress=lambda d, t: reports.append((d, t))
    )
    assert reports == [(2, 3), (3, 3)]
    assert chunked.shape == (3, 4, 40, 56) and chunked.dtype == torch.float32
    assert chunked.min() >= 0 and chunked.max() <= 1
    # the network is per sample; only the batch size of the conv kernels differs
    unchunked = decode_rgba(tiny_vae, tiny_decoder, latents, chunk_size=8)
    torch.testing.assert_close(chunked, unchunked, atol=2e-4, rtol=1e-3)
    assert not torch.equal(chunked, decode_rgba(tiny_vae, tiny_decoder, latents, tta=False))


def test_encoder_vae_decoder_round_trip_on_tiny_models(
    tiny_vae: AutoencoderKL, random_encoder: TransparentVAEEncoder, tiny_decoder: TransparentVAEDecoder
) -> None:
    rgba = random_rgba(64, 96, batch=2)
    latent = encode_adjusted_latent(tiny_vae, random_encoder, rgba)
    assert latent.shape == (2, 4, 8, 12)
    decoded = decode_rgba(tiny_vae, tiny_decoder, latent, tta=False)
    assert decoded.shape == rgba.shape and torch.isfinite(decoded).all()
    frames = rgba_to_uint8(decoded)
    assert frames.shape == (2, 64, 96, 4) and frames.dtype == torch.uint8


def test_rgba_to_uint8_rounds_to_nearest() -> None:
    rgba = torch.tensor([0.999, 0.5, 1 / 255 * 0.6, 1.2]).view(1, 4, 1, 1)
    assert rgba_to_uint8(rgba).tolist() == [[[[255, 128, 1, 255]]]]


def test_decode_chooses_its_chunk_by_pixel_count(
    tiny_vae: AutoencoderKL, tiny_decoder: TransparentVAEDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    vae_batches: list[int] = []
    vae_decode = tiny_vae.decode
    monkeypatch.setattr(tiny_vae, "decode", lambda z: vae_batches.append(z.shape[0]) or vae_decode(z))
    latents = torch.randn(5, 4, 5, 7)  # 40×56 px, padded to 64×64 for the decoder
    one_frame = decode_rgba(
        tiny_vae, tiny_decoder, latents, max_pixels=8 * 64 * 64
    )  # 8 variants of one frame
    assert vae_batches == [1] * 5
    vae_batches.clear()
    two_frames = decode_rgba(tiny_vae, tiny_decoder, latents, max_pixels=2 * 8 * 64 * 64)
    assert vae_batches == [2, 2, 1]
    torch.testing.assert_close(one_frame, two_frames, atol=2e-4, rtol=1e-3)
    vae_batches.clear()
    decode_rgba(tiny_vae, tiny_decoder, latents, tta=False, max_pixels=4 * 64 * 64)
    assert vae_batches == [4, 1]


def test_decoder_runs_high_resolution_blocks_in_parts_with_the_same_result(
    tiny_decoder: TransparentVAEDecoder,
) -> None:
    generator = torch.Generator().manual_seed(3)
    pixel, latent = (
        torch.rand(3, 3, 64, 128, generator=generator),
        torch.randn(3, 4, 8, 16, generator=generator),
    )
    batches: list[int] = []
    handle = tiny_decoder.down_blocks[0].register_forward_hook(lambda m, a, k: batches.append(k[0].shape[0]))
    try:
        with torch.no_grad():
            tiny_decoder.cpu_block_pixels = None
            whole = tiny_decoder(pixel, latent)
            tiny_decoder.cpu_block_pixels = 64 * 128  # one image per call at full resolution
            parts = tiny_decoder(pixel, latent)
    finally:
        handle.remove()
        del tiny_decoder.cpu_block_pixels  # back to the class default
    assert batches == [3, 1, 1, 1]
    torch.testing.assert_close(parts, whole, atol=1e-6, rtol=1e-6)
