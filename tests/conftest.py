"""Test-wide setup: everything runs offline on CPU with tiny models."""

from __future__ import annotations

import os

# Must be set before huggingface_hub / diffusers / transformers are imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from intra-op threads, and OpenMP's spinning barriers make them crawl when the
# machine's two cores are shared (measured: up to 100× slower). Subprocesses inherit the variable.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # after the environment above

torch.set_num_threads(1)

import logging  # noqa: E402
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_layeranim_logging() -> Iterator[None]:
    """A CLI run configures the `layeranim` logger for a terminal (its own stderr handler, no propagation,
    a quieter level under `-q`); put it back after each test, so `caplog` in later tests sees records."""
    logger = logging.getLogger("layeranim")
    saved = (logger.level, logger.propagate, list(logger.handlers), logger.disabled)
    yield
    logger.setLevel(saved[0])
    logger.propagate = saved[1]
    logger.handlers[:] = saved[2]
    logger.disabled = saved[3]
