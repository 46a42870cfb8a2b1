"""RenderSession: device/offload wiring (mocked accelerator) and the once-per-session model loading."""

from __future__ import annotations

import pytest
import torch

from layeranim.errors import UsageError
from layeranim.pipelines.layeranimate import LayerAnimatePipeline
from layeranim.pipelines.layerdiffuse import LayerDiffusePipeline
from layeranim.render.components import ModelSpec
from layeranim.render.session import RenderSession


@pytest.fixture(scope="module")
def tiny() -> ModelSpec:
    return ModelSpec.for_preset("tiny")


def test_offload_needs_an_accelerator_and_a_known_mode(tiny: ModelSpec) -> None:
    with pytest.raises(UsageError, match="offload='model'"):
        RenderSession(tiny, torch.device("cpu"), torch.float32, offload="model")
    with pytest.raises(UsageError, match="offload='disk'"):
        RenderSession(tiny, torch.device("cuda"), torch.float32, offload="disk")


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_loads_on_cpu_and_hooks_every_pipeline(
    tiny: ModelSpec, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str, object]] = []
    method = f"enable_{mode}_cpu_offload"
    for cls in (LayerDiffusePipeline, LayerAnimatePipeline):
        monkeypatch.setattr(
            cls, method, lambda self, device=None, _m=method: calls.append((type(self).__name__, _m, device))
        )
    session = RenderSession(tiny, torch.device("cuda"), torch.float32, offload=mode, will_animate=True)
    session.stage_one()
    session.stage_two()
    assert session.components.unet.device.type == "cpu"  # hooks move weights when they run
    assert [(name, device) for name, _, device in calls] == [
        ("LayerDiffusePipeline", torch.device("cuda")),
        ("LayerAnimatePipeline", torch.device("cuda")),
    ]
    if mode == "sequential":  # the motion UNet was built before stage one could strip the weights
        assert session._motion is not None


def test_models_load_once_per_session(tiny: ModelSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    import layeranim.render.session as session_module

    loads = []
    real = session_module.load_components
    monkeypatch.setattr(session_module, "load_components", lambda *a, **k: loads.append(1) or real(*a, **k))
    session = RenderSession(tiny, torch.device("cpu"), torch.float32)
    for seed in (1, 2):
        session.image("x", seed=seed, steps=1, guidance=1.0, tta=False)
    assert len(loads) == 1
    assert "load_models" in session.load_seconds


def test_stage_two_refuses_sdxl_before_loading_anything() -> None:
    spec = ModelSpec(family="sdxl", base="/nonexistent/sdxl")
    with pytest.raises(UsageError, match="family='sdxl'"):
        RenderSession(spec, torch.device("cpu"), torch.float32, will_animate=True)
