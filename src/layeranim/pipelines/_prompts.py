"""Text conditioning shared by both stages: CLIP prompt embeddings for SD1.5 and SDXL.

A small helper both pipelines call, rather than a base class (STYLE.md, habit 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from layeranim.errors import UsageError


@dataclass
class PromptEmbeddings:
    """Text conditioning for a batch: [uncond..., cond...] stacked when guidance is on."""

    embeds_bnc: torch.Tensor  # (batch, tokens, channels)
    pooled_bc: torch.Tensor | None = None  # SDXL only: pooled text_encoder_2 output


def _token_ids(tokenizer: CLIPTokenizer, texts: list[str], device: torch.device) -> torch.Tensor:
    tokens = tokenizer(
        texts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return tokens.input_ids.to(device)


@torch.no_grad()
def encode_prompt_sd15(
    tokenizer: CLIPTokenizer,
    text_encoder: CLIPTextModel,
    prompts: list[str],
    negative_prompts: list[str],
    *,
    device: torch.device,
    guidance: bool,
) -> PromptEmbeddings:
    """CLIP last hidden state, as StableDiffusionPipeline does (no clip-skip)."""
    texts = (negative_prompts + prompts) if guidance else prompts
    ids = _token_ids(tokenizer, texts, device)
    embeds = text_encoder(ids)[0]
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
) -> PromptEmbeddings:
    """SDXL conditioning: penultimate hidden states of both encoders, concatenated; pooled from encoder 2."""
    texts = (negative_prompts + prompts) if guidance else prompts
    hidden: list[torch.Tensor] = []
    for tokenizer, encoder in zip(tokenizers, text_encoders, strict=True):
        out = encoder(_token_ids(tokenizer, texts, device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
    pooled = getattr(out, "text_embeds", None)  # projected EOS state of text_encoder_2
    if pooled is None:
        raise UsageError(
            f"text_encoder_2 is a {type(text_encoders[-1]).__name__}; SDXL needs a "
            "CLIPTextModelWithProjection there (its pooled, projected output conditions the UNet)."
        )
    embeds = torch.cat(hidden, dim=-1)
    # SDXL zeroes the unconditional embeddings for an empty negative prompt (force_zeros_for_empty_prompt).
    if guidance and all(not n for n in negative_prompts):
        half = len(prompts)
        embeds[:half] = 0
        pooled[:half] = 0
    return PromptEmbeddings(embeds_bnc=embeds, pooled_bc=pooled)
