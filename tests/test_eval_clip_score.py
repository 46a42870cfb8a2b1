"""The CLIP score with the tiny random CLIP: the paper's definition, frame-order invariance, loading."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from layeranim.errors import UsageError, WeightsError
from layeranim.evaluation import evaluate as ev
from layeranim.evaluation.clip_score import ClipScorer, ensure_tiny_clip, load_clip_scorer, load_tiny_clip


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipScorer]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAYERANIM_HOME", str(tmp_path_factory.mktemp("home")))
        yield load_tiny_clip()


def _clip(frames: int = 6) -> np.ndarray:
    rng = np.random.default_rng(3)
    clip = np.zeros((frames, 40, 48, 4), np.uint8)
    clip[..., :3] = rng.integers(0, 256, (frames, 1, 1, 3), dtype=np.uint8)  # one colour per frame
    clip[:, 8:32, 8:40, 3] = 255
    return clip


def test_clip_score_is_100_times_the_cosine_of_image_and_text_embeddings(scorer: ClipScorer) -> None:
    rgb = ev.composite_rgb(_clip(), ev.DEFAULT_BACKGROUND_RGB)
    scores = scorer.frame_scores(rgb, "a lower tower")
    # Independently: CLIPModel's forward pass gives logit_scale · cos(image, text) per frame.
    text = scorer.tokenizer(["a lower tower"], padding="max_length", max_length=77, return_tensors="pt")
    pixels = scorer.image_processor(images=list(rgb), return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        out = scorer.model(
            input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixels
        )
        expected = (out.logits_per_image[:, 0] / scorer.model.logit_scale.exp() * 100.0).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
    assert scores.shape == (6,)


def test_clip_score_is_stable_under_frame_order(scorer: ClipScorer) -> None:
    clip = _clip()
    forward = ev.evaluate_frames(clip, fps=8, prompt="a red fox", clip_scorer=scorer, flow_method="dis")
    order = np.random.default_rng(0).permutation(len(clip))
    shuffled = ev.evaluate_frames(
        clip[order], fps=8, prompt="a red fox", clip_scorer=scorer, flow_method="dis"
    )
    assert forward["metrics"]["clip_score"] == pytest.approx(shuffled["metrics"]["clip_score"], abs=1e-4)
    np.testing.assert_allclose(
        np.array(forward["series"]["clip_score"])[order], shuffled["series"]["clip_score"], atol=1e-4
    )
    assert forward["clip_model"].startswith("tiny")


def test_clip_score_sees_the_background(scorer: ClipScorer) -> None:
    clip = _clip()
    clip[:, :, :, 3] = 0
    clip[:, 8:32, 8:40, 3] = 255
    gray = ev.evaluate_frames(clip, fps=8, prompt="low", clip_scorer=scorer, flow_method="dis")
    white = ev.evaluate_frames(
        clip, fps=8, prompt="low", clip_scorer=scorer, flow_method="dis", background_rgb_01=(1.0, 1.0, 1.0)
    )
    assert gray["metrics"]["clip_score"] != pytest.approx(white["metrics"]["clip_score"], abs=1e-3)


def test_no_prompt_or_no_scorer_skips_the_clip_score(scorer: ClipScorer) -> None:
    assert (
        ev.evaluate_frames(_clip(), fps=8, clip_scorer=scorer, flow_method="dis")["metrics"]["clip_score"]
        is None
    )
    assert ev.evaluate_frames(_clip(), fps=8, prompt="x", flow_method="dis")["metrics"]["clip_score"] is None
    with pytest.raises(UsageError, match="prompt is empty"):
        scorer.frame_scores(np.zeros((1, 8, 8, 3), np.uint8), "  ")


def test_tiny_clip_is_built_deterministically(tmp_path: Path, scorer: ClipScorer) -> None:
    again = load_clip_scorer(ensure_tiny_clip(tmp_path / "tiny"))
    for (name, a), (_, b) in zip(
        scorer.model.state_dict().items(), again.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_missing_clip_weights_offline_say_how_to_fetch_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsError, match="openai/clip-vit-large-patch14"):
        load_clip_scorer()
