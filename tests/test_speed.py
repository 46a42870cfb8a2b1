"""Few-step speed presets (layeranim.speed) on a real LayerAnimatePipeline built from the tiny preset."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from diffusers import EulerDiscreteScheduler, LCMScheduler, MotionAdapter, UNet2DConditionModel
from safetensors.torch import load_file, save_file

from layeranim import weights
from layeranim.errors import StateDictMismatchError, UsageError
from layeranim.models.inter_frame_attention import save_ifa_weights
from layeranim.render.components import ModelSpec
from layeranim.render.session import RenderSession
from layeranim.speed import (
    SPEED_PRESETS,
    apply_speed_lora,
    apply_speed_scheduler,
    check_ifa_weights,
    get_speed_preset,
    load_motion_weights,
)

PUBLISHED = {  # name: (scheduler class, steps, guidance, motion file or repo, extra overrides)
    "lcm": (LCMScheduler, 6, 2.0, "wangfuyun/AnimateLCM", {}),
    "lightning-2": (EulerDiscreteScheduler, 2, 1.0, "animatediff_lightning_2step_diffusers.safetensors", {}),
    "lightning-4": (EulerDiscreteScheduler, 4, 1.0, "animatediff_lightning_4step_diffusers.safetensors", {}),
    "lightning-8": (EulerDiscreteScheduler, 8, 1.0, "animatediff_lightning_8step_diffusers.safetensors", {}),
}


@pytest.fixture(scope="module")
def tiny() -> ModelSpec:
    return ModelSpec.for_preset("tiny")


@pytest.fixture(scope="module")
def session(tiny: ModelSpec) -> RenderSession:
    return RenderSession(tiny, torch.device("cpu"), torch.float32, will_animate=True)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_preset_sets_the_pipeline_scheduler_steps_and_guidance(session: RenderSession, name: str) -> None:
    scheduler_class, steps, guidance, motion, _ = PUBLISHED[name]
    preset = get_speed_preset(name)
    assert (preset.steps, preset.guidance) == (steps, guidance)
    assert motion in preset.motion_adapter.ref  # type: ignore[union-attr]
    assert preset.motion_adapter in weights.SPEED_SOURCES.values()  # through the weights table

    pipe = apply_speed_scheduler(session.stage_two(), preset)
    assert type(pipe.scheduler) is scheduler_class
    assert pipe.scheduler.config.beta_schedule == "linear"
    pipe.scheduler.set_timesteps(preset.steps)
    assert len(pipe.scheduler.timesteps) == steps
    if scheduler_class is EulerDiscreteScheduler:
        assert pipe.scheduler.config.timestep_spacing == "trailing"
        assert int(pipe.scheduler.timesteps[0]) == 999  # trailing: the first step starts at pure noise

    rows: list[int] = []
    hook = pipe.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    try:
        out = pipe(
            "lower",
            base_latent=torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)),
            num_frames=2,
            num_inference_steps=preset.steps,
            guidance_scale=preset.guidance,
            generator=torch.Generator().manual_seed(1),
            tta=False,
        )
    finally:
        hook.remove()
    assert out.frames.shape == (2, 64, 64, 4)
    assert rows == [2 if guidance > 1.0 else 1] * steps  # guidance 1: one UNet pass per step, no CFG batch


def test_describe_names_everything(tiny: ModelSpec) -> None:
    text = get_speed_preset("lcm").describe()
    for part in (
        "wangfuyun/AnimateLCM",
        "AnimateLCM_sd15_t2v_lora.safetensors",
        "0.8",
        "LCMScheduler",
        "beta_schedule='linear'",
        "steps: 6",
        "guidance: 2",
    ):
        assert part in text
    text = get_speed_preset("Lightning-4").describe()
    assert "timestep_spacing='trailing'" in text and "steps: 4, guidance: 1" in text
    with pytest.raises(UsageError, match=r"lightning-3.*lcm, lightning-2"):
        get_speed_preset("lightning-3")


def test_diffusers_keyed_motion_file_loads(tiny: ModelSpec, tmp_path: Path) -> None:
    """Lightning ships a bare MotionAdapter state dict (diffusers keys, no config.json)."""
    reference = MotionAdapter.from_pretrained(Path(tiny.motion_adapter))  # type: ignore[arg-type]
    file = tmp_path / "tiny_lightning_4step_diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(file))
    loaded = load_motion_weights(file, config=dict(reference.config))
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(StateDictMismatchError, match=r"do not fit MotionAdapter\("):
        load_motion_weights(file, config={**reference.config, "block_out_channels": (32, 32)})


def test_lcm_lora_goes_into_the_motion_unet(session: RenderSession, tiny: ModelSpec, tmp_path: Path) -> None:
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    source = UNet2DConditionModel.from_pretrained(Path(tiny.base), subfolder="unet")  # type: ignore[arg-type]
    torch.manual_seed(0)
    inject_adapter_in_model(
        LoraConfig(r=2, lora_alpha=2, init_lora_weights=False, target_modules=["to_v"]), source
    )
    StableDiffusionLoraLoaderMixin.save_lora_weights(
        tmp_path, unet_lora_layers=get_peft_model_state_dict(source)
    )
    lora_file = tmp_path / "pytorch_lora_weights.safetensors"
    preset = dataclasses.replace(get_speed_preset("lcm"), lora=lora_file)

    adapter = MotionAdapter.from_pretrained(Path(tiny.motion_adapter))  # type: ignore[arg-type]
    fresh = RenderSession(tiny, torch.device("cpu"), torch.float32, will_animate=True)
    motion = fresh.motion.unet
    name = "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v"
    before = motion.get_submodule(name).weight.clone()
    loaded = apply_speed_lora(motion, preset)
    assert [item.scale for item in loaded] == [0.8]
    tensors = load_file(str(lora_file))
    delta = tensors[f"unet.{name}.lora_B.weight"] @ tensors[f"unet.{name}.lora_A.weight"]
    torch.testing.assert_close(motion.get_submodule(name).weight, before + 0.8 * delta)
    assert apply_speed_lora(motion, get_speed_preset("lightning-4")) == []
    del adapter


def test_ifa_weights_from_another_adapter_are_refused_unless_asked(
    session: RenderSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    processors = session.motion.ifa_processors

    def ifa_file(name: str, adapter: str) -> Path:
        path = tmp_path / name
        metadata = {"base_model": "tiny", "motion_adapter": adapter, "frames": "16"}
        save_ifa_weights(path, processors, metadata=metadata)
        return path

    standard = ifa_file("standard.safetensors", "guoyww/animatediff-motion-adapter-v1-5-2@0123abcd")
    lightning = ifa_file(
        "lightning.safetensors",
        "ByteDance/AnimateDiff-Lightning@89ab/animatediff_lightning_4step_diffusers.safetensors",
    )
    preset = get_speed_preset("lightning-4")
    with pytest.raises(
        UsageError, match=r"trained with motion adapter 'guoyww/animatediff-motion-adapter-v1-5-2"
    ):
        check_ifa_weights(preset, standard)
    check_ifa_weights(preset, standard, allow_ifa_mismatch=True)
    assert "mismatched IFA weights" in caplog.text
    check_ifa_weights(preset, lightning)  # trained with the preset's own adapter
    with pytest.raises(UsageError, match="lightning-8"):
        check_ifa_weights(get_speed_preset("lightning-8"), lightning)  # another step count, another module
    check_ifa_weights(preset, None)


def test_every_preset_is_in_the_table() -> None:
    assert set(SPEED_PRESETS) == set(PUBLISHED)
    assert weights.SPEED_SOURCES["animatelcm_lora"].filename == "AnimateLCM_sd15_t2v_lora.safetensors"
