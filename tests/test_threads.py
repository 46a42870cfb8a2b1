"""The CPU thread policy (layeranim.threads): affinity masks, cgroup quotas, overrides, the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from layeranim.errors import UsageError
from layeranim.threads import busy_cpus, cgroup_cpu_quota, choose_threads, cpu_budget, free_cpus

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Runs in a fresh interpreter: pin to the given CPUs, then apply the policy before torch is imported.
PROBE = """
import json, os, sys
os.sched_setaffinity(0, set(json.loads(sys.argv[1])))
from layeranim.threads import apply_thread_policy, cpu_budget
threads = json.loads(sys.argv[2])
budget = cpu_budget()
policy = apply_thread_policy(threads, load_aware=False)  # the machine's other load must not decide here
import torch
print(json.dumps({"budget": budget, "threads": policy.threads, "torch": torch.get_num_threads(),
                  "source": policy.source, "wait": os.environ.get("OMP_WAIT_POLICY"),
                  "env_applied": policy.env_applied}))
"""


def probe(cpus: list[int], threads: int | None = None, **env: str) -> dict[str, object]:
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    environment.update(PYTHONPATH=SRC, **env)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(cpus), json.dumps(threads)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity masks here")


@needs_affinity
def test_policy_respects_an_affinity_mask() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    one = probe(cpus[:1])
    assert one == {
        "budget": 1,
        "threads": 1,
        "torch": 1,
        "source": "cpu budget",
        "wait": "PASSIVE",
        "env_applied": True,
    }
    if len(cpus) >= 2:
        two = probe(cpus[:2])
        assert (two["budget"], two["threads"], two["torch"]) == (2, 2, 2)


@needs_affinity
def test_explicit_threads_and_user_environment_win() -> None:
    cpus = sorted(os.sched_getaffinity(0))[:1]
    forced = probe(cpus, threads=3)
    assert (forced["threads"], forced["torch"], forced["source"]) == (3, 3, "threads")
    from_env = probe(cpus, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="ACTIVE")
    assert (from_env["threads"], from_env["source"], from_env["wait"]) == (2, "OMP_NUM_THREADS", "ACTIVE")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_takes_the_tightest_limit_up_the_tree(tmp_path: Path) -> None:
    proc = tmp_path / "proc_cgroup"
    write(proc, "0::/ci/job\n")
    write(tmp_path / "cg" / "cpu.max", "max 100000\n")
    write(tmp_path / "cg" / "ci" / "cpu.max", "300000 100000\n")
    write(tmp_path / "cg" / "ci" / "job" / "cpu.max", "150000 100000\n")
    assert cgroup_cpu_quota(tmp_path / "cg", proc) == pytest.approx(1.5)
    assert cpu_budget(tmp_path / "cg", proc) == 1  # 1.5 CPUs of time: one unthrottled thread
    write(tmp_path / "cg" / "ci" / "job" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_quota(tmp_path / "cg", proc) == pytest.approx(3.0)


def test_cgroup_v1_quota_and_no_limit(tmp_path: Path) -> None:
    proc = tmp_path / "proc_cgroup"
    write(proc, "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n")
    controller = tmp_path / "cg" / "cpu,cpuacct" / "docker" / "abc"
    write(controller / "cpu.cfs_quota_us", "200000\n")
    write(controller / "cpu.cfs_period_us", "100000\n")
    assert cgroup_cpu_quota(tmp_path / "cg", proc) == pytest.approx(2.0)
    write(controller / "cpu.cfs_quota_us", "-1\n")
    assert cgroup_cpu_quota(tmp_path / "cg", proc) is None
    assert cgroup_cpu_quota(tmp_path / "cg", tmp_path / "missing") is None


def test_bad_thread_counts_are_usage_errors() -> None:
    for bad in (0, -2, True, 1.5):
        with pytest.raises(UsageError, match="threads"):
            choose_threads(bad)  # type: ignore[arg-type]


def test_load_awareness_leaves_busy_cpus_to_their_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stat = tmp_path / "stat"
    write(stat, "cpu  1 2 3\nprocs_running 2\nprocs_blocked 0\n")  # us + a one-core hog
    assert busy_cpus(stat, samples=3, interval=0) == 1
    assert free_cpus(2, stat) == 1
    write(stat, "procs_running 9\n")  # an overloaded machine still gets one thread
    assert free_cpus(2, stat) == 1
    write(stat, "procs_running 1\n")
    assert free_cpus(2, stat) == 2
    assert busy_cpus(tmp_path / "missing") is None

    import layeranim.threads as threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "cpu_budget", lambda: 2)
    monkeypatch.setattr(threads, "free_cpus", lambda: 1)
    assert choose_threads() == (1, "cpu budget, 1 CPU(s) busy with other processes", 2)
    assert choose_threads(load_aware=False) == (2, "cpu budget", 2)
    assert choose_threads(2) == (2, "threads", 2)  # an explicit count is not second-guessed
