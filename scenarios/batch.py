"""A batch: many scenario runs at once, each an independent `teachback run` in its own subprocess.

    batch = Batch.create(Path("b1"), [Job("invented-domain", "invented-domain")], BatchOptions(turns=1))
    run_batch(batch, LocalExecutor(), report=print)   # every job ends `done` or `failed`

    b1/batch.json          the plan and its state (version 1), replaced atomically as each attempt ends
    b1/runs/<job>/         one run folder per job: transcript.jsonl, attempt-N.log, quiz-*.json, ...

A subprocess per run: llama.cpp models and managed servers belong to one process, and a crash stays in
its run. An attempt that fails (non-zero exit) is tried again up to `retries` times, with `--resume` of
its own run folder once that holds a transcript. A batch stopped or killed part-way is finished by
`teachback batch --resume DIR`, which runs only the jobs not `done`.

A run never outlives its batch: Linux sends it SIGTERM when the batch dies, even by SIGKILL, and it stops
as on Ctrl-C. `batch.json` names the batch process that owns it (`owner`); a job still `running` whose
owner is gone is read back as `interrupted`, and a batch whose owner still runs cannot be resumed twice.

Executors run attempts: `LocalExecutor` (subprocesses here) and `RayExecutor` (scenarios/batch_ray.py,
Ray tasks that ship run folders as bytes). Both build the same command line with `run_args`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from teachback.errors import BatchError
from teachback.files import atomic_write_bytes, atomic_write_text
from teachback.processes import die_with_parent, running, this_process
from teachback.transcripts.run_folder import RunFolder

PLAN = "batch.json"
PLAN_VERSION = 1
RUNS = "runs"
TEACHBACK = [sys.executable, "-m", "teachback.cli"]
STATUSES = ("pending", "running", "interrupted", "done", "failed")


@dataclass
class BatchOptions:
    """What every run of the batch gets, and how the batch runs them."""

    turns: int | None = None
    models: dict[str, str] = field(default_factory=dict)  # role -> model string, passed to every run
    seed: int | None = None
    memory_url: str | None = None  # a shared chroma server
    memory_dir: str | None = None  # a local memory folder (served to the runs while the batch runs)
    no_memory: bool = False
    no_quiz: bool = False
    retries: int = 1
    concurrency: int = 1
    executor: str = "local"  # local | ray
    ray_address: str | None = None


@dataclass
class Job:
    """One scenario run: its state in the plan."""

    name: str  # unique in the batch; its run folder is runs/<name>
    scenario: str  # a scenario file (absolute) or a bundled scenario's name
    status: str = "pending"
    attempts: int = 0
    errors: list[str] = field(default_factory=list)  # one line per failed attempt
    seconds: float = 0.0  # all attempts together

    @property
    def run_dir(self) -> str:
        return f"{RUNS}/{self.name}"


@dataclass(frozen=True)
class Attempt:
    """One try at a job: what an executor needs to run it anywhere."""

    job: str
    scenario: str
    options: BatchOptions
    number: int
    resume: bool  # continue the transcript already in the run folder
    # the memory server's token, for the run's environment (never its command line, never batch.json)
    memory_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended. `files` is the run folder's content when it came back as bytes (Ray)."""

    job: str
    returncode: int
    error: str
    seconds: float
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        return self.returncode in (130, -signal.SIGINT)


class Executor(Protocol):
    """Runs attempts, several at once; `wait` blocks until at least one has ended."""

    concurrency: int

    def start(self, attempt: Attempt, run_dir: Path) -> None: ...
    def wait(self) -> list[Outcome]: ...
    def stop(self) -> list[Outcome]: ...  # interrupt what runs; the outcomes of those that ended
    def close(self) -> None: ...


class Batch:
    """A batch folder: the options, the jobs and their state, saved in `batch.json`."""

    def __init__(
        self,
        folder: Path,
        options: BatchOptions,
        jobs: list[Job],
        created_at: str = "",
        owner: dict[str, Any] | None = None,
    ):
        self.dir = folder
        self.options = options
        self.jobs = jobs
        self.created_at = created_at or time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.owner = owner  # the process that last ran the batch (processes.this_process), None before

    def owned_elsewhere(self) -> int | None:
        """The pid of another process that still runs this batch, or None."""
        if self.owner and running(self.owner) and self.owner != this_process():
            return int(self.owner["pid"])
        return None

    def mark_interrupted(self) -> list[Job]:
        """Jobs left `running` by a batch process that is gone (killed, crashed) become `interrupted`."""
        if running(self.owner):
            return []
        left = [job for job in self.jobs if job.status == "running"]
        for job in left:
            job.status = "interrupted"
            job.errors.append(f"attempt {job.attempts}: interrupted: its batch stopped without finishing it")
        return left

    @classmethod
    def create(cls, folder: Path, jobs: list[Job], options: BatchOptions) -> Batch:
        """A new batch in `folder` (which must not hold one already), saved before anything runs."""
        if (folder / PLAN).exists():
            raise BatchError(
                f"{folder} already holds a batch: finish it with `teachback batch --resume {folder}`"
            )
        batch = cls(folder, options, jobs)
        try:
            (folder / RUNS).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BatchError(f"cannot create batch folder {folder}: {exc.strerror}") from None
        batch.save()
        return batch

    @classmethod
    def load(cls, folder: Path) -> Batch:
        path = folder / PLAN
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("v") != PLAN_VERSION:
                raise BatchError(f"{path}: batch plan version {data.get('v')!r}; this teachback reads 1")
            known = {f.name for f in fields(BatchOptions)}
            options = BatchOptions(**{k: v for k, v in data["options"].items() if k in known})
            jobs = [Job(**job) for job in data["jobs"]]
            unknown = [job.name for job in jobs if job.status not in STATUSES]
            if unknown:
                raise BatchError(f"{path}: unknown status for {', '.join(unknown)}")
        except FileNotFoundError:
            raise BatchError(
                f"{folder}: not a batch folder (no {PLAN}); start one with `teachback batch`"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BatchError(f"{path}: not a readable batch plan ({exc})") from None
        owner = data.get("owner") if isinstance(data.get("owner"), dict) else None
        batch = cls(folder, options, jobs, data.get("created_at", ""), owner)
        batch.mark_interrupted()
        return batch

    def save(self) -> None:
        """Write batch.json atomically: a reader sees the old plan or the new one, never half of one.

        The process that saves it becomes its owner."""
        self.owner = this_process()
        data = {
            "v": PLAN_VERSION,
            "created_at": self.created_at,
            "owner": self.owner,
            "options": asdict(self.options),
            "jobs": [asdict(job) for job in self.jobs],
        }
        atomic_write_text(self.dir / PLAN, json.dumps(data, indent=2) + "\n")

    def run_dir(self, job: Job) -> Path:
        return self.dir / job.run_dir


def job_names(scenarios: Iterable[str]) -> list[str]:
    """A folder-safe name per scenario, unique in the batch: `a.yaml, b, a.yaml -> a, b, a-2`."""
    names: list[str] = []
    for scenario in scenarios:
        stem = Path(scenario).name.removesuffix(".yaml").removesuffix(".yml")
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "run"
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def run_args(attempt: Attempt, run_dir: Path) -> list[str]:
    """The `teachback run` arguments of an attempt whose run folder is `run_dir` (on whichever machine)."""
    o = attempt.options
    args = ["run", "--plain"]
    args += ["--resume", str(run_dir)] if attempt.resume else [attempt.scenario, "--out", str(run_dir)]
    if o.turns:
        args += ["--turns", str(o.turns)]
    if o.seed is not None:
        args += ["--seed", str(o.seed)]
    for role, model in sorted(o.models.items()):
        if model:
            args += [f"--{role}", model]
    if o.no_quiz:
        args.append("--no-quiz")
    if o.no_memory:
        args.append("--no-memory")
    elif o.memory_url:
        args += ["--memory-url", o.memory_url]
    elif o.memory_dir:
        args += ["--memory-dir", o.memory_dir]
    return args


def start_attempt(attempt: Attempt, run_dir: Path, command: list[str]) -> subprocess.Popen[bytes]:
    """Start an attempt as a subprocess in its own session (the batch forwards Ctrl-C once, itself).

    It gets the memory token in its environment, and SIGTERM (a clean stop, as Ctrl-C) when this
    process dies."""
    from teachback.memory.store import MEMORY_TOKEN_ENV

    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, MEMORY_TOKEN_ENV: attempt.memory_token} if attempt.memory_token else None
    with open(RunFolder(run_dir).attempt_log(attempt.number), "wb") as log:
        return subprocess.Popen(
            [*command, *run_args(attempt, run_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            preexec_fn=die_with_parent(),
        )


def attempt_error(returncode: int, run_dir: Path, number: int) -> str:
    """The one line that says why an attempt failed: the run's own `teachback: ...` line if it printed one."""
    if returncode == 0:
        return ""
    log = RunFolder(run_dir).attempt_log(number)
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    said = [line.removeprefix("teachback: ") for line in lines if line.startswith("teachback: ")]
    if said:
        return said[-1]
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return f"exit code {returncode}" + (f": {last[:200]}" if last else "")


def stop_process(proc: subprocess.Popen[bytes], grace: float = 30.0, signalled: bool = False) -> None:
    """Ctrl-C for one run: one SIGINT (its transcript is closed cleanly), then a kill if it does not stop."""
    if proc.poll() is not None:
        return
    if not signalled:
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class LocalExecutor:
    """Attempts as subprocesses on this machine, at most `concurrency` at once, in their run folders."""

    def __init__(self, concurrency: int = 1, command: list[str] | None = None, poll: float = 0.2):
        self.concurrency = concurrency
        self.command = command or TEACHBACK
        self._poll = poll
        self._running: dict[str, tuple[subprocess.Popen[bytes], Attempt, Path, float]] = {}

    def start(self, attempt: Attempt, run_dir: Path) -> None:
        proc = start_attempt(attempt, run_dir, self.command)
        self._running[attempt.job] = (proc, attempt, run_dir, time.monotonic())

    def wait(self) -> list[Outcome]:
        while self._running:
            ended = self._collect()
            if ended:
                return ended
            time.sleep(self._poll)
        return []

    def stop(self) -> list[Outcome]:
        for proc, *_ in self._running.values():  # all at once, then wait for each
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc, *_ in self._running.values():
            stop_process(proc, signalled=True)
        return self._collect()

    def close(self) -> None:
        self.stop()

    def _collect(self) -> list[Outcome]:
        ended = []
        for name, (proc, attempt, run_dir, began) in list(self._running.items()):
            code = proc.poll()
            if code is None:
                continue
            del self._running[name]
            seconds = time.monotonic() - began
            ended.append(Outcome(name, code, attempt_error(code, run_dir, attempt.number), seconds))
        return ended


def write_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Put a run folder's files that came back as bytes into the batch (each replaced atomically)."""
    for name, data in files.items():
        path = run_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BatchError(f"refusing to write {name!r} outside the run folder {run_dir}")
        atomic_write_bytes(path, data)


def read_files(run_dir: Path, names: Iterable[str] | None = None) -> dict[str, bytes]:
    """A run folder's files as bytes (all of them, or those of `names` that exist), by relative path."""
    if names is not None:
        return {n: (run_dir / n).read_bytes() for n in names if (run_dir / n).is_file()}
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def run_batch(
    batch: Batch,
    executor: Executor,
    report: Callable[[str], None] = print,
    run_options: BatchOptions | None = None,
    memory_token: str | None = None,
) -> Batch:
    """Run every job not `done`, `executor.concurrency` at a time, retrying failures; saves as it goes.

    `run_options` are what the runs get when they differ from the saved plan's (a memory served for now);
    `memory_token` goes into each run's environment.

    Ctrl-C interrupts the running attempts cleanly, puts their jobs back to `pending` and re-raises:
    `batch.json` is left ready for `--resume`.
    """
    queue = deque(job for job in batch.jobs if job.status != "done")
    tries = {job.name: 0 for job in queue}  # attempts in this session: each gets `retries` more
    jobs = {job.name: job for job in batch.jobs}
    in_flight: set[str] = set()

    def settle(outcome: Outcome) -> None:
        job = jobs[outcome.job]
        in_flight.discard(job.name)
        run_dir = batch.run_dir(job)
        if outcome.files:
            write_files(run_dir, outcome.files)
        job.seconds = round(job.seconds + outcome.seconds, 1)
        if outcome.returncode == 0:
            job.status = "done"
            report(f"{'done':<7} {job.name} ({outcome.seconds:.0f} s)")
        elif outcome.interrupted:
            job.status = "pending"
            report(f"{'stopped':<7} {job.name}")
        else:
            job.errors.append(f"attempt {job.attempts}: {outcome.error}")
            if tries[job.name] <= batch.options.retries:
                job.status = "pending"
                queue.append(job)
                report(f"{'failed':<7} {job.name}: {outcome.error}; trying again")
            else:
                job.status = "failed"
                report(f"{'failed':<7} {job.name}: {outcome.error}")
        batch.save()

    try:
        while queue or in_flight:
            while queue and len(in_flight) < max(1, executor.concurrency):
                job = queue.popleft()
                job.attempts += 1
                tries[job.name] += 1
                job.status = "running"
                run_dir = batch.run_dir(job)
                resume = RunFolder(run_dir).transcript.is_file()
                options = run_options or batch.options
                attempt = Attempt(job.name, job.scenario, options, job.attempts, resume, memory_token)
                batch.save()
                executor.start(attempt, run_dir)
                in_flight.add(job.name)
                report(f"{'resume' if resume else 'start':<7} {job.name} (attempt {job.attempts})")
            for outcome in executor.wait():
                settle(outcome)
    except KeyboardInterrupt:
        for outcome in executor.stop():
            settle(outcome)
        for job in batch.jobs:
            if job.status == "running":
                job.status = "pending"
        batch.save()
        raise
    finally:
        executor.close()
    return batch
