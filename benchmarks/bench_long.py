"""Long clips: seconds per frame and peak memory of stage two at 16, 64 and 256 frames (issue 11).

Each clip length runs in its own child process on the tiny preset's models (random weights, nothing
downloaded): stage two denoises in 16-frame context windows (`output_type="latent"`), then the frames are
decoded with `LayerAnimatePipeline.iter_decode` and consumed chunk by chunk (into a `SeamMeter`, as a
streaming writer would), so no decoded clip is ever held. Peak memory is the child's peak resident memory
above its level once the models are loaded (Linux `VmHWM`, reset through `/proc/self/clear_refs`), or
`torch.cuda.max_memory_allocated` on CUDA, less the latents themselves. The claim to check: time grows
linearly with frames (s/frame flat) and memory stays flat (256 frames ≤ 1.3× the 16-frame peak).

Children run with `MALLOC_MMAP_THRESHOLD_=65536` (unless `--glibc-default`): glibc otherwise raises its
mmap threshold as large blocks are freed and then serves them from a heap that fragments, so resident
memory creeps up with the number of chunks decoded although nothing is kept (measured here: +30 MiB from
32 to 128 frames at 128 px with the default, +0.3 MiB with the fixed threshold).

    .venv/bin/python benchmarks/bench_long.py                  # 128 px, 2 steps, CPU: ~2 min on 2 cores
    .venv/bin/python benchmarks/bench_long.py --size 64 --frames 16 64
    python benchmarks/bench_long.py --full                     # 512 px, 25 steps, CUDA
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from _util import print_header, print_table, resolve_device, usage_error


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(frames: int, size: int, steps: int, device_name: str, decode_chunk_size: int) -> dict[str, float]:
    """Render one clip; return seconds (denoise, decode) and peak memory above the loaded models."""
    from layeranim.pipelines.context_windows import SeamMeter
    from layeranim.pipelines.layeranimate import LayerAnimatePipeline, build_motion_unet
    from layeranim.render.components import ModelSpec, load_components, load_motion_adapter

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    device = torch.device(device_name)
    c = load_components(ModelSpec.for_preset("tiny"), device=device, dtype=torch.float32)
    adapter = load_motion_adapter(ModelSpec.for_preset("tiny").motion_adapter)
    motion = build_motion_unet(c.unet, adapter, c.layerdiffuse_processors)
    motion.unet.to(device)
    pipe = LayerAnimatePipeline(
        vae=c.vae,
        text_encoder=c.text_encoder,
        tokenizer=c.tokenizer,
        unet=motion.unet,
        scheduler=c.scheduler,
        transparent_decoder=c.transparent_decoder,
    )
    base = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))

    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start_bytes = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident size to the current one
        start_bytes = _rss_kib("VmRSS") * 1024
    start = time.perf_counter()
    out = pipe(
        "lower newer",
        base_latent=base,
        num_frames=frames,
        num_inference_steps=steps,
        generator=torch.Generator().manual_seed(1),
        output_type="latent",
    )
    denoised = time.perf_counter()
    meter = SeamMeter()
    for chunk in pipe.iter_decode(
        out.latents[0], out.middle_index, tta=False, decode_chunk_size=decode_chunk_size
    ):
        meter.update(chunk)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - start_bytes
    else:
        peak = _rss_kib("VmHWM") * 1024 - start_bytes
    done = time.perf_counter()
    latent_bytes = out.latents.numel() * out.latents.element_size()
    return {
        "frames": frames,
        "denoise_s": denoised - start,
        "decode_s": done - denoised,
        "peak_bytes": max(0, peak - latent_bytes),
        "seam": meter.value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--size", type=int, default=128, help="pixels (a multiple of 64)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--decode-chunk-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="512 px, 25 steps, on CUDA")
    parser.add_argument(
        "--glibc-default", action="store_true", help="keep glibc's dynamic mmap threshold (see above)"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.full:
        args.size, args.steps, args.device = 512, 25, "cuda"
    if args.size % 64:
        usage_error(f"--size {args.size} must be a multiple of 64 (the transparency decoder's)")
    device = resolve_device(args.device)
    if args.child is not None:
        result = child(args.child, args.size, args.steps, str(device), args.decode_chunk_size)
        print(json.dumps(result))
        return

    allocator = "glibc default" if args.glibc_default else "MALLOC_MMAP_THRESHOLD_=65536"
    settings = f"tiny preset models, {args.size} px, {args.steps} steps, 16-frame windows, streamed decode"
    settings += f", {allocator}"
    print_header("bench_long: stage two at several clip lengths", device, torch.float32, settings)
    results = []
    for frames in args.frames:
        command = [sys.executable, __file__, "--child", str(frames), "--size", str(args.size)]
        command += ["--steps", str(args.steps), "--device", str(device)]
        command += ["--decode-chunk-size", str(args.decode_chunk_size)]
        env = {**os.environ, "BENCH_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
        if not args.glibc_default:
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise SystemExit(1)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    first = results[0]
    first_rate = (first["denoise_s"] + first["decode_s"]) / first["frames"]
    rows = []
    for r in results:
        rate = (r["denoise_s"] + r["decode_s"]) / r["frames"]
        rows.append(
            (
                str(r["frames"]),
                f"{r['denoise_s']:.2f}",
                f"{r['decode_s']:.2f}",
                f"{rate:.3f}",
                f"{rate / first_rate:.2f}×",
                f"{r['peak_bytes'] / 2**20:.1f}",
                f"{r['peak_bytes'] / max(first['peak_bytes'], 1):.2f}×",
            )
        )
    print_table(
        ("frames", "denoise s", "decode s", "s/frame", "vs first", "peak MiB", "vs first"),
        rows,
    )


if __name__ == "__main__":
    main()
