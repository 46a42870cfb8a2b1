"""Which weights a run uses (`ModelSpec`) and loading them into models (`load_components`).

A `ModelSpec` names the model family and, per component, either nothing (the default in
`weights.DEFAULT_SOURCES`) or a weights reference (local path, `owner/name` repo, or `owner/name/file`).
`load_components` resolves the references through `layeranim.weights`, loads every model with
diffusers/transformers `from_pretrained` (or `from_single_file` for a community SD checkpoint), applies
the LayerDiffuse UNet weights, and hands back eval-mode, frozen models on the requested device/dtype.
The AnimateDiff motion adapter is loaded separately (`load_motion_adapter`), only by stage two.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from layeranim import safety, weights
from layeranim.errors import StateDictMismatchError, UsageError, WeightsError
from layeranim.render.presets import TINY_NOTICE, ensure_tiny_preset, transformers_progress_bars_off
from layeranim.render.settings import PRESETS

logger = logging.getLogger(__name__)

MOTION_MODULE_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")

WeightsRef = str | Path | weights.WeightSource


@functools.cache
def _emit_tiny_notice() -> None:
    """Say once per process that the tiny preset's pictures are noise."""
    logger.warning(TINY_NOTICE)


@dataclass(frozen=True)
class ModelSpec:
    """The weights of a run: a family plus, per component, None (the default) or a weights reference."""

    family: str = "sd15"
    preset: str | None = None
    base: WeightsRef | None = None
    transparent_attn: WeightsRef | None = None
    transparent_encoder: WeightsRef | None = None
    transparent_decoder: WeightsRef | None = None
    motion_adapter: WeightsRef | None = None
    # Community add-ons on the base model (`layeranim.community`): LoRAs fused into the UNet and text
    # encoder(s) before LayerDiffuse's weights, textual-inversion embeddings added to the tokenizer.
    loras: tuple[Any, ...] = ()  # LoraRef
    embeddings: tuple[Any, ...] = ()  # EmbeddingRef

    def __post_init__(self) -> None:
        if self.family not in weights.FAMILIES:
            raise UsageError(
                f"family={self.family!r} is not a model family; use one of {', '.join(weights.FAMILIES)}."
            )
        if self.preset is not None and self.preset not in PRESETS:
            raise UsageError(f"preset={self.preset!r} is not a preset; use one of {', '.join(PRESETS)}.")

    @classmethod
    def for_preset(
        cls,
        name: str,
        *,
        root: Path | None = None,
        loras: tuple[Any, ...] = (),
        embeddings: tuple[Any, ...] = (),
        **overrides: WeightsRef | None,
    ) -> ModelSpec:
        """The spec of a named preset (`tiny`: local random-weight models, built on first use).

        `overrides` replace single components (e.g. `motion_adapter=...`); None values are ignored.
        `loras` and `embeddings` go on the preset's base model.
        """
        if name not in PRESETS:
            raise UsageError(f"preset={name!r} is not a preset; use one of {', '.join(PRESETS)}.")
        folder = ensure_tiny_preset(root)
        _emit_tiny_notice()
        components: dict[str, WeightsRef | None] = {
            "base": folder / "base",
            "transparent_attn": folder / "layerdiffuse" / "layer_sd15_transparent_attn.safetensors",
            "transparent_encoder": folder / "layerdiffuse" / "transparent_encoder",
            "transparent_decoder": folder / "layerdiffuse" / "transparent_decoder",
            "motion_adapter": folder / "motion_adapter",
        }
        components.update({key: value for key, value in overrides.items() if value is not None})
        return cls(family="sd15", preset=name, loras=tuple(loras), embeddings=tuple(embeddings), **components)

    def ref(self, component: str) -> WeightsRef:
        """The reference for a component: the spec's own, else the family's default source."""
        if component not in weights.COMPONENTS:
            raise UsageError(f"component {component!r} is not one of {', '.join(weights.COMPONENTS)}.")
        value = getattr(self, component)
        return value if value is not None else weights.default_source(self.family, component)


@dataclass
class Components:
    """Loaded, frozen models for stage one (and the UNet that stage two turns into a motion UNet).

    `vae` stays fp32 for SDXL in fp16 runs (SDXL's VAE overflows in fp16; its config says `force_upcast`):
    cast latents to `vae.dtype` before decoding. `sources` records where each component came from
    (`owner/name@commit[/file]` or a local path, plus `<component>.sha256` for single files).
    """

    family: str
    tokenizer: Any
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    scheduler: Any
    transparent_encoder: torch.nn.Module
    transparent_decoder: torch.nn.Module
    tokenizer_2: Any = None
    text_encoder_2: torch.nn.Module | None = None
    layerdiffuse_processors: dict[str, torch.nn.Module] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)  # + "community": provenance records, if any


def resolve_component(spec: ModelSpec, component: str) -> Path:
    """The local path of one component of `spec` (downloaded into the hub cache when needed)."""
    default = weights.default_source(spec.family, component)
    return weights.resolve(spec.ref(component), allow_patterns=default.allow_patterns)


def source_record(component: str, path: Path) -> dict[str, str]:
    """Provenance for a manifest: where `component` came from, and the sha256 of a single file."""
    record = {component: weights.describe_path(path)}
    if path.is_file():
        record[f"{component}.sha256"] = weights.file_sha256(path)
    return record


def load_components(spec: ModelSpec, *, device: torch.device, dtype: torch.dtype) -> Components:
    """Load every stage-one model of `spec`, apply the LayerDiffuse UNet weights, freeze, move."""
    with transformers_progress_bars_off():
        return _load_components(spec, device=device, dtype=dtype)


def _load_components(spec: ModelSpec, *, device: torch.device, dtype: torch.dtype) -> Components:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from layeranim.community import load_embeddings, load_loras, provenance
    from layeranim.models.layerdiffuse_unet import (
        apply_layerdiffuse_sd15,
        apply_layerdiffuse_sdxl,
        load_safetensors_file,
    )
    from layeranim.models.transparent_vae import TransparentVAEDecoder, TransparentVAEEncoder

    sources: dict[str, Any] = {"family": spec.family}
    if spec.preset:
        sources["preset"] = spec.preset
    vae_dtype = torch.float32 if spec.family == "sdxl" and dtype == torch.float16 else dtype

    # 1. The base model: a diffusers folder, or one community checkpoint file.
    base = resolve_component(spec, "base")
    sources.update(source_record("base", base))
    if base.is_file():
        parts = _load_single_file_base(spec, base, dtype=dtype)
    else:
        _check_diffusers_folder(base, spec.family)
        parts = {
            "tokenizer": _load(
                "tokenizer", base, lambda: CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
            ),
            "text_encoder": _load(
                "text encoder",
                base,
                lambda: CLIPTextModel.from_pretrained(base, subfolder="text_encoder", dtype=dtype),
            ),
            "vae": _load(
                "VAE",
                base,
                lambda: AutoencoderKL.from_pretrained(base, subfolder="vae", torch_dtype=vae_dtype),
            ),
            "unet": _load(
                "UNet",
                base,
                lambda: UNet2DConditionModel.from_pretrained(base, subfolder="unet", torch_dtype=dtype),
            ),
            "scheduler": _load_scheduler(base),
        }
        if spec.family == "sdxl":
            parts["tokenizer_2"] = _load(
                "tokenizer_2", base, lambda: CLIPTokenizer.from_pretrained(base, subfolder="tokenizer_2")
            )
            parts["text_encoder_2"] = _load(
                "text encoder 2",
                base,
                lambda: CLIPTextModelWithProjection.from_pretrained(
                    base, subfolder="text_encoder_2", dtype=dtype
                ),
            )
    unet = parts["unet"]

    # 1b. Community add-ons, before LayerDiffuse's weights merge into the same projections: LoRAs fused
    # into the UNet and text encoder(s) (stage two's motion UNet copies them), embeddings as new tokens.
    loaded = load_loras(
        unet, parts["text_encoder"], spec.loras, spec.family, text_encoder_2=parts.get("text_encoder_2")
    )
    loaded += load_embeddings(parts["text_encoder"], parts["tokenizer"], spec.embeddings)
    if loaded:
        sources["community"] = provenance(loaded)

    # 2. LayerDiffuse's UNet weights: they move generation into the transparent latent space.
    attn_path = resolve_component(spec, "transparent_attn")
    sources.update(source_record("transparent_attn", attn_path))
    if not attn_path.is_file():
        raise WeightsError(
            f"transparent_attn={str(attn_path)!r} is a folder; give the LayerDiffuse .safetensors file "
            f"(e.g. {weights.default_source(spec.family, 'transparent_attn').ref})."
        )
    attn_state_dict = load_safetensors_file(attn_path)
    processors: dict[str, torch.nn.Module] = {}
    if spec.family == "sd15":
        processors = dict(apply_layerdiffuse_sd15(unet, attn_state_dict))
    else:
        apply_layerdiffuse_sdxl(unet, attn_state_dict)
    del attn_state_dict

    # 3. The transparency encoder (latent offset) and decoder (alpha + straight colour).
    encoder_path = resolve_component(spec, "transparent_encoder")
    sources.update(source_record("transparent_encoder", encoder_path))
    decoder_path = resolve_component(spec, "transparent_decoder")
    sources.update(source_record("transparent_decoder", decoder_path))
    encoder = _load_model_file_or_folder(TransparentVAEEncoder, encoder_path, dtype, "transparency encoder")
    # The decoder runs in the run's dtype: it is a small conv UNet (Forge runs it in fp16 on GPUs too).
    decoder = _load_model_file_or_folder(TransparentVAEDecoder, decoder_path, dtype, "transparency decoder")

    # 4. Freeze and move.
    for name in ("text_encoder", "text_encoder_2", "vae", "unet"):
        if parts.get(name) is not None:
            parts[name] = _freeze(parts[name], device)
    encoder, decoder = _freeze(encoder, device), _freeze(decoder, device)
    logger.debug("loaded %s components on %s (%s): %s", spec.family, device, dtype, sources)
    return Components(
        family=spec.family,
        tokenizer=parts["tokenizer"],
        text_encoder=parts["text_encoder"],
        tokenizer_2=parts.get("tokenizer_2"),
        text_encoder_2=parts.get("text_encoder_2"),
        vae=parts["vae"],
        unet=parts["unet"],
        scheduler=parts["scheduler"],
        transparent_encoder=encoder,
        transparent_decoder=decoder,
        layerdiffuse_processors=processors,
        sources=sources,
    )


def _freeze(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    from layeranim.models.alignment import realign_weights_

    model.eval()
    model.requires_grad_(False)
    model = model.to(device)
    realign_weights_(model)  # the same bits however the weights were loaded (see models/alignment.py)
    return model


def _load(what: str, folder: Path, loader: Any) -> Any:
    """Run a from_pretrained call, turning its failures into one WeightsError line."""
    try:
        return loader()
    except Exception as exc:
        if safety.is_unsafe_pickle_error(exc):  # a .ckpt with code in it: never suggest weights_only=False
            raise safety.unsafe_checkpoint_error(exc, folder, what=what) from exc
        if not isinstance(exc, (OSError, ValueError, KeyError, RuntimeError)):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot load the {what} from {folder}: {first}") from exc


def _check_diffusers_folder(folder: Path, family: str) -> None:
    # The UNet config says which family the folder holds: fail before loading the wrong one.
    unet_config = folder / "unet" / "config.json"
    if unet_config.is_file():
        unet_is_sdxl = _read_json(unet_config).get("addition_embed_type") == "text_time"
        if unet_is_sdxl and family != "sdxl":
            raise UsageError(
                f"base={str(folder)!r} is an SDXL model (its UNet takes SDXL's text_time conditioning); "
                "pass family='sdxl'."
            )
        if family == "sdxl" and not unet_is_sdxl:
            raise UsageError(
                f"base={str(folder)!r} is not an SDXL model (its UNet has no text_time conditioning); pass "
                "family='sd15' for an SD1.5 model, or give an SDXL base folder."
            )
    needed = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]
    if family == "sdxl":
        needed += ["text_encoder_2", "tokenizer_2"]
    missing = [name for name in needed if not (folder / name).is_dir()]
    if missing:
        raise WeightsError(
            f"base={str(folder)!r} is not a diffusers {family} folder (missing {', '.join(missing)}/); "
            "give a diffusers repository folder or one .safetensors/.ckpt checkpoint file."
        )


def _read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise WeightsError(f"{file} is not a JSON object; is the model folder complete?")
    return data


def _load_scheduler(folder: Path) -> Any:
    """The scheduler class named in `scheduler/scheduler_config.json` (a diffusers class only)."""
    import diffusers
    from diffusers import SchedulerMixin

    config_file = folder / "scheduler" / "scheduler_config.json"
    try:
        class_name = json.loads(config_file.read_text())["_class_name"]
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsError(f"cannot read the scheduler config {config_file}: {exc}") from exc
    scheduler_class = getattr(diffusers, str(class_name), None)
    if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, SchedulerMixin)):
        raise WeightsError(f"{config_file} names {class_name!r}, which is not a diffusers scheduler.")
    return _load("scheduler", folder, lambda: scheduler_class.from_pretrained(folder, subfolder="scheduler"))


def _load_single_file_base(spec: ModelSpec, checkpoint: Path, *, dtype: torch.dtype) -> dict[str, Any]:
    """A community single-file checkpoint, with configs taken from the family's default base repo."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if checkpoint.suffix not in weights.SINGLE_FILE_SUFFIXES:
        raise UsageError(
            f"base={str(checkpoint)!r} is a {checkpoint.suffix or 'suffix-less'} file; give a "
            ".safetensors or .ckpt checkpoint, or a diffusers folder."
        )
    default = weights.default_source(spec.family, "base")
    try:
        config_folder = weights.resolve_source(default)
    except WeightsError as exc:
        raise WeightsError(f"a single-file checkpoint needs the configs of {default.repo_id}: {exc}") from exc
    pipeline_class = StableDiffusionPipeline if spec.family == "sd15" else StableDiffusionXLPipeline
    extra: dict[str, Any] = {}
    if spec.family == "sd15":
        extra = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    pipeline = _load(
        "checkpoint",
        checkpoint,
        lambda: pipeline_class.from_single_file(
            str(checkpoint), config=str(config_folder), torch_dtype=dtype, local_files_only=True, **extra
        ),
    )
    parts = {
        "tokenizer": pipeline.tokenizer,
        "text_encoder": pipeline.text_encoder,
        "vae": pipeline.vae,
        "unet": pipeline.unet,
        "scheduler": pipeline.scheduler,
    }
    if spec.family == "sdxl":
        parts["tokenizer_2"] = pipeline.tokenizer_2
        parts["text_encoder_2"] = pipeline.text_encoder_2
        if dtype == torch.float16:
            parts["vae"] = pipeline.vae.to(torch.float32)  # SDXL's VAE overflows in fp16
    return parts


def _load_model_file_or_folder(
    model_class: Any, path: Path, dtype: torch.dtype, what: str
) -> torch.nn.Module:
    """A LayerDiffuse model from a released single file or a `save_pretrained` folder."""
    if path.is_file():
        return model_class.from_single_file(path, torch_dtype=dtype)
    return _load(what, path, lambda: model_class.from_pretrained(path, torch_dtype=dtype))


# ---------------------------------------------------------------------------------------------------
# The AnimateDiff motion adapter.

_MODULE_KEY = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.motion_modules\.(\d+)\.")


def load_motion_adapter(
    ref: WeightsRef,
    *,
    dtype: torch.dtype | None = None,
    num_attention_heads: int = 8,
    norm_num_groups: int = 32,
) -> Any:
    """A diffusers `MotionAdapter` from a diffusers folder/repo or an original AnimateDiff motion module.

    Original `.ckpt` (loaded with `weights_only=True`) and `.safetensors` files are converted with
    diffusers' key rules; their config (channels, layers, mid block, max frames) is read off the tensor
    shapes, offline. `num_attention_heads` and `norm_num_groups` cannot be read from shapes: every released
    AnimateDiff module uses 8 heads and 32 groups.
    """
    from diffusers import MotionAdapter

    default = weights.DEFAULT_SOURCES["sd15"]["motion_adapter"]
    path = weights.resolve(ref, allow_patterns=default.allow_patterns)
    if path.is_dir():
        adapter = _load(
            "motion adapter", path, lambda: MotionAdapter.from_pretrained(path, torch_dtype=dtype)
        )
        return adapter.eval().requires_grad_(False)
    if path.suffix not in MOTION_MODULE_SUFFIXES:
        raise UsageError(
            f"motion_adapter={str(path)!r} is a {path.suffix or 'suffix-less'} file; give a diffusers "
            "MotionAdapter folder or repo id, or an AnimateDiff motion module "
            f"({', '.join(MOTION_MODULE_SUFFIXES)})."
        )
    original = read_motion_module(path)
    version = detect_motion_module_version(original)
    config = motion_adapter_config_from_original(original)
    config.update(motion_num_attention_heads=num_attention_heads, motion_norm_num_groups=norm_num_groups)
    logger.info("converting AnimateDiff %s motion module %s (config %s)", version, path.name, config)
    adapter = MotionAdapter(**config)
    converted = convert_motion_module_state_dict(original)
    result = adapter.load_state_dict(converted, strict=False)
    missing = [key for key in result.missing_keys if not key.endswith("pos_embed.pe")]  # computed buffers
    if missing or result.unexpected_keys:
        raise StateDictMismatchError(
            f"motion module {path} does not match the AnimateDiff layout: missing {missing[:3]}, unexpected "
            f"{result.unexpected_keys[:3]}; give an original AnimateDiff mm_*.ckpt / v3_*_mm.ckpt file."
        )
    if dtype is not None:
        adapter = adapter.to(dtype)
    return adapter.eval().requires_grad_(False)


def read_motion_module(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an original motion module file (safetensors, or a pickle read with weights_only)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state_dict: Any = load_file(str(path), device="cpu")
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors errors have no common base
        if safety.is_unsafe_pickle_error(exc):  # torch's own message suggests the unsafe switch: not ours
            raise safety.unsafe_checkpoint_error(exc, path, what="motion module") from exc
        raise WeightsError(
            f"cannot read motion module {path} ({type(exc).__name__}: {exc}); only safetensors and plain "
            "tensor checkpoints are loaded (weights_only)."
        ) from exc
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise WeightsError(f"motion module {path} does not hold a dict of tensors.")
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def detect_motion_module_version(state_dict: dict[str, torch.Tensor]) -> str:
    """'v1', 'v2' or 'v3' for an original AnimateDiff motion module (diffusers' single-file rules)."""
    pe_keys = [key for key in state_dict if key.endswith("attention_blocks.0.pos_encoder.pe")]
    if not pe_keys:
        raise StateDictMismatchError(
            "not an AnimateDiff motion module: no '…attention_blocks.0.pos_encoder.pe' tensor; give an "
            "original mm_sd_v15_v2.ckpt / v3_sd15_mm.ckpt file or a diffusers MotionAdapter."
        )
    if "mid_block.motion_modules.0.temporal_transformer.norm.bias" in state_dict:
        return "v2"
    if state_dict[pe_keys[0]].shape[1] == 24:
        return "v1"
    return "v3"


def convert_motion_module_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original AnimateDiff motion-module keys → diffusers MotionAdapter keys (pos_encoder tables dropped).

    diffusers' own converter (the one `MotionAdapter.from_single_file` uses), so the key mapping is
    maintained upstream; the config is still inferred offline from the tensors' shapes
    (`motion_adapter_config_from_original`), where `from_single_file` would fetch one from the hub.
    """
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    return convert_animatediff_checkpoint_to_diffusers(state_dict)


def motion_adapter_config_from_original(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """MotionAdapter config read off an original motion module's tensor shapes."""
    channels: dict[int, int] = {}
    layers: dict[int, int] = {}
    transformer_layers = 1
    for key, tensor in state_dict.items():
        match = _MODULE_KEY.match(key)
        if match is None or match[1] != "down_blocks":
            continue
        block, module = int(match[2]), int(match[3])
        layers[block] = max(layers.get(block, 0), module + 1)
        if key.endswith("temporal_transformer.proj_in.weight"):
            channels[block] = int(tensor.shape[0])
        found = re.search(r"\.transformer_blocks\.(\d+)\.", key)
        if found:
            transformer_layers = max(transformer_layers, int(found[1]) + 1)
    if not channels or sorted(channels) != list(range(len(channels))):
        raise StateDictMismatchError(
            "motion module has no down_blocks.{i}.motion_modules.{j}.temporal_transformer.proj_in weights; "
            "is it an AnimateDiff motion module?"
        )
    pe = next(t for k, t in state_dict.items() if k.endswith("pos_encoder.pe"))
    config: dict[str, Any] = {
        "block_out_channels": tuple(channels[i] for i in range(len(channels))),
        "motion_layers_per_block": layers[0],
        "motion_transformer_layers_per_block": transformer_layers,
        "motion_max_seq_length": int(pe.shape[1]),
        "use_motion_mid_block": any(key.startswith("mid_block.motion_modules.") for key in state_dict),
    }
    if "conv_in.weight" in state_dict:  # PIA-style adapters take extra input channels
        config["conv_in_channels"] = int(state_dict["conv_in.weight"].shape[1])
    return config
