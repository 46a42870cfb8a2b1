"""The `tiny` preset: random-weight miniatures of every component, for tests and offline smoke runs.

Every model has the same class as the real one and is saved in the same layout as the real weights
(a diffusers SD1.5 folder, LayerDiffuse's `layer_sd15_transparent_attn.safetensors` key layout, a
diffusers MotionAdapter folder), so the ordinary loader in `layeranim.render.components` reads it back: the
tiny preset runs the real code path, in seconds, with no download. Its pictures are noise.

The set is built once, deterministically (`torch.manual_seed` before each model), under
`$LAYERANIM_HOME/presets/tiny-v1`, into a temporary folder that is renamed when complete, so parallel
processes building it at the same time are safe.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

from layeranim.weights import layeranim_home

logger = logging.getLogger(__name__)

TINY_NAME = "tiny-v1"  # bump when the recipe changes, so stale folders are not reused
TINY_NOTICE = (
    "The tiny preset uses tiny random-weight models: it exercises the whole pipeline in seconds, but its "
    "pictures are noise."
)
TINY_SIZE = 64  # pixels: the tiny transparency decoder needs multiples of 64
TINY_NUM_FRAMES_MAX = 32  # the tiny motion adapter's motion_max_seq_length
TINY_LAYERDIFFUSE_RANK = 4

# Sizes that run the real code path: the smallest SD1.5-shaped stack whose VAE still downsamples 8×.
_UNET_CHANNELS = (32, 64)
_CROSS_ATTENTION_DIM = 32

# The 23-token byte-level BPE vocabulary from transformers' own CLIP tokenizer tests.
_TOY_VOCAB = [
    *("l", "o", "w", "e", "r", "s", "t", "i", "d", "n", "lo"),
    *("l</w>", "w</w>", "r</w>", "t</w>", "low</w>", "er</w>", "lowest</w>", "newer</w>", "wider"),
    *("<unk>", "<|startoftext|>", "<|endoftext|>"),
]
_TOY_MERGES = ("#version: 0.2", "l o", "lo w</w>", "e r</w>")
_BOS_ID = _TOY_VOCAB.index("<|startoftext|>")  # 21
_EOS_ID = _TOY_VOCAB.index("<|endoftext|>")  # 22, also the padding token


def tiny_preset_root() -> Path:
    """Where the tiny preset lives: `$LAYERANIM_HOME/presets/tiny-v1`."""
    return layeranim_home() / "presets" / TINY_NAME


def ensure_tiny_preset(root: Path | None = None) -> Path:
    """The tiny preset's folder, built first if it is not there yet (a few seconds, once)."""
    root = Path(root) if root is not None else tiny_preset_root()
    if (root / "preset.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        build_tiny_preset(staging)
        try:
            os.rename(staging, root)  # atomic; fails if another process got there first
        except OSError:
            if not (root / "preset.json").is_file():
                raise
            logger.debug("tiny preset was built concurrently by another process; using %s", root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def build_tiny_preset(folder: Path) -> None:
    """Write the tiny preset's files into `folder` (which must not exist)."""
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        MotionAdapter,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from layeranim.models.layerdiffuse_unet import sd15_attn_state_dict_shapes
    from layeranim.models.transparent_vae import TransparentVAEDecoder, TransparentVAEEncoder

    folder = Path(folder)
    folder.mkdir(parents=True)
    logger.info("building the tiny preset in %s", folder)

    # 1. The SD1.5-shaped base, saved as a diffusers pipeline folder.
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=TINY_SIZE // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=_UNET_CHANNELS,
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=_CROSS_ATTENTION_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(  # 4 blocks → 8× smaller latents, like SD's VAE
        sample_size=TINY_SIZE,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=1000,
            hidden_size=_CROSS_ATTENTION_DIM,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=_CROSS_ATTENTION_DIM,
            layer_norm_eps=1e-5,
            bos_token_id=_BOS_ID,
            eos_token_id=_EOS_ID,
            pad_token_id=_EOS_ID,
        )
    )
    scheduler = EulerAncestralDiscreteScheduler(  # SD1.5's training betas
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=_toy_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    with transformers_progress_bars_off():
        pipeline.save_pretrained(folder / "base", safe_serialization=True)

    # 2. LayerDiffuse: the real SD1.5 transparent-attn key layout for this UNet, at a small rank.
    layerdiffuse = folder / "layerdiffuse"
    layerdiffuse.mkdir()
    generator = torch.Generator().manual_seed(0)
    attn_state_dict = {
        key: _random_attn_tensor(key, shape, generator)
        for key, shape in sd15_attn_state_dict_shapes(unet, rank=TINY_LAYERDIFFUSE_RANK).items()
    }
    save_file(attn_state_dict, str(layerdiffuse / "layer_sd15_transparent_attn.safetensors"))

    torch.manual_seed(0)
    encoder = TransparentVAEEncoder(block_out_channels=(8, 8, 16, 16))
    _randomise_zero_init_(encoder, seed=1)
    encoder.save_pretrained(layerdiffuse / "transparent_encoder", safe_serialization=True)
    torch.manual_seed(0)
    decoder = TransparentVAEDecoder(block_out_channels=(8,) * 7, norm_num_groups=4)
    _randomise_zero_init_(decoder, seed=2)
    decoder.save_pretrained(layerdiffuse / "transparent_decoder", safe_serialization=True)

    # 3. AnimateDiff: a motion adapter matching the tiny UNet (v1-5-2-like: with a motion mid block).
    torch.manual_seed(0)
    adapter = MotionAdapter(
        block_out_channels=_UNET_CHANNELS,
        motion_layers_per_block=2,
        motion_num_attention_heads=4,
        motion_norm_num_groups=32,
        motion_max_seq_length=TINY_NUM_FRAMES_MAX,
        use_motion_mid_block=True,
    )
    adapter.save_pretrained(folder / "motion_adapter", safe_serialization=True)

    (folder / "preset.json").write_text(
        json.dumps({"name": TINY_NAME, "notice": TINY_NOTICE, "size": TINY_SIZE}, indent=2, sort_keys=True)
        + "\n"
    )


@contextmanager
def transformers_progress_bars_off() -> Iterator[None]:
    """transformers draws progress bars on stderr ("Loading weights", "Writing model shards") for every
    model; the CLI owns stderr, and none of these steps is long enough to need one."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def _toy_tokenizer() -> object:
    """A CLIPTokenizer over the toy vocabulary, built offline (model_max_length 77, like SD's)."""
    from transformers import CLIPTokenizer

    # transformers 5 silently ignores the old vocab_file=/merges_file= keywords; from_pretrained on a
    # folder with vocab.json + merges.txt is the portable way.
    with tempfile.TemporaryDirectory() as scratch:
        vocab = {token: index for index, token in enumerate(_TOY_VOCAB)}
        Path(scratch, "vocab.json").write_text(json.dumps(vocab))
        Path(scratch, "merges.txt").write_text("\n".join(_TOY_MERGES) + "\n")
        return CLIPTokenizer.from_pretrained(scratch, model_max_length=77)


def _random_attn_tensor(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Small random values (fp16, like the released file) that visibly change the UNet's output."""
    noise = torch.randn(shape, generator=generator)
    if key.endswith("temporal_n.weight"):
        return (1.0 + 0.1 * noise).half()  # a LayerNorm scale near 1
    return (0.1 * noise).half()


@torch.no_grad()
def _randomise_zero_init_(model: torch.nn.Module, seed: int) -> None:
    """Give zero-initialised layers (the encoder's last conv, the decoder's latent_conv_in) small weights.

    Zero layers would make the tiny pipeline skip those paths; small random values exercise them.
    """
    generator = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    for name, module in modules.items():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.ndim < 2 or bool(weight.any()):
            continue
        weight.copy_(0.05 * torch.randn(weight.shape, generator=generator))
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.copy_(0.05 * torch.randn(bias.shape, generator=generator))
        logger.debug("tiny preset: re-randomised zero-initialised %s", name or type(model).__name__)
