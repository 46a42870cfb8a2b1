"""`layeranim.render`: settings validated once with Python-named errors, inputs, sidecars, and targets
refused before any model loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from layeranim import render
from layeranim.errors import OutputExistsError, UsageError
from layeranim.render.settings import render_params


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: render.ModelSettings(scheduler="bogus"), "scheduler='bogus'"),
        (lambda: render.ModelSettings(offload="disk"), "offload='disk'"),
        (lambda: render.ModelSettings(device="tpu"), "device='tpu'"),
        (lambda: render.ModelSettings(preset="tiny", family="sdxl"), "preset='tiny' is SD1.5-shaped"),
        (lambda: render.ModelSettings(ifa_weights=Path("/nonexistent/ifa.safetensors")), "ifa_weights="),
        (lambda: render.SamplingSettings(steps=0), "steps=0"),
        (lambda: render.SamplingSettings(width=32), "width=32"),
        (lambda: render.SamplingSettings(decode_chunk_size=0), "decode_chunk_size=0"),
        (lambda: render.OutputSettings(alpha_mode="multiplied"), "alpha_mode='multiplied'"),
        (lambda: render.AnimateRequest("a.png", "x", "a.webm", frames=1), "frames=1"),
        (lambda: render.GenerateRequest("x", "a.webm", fps=0), "fps=0"),
        (lambda: render.ImageRequest("x", "a.png", seed=-1), "seed=-1"),
        (lambda: render.BatchRequest("p.txt", "prompts", Path("out/"), shard="3/2"), "shard='3/2'"),
        (lambda: render.BatchRequest("p.txt", "images", Path("out/")), "kind='images'"),
    ],
)
def test_settings_are_validated_once_with_python_names(build: object, needle: str) -> None:
    with pytest.raises(UsageError) as info:
        build()  # type: ignore[operator]
    assert needle in str(info.value)
    assert "--" not in str(info.value)


def test_requests_normalise_and_record_what_shapes_the_pixels() -> None:
    models = render.ModelSettings(family="SD15", offload="None")
    assert (models.family, models.offload) == ("sd15", "none")
    generate = render.GenerateRequest("x", "a.webm", models=models)
    assert (generate.sampling.image_steps, generate.sampling.image_guidance) == (25, 7.0)
    animate = render.AnimateRequest("a.png", "x", "a.webm", sampling=generate.sampling)
    assert animate.sampling.image_steps is None  # no stage one in an animate request
    # The manifest keys of earlier releases, so re-runs of old batches still skip finished items.
    assert set(render_params(models, generate.sampling, render.OutputSettings(), frames=4, fps=8.0)) == {
        *("scheduler", "steps", "guidance", "image_steps", "image_guidance", "width", "height", "tta"),
        *("decode_chunk_size", "format", "quality", "lossless", "alpha_mode", "loop", "preview"),
        *("frames", "fps"),
    }


def test_latent_sidecar_round_trip_and_its_checks(tmp_path: Path) -> None:
    latent = torch.randn(1, 4, 8, 8)
    path = render.save_latent(tmp_path / "a.latent.safetensors", latent, {"seed": 3, "prompt": "x"})
    loaded, meta = render.load_latent(path)
    assert torch.equal(loaded, latent) and meta["seed"] == "3" and meta["prompt"] == "x"
    with pytest.raises(UsageError, match="latent_b4hw"):
        render.save_latent(tmp_path / "b.latent.safetensors", torch.randn(2, 4, 8, 8), {})


def test_animation_input_uses_only_the_sidecar_of_that_exact_image(tmp_path: Path) -> None:
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[8:40, 8:40] = (250, 120, 10, 255)
    still = tmp_path / "sprite.png"
    Image.fromarray(rgba, "RGBA").save(still)
    latent = torch.randn(1, 4, 8, 8)
    sidecar = render.latent_sidecar_path(still)
    render.save_latent(sidecar, latent, {"image_sha256": render.rgba_digest(rgba)})
    notes: list[str] = []
    source = render.load_animation_input(still, notify=notes.append)
    assert source.origin == str(sidecar) and torch.equal(source.latent_b4hw, latent)  # type: ignore[arg-type]
    render.save_latent(sidecar, latent, {"image_sha256": "another image"})
    source = render.load_animation_input(still, notify=notes.append)
    assert source.latent_b4hw is None and source.origin == str(still)
    assert "stage-one latent" in notes[0] and "another version" in notes[1]
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 64)).save(jpeg)
    with pytest.raises(UsageError, match=r"image='.*photo\.jpg' has no alpha"):
        render.load_animation_input(jpeg)


def test_existing_targets_are_refused_before_any_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from layeranim.render import api

    def no_models(*args: object, **kwargs: object) -> None:
        raise AssertionError("models were loaded")

    monkeypatch.setattr(api, "open_session", no_models)
    out = tmp_path / "clip.webm"
    (tmp_path / "clip.webm.json").write_text("{}")
    request = render.GenerateRequest("x", out, output_settings=render.OutputSettings(manifest=True))
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        render.generate(request)
    png = tmp_path / "a.png"
    png.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        render.image(render.ImageRequest("x", png))
    with pytest.raises(UsageError, match="save_image="):
        render.generate(render.GenerateRequest("x", tmp_path / "b.webm", save_image=tmp_path / "b.jpg"))
    assert png.read_bytes() == b"keep me" and not out.exists()
