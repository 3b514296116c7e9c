"""The Ray executor: each attempt of a batch is a Ray task on a cluster, or on a local Ray.

    executor = RayExecutor(concurrency=4, address="ray://head:10001")   # or address=None: a local Ray
    run_batch(batch, executor)

The task runs the same `teachback run` subprocess as the local executor, in a temporary run folder on the
worker. A worker's disk is not the driver's, so the run folder travels as bytes: the transcript goes out
with a resumed attempt, and every file of the run folder (transcript, logs, quiz and fine-tune JSON,
adapters) comes back as the task's return value and is written into the batch folder. On a local Ray the
disks are the same, and the files still travel that way, so the cluster path is the one tested.

Ray is imported here only, when the executor is built; without it the batch says what to install.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from teachback.errors import BatchError
from teachback.scenarios.batch import (
    TEACHBACK,
    Attempt,
    Outcome,
    attempt_error,
    read_files,
    start_attempt,
    stop_process,
)
from teachback.transcripts.run_folder import RunFolder

INSTALL_HINT = "--executor ray needs Ray: pip install 'teachback[ray]'"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BatchError(INSTALL_HINT) from None
    return ray


def run_shipped(attempt: Attempt, files: dict[str, bytes], command: list[str] | None = None) -> Outcome:
    """Run an attempt in a fresh temporary run folder holding `files`; return its outcome and every file.

    What a Ray task does on its worker; Ctrl-C (a cancelled task) stops the run cleanly first.
    """
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="teachback-batch-") as tmp:
        run_dir = Path(tmp) / attempt.job
        run_dir.mkdir()
        for name, data in files.items():
            (run_dir / name).write_bytes(data)
        proc = start_attempt(attempt, run_dir, command or TEACHBACK)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            stop_process(proc)
            raise
        error = attempt_error(code, run_dir, attempt.number)
        return Outcome(attempt.job, code, error, time.monotonic() - began, read_files(run_dir))


class RayExecutor:
    """Attempts as Ray tasks, at most `concurrency` in flight; `num_cpus` per task (default 1)."""

    def __init__(
        self,
        concurrency: int = 1,
        address: str | None = None,
        num_cpus: float = 1,
        command: list[str] | None = None,
        init_options: dict[str, Any] | None = None,
    ):
        ray = import_ray()
        self.concurrency = concurrency
        self._ray = ray
        self._command = command
        self._refs: dict[Any, str] = {}  # task -> job
        options: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if address:
            options["address"] = address
        else:  # a local Ray sized to the batch, and modest: the runs need the memory, not the object store
            options.update(num_cpus=max(concurrency * num_cpus, 1), object_store_memory=256 * 1024**2)
        options.update(init_options or {})
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            try:
                ray.init(**options)
            except Exception as exc:  # noqa: BLE001 - any failure to connect is the user's to fix
                where = address or "a local Ray"
                raise BatchError(f"cannot start or reach {where}: {str(exc).splitlines()[0]}") from None
        self._task = ray.remote(num_cpus=num_cpus, max_retries=0)(run_shipped)

    def start(self, attempt: Attempt, run_dir: Path) -> None:
        files = read_files(run_dir, [RunFolder(run_dir).transcript.name]) if attempt.resume else {}
        ref = self._task.remote(attempt, files, self._command)
        self._refs[ref] = attempt.job

    def wait(self) -> list[Outcome]:
        if not self._refs:
            return []
        done, _ = self._ray.wait(list(self._refs), num_returns=1)
        return [self._outcome(ref) for ref in done]

    def stop(self) -> list[Outcome]:
        """Cancel the running tasks (each stops its run with Ctrl-C); their jobs go back to pending."""
        for ref in self._refs:
            self._ray.cancel(ref)
        done, _ = (
            self._ray.wait(list(self._refs), num_returns=len(self._refs), timeout=60)
            if self._refs
            else ([], [])
        )
        outcomes = [self._outcome(ref) for ref in done]
        self._refs.clear()
        return outcomes

    def close(self) -> None:
        if self._refs:
            self.stop()
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False

    def _outcome(self, ref: Any) -> Outcome:
        job = self._refs.pop(ref)
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.TaskCancelledError:
            return Outcome(job, 130, "stopped", 0.0)
        except self._ray.exceptions.RayError as exc:
            return Outcome(job, 1, f"Ray task failed: {str(exc).splitlines()[0]}", 0.0)
