"""Inter-Frame Attention (Layer-Animate eq. 3) on a tiny diffusers UNetMotionModel.

The reference is a separately written, deliberately naive eq. (3): explicit Python loops over videos,
frames and heads, in float64, from the weight matrices alone.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from diffusers import UNetMotionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from layeranim.errors import OutputExistsError, StateDictMismatchError, UsageError, WeightsError
from layeranim.models.inter_frame_attention import (
    IFA_FORMAT,
    FrameContext,
    InterFrameAttnProcessor,
    ifa_parameters,
    ifa_state_dict,
    install_inter_frame_attention,
    inter_frame_attention_context,
    inter_frame_attention_disabled,
    inter_frame_attention_processors,
    load_ifa_weights,
    middle_frame_index,
    save_ifa_weights,
    set_inter_frame_attention_enabled,
    uninstall_inter_frame_attention,
)
from layeranim.models.layerdiffuse_unet import LayerDiffuseAttnProcessor

FRAMES = 4  # m = 1: checks the (F - 1) // 2 rounding
LATENT_SIZE = 8
CROSS_DIM = 32
METADATA = {"base_model": "tiny-sd15", "motion_adapter": "tiny-adapter", "frames": str(FRAMES)}


def build_unet(layers_per_block: int = 2) -> UNetMotionModel:
    """The SD1.5-shaped tiny motion UNet of environment.md (6 spatial attn1 with 2 layers per block)."""
    torch.manual_seed(0)
    unet = UNetMotionModel(
        block_out_channels=(32, 64),
        layers_per_block=layers_per_block,
        cross_attention_dim=CROSS_DIM,
        norm_num_groups=32,
        num_attention_heads=(4, 8),  # head dim 8
        motion_num_attention_heads=4,
        motion_max_seq_length=32,
        down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
        up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"),
        sample_size=LATENT_SIZE,
    )
    return unet.eval()


@pytest.fixture(scope="module")
def pristine_unet() -> UNetMotionModel:
    return build_unet()


@pytest.fixture
def unet(pristine_unet: UNetMotionModel) -> UNetMotionModel:
    return copy.deepcopy(pristine_unet)


def unet_inputs(videos: int, frames: int = FRAMES, seed: int = 1) -> tuple[torch.Tensor, int, torch.Tensor]:
    """(sample_bcfhw, timestep, encoder_hidden_states repeated per frame) for a direct UNet call."""
    generator = torch.Generator().manual_seed(seed)
    sample_bcfhw = torch.randn(videos, 4, frames, LATENT_SIZE, LATENT_SIZE, generator=generator)
    text_bnc = torch.randn(videos, 7, CROSS_DIM, generator=generator)
    return sample_bcfhw, 10, text_bnc.repeat_interleave(frames, dim=0)


def run_unet(unet: UNetMotionModel, inputs: tuple[torch.Tensor, int, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return unet(*inputs).sample


def spatial_attn1_names(unet: nn.Module) -> list[str]:
    """Module paths of the spatial self-attentions, found from the module tree (not from processor names)."""
    return [
        name
        for name, module in unet.named_modules()
        if isinstance(module, Attention)
        and name.endswith(".attn1")
        and ".attentions." in name
        and "motion_modules" not in name
    ]


def randomize_ifa(processors: dict[str, InterFrameAttnProcessor], seed: int = 2) -> None:
    """Non-zero W_O' (and a W_Q' different from W_Q) so that eq. (3) is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for processor in processors.values():
            for param in ifa_parameters({"p": processor}):
                param.copy_(0.2 * torch.randn(param.shape, generator=generator))


def naive_attention(
    x_nc: torch.Tensor,
    source_nc: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    heads: int,
) -> torch.Tensor:
    """softmax((x W_Q)(s W_K)^T / √d)(s W_V), one head at a time, heads concatenated."""
    head_dim = w_q.shape[0] // heads
    outputs = []
    for head in range(heads):
        rows = slice(head * head_dim, (head + 1) * head_dim)
        query, key, value = x_nc @ w_q[rows].T, source_nc @ w_k[rows].T, source_nc @ w_v[rows].T
        outputs.append(torch.softmax(query @ key.T / math.sqrt(head_dim), dim=-1) @ value)
    return torch.cat(outputs, dim=-1)


def naive_eq3(
    attn: Attention,
    processor: InterFrameAttnProcessor,
    x_rnc: torch.Tensor,
    videos: int,
    frames: int,
    middle: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(SelfAttn(X^i) + eq. 3 branch, the branch alone) for rows b*F + f: explicit loops, float64.

    `middle` is the attended base frame, (F - 1) // 2 unless given."""
    weights = {
        "q": attn.to_q.weight,
        "k": attn.to_k.weight,
        "v": attn.to_v.weight,
        "o": attn.to_out[0].weight,
        "o_bias": attn.to_out[0].bias,
        "q_ifa": processor.to_q_ifa.weight,
        "o_ifa": processor.to_out_ifa.weight,
        "o_ifa_bias": processor.to_out_ifa.bias,
    }
    w = {name: tensor.detach().double() for name, tensor in weights.items()}
    x_rnc = x_rnc.detach().double()
    middle = (frames - 1) // 2 if middle is None else middle
    total = torch.empty_like(x_rnc)
    branch = torch.empty_like(x_rnc)
    for video in range(videos):
        x_middle_nc = x_rnc[video * frames + middle]
        for frame in range(frames):
            row = video * frames + frame
            x_nc = x_rnc[row]
            self_attention = (
                naive_attention(x_nc, x_nc, w["q"], w["k"], w["v"], attn.heads) @ w["o"].T + w["o_bias"]
            )
            inter_frame = naive_attention(x_nc, x_middle_nc, w["q_ifa"], w["k"], w["v"], attn.heads)
            branch[row] = inter_frame @ w["o_ifa"].T + w["o_ifa_bias"]
            total[row] = self_attention + branch[row]
    return total, branch


class LearnedTermProcessor(nn.Module):
    """A stand-in custom base processor with its own weights: standard attention + a learned linear term."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.extra = nn.Linear(dim, dim)

    def __call__(  # type: ignore[override]
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        output = AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        return output + self.extra(hidden_states)


class RecordingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged_warnings() -> Iterator[list[logging.LogRecord]]:
    """Warnings logged by diffusers (whose library logger does not propagate to the root) or layeranim."""
    handler = RecordingHandler()
    loggers = [logging.getLogger("diffusers"), logging.getLogger("layeranim")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)  # the CLI quiets diffusers; tests in the same process must not care
    yield handler.records
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


# ------------------------------------------------------------------------------------------------
# Frame bookkeeping


def test_middle_frame_is_the_eighth_of_sixteen() -> None:
    assert middle_frame_index(16) == 7
    assert [middle_frame_index(frames) for frames in (1, 2, 3, 4, 5)] == [0, 0, 1, 1, 2]
    with pytest.raises(UsageError, match="frames=0"):
        middle_frame_index(0)


def test_pre_hook_learns_frames_without_cross_attention_kwargs_or_warnings(
    unet: UNetMotionModel, logged_warnings: list[logging.LogRecord]
) -> None:
    install_inter_frame_attention(unet)
    context = inter_frame_attention_context(unet)
    assert context is not None

    sample_bcfhw, timestep, text = unet_inputs(videos=2, frames=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            unet(sample_bcfhw, timestep, text)  # positional sample
            assert (context.batch, context.frames, context.middle) == (2, 5, 2)
            sample_bcfhw, timestep, text = unet_inputs(videos=1, frames=3)
            unet(sample=sample_bcfhw, timestep=timestep, encoder_hidden_states=text)  # keyword sample
    assert (context.batch, context.frames, context.middle) == (1, 3, 1)
    assert logged_warnings == []

    # The capture is live: the cross_attention_kwargs route does log diffusers' warning.
    with torch.no_grad():
        unet(sample_bcfhw, timestep, text, cross_attention_kwargs={"num_frames": 3})
    assert any("num_frames" in record.getMessage() for record in logged_warnings)


def test_processor_without_a_frame_count_or_with_mismatched_rows_says_so(unet: UNetMotionModel) -> None:
    processors = install_inter_frame_attention(unet)
    name = next(iter(processors))
    attn = unet.get_submodule(name.removesuffix(".processor"))
    x_rnc = torch.randn(2 * FRAMES, 16, attn.to_q.in_features)
    with pytest.raises(UsageError, match="frame count is unknown"):
        attn(x_rnc)
    inter_frame_attention_context(unet).update(batch=1, frames=FRAMES)
    with pytest.raises(UsageError, match=f"got {2 * FRAMES} rows"):
        attn(x_rnc)


# ------------------------------------------------------------------------------------------------
# Where IFA goes and what it adds


def test_install_wraps_every_spatial_self_attention_and_only_those(unet: UNetMotionModel) -> None:
    before = dict(unet.attn_processors)
    processors = install_inter_frame_attention(unet)
    after = unet.attn_processors

    expected = [f"{name}.processor" for name in spatial_attn1_names(unet)]
    assert len(expected) == 6
    assert list(processors) == expected
    for name, processor in after.items():
        if name in processors:
            assert processor is processors[name]
            assert processor.base is before[name]
        else:  # attn2 and every motion-module attention keep their very processor object
            assert processor is before[name]
            assert not isinstance(processor, InterFrameAttnProcessor)
    motion = [name for name in after if ".motion_modules." in name]
    assert motion and all(not isinstance(after[name], InterFrameAttnProcessor) for name in motion)


def test_only_wq_prime_and_wo_prime_are_new_and_wk_wv_are_the_hosts(unet: UNetMotionModel) -> None:
    params_before = {id(param) for param in unet.parameters()}
    processors = install_inter_frame_attention(unet)

    new_params = [param for param in unet.parameters() if id(param) not in params_before]
    assert len(new_params) == 3 * len(processors)  # W_Q' (no bias) and W_O' (weight, bias) per attn1
    assert {id(param) for param in new_params} == {id(param) for param in ifa_parameters(processors)}
    for name, processor in processors.items():
        attn = unet.get_submodule(name.removesuffix(".processor"))
        linears = [module for module in processor.modules() if isinstance(module, nn.Linear)]
        assert linears == [processor.to_q_ifa, processor.to_out_ifa]
        assert dict(processor.named_parameters()).keys() == {
            "to_q_ifa.weight",
            "to_out_ifa.weight",
            "to_out_ifa.bias",
        }
        assert processor.to_q_ifa.weight.shape == attn.to_q.weight.shape and processor.to_q_ifa.bias is None
        assert processor.to_out_ifa.weight.shape == attn.to_out[0].weight.shape
        # W_Q' starts as a copy of W_Q (not the same storage); W_O' starts at zero.
        assert torch.equal(processor.to_q_ifa.weight, attn.to_q.weight)
        assert processor.to_q_ifa.weight.data_ptr() != attn.to_q.weight.data_ptr()
        assert not processor.to_out_ifa.weight.any() and not processor.to_out_ifa.bias.any()

    # W_K and W_V are the host's own tensors: the IFA branch alone sends gradient into them, not into W_Q.
    randomize_ifa(processors)
    context = inter_frame_attention_context(unet)
    context.update(batch=1, frames=FRAMES)
    name, processor = next(iter(processors.items()))
    attn = unet.get_submodule(name.removesuffix(".processor"))
    x_rnc = torch.randn(FRAMES, 16, attn.to_q.in_features)
    processor.inter_frame_attention(attn, x_rnc).square().sum().backward()
    assert attn.to_k.weight.grad is not None and attn.to_k.weight.grad.abs().sum() > 0
    assert attn.to_v.weight.grad is not None and attn.to_v.weight.grad.abs().sum() > 0
    assert attn.to_q.weight.grad is None

    # ... and an in-place change of the host's W_K/W_V is what the branch then uses.
    with torch.no_grad():
        attn.to_k.weight.mul_(-1.5)
        attn.to_v.weight.add_(0.1)
        _, expected_branch = naive_eq3(attn, processor, x_rnc, videos=1, frames=FRAMES)
        branch = processor.inter_frame_attention(attn, x_rnc)
    torch.testing.assert_close(branch.double(), expected_branch, rtol=0, atol=1e-5)


@pytest.mark.parametrize("videos", [1, 2], ids=["single", "guidance"])
def test_processor_equals_naive_eq3(unet: UNetMotionModel, videos: int) -> None:
    processors = install_inter_frame_attention(unet)
    randomize_ifa(processors)
    frames = 5
    inter_frame_attention_context(unet).update(batch=videos, frames=frames)
    generator = torch.Generator().manual_seed(3)
    for name, processor in processors.items():
        attn = unet.get_submodule(name.removesuffix(".processor"))
        x_rnc = torch.randn(videos * frames, 12, attn.to_q.in_features, generator=generator)
        expected, _ = naive_eq3(attn, processor, x_rnc, videos, frames)
        with torch.no_grad():
            through_module = attn(x_rnc)
            direct = processor(attn, x_rnc)
        torch.testing.assert_close(through_module.double(), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(direct.double(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("videos", [1, 2], ids=["single", "guidance"])
def test_unet_forward_equals_naive_eq3_in_every_spatial_self_attention(
    unet: UNetMotionModel, videos: int
) -> None:
    processors = install_inter_frame_attention(unet)
    randomize_ifa(processors)
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def capture(name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            assert kwargs.get("encoder_hidden_states") is None  # self-attention
            captured[name] = (args[0].detach(), output.detach())

        return hook

    handles = [
        unet.get_submodule(name.removesuffix(".processor")).register_forward_hook(
            capture(name), with_kwargs=True
        )
        for name in processors
    ]
    inputs = unet_inputs(videos)
    output_with_ifa = run_unet(unet, inputs)
    for handle in handles:
        handle.remove()

    assert captured.keys() == processors.keys()
    for name, (x_rnc, output_rnc) in captured.items():
        assert x_rnc.shape[0] == videos * FRAMES
        attn = unet.get_submodule(name.removesuffix(".processor"))
        expected, _ = naive_eq3(attn, processors[name], x_rnc, videos, FRAMES)
        torch.testing.assert_close(output_rnc.double(), expected, rtol=0, atol=1e-5)

    # A non-zero W_O' really changes the UNet's prediction.
    with inter_frame_attention_disabled(unet):
        baseline = run_unet(unet, inputs)
    assert not torch.allclose(output_with_ifa, baseline, atol=1e-4)


def test_middle_frame_is_taken_per_guidance_half(unet: UNetMotionModel) -> None:
    processors = install_inter_frame_attention(unet)
    randomize_ifa(processors)
    inter_frame_attention_context(unet).update(batch=2, frames=FRAMES)
    name, processor = next(iter(processors.items()))
    attn = unet.get_submodule(name.removesuffix(".processor"))
    x_rnc = torch.randn(2 * FRAMES, 10, attn.to_q.in_features)
    changed_rnc = x_rnc.clone()
    changed_rnc[FRAMES + middle_frame_index(FRAMES)] += 1.0  # the cond video's middle frame only
    with torch.no_grad():
        branch = processor.inter_frame_attention(attn, x_rnc)
        branch_changed = processor.inter_frame_attention(attn, changed_rnc)
    # The uncond half attends to its own middle frame, so it does not see the change.
    assert torch.equal(branch[:FRAMES], branch_changed[:FRAMES])
    assert not torch.allclose(branch[FRAMES:], branch_changed[FRAMES:])


@pytest.mark.parametrize("videos", [1, 2], ids=["single", "guidance"])
def test_zero_wo_prime_is_bit_identical_to_the_unet_without_ifa(
    pristine_unet: UNetMotionModel, unet: UNetMotionModel, videos: int
) -> None:
    inputs = unet_inputs(videos)
    baseline = run_unet(pristine_unet, inputs)
    install_inter_frame_attention(unet)
    assert torch.equal(run_unet(unet, inputs), baseline)


def test_disabled_ifa_and_single_frames_return_the_base_output(
    pristine_unet: UNetMotionModel, unet: UNetMotionModel
) -> None:
    inputs = unet_inputs(videos=2)
    single_frame_inputs = unet_inputs(videos=2, frames=1)
    baseline = run_unet(pristine_unet, inputs)
    single_frame_baseline = run_unet(pristine_unet, single_frame_inputs)
    processors = install_inter_frame_attention(unet)
    randomize_ifa(processors)

    with inter_frame_attention_disabled(unet):
        assert torch.equal(run_unet(unet, inputs), baseline)
    assert inter_frame_attention_context(unet).enabled
    set_inter_frame_attention_enabled(unet, False)
    assert torch.equal(run_unet(unet, inputs), baseline)
    set_inter_frame_attention_enabled(unet, True)
    assert not torch.equal(run_unet(unet, inputs), baseline)
    assert torch.equal(run_unet(unet, single_frame_inputs), single_frame_baseline)


def test_install_is_idempotent_and_uninstall_restores(
    pristine_unet: UNetMotionModel, unet: UNetMotionModel
) -> None:
    original = dict(unet.attn_processors)
    hooks_before = len(unet._forward_pre_hooks)
    first = install_inter_frame_attention(unet)
    randomize_ifa(first)
    inputs = unet_inputs(videos=2)
    output = run_unet(unet, inputs)

    second = install_inter_frame_attention(unet)
    assert second.keys() == first.keys()
    assert all(second[name] is first[name] for name in first)
    assert all(not isinstance(processor.base, InterFrameAttnProcessor) for processor in second.values())
    assert len(unet._forward_pre_hooks) == hooks_before + 1
    assert torch.equal(run_unet(unet, inputs), output)
    with pytest.raises(UsageError, match="another FrameContext"):
        install_inter_frame_attention(unet, context=FrameContext())

    uninstall_inter_frame_attention(unet)
    assert all(unet.attn_processors[name] is processor for name, processor in original.items())
    assert len(unet._forward_pre_hooks) == hooks_before
    assert inter_frame_attention_context(unet) is None
    assert inter_frame_attention_processors(unet) == {}
    assert torch.equal(run_unet(unet, inputs), run_unet(pristine_unet, inputs))


def test_a_deep_copy_of_an_ifa_unet_has_its_own_context_and_hook(unet: UNetMotionModel) -> None:
    processors = install_inter_frame_attention(unet)
    randomize_ifa(processors)
    duplicate = copy.deepcopy(unet)  # e.g. an EMA copy in training
    context, duplicate_context = inter_frame_attention_context(unet), inter_frame_attention_context(duplicate)
    assert duplicate_context is not context
    assert all(p.context is duplicate_context for p in inter_frame_attention_processors(duplicate).values())

    inputs = unet_inputs(videos=2, frames=3)
    assert torch.equal(run_unet(duplicate, inputs), run_unet(unet, inputs))
    run_unet(duplicate, unet_inputs(videos=1, frames=5))
    assert (duplicate_context.batch, duplicate_context.frames) == (1, 5)
    assert (context.batch, context.frames) == (2, 3)

    hooks = len(unet._forward_pre_hooks)
    uninstall_inter_frame_attention(duplicate)
    assert len(unet._forward_pre_hooks) == hooks
    assert len(duplicate._forward_pre_hooks) == hooks - 1


def test_install_refuses_a_model_that_is_not_a_motion_unet() -> None:
    with pytest.raises(UsageError, match="UNetMotionModel"):
        install_inter_frame_attention(nn.Linear(4, 4))  # type: ignore[arg-type]


def test_training_signal_reaches_wo_prime_from_its_zero_start(unet: UNetMotionModel) -> None:
    processors = install_inter_frame_attention(unet)
    unet.requires_grad_(False)
    for param in ifa_parameters(processors):
        param.requires_grad_(True)
    unet(*unet_inputs(videos=1)).sample.square().mean().backward()
    for processor in processors.values():
        assert (
            processor.to_out_ifa.weight.grad is not None and processor.to_out_ifa.weight.grad.abs().sum() > 0
        )


# ------------------------------------------------------------------------------------------------
# Composition with other processors


def test_wraps_a_custom_module_base_processor(unet: UNetMotionModel) -> None:
    names = [f"{name}.processor" for name in spatial_attn1_names(unet)]
    generator = torch.Generator().manual_seed(4)
    bases = {}
    for name in names:
        dim = unet.get_submodule(name.removesuffix(".processor")).to_q.in_features
        bases[name] = LearnedTermProcessor(dim)
        with torch.no_grad():
            bases[name].extra.weight.copy_(torch.randn(dim, dim, generator=generator))
    unet.set_attn_processor({**unet.attn_processors, **bases})
    base_param_ids = {id(param) for base in bases.values() for param in base.parameters()}

    processors = install_inter_frame_attention(unet)
    randomize_ifa(processors)
    ifa_param_ids = {id(param) for param in ifa_parameters(processors)}
    assert base_param_ids.isdisjoint(ifa_param_ids)
    unet_param_ids = [id(param) for param in unet.parameters()]
    assert base_param_ids <= set(unet_param_ids)
    assert len(unet_param_ids) == len(set(unet_param_ids))
    assert f"{names[0]}.base.extra.weight" in unet.state_dict()
    assert f"{names[0].removesuffix('.processor')}.to_q_ifa.weight" in ifa_state_dict(processors)

    inter_frame_attention_context(unet).update(batch=2, frames=FRAMES)
    for name, processor in processors.items():
        assert processor.base is bases[name]
        attn = unet.get_submodule(name.removesuffix(".processor"))
        x_rnc = torch.randn(2 * FRAMES, 9, attn.to_q.in_features, generator=generator)
        expected, _ = naive_eq3(attn, processor, x_rnc, videos=2, frames=FRAMES)
        expected = expected + bases[name].extra(x_rnc).detach().double()
        with torch.no_grad():
            torch.testing.assert_close(attn(x_rnc).double(), expected, rtol=0, atol=1e-5)

    unet.to(torch.float64)  # the base's own weights move with the UNet
    assert all(base.extra.weight.dtype == torch.float64 for base in bases.values())
    assert all(param.dtype == torch.float64 for param in ifa_parameters(processors))


def test_composes_with_the_layerdiffuse_processor(unet: UNetMotionModel) -> None:
    names = [f"{name}.processor" for name in spatial_attn1_names(unet)]
    torch.manual_seed(5)
    layerdiffuse = {
        name: LayerDiffuseAttnProcessor(unet.get_submodule(name.removesuffix(".processor")).to_q.in_features)
        for name in names
    }
    unet.set_attn_processor({**unet.attn_processors, **layerdiffuse})
    inputs = unet_inputs(videos=2)
    transparent_baseline = run_unet(unet, inputs)

    processors = install_inter_frame_attention(unet)
    assert all(processors[name].base is layerdiffuse[name] for name in names)
    assert torch.equal(run_unet(unet, inputs), transparent_baseline)  # W_O' = 0: still stage one's UNet

    randomize_ifa(processors)
    inter_frame_attention_context(unet).update(batch=2, frames=FRAMES)
    for name, processor in processors.items():
        attn = unet.get_submodule(name.removesuffix(".processor"))
        x_rnc = torch.randn(2 * FRAMES, 9, attn.to_q.in_features)
        _, expected_branch = naive_eq3(attn, processor, x_rnc, videos=2, frames=FRAMES)
        with torch.no_grad():
            expected = layerdiffuse[name](attn, x_rnc).double() + expected_branch
            torch.testing.assert_close(attn(x_rnc).double(), expected, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Saving and loading W_Q' / W_O'


def test_save_load_round_trip(unet: UNetMotionModel, pristine_unet: UNetMotionModel, tmp_path: Path) -> None:
    processors = install_inter_frame_attention(unet)
    randomize_ifa(processors)
    path = tmp_path / "ifa.safetensors"
    save_ifa_weights(path, processors, metadata=METADATA)
    assert [child.name for child in tmp_path.iterdir()] == ["ifa.safetensors"]  # no temp file left

    with safe_open(str(path), framework="pt") as weights:
        keys = set(weights.keys())
        metadata = weights.metadata()
    assert keys == set(ifa_state_dict(processors))
    assert len(keys) == 3 * len(processors)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q_ifa.weight" in keys
    assert metadata["format"] == IFA_FORMAT
    assert metadata["num_modules"] == str(len(processors))
    assert metadata["layeranim_version"]
    assert {key: metadata[key] for key in METADATA} == METADATA

    fresh = copy.deepcopy(pristine_unet).to(torch.float64)
    fresh_processors = install_inter_frame_attention(fresh)
    loaded_metadata = load_ifa_weights(fresh, path)
    assert loaded_metadata == metadata
    for key, tensor in ifa_state_dict(fresh_processors).items():
        assert tensor.dtype == torch.float64  # cast to the parameter's dtype
        torch.testing.assert_close(tensor, ifa_state_dict(processors)[key].double(), rtol=0, atol=0)

    other_unet = copy.deepcopy(pristine_unet)
    other = install_inter_frame_attention(other_unet)
    assert load_ifa_weights(other, path) == metadata  # a processors dict works too
    inputs = unet_inputs(videos=2)
    assert torch.equal(run_unet(other_unet, inputs), run_unet(unet, inputs))


def test_save_refuses_to_replace_or_to_write_incomplete_metadata(
    unet: UNetMotionModel, tmp_path: Path
) -> None:
    processors = install_inter_frame_attention(unet)
    path = tmp_path / "ifa.safetensors"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        save_ifa_weights(path, processors, metadata=METADATA)
    assert path.read_bytes() == b"keep me"
    save_ifa_weights(path, processors, metadata=METADATA, overwrite=True)
    assert load_ifa_weights(unet, path)["frames"] == str(FRAMES)

    with pytest.raises(UsageError, match="motion_adapter"):
        save_ifa_weights(tmp_path / "a.safetensors", processors, metadata={"base_model": "x", "frames": "16"})
    with pytest.raises(UsageError, match="format"):
        save_ifa_weights(tmp_path / "b.safetensors", processors, metadata={**METADATA, "format": "mine"})
    assert not (tmp_path / "a.safetensors").exists() and not (tmp_path / "b.safetensors").exists()


def test_load_names_missing_unexpected_and_misshaped_keys(
    unet: UNetMotionModel, pristine_unet: UNetMotionModel, tmp_path: Path
) -> None:
    path = tmp_path / "ifa.safetensors"
    save_ifa_weights(path, install_inter_frame_attention(unet), metadata=METADATA)

    smaller = install_inter_frame_attention(build_unet(layers_per_block=1))
    with pytest.raises(StateDictMismatchError, match=r"unexpected: .*attn1\.to_q_ifa\.weight") as error:
        load_ifa_weights(smaller, path)
    assert "tiny-sd15" in str(error.value)

    target = install_inter_frame_attention(copy.deepcopy(pristine_unet))
    tensors = {key: tensor.clone() for key, tensor in ifa_state_dict(target).items()}
    first_key = next(iter(tensors))
    tensors[first_key] = torch.zeros(3, 3)
    dropped_key = list(tensors)[-1]
    del tensors[dropped_key]
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata={"format": IFA_FORMAT, "format_version": "1"})
    before = {key: tensor.clone() for key, tensor in ifa_state_dict(target).items()}
    with pytest.raises(StateDictMismatchError) as error:
        load_ifa_weights(target, bad)
    message = str(error.value)
    assert f"missing: {dropped_key}" in message
    assert f"mis-shaped: {first_key} (file (3, 3)" in message
    assert all(
        torch.equal(tensor, before[key]) for key, tensor in ifa_state_dict(target).items()
    )  # untouched


def test_load_rejects_files_that_are_not_ifa_weights(unet: UNetMotionModel, tmp_path: Path) -> None:
    processors = install_inter_frame_attention(unet)
    foreign = tmp_path / "lora.safetensors"
    save_file(ifa_state_dict({name: processor for name, processor in processors.items()}), str(foreign))
    with pytest.raises(WeightsError, match="not an Inter-Frame Attention weights file") as error:
        load_ifa_weights(unet, foreign)
    assert not isinstance(error.value, StateDictMismatchError)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_ifa_weights(unet, garbage)
    with pytest.raises(WeightsError, match="does not exist"):
        load_ifa_weights(unet, tmp_path / "missing.safetensors")
    with pytest.raises(UsageError, match="install_inter_frame_attention"):
        load_ifa_weights(build_unet(layers_per_block=1), foreign)


# ------------------------------------------------------------------------------------------------
# The untrained branch is skipped; the base frame may sit anywhere


def count_branch_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = InterFrameAttnProcessor.inter_frame_attention

    def counting(self: InterFrameAttnProcessor, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(InterFrameAttnProcessor, "inter_frame_attention", counting)
    return calls


def test_untrained_ifa_skips_its_branch_until_wo_prime_changes(
    unet: UNetMotionModel, pristine_unet: UNetMotionModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_branch_calls(monkeypatch)
    processors = install_inter_frame_attention(unet)
    inputs = unet_inputs(videos=2)
    baseline = run_unet(pristine_unet, inputs)
    assert torch.equal(run_unet(unet, inputs), baseline) and calls == []  # W_O' = 0: nothing computed
    with torch.no_grad():  # (with grad on, a W_O' that requires grad always runs: it is being trained)
        assert all(p.branch_is_zero() for p in processors.values())

    randomize_ifa(processors)  # an in-place change, as loading weights or an optimizer step makes
    with_ifa = run_unet(unet, inputs)
    assert len(calls) == len(processors) and not torch.equal(with_ifa, baseline)

    with torch.no_grad():
        for processor in processors.values():
            processor.to_out_ifa.weight.zero_()
            processor.to_out_ifa.bias.zero_()
    calls.clear()
    assert torch.equal(run_unet(unet, inputs), baseline) and calls == []


def test_a_zero_wo_prime_being_trained_still_runs_its_branch(
    unet: UNetMotionModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_branch_calls(monkeypatch)
    processors = install_inter_frame_attention(unet)
    for param in ifa_parameters(processors):
        param.requires_grad_(True)
    unet(*unet_inputs(videos=1)).sample.square().mean().backward()
    assert len(calls) == len(processors)
    assert all(
        p.to_out_ifa.weight.grad is not None and p.to_out_ifa.weight.grad.any() for p in processors.values()
    )


@pytest.mark.parametrize("base_index", [0, FRAMES - 1])
def test_base_index_moves_the_attended_frame(unet: UNetMotionModel, base_index: int) -> None:
    processors = install_inter_frame_attention(unet)
    randomize_ifa(processors)
    context = inter_frame_attention_context(unet)
    context.base_index = base_index
    context.update(batch=2, frames=FRAMES)
    assert context.middle == base_index
    generator = torch.Generator().manual_seed(4)
    name, processor = next(iter(processors.items()))
    attn = unet.get_submodule(name.removesuffix(".processor"))
    x_rnc = torch.randn(2 * FRAMES, 9, attn.to_q.in_features, generator=generator)
    expected, _ = naive_eq3(attn, processor, x_rnc, 2, FRAMES, middle=base_index)
    with torch.no_grad():
        got = attn(x_rnc)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=1e-5)
    context.base_index = FRAMES
    with pytest.raises(UsageError, match=f"base_index={FRAMES} is outside the {FRAMES} frames"):
        run_unet(unet, unet_inputs(videos=1))
