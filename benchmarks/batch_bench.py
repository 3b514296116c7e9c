"""Batch throughput: the same short scenarios with 1 worker and with 2, in turns per minute.

    .venv/bin/python benchmarks/batch_bench.py [--jobs 4] [--turns 2] [--workers 1 2] [--executor local|ray]

Each measurement is one `teachback batch` command, timed from start to exit (so it includes each run's
start-up: imports, the managed llama.cpp server, the in-process student), over `--jobs` runs that cycle
through the bundled scenarios. Turns are counted from each run's `RunFinished`. Memory and the quiz are
off, so every worker count does the same work and only dialogue turns count. The load average before
each measurement is printed: other processes on the machine take cores from the runs.

What to expect: one run keeps about one core busy. Its model calls take turns (student, then teacher,
then judge), the student runs in-process and the teacher and judge share one server, each with one
llama.cpp thread on a 2-core machine (`default_threads`: all cores but one). So two runs side by side can
use both cores, and the speed-up is bounded by min(workers, cores) and lowered by start-up work that
competes for the same cores, and by whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCENARIOS = ("invented-domain", "skill-procedure")


def measure(workers: int, jobs: int, turns: int, executor: str, folder: Path) -> tuple[float, int, float]:
    """(seconds, turns done, load average before) of one batch with `workers` at once."""
    from teachback.scenarios.batch import Batch
    from teachback.scenarios.batch_summary import last_finish

    scenarios = [SCENARIOS[i % len(SCENARIOS)] for i in range(jobs)]
    out = folder / f"workers-{workers}"
    load = os.getloadavg()[0]
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
    if result.returncode != 0:
        sys.exit(f"batch with {workers} workers failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    done = 0
    for job in Batch.load(out).jobs:
        finish = last_finish(out / job.run_dir)
        done += finish.turns if finish else 0
    return seconds, done, load


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4, help="runs per batch (default 4)")
    parser.add_argument("--turns", type=int, default=2, help="turns per run (default 2)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    parser.add_argument("--executor", choices=["local", "ray"], default="local")
    args = parser.parse_args()

    print(f"{args.jobs} runs x {args.turns} turns, {args.executor} executor, {os.cpu_count()} CPUs")
    print(f"{'workers':>7}  {'seconds':>8}  {'turns':>5}  {'turns/min':>9}  {'load before':>11}")
    rates = {}
    with tempfile.TemporaryDirectory(prefix="teachback-batch-bench-") as tmp:
        for workers in args.workers:
            seconds, turns, load = measure(workers, args.jobs, args.turns, args.executor, Path(tmp))
            rates[workers] = turns / seconds * 60
            print(f"{workers:>7}  {seconds:>8.1f}  {turns:>5}  {rates[workers]:>9.2f}  {load:>11.2f}")
    base = min(rates)
    for workers in sorted(rates):
        if workers != base:
            print(f"speed-up with {workers} workers over {base}: {rates[workers] / rates[base]:.2f}x")


if __name__ == "__main__":
    main()
