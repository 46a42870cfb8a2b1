"""Community add-ons on a base model: LoRAs, MotionLoRAs and textual-inversion embeddings.

Everything loads through diffusers/peft, the way diffusers' `StableDiffusionLoraLoaderMixin` and
`AnimateDiffPipeline.load_lora_weights` do, so the formats diffusers reads are read here too: diffusers/peft
LoRAs (`pytorch_lora_weights.safetensors`), Kohya/A1111 LoRAs (`lora_unet_…`/`lora_te_…` keys, converted by
diffusers), diffusers MotionLoRAs (`guoyww/animatediff-motion-lora-*`) and original AnimateDiff MotionLoRA
checkpoints (`v2_lora_ZoomIn.ckpt`), and textual-inversion embeddings (diffusers `learned_embeds`, A1111
`.pt` with `string_to_param`, A1111 `.safetensors` with `emb_params`). Files are read safely only:
safetensors, or `torch.load(weights_only=True)`.

Where the calls go (the render layer wires them):

1. `load_loras(unet, text_encoder, refs, family)` on the freshly loaded base UNet and text encoder, *before*
   LayerDiffuse's weights are merged into the same attention projections. Each LoRA is fused into the
   weights at its scale and peft's wrappers are removed again, so the UNet stays a plain diffusers UNet:
   `UNetMotionModel.from_unet2d` copies the fused weights into stage two, the LayerDiffuse and
   Inter-Frame-Attention processors call the same (now LoRA-carrying) `to_q/to_k/to_v/to_out`, and a run
   pays nothing per step for its LoRAs.
2. `load_motion_loras(motion_unet, refs)` on the motion UNet that `build_motion_unet` returns (fused the
   same way; it touches only the motion modules).
3. `load_embeddings(text_encoder, tokenizer, refs)` once per session; a prompt (and the negative prompt:
   negative embeddings are ordinary tokens used there) goes through `expand_embedding_tokens` before it is
   tokenized, which spells a multi-vector embedding's token as its n tokens (diffusers' naming `name`,
   `name_1`, …, so diffusers' own `maybe_convert_prompt` reads the same tokenizer the same way).
4. `provenance(refs)` for the manifest: each reference with its resolved source and sha256.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from layeranim import weights
from layeranim.errors import UsageError, WeightsError

logger = logging.getLogger(__name__)

LORA_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
# The file a bare repository reference (`owner/name`) means, per kind (diffusers' conventions).
DEFAULT_FILE = {
    "lora": "pytorch_lora_weights.safetensors",
    "motion_lora": "diffusion_pytorch_model.safetensors",
    "embedding": "learned_embeds.safetensors",
}
# Original AnimateDiff motion-module names → diffusers' (the rules `components.load_motion_adapter` uses).
_ORIGINAL_MOTION_KEYS = (
    (".norms.0", ".norm1"),
    (".norms.1", ".norm2"),
    (".ff_norm", ".norm3"),
    (".attention_blocks.0", ".attn1"),
    (".attention_blocks.1", ".attn2"),
    (".temporal_transformer", ""),
)
_SDXL_TEXT_MARKERS = ("lora_te1_", "lora_te2_", "text_encoder_2.")
_FAMILY_CROSS_DIMS = {768: "sd15", 1024: "sd2", 2048: "sdxl"}
_SCALE = re.compile(r"^(?P<ref>.+):(?P<scale>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)$")


# ---------------------------------------------------------------------------------------------------
# References.


@dataclass(frozen=True)
class LoraRef:
    """A LoRA or MotionLoRA: a weights reference (local file/folder, `owner/name[/file]`) and its scale."""

    ref: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not str(self.ref).strip():
            raise UsageError("ref is empty; give a LoRA file, folder or hub reference.")
        if not math.isfinite(self.scale):
            raise UsageError(
                f"scale {self.scale!r} of LoRA {self.ref!r} is not a finite number; use e.g. 0.8."
            )


@dataclass(frozen=True)
class EmbeddingRef:
    """A textual-inversion embedding and the token that calls it (None: from the file, else its name)."""

    ref: str
    token: str | None = None

    def __post_init__(self) -> None:
        if not str(self.ref).strip():
            raise UsageError("ref is empty; give an embedding file, folder or hub reference.")
        if self.token is not None and (not self.token.strip() or any(c.isspace() for c in self.token)):
            raise UsageError(f"token {self.token!r} must be one word without spaces (e.g. 'EasyNegative').")


def parse_lora_ref(text: str) -> LoraRef:
    """`"REF[:SCALE]"` → `LoraRef`: `"owner/repo/file.safetensors:0.8"` is that file at scale 0.8.

    The scale is split off the last `:` only when what follows is a number, so `C:\\loras\\x.safetensors`
    and `owner/name@rev/file` keep their colons. No scale means 1.0.
    """
    text = str(text).strip()
    if not text:
        raise UsageError("text is empty; give REF or REF:SCALE, e.g. owner/repo/style.safetensors:0.8.")
    match = _SCALE.match(text)
    if match is None:
        return LoraRef(text)
    return LoraRef(match["ref"], float(match["scale"]))


# ---------------------------------------------------------------------------------------------------
# Files.


def resolve_file(ref: str, kind: str) -> Path:
    """A reference → the local weights file (downloaded into the hub cache when needed).

    A bare repository (`owner/name`) or a folder means its conventional file (`DEFAULT_FILE[kind]`), or, in
    a folder, its only `.safetensors` file.
    """
    default_name = DEFAULT_FILE[kind]
    path = weights.resolve(ref, allow_patterns=(default_name,))
    if path.is_dir():
        candidates = sorted(path.glob("*.safetensors"))
        if (path / default_name).is_file():
            path = path / default_name
        elif len(candidates) == 1:
            path = candidates[0]
        else:
            found = ", ".join(p.name for p in candidates) or "no .safetensors file"
            raise UsageError(
                f"{kind.replace('_', ' ')} {ref!r} is a folder without {default_name} ({found}); name the "
                "file, e.g. FOLDER/file.safetensors or owner/name/file.safetensors."
            )
    if path.suffix not in LORA_SUFFIXES:
        raise UsageError(
            f"{kind.replace('_', ' ')} {ref!r} is a {path.suffix or 'suffix-less'} file; give one of "
            f"{', '.join(LORA_SUFFIXES)}."
        )
    return path


def read_weights_file(path: Path, what: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A weights file's contents and safetensors metadata; pickles only through `weights_only=True`."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = dict(handle.metadata() or {})
                tensors: dict[str, Any] = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
            return tensors, metadata
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors, zip and unpickling errors share no base class
        raise WeightsError(
            f"cannot read {what} {path} ({type(exc).__name__}: {exc}); only safetensors and plain tensor "
            "checkpoints are loaded (weights_only)."
        ) from exc
    if not isinstance(loaded, dict):
        raise WeightsError(f"{what} {path} holds a {type(loaded).__name__}, not a dict of tensors.")
    if isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    return dict(loaded), {}


def _lora_metadata(metadata: dict[str, str]) -> dict[str, Any] | None:
    """diffusers' LoRA adapter config (rank, alpha per component) from a safetensors header, if present."""
    raw = metadata.get("lora_adapter_metadata")
    return json.loads(raw) if raw else None


def _tensors_only(state_dict: dict[str, Any], what: str, ref: str) -> dict[str, torch.Tensor]:
    tensors = {
        str(k).removeprefix("module."): v for k, v in state_dict.items() if isinstance(v, torch.Tensor)
    }
    if not tensors:
        raise WeightsError(f"{what} {ref!r} holds no tensors; is it a {what} file?")
    return tensors


# ---------------------------------------------------------------------------------------------------
# Family checks.


def lora_family_mismatch(
    state_dict: dict[str, torch.Tensor], *, family: str, cross_attention_dim: int
) -> str | None:
    """Why a raw LoRA state dict does not fit a `family` UNet with `cross_attention_dim`, or None.

    SDXL LoRAs carry a second text encoder (`lora_te1_`/`lora_te2_`, `text_encoder_2.`); any LoRA's
    cross-attention key/value projections take the text width (768 SD1.5, 1024 SD2, 2048 SDXL).
    """
    if family != "sdxl":
        marker = next((m for m in _SDXL_TEXT_MARKERS for key in state_dict if key.startswith(m)), None)
        if marker is not None:
            return f"it has SDXL text-encoder weights ({marker}…), so it is an SDXL LoRA"
    for key, tensor in state_dict.items():
        compact = key.replace("_", ".")
        is_cross_kv = "attn2" in compact and (".to.k." in compact or ".to.v." in compact)
        is_down = any(part in compact for part in ("lora.down", "lora.A", "down.weight"))
        if is_cross_kv and is_down and "motion.modules" not in compact and tensor.ndim == 2:
            width = int(tensor.shape[1])
            if width != cross_attention_dim:
                trained = _FAMILY_CROSS_DIMS.get(width)
                label = f"an {trained.upper()} LoRA" if trained else "a LoRA for another model"
                return (
                    f"its cross-attention takes {width}-wide text embeddings ({label}), the model "
                    f"{cross_attention_dim}"
                )
            break
    return None


# ---------------------------------------------------------------------------------------------------
# LoRAs on the base UNet and text encoder(s).


@dataclass(frozen=True)
class LoadedAdapter:
    """What was put into a model: the reference, its file, and its scale (LoRAs) or tokens (embeddings)."""

    kind: str  # lora | motion_lora | embedding
    ref: str
    path: Path
    scale: float | None = None
    tokens: tuple[str, ...] = ()


def _require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError as exc:
        raise WeightsError(
            "LoRAs need the `peft` package (diffusers loads them through it); install it with "
            "`pip install peft`."
        ) from exc


def load_loras(
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None,
    refs: Sequence[LoraRef],
    family: str,
    *,
    text_encoder_2: torch.nn.Module | None = None,
) -> list[LoadedAdapter]:
    """Fuse LoRAs into the base UNet and text encoder(s), each at its scale; peft's layers are removed again.

    Call on stage one's base models before LayerDiffuse's weights are applied. Scales add up: two LoRAs
    give `W + s1·ΔW1 + s2·ΔW2`, as diffusers' `set_adapters` + `fuse_lora` would. A text encoder given as
    None is left alone (its part of the LoRA is skipped, with a warning). A LoRA for another model family
    is a `UsageError` naming it; a file that is not a LoRA, or does not fit, a `WeightsError`.
    """
    if not refs:
        return []
    _require_peft()
    from diffusers.loaders import StableDiffusionLoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    loader = StableDiffusionXLLoraLoaderMixin if family == "sdxl" else StableDiffusionLoraLoaderMixin
    cross_attention_dim = int(unet.config.cross_attention_dim)  # type: ignore[union-attr]
    loaded: list[LoadedAdapter] = []
    for i, lora in enumerate(refs):
        path = resolve_file(lora.ref, "lora")
        raw, header = read_weights_file(path, "LoRA")
        raw = _tensors_only(raw, "LoRA", lora.ref)
        why = lora_family_mismatch(raw, family=family, cross_attention_dim=cross_attention_dim)
        if why is not None:
            raise UsageError(
                f"LoRA {lora.ref!r} (refs[{i}]) does not fit this {family} model: {why}. Use a LoRA trained "
                f"for the model's family ({family})."
            )
        # unet_config lets diffusers map LDM block names (input_blocks.*, as some A1111 files use) too.
        state_dict, network_alphas = loader.lora_state_dict(dict(raw), unet_config=unet.config)
        metadata = None if network_alphas else _lora_metadata(header)
        if not any(key.startswith(("unet.", "text_encoder.", "text_encoder_2.")) for key in state_dict):
            state_dict = {f"unet.{key}": value for key, value in state_dict.items()}  # bare UNet keys
        name = f"layeranim_lora_{i}"
        targets = [("unet", unet), ("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2)]
        found = {prefix for prefix, _ in targets if any(k.startswith(f"{prefix}.") for k in state_dict)}
        if not found:
            raise WeightsError(f"LoRA {lora.ref!r} ({path}) has no UNet or text-encoder LoRA weights.")
        skipped = [p for p, model in targets if p in found and model is None]
        if skipped:
            logger.warning("LoRA %s: its %s weights are not applied (no model given)", lora.ref, skipped)
        try:
            if "unet" in found:
                loader.load_lora_into_unet(
                    state_dict, network_alphas, unet, adapter_name=name, metadata=_part(metadata, "unet")
                )
                unet.fuse_lora(lora_scale=lora.scale, adapter_names=[name])  # type: ignore[operator]
                unet.unload_lora()  # type: ignore[operator]
            for prefix, encoder in targets[1:]:
                if prefix in found and encoder is not None:
                    _load_text_encoder_lora(
                        state_dict, network_alphas, encoder, prefix, name, lora.scale, metadata
                    )
        except (ValueError, RuntimeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"LoRA {lora.ref!r} ({path}) does not fit this model: {first}") from exc
        logger.info("fused LoRA %s at scale %s into %s", lora.ref, lora.scale, ", ".join(sorted(found)))
        loaded.append(LoadedAdapter("lora", lora.ref, path, scale=lora.scale))
    return loaded


def _part(metadata: dict[str, Any] | None, prefix: str) -> dict[str, Any] | None:
    """diffusers' metadata keys are `unet.r`, `text_encoder.lora_alpha`, …: keep those of one component."""
    if not metadata:
        return None
    part = {k: v for k, v in metadata.items() if k.startswith(f"{prefix}.")}
    return part or None


def _load_text_encoder_lora(
    state_dict: dict[str, torch.Tensor],
    network_alphas: dict[str, float] | None,
    encoder: torch.nn.Module,
    prefix: str,
    name: str,
    scale: float,
    metadata: dict[str, Any] | None,
) -> None:
    """diffusers' text-encoder LoRA steps (key conversion, LoraConfig from ranks/alphas or the file's
    metadata), injected with peft directly: transformers' own adapter API wants a newer peft."""
    from diffusers.loaders.lora_base import fuse_text_encoder_lora
    from diffusers.utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        recurse_remove_peft_layers,
    )
    from diffusers.utils.peft_utils import get_peft_kwargs
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    part = {k.removeprefix(f"{prefix}."): v for k, v in state_dict.items() if k.startswith(f"{prefix}.")}
    part = convert_state_dict_to_peft(convert_state_dict_to_diffusers(part))
    if not hasattr(encoder, "text_model"):  # transformers 5 flattens CLIPTextModel
        part = {k.removeprefix("text_model."): v for k, v in part.items()}
    config_kwargs = {
        k.removeprefix(f"{prefix}."): v for k, v in (metadata or {}).items() if k.startswith(f"{prefix}.")
    }
    if not config_kwargs:
        ranks = {k: int(v.shape[1]) for k, v in part.items() if "lora_B" in k and v.ndim == 2}
        alphas = {
            k.removeprefix(f"{prefix}."): v
            for k, v in (network_alphas or {}).items()
            if k.split(".")[0] == prefix
        }
        config_kwargs = get_peft_kwargs(ranks, alphas, part, is_unet=False)
    inject_adapter_in_model(LoraConfig(**config_kwargs), encoder, adapter_name=name)
    result = set_peft_model_state_dict(encoder, part, adapter_name=name)
    unexpected = [key for key in getattr(result, "unexpected_keys", []) if "lora_" in key]
    if unexpected:
        raise ValueError(f"{len(unexpected)} {prefix} LoRA weight(s) match no layer, e.g. {unexpected[0]}")
    fuse_text_encoder_lora(encoder, lora_scale=scale, adapter_names=[name])
    recurse_remove_peft_layers(encoder)  # keeps the merged base layers, as diffusers' unload does
    if getattr(encoder, "peft_config", None) is not None:
        del encoder.peft_config


# ---------------------------------------------------------------------------------------------------
# MotionLoRAs on the motion UNet.


def motion_lora_state_dict(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A MotionLoRA in diffusers or original AnimateDiff layout → diffusers keys under `unet.`."""
    converted = {}
    for key, tensor in raw.items():
        key = key.removeprefix("module.").removeprefix("unet.").replace(".processor.", ".")
        for old, new in _ORIGINAL_MOTION_KEYS:
            key = key.replace(old, new)
        converted[f"unet.{key}"] = tensor
    return converted


def load_motion_loras(motion_unet: torch.nn.Module, refs: Sequence[LoraRef]) -> list[LoadedAdapter]:
    """Fuse MotionLoRAs (camera moves) into a `UNetMotionModel`'s motion modules, each at its scale.

    Call on the motion UNet `build_motion_unet` returned; the spatial layers, LayerDiffuse's and IFA's
    processors are not touched. A file with weights outside the motion modules is refused: use `load_loras`.
    """
    if not refs:
        return []
    _require_peft()
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    loaded: list[LoadedAdapter] = []
    for i, lora in enumerate(refs):
        path = resolve_file(lora.ref, "motion_lora")
        raw, header = read_weights_file(path, "MotionLoRA")
        raw = _tensors_only(raw, "MotionLoRA", lora.ref)
        outside = [key for key in raw if "motion_modules" not in key]
        if outside:
            raise UsageError(
                f"motion LoRA {lora.ref!r} (refs[{i}]) has weights outside the motion modules (e.g. "
                f"{outside[0]!r}); it is an image LoRA: load it as a LoRA on the base model instead."
            )
        state_dict = motion_lora_state_dict(raw)
        name = f"layeranim_motion_lora_{i}"
        try:
            StableDiffusionLoraLoaderMixin.load_lora_into_unet(
                state_dict,
                None,
                motion_unet,
                adapter_name=name,
                metadata=_part(_lora_metadata(header), "unet"),
            )
            motion_unet.fuse_lora(lora_scale=lora.scale, adapter_names=[name])  # type: ignore[operator]
            motion_unet.unload_lora()  # type: ignore[operator]
        except (ValueError, RuntimeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(
                f"motion LoRA {lora.ref!r} ({path}) does not fit this motion module: {first}"
            ) from exc
        logger.info("fused motion LoRA %s at scale %s", lora.ref, lora.scale)
        loaded.append(LoadedAdapter("motion_lora", lora.ref, path, scale=lora.scale))
    return loaded


# ---------------------------------------------------------------------------------------------------
# Textual-inversion embeddings.


def read_embedding(path: Path, ref: str, token: str | None) -> tuple[str, torch.Tensor]:
    """An embedding file → (token, vectors (n, c)). diffusers `{token: tensor}`, A1111 `string_to_param`
    (`.pt`) and `emb_params` (`.safetensors`); A1111 files are called by their file name."""
    data, _ = read_weights_file(path, "embedding")
    if isinstance(data.get("string_to_param"), dict):
        vectors, file_token = data["string_to_param"].get("*"), path.stem
    elif "emb_params" in data:
        vectors, file_token = data["emb_params"], path.stem
    elif "clip_l" in data or "clip_g" in data:
        raise UsageError(
            f"embedding {ref!r} is an SDXL embedding (clip_l/clip_g vectors); only SD1.5 embeddings (one "
            "text encoder) are loaded, so use one trained for SD1.5."
        )
    elif len(data) == 1:
        file_token, vectors = next(iter(data.items()))
    else:
        raise WeightsError(
            f"embedding {ref!r} ({path}) is not a textual-inversion file: expected one {{token: tensor}} "
            f"entry, `string_to_param` or `emb_params`, found keys {sorted(map(str, data))[:4]}."
        )
    if not isinstance(vectors, torch.Tensor) or vectors.ndim not in (1, 2):
        raise WeightsError(f"embedding {ref!r} ({path}) does not hold a (vectors, width) tensor.")
    return token or str(file_token), vectors.reshape(-1, vectors.shape[-1])


def load_embeddings(
    text_encoder: torch.nn.Module, tokenizer: Any, refs: Sequence[EmbeddingRef]
) -> list[LoadedAdapter]:
    """Add textual-inversion tokens to the tokenizer and their vectors to the text encoder's embedding table.

    A multi-vector embedding `name` becomes tokens `name`, `name_1`, …; `expand_embedding_tokens` spells
    `name` in a prompt as all of them. Negative embeddings are the same: use their token in the negative
    prompt.
    """
    loaded: list[LoadedAdapter] = []
    for i, embedding in enumerate(refs):
        path = resolve_file(embedding.ref, "embedding")
        token, vectors_nc = read_embedding(path, embedding.ref, embedding.token)
        table = text_encoder.get_input_embeddings()  # type: ignore[operator]
        width = int(table.weight.shape[1])
        if vectors_nc.shape[1] != width:
            raise UsageError(
                f"embedding {embedding.ref!r} (refs[{i}]) has {vectors_nc.shape[1]}-wide vectors; this text "
                f"encoder takes {width}. Use an embedding trained for this model family."
            )
        tokens = [token] + [f"{token}_{j}" for j in range(1, vectors_nc.shape[0])]
        taken = [t for t in tokens if t in tokenizer.get_vocab()]
        if taken:
            raise UsageError(
                f"embedding {embedding.ref!r}: token {taken[0]!r} is already in the tokenizer (another "
                "embedding, or a word); give it another token."
            )
        tokenizer.add_tokens(tokens)
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # type: ignore[operator]
        table = text_encoder.get_input_embeddings()  # type: ignore[operator]
        ids = tokenizer.convert_tokens_to_ids(tokens)
        with torch.no_grad():
            table.weight[ids] = vectors_nc.to(device=table.weight.device, dtype=table.weight.dtype)
        table.weight.requires_grad_(False)
        logger.info("embedding %s: token %r (%d vectors)", embedding.ref, token, len(tokens))
        loaded.append(LoadedAdapter("embedding", embedding.ref, path, tokens=tuple(tokens)))
    return loaded


def expand_embedding_tokens(prompt: str, tokenizer: Any) -> str:
    """Spell each multi-vector embedding token in `prompt` as all its tokens (`name` → `name name_1 …`).

    Matched case-insensitively and anywhere, as CLIP's tokenizer matches added tokens (it lower-cases the
    text first), so the expansion lands exactly where the tokenizer would see the token.
    """
    added = tokenizer.added_tokens_encoder
    expansions = {}
    for token in added:
        following = []
        while f"{token}_{len(following) + 1}" in added:
            following.append(f"{token}_{len(following) + 1}")
        if following:
            expansions[token.lower()] = " ".join([token, *following])
    if not expansions:
        return prompt
    names = "|".join(re.escape(token) for token in sorted(expansions, key=len, reverse=True))
    pattern = re.compile(rf"(?:{names})(?!_\d)", re.IGNORECASE)
    return pattern.sub(lambda match: expansions[match.group(0).lower()], prompt)


# ---------------------------------------------------------------------------------------------------
# Provenance.


def provenance(
    items: Sequence[LoadedAdapter | LoraRef | EmbeddingRef], *, lora_kind: str = "lora"
) -> list[dict[str, Any]]:
    """Manifest records: each add-on's reference, resolved source (`owner/name@commit/file` or path), sha256,
    and scale (LoRAs) or tokens (embeddings).

    Give the `LoadedAdapter`s the loaders returned, or references: those are resolved as the loaders resolve
    them (`LoraRef`s as `lora_kind`: "lora" or "motion_lora").
    """
    if lora_kind not in ("lora", "motion_lora"):
        raise UsageError(f"lora_kind {lora_kind!r} is not 'lora' or 'motion_lora'.")
    records = []
    for item in items:
        if isinstance(item, LoraRef | EmbeddingRef):
            kind = "embedding" if isinstance(item, EmbeddingRef) else lora_kind
            path = resolve_file(item.ref, kind)
            item = LoadedAdapter(kind, item.ref, path, scale=getattr(item, "scale", None))
        record: dict[str, Any] = {
            "kind": item.kind,
            "ref": item.ref,
            "source": weights.describe_path(item.path),
            "sha256": weights.file_sha256(item.path),
        }
        if item.scale is not None:
            record["scale"] = item.scale
        if item.tokens:
            record["tokens"] = list(item.tokens)
        records.append(record)
    return records
