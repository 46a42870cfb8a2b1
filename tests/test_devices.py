"""Device, dtype and generator selection, with the machine's accelerators mocked."""

from __future__ import annotations

import pytest
import torch

from layeranim.errors import UsageError
from layeranim.render import devices


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Pretend the machine has the given accelerators: `machine(cuda=True, mps=False, bf16=True)`."""

    def configure(cuda: bool = False, mps: bool = False, bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda else 0)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return configure


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda: bool, mps: bool, expected: str) -> None:
    machine(cuda=cuda, mps=mps)
    assert devices.select_device("auto").type == expected
    assert devices.available_devices()[-1] == "cpu"


def test_explicit_devices(machine) -> None:
    machine(cuda=True, mps=False)
    assert devices.select_device("cpu") == torch.device("cpu")
    assert devices.select_device("CUDA") == torch.device("cuda")
    assert devices.select_device("cuda:0") == torch.device("cuda:0")


def test_unavailable_device_names_option_value_and_alternatives(machine) -> None:
    machine(cuda=False, mps=False)
    with pytest.raises(UsageError) as info:
        devices.select_device("cuda")
    message = str(info.value)
    assert "device=" in message and "'cuda'" in message and "cpu" in message
    with pytest.raises(UsageError, match="device='mps'"):
        devices.select_device("mps")


def test_unknown_device_and_missing_index(machine) -> None:
    machine(cuda=True)
    with pytest.raises(UsageError, match="not a device"):
        devices.select_device("tpu")
    with pytest.raises(UsageError, match="only 1 CUDA device"):
        devices.select_device("cuda:3")


@pytest.mark.parametrize(
    ("device", "expected"),
    [("cuda", torch.float16), ("mps", torch.float16), ("cpu", torch.float32)],
)
def test_auto_dtype_per_device(machine, device: str, expected: torch.dtype) -> None:
    machine(cuda=True, mps=True)
    assert devices.select_dtype(torch.device(device), "auto") == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fp32", torch.float32),
        ("float32", torch.float32),
        ("bf16", torch.bfloat16),
        ("bfloat16", torch.bfloat16),
        ("torch.float32", torch.float32),
    ],
)
def test_dtype_names_on_cpu(name: str, expected: torch.dtype) -> None:
    assert devices.select_dtype(torch.device("cpu"), name) == expected


def test_fp16_on_cpu_is_refused_with_the_fix() -> None:
    with pytest.raises(UsageError) as info:
        devices.select_dtype(torch.device("cpu"), "fp16")
    assert "dtype='fp16'" in str(info.value) and "dtype='fp32'" in str(info.value)


def test_bf16_on_a_cuda_device_without_bf16(machine) -> None:
    machine(cuda=True, bf16=False)
    with pytest.raises(UsageError, match="dtype='fp16'"):
        devices.select_dtype(torch.device("cuda"), "bf16")
    machine(cuda=True, bf16=True)
    assert devices.select_dtype(torch.device("cuda"), "bf16") == torch.bfloat16
    assert devices.select_dtype(torch.device("cuda"), "float16") == torch.float16


def test_unknown_dtype() -> None:
    with pytest.raises(UsageError, match="dtype='int8'"):
        devices.select_dtype(torch.device("cpu"), "int8")


def test_dtype_name_round_trips() -> None:
    for name in ("fp32", "fp16", "bf16"):
        assert devices.dtype_name(devices.parse_dtype(name)) == name


def test_generator_is_seeded_and_on_the_cpu_for_mps_and_cpu() -> None:
    first = torch.randn(4, generator=devices.generator_for(torch.device("cpu"), 7))
    again = torch.randn(4, generator=devices.generator_for(torch.device("cpu"), 7))
    other = torch.randn(4, generator=devices.generator_for(torch.device("cpu"), 8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert devices.generator_for(torch.device("mps"), 1).device == torch.device("cpu")
