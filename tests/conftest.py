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
