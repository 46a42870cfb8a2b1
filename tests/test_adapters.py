"""LoRAs, MotionLoRAs and textual-inversion embeddings on the tiny preset (layeranim.community).

The LoRA files are made here with peft on the tiny models and saved in diffusers' `save_lora_weights`
format; expected weights are re-derived from the files' own tensors (W + scale · B·A · alpha/r).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from safetensors.torch import load_file, save_file
from transformers import CLIPTextModel, CLIPTokenizer

from layeranim.community import (
    EmbeddingRef,
    LoraRef,
    expand_embedding_tokens,
    load_embeddings,
    load_loras,
    load_motion_loras,
    parse_lora_ref,
    provenance,
)
from layeranim.errors import UsageError
from layeranim.models.layerdiffuse_unet import (
    LayerDiffuseAttnProcessor,
    apply_layerdiffuse_sd15,
    load_safetensors_file,
)
from layeranim.pipelines.layeranimate import build_motion_unet
from layeranim.render.components import ModelSpec

peft = pytest.importorskip("peft")

RANK = 4
SPATIAL_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
PROBE = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"  # one projection the tests look at


@pytest.fixture(scope="module")
def tiny() -> ModelSpec:
    return ModelSpec.for_preset("tiny")


def base_models(spec: ModelSpec) -> tuple[UNet2DConditionModel, CLIPTextModel, CLIPTokenizer]:
    base = Path(spec.base)  # type: ignore[arg-type]
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").eval().requires_grad_(False)
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").eval().requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    return unet, text_encoder, tokenizer


def apply_layerdiffuse(spec: ModelSpec, unet: UNet2DConditionModel) -> dict[str, LayerDiffuseAttnProcessor]:
    return apply_layerdiffuse_sd15(unet, load_safetensors_file(Path(spec.transparent_attn)))  # type: ignore[arg-type]


def make_lora(spec: ModelSpec, folder: Path, seed: int) -> Path:
    """A random rank-4 LoRA on the tiny UNet's attention and the text encoder, in diffusers' format."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    unet, text_encoder, _ = base_models(spec)
    torch.manual_seed(seed)
    # alpha ≠ rank, so the file's metadata (alpha) matters for the scale.
    unet.add_adapter(
        LoraConfig(r=RANK, lora_alpha=2 * RANK, init_lora_weights=False, target_modules=SPATIAL_TARGETS)
    )
    text_config = LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights=False, target_modules=TEXT_TARGETS)
    inject_adapter_in_model(text_config, text_encoder)
    StableDiffusionLoraLoaderMixin.save_lora_weights(
        folder,
        unet_lora_layers=get_peft_model_state_dict(unet),
        text_encoder_lora_layers=get_peft_model_state_dict(text_encoder),
        unet_lora_adapter_metadata={"r": RANK, "lora_alpha": 2 * RANK, "target_modules": SPATIAL_TARGETS},
        text_encoder_lora_adapter_metadata={"r": RANK, "lora_alpha": RANK, "target_modules": TEXT_TARGETS},
    )
    return folder / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def lora_a(tiny: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora(tiny, tmp_path_factory.mktemp("lora_a"), seed=1)


@pytest.fixture(scope="module")
def lora_b(tiny: ModelSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lora(tiny, tmp_path_factory.mktemp("lora_b"), seed=2)


def unet_out(unet: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad():
        return unet(sample, 10, encoder_hidden_states=context).sample


def text_out(
    text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, prompt: str = "lower newer"
) -> torch.Tensor:
    ids = tokenizer(
        [prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        return text_encoder(ids)[0]


def expected_delta(lora_file: Path, module: str) -> torch.Tensor:
    """B·A·alpha/r for one UNet module, straight from the file (alpha from its diffusers metadata)."""
    tensors = load_file(str(lora_file))
    down, up = tensors[f"unet.{module}.lora_A.weight"], tensors[f"unet.{module}.lora_B.weight"]
    return (up @ down) * (2 * RANK / RANK)


# ---------------------------------------------------------------------------------------------------


def test_parse_lora_ref() -> None:
    assert parse_lora_ref("owner/repo/file.safetensors:0.8") == LoraRef("owner/repo/file.safetensors", 0.8)
    assert parse_lora_ref("owner/repo@v1/file.safetensors") == LoraRef("owner/repo@v1/file.safetensors", 1.0)
    assert parse_lora_ref(r"C:\loras\x.safetensors:-0.5") == LoraRef(r"C:\loras\x.safetensors", -0.5)
    assert parse_lora_ref("./style.safetensors:1e-1").scale == pytest.approx(0.1)
    with pytest.raises(UsageError, match="text is empty"):
        parse_lora_ref(" ")
    with pytest.raises(UsageError, match="not a finite number"):
        LoraRef("x.safetensors", float("nan"))


def test_lora_goes_through_layerdiffuse_processors_and_scale_zero_is_no_lora(
    tiny: ModelSpec, lora_a: Path
) -> None:
    outputs = {}
    texts = {}
    for label, scale in (("none", None), ("zero", 0.0), ("one", 1.0)):
        unet, text_encoder, tokenizer = base_models(tiny)
        if scale is not None:
            loaded = load_loras(unet, text_encoder, [LoraRef(str(lora_a), scale)], "sd15")
            assert [item.scale for item in loaded] == [scale]
        processors = apply_layerdiffuse(tiny, unet)  # LayerDiffuse after the LoRA, as load_components will
        assert all(isinstance(p, LayerDiffuseAttnProcessor) for p in processors.values())
        assert not any("lora" in name for name, _ in unet.named_modules())  # fused, peft layers gone
        outputs[label], texts[label] = unet_out(unet), text_out(text_encoder, tokenizer)
    assert torch.equal(outputs["zero"], outputs["none"])
    assert torch.equal(texts["zero"], texts["none"])
    assert not torch.allclose(outputs["one"], outputs["none"], atol=1e-4)
    assert not torch.allclose(texts["one"], texts["none"], atol=1e-4)


def test_fused_lora_equals_peft_layers_under_the_processors(tiny: ModelSpec, lora_a: Path) -> None:
    """peft wraps the to_q/to_k/to_v/to_out Linears that LayerDiffuse's processor calls: running the LoRA
    unfused (diffusers' own loader, peft layers in place) under the processor gives the fused result."""
    fused, _, _ = base_models(tiny)
    load_loras(fused, None, [LoraRef(str(lora_a), 0.7)], "sd15")
    fused_processors = apply_layerdiffuse(tiny, fused)

    wrapped, _, _ = base_models(tiny)
    state_dict, alphas, metadata = StableDiffusionLoraLoaderMixin.lora_state_dict(
        str(lora_a), return_lora_metadata=True
    )
    unet_only = {k: v for k, v in state_dict.items() if k.startswith("unet.")}
    StableDiffusionLoraLoaderMixin.load_lora_into_unet(
        unet_only, alphas, wrapped, adapter_name="a", metadata=metadata
    )
    wrapped.set_adapters(["a"], [0.7])
    # LayerDiffuse merges into plain Linears, so put the same processors (and merged base deltas) on by hand:
    layerdiffuse = load_safetensors_file(Path(tiny.transparent_attn))  # type: ignore[arg-type]
    plain, _, _ = base_models(tiny)
    apply_layerdiffuse_sd15(plain, layerdiffuse)
    with torch.no_grad():
        for name, module in wrapped.named_modules():
            if hasattr(module, "base_layer"):
                module.base_layer.weight.copy_(plain.get_submodule(name).weight)
    wrapped.set_attn_processor({**wrapped.attn_processors, **fused_processors})
    assert type(wrapped.get_submodule(PROBE)).__module__.startswith("peft")
    torch.testing.assert_close(unet_out(wrapped), unet_out(fused), rtol=1e-4, atol=1e-5)


def test_lora_reaches_inter_frame_attention(tiny: ModelSpec, lora_a: Path) -> None:
    """IFA's branch calls the host attention's to_k/to_v: with trained (here random) IFA weights, the fused
    LoRA and the same LoRA as live peft layers on the motion UNet give the same output."""
    from layeranim.models.inter_frame_attention import ifa_parameters

    adapter = MotionAdapter.from_pretrained(Path(tiny.motion_adapter))  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 3, 8, 8, generator=generator)
    context = torch.randn(3, 77, 32, generator=generator)

    def motion_unet(lora_first: bool) -> torch.nn.Module:
        unet, _, _ = base_models(tiny)
        if lora_first:
            load_loras(unet, None, [LoraRef(str(lora_a), 0.7)], "sd15")
        built = build_motion_unet(unet, adapter, apply_layerdiffuse(tiny, unet))
        weights = torch.Generator().manual_seed(5)
        with torch.no_grad():
            for param in ifa_parameters(built.ifa_processors):  # the same "trained" W_Q', W_O' for both
                param.copy_(0.1 * torch.randn(param.shape, generator=weights))
        return built.unet

    fused = motion_unet(lora_first=True)
    wrapped = motion_unet(lora_first=False)
    state_dict, alphas, metadata = StableDiffusionLoraLoaderMixin.lora_state_dict(
        str(lora_a), return_lora_metadata=True
    )
    unet_only = {k: v for k, v in state_dict.items() if k.startswith("unet.")}
    StableDiffusionLoraLoaderMixin.load_lora_into_unet(
        unet_only, alphas, wrapped, adapter_name="a", metadata=metadata
    )
    wrapped.set_adapters(["a"], [0.7])
    assert type(wrapped.get_submodule(PROBE)).__module__.startswith("peft")
    with torch.no_grad():
        expected = fused(sample, 10, encoder_hidden_states=context).sample
        got = wrapped(sample, 10, encoder_hidden_states=context).sample
        wrapped.disable_lora()
        without = wrapped(sample, 10, encoder_hidden_states=context).sample
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(without, expected, atol=1e-4)


def test_two_loras_compose_additively(tiny: ModelSpec, lora_a: Path, lora_b: Path) -> None:
    unet, _, _ = base_models(tiny)
    before = unet.get_submodule(PROBE).weight.clone()
    load_loras(unet, None, [LoraRef(str(lora_a), 1.0), LoraRef(str(lora_b), 0.5)], "sd15")
    expected = before + expected_delta(lora_a, PROBE) + 0.5 * expected_delta(lora_b, PROBE)
    torch.testing.assert_close(unet.get_submodule(PROBE).weight, expected, rtol=1e-5, atol=1e-6)

    swapped, _, _ = base_models(tiny)
    load_loras(swapped, None, [LoraRef(str(lora_b), 0.5), LoraRef(str(lora_a), 1.0)], "sd15")
    torch.testing.assert_close(unet_out(swapped), unet_out(unet), rtol=1e-4, atol=1e-5)


def test_lora_survives_the_stage_two_build(tiny: ModelSpec, lora_a: Path) -> None:
    adapter = MotionAdapter.from_pretrained(Path(tiny.motion_adapter))  # type: ignore[arg-type]
    motions = {}
    for label, refs in (("none", []), ("lora", [LoraRef(str(lora_a))])):
        unet, _, _ = base_models(tiny)
        load_loras(unet, None, refs, "sd15")
        processors = apply_layerdiffuse(tiny, unet)
        built = build_motion_unet(unet, adapter, processors)
        torch.testing.assert_close(built.unet.get_submodule(PROBE).weight, unet.get_submodule(PROBE).weight)
        motions[label] = built.unet
    delta = motions["lora"].get_submodule(PROBE).weight - motions["none"].get_submodule(PROBE).weight
    torch.testing.assert_close(delta, expected_delta(lora_a, PROBE), rtol=1e-4, atol=1e-5)


def kohya_keys(lora_file: Path) -> dict[str, torch.Tensor]:
    """The same LoRA in Kohya's layout (`lora_unet_…`/`lora_te_…`, lora_down/lora_up, alpha)."""
    out = {}
    for key, tensor in load_file(str(lora_file)).items():
        component, rest = key.split(".", 1)
        module, kind = rest.rsplit(".lora_", 1)
        head = "lora_unet_" if component == "unet" else "lora_te_"
        module = module.removeprefix("text_model.")
        name = head + ("text_model_" if component == "text_encoder" else "") + module.replace(".", "_")
        out[f"{name}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = tensor
        if kind.startswith("A"):
            alpha = 2 * RANK if component == "unet" else RANK
            out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def test_kohya_lora_matches_the_diffusers_file(tiny: ModelSpec, lora_a: Path, tmp_path: Path) -> None:
    kohya = tmp_path / "style_kohya.safetensors"
    save_file(kohya_keys(lora_a), str(kohya))
    reference, reference_text, tokenizer = base_models(tiny)
    load_loras(reference, reference_text, [LoraRef(str(lora_a))], "sd15")
    unet, text_encoder, _ = base_models(tiny)
    load_loras(unet, text_encoder, [LoraRef(str(kohya))], "sd15")
    torch.testing.assert_close(unet_out(unet), unet_out(reference), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(text_out(text_encoder, tokenizer), text_out(reference_text, tokenizer))


def test_sdxl_lora_on_sd15_is_one_clear_error(tiny: ModelSpec, tmp_path: Path) -> None:
    sdxl_kohya = tmp_path / "xl_style.safetensors"
    save_file(
        {
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 1280),
            "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(1280, 4),
        },
        str(sdxl_kohya),
    )
    sdxl_diffusers = tmp_path / "xl_unet.safetensors"
    save_file(
        {
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": torch.zeros(
                4, 2048
            ),
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_B.weight": torch.zeros(
                640, 4
            ),
        },
        str(sdxl_diffusers),
    )
    unet, text_encoder, _ = base_models(tiny)
    with pytest.raises(
        UsageError, match=r"LoRA '.*xl_style.safetensors' \(refs\[0\]\).*lora_te2_.*SDXL LoRA"
    ):
        load_loras(unet, text_encoder, [LoraRef(str(sdxl_kohya))], "sd15")
    with pytest.raises(UsageError, match=r"xl_unet.safetensors.*2048-wide text embeddings \(an SDXL LoRA\)"):
        load_loras(unet, text_encoder, [LoraRef(str(sdxl_diffusers))], "sd15")


def make_motion_lora(spec: ModelSpec, folder: Path) -> tuple[Path, Path]:
    """A random MotionLoRA on the tiny motion modules: diffusers' layout, and AnimateDiff's original one."""
    from peft import LoraConfig, get_peft_model_state_dict

    unet, _, _ = base_models(spec)
    adapter = MotionAdapter.from_pretrained(Path(spec.motion_adapter))  # type: ignore[arg-type]
    motion = build_motion_unet(unet, adapter, {}).unet
    torch.manual_seed(3)
    motion.add_adapter(
        LoraConfig(
            r=RANK,
            lora_alpha=RANK,
            init_lora_weights=False,
            target_modules=r".*motion_modules.*\.(to_q|to_k|to_v|to_out\.0)",
        )
    )
    layers = get_peft_model_state_dict(motion)
    StableDiffusionLoraLoaderMixin.save_lora_weights(folder, unet_lora_layers=layers)
    original = {}
    for key, tensor in layers.items():  # diffusers → AnimateDiff's own MotionLoRA naming (v2_lora_*.ckpt)
        key = key.replace(".attn1.", ".attention_blocks.0.").replace(".attn2.", ".attention_blocks.1.")
        key = key.replace(".motion_modules.", ".motion_modules.").replace(
            ".transformer_blocks.", ".temporal_transformer.transformer_blocks."
        )
        key = key.replace(".to_out.0.lora_A", ".processor.to_out_lora.down").replace(
            ".to_out.0.lora_B", ".processor.to_out_lora.up"
        )
        for p in ("q", "k", "v"):
            key = key.replace(f".to_{p}.lora_A", f".processor.to_{p}_lora.down").replace(
                f".to_{p}.lora_B", f".processor.to_{p}_lora.up"
            )
        original[key] = tensor
    ckpt = folder / "v2_lora_Tiny.ckpt"
    torch.save(original, ckpt)
    return folder / "pytorch_lora_weights.safetensors", ckpt


def test_motion_lora_changes_the_motion_unet_only(tiny: ModelSpec, tmp_path: Path) -> None:
    diffusers_file, original_file = make_motion_lora(tiny, tmp_path)
    adapter = MotionAdapter.from_pretrained(Path(tiny.motion_adapter))  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 4, 8, 8, generator=generator)
    context = torch.randn(4, 77, 32, generator=generator)

    def run(refs: list[LoraRef]) -> tuple[torch.Tensor, torch.nn.Module]:
        unet, _, _ = base_models(tiny)
        built = build_motion_unet(unet, adapter, apply_layerdiffuse(tiny, unet))
        loaded = load_motion_loras(built.unet, refs)
        assert len(loaded) == len(refs)
        with torch.no_grad():
            return built.unet(sample, 10, encoder_hidden_states=context).sample, built.unet

    none, plain = run([])
    zero, _ = run([LoraRef(str(diffusers_file), 0.0)])
    moved, with_lora = run([LoraRef(str(diffusers_file))])
    from_ckpt, _ = run([LoraRef(str(original_file))])
    assert torch.equal(zero, none)
    assert not torch.allclose(moved, none, atol=1e-4)
    torch.testing.assert_close(from_ckpt, moved)
    spatial = {k: v for k, v in with_lora.state_dict().items() if "motion_modules" not in k}
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in spatial.items())  # spatial layers untouched


def test_image_lora_is_refused_as_motion_lora(tiny: ModelSpec, lora_a: Path) -> None:
    unet, _, _ = base_models(tiny)
    adapter = MotionAdapter.from_pretrained(Path(tiny.motion_adapter))  # type: ignore[arg-type]
    motion = build_motion_unet(unet, adapter, {}).unet
    with pytest.raises(UsageError, match="outside the motion modules"):
        load_motion_loras(motion, [LoraRef(str(lora_a))])


def test_embeddings_single_and_multi_vector_change_the_conditioning(tiny: ModelSpec, tmp_path: Path) -> None:
    _, text_encoder, tokenizer = base_models(tiny)
    width = text_encoder.get_input_embeddings().weight.shape[1]
    torch.manual_seed(4)
    single = tmp_path / "learned_embeds.safetensors"  # diffusers: {token: (1, c)}
    save_file({"<Shiny>": torch.randn(1, width)}, str(single))
    multi = tmp_path / "EasyNeg.pt"  # A1111: string_to_param, called by its file name
    multi_vectors = torch.randn(3, width)
    torch.save({"string_to_param": {"*": multi_vectors}, "name": "ignored", "step": 10}, multi)

    before = text_out(text_encoder, tokenizer, "lower")
    loaded = load_embeddings(text_encoder, tokenizer, [EmbeddingRef(str(single)), EmbeddingRef(str(multi))])
    assert [item.tokens for item in loaded] == [("<Shiny>",), ("EasyNeg", "EasyNeg_1", "EasyNeg_2")]
    assert torch.equal(text_out(text_encoder, tokenizer, "lower"), before)  # other prompts unchanged
    assert not torch.allclose(text_out(text_encoder, tokenizer, "lower <Shiny>"), before, atol=1e-4)

    prompt = expand_embedding_tokens("easyneg lower", tokenizer)  # CLIP matches added tokens lower-cased
    assert prompt == "EasyNeg EasyNeg_1 EasyNeg_2 lower"
    ids = tokenizer(prompt).input_ids
    table = text_encoder.get_input_embeddings().weight
    assert torch.equal(table[ids[1:4]], multi_vectors)  # the three vectors, in order, after BOS
    with pytest.raises(UsageError, match="already in the tokenizer"):
        load_embeddings(text_encoder, tokenizer, [EmbeddingRef(str(single))])
    sdxl = tmp_path / "xl_embedding.safetensors"
    save_file({"clip_l": torch.zeros(1, 768), "clip_g": torch.zeros(1, 1280)}, str(sdxl))
    with pytest.raises(UsageError, match="SDXL embedding"):
        load_embeddings(text_encoder, tokenizer, [EmbeddingRef(str(sdxl))])


def test_provenance_hashes_each_file(lora_a: Path, tmp_path: Path) -> None:
    import hashlib

    records = provenance([LoraRef(str(lora_a), 0.8), LoraRef(str(lora_a.parent))])
    digest = hashlib.sha256(lora_a.read_bytes()).hexdigest()
    assert records[0] == {
        "kind": "lora",
        "ref": str(lora_a),
        "source": str(lora_a.absolute()),
        "sha256": digest,
        "scale": 0.8,
    }
    assert records[1]["sha256"] == digest  # a folder means its pytorch_lora_weights.safetensors
    (tmp_path / "a.safetensors").write_bytes(b"")
    (tmp_path / "b.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match="name the file"):
        provenance([LoraRef(str(tmp_path))])


def test_sdxl_lora_reaches_both_text_encoders(tmp_path: Path, lora_a: Path) -> None:
    """On the SDXL family the same loader fills the UNet and both text encoders; an SD1.5 LoRA is refused."""
    from diffusers.loaders import StableDiffusionXLLoraLoaderMixin
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from test_sdxl import build_tiny_sdxl

    parts = build_tiny_sdxl(tmp_path / "sdxl")
    base = parts["base"]

    def fresh() -> tuple[UNet2DConditionModel, CLIPTextModel, CLIPTextModelWithProjection]:
        return (
            UNet2DConditionModel.from_pretrained(base, subfolder="unet").eval(),
            CLIPTextModel.from_pretrained(base, subfolder="text_encoder").eval(),
            CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2").eval(),
        )

    unet, te1, te2 = fresh()
    torch.manual_seed(6)
    unet.add_adapter(
        LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights=False, target_modules=SPATIAL_TARGETS)
    )
    for encoder in (te1, te2):
        inject_adapter_in_model(
            LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights=False, target_modules=TEXT_TARGETS), encoder
        )
    StableDiffusionXLLoraLoaderMixin.save_lora_weights(
        tmp_path / "xl_lora",
        unet_lora_layers=get_peft_model_state_dict(unet),
        text_encoder_lora_layers=get_peft_model_state_dict(te1),
        text_encoder_2_lora_layers=get_peft_model_state_dict(te2),
    )
    file = tmp_path / "xl_lora" / "pytorch_lora_weights.safetensors"
    ids = torch.tensor([[21, 7, 22] + [22] * 74])

    plain_unet, plain_te1, plain_te2 = fresh()
    unet, te1, te2 = fresh()
    load_loras(unet, te1, [LoraRef(str(file))], "sdxl", text_encoder_2=te2)
    with torch.no_grad():
        for plain, loaded in ((plain_te1, te1), (plain_te2, te2)):
            assert not torch.allclose(plain(ids)[0], loaded(ids)[0], atol=1e-4)
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    tensors = load_file(str(file))
    delta = tensors[f"unet.{name}.lora_B.weight"] @ tensors[f"unet.{name}.lora_A.weight"]
    torch.testing.assert_close(unet.get_submodule(name).weight, plain_unet.get_submodule(name).weight + delta)
    with pytest.raises(UsageError, match="32-wide text embeddings"):
        load_loras(plain_unet, plain_te1, [LoraRef(str(lora_a))], "sdxl", text_encoder_2=plain_te2)
