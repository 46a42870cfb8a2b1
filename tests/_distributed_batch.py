"""A batch render split across the processes of a launcher (run by tests/test_distributed.py under torchrun).

    torchrun --standalone --nproc_per_node 2 tests/_distributed_batch.py PROMPTS OUTDIR [--shard I/N]

Every process: plan the whole batch, take the shard, take its share, render it with the batch machinery
(tiny preset, 2 frames, 2 steps, 64 px), then hand its results to process 0, once through files and once
through torch.distributed (gloo). Process 0 writes OUTDIR/summary-files.json and summary-torch.json and
prints one `SUMMARY {...}` line; its exit code is the batch's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from layeranim import video_io
from layeranim.distributed import (
    combine,
    current_process,
    ensure_process_group,
    gather_records,
    process_device,
    process_slice,
    run_key,
)
from layeranim.render import batch
from layeranim.render.components import ModelSpec
from layeranim.render.session import RenderSession

PARAMS = {"frames": 2, "steps": 2, "guidance": 1.0, "image_steps": 2, "fps": 8.0, "size": 64}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("prompts", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--shard", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    process = current_process()
    items = batch.read_batch_file(args.prompts)
    planned = batch.plan_batch(items, args.output, base_seed=0, ext="webm")
    jobs = planned if args.shard is None else batch.select_shard(planned, *batch.parse_shard(args.shard))
    mine = process_slice(jobs, process.rank, process.world_size)
    device = process_device("cpu", process)
    session = RenderSession(ModelSpec.for_preset("tiny"), device, torch.float32, will_animate=True)
    sources = {"preset": "tiny"}

    def key_for(job: batch.BatchJob) -> str:
        return batch.render_key(
            item=job.item, seed=job.seed, params=PARAMS, sources=sources, device=str(device), dtype="fp32"
        )

    def render(job: batch.BatchJob) -> batch.RenderResult:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        still = session.image(
            job.item.prompt, seed=job.seed, steps=2, guidance=1.0, width=64, height=64, tta=False
        )
        video = session.video(
            job.item.prompt,
            seed=job.seed,
            frames=2,
            steps=2,
            guidance=1.0,
            base_latent=still.latent_b4hw,
            tta=False,
        )
        video_io.write_video(job.output, video.frames_fhwc_uint8, 8.0, overwrite=job.replace)
        manifest = batch.build_manifest(
            item=job.item,
            seed=job.seed,
            params=PARAMS,
            sources=sources,
            device=str(device),
            dtype="fp32",
            timings={"image": still.seconds, "video": video.seconds},
            output=job.output,
        )
        manifest["process"] = {"rank": process.rank, "world_size": process.world_size}
        return batch.RenderResult(job.output, manifest)

    summary = batch.run_batch(mine, render, render_key_for=key_for)
    records = [{**result.to_json(), "rank": process.rank} for result in summary.results]
    key = run_key([job.output for job in jobs])

    by_files = gather_records(records, process, folder=args.output, key=key, use_torch_distributed=False)
    group = ensure_process_group(process)
    by_torch = gather_records(records, process, folder=args.output, key=key, use_torch_distributed=group)
    if not process.is_main:
        return 0
    assert by_files is not None and by_torch is not None
    exit_code = 0
    for name, gathered in (("files", by_files), ("torch", by_torch)):
        ordered, exit_code = combine(gathered)
        report = {"group": group, "records": ordered, "exit_code": exit_code}
        (args.output / f"summary-{name}.json").write_text(json.dumps(report, indent=1))
    print("SUMMARY " + json.dumps({"items": len(ordered), "exit_code": exit_code}), flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
