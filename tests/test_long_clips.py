"""Long clips, base positions and seamless loops in stage two (issue 11), on the tiny preset (CPU, offline).

A recording fake UNet shows which frames every UNet call holds; the real tiny stack renders an 80-frame
clip (beyond the tiny adapter's 32 positions) whose still frame is byte-identical to stage one's image.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from _pipes import stage_two_pipeline
from layeranim.errors import UsageError
from layeranim.pipelines.context_windows import SeamMeter, context_schedule, resolve_base_position, seam_score
from layeranim.pipelines.layeranimate import LayerAnimatePipeline, build_motion_unet
from layeranim.pipelines.layerdiffuse import LayerDiffusePipeline
from layeranim.render.components import Components, ModelSpec, load_components, load_motion_adapter

SIZE = 64
LATENT = SIZE // 8
BASE_VALUE = -7.0  # the fake runs' base latent: every element this value, unlike any frame tag


@pytest.fixture(scope="module")
def components() -> Components:
    return load_components(ModelSpec.for_preset("tiny"), device=torch.device("cpu"), dtype=torch.float32)


@pytest.fixture(scope="module")
def stage_two(components: Components) -> LayerAnimatePipeline:
    c = components
    motion = build_motion_unet(
        c.unet, load_motion_adapter(ModelSpec.for_preset("tiny").motion_adapter), c.layerdiffuse_processors
    )
    generator = torch.Generator().manual_seed(0)
    for processor in motion.ifa_processors.values():  # a working IFA branch, which must see the base
        torch.nn.init.normal_(processor.to_out_ifa.weight, std=0.2, generator=generator)
    return stage_two_pipeline(c, motion.unet)


# ---------------------------------------------------------------------------------------------------
# A recording fake UNet: which frames does each call hold?


class RecordingUNet(torch.nn.Module):
    """Stands in for the motion UNet: records every `sample` and predicts zero noise."""

    def __init__(self, max_frames: int = 32) -> None:
        super().__init__()
        self.config = SimpleNamespace(in_channels=4, motion_max_seq_length=max_frames)
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.samples: list[torch.Tensor] = []

    @property
    def dtype(self) -> torch.dtype:
        return self.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.weight.device

    def forward(self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor) -> Any:
        assert encoder_hidden_states.shape[0] == sample.shape[0] * sample.shape[2]  # text rows per frame
        self.samples.append(sample.clone())
        return SimpleNamespace(sample=torch.zeros_like(sample))


def record_windows(components: Components, num_frames: int, **kw: Any) -> tuple[list[list[int | str]], Any]:
    """One denoising step through the fake; each call as a list of frame numbers, "base" for the still.

    Frame f starts as the constant f + 1 and DDIM does not rescale the UNet input, so a call's frames
    can be read off its sample.
    """
    c = components
    fake = RecordingUNet()
    pipe = LayerAnimatePipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=fake,  # type: ignore[arg-type]
        scheduler=DDIMScheduler.from_config(c.scheduler.config),
        transparent_decoder=c.transparent_decoder,
    )
    tags = torch.arange(1, num_frames + 1, dtype=torch.float32)
    latents = tags[None, None, :, None, None].expand(1, 4, num_frames, LATENT, LATENT).clone()
    base = torch.full((1, 4, LATENT, LATENT), BASE_VALUE)
    out = pipe(
        "lower newer",
        base_latent=base,
        latents=latents,
        num_frames=num_frames,
        num_inference_steps=1,
        output_type="latent",
        **kw,
    )
    calls = []
    for sample in fake.samples:
        assert sample.shape[0] == 2  # guidance: [uncond, cond] of one video
        assert torch.equal(sample[0], sample[1])
        frames: list[int | str] = []
        for f in range(sample.shape[2]):
            frame = sample[1, :, f]
            if torch.all(frame == BASE_VALUE):
                frames.append("base")
            else:
                value = frame.flatten()[0]
                assert torch.all(frame == value)
                frames.append(int(value) - 1)
        calls.append(frames)
    return calls, out


def test_every_window_call_holds_the_clean_base_and_windows_cover_every_frame(
    components: Components,
) -> None:
    calls, out = record_windows(components, 80)  # the default 16-frame windows
    assert out.middle_index == 39 and len(calls) > 80 // 16
    covered: set[int] = set()
    for frames in calls:
        assert frames.count("base") == 1  # the clean base latent, once, in every call
        if len(frames) == 16:  # a window that holds frame 39 has the base in its place
            window = [39 if f == "base" else f for f in frames]
        else:  # otherwise one extra anchor position, at the edge nearer to frame 39
            assert len(frames) == 17
            window = [f for f in frames if f != "base"]
            assert frames[0] == "base" if window[0] > 39 else frames[-1] == "base"
        assert window == list(range(window[0], window[0] + 16))  # 16 consecutive frames
        covered.update(window)
    assert covered == set(range(80))


def test_base_position_start_anchors_later_windows_at_their_start(components: Components) -> None:
    calls, out = record_windows(components, 40, base_position="start", context_length=8, context_overlap=2)
    assert out.middle_index == 0
    assert calls[0][0] == "base" and calls[0][1:] == list(range(1, 8))  # frame 0 is the base itself
    assert all(frames[0] == "base" for frames in calls[1:])  # inserted before the window


def test_seamless_windows_wrap_across_the_end(components: Components) -> None:
    calls, _ = record_windows(components, 40, seamless=True, context_length=8, context_overlap=2)
    windows = [[f for f in frames if f != "base"] for frames in calls]
    assert any(39 in w and 0 in w and w.index(0) == w.index(39) + 1 for w in windows)  # last → first
    assert set().union(*windows) | {resolve_base_position("middle", 40)} == set(range(40))
    short, _ = record_windows(components, 6, seamless=True)  # a clip within one window still wraps
    assert any(w[0] != 0 and 0 in w for w in ([f for f in c if f != "base"] for c in short))


def test_schedule_without_windows_is_one_call_with_the_base_in_place(components: Components) -> None:
    calls, _ = record_windows(components, 5)
    assert calls == [[0, 1, "base", 3, 4]]


# ---------------------------------------------------------------------------------------------------
# The real tiny stack


def test_clip_within_one_window_is_identical_with_windows_forced_on_and_off(
    stage_two: LayerAnimatePipeline,
) -> None:
    base = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(1))

    def run(**kw: Any) -> Any:
        return stage_two(
            "lower newer",
            base_latent=base,
            num_frames=6,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(3),
            tta=False,
            **kw,
        )

    off, forced = run(context_windows=False), run(context_windows=True)
    assert np.array_equal(off.frames, forced.frames) and torch.equal(off.latents, forced.latents)
    auto = run()
    assert np.array_equal(auto.frames, off.frames)


def test_an_80_frame_clip_renders_and_its_still_is_stage_one_byte_for_byte(
    components: Components, stage_two: LayerAnimatePipeline
) -> None:
    c = components
    stage_one = LayerDiffusePipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=c.unet,
        scheduler=c.scheduler,
        transparent_decoder=c.transparent_decoder,
    )
    still = stage_one(
        "lower newer", height=SIZE, width=SIZE, num_inference_steps=2, generator=torch.Generator()
    )
    out = stage_two(
        "lower newer",
        base_latent=still.latents,
        num_frames=80,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(4),
        decode_chunk_size=16,
    )
    assert out.frames.shape == (80, SIZE, SIZE, 4) and out.frames.dtype == np.uint8
    assert out.middle_index == 39
    assert np.array_equal(out.frames[39], still.images[0])
    assert not np.array_equal(out.frames[0], out.frames[79])


def test_base_position_start_puts_the_still_at_frame_zero(stage_two: LayerAnimatePipeline) -> None:
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[10:50, 20:44] = (250, 40, 90, 220)
    out = stage_two(
        "lower newer",
        image=rgba,
        num_frames=6,
        base_position="start",
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(5),
        tta=False,
    )
    assert out.middle_index == 0
    assert torch.equal(out.latents[:, :, 0], stage_two.encode_image(rgba))
    # the still's frame decodes as stage one decodes that latent: alone, through the same decoder
    alone = list(stage_two.iter_decode(out.latents[0], 0, tta=False, decode_chunk_size=1))
    assert np.array_equal(out.frames[0], alone[0][0])


def test_streamed_decoding_gives_the_frames_of_the_call(stage_two: LayerAnimatePipeline) -> None:
    base = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(6))
    kw = {
        "base_latent": base,
        "num_frames": 7,
        "num_inference_steps": 1,
        "tta": False,
        "decode_chunk_size": 3,
    }
    out = stage_two("lower newer", generator=torch.Generator().manual_seed(7), **kw)
    chunks = list(stage_two.iter_decode(out.latents[0], out.middle_index, tta=False, decode_chunk_size=3))
    assert max(len(chunk) for chunk in chunks) <= 4  # a chunk, plus the base frame where it falls
    assert np.array_equal(np.concatenate(chunks), out.frames)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"num_frames": 0}, "num_frames=0 must be at least 2"),
        ({"num_frames": 80, "base_position": 999}, r"base_position=999 is outside the clip's frames 0\.\.79"),
        ({"num_frames": 2, "seamless": True}, "seamless=True needs num_frames of at least 3"),
        ({"num_frames": 33, "context_windows": False}, "num_frames=33 is beyond the motion module's window"),
        ({"num_frames": 40, "context_length": 32}, r"context_length=32 is outside 2\.\.31"),
        ({"num_frames": 40, "context_weighting": "cosine"}, "context_weighting='cosine'"),
        ({"num_frames": 8, "base_position": "centre"}, "base_position='centre'"),
    ],
)
def test_bad_long_clip_arguments_are_usage_errors_naming_them(
    stage_two: LayerAnimatePipeline, kwargs: dict[str, Any], needle: str
) -> None:
    base = torch.zeros(1, 4, LATENT, LATENT)
    with pytest.raises(UsageError, match=needle):
        stage_two("x", base_latent=base, num_inference_steps=1, **kwargs)


# ---------------------------------------------------------------------------------------------------
# The seam score


def test_seam_score_of_a_perfect_loop_is_one_and_of_a_jump_cut_is_large() -> None:
    frames = 12
    # A bar that moves one period around a 12-pixel ring: frame 11 → frame 0 is one ordinary step.
    loop = np.zeros((frames, 4, frames, 4), np.uint8)
    for f in range(frames):
        loop[f, :, f] = (200, 100, 50, 255)
    assert seam_score(loop) == pytest.approx(1.0)
    # A ramp: every step +10 in one opaque channel; the seam jumps back by 11 steps.
    ramp = np.zeros((frames, 2, 2, 4), np.uint8)
    ramp[..., 3] = 255
    ramp[..., 0] = (np.arange(frames) * 10)[:, None, None]
    assert seam_score(ramp) == pytest.approx(frames - 1)
    meter = SeamMeter()  # the same score from frames that arrive in chunks
    for start in range(0, frames, 5):
        meter.update(ramp[start : start + 5])
    assert meter.value == seam_score(ramp)


def test_seam_score_ignores_colour_under_transparent_pixels() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(6, 3, 3, 4), dtype=np.uint8)
    frames[..., 3] = 0  # invisible throughout: nothing moves, no seam
    assert seam_score(frames) == 1.0
    with pytest.raises(UsageError, match="at least 2"):
        seam_score(frames[:1])


def test_schedule_covers_every_frame_for_many_lengths() -> None:
    for num_frames in (2, 5, 16, 17, 31, 80, 256):
        for seamless in (False, True):
            if seamless and num_frames < 3:
                continue
            schedule = context_schedule(num_frames, num_frames // 3, seamless=seamless)
            assert set().union(*map(set, schedule.windows)) == set(range(num_frames))
            for call, anchor in zip(schedule.calls, schedule.anchors, strict=True):
                assert call[anchor] == num_frames // 3 and len(call) <= 17


@pytest.mark.parametrize("base_position", ["start", "middle", "end"])
def test_inter_frame_attention_attends_to_the_base_frame_in_every_window(
    stage_two: LayerAnimatePipeline, base_position: str
) -> None:
    from layeranim.models.inter_frame_attention import inter_frame_attention_context

    base = torch.randn(1, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(8))
    context = inter_frame_attention_context(stage_two.unet)
    assert context is not None
    attended: list[bool] = []

    def check(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        # IFA's own pre-hook ran first and set the frame it attends to for this call
        sample = args[0] if args else kwargs["sample"]
        attended.append(bool(torch.equal(sample[:, :, context.middle], base.expand(2, -1, -1, -1))))

    handle = stage_two.unet.register_forward_pre_hook(check, with_kwargs=True)
    try:
        stage_two(
            "lower newer",
            base_latent=base,
            num_frames=40,
            base_position=base_position,
            context_length=8,
            num_inference_steps=1,
            generator=torch.Generator().manual_seed(9),
            output_type="latent",
        )
    finally:
        handle.remove()
    assert len(attended) >= 40 // 8 and all(attended)
    assert context.base_index is None  # restored after the call
