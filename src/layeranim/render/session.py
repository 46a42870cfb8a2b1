"""A render session: models loaded once, then any number of images and videos rendered from them.

The CLI's `image`, `animate` and `generate` (and their batch modes) are thin layers over this: they
validate, build one `RenderSession`, call it per item, and write what it returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from layeranim.errors import UsageError
from layeranim.pipelines._schedulers import (
    DEFAULT_VIDEO_SCHEDULE,
    check_stage_settings,
    make_image_scheduler,
    make_video_scheduler,
    scheduler_facts,
    stage_scheduler_facts,
)
from layeranim.pipelines.layeranimate import LayerAnimatePipeline, MotionUNet, build_motion_unet
from layeranim.pipelines.layerdiffuse import LayerDiffusePipeline
from layeranim.progress import StageProgress
from layeranim.render.components import Components, ModelSpec, load_components, load_motion_adapter
from layeranim.render.devices import generator_for
from layeranim.render.settings import OFFLOAD_MODES

if TYPE_CHECKING:
    from layeranim.community import LoadedAdapter, LoraRef
    from layeranim.speed import SpeedPreset

logger = logging.getLogger(__name__)

_SD15_ONLY = (
    "family={family!r}: stage two (animate/generate) runs on SD1.5 AnimateDiff motion modules; use "
    "family='sd15' (stage one, an image render, supports sdxl)."
)
PipelineT = TypeVar("PipelineT", LayerDiffusePipeline, LayerAnimatePipeline)


@dataclass
class ImageResult:
    rgba_hwc_uint8: np.ndarray
    latent_b4hw: torch.Tensor  # adjusted latent, UNet space, float32 CPU
    seconds: float


@dataclass
class VideoResult:
    frames_fhwc_uint8: np.ndarray
    middle_index: int
    seconds: float


@dataclass
class VideoLatents:
    """Stage two's denoised clip, not yet decoded: decode it with `RenderSession.iter_frames`."""

    latents_cfhw: torch.Tensor  # one video's final latents, UNet space, float32 CPU
    base_index: int  # the frame that holds the still
    seconds: float  # denoising time
    crop_hw: tuple[int, int] | None = None  # an RGBA input's size: frames are cropped back to it
    pipeline: LayerAnimatePipeline | None = field(default=None, repr=False)  # the one that denoised it

    @property
    def num_frames(self) -> int:
        return int(self.latents_cfhw.shape[1])


@dataclass
class RenderSession:
    """Loads a `ModelSpec` once on a device/dtype and renders stage one and stage two from it."""

    spec: ModelSpec
    device: torch.device
    dtype: torch.dtype
    # Samplers (pipelines/_schedulers.py): `scheduler` for stage one (None: the family's default) and for
    # stage two unless `video_scheduler` is given (both None: DDIM).
    scheduler: str | None = None
    video_scheduler: str | None = None
    video_schedule: str = DEFAULT_VIDEO_SCHEDULE  # "animatediff" (its training betas) or "base"
    motion_norm: str = "original"  # GroupNorm as the motion module was trained, or "diffusers"
    ifa_weights: Path | None = None
    offload: str = "none"  # none | model | sequential (accelerate's CPU-offload hooks)
    # Stage two will run (animate, generate): checked early, and built before any offloading.
    will_animate: bool = False
    # Stage one may run; False (animate) moves its UNet off the accelerator once stage two is built.
    image_stage: bool = True
    # Community add-ons of stage two (the base model's LoRAs and embeddings are in `spec`), CLIP layers
    # skipped from the end in both stages, and a few-step speed preset for stage two (`layeranim.speed`).
    motion_loras: tuple[LoraRef, ...] = ()
    clip_skip: int | None = None
    speed: str | None = None
    allow_ifa_mismatch: bool = False
    load_seconds: dict[str, float] = field(default_factory=dict)
    _components: Components | None = None
    _motion: MotionUNet | None = None
    _motion_loaded: list[LoadedAdapter] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.will_animate and self.spec.family != "sd15":
            raise UsageError(_SD15_ONLY.format(family=self.spec.family))
        check_stage_settings(self.scheduler, self.video_scheduler, self.video_schedule)
        if self.offload not in OFFLOAD_MODES:
            raise UsageError(
                f"offload={self.offload!r} is not one of {', '.join(OFFLOAD_MODES)}.", argument="offload"
            )
        if self.offload != "none" and self.device.type not in ("cuda", "xpu"):
            raise UsageError(
                f"offload={self.offload!r} keeps weights on the CPU and moves them to an accelerator when "
                f"needed; with device={self.device.type!r} there is nothing to offload to. Use "
                "offload='none'.",
                argument="offload",
            )

    @property
    def speed_preset(self) -> SpeedPreset | None:
        """The few-step preset stage two samples with (None: the spec's motion adapter and scheduler)."""
        if self.speed is None:
            return None
        from layeranim.speed import get_speed_preset

        return get_speed_preset(self.speed)

    @property
    def load_device(self) -> torch.device:
        """Offloaded models start on the CPU; accelerate's hooks move them to the accelerator when used."""
        return torch.device("cpu") if self.offload != "none" else self.device

    @property
    def components(self) -> Components:
        if self._components is None:
            start = time.perf_counter()
            self._components = load_components(self.spec, device=self.load_device, dtype=self.dtype)
            self.load_seconds["load_models"] = time.perf_counter() - start
        return self._components

    @property
    def motion(self) -> MotionUNet:
        if self._motion is None:
            c = self.components
            if c.family != "sd15":
                raise UsageError(_SD15_ONLY.format(family=c.family))
            start = time.perf_counter()
            adapter = self._motion_adapter()
            self._motion = build_motion_unet(
                c.unet, adapter, c.layerdiffuse_processors, self.ifa_weights, motion_norm=self.motion_norm
            )
            # Stage two's own add-ons, fused into the motion UNet only: a preset's LoRA (AnimateLCM's LCM
            # LoRA), then the MotionLoRAs (camera moves).
            from layeranim.community import load_motion_loras
            from layeranim.speed import apply_speed_lora

            preset = self.speed_preset
            if preset is not None:
                self._motion_loaded += apply_speed_lora(self._motion.unet, preset)
            self._motion_loaded += load_motion_loras(self._motion.unet, self.motion_loras)
            self._motion.unet.to(self.load_device)
            if not self.image_stage and self.device.type != "cpu":
                c.unet.to("cpu")  # stage one will not run (animate): keep its UNet off the accelerator
            self.load_seconds["load_motion"] = time.perf_counter() - start
            if self._motion.ifa_metadata is None:
                logger.warning(
                    "no Inter-Frame Attention weights given (pass ifa_weights=PATH): running the paper's "
                    "motion-module baseline. Train them with `layeranim train`."
                )
        return self._motion

    def _motion_adapter(self) -> Any:
        """Stage two's MotionAdapter: the speed preset's (its IFA weights checked first), else the spec's."""
        from layeranim.speed import check_ifa_weights, load_motion_weights, load_speed_motion_adapter

        preset = self.speed_preset
        if preset is not None:
            check_ifa_weights(preset, self.ifa_weights, allow_ifa_mismatch=self.allow_ifa_mismatch)
            return load_speed_motion_adapter(preset, dtype=self.dtype)
        ref = self.spec.motion_adapter
        if ref is None:
            return load_motion_adapter(_default_adapter(self.spec), dtype=self.dtype)
        # A folder, an original motion module, or a diffusers-keyed state-dict file (Lightning's).
        return load_motion_weights(ref, dtype=self.dtype)

    @property
    def sources(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.components.sources)
        if self._motion is not None and self.ifa_weights is not None:
            out["ifa_weights"] = str(self.ifa_weights)
        if self._motion_loaded:
            from layeranim.community import provenance

            out["motion_community"] = provenance(self._motion_loaded)
        if self.speed is not None:
            out["speed"] = self.speed
        return out

    def scheduler_facts(self) -> dict[str, dict[str, object]]:
        """Per stage: sampler, beta schedule and timestep spacing (for manifests and --json).

        With a speed preset, stage two's are those of the preset's scheduler (what `stage_two` installs),
        its sampler named after the preset."""
        config = self.components.scheduler.config
        video_name = self.video_scheduler or self.scheduler
        facts = stage_scheduler_facts(
            config,
            family=self.components.family,
            image_scheduler=self.scheduler,
            video_scheduler=video_name,
            video_schedule=self.video_schedule,
        )
        preset = self.speed_preset
        if preset is not None:
            from layeranim.speed import speed_scheduler

            built = make_video_scheduler(config, video_name, schedule=self.video_schedule)
            video = speed_scheduler(preset, built.config)
            facts["video"] = {
                **scheduler_facts(facts["video"]["sampler"], video),
                "sampler": preset.name,
                "schedule": self.video_schedule,
            }
        return facts

    def expand_prompt(self, text: str) -> str:
        """`text` with each multi-vector embedding token spelt as all its tokens (no-op without any)."""
        if not self.spec.embeddings:
            return text
        from layeranim.community import expand_embedding_tokens

        return expand_embedding_tokens(text, self.components.tokenizer)

    def _offloaded(self, pipe: PipelineT) -> PipelineT:
        """Apply the offload mode. Called for every new pipeline: the two stages share the VAE, the text
        encoder and the transparency models, so their hooks are (re)installed for the stage about to run."""
        if self.offload == "model":
            pipe.enable_model_cpu_offload(device=self.device)
        elif self.offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=self.device)
        return pipe

    def stage_one(self) -> LayerDiffusePipeline:
        c = self.components
        if self.offload == "sequential" and self.will_animate:
            # Sequential offload leaves the UNet's weights on the meta device between calls, where
            # from_unet2d could not copy them: build the motion UNet first.
            _ = self.motion
        return self._offloaded(
            LayerDiffusePipeline(
                vae=c.vae,
                text_encoder=c.text_encoder,
                tokenizer=c.tokenizer,
                unet=c.unet,
                scheduler=make_image_scheduler(c.scheduler.config, self.scheduler, family=c.family),
                transparent_decoder=c.transparent_decoder,
                transparent_encoder=c.transparent_encoder,
                text_encoder_2=c.text_encoder_2,
                tokenizer_2=c.tokenizer_2,
            )
        )

    def stage_two(self) -> LayerAnimatePipeline:
        c = self.components
        pipe = LayerAnimatePipeline(
            vae=c.vae,
            text_encoder=c.text_encoder,
            tokenizer=c.tokenizer,
            unet=self.motion.unet,
            scheduler=make_video_scheduler(
                c.scheduler.config, self.video_scheduler or self.scheduler, schedule=self.video_schedule
            ),
            transparent_decoder=c.transparent_decoder,
            transparent_encoder=c.transparent_encoder,
        )
        preset = self.speed_preset
        if preset is not None:  # the distilled motion weights' own sampler (from the base config)
            from layeranim.speed import apply_speed_scheduler

            apply_speed_scheduler(pipe, preset)
        return self._offloaded(pipe)

    def image(
        self,
        prompt: str,
        *,
        negative_prompt: str = "",
        seed: int,
        steps: int,
        guidance: float,
        width: int | None = None,
        height: int | None = None,
        tta: bool = True,
        progress: StageProgress | None = None,
    ) -> ImageResult:
        """Stage one: text → one RGBA image and its adjusted latent."""
        pipe = self.stage_one()
        start = time.perf_counter()
        out = pipe(
            self.expand_prompt(prompt),
            self.expand_prompt(negative_prompt),
            height=height,
            width=width,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator_for(self.device, seed),
            tta=tta,
            progress=_staged(progress, "image"),
            clip_skip=self.clip_skip,
        )
        return ImageResult(out.images[0], out.latents[:1], time.perf_counter() - start)

    def video(
        self,
        prompt: str,
        *,
        negative_prompt: str = "",
        seed: int,
        frames: int,
        steps: int,
        guidance: float,
        image: np.ndarray | None = None,
        base_latent: torch.Tensor | None = None,
        tta: bool = True,
        decode_chunk_size: int = 4,
        progress: StageProgress | None = None,
        **long_clip: object,
    ) -> VideoResult:
        """Stage two: an RGBA image or a stage-one latent → RGBA frames, all held at once (see
        `video_latents` + `iter_frames` for the streamed path, which gives the same frames)."""
        video = self.video_latents(
            prompt,
            negative_prompt=negative_prompt,
            seed=seed,
            frames=frames,
            steps=steps,
            guidance=guidance,
            image=image,
            base_latent=base_latent,
            progress=progress,
            **long_clip,  # type: ignore[arg-type]
        )
        start = time.perf_counter()
        chunks = list(
            self.iter_frames(video, tta=tta, decode_chunk_size=decode_chunk_size, progress=progress)
        )
        seconds = video.seconds + time.perf_counter() - start
        return VideoResult(np.concatenate(chunks), video.base_index, seconds)

    def video_latents(
        self,
        prompt: str,
        *,
        negative_prompt: str = "",
        seed: int,
        frames: int,
        steps: int,
        guidance: float,
        image: np.ndarray | None = None,
        base_latent: torch.Tensor | None = None,
        base_position: str | int = "middle",
        seamless: bool = False,
        context_length: int | None = None,
        context_overlap: int | None = None,
        context_weighting: str = "pyramid",
        progress: StageProgress | None = None,
    ) -> VideoLatents:
        """Stage two's denoising only: an RGBA image or a stage-one latent → the clip's latents.

        Clips longer than the motion window are denoised in context windows; the still sits at
        `base_position`; `seamless` wraps the windows around the end (see `LayerAnimatePipeline`).
        """
        pipe = self.stage_two()
        start = time.perf_counter()
        out = pipe(
            self.expand_prompt(prompt),
            self.expand_prompt(negative_prompt),
            image=image,
            base_latent=base_latent,
            num_frames=frames,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator_for(self.device, seed),
            base_position=base_position,
            seamless=seamless,
            context_length=context_length,
            context_overlap=context_overlap,
            context_weighting=context_weighting,
            output_type="latent",
            progress=_staged(progress, "video"),
            clip_skip=self.clip_skip,
        )
        crop = None if image is None else (int(image.shape[0]), int(image.shape[1]))
        return VideoLatents(out.latents[0], out.base_index, time.perf_counter() - start, crop, pipe)

    def iter_frames(
        self,
        video: VideoLatents,
        *,
        tta: bool = True,
        decode_chunk_size: int = 4,
        progress: StageProgress | None = None,
    ) -> Iterator[np.ndarray]:
        """Decode `video` chunk by chunk: straight RGBA uint8 chunks (n, H, W, 4) in frame order.

        At most `decode_chunk_size` frames (and the still) are decoded at a time, so a writer that takes
        an iterator never holds the clip. The still's frame is decoded on its own, as stage one decodes
        its image, so it is byte-identical to it.
        """
        pipe = video.pipeline if video.pipeline is not None else self.stage_two()
        # The latents in the dtype and on the device the pipeline denoised them in (float32 holds fp16
        # and bf16 exactly), so the frames equal those of a decoding __call__ bit for bit.
        latents_cfhw = video.latents_cfhw.to(device=pipe._execution_device, dtype=pipe.unet.dtype)
        done = 0
        with torch.no_grad():
            for chunk in pipe.iter_decode(
                latents_cfhw, video.base_index, tta=tta, decode_chunk_size=decode_chunk_size, output_type="np"
            ):
                if video.crop_hw is not None:  # the latent grid was padded to a multiple of 8
                    chunk = chunk[:, : video.crop_hw[0], : video.crop_hw[1]]
                done += len(chunk)
                if progress is not None:
                    progress("video", "decode", done, video.num_frames)
                yield np.ascontiguousarray(chunk)
        pipe.maybe_free_model_hooks()


def _default_adapter(spec: ModelSpec) -> object:
    from layeranim import weights

    return weights.default_source(spec.family, "motion_adapter")


def _staged(progress: StageProgress | None, stage: str) -> Callable[[str, int, int], None] | None:
    if progress is None:
        return None
    return lambda phase, done, total: progress(stage, phase, done, total)
