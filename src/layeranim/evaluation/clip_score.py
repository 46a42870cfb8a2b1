"""The CLIP score of the Layer-Animate paper (Table I): mean over frames of 100 × cos(image, text).

The model comes from the weights table (`weights.EVAL_SOURCES["clip"]`, fetched through huggingface_hub
like every other component, so `HF_HUB_OFFLINE=1` and the hub cache work as usual), or from any weights
reference (a local folder or `owner/name`). `load_tiny_clip()` gives a tiny random-weight CLIP with the
same classes and loading path, for tests and the tiny preset: its scores mean nothing.

Frames are straight RGBA; CLIP sees them composited over an opaque background (50 % gray by default, the
background the paper's models were trained against).

Axis legend: f frames, h height, w width, c channels, d embedding width.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layeranim.errors import UsageError, WeightsError

logger = logging.getLogger(__name__)

TINY_CLIP_NAME = "tiny-clip-v1"  # bump when the recipe changes
TINY_CLIP_IMAGE_SIZE = 32
_CLIP_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


@dataclass
class ClipScorer:
    """A CLIP model with its tokenizer and image processor, ready to score frames against a prompt."""

    model: Any  # transformers.CLIPModel
    tokenizer: Any
    image_processor: Any
    device: torch.device
    name: str  # where the weights came from, for reports

    @torch.inference_mode()
    def frame_scores(self, rgb_fhwc_uint8: np.ndarray, prompt: str, batch_size: int = 16) -> np.ndarray:
        """100 × cos(image embedding of each frame, text embedding of `prompt`): (f,) float32."""
        if not prompt or not prompt.strip():
            raise UsageError("prompt is empty; the CLIP score needs the text the clip was made from.")
        text = self.tokenizer(
            [prompt],
            padding="max_length",
            truncation=True,
            max_length=self._max_length(),
            return_tensors="pt",
        )
        text_embeds_1d = self._text_embeds(text["input_ids"].to(self.device), text.get("attention_mask"))
        scores = []
        for start in range(0, len(rgb_fhwc_uint8), batch_size):
            batch = list(rgb_fhwc_uint8[start : start + batch_size])
            pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]
            image_embeds_fd = self._image_embeds(pixels.to(self.device, self.model.dtype))
            scores.append((100.0 * image_embeds_fd @ text_embeds_1d.T)[:, 0].float().cpu().numpy())
        return np.concatenate(scores)

    def _max_length(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    def _text_embeds(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        mask = attention_mask.to(self.device) if attention_mask is not None else None
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=mask)
        embeds = out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 4 / 5
        return torch.nn.functional.normalize(embeds.float(), dim=-1)

    def _image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model.get_image_features(pixel_values=pixel_values)
        embeds = out if isinstance(out, torch.Tensor) else out.pooler_output
        return torch.nn.functional.normalize(embeds.float(), dim=-1)


def load_clip_scorer(
    ref: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    local_files_only: bool = False,
) -> ClipScorer:
    """A `ClipScorer` from a weights reference (default: the weights table's CLIP), fetched if needed.

    Raises `WeightsError` (with the command that fetches them) when the weights are missing offline.
    """
    from layeranim import weights

    source = ref if ref is not None else weights.EVAL_SOURCES["clip"]
    folder = weights.resolve(source, allow_patterns=weights.CLIP_FILES, local_files_only=local_files_only)
    return _load_folder(folder, device=torch.device(device), dtype=dtype, name=_describe(source, folder))


def load_tiny_clip(*, device: str | torch.device = "cpu") -> ClipScorer:
    """The tiny random-weight CLIP (built once under $LAYERANIM_HOME/presets), loaded like a real one."""
    folder = ensure_tiny_clip()
    return _load_folder(
        folder, device=torch.device(device), dtype=torch.float32, name=f"tiny ({TINY_CLIP_NAME})"
    )


def _describe(source: object, folder: Path) -> str:
    from layeranim import weights

    return weights.describe_path(folder) if not isinstance(source, (str, Path)) else str(source)


def _load_folder(folder: Path, *, device: torch.device, dtype: torch.dtype, name: str) -> ClipScorer:
    from transformers import AutoTokenizer, CLIPModel

    from layeranim.render.presets import transformers_progress_bars_off

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise WeightsError(
            f"{str(folder)!r} has no config.json; give a transformers CLIP folder (owner/name)."
        )
    try:
        with transformers_progress_bars_off():
            model = CLIPModel.from_pretrained(folder, use_safetensors=True, torch_dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(folder)
            image_processor = _image_processor_class().from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{str(folder)!r} could not be loaded as a CLIP model ({exc}).") from exc
    return ClipScorer(model.eval().to(device), tokenizer, image_processor, device, name)


def _image_processor_class() -> Any:
    """CLIP's PIL image processor: `CLIPImageProcessorPil` (transformers 5, no torchvision needed), else
    `CLIPImageProcessor` (transformers 4, where it is the PIL one)."""
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def tiny_clip_root() -> Path:
    """Where the tiny CLIP lives: `$LAYERANIM_HOME/presets/tiny-clip-v1`."""
    from layeranim.weights import layeranim_home

    return layeranim_home() / "presets" / TINY_CLIP_NAME


def ensure_tiny_clip(root: Path | None = None) -> Path:
    """The tiny CLIP's folder, built first when missing (temporary folder renamed when complete)."""
    root = Path(root) if root is not None else tiny_clip_root()
    if (root / "config.json").is_file() and (root / "model.safetensors").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        build_tiny_clip(staging)
        try:
            os.rename(staging, root)  # atomic; fails if another process got there first
        except OSError:
            if not (root / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def build_tiny_clip(folder: Path) -> None:
    """Write a tiny random CLIPModel (seeded), the presets' toy tokenizer and a 32-pixel image processor."""
    from transformers import CLIPConfig, CLIPModel

    from layeranim.render.presets import _EOS_ID, _TOY_VOCAB, _toy_tokenizer, transformers_progress_bars_off

    folder = Path(folder)
    folder.mkdir(parents=True)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(_TOY_VOCAB),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "bos_token_id": _TOY_VOCAB.index("<|startoftext|>"),
            "eos_token_id": _EOS_ID,
            "pad_token_id": _EOS_ID,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": TINY_CLIP_IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = CLIPModel(config)
    processor = _image_processor_class()(
        size={"shortest_edge": TINY_CLIP_IMAGE_SIZE},
        crop_size={"height": TINY_CLIP_IMAGE_SIZE, "width": TINY_CLIP_IMAGE_SIZE},
    )
    with transformers_progress_bars_off():
        model.save_pretrained(folder, safe_serialization=True)
        _toy_tokenizer().save_pretrained(folder)  # type: ignore[attr-defined]
        processor.save_pretrained(folder)
    (folder / "tiny.json").write_text(json.dumps({"name": TINY_CLIP_NAME, "files": list(_CLIP_FILES)}) + "\n")
