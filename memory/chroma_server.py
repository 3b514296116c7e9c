"""A memory folder served to many runs at once, on loopback, for as long as a batch runs (`teachback batch`).

    with ChromaServer(Path(".teachback/memory"), log=batch_dir / "chroma.log") as server:
        server.url                                   # http://127.0.0.1:<free port>
        server.token                                 # what every request must carry; runs get it in
                                                     # $TEACHBACK_MEMORY_TOKEN, never on a command line

A chromadb folder belongs to one process at a time, so concurrent runs that share a local memory reach it
through one server instead. The server is chromadb's, with chromadb's token authentication
(server.py says why not `chroma run`): it listens on loopback only and refuses any request without
the token, a fresh `secrets.token_urlsafe` per batch. It ends with the batch, a SIGKILLed batch too. A
shared server of your own (`--memory-url`) needs none of this; a Ray cluster's workers need one they can
reach.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from teachback.errors import MemoryStoreError
from teachback.memory.store import MEMORY_TOKEN_ENV
from teachback.processes import die_with_parent, free_port

HEARTBEAT = "/api/v2/heartbeat"


def server_command(folder: Path, host: str, port: int) -> list[str]:
    """The memory server (server.py) run by this interpreter; the token goes in its environment."""
    server = [sys.executable, "-m", "teachback.memory.server"]
    return [*server, "--path", str(folder), "--host", host, "--port", str(port)]


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
            raise MemoryStoreError(f"the memory server for the batch exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise MemoryStoreError(f"the memory server at {url} did not answer within {timeout:.0f} s")
        time.sleep(0.1)


class ChromaServer:
    """The memory server on a free loopback port with a fresh token, stopped on exit (also on Ctrl-C)."""

    def __init__(self, folder: Path, log: Path, host: str = "127.0.0.1", port: int | None = None):
        self.folder = folder.expanduser().resolve()
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.token = secrets.token_urlsafe(32)
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> ChromaServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(
                server_command(self.folder, self.host, self.port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, MEMORY_TOKEN_ENV: self.token},
                preexec_fn=die_with_parent(),
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
