"""Inter-Frame Attention (Layer-Animate §III-B, eq. 3) as a diffusers attention processor.

Every spatial self-attention (attn1 of the spatial transformer blocks, never the motion modules) of a
diffusers `UNetMotionModel` gets an `InterFrameAttnProcessor` that wraps the processor it had and adds

    Out' = softmax((X^i W_Q')(X^m W_K)^T / √d) (X^m W_V) W_O'                         (eq. 3)

to its output: every frame i queries the tokens of the middle frame m of its own video. W_K and W_V are
the host attention's own `to_k`/`to_v`; W_Q' (`to_q_ifa`, initialised as a copy of `to_q`) and W_O'
(`to_out_ifa`, initialised at zero) are the only new parameters, so an untrained IFA is exactly the
baseline. The processors learn the frame count from a forward pre-hook on the UNet that fills a shared
`FrameContext`, so no `cross_attention_kwargs` are needed.

Axis legend: b videos in the UNet batch (2 with classifier-free guidance: [uncond, cond]), f frames,
n spatial tokens (y·x), c channels, h heads, d head dim. The UNet folds frames into rows `b*F + f`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNetMotionModel
from diffusers.models.attention_processor import Attention
from einops import rearrange
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.hooks import RemovableHandle

from layeranim.errors import OutputExistsError, StateDictMismatchError, UsageError, WeightsError

logger = logging.getLogger(__name__)

IFA_FORMAT = "layeranim-ifa"
IFA_FORMAT_VERSION = "1"
IFA_REQUIRED_METADATA = ("base_model", "motion_adapter", "frames")
_RESERVED_METADATA = ("format", "format_version", "layeranim_version", "num_modules")
_PROCESSOR_SUFFIX = ".processor"
_CONTEXT_ATTRIBUTE = "_layeranim_ifa_context"
_MAX_NAMED_KEYS = 3


def middle_frame_index(frames: int) -> int:
    """The conditioning frame m = (F − 1) // 2 of Layer-Animate §III-B (0-based 7, the eighth of 16)."""
    if frames < 1:
        raise UsageError(f"frames={frames} must be at least 1.")
    return (frames - 1) // 2


@dataclass
class FrameContext:
    """How the rows of the current UNet call fold into videos; shared by all IFA processors of one UNet.

    `install_inter_frame_attention` registers a forward pre-hook that calls `update` with the sample's
    batch and frame count before every UNet call. `enabled=False` turns every IFA branch off.
    """

    batch: int | None = None
    frames: int | None = None
    middle: int | None = None
    enabled: bool = True
    # The base frame's position in the next UNet calls when it is not the middle one (a context window
    # that holds the clean base frame elsewhere, or `base_position="start"`); None: m = (F − 1) // 2.
    base_index: int | None = None
    hook_handle: RemovableHandle | None = field(default=None, repr=False, compare=False)

    def update(self, batch: int, frames: int) -> None:
        """Record the batch (videos) and frame count of the call about to run; m follows eq. (3), or
        `base_index` when set."""
        if self.base_index is None:
            middle = middle_frame_index(frames)
        elif 0 <= self.base_index < frames:
            middle = self.base_index
        else:
            raise UsageError(
                f"base_index={self.base_index} is outside the {frames} frames of this UNet call; set "
                "FrameContext.base_index to a frame of the call (or None for the middle frame)."
            )
        self.batch, self.frames, self.middle = batch, frames, middle


class InterFrameAttnProcessor(nn.Module):
    """Adds the Inter-Frame Attention branch (eq. 3) to the output of the processor it wraps.

    `base(attn, hidden_states, ...) + to_out_ifa(MHA(to_q_ifa(X^i), attn.to_k(X^m), attn.to_v(X^m)))`, with
    `attn.heads` heads and the 1/√d scale of the host attention. The branch follows the host's spatial norm,
    group norm, input layout and `rescale_output_factor` so it is added to the same quantity the host returns
    (a residual connection is already in the base output and is not added twice).

    The wrapped processor is kept as the submodule `base` when it is an `nn.Module` (e.g. stage one's
    LayerDiffuse processor), so its weights move with `.to()`. The host `attn` is only read for shapes:
    keeping it would make the module graph cyclic.
    """

    def __init__(self, attn: Attention, context: FrameContext, base_processor: Any) -> None:
        super().__init__()
        if isinstance(base_processor, InterFrameAttnProcessor):
            raise UsageError("base_processor is already an InterFrameAttnProcessor; IFA wraps once.")
        to_q_weight = attn.to_q.weight
        to_out_weight = attn.to_out[0].weight
        factory = {"device": to_q_weight.device, "dtype": to_q_weight.dtype}
        out_features, in_features = to_q_weight.shape
        self.to_q_ifa = nn.Linear(in_features, out_features, bias=False, **factory)  # W_Q'
        out_features, in_features = to_out_weight.shape
        self.to_out_ifa = nn.Linear(in_features, out_features, bias=True, **factory)  # W_O'
        with torch.no_grad():
            self.to_q_ifa.weight.copy_(to_q_weight)  # a copy, not the same tensor: W_Q' trains on its own
            self.to_out_ifa.weight.zero_()  # W_O' = 0: an untrained IFA is exactly the baseline
            self.to_out_ifa.bias.zero_()
        self.context = context
        self.base = base_processor
        self._zero_key: tuple[int, ...] | None = None  # W_O' version the cached `_zero` belongs to
        self._zero = True

    def branch_is_zero(self) -> bool:
        """Whether W_O' and its bias are exactly 0 (an untrained IFA), so the branch adds exactly 0.

        Tracked through the parameters' version counters, which every in-place change (loading weights,
        an optimizer step, `nn.init`) bumps: the zero test runs once per change, not once per call. While
        W_O' can receive a gradient the branch always runs (its gradient is not 0 even where W_O' is).
        """
        weight, bias = self.to_out_ifa.weight, self.to_out_ifa.bias
        if torch.is_grad_enabled() and (weight.requires_grad or bias.requires_grad):
            return False
        if weight.device.type == "meta" or bias.device.type == "meta":
            return False  # offloaded: the hooks bring the weights in only when the layer runs
        key = (weight.data_ptr(), weight._version, bias.data_ptr(), bias._version)
        if key != self._zero_key:
            self._zero = not (bool(weight.any()) or bool(bias.any()))
            self._zero_key = key
        return self._zero

    def extra_repr(self) -> str:
        base_name = type(self.base).__name__
        return f"base={base_name}" if not isinstance(self.base, nn.Module) else ""

    def __call__(  # type: ignore[override]  (diffusers processor protocol)
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if args:  # the (deprecated) positional form diffusers processors still accept
            output = self.base(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs
            )
        else:  # the keyword form `Attention.forward` uses; temb only when given, as bases may not declare it
            extra = kwargs if temb is None else {**kwargs, "temb": temb}
            output = self.base(
                attn,
                hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                attention_mask=attention_mask,
                **extra,
            )
        context = self.context
        if not context.enabled or context.frames == 1 or self.branch_is_zero():
            return output  # nothing to add: skip the whole branch (an untrained IFA is the baseline)
        branch = self.inter_frame_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        if torch.is_grad_enabled() and (output.requires_grad or branch.requires_grad):
            return output + branch  # autograd may still need `output` as it is
        return output.add_(branch)  # the base processor's fresh output: add in place

    def inter_frame_attention(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The IFA branch alone (eq. 3), in the layout and scale of the host attention's output."""
        context = self.context
        if context.batch is None or context.frames is None or context.middle is None:
            raise UsageError(
                "the frame count is unknown to Inter-Frame Attention. Call the UNet with a "
                "(batch, channels, frames, height, width) sample after install_inter_frame_attention(unet), "
                "or call context.update(batch, frames) before calling the processor directly."
            )
        if attention_mask is not None:
            raise UsageError(
                "attention_mask is not supported on spatial self-attention with Inter-Frame Attention "
                "(its keys come from another frame); call the UNet without attention_mask."
            )
        videos, frames, middle = context.batch, context.frames, context.middle
        if hidden_states.shape[0] != videos * frames:
            raise UsageError(
                f"Inter-Frame Attention got {hidden_states.shape[0]} rows but the frame context says "
                f"{videos} videos × {frames} frames; call the UNet (its pre-hook updates"
                " the context) or context.update(batch, frames)."
            )

        # Mirror the host processor (AttnProcessor2_0) up to the projections.
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            height, width = hidden_states.shape[2:]
            hidden_states = rearrange(hidden_states, "r c y x -> r (y x) c")
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is None:
            key_source = hidden_states
        elif attn.norm_cross:
            key_source = attn.norm_encoder_hidden_states(encoder_hidden_states)
        else:
            key_source = encoder_hidden_states

        # X^m: the middle frame of each video (rows b*F + m; with guidance rows m and F + m).
        key_source_bfnc = rearrange(key_source, "(b f) n c -> b f n c", b=videos, f=frames)
        middle_bnc = key_source_bfnc[:, middle]

        # All frames of a video share its middle frame's keys, so frames fold into the query sequence:
        # SDPA sees 4-D (batch, heads, seq, dim) tensors, which keeps CPU SDPA on its fast kernel.
        heads = attn.heads
        query = rearrange(
            self.to_q_ifa(hidden_states), "(b f) n (h d) -> b h (f n) d", b=videos, f=frames, h=heads
        ).contiguous()  # SDPA's fast kernels want contiguous inputs
        key = rearrange(attn.to_k(middle_bnc), "b n (h d) -> b h n d", h=heads)  # host's own W_K
        value = rearrange(attn.to_v(middle_bnc), "b n (h d) -> b h n d", h=heads)  # host's own W_V
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        attended = F.scaled_dot_product_attention(query, key, value)  # b h (f n) d, scale 1/√d
        attended = rearrange(attended, "b h (f n) d -> (b f) n (h d)", f=frames).to(query.dtype)
        branch = self.to_out_ifa(attended)
        if len(attn.to_out) > 1:
            branch = attn.to_out[1](branch)  # the host's dropout
        if input_ndim == 4:
            branch = rearrange(branch, "r (y x) c -> r c y x", y=height, x=width)
        if attn.rescale_output_factor != 1:
            branch = branch / attn.rescale_output_factor
        return branch


def _is_spatial_self_attention(processor_name: str) -> bool:
    """Whether a processor name is attn1 of a spatial transformer block (`…attentions.j.….attn1`)."""
    return (
        ".attentions." in processor_name
        and processor_name.endswith("attn1.processor")
        and ".motion_modules." not in processor_name
    )


def _module_path(name: str) -> str:
    """`<attn1 path>.processor` → `<attn1 path>` (a name without the suffix is returned as is)."""
    return name.removesuffix(_PROCESSOR_SUFFIX)


def _fill_frame_context(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Forward pre-hook: read B and F from the UNet's (B, C, F, H, W) `sample` into its frame context.

    The context is looked up on the module at call time, not captured, so a `copy.deepcopy` of the UNet
    (e.g. an EMA copy) fills its own context.
    """
    context = inter_frame_attention_context(module)
    sample = kwargs.get("sample", args[0] if args else None)
    if context is None or not isinstance(sample, torch.Tensor):
        return  # IFA was uninstalled, or the UNet itself reports the missing argument
    if sample.ndim != 5:
        raise UsageError(
            f"sample has shape {tuple(sample.shape)}; a UNetMotionModel with Inter-Frame Attention "
            "needs (batch, channels, frames, height, width)."
        )
    context.update(batch=sample.shape[0], frames=sample.shape[2])


def inter_frame_attention_context(unet: nn.Module) -> FrameContext | None:
    """The `FrameContext` installed on a UNet, or None when IFA is not installed."""
    context = getattr(unet, _CONTEXT_ATTRIBUTE, None)
    return context if isinstance(context, FrameContext) else None


def inter_frame_attention_processors(unet: nn.Module) -> dict[str, InterFrameAttnProcessor]:
    """The IFA processors installed on a UNet, keyed by processor name (empty when none)."""
    all_processors = getattr(unet, "attn_processors", {})
    return {
        name: processor
        for name, processor in all_processors.items()
        if isinstance(processor, InterFrameAttnProcessor)
    }


def install_inter_frame_attention(
    unet: UNetMotionModel, *, context: FrameContext | None = None
) -> dict[str, InterFrameAttnProcessor]:
    """Wrap every spatial self-attention processor of `unet` in an `InterFrameAttnProcessor` (idempotent).

    Returns the IFA processors keyed by processor name (`<attn1 path>.processor`). Calling it again returns
    the processors already installed and adds no second wrap or hook. Motion-module attention is untouched.
    """
    if not isinstance(unet, UNetMotionModel):
        raise UsageError(
            f"unet is a {type(unet).__name__}; Inter-Frame Attention needs a diffusers UNetMotionModel "
            "(e.g. UNetMotionModel.from_unet2d(unet, motion_adapter))."
        )
    installed_context = inter_frame_attention_context(unet)
    if context is None:
        context = installed_context if installed_context is not None else FrameContext()
    elif installed_context is not None and context is not installed_context:
        raise UsageError(
            "this UNet already has Inter-Frame Attention with another FrameContext; call "
            "uninstall_inter_frame_attention(unet) first or pass context=None."
        )

    all_processors = dict(unet.attn_processors)  # set_attn_processor needs every entry
    ifa_processors: dict[str, InterFrameAttnProcessor] = {}
    for name, processor in all_processors.items():
        if not _is_spatial_self_attention(name):
            continue
        if isinstance(processor, InterFrameAttnProcessor):
            processor.context = context
            ifa_processors[name] = processor
            continue
        attn = unet.get_submodule(_module_path(name))
        ifa_processors[name] = all_processors[name] = InterFrameAttnProcessor(attn, context, processor)
    if not ifa_processors:
        raise UsageError("unet has no spatial self-attention (attn1 in '.attentions.') to put IFA on.")
    unet.set_attn_processor(all_processors)

    setattr(unet, _CONTEXT_ATTRIBUTE, context)
    if context.hook_handle is None:
        context.hook_handle = unet.register_forward_pre_hook(_fill_frame_context, with_kwargs=True)
    logger.info("Inter-Frame Attention on %d spatial self-attention modules", len(ifa_processors))
    return ifa_processors


def uninstall_inter_frame_attention(unet: UNetMotionModel) -> None:
    """Put back the processors IFA wrapped and remove its pre-hook (a no-op when IFA is not installed)."""
    all_processors = dict(unet.attn_processors)
    wrapped = {n: p for n, p in all_processors.items() if isinstance(p, InterFrameAttnProcessor)}
    if wrapped:
        all_processors.update({name: processor.base for name, processor in wrapped.items()})
        unet.set_attn_processor(all_processors)
    context = inter_frame_attention_context(unet)
    if context is not None:
        if context.hook_handle is not None:
            context.hook_handle.remove()
            context.hook_handle = None
        delattr(unet, _CONTEXT_ATTRIBUTE)


def set_inter_frame_attention_enabled(unet: UNetMotionModel, enabled: bool) -> None:
    """Turn every IFA branch of `unet` on or off (off: the wrapped processors' output, unchanged)."""
    context = inter_frame_attention_context(unet)
    if context is None:
        raise UsageError("unet has no Inter-Frame Attention; call install_inter_frame_attention(unet).")
    context.enabled = enabled


@contextlib.contextmanager
def inter_frame_attention_disabled(unet: UNetMotionModel) -> Iterator[None]:
    """Run the UNet without its IFA branches inside the block; the previous state comes back after."""
    context = inter_frame_attention_context(unet)
    if context is None:
        raise UsageError("unet has no Inter-Frame Attention; call install_inter_frame_attention(unet).")
    previous = context.enabled
    context.enabled = False
    try:
        yield
    finally:
        context.enabled = previous


def _ifa_named_parameters(processors: Mapping[str, InterFrameAttnProcessor]) -> dict[str, nn.Parameter]:
    """W_Q' and W_O' of every processor, keyed `<attn1 path>.to_q_ifa.weight` etc."""
    named: dict[str, nn.Parameter] = {}
    for name, processor in processors.items():
        if not isinstance(processor, InterFrameAttnProcessor):
            raise UsageError(
                f"processors[{name!r}] is a {type(processor).__name__}, not an InterFrameAttnProcessor; "
                "pass the dict install_inter_frame_attention(unet) returns."
            )
        prefix = _module_path(name)
        for layer_name in ("to_q_ifa", "to_out_ifa"):
            for param_name, param in getattr(processor, layer_name).named_parameters():
                named[f"{prefix}.{layer_name}.{param_name}"] = param
    return named


def ifa_parameters(processors: Mapping[str, InterFrameAttnProcessor]) -> list[nn.Parameter]:
    """The trainable IFA parameters (W_Q' and W_O' only, §III-B), in processor order."""
    return list(_ifa_named_parameters(processors).values())


def ifa_state_dict(processors: Mapping[str, InterFrameAttnProcessor]) -> dict[str, torch.Tensor]:
    """W_Q'/W_O' tensors (detached, sharing storage) keyed `<attn1 module path>.to_q_ifa.weight` etc."""
    return {key: param.detach() for key, param in _ifa_named_parameters(processors).items()}


def save_ifa_weights(
    path: str | os.PathLike[str],
    processors: Mapping[str, InterFrameAttnProcessor],
    *,
    metadata: Mapping[str, str],
    overwrite: bool = False,
) -> None:
    """Write only W_Q'/W_O' to a safetensors file with metadata (atomic: temp file beside it, then rename).

    `metadata` must hold `base_model`, `motion_adapter` and `frames` (strings); the format, its version, the
    layeranim version and the module count are added here.
    """
    from layeranim._version import __version__

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"path {str(path)!r} exists; pass overwrite=True to replace it.")
    missing = [key for key in IFA_REQUIRED_METADATA if key not in metadata]
    if missing:
        raise UsageError(f"metadata lacks {missing}; give {list(IFA_REQUIRED_METADATA)} as strings.")
    reserved = [key for key in _RESERVED_METADATA if key in metadata]
    if reserved:
        raise UsageError(f"metadata keys {reserved} are written by save_ifa_weights; leave them out.")
    not_strings = [key for key, value in metadata.items() if not isinstance(value, str)]
    if not_strings:
        raise UsageError(f"metadata values for {not_strings} are not strings; convert them with str().")
    if not processors:
        raise UsageError("processors is empty; pass the dict install_inter_frame_attention(unet) returns.")

    tensors = {key: tensor.to("cpu").contiguous() for key, tensor in ifa_state_dict(processors).items()}
    full_metadata = {
        **metadata,
        "format": IFA_FORMAT,
        "format_version": IFA_FORMAT_VERSION,
        "layeranim_version": __version__,
        "num_modules": str(len(processors)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(temporary), metadata=full_metadata)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    logger.info("saved IFA weights of %d modules to %s", len(processors), path)


def _first(keys: list[str]) -> str:
    """A short listing of the first few keys and how many there are."""
    shown = ", ".join(keys[:_MAX_NAMED_KEYS])
    more = f" and {len(keys) - _MAX_NAMED_KEYS} more" if len(keys) > _MAX_NAMED_KEYS else ""
    return f"{shown}{more}"


def load_ifa_weights(
    unet_or_processors: nn.Module | Mapping[str, InterFrameAttnProcessor], path: str | os.PathLike[str]
) -> dict[str, str]:
    """Load W_Q'/W_O' in place (cast to each parameter's dtype and device); returns the file's metadata.

    The file must be one `save_ifa_weights` wrote for the same module names and shapes; otherwise this raises
    `StateDictMismatchError` (names the first missing, unexpected and mis-shaped keys) or `WeightsError`.
    """
    if isinstance(unet_or_processors, nn.Module):
        processors = inter_frame_attention_processors(unet_or_processors)
    else:
        processors = dict(unet_or_processors)
    if not processors:
        raise UsageError(
            "no Inter-Frame Attention to load into; call install_inter_frame_attention(unet) first."
        )
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"IFA weights file {str(path)!r} does not exist; check the path.")
    targets = _ifa_named_parameters(processors)

    try:
        with safe_open(str(path), framework="pt") as weights:
            metadata = dict(weights.metadata() or {})
            if metadata.get("format") != IFA_FORMAT:
                raise WeightsError(
                    f"{str(path)!r} is not an Inter-Frame Attention weights file (metadata format="
                    f"{metadata.get('format')!r}, expected {IFA_FORMAT!r}); pass a file"
                    " that save_ifa_weights wrote."
                )
            if metadata.get("format_version") != IFA_FORMAT_VERSION:
                raise WeightsError(
                    f"{str(path)!r} has IFA format version {metadata.get('format_version')!r}; this "
                    f"layeranim reads version {IFA_FORMAT_VERSION!r}. Upgrade layeranim."
                )
            file_shapes = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}  # noqa: SIM118
            missing = [key for key in targets if key not in file_shapes]
            unexpected = [key for key in file_shapes if key not in targets]
            misshaped = [
                f"{key} (file {file_shapes[key]}, model {tuple(param.shape)})"
                for key, param in targets.items()
                if key in file_shapes and file_shapes[key] != tuple(param.shape)
            ]
            if missing or unexpected or misshaped:
                found = {"missing": missing, "unexpected": unexpected, "mis-shaped": misshaped}
                problems = [f"{label}: {_first(keys)}" for label, keys in found.items() if keys]
                raise StateDictMismatchError(
                    f"IFA weights {str(path)!r} (base_model={metadata.get('base_model')!r}) do not fit this "
                    f"UNet: {'; '.join(problems)}. Use weights trained for this base model"
                    " and motion adapter."
                )
            with torch.no_grad():
                for key, param in targets.items():
                    param.copy_(weights.get_tensor(key).to(device=param.device, dtype=param.dtype))
    except SafetensorError as error:
        raise WeightsError(
            f"{str(path)!r} is not a readable safetensors file ({error}); pass a file save_ifa_weights wrote."
        ) from error
    logger.info("loaded IFA weights of %d modules from %s", len(processors), path)
    return metadata
