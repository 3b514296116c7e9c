"""`teachback batch`: many scenarios at once, each an independent run, here or on a Ray cluster.

    teachback batch SCENARIO... [--concurrency N] [--executor local|ray] [--ray-address ADDR]
                    [--memory-url URL | --memory-dir DIR | --no-memory] [--turns N] [--retries N] [--no-quiz]
                    [--teacher M] [--student M] [--judge M] [--seed N] [--out DIR]
    teachback batch --resume BATCH_DIR [--concurrency N] [--executor ...]

Everything is checked before anything runs (every scenario, the executor, the memory server). Exit 0 when
every run is done, 1 when some failed after their retries, 2 for a mistake in the command, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from teachback.errors import BatchError

DEFAULT_BATCHES_DIR = Path("transcripts") / "batches"
EXIT_FAILED_RUNS = 1
EXIT_INTERRUPTED = 130


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("batch", help="run many scenarios at once, on this machine or a Ray cluster")
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario files or bundled names")
    p.add_argument("--concurrency", type=_at_least(1), help="runs at once (default 1)")
    p.add_argument(
        "--executor", choices=["local", "ray"], help="subprocesses here, or Ray tasks (default local)"
    )
    p.add_argument(
        "--ray-address", metavar="ADDR", help="a Ray cluster (ray.init address); default a local Ray"
    )
    p.add_argument("--turns", type=_at_least(1), help="dialogue turns of every run (overrides the scenarios)")
    p.add_argument("--retries", type=_at_least(0), help="tries again after a failed run (default 1)")
    p.add_argument("--seed", type=int, help="random seed of every run")
    p.add_argument("--no-quiz", action="store_true", default=None, help="skip the scenarios' quizzes")
    for role in ("teacher", "student", "judge"):
        p.add_argument(f"--{role}", metavar="MODEL", help=f"the {role}'s model string for every run")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--memory-url",
        metavar="URL",
        help="a shared chroma server, http://host:port (its token, if any, in $TEACHBACK_MEMORY_TOKEN)",
    )
    where.add_argument("--memory-dir", type=Path, metavar="DIR", help="a local memory folder")
    where.add_argument("--no-memory", action="store_true", help="do not store accepted turns")
    p.add_argument("--out", type=Path, help="the batch folder (default transcripts/batches/<time>/)")
    p.add_argument("--resume", type=Path, metavar="BATCH_DIR", help="finish the runs of a batch not done")
    p.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    from rich.console import Console

    from teachback.scenarios.batch import PLAN, Batch, Job, job_names, run_batch
    from teachback.scenarios.batch_summary import render

    if args.resume is not None:
        if args.scenarios or args.out:
            raise BatchError(
                "--resume BATCH_DIR finishes the batch it names: give no scenarios or --out with it"
            )
        batch = Batch.load(args.resume)  # jobs a killed batch left `running` come back `interrupted`
        owner = batch.owned_elsewhere()
        if owner is not None:
            raise BatchError(
                f"{args.resume} is being run by process {owner}: let it finish, or stop it first"
            )
        options = _override(batch.options, args)
        scenarios = [job.scenario for job in batch.jobs if job.status != "done"]
    else:
        if not args.scenarios:
            raise BatchError(
                "batch: name one or more scenarios (files or bundled names), or --resume BATCH_DIR"
            )
        options = _override(None, args)
        scenarios = [_resolve(name) for name in args.scenarios]
    _check_scenarios(scenarios)
    _check_options(options)
    out = args.resume or args.out or DEFAULT_BATCHES_DIR / time.strftime("%Y%m%d-%H%M%S")
    if args.resume is None and (out / PLAN).exists():
        raise BatchError(f"{out} already holds a batch: finish it with `teachback batch --resume {out}`")
    executor = _make_executor(options)
    try:
        if args.resume is None:
            names = job_names(scenarios)
            jobs = [Job(name, scenario) for name, scenario in zip(names, scenarios, strict=True)]
            batch = Batch.create(out, jobs, options)
        else:
            batch.options = options
            batch.save()
        console = Console(highlight=False, soft_wrap=False)
        try:
            with _memory_for_runs(options, batch.dir) as (run_options, token):
                run_batch(
                    batch,
                    executor,
                    report=lambda line: console.print(line, markup=False),
                    run_options=run_options,
                    memory_token=token,
                )
        except KeyboardInterrupt:
            render(batch, console)
            console.print(
                f"interrupted: finish it with `teachback batch --resume {batch.dir}`", style="yellow"
            )
            return EXIT_INTERRUPTED
    finally:
        executor.close()
    render(batch, console)
    print(batch.dir)
    return 0 if all(job.status == "done" for job in batch.jobs) else EXIT_FAILED_RUNS


def _override(options: Any, args: argparse.Namespace) -> Any:
    """The batch options: those saved (or the defaults), replaced by each one given on the command line."""
    from teachback.scenarios.batch import BatchOptions

    base = options or BatchOptions()
    given: dict[str, Any] = {
        name: getattr(args, name)
        for name in (
            "turns",
            "seed",
            "retries",
            "concurrency",
            "executor",
            "ray_address",
            "memory_url",
            "no_quiz",
        )
        if getattr(args, name) is not None
    }
    models = {role: getattr(args, role) for role in ("teacher", "student", "judge") if getattr(args, role)}
    if models:
        given["models"] = {**base.models, **models}
    if args.memory_dir is not None:
        given["memory_dir"] = str(args.memory_dir.expanduser().resolve())
    if args.memory_url or args.memory_dir is not None or args.no_memory:  # the one memory choice, replaced
        given.setdefault("memory_url", None)
        given.setdefault("memory_dir", None)
        given["no_memory"] = bool(args.no_memory)
    return dataclasses.replace(base, **given)


def _resolve(name: str) -> str:
    """A scenario file as an absolute path (runs start elsewhere), a bundled name as it is."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_file() else name


def _check_scenarios(scenarios: list[str]) -> None:
    """Load every scenario; report every problem of every file at once, before anything runs."""
    from teachback.errors import ScenarioError
    from teachback.scenarios.loader import find_scenario, load_scenario

    problems: list[str] = []
    for name in dict.fromkeys(scenarios):
        try:
            load_scenario(find_scenario(name))
        except ScenarioError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ScenarioError(problems)


def _check_options(options: Any) -> None:
    if options.ray_address and options.executor != "ray":
        raise BatchError("--ray-address needs --executor ray")
    if options.executor == "ray" and options.ray_address and not (options.memory_url or options.no_memory):
        raise BatchError(
            "runs on a Ray cluster share their memory through a server the workers reach: "
            "give --memory-url http://host:port (a `chroma run`), or --no-memory"
        )
    if options.memory_url:
        from teachback.memory.store import MemoryStore

        MemoryStore.open(url=options.memory_url)  # unreachable: one MemoryStoreError line, exit 2


def _make_executor(options: Any) -> Any:
    if options.executor == "ray":
        from teachback.scenarios.batch_ray import RayExecutor

        return RayExecutor(concurrency=options.concurrency, address=options.ray_address)
    from teachback.scenarios.batch import LocalExecutor

    return LocalExecutor(concurrency=options.concurrency)


@contextlib.contextmanager
def _memory_for_runs(options: Any, batch_dir: Path) -> Iterator[tuple[Any, str | None]]:
    """The options the runs get, and the memory token for their environment: a local memory folder is
    served on loopback, behind a fresh token, while runs overlap (memory/chroma_server.py).

    So is a lone Ray run's: a Ray worker does not start in this folder. A server of your own
    (`--memory-url`) gets the token in this environment's $TEACHBACK_MEMORY_TOKEN, if any.
    """
    import os

    from teachback.memory.chroma_server import ChromaServer
    from teachback.memory.store import DEFAULT_DIR, MEMORY_TOKEN_ENV

    if options.no_memory or options.memory_url or (options.executor == "local" and options.concurrency < 2):
        own_server = options.memory_url and not options.no_memory
        yield None, os.environ.get(MEMORY_TOKEN_ENV) if own_server else None
        return
    folder = Path(options.memory_dir) if options.memory_dir else Path.cwd() / DEFAULT_DIR
    with ChromaServer(folder, log=batch_dir / "chroma.log") as server:
        yield dataclasses.replace(options, memory_url=server.url, memory_dir=None), server.token


def _at_least(low: int) -> Any:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse
