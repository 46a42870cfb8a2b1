"""Stage two: an RGBA still (or stage one's adjusted latent) → F transparent frames.

A diffusers `UNetMotionModel` (AnimateDiff) whose spatial attention keeps LayerDiffuse's transparency
processors, plus Inter-Frame Attention on every spatial self-attention (paper §III-B, eq. 3). The base
frame (by default the middle one, m = (F − 1) // 2, as in the paper; `base_position` moves it) is the
clean base latent in every UNet call and after every scheduler step; every frame decodes through the SD
VAE and the transparency decoder to straight RGBA. Clips longer than one context window are denoised in
overlapping windows that each hold the base frame (`layeranim.pipelines.context_windows`).

Axes: b = video, c = latent channels, f = frame, h/w = latent height/width (pixels / 8).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, MotionAdapter, UNet2DConditionModel, UNetMotionModel
from diffusers.loaders import TextualInversionLoaderMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from einops import rearrange
from transformers import CLIPTextModel, CLIPTokenizer

from layeranim.errors import UsageError
from layeranim.models.inter_frame_attention import (
    InterFrameAttnProcessor,
    install_inter_frame_attention,
    inter_frame_attention_context,
    inter_frame_attention_processors,
    load_ifa_weights,
    save_ifa_weights,
)
from layeranim.models.layerdiffuse_unet import (
    LayerDiffuseAttnProcessor,
    layerdiffuse_processors,
    load_layerdiffuse_processors,
    plain_attention_processors,
    reinstall_processors,
    remove_processors,
    save_layerdiffuse_processors,
)
from layeranim.models.motion_norm import apply_motion_norm, motion_norm_mode
from layeranim.models.transparent_vae import (
    TransparentVAEDecoder,
    TransparentVAEEncoder,
    decode_rgba,
    encode_adjusted_latent,
)
from layeranim.pipelines._prompts import encode_prompt_sd15
from layeranim.pipelines.context_windows import (
    DEFAULT_CONTEXT_LENGTH,
    ContextSchedule,
    context_schedule,
    free_noise_latents,
    resolve_base_position,
    window_weights,
)
from layeranim.pipelines.layerdiffuse import (
    PROCESSORS_FILE,
    ProgressFn,
    StepEndCallback,
    as_list,
    check_callback_inputs,
    check_generators,
    check_output_type,
    check_size,
    first_generator,
    pipeline_folder,
    realign_loaded_weights_,
    rgba_output,
)

logger = logging.getLogger(__name__)

DEFAULT_FRAMES = 16
IFA_FILE = "inter_frame_attention.safetensors"
MOTION_NORM_FILE = "motion_norm.json"  # inside a saved pipeline's `unet/`: how the motion modules normalise
"""Inside a saved pipeline's `unet/`: the IFA weights (`save_ifa_weights` format, so `--ifa-weights` reads
it too)."""

ImageInput = np.ndarray | list[np.ndarray]
LatentInput = torch.Tensor | list[torch.Tensor]


@dataclass
class LayerAnimateOutput(BaseOutput):
    """Stage-two result.

    `frames` by `output_type`: "np" uint8 straight RGBA (f, H, W, 4); "pt" float32 in [0, 1] (f, 4, H, W);
    "pil" a list of RGBA `PIL.Image`s; "latent" the latents again (nothing decoded). A batched call (a list
    of prompts, or `num_videos_per_prompt` > 1) adds a leading video axis (b, …) / a list per video.
    """

    frames: np.ndarray | torch.Tensor | list[Any]
    latents: torch.Tensor  # (b, c, f, h, w) final latents in the UNet's (scaled) space, float32 on CPU
    middle_index: int  # the frame that holds the clean base latent in every video (see `base_position`)

    @property
    def base_index(self) -> int:
        """The still's frame: `middle_index` under the name that fits every `base_position`."""
        return self.middle_index


@dataclass
class MotionUNet:
    """A motion UNet ready for stage two, and what was put into it."""

    unet: UNetMotionModel
    ifa_processors: dict[str, InterFrameAttnProcessor]
    ifa_metadata: dict[str, str] | None  # None: no IFA weights (the motion-module baseline)


def build_motion_unet(
    unet: UNet2DConditionModel,
    motion_adapter: MotionAdapter,
    layerdiffuse_processors: dict[str, LayerDiffuseAttnProcessor],
    ifa_weights: Path | None = None,
    motion_norm: str = "original",
) -> MotionUNet:
    """Stage one's LayerDiffuse UNet + an AnimateDiff adapter → `UNetMotionModel` with IFA installed.

    `from_unet2d` drops custom processors, so LayerDiffuse's are put back first (the frames must live in the
    transparent latent space), then IFA wraps every spatial self-attention. Without `ifa_weights` IFA is
    installed untrained (W_O' = 0), which is exactly the paper's "motion module" baseline.
    `motion_norm="original"` normalises as the adapter's AnimateDiff version was trained
    (`apply_motion_norm`); "diffusers" keeps diffusers' GroupNorms.
    """
    # from_unet2d copies attention blocks with a strict load_state_dict, in which the LayerDiffuse processors'
    # own weights would be unexpected keys: take them off for the copy and put them on both UNets after.
    if layerdiffuse_processors:
        remove_processors(unet, layerdiffuse_processors)
    try:
        motion = UNetMotionModel.from_unet2d(unet, motion_adapter)
    finally:
        if layerdiffuse_processors:
            reinstall_processors(unet, layerdiffuse_processors)
    motion = motion.to(unet.device)  # from_unet2d already casts to unet.dtype
    apply_motion_norm(motion, motion_adapter.config, mode=motion_norm)  # same keys, original statistics
    if layerdiffuse_processors:
        reinstall_processors(motion, layerdiffuse_processors)
    processors = install_inter_frame_attention(motion)
    for proc in processors.values():
        proc.to(device=unet.device, dtype=unet.dtype)
    metadata = load_ifa_weights(motion, ifa_weights) if ifa_weights is not None else None
    motion.eval().requires_grad_(False)
    return MotionUNet(unet=motion, ifa_processors=processors, ifa_metadata=metadata)


class LayerAnimatePipeline(DiffusionPipeline, TextualInversionLoaderMixin):
    """RGBA image or adjusted latent → transparent video frames (Layer-Animate stage two).

    `save_pretrained` writes a diffusers folder plus, in `unet/`, the LayerDiffuse processors' weights and
    the IFA weights; `from_pretrained` puts both back, so a trained model is shared as one folder.
    """

    model_cpu_offload_seq = "text_encoder->unet->vae->transparent_decoder"
    _optional_components: ClassVar[list[str]] = ["transparent_encoder"]
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents", "prompt_embeds"]

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNetMotionModel,
        scheduler: SchedulerMixin,
        transparent_decoder: TransparentVAEDecoder,
        transparent_encoder: TransparentVAEEncoder | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            transparent_decoder=transparent_decoder,
            transparent_encoder=transparent_encoder,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self._interrupt = False

    @property
    def max_frames(self) -> int:
        return int(self.unet.config.motion_max_seq_length)

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` (e.g. in `callback_on_step_end`) to skip the remaining steps."""
        return self._interrupt

    # ---------------------------------------------------------------------------------------------
    # save_pretrained / from_pretrained: diffusers' folder, plus the processors it cannot rebuild

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        ifa_metadata: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        """A diffusers pipeline folder; `unet/` also gets `PROCESSORS_FILE` (LayerDiffuse) and `IFA_FILE`.

        `ifa_metadata` (`base_model`, `motion_adapter`, `frames`) is recorded in the IFA file, as
        `save_ifa_weights` does; missing keys are written as "unknown".
        """
        layerdiffuse = layerdiffuse_processors(self.unet)
        ifa = inter_frame_attention_processors(self.unet)
        with plain_attention_processors(self.unet):  # the UNet's own weights in the diffusers layout
            super().save_pretrained(save_directory, **kwargs)
        unet_dir = Path(save_directory) / "unet"
        (unet_dir / MOTION_NORM_FILE).write_text(json.dumps({"mode": motion_norm_mode(self.unet)}) + "\n")
        if layerdiffuse:
            save_layerdiffuse_processors(unet_dir / PROCESSORS_FILE, layerdiffuse)
        if ifa:
            metadata = {"base_model": "unknown", "motion_adapter": "unknown", "frames": "unknown"}
            metadata.update(ifa_metadata or {})
            save_ifa_weights(unet_dir / IFA_FILE, ifa, metadata=metadata, overwrite=True)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any
    ) -> LayerAnimatePipeline:
        """Load a folder `save_pretrained` wrote (or a Hub id): LayerDiffuse processors, then IFA on top.

        The motion modules normalise as the saved pipeline did (`unet/motion_norm.json`; "original", as
        `build_motion_unet` builds, for a folder without it); `motion_norm=` overrides.
        """
        motion_norm = kwargs.pop("motion_norm", None)
        extra_files = (f"unet/{PROCESSORS_FILE}", f"unet/{IFA_FILE}", f"unet/{MOTION_NORM_FILE}")
        folder = pipeline_folder(cls, pretrained_model_name_or_path, kwargs, extra_files)
        pipe = super().from_pretrained(folder, **kwargs)
        realign_loaded_weights_(pipe)
        unet_dir = folder / "unet"
        if motion_norm is None and (unet_dir / MOTION_NORM_FILE).is_file():
            motion_norm = json.loads((unet_dir / MOTION_NORM_FILE).read_text())["mode"]
        apply_motion_norm(pipe.unet, pipe.unet.config, motion_norm or "original")
        if (unet_dir / PROCESSORS_FILE).is_file():
            load_layerdiffuse_processors(pipe.unet, unet_dir / PROCESSORS_FILE)
        if (unet_dir / IFA_FILE).is_file():
            for processor in install_inter_frame_attention(pipe.unet).values():
                processor.to(device=pipe.unet.device, dtype=pipe.unet.dtype)
            load_ifa_weights(pipe.unet, unet_dir / IFA_FILE)
        return pipe

    # ---------------------------------------------------------------------------------------------
    # The steps of __call__

    @torch.no_grad()
    def encode_image(self, rgba_hwc_uint8: np.ndarray) -> torch.Tensor:
        """An RGBA still → its adjusted latent (1, c, h, w) in the UNet's space (paper §III-B, Fig. 2)."""
        if self.transparent_encoder is None:
            raise UsageError("an RGBA input image needs the transparency encoder; load it with the pipeline.")
        if rgba_hwc_uint8.ndim != 3 or rgba_hwc_uint8.shape[-1] != 4:
            raise UsageError(
                f"image has shape {rgba_hwc_uint8.shape}; give an RGBA array (height, width, 4)."
            )
        height, width = rgba_hwc_uint8.shape[:2]
        check_size("image height", height)
        check_size("image width", width)
        rgba = torch.from_numpy(np.ascontiguousarray(rgba_hwc_uint8)).to(self._execution_device)
        rgba_b4hw_01 = rearrange(rgba, "h w c -> 1 c h w").float() / 255.0
        raw = encode_adjusted_latent(self.vae, self.transparent_encoder, rgba_b4hw_01.to(self.vae.dtype))
        return raw.float() * self.vae.config.scaling_factor

    def check_inputs(
        self,
        prompt: str | list[str] | None,
        image: ImageInput | None,
        base_latent: LatentInput | None,
        num_frames: int,
        num_inference_steps: int,
        num_videos_per_prompt: int,
        decode_chunk_size: int,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str],
        *,
        seamless: bool = False,
        context_windows: bool | None = None,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        context_overlap: int | None = None,
        context_weighting: str = "pyramid",
    ) -> None:
        """Refuse bad arguments before any model runs, naming the argument, its value and the fix."""
        if prompt is None or not isinstance(prompt, (str, list)) or (isinstance(prompt, list) and not prompt):
            raise UsageError(f"prompt={prompt!r} must be a string or a non-empty list of strings.")
        if (image is None) == (base_latent is None):
            raise UsageError("give exactly one of image (an RGBA still) or base_latent (a stage-one latent).")
        if num_frames < 2:
            raise UsageError(f"num_frames={num_frames} must be at least 2 (the still and one more frame).")
        if context_windows is False and num_frames > self.max_frames:
            raise UsageError(
                f"num_frames={num_frames} is beyond the motion module's window of {self.max_frames} with "
                "context_windows=False; allow context windows or pick at most that many frames."
            )
        if context_windows is False and seamless:
            raise UsageError(
                "seamless=True wraps context windows around the clip; drop context_windows=False."
            )
        if seamless and num_frames < 3:
            raise UsageError(f"seamless=True needs num_frames of at least 3 (got {num_frames}) to loop.")
        if not 2 <= context_length < self.max_frames:
            raise UsageError(
                f"context_length={context_length} is outside 2..{self.max_frames - 1} (the motion module's "
                "window, less one position for the base-frame anchor); pick one in that range."
            )
        if context_overlap is not None and not 0 <= context_overlap < context_length:
            raise UsageError(
                f"context_overlap={context_overlap} is outside 0..{context_length - 1}; windows overlap by "
                "fewer frames than they hold."
            )
        window_weights(2, context_weighting)  # raises for an unknown weighting
        if num_inference_steps < 1:
            raise UsageError(f"num_inference_steps={num_inference_steps} must be at least 1.")
        if num_videos_per_prompt < 1:
            raise UsageError(f"num_videos_per_prompt={num_videos_per_prompt} must be at least 1.")
        if decode_chunk_size < 1:
            raise UsageError(f"decode_chunk_size={decode_chunk_size} must be at least 1.")
        check_output_type(output_type)
        check_callback_inputs(callback_on_step_end_tensor_inputs, self._callback_tensor_inputs)

    def prepare_base_latents(
        self, image: ImageInput | None, base_latent: LatentInput | None, num_prompts: int
    ) -> torch.Tensor:
        """The clean base latents (p, c, h, w) float32, one per prompt, in the UNet's transparent latent
        space: each RGBA still encoded on its own, or the given stage-one latents. One base serves all."""
        if image is not None:
            images = list(image) if isinstance(image, list) else [image]
            bases = [self.encode_image(rgba) for rgba in images]
            name = "image"
        else:
            assert base_latent is not None
            given = base_latent if isinstance(base_latent, list) else [base_latent]
            bases = []
            for latent in given:
                if latent.ndim == 3:
                    latent = latent[None]
                if latent.ndim != 4 or latent.shape[1] != self.unet.config.in_channels:
                    raise UsageError(
                        f"base_latent has shape {tuple(latent.shape)}; expected "
                        f"(n, {self.unet.config.in_channels}, h, w)."
                    )
                bases.extend(latent.float().split(1))
            name = "base_latent"
        if len({tuple(b.shape) for b in bases}) != 1:
            raise UsageError(f"{name} entries differ in size; give stills (or latents) of one size.")
        if len(bases) not in (1, num_prompts):
            raise UsageError(
                f"{name} has {len(bases)} entries for {num_prompts} prompts; give one, or one per prompt."
            )
        return torch.cat(bases * (num_prompts if len(bases) == 1 else 1))

    def prepare_latents(
        self,
        batch: int,
        num_frames: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
        free_noise_window: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Initial noise (b, c, f, h, w) × `init_noise_sigma` (h, w in latent pixels), drawn in fp32 on the
        generator's device (the CPU without one); with a generator list, video i draws from generator i.

        `free_noise_window=(context_length, stride)` reschedules the noise as FreeNoise does (frames past the
        first window are shuffled copies of earlier ones), so overlapping windows start from agreeing noise.
        """
        shape = (batch, self.unet.config.in_channels, num_frames, height, width)
        if latents is None:
            first = first_generator(generator)
            gen_device = first.device if first is not None else torch.device("cpu")
            if free_noise_window is not None and num_frames > free_noise_window[0]:
                length, stride = free_noise_window
                generators = generator if isinstance(generator, list) else [generator]
                rows = batch // len(generators)
                latents = torch.cat(
                    [
                        free_noise_latents(
                            (rows, *shape[1:]),
                            context_length=length,
                            context_stride=stride,
                            generator=g,
                            device=gen_device,
                        )
                        for g in generators
                    ]
                )
            else:
                latents = randn_tensor(shape, generator=generator, device=gen_device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise UsageError(f"latents has shape {tuple(latents.shape)}; expected {shape} for this call.")
        return (latents.float() * self.scheduler.init_noise_sigma).to(device=device, dtype=dtype)

    def encode_prompts(
        self, prompts: list[str], negatives: list[str], guidance: bool, clip_skip: int | None
    ) -> torch.Tensor:
        """[uncond videos…, cond videos…] CLIP conditioning (2b or b, n, c). Each prompt is encoded on its
        own, so a video's conditioning does not depend on the other prompts of the call."""
        device = self._execution_device
        halves = [
            encode_prompt_sd15(
                self.tokenizer,
                self.text_encoder,
                [p],
                [n],
                device=device,
                guidance=guidance,
                clip_skip=clip_skip,
            ).embeds_bnc
            for p, n in zip(prompts, negatives, strict=True)
        ]
        if not guidance:
            return torch.cat(halves)
        return torch.cat([h[:1] for h in halves] + [h[1:] for h in halves])

    def iter_decode(
        self,
        latents_cfhw: torch.Tensor,
        base_index: int,
        *,
        tta: bool = True,
        decode_chunk_size: int = 4,
        output_type: str = "np",
    ) -> Iterator[np.ndarray | torch.Tensor]:
        """Decode one video's latents chunk by chunk, yielding its frames in order as they come.

        Chunks are "np" uint8 (n, H, W, 4) or "pt" float32 (n, 4, H, W) in [0, 1], straight RGBA; at most
        `decode_chunk_size` frames (and the base frame) are held at once, so a writer that takes an
        iterator never holds the clip. The base frame is decoded on its own, exactly as stage one decodes an
        image, so it is bit-identical to stage one's still; the other frames are decoded in the same chunks
        whether streamed or not.
        """
        if output_type not in ("np", "pt"):
            raise UsageError(f"output_type={output_type!r}: iter_decode yields 'np' or 'pt' chunks.")
        num_frames = latents_cfhw.shape[1]
        scale = self.vae.config.scaling_factor

        def decode(frames: list[int], chunk_size: int) -> torch.Tensor:
            raw_fchw = rearrange(latents_cfhw[:, frames], "c f h w -> f c h w") / scale
            rgba = decode_rgba(self.vae, self.transparent_decoder, raw_fchw, tta=tta, chunk_size=chunk_size)
            return rgba.float().clamp(0, 1) if output_type == "pt" else rgba

        def as_output(rgba_f4hw_01: torch.Tensor) -> np.ndarray | torch.Tensor:
            return rgba_output(rgba_f4hw_01, output_type)  # type: ignore[return-value]

        base_rgba = decode([base_index], 1)
        others = [f for f in range(num_frames) if f != base_index]
        base_sent = False
        for start in range(0, len(others), decode_chunk_size):
            idx = others[start : start + decode_chunk_size]
            rgba = decode(idx, decode_chunk_size)
            if not base_sent and idx[-1] > base_index:
                before = sum(f < base_index for f in idx)
                pieces = [rgba[:before], base_rgba, rgba[before:]]
                yield as_output(torch.cat([piece for piece in pieces if len(piece)]))
                base_sent = True
            else:
                yield as_output(rgba)
        if not base_sent:
            yield as_output(base_rgba)

    @contextlib.contextmanager
    def _base_frame_at(self, index: int) -> Iterator[None]:
        """Tell Inter-Frame Attention (when installed) where the base frame sits in the next UNet calls."""
        context = inter_frame_attention_context(self.unet)
        if context is None:
            yield
            return
        previous = context.base_index
        context.base_index = index
        try:
            yield
        finally:
            context.base_index = previous

    def predict_noise(
        self,
        latents_bcfhw: torch.Tensor,
        timestep: torch.Tensor,
        prompt_embeds: torch.Tensor,
        base_bc1hw: torch.Tensor,
        base_index: int,
        guidance_scale: float,
        schedule: ContextSchedule | None = None,
        weighting: str = "pyramid",
    ) -> torch.Tensor:
        """The guided noise prediction for every video, with its clean base frame at `base_index`.

        One UNet call per video (per context window with a `schedule`): a call already holds all its
        frames, and a video's result then never depends on the others (a batched call equals single calls
        bit for bit). With a schedule, each window's prediction is blended into its frames with the
        normalised window weights.
        """
        videos = latents_bcfhw.shape[0]
        guidance = prompt_embeds.shape[0] == 2 * videos

        def guided(window_1cfhw: torch.Tensor, b: int, anchor: int) -> torch.Tensor:
            model_input = torch.cat([window_1cfhw] * 2) if guidance else window_1cfhw
            model_input = self.scheduler.scale_model_input(model_input, timestep)
            model_input[:, :, anchor : anchor + 1] = base_bc1hw[b : b + 1]
            text = prompt_embeds[b::videos]  # (2 or 1, n, c): [uncond, cond] of video b
            text_rows = text.repeat_interleave(
                window_1cfhw.shape[2], dim=0
            )  # rows v*F + f, as the UNet folds
            with self._base_frame_at(anchor):
                noise_pred = self.unet(model_input, timestep, encoder_hidden_states=text_rows).sample
            if guidance:
                uncond, cond = noise_pred.chunk(2)
                noise_pred = uncond + guidance_scale * (cond - uncond)
            return noise_pred

        predictions = []
        for b in range(videos):
            latents_1cfhw = latents_bcfhw[b : b + 1]
            if schedule is None:
                predictions.append(guided(latents_1cfhw, b, base_index))
                continue
            # Normalised blending weights: each frame's weights over the windows holding it sum to 1, so
            # a frame in one window takes that window's prediction unchanged.
            totals = torch.zeros(schedule.num_frames)
            for window in schedule.windows:
                totals[list(window)] += window_weights(len(window), weighting)
            blended = torch.zeros_like(latents_1cfhw)
            for window, call, anchor, inserted in zip(
                schedule.windows, schedule.calls, schedule.anchors, schedule.inserted, strict=True
            ):
                noise_pred = guided(latents_1cfhw[:, :, list(call)], b, anchor)
                if inserted:  # the base-frame anchor was only there to be seen
                    keep = [k for k in range(len(call)) if k != anchor]
                    noise_pred = noise_pred[:, :, keep]
                share = window_weights(len(window), weighting) / totals[list(window)]
                share = share.to(device=noise_pred.device, dtype=noise_pred.dtype)
                blended[:, :, list(window)] += (
                    noise_pred * share[:, None, None]
                )  # (1, c, f, h, w) · (f, 1, 1)
            predictions.append(blended)
        return torch.cat(predictions)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        *,
        image: ImageInput | None = None,
        base_latent: LatentInput | None = None,
        num_frames: int = DEFAULT_FRAMES,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        num_videos_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        clip_skip: int | None = None,
        base_position: str | int = "middle",
        seamless: bool = False,
        context_windows: bool | None = None,
        context_length: int | None = None,
        context_overlap: int | None = None,
        context_weighting: str = "pyramid",
        free_noise: bool = True,
        tta: bool = True,
        decode_chunk_size: int = 4,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        progress: ProgressFn | None = None,
    ) -> LayerAnimateOutput | tuple[Any, ...]:
        """Animate RGBA stills (or stage-one latents) into straight-RGBA videos.

        Args:
            prompt: the text, or a list (one video per prompt, a batched call).
            negative_prompt: what guidance steers away from; one for all prompts or one per prompt.
            image: an RGBA still (H, W, 4) uint8, or a list with one per prompt.
            base_latent: instead of `image`, stage one's adjusted latent (n, 4, h, w) or a list; n is 1
                (shared) or one per prompt.
            num_frames: frames per video, from 2; beyond `context_length` the clip is denoised in
                overlapping context windows.
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance weight; ≤ 1 turns guidance off.
            num_videos_per_prompt: videos for each prompt (rows prompt-major; a batched call when > 1).
            generator: a `torch.Generator`, or a list with one per video (video i then depends only on
                generator i, so a batched call equals single calls with the same seeds).
            latents: initial noise (b, 4, f, h, w) instead of drawing it (scaled by `init_noise_sigma`).
            clip_skip: CLIP layers to skip from the end (diffusers' `encode_prompt`).
            base_position: where the still sits: "middle" (the paper's (F − 1) // 2), "start", "end" or a
                frame index. That frame decodes bit-identically to the still wherever it sits.
            seamless: a loop: context windows wrap around the end, so the last frames are denoised with
                the first (needs 3 frames or more).
            context_windows: None: windows when the clip is longer than `context_length` or seamless; True:
                always (a clip within one window gives the same frames either way); False: never (then at
                most the motion module's window of frames).
            context_length: frames per window (default the motion module's trained length, 16); a window
                that does not hold the base frame gets it as one extra position.
            context_overlap: frames shared by neighbouring windows (default a quarter of a window).
            context_weighting: how overlapping predictions blend: "pyramid" (FreeNoise) or "flat".
            free_noise: reschedule the initial noise as FreeNoise does when windows are used.
            tta: decode with the transparency decoder's test-time augmentation (slower, cleaner alpha).
            decode_chunk_size: frames decoded at once (memory vs speed).
            output_type: "np" (uint8), "pt" (float in [0, 1]), "pil", or "latent" (no decoding; decode
                later, streaming, with `iter_decode(latents[b], middle_index)`).
            return_dict: a `LayerAnimateOutput`, or the tuple `(frames, latents, middle_index)` when False.
            callback_on_step_end: `callback(pipe, step, timestep, tensors) -> dict` after every step; tensors
                it returns (`latents` (b, c, f, h, w), `prompt_embeds`) replace the pipeline's, and the clean
                base frame is put back into the latents after it. `pipe._interrupt = True` skips the
                remaining steps (the latents so far are decoded).
            callback_on_step_end_tensor_inputs: the names passed to the callback (default `["latents"]`).
            progress: `progress(phase, done, total)`, phase "denoise" or "decode".
        """
        # 1. Check inputs
        tensor_inputs = (
            ["latents"]
            if callback_on_step_end_tensor_inputs is None
            else list(callback_on_step_end_tensor_inputs)
        )
        window = (
            min(DEFAULT_CONTEXT_LENGTH, self.max_frames - 1) if context_length is None else context_length
        )
        self.check_inputs(
            prompt,
            image,
            base_latent,
            num_frames,
            num_inference_steps,
            num_videos_per_prompt,
            decode_chunk_size,
            output_type,
            tensor_inputs,
            seamless=seamless,
            context_windows=context_windows,
            context_length=window,
            context_overlap=context_overlap,
            context_weighting=context_weighting,
        )
        base_index = resolve_base_position(base_position, num_frames)
        batched = isinstance(prompt, list) or num_videos_per_prompt > 1
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)  # type: ignore[arg-type]
        negatives = as_list(negative_prompt, len(prompts))
        batch = len(prompts) * num_videos_per_prompt
        check_generators(generator, batch)
        device = self._execution_device
        dtype = self.unet.dtype
        guidance = guidance_scale > 1.0
        self._interrupt = False
        use_windows = context_windows if context_windows is not None else (seamless or num_frames > window)
        schedule = (
            context_schedule(
                num_frames,
                base_index,
                context_length=window,
                context_overlap=context_overlap,
                seamless=seamless,
            )
            if use_windows
            else None
        )

        # 2. The base latents: clean, in the UNet's (scaled) transparent latent space, one per video
        bases = self.prepare_base_latents(image, base_latent, len(prompts))
        bases = bases.repeat_interleave(num_videos_per_prompt, dim=0)  # (b, c, h, w), prompt-major
        base_bc1hw = rearrange(bases.to(device=device, dtype=dtype), "b c h w -> b c 1 h w")
        height, width = bases.shape[-2:]

        # 3. Encode the prompts ([uncond videos, cond videos] with guidance)
        prompt_embeds = self.encode_prompts(
            [p for p in prompts for _ in range(num_videos_per_prompt)],
            [n for n in negatives for _ in range(num_videos_per_prompt)],
            guidance,
            clip_skip,
        ).to(dtype)

        # 4. Timesteps and initial noise for every frame (the base frame's is replaced by the base)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        free_noise_window = None
        if schedule is not None and free_noise:
            free_noise_window = (len(schedule.windows[0]), schedule.stride)
        latents = self.prepare_latents(
            batch, num_frames, height, width, dtype, device, generator, latents, free_noise_window
        )
        latents[:, :, base_index : base_index + 1] = base_bc1hw

        # 5. Denoising loop. The base frame enters every UNet call clean (after the scheduler's input
        # scaling, as in training: no noise, no scaling) and is put back after every step.
        for i, t in enumerate(timesteps):
            if self.interrupt:
                continue
            noise_pred = self.predict_noise(
                latents, t, prompt_embeds, base_bc1hw, base_index, guidance_scale, schedule, context_weighting
            )
            latents = self.scheduler.step(noise_pred, t, latents, generator=generator).prev_sample
            latents[:, :, base_index : base_index + 1] = base_bc1hw
            if callback_on_step_end is not None:
                tensors = {"latents": latents, "prompt_embeds": prompt_embeds}
                returned = callback_on_step_end(self, i, t, {k: tensors[k] for k in tensor_inputs}) or {}
                latents = returned.pop("latents", latents)
                prompt_embeds = returned.pop("prompt_embeds", prompt_embeds)
                latents[:, :, base_index : base_index + 1] = (
                    base_bc1hw  # the base stays clean whatever it did
                )
            if progress is not None:
                progress("denoise", i + 1, len(timesteps))
        latents_out = latents.float().cpu()

        # 6. Decode every frame of every video through the SD VAE and the transparency decoder
        if output_type == "latent":
            self.maybe_free_model_hooks()
            output = LayerAnimateOutput(frames=latents_out, latents=latents_out, middle_index=base_index)
            return output if return_dict else output.to_tuple()
        decode_type = "pt" if output_type == "pt" else "np"
        videos = []
        done = 0
        for b in range(batch):
            chunks = []
            for chunk in self.iter_decode(
                latents[b], base_index, tta=tta, decode_chunk_size=decode_chunk_size, output_type=decode_type
            ):
                chunks.append(chunk)
                done += len(chunk)
                if progress is not None:
                    progress("decode", done, batch * num_frames)
            videos.append(torch.cat(chunks) if decode_type == "pt" else np.concatenate(chunks))
        self.maybe_free_model_hooks()
        if output_type == "pil":
            videos = [[PIL.Image.fromarray(rgba) for rgba in video] for video in videos]
        if not batched:
            result: Any = videos[0]
        elif output_type == "pil":
            result = videos
        elif output_type == "pt":
            result = torch.stack(videos)
        else:
            result = np.stack(videos)
        output = LayerAnimateOutput(frames=result, latents=latents_out, middle_index=base_index)
        return output if return_dict else output.to_tuple()
