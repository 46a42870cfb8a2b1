"""The render API: a request in; files, sidecars and manifests out — exactly what the CLI writes.

    from layeranim import render

    models = render.ModelSettings(preset="tiny")
    outcome = render.generate(render.GenerateRequest("a paper lantern", "lantern.webm", models=models))
    print(outcome.to_json())  # what `layeranim generate --json` prints

- `image(ImageRequest)`: stage one → an RGBA PNG/WebP (+ its latent sidecar with `save_latent=True`).
- `animate(AnimateRequest)`: an RGBA still or latent sidecar → a clip (stage two).
- `generate(GenerateRequest)`: text → image → clip (both stages, models loaded once).
- `run_batch(BatchRequest)`: a batch file of either, skipping finished items on re-runs.
- `open_session(ModelSettings)`: a `RenderSession` to pass as `session=` to several calls, so the models
  load once for all of them.

Progress arrives through `progress(stage, phase, done, total)`, human notes through `notify(message)`;
nothing is printed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from layeranim.errors import UsageError, as_out_of_memory
from layeranim.progress import StageProgress
from layeranim.render.batch import BatchJob, BatchSummary, ItemResult, RenderResult
from layeranim.render.outputs import (
    Notify,
    check_clip_targets,
    check_image_target,
    latent_sidecar_path,
    make_parent_dir,
    rgba_digest,
    save_latent,
    write_clip,
    write_single_manifest,
)
from layeranim.render.settings import (
    SEED_LIMIT,
    AnimateRequest,
    BatchRequest,
    GenerateRequest,
    ImageRequest,
    ModelSettings,
    OutputSettings,
    SamplingSettings,
    check_clip,
    check_render,
    check_seed,
    normalize_base_position,
    render_params,
)

if TYPE_CHECKING:  # the session imports torch and diffusers: only when a render starts
    from layeranim.render.inputs import AnimationInput
    from layeranim.render.session import RenderSession, VideoLatents

DEFAULT_BATCH_SEED = 0  # a fixed base seed, so re-runs derive the same per-item seeds and skip finished work


@dataclass
class ImageOutcome:
    """What an image request wrote."""

    output: Path
    latent: Path | None
    seed: int
    width: int
    height: int
    seconds: float
    schedulers: dict[str, dict[str, Any]] = field(default_factory=dict)  # {"image": sampler facts}

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "latent": str(self.latent) if self.latent else None,
            "seed": self.seed,
            "width": self.width,
            "height": self.height,
            "schedulers": self.schedulers,
            "seconds": round(self.seconds, 3),
        }

    def paths(self) -> list[Path]:
        return [self.output] + ([self.latent] if self.latent else [])


@dataclass
class ClipOutcome:
    """What an animate or generate request wrote, and how long each stage took (seconds).

    Timings: "image" (stage one), "video" (stage two's denoising), "write" (decoding and encoding, which
    stream together).
    """

    output: Path
    frames: int
    fps: float
    width: int
    height: int
    format: str
    codec: str
    alpha: bool
    base_index: int  # the frame that holds the still (byte-identical to it)
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    base_position: str | int = "middle"
    seamless: bool = False
    seam_score: float | None = None  # last→first frame difference / median step (about 1: seamless)
    schedulers: dict[str, dict[str, Any]] = field(default_factory=dict)  # per stage that ran: sampler facts
    preview: Path | None = None
    image: Path | None = None  # generate's save_image
    manifest: Path | None = None
    input: str | None = None  # animate: the file stage two started from (the image or its latent)
    target: str | None = None  # the delivery target, when one wrote the clip
    delivered: list[Path] = field(default_factory=list)  # every file the target wrote (output is the first)
    html: Path | None = None  # the player page of an mp4-stacked output

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "output": str(self.output),
            "frames": self.frames,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "codec": self.codec,
            "alpha": self.alpha,
            "base_position": self.base_position,
            "base_index": self.base_index,
            "seamless": self.seamless,
            "seam_score": self.seam_score,
            "schedulers": self.schedulers,
        }
        if self.target is not None:
            out["target"] = self.target
            out["delivered"] = [str(path) for path in self.delivered]
        for key in ("html", "preview", "image", "manifest"):
            if getattr(self, key) is not None:
                out[key] = str(getattr(self, key))
        out["seed"] = self.seed
        if self.input is not None:
            out["input"] = self.input
        out["seconds"] = self.timings
        return out

    def clip_facts(self) -> dict[str, Any]:
        """What the manifest's "clip" records about the rendered clip (beside its params)."""
        return {
            "frames": self.frames,
            "base_position": self.base_position,
            "base_index": self.base_index,
            "seamless": self.seamless,
            "seam_score": self.seam_score,
        }

    def paths(self) -> list[Path]:
        """The files written: the clip (or every file of its target), then the page, the preview, the
        stage-one image and the manifest if any."""
        clips = self.delivered or [self.output]
        return clips + [p for p in (self.html, self.preview, self.image, self.manifest) if p is not None]


def resolve_seed(seed: int | None) -> int:
    """The run's seed: the given one, or a fresh random one (reported in the outcome)."""
    if seed is None:
        return secrets.randbelow(2**32)
    check_seed(seed)
    return seed


def open_session(
    models: ModelSettings, *, will_animate: bool = False, image_stage: bool = True
) -> RenderSession:
    """A `RenderSession` for `models`: the device and dtype chosen, nothing loaded until the first render.

    `will_animate`: stage two will run (checked now; built before any offloading). `image_stage=False`:
    stage one will not run, so its UNet leaves the accelerator once stage two is built.
    """
    from layeranim.distributed import current_process, process_device
    from layeranim.render.devices import select_device, select_dtype
    from layeranim.render.session import RenderSession

    # Under a launcher (torchrun, accelerate launch, srun) each process takes its own GPU.
    device = process_device(select_device(models.device), current_process())
    dtype = select_dtype(device, models.dtype)
    return RenderSession(
        models.spec(),
        device,
        dtype,
        scheduler=models.scheduler,
        video_scheduler=models.video_scheduler,
        video_schedule=models.video_schedule,
        motion_norm=models.motion_norm,
        ifa_weights=models.ifa_weights,
        offload=models.offload,
        will_animate=will_animate,
        image_stage=image_stage,
        motion_loras=models.motion_loras,
        clip_skip=models.clip_skip,
        speed=models.speed,
        allow_ifa_mismatch=models.allow_ifa_mismatch,
    )


def image(
    request: ImageRequest, *, session: RenderSession | None = None, progress: StageProgress | None = None
) -> ImageOutcome:
    """Stage one: write `request.output` (RGBA PNG/WebP) and, with `save_latent`, its latent sidecar."""
    from layeranim.video_io import write_image

    # 1. Refuse bad targets before any model loads.
    output = request.output
    check_image_target(output, name="output", overwrite=request.overwrite)
    make_parent_dir(output)
    latent_path = latent_sidecar_path(output) if request.save_latent else None
    if latent_path is not None:
        check_image_target_exists(latent_path, "save_latent", request.overwrite)
    seed = resolve_seed(request.seed)
    session = session if session is not None else open_session(request.models)

    # 2. Render.
    result = session.image(
        request.prompt,
        negative_prompt=request.negative_prompt,
        seed=seed,
        steps=request.steps,
        guidance=request.guidance,
        width=request.width,
        height=request.height,
        tta=not request.fast_decode,
        progress=progress,
    )

    # 3. Write.
    written = write_image(output, result.rgba_hwc_uint8, overwrite=request.overwrite)
    if latent_path is not None:
        save_latent(
            latent_path,
            result.latent_b4hw,
            {
                "prompt": request.prompt,
                "negative_prompt": request.negative_prompt,
                "seed": seed,
                "image": output.name,
                "image_sha256": rgba_digest(result.rgba_hwc_uint8),
                "tta": not request.fast_decode,
                "family": session.spec.family,
            },
        )
    height, width = result.rgba_hwc_uint8.shape[:2]
    schedulers = stage_facts(session, "image")
    return ImageOutcome(Path(written), latent_path, seed, width, height, result.seconds, schedulers)


def stage_facts(session: RenderSession, *stages: str) -> dict[str, dict[str, Any]]:
    """Per stage that ran ("image", "video"): its sampler, beta schedule, timestep spacing, … (issue 10)."""
    facts = session.scheduler_facts()
    return {stage: facts[stage] for stage in stages}


def check_image_target_exists(path: Path, name: str, overwrite: bool) -> None:
    from layeranim.errors import OutputExistsError

    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{name}=True would replace {str(path)!r}; pass overwrite=True to replace it.",
            argument="overwrite",
        )


def animate(
    request: AnimateRequest,
    *,
    session: RenderSession | None = None,
    progress: StageProgress | None = None,
    notify: Notify | None = None,
) -> ClipOutcome:
    """Stage two: animate `request.image` into `request.output` (+ preview and manifest if asked)."""
    from layeranim.render.inputs import load_animation_input

    # 1. Refuse bad targets before any model loads.
    check_clip_targets(request.output, request.output_settings)
    if session is None:
        session = open_session(request.models, will_animate=True, image_stage=False)
    sampling = request.sampling
    source = load_animation_input(request.image, width=sampling.width, height=sampling.height, notify=notify)
    seed = resolve_seed(request.seed)

    # 2. Render and write.
    outcome = _animate_clip(
        session,
        sampling,
        request.output_settings,
        source,
        request.prompt,
        request.negative_prompt,
        seed,
        ClipShape(request.frames, request.fps, request.base_position, request.seamless),
        request.output,
        overwrite=request.output_settings.overwrite,
        progress=progress,
        notify=notify,
    )
    outcome.input = source.origin
    if request.output_settings.manifest:
        outcome.manifest = write_single_manifest(
            session,
            output=outcome.output if outcome.target is not None else request.output,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            seed=seed,
            image=request.image,
            params=request.params(),
            timings=outcome.timings,
            clip=outcome.clip_facts(),
            schedulers=outcome.schedulers,
        )
    return outcome


def generate(
    request: GenerateRequest,
    *,
    session: RenderSession | None = None,
    progress: StageProgress | None = None,
    notify: Notify | None = None,
) -> ClipOutcome:
    """Text → image → clip: stage two starts from stage one's adjusted latent, with the same seed."""
    # 1. Refuse bad targets before any model loads.
    check_clip_targets(request.output, request.output_settings)
    if request.save_image is not None:
        check_image_target(request.save_image, name="save_image", overwrite=request.output_settings.overwrite)
    if session is None:
        session = open_session(request.models, will_animate=True)
    seed = resolve_seed(request.seed)

    # 2. Render and write.
    outcome = _generate_clip(
        session,
        request.sampling,
        request.output_settings,
        request.prompt,
        request.negative_prompt,
        seed,
        ClipShape(request.frames, request.fps, request.base_position, request.seamless),
        request.output,
        overwrite=request.output_settings.overwrite,
        progress=progress,
        notify=notify,
        save_image=request.save_image,
    )
    if request.output_settings.manifest:
        outcome.manifest = write_single_manifest(
            session,
            output=outcome.output if outcome.target is not None else request.output,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            seed=seed,
            image=None,
            params=request.params(),
            timings=outcome.timings,
            clip=outcome.clip_facts(),
            schedulers=outcome.schedulers,
        )
    return outcome


@dataclass(frozen=True)
class ClipShape:
    """A clip's length, rate, still position and loop (checked by the request that carried them)."""

    frames: int
    fps: float
    base_position: str | int = "middle"
    seamless: bool = False


def _clip_outcome(
    written: dict[str, Any], video: VideoLatents, shape: ClipShape, seed: int, timings: dict[str, float]
) -> ClipOutcome:
    return ClipOutcome(
        output=Path(written["output"]),
        frames=written["frames"],
        fps=written["fps"],
        width=written["width"],
        height=written["height"],
        format=written["format"],
        codec=written["codec"],
        alpha=written["alpha"],
        base_index=video.base_index,
        seed=seed,
        timings=timings,
        base_position=shape.base_position,
        seamless=shape.seamless,
        seam_score=written["seam_score"],
        preview=Path(written["preview"]) if "preview" in written else None,
        target=written.get("target"),
        delivered=[Path(path) for path in written.get("delivered", [])],
        html=Path(written["html"]) if "html" in written else None,
    )


def _render_video(
    session: RenderSession,
    sampling: SamplingSettings,
    output_settings: OutputSettings,
    shape: ClipShape,
    output: Path,
    *,
    overwrite: bool,
    progress: StageProgress | None,
    notify: Notify | None,
    **inputs: Any,
) -> tuple[VideoLatents, dict[str, Any], float]:
    """Stage two's denoising, then decode and write streamed together: (latents, written, write seconds)."""
    video = session.video_latents(
        frames=shape.frames,
        steps=sampling.steps,
        guidance=sampling.guidance,
        base_position=shape.base_position,
        seamless=shape.seamless,
        context_length=sampling.context_length,
        context_overlap=sampling.context_overlap,
        context_weighting=sampling.context_weighting,
        progress=progress,
        **inputs,
    )
    start = time.perf_counter()
    frames = session.iter_frames(
        video, tta=sampling.tta, decode_chunk_size=sampling.decode_chunk_size, progress=progress
    )
    written = write_clip(output, frames, shape.fps, output_settings, overwrite=overwrite, notify=notify)
    return video, written, time.perf_counter() - start


def _generate_clip(
    session: RenderSession,
    sampling: SamplingSettings,
    output_settings: OutputSettings,
    prompt: str,
    negative_prompt: str,
    seed: int,
    shape: ClipShape,
    output: Path,
    *,
    overwrite: bool,
    progress: StageProgress | None,
    notify: Notify | None,
    save_image: Path | None = None,
) -> ClipOutcome:
    """Stage one, stage two from its adjusted latent (same seed, fresh generator), write."""
    from layeranim.video_io import write_image

    still = session.image(
        prompt,
        negative_prompt=negative_prompt,
        seed=seed,
        steps=sampling.image_steps,
        guidance=sampling.image_guidance,
        width=sampling.width,
        height=sampling.height,
        tta=sampling.tta,
        progress=progress,
    )
    video, written, write_seconds = _render_video(
        session, sampling, output_settings, shape, output, overwrite=overwrite, progress=progress,
        notify=notify, prompt=prompt, negative_prompt=negative_prompt, seed=seed,
        base_latent=still.latent_b4hw,
    )  # fmt: skip
    timings = {
        "image": round(still.seconds, 3),
        "video": round(video.seconds, 3),
        "write": round(write_seconds, 3),
    }
    outcome = _clip_outcome(written, video, shape, seed, timings)
    outcome.schedulers = stage_facts(session, "image", "video")
    if save_image is not None:
        outcome.image = Path(write_image(save_image, still.rgba_hwc_uint8, overwrite=overwrite))
    return outcome


def _animate_clip(
    session: RenderSession,
    sampling: SamplingSettings,
    output_settings: OutputSettings,
    source: AnimationInput,
    prompt: str,
    negative_prompt: str,
    seed: int,
    shape: ClipShape,
    output: Path,
    *,
    overwrite: bool,
    progress: StageProgress | None,
    notify: Notify | None,
) -> ClipOutcome:
    """Stage two from a loaded `AnimationInput`, then write."""
    video, written, write_seconds = _render_video(
        session, sampling, output_settings, shape, output, overwrite=overwrite, progress=progress,
        notify=notify, prompt=prompt, negative_prompt=negative_prompt, seed=seed,
        image=source.rgba_hwc_uint8 if source.latent_b4hw is None else None, base_latent=source.latent_b4hw,
    )  # fmt: skip
    timings = {"video": round(video.seconds, 3), "write": round(write_seconds, 3)}
    outcome = _clip_outcome(written, video, shape, seed, timings)
    outcome.schedulers = stage_facts(session, "video")
    return outcome


def batch_extension(format: str | None) -> str:
    """The extension a batch's `{ext}` (and folder outputs) use: the format's, else webm."""
    from layeranim.video_io import get_format

    if format is None:
        return "webm"
    spec = get_format(format)
    return spec.extensions[0].lstrip(".") if spec.extensions else ""


def run_batch(
    request: BatchRequest,
    *,
    session: RenderSession | None = None,
    progress: StageProgress | None = None,
    notify: Notify | None = None,
    on_start: Callable[[BatchJob, int, int], None] | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
) -> BatchSummary:
    """Render a batch file item by item, one failure never stopping the batch.

    Every output gets a manifest; a re-run skips the items whose output and manifest `render_key` match,
    renders again those whose parameters changed, and never replaces an output that has no layeranim
    manifest unless `overwrite=True`. `on_start(job, position, total)` runs before each item and
    `on_result(item_result)` after each; `summary.exit_code` is 1 when any item failed.

    Under a launcher (`torchrun`, `accelerate launch`, SLURM `srun`; `layeranim.distributed`) every
    process plans the same batch, takes the shard, then its share of it (items rank, rank + world_size, …),
    renders on its own device, and hands its results to process 0: there the summary holds every item
    of the shard, in order; on the other processes only their own (`on_result` ran for those).
    """
    from layeranim.distributed import current_process, process_slice
    from layeranim.render import batch
    from layeranim.render.devices import dtype_name
    from layeranim.render.inputs import load_animation_input
    from layeranim.render.outputs import session_manifest, session_sources

    # 1. Plan everything (files, seeds, output names, collisions) before loading any model.
    items = batch.read_batch_file(request.file, kind=request.kind)  # type: ignore[arg-type]
    base_seed = DEFAULT_BATCH_SEED if request.seed is None else request.seed
    ext = batch_extension(request.output_settings.format)
    jobs = batch.plan_batch(
        items, request.output, base_seed=base_seed, ext=ext, allow_outside=request.allow_outside
    )
    if request.shard is not None:
        jobs = batch.select_shard(jobs, *batch.parse_shard(request.shard))
    for job in jobs:  # an item's own frame count must fit too, before anything renders
        if job.item.frames is not None:
            check_render(
                request.models,
                request.sampling.width,
                request.sampling.height,
                job.item.frames,
                prompt=job.item.prompt,
                negative_prompt=job.item.negative_prompt or "",
                decode_chunk_size=request.sampling.decode_chunk_size,
            )
    process = current_process()
    mine = process_slice(jobs, process.rank, process.world_size)
    if session is None:
        animate_only = request.kind == "inputs"
        session = open_session(request.models, will_animate=True, image_stage=not animate_only)
    if any(not job.output.exists() for job in mine):
        # Load the models now: weights that cannot be found fail the batch once, not once per item.
        session.components  # noqa: B018  (a property that loads)
        session.motion  # noqa: B018
    sources = session_sources(session)
    device, dtype = str(session.device), dtype_name(session.dtype)
    if process.distributed and ":" not in str(request.models.device):
        # `cuda:LOCAL_RANK` was the launcher's choice, not the user's: key renders by the device type, so
        # a re-run with another number of processes (or none) still skips the finished items.
        device = session.device.type
    sampling, output_settings = request.sampling, request.output_settings
    # The CLIP scorer loads once for the whole batch (and fails here, before any render, when offline).
    scorer = _eval_scorer(request.models, device) if request.evaluate else None

    def item_shape(job: BatchJob) -> ClipShape:
        item = job.item
        return ClipShape(
            request.frames if item.frames is None else item.frames,
            request.fps if item.fps is None else item.fps,
            request.base_position
            if item.base_position is None
            else normalize_base_position(item.base_position),
            request.seamless if item.seamless is None else item.seamless,
        )

    def item_params(job: BatchJob) -> dict[str, Any]:
        shape = item_shape(job)
        return render_params(
            request.models, sampling, output_settings, frames=shape.frames, fps=shape.fps,
            base_position=shape.base_position, seamless=shape.seamless,
        )  # fmt: skip

    def key_for(job: BatchJob) -> str:
        return batch.render_key(
            item=job.item, seed=job.seed, params=item_params(job), sources=sources, device=device, dtype=dtype
        )

    def render(job: BatchJob) -> RenderResult:
        try:
            return render_item(job)
        except Exception as exc:  # out-of-memory: one item's failure, with the hint on what lowers it
            oom = as_out_of_memory(exc)
            if oom is None:
                raise
            raise oom from exc

    def render_item(job: BatchJob) -> RenderResult:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        shape = item_shape(job)
        check_clip(shape.frames, shape.fps, shape.base_position, shape.seamless)  # this item fails alone
        p = item_params(job)
        item = job.item
        negative = item.negative_prompt if item.negative_prompt is not None else request.negative_prompt
        overwrite = output_settings.overwrite or job.replace
        if request.kind == "inputs":
            if item.image is None:  # read_batch_file requires it; a hand-made item might not have one
                raise UsageError(f"{item.label} has no image to animate.", argument="image")
            source = load_animation_input(
                item.image, width=sampling.width, height=sampling.height, notify=notify
            )
            outcome = _animate_clip(
                session, sampling, output_settings, source, item.prompt, negative, job.seed, shape,
                job.output, overwrite=overwrite, progress=progress, notify=notify,
            )  # fmt: skip
            still: Path | Any = source.rgba_hwc_uint8  # what stage two started from, as it went in
            still_path = None
        else:
            # Measuring the still frame needs stage one's image: keep it beside the clip.
            still_path = still_image_path(job.output) if request.evaluate else None
            outcome = _generate_clip(
                session, sampling, output_settings, item.prompt, negative, job.seed, shape,
                job.output, overwrite=overwrite, progress=progress, notify=notify, save_image=still_path,
            )  # fmt: skip
            still = still_path
        manifest = session_manifest(
            session,
            item=item,
            seed=job.seed,
            params=p,
            timings=outcome.timings,
            output=job.output,
            sources=sources,
            clip=outcome.clip_facts(),
            schedulers=outcome.schedulers,
            device=device,
        )
        if still_path is not None:
            manifest["still"] = still_path.name  # relative: the batch folder travels with its files
        if request.evaluate:
            manifest["eval"] = _measure(
                job.output, prompt=item.prompt, still=still, still_index=outcome.base_index,
                scorer=scorer, device=device,
            )  # fmt: skip
        if process.distributed:  # which process of the launch rendered it
            manifest["process"] = {"rank": process.rank, "world_size": process.world_size}
        return RenderResult(job.output, manifest)

    def measured(result: ItemResult) -> None:
        # A finished item skipped before --eval was asked for: measure it now, from its manifest.
        if not request.evaluate:
            result.eval = None  # a manifest measured earlier: reported only when this run measures
        elif result.status == "skipped" and result.eval is None and result.output is not None:
            result.eval = _measure(result.output, scorer=scorer, device=device, save=True)
        if on_result is not None:
            on_result(result)

    # 2. Render, one failure never stopping the batch.
    summary = batch.run_batch(
        mine,
        render,
        render_key_for=key_for,
        overwrite=output_settings.overwrite,
        on_start=on_start,
        on_result=measured,
    )
    if process.distributed:
        # 3. Several processes: every result to process 0, which returns the whole shard's summary.
        summary = _gathered_summary(summary, jobs, process)
    if request.evaluate:
        from layeranim.evaluation import aggregate

        entries = [result.eval for result in summary.results if result.eval is not None]
        summary.eval = aggregate([entry for entry in entries if "metrics" in entry])
    return summary


def still_image_path(output: Path) -> Path:
    """Where a measured generate batch keeps stage one's image: `0003-fox.webm` → `0003-fox.still.png`."""
    output = Path(output)
    return output.with_name(f"{output.with_suffix('').name if output.suffix else output.name}.still.png")


def _eval_scorer(models: ModelSettings, device: str) -> Any:
    """The CLIP scorer of a measured batch: the tiny random CLIP for the tiny preset, else the table's."""
    from layeranim.evaluation import load_clip_scorer, load_tiny_clip

    if models.preset == "tiny":
        return load_tiny_clip(device=device)
    return load_clip_scorer(device=device)


def _measure(
    output: Path,
    *,
    scorer: Any,
    device: str,
    prompt: str | None = None,
    still: Path | Any = None,
    still_index: int | None = None,
    save: bool = False,
) -> dict[str, Any]:
    """The manifest `eval` entry of one output (`{"error": …}` when it cannot be measured).

    With a prompt, the still and its frame given, the manifest is not read (it is not written yet);
    `save` stores the entry in the manifest already beside `output`.
    """
    from layeranim.errors import LayerAnimError
    from layeranim.evaluation import evaluate_clip, manifest_eval_entry, update_manifest

    try:
        result = evaluate_clip(
            output,
            prompt,
            still,
            still_index=still_index,
            clip_scorer=scorer,
            device=device,
            use_manifest=prompt is None,
        )
        if save:
            update_manifest(output, result)
    except LayerAnimError as exc:
        return {"error": str(exc)}
    return manifest_eval_entry(result)


def _gathered_summary(summary: BatchSummary, jobs: list[BatchJob], process: Any) -> BatchSummary:
    """Process 0: every process's results, in batch order (each item once); the others: their own."""
    import os

    import torch.distributed as dist

    from layeranim.distributed import combine, ensure_process_group, gather_records, run_key

    records = [result.to_json() for result in summary.results]
    created = not (dist.is_available() and dist.is_initialized())
    group = ensure_process_group(process)
    # Without a torch.distributed rendezvous (srun), reports go through files beside the outputs.
    folder = Path(os.path.commonpath([job.output.parent for job in jobs])) if jobs else Path.cwd()
    try:
        gathered = gather_records(
            records,
            process,
            folder=folder,
            key=run_key([job.output for job in jobs]),
            use_torch_distributed=group,
        )
    finally:
        if group and created:
            dist.destroy_process_group()
    if gathered is None:
        return summary
    ordered, _ = combine(gathered)
    return BatchSummary(results=[_item_result(record) for record in ordered])


def _item_result(record: dict[str, Any]) -> ItemResult:
    """An `ItemResult` back from its JSON record (as gathered from another process)."""
    paths = {key: Path(record[key]) if record.get(key) else None for key in ("output", "manifest")}
    return ItemResult(
        index=int(record["index"]),
        prompt=str(record["prompt"]),
        status=record["status"],
        seed=int(record["seed"]),
        error=record.get("error"),
        seconds=float(record.get("seconds", 0.0)),
        source=str(record.get("source", "")),
        eval=record.get("eval"),
        **paths,
    )


__all__ = [
    "SEED_LIMIT",
    "ClipOutcome",
    "ImageOutcome",
    "StageProgress",
    "animate",
    "batch_extension",
    "generate",
    "image",
    "open_session",
    "resolve_seed",
    "run_batch",
]
