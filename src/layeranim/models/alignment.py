"""Aligned weights, so that a model computes the same bits however it was loaded.

safetensors memory-maps a file and hands out tensors at the file's offsets, which are not 64-byte aligned.
CPU BLAS (oneDNN, MKL) picks its kernel partly by alignment, so the same weights at an unaligned address
can round the last bit differently from a freshly allocated copy: a pipeline loaded with `from_pretrained`
would then differ from the one that was saved by one level in a few pixels. Copying such tensors once into
fresh (64-byte aligned) memory removes the accident.
"""

from __future__ import annotations

import torch
from torch import nn

_ALIGNMENT = 64  # bytes: what PyTorch's CPU allocator guarantees and what BLAS kernels test for


def realign_weights_(module: nn.Module) -> int:
    """Copy every unaligned CPU parameter and buffer of `module` into fresh aligned memory, in place.

    Returns how many tensors were copied. Tensors on accelerators are left alone (their allocators align).
    """
    copied = 0
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type == "cpu" and tensor.numel() and tensor.data_ptr() % _ALIGNMENT:
                tensor.data = tensor.data.clone()
                copied += 1
    return copied
