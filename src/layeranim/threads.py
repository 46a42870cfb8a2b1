"""The CPU thread policy, chosen in one place: how many threads torch may use, and how they wait.

Left alone, torch sizes its OpenMP pool from the machine's cores and OpenMP's threads spin while they wait
for work. On a shared machine (a CI runner, a cgroup-limited container, a busy 2-core box) that is the
worst of both: more threads than the process may run, each burning its time slice spinning. The policy:

- the thread count is `cpu_budget()`: the CPUs this process may actually run on (its affinity mask),
  capped by a cgroup CPU quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us / cpu.cfs_period_us`, rounded
  down, at least 1), and, when `load_aware`, by the CPUs not already busy with other runnable processes
  when the run starts (`procs_running` in /proc/stat, sampled briefly): an OpenMP region waits for its
  slowest thread, so a thread that shares a core with another busy process makes every operation wait
  for it; an explicit `threads` wins, then a user's `OMP_NUM_THREADS`;
- OpenMP threads sleep instead of spinning while they wait (`OMP_WAIT_POLICY=PASSIVE`, unless the user
  set it). OpenMP reads that variable once, when torch loads it: `configure_env_before_torch()` must run
  before the first `import torch` in the process. The CLI entry point calls it first thing; library users
  who want it call it before importing torch (or set the variable in their environment).

`apply_thread_policy(threads)` does both (the environment part only takes effect if torch is not imported
yet) and then sets torch's intra-op and inter-op thread counts.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from layeranim.errors import UsageError

logger = logging.getLogger(__name__)

WAIT_POLICY = "PASSIVE"
MAX_INTEROP_THREADS = 4  # inter-op parallelism is rare in inference; a few threads are plenty
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")
_PROC_STAT = Path("/proc/stat")
LOAD_SAMPLES = 5  # /proc/stat samples, LOAD_SAMPLE_SECONDS apart: one snapshot is too noisy
LOAD_SAMPLE_SECONDS = 0.02


@dataclass(frozen=True)
class ThreadPolicy:
    """What `apply_thread_policy` chose, and why."""

    threads: int
    interop_threads: int | None  # None: torch's inter-op pool was already running and kept its size
    budget: int
    source: str  # "threads" (explicit), "OMP_NUM_THREADS" (the user's environment) or "cpu budget"
    wait_policy: str | None  # OMP_WAIT_POLICY as OpenMP saw it (None: unset)
    env_applied: bool  # False: torch was imported before the environment could be set

    def describe(self) -> str:
        wait = self.wait_policy or "OpenMP default (spinning)"
        late = "" if self.env_applied else " (torch was imported first: OMP_WAIT_POLICY could not be set)"
        return (
            f"{self.threads} torch thread(s) from {self.source} (CPU budget {self.budget}), "
            f"OpenMP wait policy {wait}{late}"
        )


# ---------------------------------------------------------------------------------------------------
# How many CPUs this process may use.


def affinity_cpus() -> int:
    """The CPUs in this process's affinity mask (all CPUs where the OS has no affinity call)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cgroup_cpu_quota(cgroup_root: Path = _CGROUP_ROOT, proc_cgroup: Path = _PROC_CGROUP) -> float | None:
    """CPUs' worth of time this process's cgroup may use (tightest limit up its tree); None: unlimited."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not hierarchy or not path:
            continue
        relative = path.strip().lstrip("/")
        if controllers == "":  # cgroup v2 unified hierarchy
            limits += _v2_limits(cgroup_root, relative)
        elif "cpu" in controllers.split(","):  # cgroup v1 cpu controller
            limits += _v1_limits(cgroup_root / controllers, relative)
            limits += _v1_limits(cgroup_root / "cpu", relative)
    return min(limits) if limits else None


def _ancestors(base: Path, relative: str) -> list[Path]:
    parts = [part for part in relative.split("/") if part]
    return [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _v2_limits(root: Path, relative: str) -> list[float]:
    limits = []
    for folder in _ancestors(root, relative):
        try:
            quota, _, period = (folder / "cpu.max").read_text().strip().partition(" ")
        except OSError:
            continue
        if quota != "max" and quota.isdigit() and period.isdigit() and int(period) > 0:
            limits.append(int(quota) / int(period))
    return limits


def _v1_limits(controller_root: Path, relative: str) -> list[float]:
    limits = []
    for folder in _ancestors(controller_root, relative):
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text().strip())
            period = int((folder / "cpu.cfs_period_us").read_text().strip())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            limits.append(quota / period)
    return limits


def cpu_budget(cgroup_root: Path = _CGROUP_ROOT, proc_cgroup: Path = _PROC_CGROUP) -> int:
    """The CPUs this process may actually use: its affinity mask, capped by a cgroup CPU quota (rounded
    down: a 1.5-CPU quota runs one thread unthrottled, two threads throttled), at least 1."""
    budget = affinity_cpus()
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        budget = min(budget, max(1, math.floor(quota)))
    return budget


def busy_cpus(
    proc_stat: Path = _PROC_STAT, samples: int = LOAD_SAMPLES, interval: float = LOAD_SAMPLE_SECONDS
) -> int | None:
    """CPUs kept busy by other runnable threads right now: the median of a few `procs_running` samples
    minus this thread (None where /proc/stat is not readable)."""
    counts = []
    for sample in range(samples):
        if sample:
            time.sleep(interval)
        try:
            text = proc_stat.read_text()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("procs_running "):
                counts.append(int(line.split()[1]))
                break
    if not counts:
        return None
    return max(0, int(statistics.median(counts)) - 1)


def free_cpus(machine_cpus: int | None = None, proc_stat: Path = _PROC_STAT) -> int | None:
    """CPUs of the machine not busy with other runnable threads (at least 1; None: unknown)."""
    busy = busy_cpus(proc_stat)
    if busy is None:
        return None
    total = machine_cpus if machine_cpus is not None else (os.cpu_count() or 1)
    return max(1, total - busy)


# ---------------------------------------------------------------------------------------------------
# Applying it.


def _check_threads(threads: int | None) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(
            f"threads {threads!r} must be a whole number of at least 1 (or None for the CPU budget)."
        )


def _user_omp_threads() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not value:
        return None
    try:
        count = int(value.split(",")[0])
    except ValueError:
        logger.warning("ignoring OMP_NUM_THREADS=%r: not a number", value)
        return None
    return count if count >= 1 else None


def configure_env_before_torch(threads: int | None = None) -> bool:
    """Set OpenMP's environment for the policy; returns False (and changes nothing) once torch is imported.

    `OMP_WAIT_POLICY=PASSIVE` unless the user set it; with an explicit `threads`, `OMP_NUM_THREADS` too
    (an explicit count wins over the environment). Call it before the first `import torch`.
    """
    _check_threads(threads)
    if "torch" in sys.modules:
        return False
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    return True


def choose_threads(threads: int | None = None, *, load_aware: bool = True) -> tuple[int, str, int]:
    """(thread count, where it came from, CPU budget): explicit `threads`, else the user's
    `OMP_NUM_THREADS`, else `cpu_budget()`, lowered to the CPUs other processes leave free when
    `load_aware`."""
    _check_threads(threads)
    budget = cpu_budget()
    if threads is not None:
        if threads > budget:
            logger.warning("threads=%d is more than the %d CPU(s) this process may use", threads, budget)
        return threads, "threads", budget
    from_env = _user_omp_threads()
    if from_env is not None:
        return from_env, "OMP_NUM_THREADS", budget
    if load_aware:
        free = free_cpus()
        if free is not None and free < budget:
            return free, f"cpu budget, {budget - free} CPU(s) busy with other processes", budget
    return budget, "cpu budget", budget


def apply_thread_policy(threads: int | None = None, *, load_aware: bool = True) -> ThreadPolicy:
    """Choose the thread count, set OpenMP's environment (if torch is not imported yet) and torch's pools."""
    env_applied = configure_env_before_torch(threads)
    count, source, budget = choose_threads(threads, load_aware=load_aware)
    import torch

    torch.set_num_threads(count)
    interop: int | None = max(1, min(count, MAX_INTEROP_THREADS))
    try:
        torch.set_num_interop_threads(interop)
    except RuntimeError:  # the inter-op pool already ran something: its size is fixed for the process
        interop = None
    policy = ThreadPolicy(
        threads=count,
        interop_threads=interop,
        budget=budget,
        source=source,
        wait_policy=os.environ.get("OMP_WAIT_POLICY") or None,
        env_applied=env_applied,
    )
    logger.debug("thread policy: %s", policy.describe())
    return policy
