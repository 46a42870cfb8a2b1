"""LayerDiffuse UNet weights: the SD1.5 attention-sharing file and the SDXL LoRA, applied to a diffusers UNet.

Both released files make the UNet generate in LayerDiffuse's "transparent latent space" (internals §3–4):

- SD1.5 `layer_sd15_transparent_attn.safetensors` is an attention-sharing unit run with frames=1: a rank-256
  LoRA on to_q/to_k/to_v/to_out of all 32 spatial attention modules (attn1 and attn2 of the 16 transformers)
  plus a "temporal" branch. With one frame the temporal attention has a single key, so its softmax is 1 and
  the branch reduces to `T(z) = temporal_o(temporal_v(temporal_i(temporal_n(z))))`. We merge the LoRAs into
  the base weights once (`W += up @ down`) and install `LayerDiffuseAttnProcessor`, which returns
  `o + T(h + o)`.
- SDXL `layer_xl_transparent_attn.safetensors` is a plain rank-256 LoRA in Forge's "frozen patcher" format,
  `diffusion_model.<LDM path>.to_{q,k,v,out.0}.weight::lora::{0 up | 1 down}`, merged as `W += up @ down`.

Axis legend: b = batch (frames folded in), n = query tokens, m = key tokens, h = heads, d = head dim,
c = channels.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from os import PathLike
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from einops import rearrange
from torch import nn

from layeranim.errors import StateDictMismatchError, WeightsError

logger = logging.getLogger(__name__)

SD15_RANK = 256
PROCESSORS_FORMAT = "layeranim-layerdiffuse-processors"
PROCESSORS_FORMAT_VERSION = "1"
_LORA_PROJECTIONS = (
    ("to_q_lora", "to_q"),
    ("to_k_lora", "to_k"),
    ("to_v_lora", "to_v"),
    ("to_out_lora", "to_out.0"),
)
_SDXL_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


# --------------------------------------------------------------------------------------------------
# Checkpoint files


def load_safetensors_file(path: str | PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a `.safetensors` file onto the CPU (the only format we load: no pickles)."""
    file = Path(path)
    if not file.is_file():
        raise WeightsError(f"weights file not found: {file}. Check the path or download the file first.")
    if file.suffix != ".safetensors":
        raise WeightsError(
            f"weights file {file} is not a .safetensors file; only safetensors are loaded (safe loading). "
            "Convert it with safetensors.torch.save_file first."
        )
    from safetensors.torch import load_file

    try:
        return load_file(str(file), device="cpu")
    except Exception as exc:  # safetensors raises several exception types for corrupt headers
        raise WeightsError(f"cannot read {file} as safetensors ({exc}); the file may be truncated.") from exc


def _first(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")


def check_state_dict(
    expected_shapes: Mapping[str, tuple[int, ...]],
    state_dict: Mapping[str, torch.Tensor],
    *,
    what: str,
    hint: str = "",
) -> None:
    """Raise StateDictMismatchError naming the first missing, unexpected and mis-shaped keys, if any."""
    missing = [key for key in expected_shapes if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected_shapes]
    misshaped = [
        f"{key} {tuple(state_dict[key].shape)} (expected {tuple(shape)})"
        for key, shape in expected_shapes.items()
        if key in state_dict and tuple(state_dict[key].shape) != tuple(shape)
    ]
    if not (missing or unexpected or misshaped):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_first(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_first(unexpected)}")
    if misshaped:
        parts.append(f"{len(misshaped)} mis-shaped key(s): {_first(misshaped)}")
    message = f"{what} does not match the expected layout: " + "; ".join(parts) + "."
    raise StateDictMismatchError(message + (f" {hint}" if hint else ""))


# --------------------------------------------------------------------------------------------------
# The attention processor


class LayerDiffuseAttnProcessor(nn.Module):
    """Standard SDPA attention plus LayerDiffuse's attention-sharing branch reduced to one frame.

    Returns `o + T(h + o)` with `o` the ordinary attention output (through the module's own, LoRA-merged
    to_q/to_k/to_v/to_out) and `T = temporal_o ∘ temporal_v ∘ temporal_i ∘ temporal_n`. `temporal_q` and
    `temporal_k` are kept only so that the released file loads strictly: with frames=1 the temporal attention
    has one key, its softmax is exactly 1, and the query/key projections drop out.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.temporal_i = nn.Linear(dim, dim)
        self.temporal_q = nn.Linear(dim, dim)  # unused at frames=1 (see class docstring)
        self.temporal_k = nn.Linear(dim, dim)  # unused at frames=1
        self.temporal_v = nn.Linear(dim, dim)
        self.temporal_o = nn.Linear(dim, dim)
        self.temporal_n = nn.LayerNorm(dim, eps=eps)

    def transparency_branch(
        self, hidden_states_bnc: torch.Tensor, attn_output_bnc: torch.Tensor
    ) -> torch.Tensor:
        """The frames=1 attention-sharing branch `T(h + o)` (LayerNorm first, then Linear i)."""
        mixed_bnc = self.temporal_n(hidden_states_bnc + attn_output_bnc)
        return self.temporal_o(self.temporal_v(self.temporal_i(mixed_bnc)))

    def __call__(  # type: ignore[override]
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: object,
        **kwargs: object,
    ) -> torch.Tensor:
        # Same steps as diffusers' AttnProcessor2_0, with the transparency branch added before the residual.
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            height, width = hidden_states.shape[-2:]
            hidden_states = rearrange(hidden_states, "b c y x -> b (y x) c")
        h_bnc = hidden_states  # the attention input `h` of the reference form (norm1(x) or norm2(x))

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch_size, key_length = context.shape[:2]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, key_length, batch_size)
            attention_mask = rearrange(attention_mask, "(b h) n m -> b h n m", h=attn.heads)

        if attn.group_norm is not None:
            hidden_states = rearrange(
                attn.group_norm(rearrange(hidden_states, "b n c -> b c n")), "b c n -> b n c"
            )

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        query, key, value = (rearrange(t, "b n (h d) -> b h n d", h=attn.heads) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        out_bhnd = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0)
        out_bnc = rearrange(out_bhnd, "b h n d -> b n (h d)").to(query.dtype)
        out_bnc = attn.to_out[1](attn.to_out[0](out_bnc))  # linear projection, then dropout

        out_bnc = out_bnc + self.transparency_branch(h_bnc, out_bnc)  # o + T(h + o)

        out = rearrange(out_bnc, "b (y x) c -> b c y x", y=height, x=width) if input_ndim == 4 else out_bnc
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


# --------------------------------------------------------------------------------------------------
# Where the weights go


def spatial_attention_names(unet: nn.Module) -> list[str]:
    """Module paths of the spatial attn1/attn2 modules, in `attn_processors` order (down, up, mid last)."""
    names = []
    for processor_name in unet.attn_processors:  # type: ignore[attr-defined]
        module_name = processor_name.removesuffix(".processor")
        if ".motion_modules." in module_name or ".transformer_blocks." not in module_name:
            continue
        if ".attentions." in module_name and module_name.rsplit(".", 1)[-1] in ("attn1", "attn2"):
            names.append(module_name)
    return names


def _attention(unet: nn.Module, name: str) -> Attention:
    module = unet.get_submodule(name)
    if not isinstance(module, Attention):
        raise WeightsError(f"{name} is a {type(module).__name__}, not a diffusers Attention module.")
    return module


def _projection(attn: Attention, projection: str) -> nn.Linear:
    linear = attn.get_submodule(projection)
    if not isinstance(linear, nn.Linear):
        raise WeightsError(
            f"{projection} of {type(attn).__name__} is a {type(linear).__name__}, not a Linear."
        )
    return linear


def sd15_attn_state_dict_shapes(unet: nn.Module, rank: int = SD15_RANK) -> dict[str, tuple[int, ...]]:
    """Keys/shapes of `layer_sd15_transparent_attn.safetensors` for this UNet (index i = spatial module i)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for index, name in enumerate(spatial_attention_names(unet)):
        attn = _attention(unet, name)
        prefix = f"hookers.layers.{index}."
        for lora_name, projection in _LORA_PROJECTIONS:
            linear = _projection(attn, projection)
            shapes[f"{prefix}{lora_name}.0.down.weight"] = (rank, linear.in_features)
            shapes[f"{prefix}{lora_name}.0.up.weight"] = (linear.out_features, rank)
        dim = _projection(attn, "to_out.0").out_features  # the branch acts on h + o, of the query width
        for part in "iqkvo":
            shapes[f"{prefix}temporal_{part}.weight"] = (dim, dim)
            shapes[f"{prefix}temporal_{part}.bias"] = (dim,)
        shapes[f"{prefix}temporal_n.weight"] = (dim,)
        shapes[f"{prefix}temporal_n.bias"] = (dim,)
    return shapes


@torch.no_grad()
def _merge_lora_(linear: nn.Linear, up: torch.Tensor, down: torch.Tensor) -> None:
    """`W += up @ down` in fp32, cast back to the layer's dtype (scale 1: the files carry no alpha)."""
    weight = linear.weight
    delta = up.to(device=weight.device, dtype=torch.float32) @ down.to(
        device=weight.device, dtype=torch.float32
    )
    weight.copy_((weight.float() + delta).to(weight.dtype))


def _install(unet: nn.Module, processors: Mapping[str, nn.Module | object]) -> None:
    """`set_attn_processor` with a dict covering every processor, replacing only the given ones."""
    current = dict(unet.attn_processors)  # type: ignore[attr-defined]
    unknown = [name for name in processors if name not in current]
    if unknown:
        raise WeightsError(f"the UNet has no attention processor named {_first(unknown)}.")
    current.update(processors)
    unet.set_attn_processor(current)  # type: ignore[attr-defined]


def _lora_rank(state_dict: Mapping[str, torch.Tensor], down_key_suffix: str, default: int) -> int:
    for key, tensor in state_dict.items():
        if key.endswith(down_key_suffix) and tensor.ndim == 2:
            return int(tensor.shape[0])
    return default


def apply_layerdiffuse_sd15(
    unet: nn.Module, state_dict: Mapping[str, torch.Tensor]
) -> dict[str, LayerDiffuseAttnProcessor]:
    """Merge the SD1.5 transparent-attn LoRAs and install the frames=1 attention-sharing processors.

    Works on `UNet2DConditionModel` and `UNetMotionModel` (motion modules are left alone). The merge changes
    the UNet's weights in place and is not undone; applying twice is refused. Returns the installed
    processors keyed by processor name (`...attn1.processor`), e.g. for `reinstall_processors`.
    """
    names = spatial_attention_names(unet)
    if not names:
        raise WeightsError("the UNet has no spatial transformer attention; is it an SD1.5-style UNet?")
    current = unet.attn_processors  # type: ignore[attr-defined]
    if any(isinstance(current[f"{name}.processor"], LayerDiffuseAttnProcessor) for name in names):
        raise WeightsError("LayerDiffuse SD1.5 weights are already applied to this UNet; load a fresh UNet.")

    rank = _lora_rank(state_dict, "to_q_lora.0.down.weight", SD15_RANK)
    check_state_dict(
        sd15_attn_state_dict_shapes(unet, rank),
        state_dict,
        what="LayerDiffuse SD1.5 attention weights",
        hint="Use layer_sd15_transparent_attn.safetensors (layerdiffusion-v1) with an SD1.5 UNet.",
    )

    processors: dict[str, LayerDiffuseAttnProcessor] = {}
    for index, name in enumerate(names):
        attn = _attention(unet, name)
        prefix = f"hookers.layers.{index}."
        for lora_name, projection in _LORA_PROJECTIONS:
            _merge_lora_(
                _projection(attn, projection),
                up=state_dict[f"{prefix}{lora_name}.0.up.weight"],
                down=state_dict[f"{prefix}{lora_name}.0.down.weight"],
            )
        reference = attn.to_q.weight
        processor = LayerDiffuseAttnProcessor(_projection(attn, "to_out.0").out_features)
        branch = {
            key.removeprefix(prefix): tensor
            for key, tensor in state_dict.items()
            if key.startswith(prefix + "temporal_")
        }
        processor.load_state_dict(branch, strict=True)
        processors[f"{name}.processor"] = processor.to(device=reference.device, dtype=reference.dtype)
    _install(unet, processors)
    logger.debug("LayerDiffuse SD1.5: merged rank-%d LoRAs into %d attention modules", rank, len(names))
    return processors


def reinstall_processors(unet: nn.Module, processors: Mapping[str, LayerDiffuseAttnProcessor]) -> None:
    """Install processors again (e.g. after `UNetMotionModel.from_unet2d`, which drops custom processors).

    Each processor is cast to the device and dtype of the attention module it is attached to.
    """
    for processor_name, processor in processors.items():
        attn = _attention(unet, processor_name.removesuffix(".processor"))
        processor.to(device=attn.to_q.weight.device, dtype=attn.to_q.weight.dtype)
    _install(unet, processors)


def remove_processors(unet: nn.Module, processors: Mapping[str, LayerDiffuseAttnProcessor]) -> None:
    """Put plain `AttnProcessor2_0` back on the given modules (the merged LoRA weights stay).

    Needed before `UNetMotionModel.from_unet2d`: it copies the attention blocks with a strict
    `load_state_dict`, and the processors' own weights would be unexpected keys there.
    """
    _install(unet, {name: AttnProcessor2_0() for name in processors})


# --------------------------------------------------------------------------------------------------
# SDXL


def _ldm_attention_blocks(unet: nn.Module) -> Iterator[tuple[str, str]]:
    """(diffusers `…attentions.j` path, LDM `…_blocks.i.1` path) for every attention block of the UNet."""
    config = unet.config  # type: ignore[attr-defined]
    num_blocks = len(config.block_out_channels)
    layers = config.layers_per_block
    layers_per_block = [layers] * num_blocks if isinstance(layers, int) else list(layers)

    ldm_index = 1  # input_blocks.0 is conv_in
    for block, count in enumerate(layers_per_block):
        for layer in range(count):
            yield f"down_blocks.{block}.attentions.{layer}", f"input_blocks.{ldm_index}.1"
            ldm_index += 1
        ldm_index += 1 if block < num_blocks - 1 else 0  # the downsampler has its own input block
    yield "mid_block.attentions.0", "middle_block.1"
    ldm_index = 0
    for block, count in enumerate(reversed(layers_per_block)):
        for layer in range(count + 1):
            yield f"up_blocks.{block}.attentions.{layer}", f"output_blocks.{ldm_index}.1"
            ldm_index += 1


def _sdxl_key_targets(unet: nn.Module, rank: int) -> dict[str, tuple[str, str, tuple[int, ...]]]:
    """LDM LoRA key -> (diffusers module path, "up"/"down", expected shape), for every spatial attention."""
    ldm_blocks = dict(_ldm_attention_blocks(unet))
    targets: dict[str, tuple[str, str, tuple[int, ...]]] = {}
    for name in spatial_attention_names(unet):
        block, _, rest = name.partition(".transformer_blocks.")  # rest = "{n}.attn1"
        if block not in ldm_blocks:
            raise WeightsError(f"cannot map {name} to an LDM name; is this an SDXL-style UNet?")
        attn = _attention(unet, name)
        for projection in _SDXL_PROJECTIONS:
            linear = _projection(attn, projection)
            ldm = f"diffusion_model.{ldm_blocks[block]}.transformer_blocks.{rest}.{projection}.weight"
            path = f"{name}.{projection}"
            targets[f"{ldm}::lora::0"] = (path, "up", (linear.out_features, rank))
            targets[f"{ldm}::lora::1"] = (path, "down", (rank, linear.in_features))
    return targets


def sdxl_attn_state_dict_shapes(unet: nn.Module, rank: int = SD15_RANK) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of `layer_xl_transparent_attn.safetensors` expected for this UNet (LDM naming)."""
    return {key: shape for key, (_, _, shape) in _sdxl_key_targets(unet, rank).items()}


def apply_layerdiffuse_sdxl(unet: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Merge the SDXL transparent-attn LoRA (`…weight::lora::{0 up|1 down}`, LDM names) into the UNet.

    Strict: every key must map to an existing attention projection with matching shapes, and every spatial
    attention projection must be covered. The merge changes the UNet's weights in place.
    """
    if not spatial_attention_names(unet):
        raise WeightsError("the UNet has no spatial transformer attention; is it an SDXL-style UNet?")
    rank = _lora_rank(state_dict, "::lora::1", SD15_RANK)
    targets = _sdxl_key_targets(unet, rank)
    check_state_dict(
        {key: shape for key, (_, _, shape) in targets.items()},
        state_dict,
        what="LayerDiffuse SDXL attention weights",
        hint="Use layer_xl_transparent_attn.safetensors (layerdiffusion-v1) with an SDXL UNet.",
    )
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, (path, role, _) in targets.items():
        pairs.setdefault(path, {})[role] = state_dict[key]
    for path, pair in pairs.items():
        module_path, _, projection = path.partition(".to_")
        _merge_lora_(
            _projection(_attention(unet, module_path), "to_" + projection), up=pair["up"], down=pair["down"]
        )
    logger.debug("LayerDiffuse SDXL: merged rank-%d LoRAs into %d projections", rank, len(pairs))


# --------------------------------------------------------------------------------------------------
# Saving and restoring installed processors (a diffusers `from_pretrained` builds plain processors)


def layerdiffuse_processors(unet: nn.Module) -> dict[str, LayerDiffuseAttnProcessor]:
    """The LayerDiffuse processors installed on a UNet, keyed by processor name, looking through a wrapping
    processor's `base` (Inter-Frame Attention wraps the attn1 ones)."""
    found: dict[str, LayerDiffuseAttnProcessor] = {}
    for name, processor in unet.attn_processors.items():  # type: ignore[attr-defined]
        inner = (
            processor
            if isinstance(processor, LayerDiffuseAttnProcessor)
            else getattr(processor, "base", None)
        )
        if isinstance(inner, LayerDiffuseAttnProcessor):
            found[name] = inner
    return found


@contextlib.contextmanager
def plain_attention_processors(unet: nn.Module) -> Iterator[None]:
    """Inside the block every processor with weights is a plain `AttnProcessor2_0`, so `unet.state_dict()`
    (and `save_pretrained`) holds the diffusers layout only; the same processor objects come back after."""
    installed = dict(unet.attn_processors)  # type: ignore[attr-defined]
    plain = {name: AttnProcessor2_0() if isinstance(p, nn.Module) else p for name, p in installed.items()}
    unet.set_attn_processor(plain)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        unet.set_attn_processor(installed)  # type: ignore[attr-defined]


def save_layerdiffuse_processors(
    path: str | PathLike[str], processors: Mapping[str, LayerDiffuseAttnProcessor]
) -> None:
    """Write the processors' weights (`<attention path>.temporal_*`) to one safetensors file, atomically.

    The LoRAs are already merged into the UNet's own weights; this file holds only what
    `LayerDiffuseAttnProcessor` adds, with each LayerNorm's epsilon in the metadata.
    """
    from safetensors.torch import save_file

    if not processors:
        raise WeightsError("processors is empty; pass the dict layerdiffuse_processors(unet) returns.")
    tensors: dict[str, torch.Tensor] = {}
    eps: dict[str, float] = {}
    for name, processor in processors.items():
        module_path = name.removesuffix(".processor")
        for key, tensor in processor.state_dict().items():
            tensors[f"{module_path}.{key}"] = tensor.detach().to("cpu").contiguous()
        eps[module_path] = processor.temporal_n.eps
    metadata = {
        "format": PROCESSORS_FORMAT,
        "format_version": PROCESSORS_FORMAT_VERSION,
        "eps": json.dumps(eps),
    }
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    temporary = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(temporary), metadata=metadata)
        os.replace(temporary, file)
    finally:
        temporary.unlink(missing_ok=True)


def load_layerdiffuse_processors(
    unet: nn.Module, path: str | PathLike[str]
) -> dict[str, LayerDiffuseAttnProcessor]:
    """Rebuild and install the processors `save_layerdiffuse_processors` wrote (cast to each attention
    module's device and dtype); returns them keyed by processor name."""
    from safetensors import safe_open

    file = Path(path)
    try:
        with safe_open(str(file), framework="pt") as weights:
            metadata = dict(weights.metadata() or {})
            tensors = {key: weights.get_tensor(key) for key in weights.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several exception types for corrupt headers
        raise WeightsError(f"cannot read {file} as safetensors ({exc}); the file may be truncated.") from exc
    if (
        metadata.get("format") != PROCESSORS_FORMAT
        or metadata.get("format_version") != PROCESSORS_FORMAT_VERSION
    ):
        raise WeightsError(
            f"{file} is not a LayerDiffuse processors file (format {metadata.get('format')!r} version "
            f"{metadata.get('format_version')!r}); pass the file a pipeline's save_pretrained wrote."
        )
    eps: dict[str, float] = json.loads(metadata.get("eps", "{}"))
    processors: dict[str, LayerDiffuseAttnProcessor] = {}
    for module_path, epsilon in eps.items():
        prefix = f"{module_path}."
        state = {key.removeprefix(prefix): t for key, t in tensors.items() if key.startswith(prefix)}
        if "temporal_i.weight" not in state:
            raise StateDictMismatchError(f"{file} has no weights for {module_path}; the file is incomplete.")
        processor = LayerDiffuseAttnProcessor(state["temporal_i.weight"].shape[0], eps=epsilon)
        processor.load_state_dict(state, strict=True)
        processors[f"{module_path}.processor"] = processor
    reinstall_processors(unet, processors)
    return processors
