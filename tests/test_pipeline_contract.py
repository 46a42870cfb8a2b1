"""The diffusers `__call__` contract of both pipelines on the tiny preset (CPU, offline).

output_type / return_dict, callback_on_step_end (every step, modified latents, early stop), batched stage
two (several prompts, generator lists, one clean base frame per video), and save_pretrained →
from_pretrained with the LayerDiffuse and IFA processors, bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import pytest
import torch

from _pipes import stage_one_pipeline, stage_two_pipeline
from layeranim.errors import UsageError
from layeranim.models.inter_frame_attention import InterFrameAttnProcessor, inter_frame_attention_processors
from layeranim.models.layerdiffuse_unet import LayerDiffuseAttnProcessor, layerdiffuse_processors
from layeranim.pipelines.layeranimate import (
    IFA_FILE,
    MOTION_NORM_FILE,
    LayerAnimatePipeline,
    build_motion_unet,
)
from layeranim.pipelines.layerdiffuse import (
    PROCESSORS_FILE,
    LayerDiffusePipeline,
    realign_loaded_weights_,
)
from layeranim.render.components import Components, ModelSpec, load_components, load_motion_adapter

SIZE = 64
LATENT = SIZE // 8
FRAMES = 5  # middle = 2
PROMPT = "lower newer"


@pytest.fixture(scope="module")
def components() -> Components:
    return load_components(ModelSpec.for_preset("tiny"), device=torch.device("cpu"), dtype=torch.float32)


def make_stage_one(c: Components) -> LayerDiffusePipeline:
    return stage_one_pipeline(c)


@pytest.fixture(scope="module")
def stage_one(components: Components) -> LayerDiffusePipeline:
    return make_stage_one(components)


@pytest.fixture(scope="module")
def stage_two(components: Components) -> LayerAnimatePipeline:
    """Stage two with trained-looking (non-zero) IFA weights, so the IFA branch really runs."""
    c = components
    adapter = load_motion_adapter(ModelSpec.for_preset("tiny").motion_adapter)
    motion = build_motion_unet(c.unet, adapter, c.layerdiffuse_processors)
    generator = torch.Generator().manual_seed(0)
    for processor in motion.ifa_processors.values():
        torch.nn.init.normal_(processor.to_out_ifa.weight, std=0.2, generator=generator)
    return stage_two_pipeline(c, motion.unet)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def base_latents(count: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 4, LATENT, LATENT, generator=seeded(seed))


def animate(pipe: LayerAnimatePipeline, **kw: Any) -> Any:
    kw.setdefault("base_latent", base_latents())
    kw.setdefault("generator", seeded(0))
    return pipe(PROMPT, num_frames=FRAMES, num_inference_steps=3, tta=False, **kw)


# ---------------------------------------------------------------------------------------------------
# output_type and return_dict


def test_stage_one_output_types_agree(stage_one: LayerDiffusePipeline) -> None:
    def run(output_type: str, return_dict: bool = True) -> Any:
        return stage_one(
            PROMPT,
            height=SIZE,
            width=SIZE,
            num_inference_steps=2,
            generator=seeded(4),
            tta=False,
            output_type=output_type,
            return_dict=return_dict,
        )

    np_out, pt_out, pil_out, latent_out = run("np"), run("pt"), run("pil"), run("latent")
    assert np_out.images.shape == (1, SIZE, SIZE, 4) and np_out.images.dtype == np.uint8
    assert pt_out.images.shape == (1, 4, SIZE, SIZE) and pt_out.images.dtype == torch.float32
    assert pt_out.images.min() >= 0 and pt_out.images.max() <= 1
    # "pt" is the unrounded decode: rounding it the way uint8 images are made gives "np" exactly
    rounded = (pt_out.images.permute(0, 2, 3, 1) * 255.0).round().to(torch.uint8).numpy()
    assert np.array_equal(rounded, np_out.images)
    assert len(pil_out.images) == 1 and isinstance(pil_out.images[0], PIL.Image.Image)
    assert pil_out.images[0].mode == "RGBA" and np.array_equal(
        np.asarray(pil_out.images[0]), np_out.images[0]
    )
    assert torch.equal(latent_out.images, np_out.latents) and torch.equal(latent_out.latents, np_out.latents)
    images, latents = run("np", return_dict=False)
    assert np.array_equal(images, np_out.images) and torch.equal(latents, np_out.latents)


def test_stage_two_output_types_agree(stage_two: LayerAnimatePipeline) -> None:
    np_out = animate(stage_two, output_type="np")
    pt_out = animate(stage_two, output_type="pt")
    pil_out = animate(stage_two, output_type="pil")
    latent_out = animate(stage_two, output_type="latent")
    assert np_out.frames.shape == (FRAMES, SIZE, SIZE, 4) and np_out.frames.dtype == np.uint8
    assert pt_out.frames.shape == (FRAMES, 4, SIZE, SIZE) and pt_out.frames.dtype == torch.float32
    rounded = (pt_out.frames.permute(0, 2, 3, 1) * 255.0).round().to(torch.uint8).numpy()
    assert np.array_equal(rounded, np_out.frames)
    assert [image.mode for image in pil_out.frames] == ["RGBA"] * FRAMES
    assert np.array_equal(np.stack([np.asarray(image) for image in pil_out.frames]), np_out.frames)
    assert torch.equal(latent_out.frames, np_out.latents)
    frames, latents, middle = animate(stage_two, return_dict=False)
    assert np.array_equal(frames, np_out.frames) and torch.equal(latents, np_out.latents)
    assert middle == np_out.middle_index == (FRAMES - 1) // 2


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"output_type": "gif"}, "output_type='gif'"),
        ({"callback_on_step_end_tensor_inputs": ["noise"]}, "callback_on_step_end_tensor_inputs"),
        ({"generator": [torch.Generator()] * 3}, "generator is a list of 3"),
        ({"num_videos_per_prompt": 0}, "num_videos_per_prompt=0"),
        ({"decode_chunk_size": 0}, "decode_chunk_size=0"),
        ({"base_latent": base_latents(3)}, "base_latent has 3 entries for 1 prompts"),
        ({"clip_skip": 9}, "clip_skip=9"),
    ],
)
def test_stage_two_refuses_bad_arguments_by_their_python_names(
    stage_two: LayerAnimatePipeline, kwargs: dict[str, Any], needle: str
) -> None:
    with pytest.raises(UsageError, match=needle.replace("[", r"\[")):
        animate(stage_two, **kwargs)


# ---------------------------------------------------------------------------------------------------
# callback_on_step_end


def test_stage_one_callback_sees_every_step_and_its_returned_latents_are_used(
    stage_one: LayerDiffusePipeline,
) -> None:
    seen: list[tuple[int, float]] = []

    def halve(pipe: Any, step: int, timestep: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        assert pipe is stage_one and set(tensors) == {"latents", "prompt_embeds"}
        seen.append((step, float(timestep)))
        return {"latents": tensors["latents"] * 0.5}

    kw = {"height": SIZE, "width": SIZE, "num_inference_steps": 3, "tta": False, "output_type": "latent"}
    plain = stage_one(PROMPT, generator=seeded(2), **kw)
    halved = stage_one(
        PROMPT,
        generator=seeded(2),
        callback_on_step_end=halve,
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
        **kw,
    )
    assert [step for step, _ in seen] == [0, 1, 2]
    assert [t for _, t in seen] == stage_one.scheduler.timesteps.tolist()
    assert not torch.equal(plain.latents, halved.latents)


def test_stage_two_callback_can_stop_the_run_early(stage_two: LayerAnimatePipeline) -> None:
    steps: list[int] = []
    unet_calls: list[int] = []
    progress: list[tuple[str, int, int]] = []

    def stop_after_two(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        steps.append(step)
        if step == 1:
            pipe._interrupt = True
        return {}

    handle = stage_two.unet.register_forward_pre_hook(lambda *_: unet_calls.append(1))
    try:
        out = animate(stage_two, callback_on_step_end=stop_after_two, progress=lambda *a: progress.append(a))
    finally:
        handle.remove()
    assert steps == [0, 1] and len(unet_calls) == 2 and stage_two.interrupt
    assert [p for p in progress if p[0] == "denoise"] == [("denoise", 1, 3), ("denoise", 2, 3)]
    assert out.frames.shape == (FRAMES, SIZE, SIZE, 4)  # what was denoised so far is still decoded
    # the next call starts afresh: all three steps run
    progress.clear()
    animate(stage_two, output_type="latent", progress=lambda *a: progress.append(a))
    assert not stage_two.interrupt and progress[-1] == ("denoise", 3, 3)


def test_stage_two_callback_latents_are_honoured_and_the_base_frame_is_put_back(
    stage_two: LayerAnimatePipeline,
) -> None:
    """What a region-confined animation does: overwrite latents outside a mask every step."""
    base = base_latents(seed=7)
    frozen = torch.randn(1, 4, FRAMES, LATENT, LATENT, generator=seeded(8))
    mask = torch.zeros(LATENT, LATENT, dtype=torch.bool)
    mask[:, : LATENT // 2] = True  # the left half may move; the right half is held
    seen_bases: list[torch.Tensor] = []

    def confine(pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        latents = tensors["latents"]
        seen_bases.append(latents[:, :, 2].clone())
        return {"latents": torch.where(mask, latents, frozen)}  # overwrites the base frame's right half too

    out = animate(stage_two, base_latent=base, callback_on_step_end=confine, output_type="latent")
    assert all(torch.equal(b, base) for b in seen_bases)  # the callback sees the clean base each step
    held = [f for f in range(FRAMES) if f != out.middle_index]
    assert torch.equal(out.latents[:, :, held][..., ~mask], frozen[:, :, held][..., ~mask])
    assert torch.equal(out.latents[:, :, out.middle_index], base)  # re-imposed after the callback


# ---------------------------------------------------------------------------------------------------
# Batched stage two


def test_two_prompt_stage_two_call_equals_two_single_calls(stage_two: LayerAnimatePipeline) -> None:
    bases = base_latents(2, seed=3)
    kw = {"num_frames": FRAMES, "num_inference_steps": 2, "tta": False}
    both = stage_two(
        [PROMPT, "wider"], ["low", ""], base_latent=bases, generator=[seeded(1), seeded(2)], **kw
    )
    first = stage_two(PROMPT, "low", base_latent=bases[:1], generator=seeded(1), **kw)
    second = stage_two("wider", "", base_latent=bases[1:], generator=seeded(2), **kw)
    assert both.frames.shape == (2, FRAMES, SIZE, SIZE, 4) and both.latents.shape[0] == 2
    assert np.array_equal(both.frames[0], first.frames) and np.array_equal(both.frames[1], second.frames)
    assert torch.equal(both.latents[:1], first.latents) and torch.equal(both.latents[1:], second.latents)
    m = both.middle_index
    assert torch.equal(both.latents[:, :, m], bases)  # each video keeps its own clean middle frame


def test_num_videos_per_prompt_with_images_gives_each_video_its_still(
    stage_two: LayerAnimatePipeline,
) -> None:
    stills = []
    for colour in ((255, 128, 0, 200), (0, 90, 255, 255)):
        rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
        rgba[16:48, 16:48] = colour
        stills.append(rgba)
    out = stage_two(
        [PROMPT, PROMPT],
        image=stills,
        num_videos_per_prompt=2,
        num_frames=FRAMES,
        num_inference_steps=1,
        generator=[seeded(s) for s in range(4)],
        tta=False,
        output_type="latent",
    )
    assert out.latents.shape == (4, 4, FRAMES, LATENT, LATENT)
    m = out.middle_index
    encoded = [stage_two.encode_image(rgba) for rgba in stills]
    for video, still in zip(range(4), (0, 0, 1, 1), strict=True):  # prompt-major
        assert torch.equal(out.latents[video : video + 1, :, m], encoded[still])
    assert not torch.equal(out.latents[0], out.latents[1])  # its own noise per generator


# ---------------------------------------------------------------------------------------------------
# save_pretrained → from_pretrained


def test_stage_one_save_load_round_trip_is_bit_identical(tmp_path: Path, components: Components) -> None:
    pipe = make_stage_one(components)
    realign_loaded_weights_(pipe)  # see layeranim.models.alignment: the same kernels on both sides
    pipe.save_pretrained(tmp_path / "stage-one")
    assert (tmp_path / "stage-one" / "unet" / PROCESSORS_FILE).is_file()
    loaded = LayerDiffusePipeline.from_pretrained(tmp_path / "stage-one")
    restored = layerdiffuse_processors(loaded.unet)
    assert restored.keys() == components.layerdiffuse_processors.keys()
    for name, processor in restored.items():
        original = components.layerdiffuse_processors[name].state_dict()
        assert all(torch.equal(t, original[k]) for k, t in processor.state_dict().items())
    kw = {"height": SIZE, "width": SIZE, "num_inference_steps": 2}
    expected = pipe(PROMPT, generator=seeded(5), **kw)
    got = loaded(PROMPT, generator=seeded(5), **kw)
    assert np.array_equal(got.images, expected.images) and torch.equal(got.latents, expected.latents)


def test_stage_two_save_load_round_trip_is_bit_identical(
    tmp_path: Path, stage_two: LayerAnimatePipeline
) -> None:
    realign_loaded_weights_(stage_two)
    stage_two.save_pretrained(tmp_path / "stage-two", ifa_metadata={"frames": str(FRAMES)})
    unet_dir = tmp_path / "stage-two" / "unet"
    assert (unet_dir / PROCESSORS_FILE).is_file() and (unet_dir / IFA_FILE).is_file()
    # the UNet folder itself is a plain diffusers UNetMotionModel (no processor weights in it)
    from safetensors import safe_open

    with safe_open(str(unet_dir / "diffusion_pytorch_model.safetensors"), "pt") as weights:
        assert not [key for key in weights.keys() if ".processor." in key]  # noqa: SIM118
    # saving left the pipeline's own processors in place
    assert all(
        isinstance(p, InterFrameAttnProcessor)
        for p in inter_frame_attention_processors(stage_two.unet).values()
    )

    loaded = LayerAnimatePipeline.from_pretrained(tmp_path / "stage-two")
    ifa = inter_frame_attention_processors(loaded.unet)
    assert ifa.keys() == inter_frame_attention_processors(stage_two.unet).keys()
    assert all(isinstance(p.base, LayerDiffuseAttnProcessor) for p in ifa.values())  # IFA wraps LayerDiffuse
    assert layerdiffuse_processors(loaded.unet).keys() == layerdiffuse_processors(stage_two.unet).keys()
    with torch.no_grad():
        assert not any(p.branch_is_zero() for p in ifa.values())  # the trained IFA weights came back

    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[8:40, 20:60] = (30, 200, 90, 180)
    kw = {"image": rgba, "num_frames": FRAMES, "num_inference_steps": 2}
    expected = stage_two(PROMPT, generator=seeded(6), **kw)
    got = loaded(PROMPT, generator=seeded(6), **kw)
    assert np.array_equal(got.frames, expected.frames) and torch.equal(got.latents, expected.latents)


# ---------------------------------------------------------------------------------------------------
# Prompt encoding through diffusers' encode_prompt: clip skip and textual inversion


def unet_text_conditioning(pipe: LayerDiffusePipeline, prompt: str, **kw: Any) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    handle = pipe.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["encoder_hidden_states"]), with_kwargs=True
    )
    try:
        pipe(
            prompt,
            height=SIZE,
            width=SIZE,
            num_inference_steps=1,
            guidance_scale=1.0,
            output_type="latent",
            **kw,
        )
    finally:
        handle.remove()
    return seen[0]


def test_clip_skip_conditions_on_an_earlier_clip_layer(stage_one: LayerDiffusePipeline) -> None:
    encoder, tokenizer = stage_one.text_encoder, stage_one.tokenizer
    ids = tokenizer(
        PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        hidden = encoder(ids, output_hidden_states=True).hidden_states
        final_norm = getattr(encoder, "text_model", encoder).final_layer_norm  # transformers 5: flattened
        last = final_norm(hidden[-1])
        skipped = final_norm(hidden[-2])  # clip_skip=1: the penultimate layer
    torch.testing.assert_close(unet_text_conditioning(stage_one, PROMPT), last, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        unet_text_conditioning(stage_one, PROMPT, clip_skip=1), skipped, rtol=0, atol=1e-6
    )
    assert not torch.allclose(last, skipped)
    with pytest.raises(UsageError, match=r"clip_skip=2 is outside 0\.\.1"):  # the tiny CLIP has 2 layers
        unet_text_conditioning(stage_one, PROMPT, clip_skip=2)


def test_textual_inversion_tokens_expand_and_condition_the_unet() -> None:
    c = load_components(ModelSpec.for_preset("tiny"), device=torch.device("cpu"), dtype=torch.float32)
    pipe = make_stage_one(c)  # a private copy: loading an embedding grows the tokenizer and the encoder
    width = c.text_encoder.get_input_embeddings().weight.shape[1]
    vectors = torch.randn(2, width, generator=seeded(9))  # a two-vector embedding
    pipe.load_textual_inversion({"<spark>": vectors}, token="<spark>")
    spark, spark_1 = pipe.tokenizer.convert_tokens_to_ids(["<spark>", "<spark>_1"])
    seen: list[torch.Tensor] = []
    handle = pipe.text_encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        with_token = unet_text_conditioning(pipe, "<spark> lower")
    finally:
        handle.remove()
    ids = seen[0][0].tolist()
    assert ids[1:3] == [spark, spark_1]  # the multi-vector token expanded, as diffusers does
    embeddings = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(embeddings[spark], vectors[0]) and torch.equal(embeddings[spark_1], vectors[1])
    assert not torch.allclose(with_token, unet_text_conditioning(pipe, "lower"))


def test_from_pretrained_fetches_the_processor_files_diffusers_skips_for_a_hub_id(
    tmp_path: Path, stage_two: LayerAnimatePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """diffusers' `download` brings a model folder's known weight files only: the processors' files are
    fetched into the same snapshot (stand-ins for the Hub here: the test runs offline)."""
    import shutil

    import huggingface_hub

    published = tmp_path / "published"
    stage_two.save_pretrained(published)
    snapshot = tmp_path / "snapshot"
    shutil.copytree(published, snapshot, ignore=shutil.ignore_patterns(PROCESSORS_FILE, IFA_FILE))
    requested: list[str] = []

    def download(repo_id: str, **kwargs: Any) -> str:
        assert repo_id == "someone/layer-animate" and kwargs == {"revision": "main"}
        return str(snapshot)

    def snapshot_download(repo_id: str, *, allow_patterns: list[str], **kwargs: Any) -> str:
        assert repo_id == "someone/layer-animate" and kwargs == {"revision": "main"}
        for pattern in allow_patterns:
            requested.append(pattern)
            shutil.copy(published / pattern, snapshot / pattern)
        return str(snapshot)

    monkeypatch.setattr(
        LayerAnimatePipeline, "download", classmethod(lambda cls, repo_id, **kw: download(repo_id, **kw))
    )
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    loaded = LayerAnimatePipeline.from_pretrained("someone/layer-animate", revision="main")
    assert sorted(requested) == sorted(
        [f"unet/{PROCESSORS_FILE}", f"unet/{IFA_FILE}", f"unet/{MOTION_NORM_FILE}"]
    )
    assert (
        inter_frame_attention_processors(loaded.unet).keys()
        == inter_frame_attention_processors(stage_two.unet).keys()
    )
