"""The command line's one error translator (like huggingface_hub's `cli/_errors.py`).

Library errors name Python arguments, written `name=value` (`num_frames=40`, `offload='model'`,
`overwrite=True`). Here those spellings become the flags a shell user types (`--frames 40`,
`--offload model`, `--overwrite`); out-of-memory errors become one line saying what lowers memory.
"""

from __future__ import annotations

import re

from layeranim.errors import LayerAnimError, as_out_of_memory

# Python argument (library, diffusers-style pipeline arguments included) → the CLI's spelling.
FLAGS: dict[str, str] = {
    "prompt": "PROMPT",
    "image": "IMAGE",
    "output": "--output",
    "prompts_file": "--prompts",
    "inputs_file": "--inputs",
    "shard": "--shard",
    "frames": "--frames",
    "num_frames": "--frames",
    "fps": "--fps",
    "base_position": "--base-position",
    "seamless": "--seamless",
    "context_length": "--context-length",
    "context_overlap": "--context-overlap",
    "context_weighting": "--context-weighting",
    "negative_prompt": "--negative-prompt",
    "seed": "--seed",
    "steps": "--steps",
    "num_inference_steps": "--steps",
    "guidance": "--guidance",
    "guidance_scale": "--guidance",
    "image_steps": "--image-steps",
    "image_guidance": "--image-guidance",
    "width": "--width",
    "height": "--height",
    "scheduler": "--scheduler",
    "video_scheduler": "--video-scheduler",
    "video_schedule": "--video-schedule",
    "motion_norm": "--motion-norm",
    "fast_decode": "--fast-decode",
    "decode_chunk_size": "--decode-chunk-size",
    "save_image": "--save-image",
    "save_latent": "--save-latent",
    "preset": "--preset",
    "base": "--model",
    "model": "--model",
    "family": "--family",
    "transparent_attn": "--transparent-attn",
    "transparent_encoder": "--transparent-encoder",
    "transparent_decoder": "--transparent-decoder",
    "motion_adapter": "--motion-adapter",
    "ifa_weights": "--ifa-weights",
    "loras": "--lora",
    "motion_loras": "--motion-lora",
    "embeddings": "--embedding",
    "clip_skip": "--clip-skip",
    "speed": "--speed",
    "allow_ifa_mismatch": "--allow-ifa-mismatch",
    "threads": "--threads",
    "device": "--device",
    "dtype": "--dtype",
    "offload": "--offload",
    "format": "--format",
    "quality": "--quality",
    "lossless": "--lossless",
    "alpha_mode": "--alpha-mode",
    "loop": "--loop",
    "background": "--background",
    "start": "--start",
    "stop": "--stop",
    "step": "--step",
    "resize": "--resize",
    "preview": "--preview",
    "manifest": "--manifest",
    "overwrite": "--overwrite",
    "allow_outside": "--allow-outside",
    "codec": "--codec",
    "dither": "--dither",
    "alpha_threshold": "--alpha-threshold",
    "target": "--target",
    "video_format": "--format",
    "html": "--html",
    "evaluate": "--eval",
    "still": "--still",
    # `layeranim train` (its options set these config keys; `overrides` entries are `--set`).
    "overrides": "--set",
    "data.path": "--data",
    "train.output_dir": "--output",
    "output_dir": "--output",
    "checkpoint.resume": "--resume",
    "resume": "--resume",
    # `layeranim dataset synth`.
    "clips": "--clips",
    "captions": "--captions",
}
# Booleans whose True (or, for `tta`, False) is a flag of its own.
SWITCHES: dict[str, str] = {
    "overwrite=True": "--overwrite",
    "fast_decode=True": "--fast-decode",
    "tta=False": "--fast-decode",
    "save_latent=True": "--save-latent",
    "preview=True": "--preview",
    "manifest=True": "--manifest",
    "seamless=True": "--seamless",
    "allow_ifa_mismatch=True": "--allow-ifa-mismatch",
    "lossless=True": "--lossless",
    "lossless=False": "--lossy",
    "html=True": "--html",
    "evaluate=True": "--eval",
}

_NAMES = "|".join(re.escape(name) for name in sorted(FLAGS, key=len, reverse=True))
# `name=` not preceded by a word character, a dash, a dot or a slash (paths and flags stay untouched).
_ASSIGNMENT = re.compile(rf"(?<![\w./-])({_NAMES})=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s,;:)]+)")
_SWITCH = re.compile(rf"(?<![\w./-])({'|'.join(re.escape(s) for s in SWITCHES)})(?![\w])")
_SIMPLE = re.compile(r"[\w.:+/=-]+")  # `=` too: `--set optim.lr=1` needs no quotes


def _value(text: str) -> str:
    """A Python repr as a shell user would type it: quotes dropped unless the value has spaces or quotes."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" and _SIMPLE.fullmatch(text[1:-1]):
        return text[1:-1]
    return text


def to_cli(message: str) -> str:
    """Rewrite the Python spellings of arguments in `message` into the CLI's flags."""
    message = _SWITCH.sub(lambda m: SWITCHES[m.group(1)], message)
    return _ASSIGNMENT.sub(lambda m: f"{FLAGS[m.group(1)]} {_value(m.group(2))}", message)


def translate(exc: BaseException) -> tuple[str, int] | None:
    """`(one-line message, exit code)` for an error the user can act on; None for an unexpected one."""
    if isinstance(exc, LayerAnimError):
        return to_cli(str(exc)), exc.exit_code
    oom = as_out_of_memory(exc)
    if oom is not None:
        return to_cli(str(oom)), oom.exit_code
    return None
