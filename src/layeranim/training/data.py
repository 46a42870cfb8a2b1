"""Training data: a folder of RGBA clips with captions → fixed-size clips → adjusted latents.

A dataset is a folder (searched recursively) of clips in any format `video_io` reads: video files
(WebM VP8/VP9 alpha, ProRes 4444, FFV1, PNG-in-MOV, animated PNG/WebP, GIF, …) and PNG-sequence
sub-folders. Captions come from `metadata.jsonl` (`{"file_name": …, "text": …}` per line, paths relative
to that file's folder: the Hugging Face folder convention) or from a sidecar `<clip>.txt`.

Sampling is a pure function of (seed, epoch, clip): the epoch's order, each clip's start frame and its
crop offsets are drawn from `numpy.random.default_rng([seed, epoch, …])`, so a run resumed at global
sample position p reads exactly the clips the uninterrupted run would have read, in any process count.

Frames are encoded as in stage one (paper §III-B, Fig. 2): the gray-composited image through the SD VAE
plus the transparency encoder's latent offset (`encode_adjusted_latent`), scaled into the UNet's space.
With a latent cache each distinct clip window goes through the VAE once.

Clips that cannot be used (unreadable, no alpha channel, too short, failing to decode) are skipped and
recorded with the reason in a `SkipReport`; they never stop a run.

Axis legend: f frames, c channels (4 latent or RGBA), h/w height/width.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset, Sampler

from layeranim import alpha as alpha_ops
from layeranim import video_io
from layeranim.errors import LayerAnimError, UsageError

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".webm", ".mkv", ".mov", ".mp4", ".m4v", ".avi", ".apng", ".png", ".webp", ".gif")
IGNORED_EXTENSIONS = (".txt", ".jsonl", ".json", ".md", ".csv", ".toml", ".yaml", ".yml")
METADATA_FILE = "metadata.jsonl"
CAPTION_SUFFIX = ".txt"
CACHE_FORMAT = "layeranim-latent-cache-v1"


@dataclass(frozen=True)
class ClipSource:
    """One usable clip file (or PNG-sequence folder) and what `video_io.probe` says about it."""

    path: Path
    caption: str
    frames: int
    fps: float
    width: int
    height: int


@dataclass(frozen=True)
class ClipWindow:
    """Which part of a source one training clip is: frames `start : start + span : stride`, and the crop.

    `offset_x`/`offset_y` in [0, 1] place the crop window inside the frame (0.5 is the centre).
    """

    start: int
    offset_x: float
    offset_y: float


@dataclass
class SkipReport:
    """Clips left out of a run and why, in the order they were found (one entry per path)."""

    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, path: str | Path, reason: str) -> bool:
        """Record a skipped clip; returns False when the path was already recorded."""
        key = str(path)
        if key in self.reasons:
            return False
        self.reasons[key] = reason
        logger.info("skipping %s: %s", key, reason)
        return True

    def __len__(self) -> int:
        return len(self.reasons)

    def lines(self) -> list[str]:
        """`path: reason` lines for a report."""
        return [f"{path}: {reason}" for path, reason in self.reasons.items()]

    def to_list(self) -> list[dict[str, str]]:
        return [{"path": path, "reason": reason} for path, reason in self.reasons.items()]

    @classmethod
    def from_list(cls, entries: Sequence[dict[str, str]]) -> SkipReport:
        return cls(reasons={entry["path"]: entry["reason"] for entry in entries})


def clip_span(frames: int, frame_stride: int) -> int:
    """How many source frames a clip of `frames` frames at `frame_stride` covers."""
    return (frames - 1) * frame_stride + 1


# ---------------------------------------------------------------------------------------------------
# Finding clips and captions


def read_metadata_captions(folder: Path) -> dict[Path, str]:
    """Captions from every `metadata.jsonl` under `folder`, keyed by the clip's resolved path."""
    captions: dict[Path, str] = {}
    for metadata in sorted(folder.rglob(METADATA_FILE)):
        for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"{metadata}:{number} is not JSON ({exc.msg}); each line must be "
                    '{"file_name": "clip.webm", "text": "a caption"}.'
                ) from exc
            if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
                raise UsageError(
                    f'{metadata}:{number} has no "file_name" string; each line must be '
                    '{"file_name": "clip.webm", "text": "a caption"}.'
                )
            text = entry.get("text", entry.get("caption", ""))
            captions[(metadata.parent / entry["file_name"]).resolve()] = str(text).strip()
    return captions


def _is_png_sequence_folder(folder: Path) -> bool:
    """A sub-folder whose only image files are PNG frames (and that holds no further folders)."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    pngs = [p for p in entries if p.is_file() and p.suffix.lower() == ".png"]
    others = [p for p in entries if p.is_dir() or p.suffix.lower() not in (".png", *IGNORED_EXTENSIONS)]
    return len(pngs) > 1 and not others


def find_clip_paths(folder: Path, exclude: Sequence[Path] = ()) -> tuple[list[Path], list[Path]]:
    """(candidate clips, files of unknown type), sorted; hidden names and `exclude` are left out."""
    excluded = [p.resolve() for p in exclude]
    clips: list[Path] = []
    unknown: list[Path] = []

    def visit(directory: Path, is_root: bool) -> None:
        if not is_root and _is_png_sequence_folder(directory):
            clips.append(directory)
            return
        for entry in sorted(directory.iterdir()):
            resolved = entry.resolve()
            if entry.name.startswith(".") or any(resolved == e or e in resolved.parents for e in excluded):
                continue
            if entry.is_dir():
                visit(entry, is_root=False)
            elif entry.suffix.lower() in VIDEO_EXTENSIONS:
                clips.append(entry)
            elif entry.suffix.lower() not in IGNORED_EXTENSIONS:
                unknown.append(entry)

    visit(folder, is_root=True)
    return clips, unknown


def scan_clips(
    folder: str | Path,
    *,
    frames: int,
    frame_stride: int,
    exclude: Sequence[Path] = (),
    report: SkipReport | None = None,
) -> tuple[list[ClipSource], SkipReport]:
    """Probe every clip under `folder`; keep those with alpha and enough frames, record the rest."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(
            f"data.path={str(folder)!r} is not a folder; give the folder of RGBA training clips."
        )
    report = report if report is not None else SkipReport()
    metadata_captions = read_metadata_captions(folder)
    paths, unknown = find_clip_paths(folder, exclude)
    for path in unknown:
        report.add(path, f"not a clip format layeranim reads (use one of {', '.join(VIDEO_EXTENSIONS)})")
    needed = clip_span(frames, frame_stride)
    sources: list[ClipSource] = []
    uncaptioned = 0
    for path in paths:
        try:
            info = video_io.probe(path)
        except Exception as exc:  # whatever a broken file raises, it is skipped with the reason
            report.add(path, f"unreadable: {_one_line(exc)}")
            continue
        if not info.has_alpha:
            report.add(path, f"no alpha channel ({info.format}, {info.pix_fmt}); train on RGBA clips only")
            continue
        if info.frames < needed:
            report.add(
                path,
                f"too short: {info.frames} frames, a clip needs {needed} "
                f"(data.frames={frames}, data.frame_stride={frame_stride})",
            )
            continue
        caption = metadata_captions.get(path.resolve())
        if caption is None:
            sidecar = (
                path.with_name(path.name + CAPTION_SUFFIX)
                if path.is_dir()
                else path.with_suffix(CAPTION_SUFFIX)
            )
            caption = sidecar.read_text(encoding="utf-8").strip() if sidecar.is_file() else None
        if caption is None:
            uncaptioned += 1
            caption = ""
        sources.append(ClipSource(path, caption, info.frames, info.fps, info.width, info.height))
    if uncaptioned:
        logger.warning(
            "%d clips have no caption (no metadata.jsonl entry or .txt sidecar): trained with ''.",
            uncaptioned,
        )
    return sources, report


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# ---------------------------------------------------------------------------------------------------
# Cutting one clip: frames, crop, resize


def crop_box(
    width: int, height: int, target_width: int, target_height: int, window: ClipWindow
) -> tuple[int, int, int, int]:
    """(x0, y0, crop_width, crop_height): the largest window of the target aspect, placed by the offsets."""
    scale = max(target_width / width, target_height / height)  # resize so the frame covers the target
    crop_width = min(width, max(1, round(target_width / scale)))
    crop_height = min(height, max(1, round(target_height / scale)))
    x0 = round(window.offset_x * (width - crop_width))
    y0 = round(window.offset_y * (height - crop_height))
    return x0, y0, crop_width, crop_height


def cut_clip(rgba_fhwc_uint8: np.ndarray, width: int, height: int, window: ClipWindow) -> np.ndarray:
    """Crop to the target aspect (placed by the window) and resize alpha-correctly to width×height."""
    x0, y0, crop_width, crop_height = crop_box(
        rgba_fhwc_uint8.shape[2], rgba_fhwc_uint8.shape[1], width, height, window
    )
    cropped = rgba_fhwc_uint8[:, y0 : y0 + crop_height, x0 : x0 + crop_width]
    return alpha_ops.resize_rgba_frames(np.ascontiguousarray(cropped), width, height)


@torch.no_grad()
def encode_clip(
    vae: torch.nn.Module,
    transparent_encoder: torch.nn.Module,
    rgba_fhwc_uint8: torch.Tensor,
    *,
    chunk_size: int = 8,
) -> torch.Tensor:
    """RGBA frames (f, h, w, 4) uint8 → adjusted latents (4, f, h/8, w/8) in the UNet's space, float32.

    Each frame as stage one encodes an image: the SD VAE posterior of the gray composite plus the
    transparency encoder's offset (paper §III-A eq. 1, §III-B), times the VAE's scaling factor.
    """
    from layeranim.models.transparent_vae import encode_adjusted_latent

    rgba_f4hw_01 = rearrange(rgba_fhwc_uint8, "f h w c -> f c h w").float() / 255.0
    chunks = [
        encode_adjusted_latent(vae, transparent_encoder, rgba_f4hw_01[i : i + chunk_size]).float()
        for i in range(0, rgba_f4hw_01.shape[0], chunk_size)
    ]
    latents_fchw = torch.cat(chunks) * vae.config.scaling_factor
    return rearrange(latents_fchw, "f c h w -> c f h w").cpu().contiguous()


# ---------------------------------------------------------------------------------------------------
# The latent cache


class LatentCache:
    """Adjusted latents of clip windows on disk, one safetensors file per window (written atomically).

    The key covers the file (path, size, modification time), the window, the training size and the
    `fingerprint` of the VAE and transparency encoder, so a changed clip or model never reads stale latents.
    """

    def __init__(self, folder: str | Path, fingerprint: str) -> None:
        self.folder = Path(folder)
        self.fingerprint = fingerprint

    def key(
        self,
        source: ClipSource,
        window: ClipWindow,
        *,
        frames: int,
        frame_stride: int,
        width: int,
        height: int,
    ) -> str:
        stat = source.path.stat()
        identity = {
            "format": CACHE_FORMAT,
            "path": str(source.path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "window": [window.start, window.offset_x, window.offset_y],
            "frames": frames,
            "frame_stride": frame_stride,
            "size_px": [width, height],
            "models": self.fingerprint,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def load(self, key: str) -> torch.Tensor | None:
        """The cached latents (4, f, h, w), or None when absent or unreadable (then they are re-encoded)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))["latents_cfhw"]
        except (SafetensorError, KeyError, OSError) as exc:
            logger.warning("ignoring unreadable cache entry %s (%s); re-encoding", path, exc)
            return None

    def save(self, key: str, latents_cfhw: torch.Tensor) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            save_file({"latents_cfhw": latents_cfhw.detach().float().cpu().contiguous()}, str(temporary))
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------
# The dataset: global sample position → one clip


class ClipDataset(Dataset):
    """Maps a global sample position to a training clip: epoch = p // N, clip = order(epoch)[p % N].

    Items are dicts: `position`, `path`, `caption`, and either `latents_cfhw` (from the cache) or
    `rgba_fhwc_uint8` (a uint8 tensor to encode), `cache_key` (or None), and `skipped` — (path, reason)
    pairs of clips that failed to decode on the way (the next clip of the epoch is taken instead).
    """

    def __init__(
        self,
        sources: Sequence[ClipSource],
        *,
        frames: int,
        frame_stride: int,
        width: int,
        height: int,
        crop: str = "center",
        shuffle: bool = True,
        seed: int = 0,
        cache: LatentCache | None = None,
    ) -> None:
        if not sources:
            raise UsageError("the dataset has no usable clips; see the skipped clips listed above.")
        self.sources = list(sources)
        self.frames, self.frame_stride = frames, frame_stride
        self.width, self.height = width, height
        self.crop, self.shuffle, self.seed = crop, shuffle, seed
        self.cache = cache
        self._order_epoch: int | None = None
        self._order: np.ndarray | None = None
        self._failed: dict[int, str] = {}  # source index → reason, within this process

    def __len__(self) -> int:
        return len(self.sources)

    def order(self, epoch: int) -> np.ndarray:
        """The clip order of one epoch (a seeded permutation, or 0..N-1 without shuffling)."""
        if self._order_epoch != epoch or self._order is None:
            count = len(self.sources)
            self._order = (
                np.random.default_rng([self.seed, epoch]).permutation(count)
                if self.shuffle
                else np.arange(count)
            )
            self._order_epoch = epoch
        return self._order

    def window(self, index: int, epoch: int) -> ClipWindow:
        """Where clip `index` is cut in `epoch`: a random start (on a grid with the cache) and crop."""
        source = self.sources[index]
        rng = np.random.default_rng([self.seed, epoch, index, 1])
        span = clip_span(self.frames, self.frame_stride)
        if self.cache is not None:  # a finite set of non-overlapping windows, so cached latents get reused
            start = int(rng.integers((source.frames - span) // span + 1)) * span
        else:
            start = int(rng.integers(source.frames - span + 1))
        if self.crop == "random":
            offset_x, offset_y = float(rng.random()), float(rng.random())
        else:
            offset_x = offset_y = 0.5
        return ClipWindow(start=start, offset_x=offset_x, offset_y=offset_y)

    def load(self, index: int, window: ClipWindow) -> np.ndarray:
        """The window's frames, cropped and resized: (f, height, width, 4) uint8, straight alpha."""
        source = self.sources[index]
        clip = video_io.read_video(
            source.path,
            start=window.start,
            stop=window.start + clip_span(self.frames, self.frame_stride),
            step=self.frame_stride,
        )
        rgba_fhwc_uint8 = clip.rgba_fhwc_uint8
        if rgba_fhwc_uint8.shape[0] != self.frames:
            raise LayerAnimError(
                f"decoded {rgba_fhwc_uint8.shape[0]} frames from frame {window.start}, expected "
                f"{self.frames} (the file holds fewer frames than its header says)"
            )
        return cut_clip(rgba_fhwc_uint8, self.width, self.height, window)

    def __getitem__(self, position: int) -> dict[str, Any]:
        epoch, slot = divmod(int(position), len(self.sources))
        order = self.order(epoch)
        skipped: list[tuple[str, str]] = []
        for attempt in range(len(self.sources)):
            index = int(order[(slot + attempt) % len(self.sources)])
            if index in self._failed:
                continue
            source = self.sources[index]
            window = self.window(index, epoch)
            item: dict[str, Any] = {
                "position": int(position),
                "path": str(source.path),
                "caption": source.caption,
                "latents_cfhw": None,
                "rgba_fhwc_uint8": None,
                "cache_key": None,
                "skipped": skipped,
            }
            try:
                if self.cache is not None:
                    item["cache_key"] = self.cache.key(
                        source,
                        window,
                        frames=self.frames,
                        frame_stride=self.frame_stride,
                        width=self.width,
                        height=self.height,
                    )
                    item["latents_cfhw"] = self.cache.load(item["cache_key"])
                if item["latents_cfhw"] is None:
                    item["rgba_fhwc_uint8"] = torch.from_numpy(self.load(index, window))
            except Exception as exc:  # any decoder failure skips the clip; the run goes on
                reason = f"failed to decode: {_one_line(exc)}"
                self._failed[index] = reason
                skipped.append((str(source.path), reason))
                continue
            return item
        raise LayerAnimError(
            "no clip of the dataset could be decoded; see the skipped clips listed above and check the files."
        )


def collate_clips(items: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """A list of dataset items → a dict of lists (latents or frames stay per clip: the loop encodes them)."""
    return {key: [item[key] for item in items] for key in items[0]}


class ClipPositionSampler(Sampler[int]):
    """This process's share of the endless global sample positions, from `start` on.

    Micro-batch k covers global positions `start + k·B·W … start + (k+1)·B·W − 1`; process r takes the
    r-th run of B of them. The data position of a run is therefore one integer for any process count.
    """

    def __init__(self, start: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.start, self.batch_size, self.rank, self.world_size = start, batch_size, rank, world_size

    def __iter__(self) -> Iterator[int]:
        base = self.start
        while True:
            first = base + self.rank * self.batch_size
            yield from range(first, first + self.batch_size)
            base += self.batch_size * self.world_size

    def __len__(self) -> int:  # endless; DataLoader only needs a number for its length hint
        return 2**62


def clip_loader(
    dataset: ClipDataset,
    *,
    start: int,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
) -> DataLoader:
    """An endless DataLoader of micro-batches for one process, beginning at global position `start`."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ClipPositionSampler(start, batch_size, rank, world_size),
        collate_fn=collate_clips,
        num_workers=num_workers,
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
    )
