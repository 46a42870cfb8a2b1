"""The README's main job under a one-core CPU hog, with the thread policy against today's default.

Four cases, each a fresh `layeranim generate "…" --preset tiny` process, timed interleaved in rotating
order (so load from other processes lands on all cases alike):

- default, idle:   `python -m layeranim generate …` with OMP_NUM_THREADS / OMP_WAIT_POLICY unset;
- policy, idle:    the same command after `layeranim.threads.apply_thread_policy()` ran before torch;
- default, hog / policy, hog: the same two while one extra process spins on one core.

The issue's goals, printed as ratios: the policy under the hog at most 1.3× its idle time, and the policy
never slower than the default on an idle machine. On a shared machine "idle" means "without our hog": say
what else was running when quoting. `--quick` renders 8 frames with 10 steps instead of the README job.

    .venv/bin/python benchmarks/bench_threads.py --repeats 2           # about 5–10 min on 2 busy cores
    .venv/bin/python benchmarks/bench_threads.py --quick --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from _util import print_table

SRC = Path(__file__).resolve().parents[1] / "src"
# The CLI entry with the policy in front: what the integrated CLI entry point will do.
WITH_POLICY = (
    "import sys; from layeranim.threads import apply_thread_policy; apply_thread_policy(); "
    "from layeranim.cli import main; sys.argv[0] = 'layeranim'; main()"
)
HOG = "while True: pass"


@contextmanager
def cpu_hog(active: bool) -> Iterator[None]:
    """One process spinning on one core while the block runs (nothing when not `active`)."""
    if not active:
        yield
        return
    hog = subprocess.Popen([sys.executable, "-c", HOG])
    try:
        time.sleep(0.5)  # let it get scheduled before the timed run starts
        yield
    finally:
        hog.kill()
        hog.wait()


def run_generate(policy: bool, job: list[str], output: Path) -> float:
    """Seconds for one `generate` process (start-up, loading and rendering included)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH", "")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    entry = ["-c", WITH_POLICY] if policy else ["-m", "layeranim"]
    command = [sys.executable, *entry, "generate", *job, "-o", str(output), "--overwrite", "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"Error: {' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per case (default 2)")
    parser.add_argument("--quick", action="store_true", help="8 frames, 10 steps (default: the README job)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    job = ["a paper lantern swaying", "--preset", "tiny", "--seed", "0"]
    if args.quick:
        job += ["--frames", "8", "--steps", "10", "--image-steps", "10"]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print("# generate --preset tiny under a one-core CPU hog: thread policy vs today's default")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"machine: {cpus} CPUs, 1-min load before the run {os.getloadavg()[0]:.1f}")
    print(f"job: layeranim generate {' '.join(job[:1])!r} {' '.join(job[1:])}")
    print(
        f"settings: {args.repeats} interleaved timed run(s) per case, 1 untimed warm-up (builds the preset)"
    )
    print()

    cases = [(policy, hog) for hog in (False, True) for policy in (False, True)]
    seconds: dict[tuple[bool, bool], list[float]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "out.webm"
        run_generate(True, job, output)  # warm-up: the tiny preset, file caches
        for round_index in range(args.repeats):
            shift = round_index % len(cases)
            for policy, hog in cases[shift:] + cases[:shift]:
                with cpu_hog(hog):
                    seconds[(policy, hog)].append(run_generate(policy, job, output))

    median = {case: statistics.median(values) for case, values in seconds.items()}
    rows = []
    for policy, hog in cases:
        values = seconds[(policy, hog)]
        rows.append(
            (
                "policy" if policy else "default",
                "one-core hog" if hog else "no hog",
                f"{median[(policy, hog)]:.1f}",
                ", ".join(f"{v:.1f}" for v in values),
            )
        )
    print_table(("threads", "load", "s (median)", "runs"), rows)
    print()
    hog_ratio = median[(True, True)] / median[(True, False)]
    idle_ratio = median[(True, False)] / median[(False, False)]
    print(f"policy, hog vs no hog:            {hog_ratio:.2f}× (goal ≤ 1.30×)")
    print(f"policy vs default, no hog:        {idle_ratio:.2f}× (goal ≤ 1.00×, lower is faster)")
    print(f"policy vs default, one-core hog:  {median[(True, True)] / median[(False, True)]:.2f}×")


if __name__ == "__main__":
    main()
