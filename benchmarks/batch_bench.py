"""Batch throughput: the same short scenarios with 1 worker and with 2, in turns per minute.

    .venv/bin/python benchmarks/batch_bench.py [--jobs 4] [--turns 2] [--workers 1 2] [--executor local|ray]

Each measurement is one `teachback batch` command, timed from start to exit (so it includes each run's
start-up: imports, the managed llama.cpp server, the in-process student), over `--jobs` runs that cycle
through the bundled scenarios. Turns are counted from each run's `RunFinished`. Memory and the quiz are
off, so every worker count does the same work and only dialogue turns count. The load average before
each measurement is printed (it lags: it still counts the measurement before), and the cores the
batch kept busy (its processes' CPU time / wall time): what two workers get short of 2.0 went to other
processes on the machine or to nothing (a run waiting on itself).

What to expect: one run keeps about one core busy. Its model calls take turns (student, then teacher,
then judge), the student runs in-process and the teacher and judge share one server, each with one
llama.cpp thread on a 2-core machine (`default_threads`: all cores but one). So two runs side by side can
use both cores, and the speed-up is bounded by min(workers, cores) and lowered by start-up work that
competes for the same cores, and by whatever else the machine is doing.

Measured here (2 cores, 4 runs x 2 turns, another engineer's llama.cpp server holding about one core
throughout, load 1.3 before): 1 worker 3.24 turns/min (1.04 cores busy, 37 s a run), 2 workers 4.70
turns/min (1.22 cores busy, 40 s a run): 1.45x. Two runs had about one free core between them, so each
ran a little slower, but one run's waits (start-up, HTTP to its server, the student and the server
taking turns) were filled by the other's work; on an idle machine the second core is free too.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIOS = ("invented-domain", "skill-procedure")


def measure(workers: int, jobs: int, turns: int, executor: str, folder: Path) -> dict[str, float]:
    """Seconds, turns done, cores the batch kept busy, mean seconds of a run, load average before."""
    from teachback.scenarios.batch import Batch
    from teachback.scenarios.batch_summary import last_finish

    scenarios = [SCENARIOS[i % len(SCENARIOS)] for i in range(jobs)]
    out = folder / f"workers-{workers}"
    load = os.getloadavg()[0]
    cpu = _children_cpu()
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "teachback.cli", "batch", *scenarios, "--turns", str(turns)]
        + ["--concurrency", str(workers), "--executor", executor, "--no-memory", "--no-quiz"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        cwd=folder,
    )
    seconds = time.perf_counter() - began
    cpu = _children_cpu() - cpu  # every process of the batch: runs, their servers (Ray workers are not)
    if result.returncode != 0:
        sys.exit(f"batch with {workers} workers failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    done = 0
    batch = Batch.load(out)
    for job in batch.jobs:
        finish = last_finish(out / job.run_dir)
        done += finish.turns if finish else 0
    per_run = sum(job.seconds for job in batch.jobs) / len(batch.jobs)
    return {"seconds": seconds, "turns": done, "cores": cpu / seconds, "per_run": per_run, "load": load}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="runs per batch (default 4)")
    parser.add_argument("--turns", type=int, default=2, help="turns per run (default 2)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    parser.add_argument("--executor", choices=["local", "ray"], default="local")
    args = parser.parse_args()

    print(f"{args.jobs} runs x {args.turns} turns, {args.executor} executor, {os.cpu_count()} CPUs")
    print("workers  seconds  turns  turns/min  cores busy  s per run  load before")
    rates = {}
    with tempfile.TemporaryDirectory(prefix="teachback-batch-bench-") as tmp:
        for workers in args.workers:
            m = measure(workers, args.jobs, args.turns, args.executor, Path(tmp))
            rates[workers] = m["turns"] / m["seconds"] * 60
            print(
                f"{workers:>7}  {m['seconds']:>7.1f}  {m['turns']:>5.0f}  {rates[workers]:>9.2f}  "
                f"{m['cores']:>10.2f}  {m['per_run']:>9.1f}  {m['load']:>11.2f}"
            )
    base = min(rates)
    for workers in sorted(rates):
        if workers != base:
            print(f"speed-up with {workers} workers over {base}: {rates[workers] / rates[base]:.2f}x")


if __name__ == "__main__":
    main()
