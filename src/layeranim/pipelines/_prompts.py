"""Text conditioning shared by both stages, through diffusers' own `encode_prompt`.

`StableDiffusionPipeline.encode_prompt` (SD1.5) and `StableDiffusionXLPipeline.encode_prompt` (SDXL) read
only a few attributes of `self` (tokenizers, text encoders, a config flag) and check
`isinstance(self, TextualInversionLoaderMixin)`. A small host object carries exactly those, so both
pipelines, and the training loop that has no pipeline, get diffusers' clip skip, textual-inversion token
expansion and truncation warning without copying that code (STYLE.md, habit 1: a helper, not a base class).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.loaders import TextualInversionLoaderMixin
from transformers import CLIPTextModel, CLIPTokenizer

from layeranim.errors import UsageError


@dataclass
class PromptEmbeddings:
    """Text conditioning for a batch: [uncond..., cond...] stacked when guidance is on."""

    embeds_bnc: torch.Tensor  # (batch, tokens, channels)
    pooled_bc: torch.Tensor | None = None  # SDXL only: pooled text_encoder_2 output


class _FlatCLIPView:
    """A CLIP text model seen with a `.text_model` attribute.

    transformers 5 flattened `CLIPTextModel` (its final LayerNorm is `model.final_layer_norm`), while
    diffusers' clip-skip path still reads `text_encoder.text_model.final_layer_norm`. This view forwards
    calls and attributes to the model and answers `.text_model` with the model itself.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model

    @property
    def text_model(self) -> torch.nn.Module:
        return self._model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._model(*args, **kwargs)


def _with_text_model(model: torch.nn.Module) -> Any:
    return model if hasattr(model, "text_model") else _FlatCLIPView(model)


class _TextHost(TextualInversionLoaderMixin):
    """What diffusers' `encode_prompt` reads from `self`; a TextualInversionLoaderMixin, so multi-vector
    textual-inversion tokens added to the tokenizer (`pipe.load_textual_inversion`) expand as in diffusers."""

    def __init__(
        self,
        tokenizer: CLIPTokenizer,
        text_encoder: torch.nn.Module,
        tokenizer_2: CLIPTokenizer | None = None,
        text_encoder_2: torch.nn.Module | None = None,
    ) -> None:
        self.tokenizer, self.text_encoder = tokenizer, _with_text_model(text_encoder)
        self.tokenizer_2, self.text_encoder_2 = tokenizer_2, text_encoder_2
        self.unet = None  # read only when there is no text encoder
        self.config = SimpleNamespace(force_zeros_for_empty_prompt=False)  # read by SDXL; we zero ourselves


def check_clip_skip(clip_skip: int | None, text_encoder: torch.nn.Module) -> None:
    """clip_skip counts layers skipped from the end of CLIP: 0 ≤ clip_skip < number of layers."""
    if clip_skip is None:
        return
    layers = getattr(getattr(text_encoder, "config", None), "num_hidden_layers", None)
    if clip_skip < 0 or (layers is not None and clip_skip >= layers):
        limit = f"0..{layers - 1}" if layers is not None else "≥ 0"
        raise UsageError(f"clip_skip={clip_skip} is outside {limit} for this text encoder; pick one in it.")


@torch.no_grad()
def encode_prompt_sd15(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    prompts: list[str],
    negative_prompts: list[str],
    *,
    device: torch.device,
    guidance: bool,
    clip_skip: int | None = None,
) -> PromptEmbeddings:
    """CLIP hidden states as `StableDiffusionPipeline.encode_prompt` computes them (last layer, or the
    `clip_skip`-th from the end through the final LayerNorm); [uncond, cond] stacked with guidance.

    Negative and positive prompts go through the text encoder as one batch, so `clip_skip` applies to both
    (diffusers' SD1.5 pipeline encodes negative prompts from the last layer) and a prompt's embedding does
    not depend on whether guidance is on.
    """
    check_clip_skip(clip_skip, text_encoder)
    texts = (list(negative_prompts) + list(prompts)) if guidance else list(prompts)
    embeds, _ = StableDiffusionPipeline.encode_prompt(
        _TextHost(tokenizer, text_encoder),  # type: ignore[arg-type]  (duck-typed `self`: module docstring)
        texts,
        device,
        1,
        False,  # guidance's unconditional half is already in `texts`
        clip_skip=clip_skip,
    )
    return PromptEmbeddings(embeds_bnc=embeds)


@torch.no_grad()
def encode_prompt_sdxl(
    tokenizers: tuple[CLIPTokenizer, CLIPTokenizer],
    text_encoders: tuple[torch.nn.Module, torch.nn.Module],
    prompts: list[str],
    negative_prompts: list[str],
    *,
    device: torch.device,
    guidance: bool,
    clip_skip: int | None = None,
) -> PromptEmbeddings:
    """SDXL conditioning by `StableDiffusionXLPipeline.encode_prompt`: penultimate hidden states of both
    encoders (or `clip_skip` more from the end), concatenated, and the pooled projection of encoder 2.
    All-empty negative prompts give zero unconditional conditioning (`force_zeros_for_empty_prompt`)."""
    if not hasattr(text_encoders[-1], "text_projection"):
        raise UsageError(
            f"text_encoder_2 is a {type(text_encoders[-1]).__name__}; SDXL needs a "
            "CLIPTextModelWithProjection there (its pooled, projected output conditions the UNet)."
        )
    check_clip_skip(clip_skip, text_encoders[-1])
    texts = (list(negative_prompts) + list(prompts)) if guidance else list(prompts)
    embeds, _, pooled, _ = StableDiffusionXLPipeline.encode_prompt(
        _TextHost(tokenizers[0], text_encoders[0], tokenizers[1], text_encoders[1]),  # type: ignore[arg-type]
        texts,
        device=device,
        num_images_per_prompt=1,
        do_classifier_free_guidance=False,  # guidance's unconditional half is already in `texts`
        clip_skip=clip_skip,
    )
    # SDXL zeroes the unconditional embeddings for an empty negative prompt (force_zeros_for_empty_prompt).
    if guidance and all(not n for n in negative_prompts):
        half = len(prompts)
        embeds[:half] = 0
        pooled[:half] = 0
    return PromptEmbeddings(embeds_bnc=embeds, pooled_bc=pooled)
