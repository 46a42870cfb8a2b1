"""IFA training noises with AnimateDiff's schedule; the LR schedule is diffusers' and resumes exactly."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import pytest
import torch

from layeranim.errors import UsageError
from layeranim.training.config import OptimConfig, apply_overrides, preset_config, validate_config
from layeranim.training.objective import make_noise_scheduler
from layeranim.training.setup import fast_forward, load_training_models, make_lr_scheduler

LINEAR = torch.tensor([0.00085 + (0.012 - 0.00085) * i / 999 for i in range(1000)], dtype=torch.float64)
SCALED = (
    torch.tensor([0.00085**0.5 + (0.012**0.5 - 0.00085**0.5) * i / 999 for i in range(1000)]).double() ** 2
)


@pytest.fixture(autouse=True)
def _home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LAYERANIM_HOME", str(tmp_path_factory.getbasetemp() / "home"))
    yield


def test_training_noise_and_validation_sampler_use_animatediff_betas() -> None:
    models = load_training_models(
        preset_config("tiny").model, device=torch.device("cpu"), dtype=torch.float32
    )
    assert torch.allclose(models.noise_scheduler.betas.double(), LINEAR, atol=1e-8)
    assert models.noise_scheduler.config.clip_sample is False
    assert torch.allclose(models.inference_scheduler.betas.double(), LINEAR, atol=1e-8)
    # The noisy latent at t is sqrt(abar_t) x + sqrt(1 - abar_t) eps with the linear abar.
    x, eps, t = torch.ones(1, 4, 2, 2, 2), torch.zeros(1, 4, 2, 2, 2), torch.tensor([999])
    abar = torch.cumprod(1 - LINEAR, 0)[999]
    noisy = models.noise_scheduler.add_noise(x, eps, t)
    assert float(noisy.flatten()[0]) == pytest.approx(float(abar.sqrt()), rel=1e-5)


def test_training_noise_schedule_can_be_the_base_models() -> None:
    base_config = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    scheduler = make_noise_scheduler(base_config, "base")
    assert torch.allclose(scheduler.betas.double(), SCALED, atol=1e-8)
    config = apply_overrides(preset_config("tiny"), ['data.path="x"', 'model.noise_schedule="cosine"'])
    with pytest.raises(UsageError, match=r"model\.noise_schedule"):
        validate_config(config)


def reference_lr(step: int, optim: OptimConfig, max_steps: int) -> float:
    """diffusers' warmup (step / warmup from 0), then a half cosine from lr to lr * min_lr_ratio."""
    if step < optim.warmup_steps:
        return optim.learning_rate * step / optim.warmup_steps
    if optim.lr_schedule == "constant":
        return optim.learning_rate
    progress = (step - optim.warmup_steps) / (max_steps - optim.warmup_steps)
    low = optim.learning_rate * optim.min_lr_ratio
    return low + (optim.learning_rate - low) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_lr_schedule_follows_warmup_then_cosine_to_the_floor(schedule: str) -> None:
    optim = OptimConfig(learning_rate=1e-3, warmup_steps=5, min_lr_ratio=0.1, lr_schedule=schedule)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=optim.learning_rate)
    lr_schedule = make_lr_scheduler(optimizer, optim, max_steps=30)
    seen = []
    for _ in range(30):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        lr_schedule.step()
    expected = [reference_lr(step, optim, 30) for step in range(30)]
    assert seen == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert seen[-1] > optim.learning_rate * optim.min_lr_ratio * 0.99

    # A resumed run recomputes the schedule at its step: the same rates, bit for bit.
    resumed_optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=optim.learning_rate)
    resumed = make_lr_scheduler(resumed_optimizer, optim, max_steps=30)
    fast_forward(resumed, resumed_optimizer, 12)
    after = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scheduler-order warnings
        for _ in range(12, 30):
            after.append(resumed_optimizer.param_groups[0]["lr"])
            resumed_optimizer.step()
            resumed.step()
    assert after == seen[12:]
