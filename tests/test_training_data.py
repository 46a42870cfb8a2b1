"""Training data and config: synthetic clips, scanning and skipping, sampling, caching, TOML configs."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import tomllib
import torch

from layeranim import video_io
from layeranim.errors import OutputExistsError, UsageError
from layeranim.training.config import (
    Config,
    apply_overrides,
    config_to_toml,
    load_config_file,
    preset_config,
    validate_config,
)
from layeranim.training.data import (
    ClipDataset,
    ClipPositionSampler,
    ClipWindow,
    LatentCache,
    SkipReport,
    crop_box,
    cut_clip,
    scan_clips,
)
from layeranim.training.synth import make_synthetic_dataset, random_motion, render_sprite_clip

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write_opaque_clip(path: Path, frames: int = 8) -> None:
    """An FFV1 clip stored as bgr0: readable, but without an alpha channel."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "bgr0"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 30 * index, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("d") / "clips"
    make_synthetic_dataset(folder, clips=3, frames=8, format="mkv", seed=1)
    return folder


def make_dataset(folder: Path, **kwargs: object) -> ClipDataset:
    sources, _ = scan_clips(folder, frames=4, frame_stride=1)
    options: dict[str, object] = {"frames": 4, "frame_stride": 1, "width": 64, "height": 64, "seed": 0}
    options.update(kwargs)
    return ClipDataset(sources, **options)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------
# Synthetic clips


def test_synthetic_dataset_is_real_alpha_video_with_captions(tmp_path: Path) -> None:
    made = make_synthetic_dataset(tmp_path / "webm", clips=2, frames=6, width=64, height=48, seed=7)
    assert [p.name for p in made.clips] == ["clip_000.webm", "clip_001.webm"]
    for path, caption in zip(made.clips, made.captions, strict=True):
        info = video_io.probe(path)
        assert info.has_alpha and (info.frames, info.width, info.height) == (6, 64, 48)
        assert path.with_suffix(".txt").read_text().strip() == caption
        alpha = video_io.read_video(path).rgba_fhwc_uint8[..., 3]
        assert alpha.min() < 10 and alpha.max() > 245  # transparent around an opaque sprite
        assert ((alpha > 20) & (alpha < 235)).any()  # with a soft edge
    # Same seed, same clips; the jsonl caption style writes one metadata.jsonl instead of sidecars.
    again = make_synthetic_dataset(
        tmp_path / "jsonl", clips=2, frames=6, width=64, height=48, seed=7, captions="jsonl", format="apng"
    )
    assert again.captions == made.captions
    lines = [json.loads(line) for line in (tmp_path / "jsonl" / "metadata.jsonl").read_text().splitlines()]
    assert lines == [
        {"file_name": p.name, "text": c} for p, c in zip(again.clips, again.captions, strict=True)
    ]
    assert not list((tmp_path / "jsonl").glob("*.txt"))
    with pytest.raises(OutputExistsError):
        make_synthetic_dataset(tmp_path / "webm", clips=1)
    with pytest.raises(UsageError, match="1-bit"):
        make_synthetic_dataset(tmp_path / "gif", clips=1, format="gif")


def test_sprites_move() -> None:
    motion = random_motion(np.random.default_rng(0), 64, 64)
    rgba = render_sprite_clip(motion, frames=5, width=64, height=64)
    alpha = rgba[..., 3].astype(np.float64)
    ys, xs = np.mgrid[0:64, 0:64]
    centres = [
        ((alpha[f] * xs).sum() / alpha[f].sum(), (alpha[f] * ys).sum() / alpha[f].sum()) for f in range(5)
    ]
    assert np.hypot(centres[-1][0] - centres[0][0], centres[-1][1] - centres[0][1]) > 10


# ---------------------------------------------------------------------------------------------------
# Scanning and skipping


def test_scan_skips_and_counts_bad_clips_and_reads_captions(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    make_synthetic_dataset(folder, clips=2, frames=8, format="mkv", seed=2, captions="jsonl")
    (folder / "corrupt.webm").write_bytes(b"not a video at all")
    (folder / "empty.mov").write_bytes(b"")
    write_opaque_clip(folder / "opaque.mkv")
    make_synthetic_dataset(folder / "short", clips=1, frames=3, format="mkv")
    (folder / "notes.pdf").write_bytes(b"%PDF")
    sequence = folder / "walk"  # a PNG-sequence sub-folder is one clip; its caption sits beside it
    sequence.mkdir()
    frames = video_io.read_video(folder / "clip_000.mkv").rgba_fhwc_uint8
    for index, frame in enumerate(frames):
        video_io.write_image(sequence / f"frame_{index:05d}.png", frame)
    (folder / "walk.txt").write_text("a walking sprite\n")

    sources, report = scan_clips(folder, frames=4, frame_stride=2)
    assert sorted(s.path.name for s in sources) == ["clip_000.mkv", "clip_001.mkv", "walk"]
    captions = {s.path.name: s.caption for s in sources}
    assert captions["walk"] == "a walking sprite"
    assert captions["clip_000.mkv"].startswith("a")
    reasons = {Path(p).relative_to(folder).as_posix(): r for p, r in report.reasons.items()}
    assert set(reasons) == {"corrupt.webm", "empty.mov", "opaque.mkv", "short/clip_000.mkv", "notes.pdf"}
    assert reasons["corrupt.webm"].startswith("unreadable")
    assert reasons["empty.mov"].startswith("unreadable")
    assert reasons["opaque.mkv"].startswith("no alpha channel")
    assert reasons["short/clip_000.mkv"].startswith("too short: 3 frames, a clip needs 7")
    assert "not a clip format" in reasons["notes.pdf"]
    assert len(report) == 5 and len(report.lines()) == 5
    assert SkipReport.from_list(report.to_list()).reasons == report.reasons

    with pytest.raises(UsageError, match=r"data\.path="):
        scan_clips(tmp_path / "missing", frames=4, frame_stride=1)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metadata.jsonl").write_text('{"file_name": "a.webm"}\nnot json\n')
    with pytest.raises(UsageError, match=r"metadata\.jsonl:2"):
        scan_clips(tmp_path / "bad", frames=4, frame_stride=1)


def test_a_clip_that_fails_to_decode_is_skipped_for_the_next(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    made = make_synthetic_dataset(folder, clips=2, frames=4, format="mkv", seed=4)
    dataset = make_dataset(folder, shuffle=False)
    made.clips[0].write_bytes(b"corrupted after the scan")
    item = dataset[0]
    assert item["path"] == str(made.clips[1])
    assert item["skipped"] == [(str(made.clips[0]), item["skipped"][0][1])]
    assert item["skipped"][0][1].startswith("failed to decode")
    assert dataset[2]["path"] == str(made.clips[1])  # the next epoch does not retry the broken clip


# ---------------------------------------------------------------------------------------------------
# Sampling


def test_sampling_is_a_pure_function_of_seed_epoch_and_position(clips: Path) -> None:
    dataset = make_dataset(clips, crop="random")
    again = make_dataset(clips, crop="random")
    first = [dataset[p]["path"] for p in range(6)]
    assert first == [again[p]["path"] for p in reversed(range(6))][::-1]  # any access order
    assert sorted(first[:3]) == sorted(first[3:]) == sorted(str(s.path) for s in dataset.sources)
    assert torch.equal(dataset[4]["rgba_fhwc_uint8"], again[4]["rgba_fhwc_uint8"])
    assert [dataset.window(0, e) for e in range(3)] == [again.window(0, e) for e in range(3)]
    assert len({dataset.window(0, e) for e in range(8)}) > 1  # starts and crops vary by epoch
    other_seed = make_dataset(clips, crop="random", seed=1)
    assert [other_seed.window(0, e) for e in range(4)] != [dataset.window(0, e) for e in range(4)]
    item = dataset[0]
    assert item["rgba_fhwc_uint8"].shape == (4, 64, 64, 4) and item["rgba_fhwc_uint8"].dtype == torch.uint8
    assert item["caption"] and item["latents_cfhw"] is None


def test_sampler_shards_global_positions_across_processes() -> None:
    def take(sampler: ClipPositionSampler, count: int) -> list[int]:
        iterator = iter(sampler)
        return [next(iterator) for _ in range(count)]

    ranks = [take(ClipPositionSampler(start=10, batch_size=2, rank=r, world_size=3), 4) for r in range(3)]
    assert ranks == [[10, 11, 16, 17], [12, 13, 18, 19], [14, 15, 20, 21]]
    assert take(ClipPositionSampler(start=10, batch_size=2), 3) == [10, 11, 12]


def test_crop_and_resize_to_the_training_size() -> None:
    center = ClipWindow(start=0, offset_x=0.5, offset_y=0.5)
    assert crop_box(128, 64, 64, 64, center) == (32, 0, 64, 64)
    assert crop_box(128, 64, 64, 64, ClipWindow(0, 0.0, 0.5)) == (0, 0, 64, 64)
    assert crop_box(100, 300, 64, 128, center) == (0, 50, 100, 200)
    rgba = np.zeros((2, 64, 128, 4), np.uint8)
    rgba[:, :, 32:96] = (10, 200, 30, 255)  # an opaque square in the middle, transparent sides
    out = cut_clip(rgba, 128, 128, center)
    assert out.shape == (2, 128, 128, 4)
    assert (out[..., 3] == 255).all() and (out[..., :3] == (10, 200, 30)).all()


def test_latent_cache_round_trip_and_key(clips: Path, tmp_path: Path) -> None:
    cache = LatentCache(tmp_path / "cache", fingerprint="models-a")
    dataset = make_dataset(clips, cache=cache)
    item = dataset[0]
    assert item["cache_key"] and item["rgba_fhwc_uint8"] is not None
    latents = torch.randn(4, 4, 8, 8)
    cache.save(item["cache_key"], latents)
    cached = dataset[0]
    assert cached["rgba_fhwc_uint8"] is None and torch.equal(cached["latents_cfhw"], latents)
    source, window = dataset.sources[0], dataset.window(0, 0)
    key = cache.key(source, window, frames=4, frame_stride=1, width=64, height=64)
    assert key != LatentCache(cache.folder, "models-b").key(
        source, window, frames=4, frame_stride=1, width=64, height=64
    )
    assert key != cache.key(source, window, frames=4, frame_stride=1, width=128, height=64)
    cache.path(item["cache_key"]).write_bytes(b"broken")
    assert dataset[0]["rgba_fhwc_uint8"] is not None  # an unreadable entry is re-encoded, not fatal
    # With the cache, starts sit on a grid of whole windows so they repeat.
    assert {dataset.window(0, e).start for e in range(20)} <= {0, 4}


# ---------------------------------------------------------------------------------------------------
# Config


def test_config_toml_round_trip_overrides_and_errors(tmp_path: Path) -> None:
    config = apply_overrides(
        preset_config("tiny"),
        [
            "data.path=/videos/my clips",
            "optim.learning_rate=5e-4",
            'validation.prompt="a \\"quoted\\" cat"',
            "optim.max_grad_norm=2",
        ],
    )
    assert config.data.path == "/videos/my clips" and config.optim.learning_rate == 5e-4
    assert config.optim.max_grad_norm == 2.0 and isinstance(config.optim.max_grad_norm, float)
    text = config_to_toml(config)
    tomllib.loads(text)
    path = tmp_path / "run.toml"
    path.write_text(text)
    assert load_config_file(path) == config
    # A file's model.preset picks the base its missing keys come from.
    (tmp_path / "short.toml").write_text('[model]\npreset = "tiny"\n[data]\npath = "x"\n')
    assert load_config_file(tmp_path / "short.toml").data.width == 64
    assert load_config_file(tmp_path / "short.toml", Config()).data.width == 512

    for bad, message in [
        ("train.max_step=3", "no key 'max_step'"),
        ("model.nope=1", "no key"),
        ("trian.max_steps=3", "unknown table"),
        ("train.max_steps=three", "must be an integer"),
        ("data.cache_latents=1", "must be true or false"),
        ("max_steps=3", "table.key"),
    ]:
        with pytest.raises(UsageError, match=message):
            apply_overrides(config, [bad])
    (tmp_path / "broken.toml").write_text("[data\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_config_file(tmp_path / "broken.toml")

    validate_config(config)
    for override, message in [
        ("data.width=100", "multiple of 64; try 128"),
        ("data.frames=1", "at least 2"),
        ('data.crop="diagonal"', "center, random"),
        ("data.caption_dropout=1.5", "probability"),
        ('train.mixed_precision="fp8"', "auto, no, fp16, bf16"),
        ("optim.learning_rate=0.0", "positive"),
        ('data.path=""', r"data\.path=DIR"),
    ]:
        with pytest.raises(UsageError, match=message):
            validate_config(apply_overrides(config, [override]))
    with pytest.raises(UsageError, match=r"center with data\.cache_latents = true"):
        validate_config(apply_overrides(config, ["data.cache_latents=true", 'data.crop="random"']))


def test_example_config_is_the_tiny_preset_with_a_data_folder() -> None:
    config = load_config_file(EXAMPLES / "train_tiny.toml")
    assert config.model.preset == "tiny" and config.data.width == 64
    validate_config(config)
