"""Stage one on a tiny SDXL-shaped stack (CPU, offline): pipeline, `load_components`, `layeranim image`.

Every part has the class of the real SDXL base (two CLIP text encoders, a `text_time` UNet with
`transformer_layers_per_block`, an 8× AutoencoderKL, Euler ancestral) and is saved in the real layouts
(a diffusers SDXL folder, `layer_xl_transparent_attn.safetensors`' LDM key names), so the code under test
is the code that runs on the real weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
from typer.testing import CliRunner

from layeranim.cli import app
from layeranim.errors import UsageError, WeightsError
from layeranim.models.layerdiffuse_unet import apply_layerdiffuse_sdxl, sdxl_attn_state_dict_shapes
from layeranim.models.transparent_vae import TransparentVAEDecoder, TransparentVAEEncoder
from layeranim.pipelines.layerdiffuse import LayerDiffusePipeline
from layeranim.render.components import Components, ModelSpec, load_components
from layeranim.render.inputs import load_latent

SIZE = 64  # pixels; the transparency decoder needs multiples of 64
LATENT = SIZE // 8
HIDDEN_1 = 16  # text_encoder (CLIP ViT-L in the real model: 768)
HIDDEN_2 = 32  # text_encoder_2 (OpenCLIP bigG: 1280)
POOLED = 24  # text_encoder_2's projection_dim (1280): deliberately unlike HIDDEN_2, so a mix-up fails
TIME_EMBED = 8  # addition_time_embed_dim (256)
RANK = 4  # the LayerDiffuse LoRA rank (256)
PROMPT = "lower newer"

# The 23-token BPE vocabulary of transformers' own CLIP tokenizer tests (internals §6).
TOY_VOCAB = [
    *("l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo"),
    *("l</w>", "w</w>", "r</w>", "t</w>", "low</w>", "er</w>", "lowest</w>", "newer</w>", "wider"),
    *("<unk>", "<|startoftext|>", "<|endoftext|>"),
]
TOY_MERGES = ("#version: 0.2", "l o", "lo w</w>", "e r</w>")
BOS, EOS = 21, 22  # EOS is also the padding token


def toy_tokenizer(scratch: Path) -> CLIPTokenizer:
    # transformers 5 silently builds a 2-token vocabulary from the old vocab_file=/merges_file= keywords;
    # from_pretrained on a folder works. model_max_length must be set (else ~1e30, and prompts pad to it).
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(TOY_VOCAB)}))
    (scratch / "merges.txt").write_text("\n".join(TOY_MERGES) + "\n")
    return CLIPTokenizer.from_pretrained(scratch, model_max_length=77)


def clip_config(hidden: int, projection: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=1000,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=3,  # SDXL reads the penultimate layer: it must differ from the last
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=projection,
        layer_norm_eps=1e-5,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )


@torch.no_grad()
def randomise_zero_layers_(model: torch.nn.Module, seed: int) -> None:
    """Zero-initialised layers (encoder output, decoder latent input) would skip their paths; wake them."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        if not parameter.any():
            parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))


def build_tiny_sdxl(root: Path) -> dict[str, Any]:
    """Tiny SDXL base parts (random weights, seeded) and the LayerDiffuse files, saved in the real layouts."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=LATENT,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 2, 4),
        cross_attention_dim=HIDDEN_1 + HIDDEN_2,
        norm_num_groups=32,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=6 * TIME_EMBED + POOLED,
    ).eval()
    torch.manual_seed(0)
    vae = AutoencoderKL(
        sample_size=SIZE,
        block_out_channels=(16, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        scaling_factor=0.13025,
        force_upcast=True,
    ).eval()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(clip_config(HIDDEN_1, HIDDEN_1)).eval()
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(clip_config(HIDDEN_2, POOLED)).eval()
    scheduler = EulerAncestralDiscreteScheduler(  # SDXL base's scheduler config
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )
    torch.manual_seed(0)
    transparent_encoder = TransparentVAEEncoder(block_out_channels=(8, 8, 16, 16)).eval()
    randomise_zero_layers_(transparent_encoder, seed=1)
    torch.manual_seed(0)
    transparent_decoder = TransparentVAEDecoder(block_out_channels=(8,) * 7, norm_num_groups=4).eval()
    randomise_zero_layers_(transparent_decoder, seed=2)
    parts: dict[str, Any] = {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": toy_tokenizer(root / "scratch" / "tokenizer"),
        "tokenizer_2": toy_tokenizer(root / "scratch" / "tokenizer_2"),
        "scheduler": scheduler,
    }

    # The diffusers SDXL folder layout (what save_pretrained of a StableDiffusionXLPipeline writes).
    base = root / "base"
    for name, part in parts.items():
        part.save_pretrained(base / name)
    library = {"tokenizer": "transformers", "tokenizer_2": "transformers"}
    index = {"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.42.1"}
    for name, part in parts.items():
        index[name] = [library.get(name, part.__module__.split(".")[0]), type(part).__name__]
    (base / "model_index.json").write_text(json.dumps(index, indent=2))

    # LayerDiffuse: `layer_xl_transparent_attn.safetensors`' key layout for this UNet, at a small rank.
    generator = torch.Generator().manual_seed(0)
    attn_state_dict = {
        key: (0.1 * torch.randn(shape, generator=generator)).half()
        for key, shape in sdxl_attn_state_dict_shapes(unet, rank=RANK).items()
    }
    attn_file = root / "layer_xl_transparent_attn.safetensors"
    save_file(attn_state_dict, str(attn_file))
    transparent_encoder.save_pretrained(root / "transparent_encoder")
    transparent_decoder.save_pretrained(root / "transparent_decoder")

    apply_layerdiffuse_sdxl(unet, attn_state_dict)  # the in-memory stack carries the weights too
    return {
        **parts,
        "transparent_encoder": transparent_encoder,
        "transparent_decoder": transparent_decoder,
        "base": base,
        "attn_file": attn_file,
    }


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


def make_pipeline(parts: dict[str, Any] | Components, **overrides: Any) -> LayerDiffusePipeline:
    get = parts.get if isinstance(parts, dict) else lambda name: getattr(parts, name)
    names = ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "transparent_decoder")
    names += ("transparent_encoder", "text_encoder_2", "tokenizer_2")
    kwargs = {name: get(name) for name in names}
    kwargs.update(overrides)
    return LayerDiffusePipeline(**kwargs)


@pytest.fixture(scope="module")
def pipe(tiny_sdxl: dict[str, Any]) -> LayerDiffusePipeline:
    return make_pipeline(tiny_sdxl)


def run(pipe: LayerDiffusePipeline, seed: int = 0, **kw: Any) -> Any:
    kw.setdefault("tta", False)
    return pipe(
        PROMPT,
        height=SIZE,
        width=SIZE,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )


@pytest.mark.parametrize(("guidance_scale", "tta"), [(7.0, True), (1.0, False)])
def test_sdxl_pipeline_gives_straight_rgba_and_latents(
    pipe: LayerDiffusePipeline, guidance_scale: float, tta: bool
) -> None:
    out = run(pipe, guidance_scale=guidance_scale, tta=tta)
    assert out.images.shape == (1, SIZE, SIZE, 4) and out.images.dtype == np.uint8
    assert out.latents.shape == (1, 4, LATENT, LATENT) and out.latents.dtype == torch.float32
    assert torch.isfinite(out.latents).all()
    alpha = out.images[..., 3:]
    assert alpha.std() > 0  # the transparency decoder produced a real alpha channel
    assert (out.images[..., :3] > alpha).any()  # colour above its alpha: straight, not premultiplied


def test_sdxl_same_seed_same_bytes_other_seed_differs(pipe: LayerDiffusePipeline) -> None:
    a, b, c = run(pipe, seed=7), run(pipe, seed=7), run(pipe, seed=8)
    assert np.array_equal(a.images, b.images) and torch.equal(a.latents, b.latents)
    assert not np.array_equal(a.images, c.images)


def capture_unet_calls(pipe: LayerDiffusePipeline, **kw: Any) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append({"args": args, **kwargs})

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run(pipe, **kw)
    finally:
        handle.remove()
    return calls


@torch.no_grad()
def sdxl_text(parts: dict[str, Any], text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference SDXL conditioning of one text: penultimate states of both encoders, pooled of encoder 2."""
    hidden = []
    for suffix in ("", "_2"):
        tokenizer, encoder = parts[f"tokenizer{suffix}"], parts[f"text_encoder{suffix}"]
        ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        out = encoder(ids.input_ids, output_hidden_states=True)
        assert not torch.equal(out.hidden_states[-2], out.last_hidden_state)  # really the penultimate
        hidden.append(out.hidden_states[-2])
    return torch.cat(hidden, dim=-1), out.text_embeds


@pytest.mark.parametrize("guidance_scale", [7.0, 1.0])
def test_sdxl_unet_receives_both_encoders_pooled_embeds_and_time_ids(
    pipe: LayerDiffusePipeline, tiny_sdxl: dict[str, Any], guidance_scale: float
) -> None:
    calls = capture_unet_calls(pipe, guidance_scale=guidance_scale)
    batch = 2 if guidance_scale > 1 else 1
    embeds, pooled = sdxl_text(tiny_sdxl, PROMPT)
    assert len(calls) == 2  # one UNet call per step, guidance batched
    for call in calls:
        context = call["encoder_hidden_states"]
        added = call["added_cond_kwargs"]
        assert context.shape == (batch, 77, HIDDEN_1 + HIDDEN_2)
        assert added["text_embeds"].shape == (batch, POOLED)
        assert added["time_ids"].tolist() == [[SIZE, SIZE, 0, 0, SIZE, SIZE]] * batch
        torch.testing.assert_close(context[-1:], embeds)  # cond last
        torch.testing.assert_close(added["text_embeds"][-1:], pooled)
        if batch == 2:  # an empty negative prompt gives zero conditioning (force_zeros_for_empty_prompt)
            assert not context[0].any() and not added["text_embeds"][0].any()


def test_sdxl_negative_prompt_is_encoded_not_zeroed(
    pipe: LayerDiffusePipeline, tiny_sdxl: dict[str, Any]
) -> None:
    calls = capture_unet_calls(pipe, guidance_scale=7.0, negative_prompt="wider")
    embeds, pooled = sdxl_text(tiny_sdxl, "wider")
    torch.testing.assert_close(calls[0]["encoder_hidden_states"][:1], embeds)
    torch.testing.assert_close(calls[0]["added_cond_kwargs"]["text_embeds"][:1], pooled)


def test_sdxl_pooled_embeds_and_time_ids_each_change_the_result(pipe: LayerDiffusePipeline) -> None:
    reference = run(pipe, seed=3, guidance_scale=1.0)
    for key in ("text_embeds", "time_ids"):

        def zero(module: torch.nn.Module, args: tuple, kwargs: dict, key: str = key) -> tuple[tuple, dict]:
            added = dict(kwargs["added_cond_kwargs"])
            added[key] = torch.zeros_like(added[key])
            return args, {**kwargs, "added_cond_kwargs": added}

        handle = pipe.unet.register_forward_pre_hook(zero, with_kwargs=True)
        try:
            changed = run(pipe, seed=3, guidance_scale=1.0)
        finally:
            handle.remove()
        assert not torch.equal(reference.latents, changed.latents), key


def test_sdxl_default_size_is_the_unet_sample_size(pipe: LayerDiffusePipeline) -> None:
    calls: list[dict[str, Any]] = []
    handle = pipe.unet.register_forward_pre_hook(lambda m, a, kw: calls.append(kw), with_kwargs=True)
    try:
        out = pipe(PROMPT, num_inference_steps=1, guidance_scale=1.0, tta=False)
    finally:
        handle.remove()
    assert out.images.shape == (1, SIZE, SIZE, 4)  # sample_size 8 × 8 (128 × 8 = 1024 for SDXL base)
    assert calls[0]["added_cond_kwargs"]["time_ids"].tolist() == [[SIZE, SIZE, 0, 0, SIZE, SIZE]]


def test_sdxl_unet_without_text_encoder_2_is_a_usage_error(tiny_sdxl: dict[str, Any]) -> None:
    pipe = make_pipeline(tiny_sdxl, text_encoder_2=None, tokenizer_2=None)
    with pytest.raises(UsageError, match="text_encoder_2"):
        run(pipe)


def test_sdxl_second_encoder_without_projection_is_a_usage_error(tiny_sdxl: dict[str, Any]) -> None:
    torch.manual_seed(1)
    plain = CLIPTextModel(clip_config(HIDDEN_2, POOLED)).eval()  # has no pooled, projected output
    with pytest.raises(UsageError, match="CLIPTextModelWithProjection"):
        run(make_pipeline(tiny_sdxl, text_encoder_2=plain))


@pytest.mark.parametrize(
    ("unet_kwargs", "needle"),
    [
        # the SDXL refiner conditions on 5 ids (aesthetic score instead of the target size)
        ({"projection_class_embeddings_input_dim": 5 * TIME_EMBED + POOLED}, "added conditioning takes 64"),
        ({"cross_attention_dim": HIDDEN_2}, "give 48-wide embeddings"),
    ],
)
def test_sdxl_unet_that_does_not_fit_the_text_encoders_is_named(
    tiny_sdxl: dict[str, Any], unet_kwargs: dict[str, int], needle: str
) -> None:
    config = {
        "sample_size": LATENT,
        "block_out_channels": (32, 32),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "layers_per_block": 1,
        "cross_attention_dim": HIDDEN_1 + HIDDEN_2,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": TIME_EMBED,
        "projection_class_embeddings_input_dim": 6 * TIME_EMBED + POOLED,
    }
    unet = UNet2DConditionModel(**{**config, **unet_kwargs})
    with pytest.raises(WeightsError, match=needle):
        run(make_pipeline(tiny_sdxl, unet=unet))


def sdxl_spec(parts: dict[str, Any], **overrides: Any) -> ModelSpec:
    root = parts["base"].parent
    components = {
        "base": parts["base"],
        "transparent_attn": parts["attn_file"],
        "transparent_encoder": root / "transparent_encoder",
        "transparent_decoder": root / "transparent_decoder",
    }
    return ModelSpec(family="sdxl", **{**components, **overrides})


@pytest.fixture(scope="module")
def loaded(tiny_sdxl: dict[str, Any]) -> Components:
    return load_components(sdxl_spec(tiny_sdxl), device=torch.device("cpu"), dtype=torch.float32)


def test_load_components_sdxl_matches_the_in_memory_stack(
    tiny_sdxl: dict[str, Any], loaded: Components, pipe: LayerDiffusePipeline
) -> None:
    assert loaded.family == "sdxl" and loaded.layerdiffuse_processors == {}  # SDXL: a merged LoRA only
    assert isinstance(loaded.text_encoder_2, CLIPTextModelWithProjection)
    assert loaded.tokenizer_2.model_max_length == 77
    assert isinstance(loaded.scheduler, EulerAncestralDiscreteScheduler)
    assert len(loaded.sources["transparent_attn.sha256"]) == 64
    # the LoRA was merged on load: the loaded UNet equals the in-memory one it was applied to
    loaded_unet = loaded.unet.state_dict()
    for key, value in tiny_sdxl["unet"].state_dict().items():
        assert torch.equal(loaded_unet[key], value), key
    assert not any(p.requires_grad for p in loaded.unet.parameters())

    expected = run(pipe, seed=5, guidance_scale=5.0)
    got = run(make_pipeline(loaded), seed=5, guidance_scale=5.0)
    # Equal weights, but safetensors' memory-mapped tensors are not 64-byte aligned, so BLAS may take
    # another kernel and round the last bit differently: allow one level in uint8.
    torch.testing.assert_close(got.latents, expected.latents, atol=1e-5, rtol=0)
    assert np.abs(got.images.astype(np.int16) - expected.images).max() <= 1


def test_load_components_sdxl_fp16_keeps_the_vae_fp32_and_runs(
    tiny_sdxl: dict[str, Any], pipe: LayerDiffusePipeline
) -> None:
    half = load_components(sdxl_spec(tiny_sdxl), device=torch.device("cpu"), dtype=torch.float16)
    assert half.vae.dtype == torch.float32  # SDXL's VAE overflows in fp16
    assert half.unet.dtype == half.text_encoder_2.dtype == half.transparent_decoder.dtype == torch.float16
    got = run(make_pipeline(half), seed=1, guidance_scale=5.0)  # fp16 latents into the fp32 VAE
    expected = run(pipe, seed=1, guidance_scale=5.0)
    assert got.images.dtype == np.uint8 and got.latents.dtype == torch.float32
    torch.testing.assert_close(got.latents, expected.latents, atol=0.1, rtol=0.05)
    assert np.abs(got.images.astype(np.int16) - expected.images).mean() < 2


def test_load_components_sdxl_names_a_missing_second_text_encoder(
    tiny_sdxl: dict[str, Any], tmp_path: Path
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "tokenizer_2"):
        (base / name).symlink_to(tiny_sdxl["base"] / name)
    with pytest.raises(WeightsError, match="missing text_encoder_2/"):
        load_components(sdxl_spec(tiny_sdxl, base=base), device=torch.device("cpu"), dtype=torch.float32)


def test_load_components_refuses_a_family_that_does_not_match_the_unet(
    tiny_sdxl: dict[str, Any], tmp_path: Path
) -> None:
    sdxl_as_sd15 = ModelSpec(family="sd15", base=tiny_sdxl["base"], transparent_attn=tiny_sdxl["attn_file"])
    with pytest.raises(UsageError, match=r"is an SDXL model .*pass family='sdxl'"):
        load_components(sdxl_as_sd15, device=torch.device("cpu"), dtype=torch.float32)
    sd15_base = tmp_path / "sd15"
    (sd15_base / "unet").mkdir(parents=True)  # an SD1.5 UNet config: no added text_time conditioning
    (sd15_base / "unet" / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(UsageError, match=r"is not an SDXL model .*pass family='sd15'"):
        load_components(sdxl_spec(tiny_sdxl, base=sd15_base), device=torch.device("cpu"), dtype=torch.float32)


def test_cli_image_family_sdxl(loaded: Components, tiny_sdxl: dict[str, Any], tmp_path: Path) -> None:
    root = tiny_sdxl["base"].parent
    out = tmp_path / "sdxl.png"
    args = ["image", PROMPT, "-o", str(out), "--family", "sdxl", "--model", str(tiny_sdxl["base"])]
    args += ["--transparent-attn", str(tiny_sdxl["attn_file"])]
    args += ["--transparent-encoder", str(root / "transparent_encoder")]
    args += ["--transparent-decoder", str(root / "transparent_decoder")]
    args += ["--width", str(SIZE), "--height", str(SIZE), "--steps", "2", "--seed", "9", "--fast-decode"]
    args += ["--device", "cpu", "--dtype", "fp32", "--save-latent", "--json", "--quiet"]
    args += ["--scheduler", "euler_a"]  # the library run below samples with the components' Euler ancestral
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert report["output"] == str(out) and report["seed"] == 9
    assert report["schedulers"]["image"]["sampler"] == "euler_a"  # --json names stage one's sampler
    assert (report["width"], report["height"]) == (SIZE, SIZE)
    with Image.open(out) as image:
        assert image.mode == "RGBA" and image.size == (SIZE, SIZE)
        rgba_hwc_uint8 = np.asarray(image)
    latent, meta = load_latent(Path(report["latent"]))
    assert latent.shape == (1, 4, LATENT, LATENT) and meta["family"] == "sdxl"
    # the same run through the library (the CLI's defaults: guidance 7, empty negative; Euler ancestral)
    expected = run(make_pipeline(loaded), seed=9, guidance_scale=7.0)
    assert np.array_equal(rgba_hwc_uint8, expected.images[0])
    assert torch.equal(latent, expected.latents)


def test_cli_image_sdxl_model_with_the_sd15_family_is_one_usage_error(
    tiny_sdxl: dict[str, Any], tmp_path: Path
) -> None:
    args = ["image", PROMPT, "-o", str(tmp_path / "x.png"), "--model", str(tiny_sdxl["base"])]
    args += ["--transparent-attn", str(tiny_sdxl["attn_file"]), "--device", "cpu", "--steps", "1", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"Error: --model {tiny_sdxl['base']} is an SDXL model (its UNet takes SDXL's text_time "
        "conditioning); pass --family sdxl."
    ]
    assert not (tmp_path / "x.png").exists()
