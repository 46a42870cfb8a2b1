"""The IFA training loop on the tiny preset, on CPU: objective, frozen weights, resume, export, skips."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch

from layeranim import video_io
from layeranim.errors import OutputExistsError, UsageError
from layeranim.models.inter_frame_attention import ifa_parameters, ifa_state_dict, middle_frame_index
from layeranim.training import loop
from layeranim.training.config import Config, apply_overrides, preset_config
from layeranim.training.data import encode_clip
from layeranim.training.loop import (
    TrainingModels,
    encode_captions,
    ifa_loss,
    list_checkpoints,
    load_training_models,
    train,
)
from layeranim.training.synth import make_synthetic_dataset

CPU = torch.device("cpu")
FRAMES = 4


@pytest.fixture(scope="module", autouse=True)
def _layeranim_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The tiny preset is built once, in a temporary LAYERANIM_HOME; torch runs on one thread.

    One thread: the tiny models gain nothing from two, and on a busy machine OpenMP's spinning barriers
    make two threads up to 100× slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAYERANIM_HOME", str(tmp_path_factory.mktemp("home")))
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 6-frame sprite clips, plus one corrupt and one alpha-less clip that must be skipped."""
    folder = tmp_path_factory.mktemp("data") / "clips"
    make_synthetic_dataset(folder, clips=2, frames=6, format="mkv", seed=3)
    (folder / "corrupt.webm").write_bytes(b"\x1a\x45\xdf\xa3 this is not a video")
    write_opaque_clip(folder / "opaque.mkv", frames=6)
    return folder


def write_opaque_clip(path: Path, frames: int) -> None:
    """An FFV1 clip stored as bgr0: readable, but it has no alpha channel."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "bgr0"
        for index in range(frames):
            rgb = np.full((64, 64, 3), 40 * index, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def tiny_config(data: Path, output: Path, *overrides: str) -> Config:
    base = [
        f'data.path="{data}"',
        f"data.frames={FRAMES}",
        f'train.output_dir="{output}"',
        "log.every=1",
        'log.report_to="none"',
        "checkpoint.every=0",
    ]
    return apply_overrides(preset_config("tiny"), [*base, *overrides])


def fresh_models() -> TrainingModels:
    return load_training_models(preset_config("tiny").model, device=CPU, dtype=torch.float32)


def frozen_state(models: TrainingModels) -> dict[str, torch.Tensor]:
    """A copy of every weight outside IFA (the UNet's IFA keys are left out)."""
    state = {}
    for name, module in models.frozen_modules().items():
        for key, tensor in module.state_dict().items():
            if name == "unet" and ("to_q_ifa" in key or "to_out_ifa" in key):
                continue
            state[f"{name}.{key}"] = tensor.detach().clone()
    return state


def steps_of(history: list[dict[str, Any]]) -> dict[int, float]:
    return {record["step"]: record["loss"] for record in history if record["event"] == "step"}


def test_middle_frame_contributes_no_loss() -> None:
    models = fresh_models()
    generator = torch.Generator().manual_seed(0)
    for param in ifa_parameters(models.ifa_processors):  # W_O' = 0 would leave W_Q' without gradient
        param.data.normal_(0.0, 0.05, generator=generator)
    latents = torch.randn(1, 4, FRAMES, 8, 8, generator=generator)
    text = encode_captions(models, ["a red circle moving up"], CPU)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.tensor([400])
    middle = middle_frame_index(FRAMES)

    def gradients(noise_bcfhw: torch.Tensor) -> list[torch.Tensor]:
        params = ifa_parameters(models.ifa_processors)
        for param in params:
            param.grad = None
        ifa_loss(models.unet, models.noise_scheduler, latents, text, noise_bcfhw, timesteps).backward()
        return [param.grad.clone() for param in params]

    reference = gradients(noise)
    assert any(bool(g.abs().sum() > 0) for g in reference)
    # The middle frame's input is clean, so its noise only changes its (unused) target: no gradient changes.
    perturbed = noise.clone()
    perturbed[:, :, middle] = torch.randn(perturbed[:, :, middle].shape, generator=generator)
    assert all(torch.equal(a, b) for a, b in zip(reference, gradients(perturbed), strict=True))
    # Any other frame's noise does change the gradient (the check above can fail).
    other = noise.clone()
    other[:, :, middle + 1] = torch.randn(other[:, :, middle + 1].shape, generator=generator)
    assert not all(torch.equal(a, b) for a, b in zip(reference, gradients(other), strict=True))


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    models = fresh_models()
    generator = torch.Generator().manual_seed(1)
    for param in ifa_parameters(models.ifa_processors):
        param.data.normal_(0.0, 0.05, generator=generator)
    latents = torch.randn(2, 4, FRAMES, 8, 8, generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    text = encode_captions(models, ["a", "b"], CPU)
    timesteps = torch.tensor([100, 700])

    def gradients() -> list[torch.Tensor]:
        params = ifa_parameters(models.ifa_processors)
        for param in params:
            param.grad = None
        ifa_loss(models.unet, models.noise_scheduler, latents, text, noise, timesteps).backward()
        return [param.grad.clone() for param in params]

    plain = gradients()
    models.unet.enable_gradient_checkpointing()
    checkpointed = gradients()
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(plain, checkpointed, strict=True))


def test_overfit_lowers_loss_touches_only_ifa_and_caches_latents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "one"
    made = make_synthetic_dataset(data, clips=1, frames=FRAMES, format="mkv", seed=5)
    config = tiny_config(
        data,
        tmp_path / "run",
        "train.max_steps=20",
        "optim.learning_rate=1e-2",
        "optim.warmup_steps=0",
        'optim.lr_schedule="constant"',
        "data.caption_dropout=0.0",
        "data.cache_latents=true",
    )
    models = fresh_models()
    before_frozen = frozen_state(models)
    before_ifa = {k: v.clone() for k, v in ifa_state_dict(models.ifa_processors).items()}

    # A fixed clip, noise and timestep to measure the loss on.
    rgba = torch.from_numpy(video_io.read_video(made.clips[0]).rgba_fhwc_uint8)
    latents = encode_clip(models.vae, models.transparent_encoder, rgba)[None]
    text = encode_captions(models, made.captions, CPU)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(11))
    timesteps = torch.tensor([300])

    def fixed_loss() -> float:
        with torch.no_grad():
            return ifa_loss(models.unet, models.noise_scheduler, latents, text, noise, timesteps).item()

    encodes: list[int] = []
    real_encode = loop.encode_clip
    monkeypatch.setattr(loop, "encode_clip", lambda *a, **k: encodes.append(1) or real_encode(*a, **k))
    loss_before = fixed_loss()
    result = train(config, models=models)
    loss_after = fixed_loss()

    assert result.step == 20
    assert loss_after < 0.95 * loss_before, (loss_before, loss_after)
    # Every parameter outside IFA is bit-identical; IFA did train; only IFA wants gradients.
    after_frozen = frozen_state(models)
    assert after_frozen.keys() == before_frozen.keys()
    assert all(torch.equal(before_frozen[k], after_frozen[k]) for k in before_frozen)
    after_ifa = ifa_state_dict(models.ifa_processors)
    assert any(not torch.equal(before_ifa[k], after_ifa[k]) for k in before_ifa)
    trainable = {id(p) for p in ifa_parameters(models.ifa_processors)}
    for module in models.frozen_modules().values():
        assert not module.training
        for param in module.parameters():
            assert param.requires_grad == (id(param) in trainable)
    # The one clip went through the VAE once; the other 19 steps read its cached latents.
    assert len(encodes) == 1
    assert len(list((tmp_path / "run" / "latent-cache").rglob("*.safetensors"))) == 1


def test_resume_gives_the_same_next_step_losses(dataset_dir: Path, tmp_path: Path) -> None:
    common = (
        "train.max_steps=3",
        "train.gradient_accumulation_steps=2",
        "data.caption_dropout=0.5",
        "checkpoint.every=1",
        "checkpoint.keep=2",
    )
    # Uninterrupted.
    full = train(tiny_config(dataset_dir, tmp_path / "full", *common), models=fresh_models())
    full_losses = steps_of(full.history)
    assert sorted(full_losses) == [1, 2, 3]

    # Killed during step 2's logging: its checkpoint was never written, step 1's was.
    def kill_at_step_2(record: dict[str, Any]) -> None:
        if record["event"] == "step" and record["step"] == 2:
            raise KeyboardInterrupt

    interrupted = tiny_config(dataset_dir, tmp_path / "cut", *common)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, models=fresh_models(), on_log=kill_at_step_2)
    checkpoints = list_checkpoints(tmp_path / "cut")
    assert [path.name for path in checkpoints] == ["step-000001"]
    assert not [p for p in (tmp_path / "cut" / "checkpoints").iterdir() if p.name.startswith(".")]

    # A new run over it is refused; --resume latest continues exactly.
    with pytest.raises(OutputExistsError):
        train(interrupted, models=fresh_models())
    resumed = train(apply_overrides(interrupted, ['checkpoint.resume="latest"']), models=fresh_models())
    assert resumed.resumed_from == checkpoints[0]
    resumed_losses = steps_of(resumed.history)
    assert sorted(resumed_losses) == [2, 3]
    assert resumed_losses[2] == full_losses[2]
    assert resumed_losses[3] == full_losses[3]
    assert [path.name for path in list_checkpoints(tmp_path / "cut")] == ["step-000002", "step-000003"]
    # The checkpoint carries everything a resume needs, the config included.
    state = json.loads((checkpoints[0].parent / "step-000003" / "state.json").read_text())
    assert state["step"] == 3 and state["samples_seen"] == 6
    assert state["config"]["data"]["frames"] == FRAMES

    # Skipped clips are counted with their reasons, across the resume too.
    reasons = resumed.skipped.reasons
    assert resumed.clips == 2 and len(resumed.skipped) == 2
    assert "unreadable" in reasons[str(dataset_dir / "corrupt.webm")]
    assert "no alpha" in reasons[str(dataset_dir / "opaque.mkv")]


def test_exported_weights_load_in_animate(dataset_dir: Path, tmp_path: Path) -> None:
    from layeranim.render.components import ModelSpec
    from layeranim.render.session import RenderSession

    models = fresh_models()
    result = train(
        tiny_config(dataset_dir, tmp_path / "run", "train.max_steps=2", "optim.warmup_steps=0"), models=models
    )
    trained = ifa_state_dict(models.ifa_processors)
    assert any(bool(t.abs().sum() > 0) for k, t in trained.items() if "to_out_ifa" in k)

    session = RenderSession(ModelSpec.for_preset("tiny"), CPU, torch.float32, ifa_weights=result.weights)
    assert session.motion.ifa_metadata is not None
    assert session.motion.ifa_metadata["frames"] == str(FRAMES)
    loaded = ifa_state_dict(session.motion.ifa_processors)
    assert loaded.keys() == trained.keys()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    image = video_io.read_video(sorted(dataset_dir.glob("clip_*.mkv"))[0], stop=1).rgba_fhwc_uint8[0]
    video = session.video("a sprite", seed=0, frames=FRAMES, steps=2, guidance=1.0, image=image, tta=False)
    assert video.frames_fhwc_uint8.shape == (FRAMES, 64, 64, 4)


def test_bad_settings_fail_before_training(dataset_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"data\.frames"):
        train(tiny_config(dataset_dir, tmp_path / "a", "data.frames=40"), models=fresh_models())
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.webm").write_bytes(b"nope")
    with pytest.raises(UsageError, match=r"no usable RGBA clip: .*broken\.webm: unreadable"):
        train(tiny_config(empty, tmp_path / "c"), models=fresh_models())
    with pytest.raises(UsageError, match="validation"):
        train(tiny_config(dataset_dir, tmp_path / "d", "validation.every=1", 'validation.format="mp4"'))
    with pytest.raises(UsageError, match="resume="):
        train(tiny_config(dataset_dir, tmp_path / "b", f'checkpoint.resume="{tmp_path}"'))
