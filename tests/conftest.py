"""Test-wide setup: everything runs offline on CPU with tiny models."""

from __future__ import annotations

import os

# Must be set before huggingface_hub / diffusers / transformers are imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
