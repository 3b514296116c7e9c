"""A memory folder served to many runs at once: `chroma run` on loopback for as long as a batch runs.

    with ChromaServer(Path(".teachback/memory"), log=batch_dir / "chroma.log") as server:
        server.url                                   # http://127.0.0.1:<free port>

A chromadb folder belongs to one process at a time, so concurrent runs that share a local memory reach it
through one server instead (about 1.5 s to start). A shared server of your own (`--memory-url`) needs
none of this; a Ray cluster's workers need one they can reach.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from teachback.errors import MemoryStoreError

HEARTBEAT = "/api/v2/heartbeat"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def chroma_command() -> list[str]:
    """The `chroma` CLI that comes with chromadb, run by this interpreter."""
    return [sys.executable, "-c", "from chromadb.cli.cli import app; app()"]


def wait_for_heartbeat(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + HEARTBEAT, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise MemoryStoreError(f"the chroma server for the batch exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise MemoryStoreError(f"the chroma server at {url} did not answer within {timeout:.0f} s")
        time.sleep(0.1)


class ChromaServer:
    """`chroma run --path FOLDER` on a free loopback port, stopped on exit (also on Ctrl-C)."""

    def __init__(self, folder: Path, log: Path, host: str = "127.0.0.1", port: int | None = None):
        self.folder = folder.expanduser().resolve()
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ChromaServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = ["run", "--path", str(self.folder), "--host", self.host, "--port", str(self.port)]
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(
                [*chroma_command(), *args], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for_heartbeat(self.url, self._proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
