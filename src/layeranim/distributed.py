"""Splitting a batch render across processes started by an existing launcher, and gathering one summary.

A batch already splits across machines with `--shard I/N` (items with `index % N == I − 1`). Under a
process launcher (`torchrun`, `accelerate launch`, SLURM's `srun`), each process then takes its share of
its shard, renders it on its own device, and process 0 reports for all:

1. `current_process()` reads the launcher's environment: `RANK`/`WORLD_SIZE`/`LOCAL_RANK` (torchrun, and
   accelerate launch, which sets the same variables that accelerate's `PartialState` reads), else
   `SLURM_PROCID`/`SLURM_NTASKS`/`SLURM_LOCALID` (one task per process under `srun`), else a single process.
2. `process_slice(jobs, rank, world_size)`: after the shard is selected, the jobs at positions
   `rank, rank + W, …` of the shard's list, so shards × ranks cover the batch exactly once.
3. `process_device(device, process)`: `cuda` becomes `cuda:LOCAL_RANK` (one GPU per process on a node).
4. `gather_records(records, process, folder=…, key=…)`: every process hands in its items' JSON records;
   process 0 gets all of them (None elsewhere). With an initialised `torch.distributed` process group
   (e.g. gloo on CPUs) this is `gather_object`; without one, each process writes its records atomically to
   `FOLDER/.layeranim-ranks/KEY/rank-R.json` and process 0 waits for all W files (or `timeout`), so only
   a folder every process sees is needed (the output folder; on several nodes, shared storage). A process
   that never reports appears as a failed placeholder, so the exit code is 1, never a silent success.
   `ensure_process_group(process)` joins the launcher's group over gloo when it gave a rendezvous
   (torchrun and accelerate launch do); SLURM `srun` without torchrun uses the files.
5. `combine(records)`: the records in batch order, each item once (a duplicate is an error), and the
   exit code: 0 when none failed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from layeranim.errors import LayerAnimError, UsageError

logger = logging.getLogger(__name__)

RANKS_DIR = ".layeranim-ranks"
DEFAULT_GATHER_TIMEOUT = 24 * 3600.0  # seconds process 0 waits for the others (renders can be long)
_POLL_SECONDS = 0.5
STALE_SLACK_SECONDS = 600.0  # a report older than process 0's start by more than this is a leftover

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place among the processes a launcher started."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "none"  # torchrun (also accelerate launch) | slurm | none
    started: float = field(default_factory=time.time, compare=False)  # when this process looked

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"environment variable {name}={value!r} is not a whole number.") from None


def current_process(env: Mapping[str, str] | None = None) -> ProcessInfo:
    """Rank, world size and local rank from the launcher's environment (a single process without one)."""
    env = os.environ if env is None else env
    for names, launcher in (
        (("RANK", "WORLD_SIZE", "LOCAL_RANK"), "torchrun"),
        (("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"), "slurm"),
    ):
        rank, world_size, local_rank = (_env_int(env, name) for name in names)
        if rank is None or world_size is None:
            continue
        if world_size < 1 or not 0 <= rank < world_size:
            raise UsageError(
                f"{names[0]}={rank} and {names[1]}={world_size} do not describe a process of a group; "
                "check the launcher's environment."
            )
        return ProcessInfo(rank, world_size, local_rank if local_rank is not None else rank, launcher)
    return ProcessInfo()


def ensure_process_group(process: ProcessInfo, *, timeout: float = DEFAULT_GATHER_TIMEOUT) -> bool:
    """Join the launcher's `torch.distributed` group over gloo (CPU objects only: any node can), when it
    gave a rendezvous (`MASTER_ADDR`/`MASTER_PORT`, as torchrun and accelerate launch do). Returns whether
    a group is up; without one, `gather_records` uses files."""
    import torch.distributed as dist

    if not process.distributed or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    if not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        return False
    dist.init_process_group(
        "gloo", rank=process.rank, world_size=process.world_size, timeout=timedelta(seconds=timeout)
    )
    return True


def process_slice(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """This process's share: the items at positions rank, rank + world_size, … (apply `--shard` first)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise UsageError(f"rank {rank} of world_size {world_size}: need 0 <= rank < world_size.")
    return list(items[rank::world_size])


def process_device(device: Any, process: ProcessInfo) -> Any:
    """The device a process renders on: a bare `cuda` becomes `cuda:LOCAL_RANK` when several processes
    share a node (modulo the GPUs this process sees: under `srun --gpus-per-task 1` each task sees one,
    `cuda:0`); an explicit index (`cuda:1`) and other devices are kept as given."""
    import torch

    chosen = torch.device(device)
    if chosen.type == "cuda" and chosen.index is None and process.distributed:
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return torch.device("cuda", process.local_rank % visible if visible else process.local_rank)
    if chosen.type == "cuda" and chosen.index is not None and process.distributed:
        logger.warning("every process renders on %s: give device='cuda' for one GPU per process", chosen)
    return chosen


def run_key(plan: Sequence[object], env: Mapping[str, str] | None = None) -> str:
    """A name every process of one launch derives alike, without talking to the others: the batch plan
    (so shards and different batches never mix) plus the launch's own id, when the launcher gives one."""
    env = os.environ if env is None else env
    launch = [
        env.get(name, "")
        for name in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID", "SLURM_STEP_ID")
    ]
    text = json.dumps([[str(item) for item in plan], launch], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def gather_records(
    records: list[dict[str, Any]],
    process: ProcessInfo,
    *,
    folder: Path,
    key: str,
    timeout: float = DEFAULT_GATHER_TIMEOUT,
    use_torch_distributed: bool | None = None,
) -> list[dict[str, Any]] | None:
    """Every process's JSON records on process 0 (None on the others); a single process gets its own.

    `use_torch_distributed=None` uses `torch.distributed.gather_object` when a process group is
    initialised, else files under `folder`.
    """
    if not process.distributed:
        return list(records)
    if use_torch_distributed is None:
        use_torch_distributed = _torch_distributed_ready()
    if use_torch_distributed:
        return _gather_torch(records, process)
    return _gather_files(records, process, folder=Path(folder), key=key, timeout=timeout)


def _torch_distributed_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _gather_torch(records: list[dict[str, Any]], process: ProcessInfo) -> list[dict[str, Any]] | None:
    import torch.distributed as dist

    gathered: list[Any] | None = [None] * process.world_size if process.is_main else None
    dist.gather_object(records, gathered, dst=0)
    if not process.is_main:
        return None
    assert gathered is not None
    return [record for part in gathered for record in (part or [])]


def _gather_files(
    records: list[dict[str, Any]], process: ProcessInfo, *, folder: Path, key: str, timeout: float
) -> list[dict[str, Any]] | None:
    run_dir = folder / RANKS_DIR / key
    run_dir.mkdir(parents=True, exist_ok=True)
    mine = run_dir / f"rank-{process.rank}.json"
    payload = {"key": key, "rank": process.rank, "world_size": process.world_size, "records": records}
    temporary = run_dir / f".rank-{process.rank}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
    os.replace(temporary, mine)  # atomic: process 0 never reads half a file
    if not process.is_main:
        return None

    wanted = {rank: run_dir / f"rank-{rank}.json" for rank in range(process.world_size)}
    deadline = time.monotonic() + timeout
    while not all(path.is_file() for path in wanted.values()) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
    gathered: list[dict[str, Any]] = []
    for rank, path in wanted.items():
        try:
            if path.stat().st_mtime < process.started - STALE_SLACK_SECONDS:
                raise OSError(f"{path} is older than this run")  # left by a crashed earlier run
            part = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.error("process %d did not report within %.0f s (%s)", rank, timeout, path)
            gathered.append(_missing_rank(rank, path))
            continue
        if part.get("key") != key or part.get("world_size") != process.world_size:
            raise LayerAnimError(f"{path} belongs to another run; remove {run_dir} and re-run.")
        gathered.extend(part["records"])
    for path in wanted.values():
        path.unlink(missing_ok=True)
    try:
        run_dir.rmdir()
        run_dir.parent.rmdir()
    except OSError:
        pass  # another run's reports are still there
    return gathered


def _missing_rank(rank: int, path: Path) -> dict[str, Any]:
    return {
        "index": -1 - rank,
        "prompt": "",
        "status": "failed",
        "output": None,
        "manifest": None,
        "seed": 0,
        "error": f"process {rank} did not report its results ({path}); its items may be unrendered",
        "seconds": 0.0,
        "source": f"rank {rank}",
    }


def combine(records: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Records in batch order (each item once) and the exit code: 0 when no item failed, else 1."""
    by_index: dict[int, dict[str, Any]] = {}
    for record in records:
        index = int(record["index"])
        if index in by_index:
            raise LayerAnimError(
                f"item {index} was rendered by more than one process; check that every process ran with "
                "the same batch file, shard and launcher settings."
            )
        by_index[index] = dict(record)
    ordered = [by_index[index] for index in sorted(by_index)]
    exit_code = 1 if any(record.get("status") == "failed" for record in ordered) else 0
    return ordered, exit_code
