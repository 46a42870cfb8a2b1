"""Splitting a batch across processes (layeranim.distributed): a real torchrun launch, plus the parts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from layeranim.distributed import (
    RANKS_DIR,
    ProcessInfo,
    combine,
    current_process,
    gather_records,
    process_device,
    process_slice,
    run_key,
)
from layeranim.errors import LayerAnimError, UsageError
from layeranim.render.batch import BatchItem, select_shard

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_torchrun_two_processes_render_a_four_item_batch_once(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("lower\nnewer\n# a comment\nwider\nlowest\n")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [
            str(TORCHRUN),
            "--standalone",
            "--nproc_per_node",
            "2",
            str(ROOT / "tests" / "_distributed_batch.py"),
            str(prompts),
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("SUMMARY")] == [
        'SUMMARY {"items": 4, "exit_code": 0}'
    ]  # one process reports
    outputs = sorted(p.name for p in out.glob("*.webm"))
    assert outputs == ["0000-lower.webm", "0001-newer.webm", "0002-wider.webm", "0003-lowest.webm"]
    ranks = {}
    for name in outputs:
        manifest = json.loads((out / f"{name}.json").read_text())
        ranks[manifest["item"]["index"]] = manifest["process"]["rank"]
    assert ranks == {0: 0, 1: 1, 2: 0, 3: 1}  # each item rendered by exactly one process
    for way in ("files", "torch"):
        report = json.loads((out / f"summary-{way}.json").read_text())
        assert [(r["index"], r["status"], r["rank"]) for r in report["records"]] == [
            (0, "ok", 0),
            (1, "ok", 1),
            (2, "ok", 0),
            (3, "ok", 1),
        ]
        assert report["exit_code"] == 0
    assert report["group"] is True  # torchrun's rendezvous: the gloo group came up
    assert not (out / RANKS_DIR).exists()  # the file reports are cleaned up


def test_current_process_reads_torchrun_then_slurm() -> None:
    assert current_process({}) == ProcessInfo()
    torchrun = current_process({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (torchrun.rank, torchrun.world_size, torchrun.local_rank, torchrun.launcher) == (
        3,
        4,
        1,
        "torchrun",
    )
    slurm = current_process({"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "1"})
    assert (slurm.rank, slurm.world_size, slurm.launcher, slurm.is_main) == (1, 2, "slurm", False)
    with pytest.raises(UsageError, match="RANK=4 and WORLD_SIZE=4"):
        current_process({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(UsageError, match="RANK='x'"):
        current_process({"RANK": "x", "WORLD_SIZE": "2"})


@pytest.mark.parametrize(("shards", "world"), [(1, 1), (1, 3), (2, 2), (3, 2), (4, 5)])
def test_shards_then_ranks_cover_the_batch_exactly_once(shards: int, world: int) -> None:
    items = [BatchItem(index=i, prompt=f"p{i}") for i in range(11)]
    seen = [
        item.index
        for shard in range(1, shards + 1)
        for rank in range(world)
        for item in process_slice(select_shard(items, shard, shards), rank, world)
    ]
    assert sorted(seen) == list(range(11))
    with pytest.raises(UsageError, match="rank 2 of world_size 2"):
        process_slice(items, 2, 2)


def test_process_device_gives_each_local_rank_its_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    two = ProcessInfo(rank=3, world_size=4, local_rank=1)
    assert process_device("cuda", two) == torch.device("cuda", 1)
    assert process_device("cuda:0", two) == torch.device("cuda", 0)  # explicit: kept
    assert process_device("cpu", two) == torch.device("cpu")
    assert process_device("cuda", ProcessInfo()) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # srun --gpus-per-task 1: one visible GPU
    assert process_device("cuda", two) == torch.device("cuda", 0)


def record(index: int, status: str = "ok") -> dict[str, object]:
    return {"index": index, "prompt": f"p{index}", "status": status}


def test_file_gather_waits_for_every_process(tmp_path: Path) -> None:
    results: dict[int, object] = {}

    def run(rank: int) -> None:
        process = ProcessInfo(rank=rank, world_size=3)
        results[rank] = gather_records([record(rank)], process, folder=tmp_path, key="k", timeout=60)

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 2, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results[1] is None and results[2] is None
    ordered, exit_code = combine(results[0])  # type: ignore[arg-type]
    assert [r["index"] for r in ordered] == [0, 1, 2] and exit_code == 0
    assert not (tmp_path / RANKS_DIR).exists()


def test_a_silent_process_fails_the_batch(tmp_path: Path) -> None:
    gathered = gather_records([record(0)], ProcessInfo(0, 2), folder=tmp_path, key="k", timeout=0.5)
    ordered, exit_code = combine(gathered)  # type: ignore[arg-type]
    assert exit_code == 1
    assert "process 1 did not report" in str(ordered[0]["error"])
    shutil.rmtree(tmp_path / RANKS_DIR, ignore_errors=True)


def test_an_item_twice_is_an_error_and_failures_set_the_exit_code() -> None:
    with pytest.raises(LayerAnimError, match="item 1 was rendered by more than one process"):
        combine([record(1), record(1)])
    assert combine([record(0), record(1, "failed")])[1] == 1
    assert combine([record(0), record(1, "skipped")])[1] == 0


def test_run_key_is_shared_by_a_launch_and_differs_between_plans() -> None:
    env = {"TORCHELASTIC_RUN_ID": "abc", "MASTER_PORT": "29500"}
    assert run_key(["a", "b"], env) == run_key(["a", "b"], dict(env))
    assert run_key(["a", "b"], env) != run_key(["a", "c"], env)
    assert run_key(["a", "b"], env) != run_key(["a", "b"], {**env, "TORCHELASTIC_RUN_ID": "def"})
