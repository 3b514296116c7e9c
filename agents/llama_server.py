"""Managed llama.cpp servers for local teacher and judge models, reached through litellm.

    with ServerPool(log_dir) as pool:
        server = pool.get(path)                  # started and healthy; shared by every role on `path`
        teacher = server.chat_client(role="teacher", max_tokens=256)

Each server is `python -m llama_cpp.server` on a free loopback port, in its own process group, logging
to a file. `stop()` ends the whole group; an atexit hook stops every server this process started, and
Linux ends a server whose parent died without one (SIGKILL, a crash: `teachback.processes`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from teachback.agents.llama_local import default_threads
from teachback.agents.models import chat_format
from teachback.errors import ModelError
from teachback.processes import die_with_parent, free_port
from teachback.transcripts.run_folder import RunFolder

HEALTH_TIMEOUT_S = 60.0
_live: set[LlamaServer] = set()  # started and not yet stopped; the atexit hook stops them


def alias_for(model_path: Path) -> str:
    """The API's model name for a file: SmolLM2-135M-Instruct.Q4_1.gguf -> smollm2-135m-instruct.q4_1."""
    stem = model_path.name.removesuffix(".gguf")
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-") or "model"


class LlamaServer:
    """One `llama_cpp.server` process serving one GGUF file over an OpenAI-compatible API."""

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        log_path: Path | None = None,
        model_alias: str | None = None,
        lora_path: Path | None = None,
    ):
        self.model_path = Path(model_path)
        self.lora_path = Path(lora_path) if lora_path is not None else None
        self.n_ctx = n_ctx
        self.chat_format = chat_format(self.model_path)
        self.n_threads = n_threads or default_threads()
        self.model_alias = model_alias or alias_for(self.model_path)
        self.log_path = log_path or Path(tempfile.gettempdir()) / f"teachback-{self.model_alias}.log"
        self.port: int | None = None
        self.started_s: float | None = None  # seconds from start() to healthy
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        return f"LlamaServer({self.model_alias!r}, api_base={self.api_base!r}, running={self.running})"

    @property
    def api_base(self) -> str:
        """`http://127.0.0.1:PORT/v1`: what litellm needs as `api_base`."""
        if self.port is None:
            raise ModelError(f"llama server for {self.model_path.name} has not been started")
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def litellm_model(self) -> str:
        """The litellm model string: `openai/<alias>`."""
        return f"openai/{self.model_alias}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The server's command line (flags from llama_cpp.server.settings).

        `--interrupt_requests False`: roles sharing this server queue their calls; by default a new
        request would cut off a reply still streaming to another role.
        """
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.model_alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            "--interrupt_requests",
            "False",
            # No logits kept for every prompt token (the server's default): for Qwen's 151,936-token
            # vocabulary those are 2.5 GB and several times the prompt time. Nothing asks a managed server
            # for log-probabilities; the local judge's entailment runs in-process (agents/entailment.py).
            "--logits_all",
            "False",
            *(["--lora_path", str(self.lora_path)] if self.lora_path is not None else []),
            *(["--chat_format", self.chat_format] if self.chat_format else []),
        ]

    def start(self) -> None:
        """Launch the process (returns at once; see wait_healthy). A no-op while it runs."""
        if self.running:
            return
        if not self.model_path.is_file():
            raise ModelError(f"model file not found: {self.model_path}")
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self._started_at = time.monotonic()
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=server_env(),
            start_new_session=True,
            preexec_fn=die_with_parent(),  # no server outlives a SIGKILLed run
        )
        _live.add(self)

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT_S) -> None:
        """Poll GET /v1/models until it answers 200; ModelError if the process dies or time runs out."""
        if self._process is None:
            raise ModelError(f"llama server for {self.model_path.name} has not been started")
        deadline = time.monotonic() + timeout
        url = f"{self.api_base}/models"
        while True:
            code = self._process.poll()
            if code is not None:
                self._close_log()
                raise ModelError(
                    f"llama server for {self.model_path.name} exited with code {code} "
                    f"({self.last_log_line() or 'no output'}); log: {self.log_path}"
                )
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(url, timeout=2) as reply,
            ):
                if reply.status == 200:
                    self._warm_up()
                    self.started_s = time.monotonic() - self._started_at
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise ModelError(
                    f"llama server for {self.model_path.name} not healthy after {timeout:g}s "
                    f"({self.last_log_line() or 'no output'}); log: {self.log_path}"
                )
            time.sleep(0.1)

    def _warm_up(self) -> None:
        """One 1-token completion, so the first real request does not pay the server's first-call cost."""
        body = json.dumps(
            {"model": self.model_alias, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        ).encode()
        request = urllib.request.Request(
            f"{self.api_base}/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(request, timeout=30):
            pass

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the process group, wait `grace` seconds, then SIGKILL it."""
        process, self._process = self._process, None
        _live.discard(self)
        if process is not None and process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=grace)
        self._close_log()

    def last_log_line(self) -> str:
        """The log's last non-empty line, cut to 200 characters."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 8192))
                lines = [
                    ln.strip() for ln in log.read().decode("utf-8", "replace").splitlines() if ln.strip()
                ]
        except OSError:
            return ""
        return lines[-1][:200] if lines else ""

    def chat_client(self, *, role: str = "model", **kwargs: Any) -> Any:
        """A LiteLLMChatClient speaking to this server; kwargs go to its constructor."""
        from teachback.agents.litellm_client import LiteLLMChatClient

        return LiteLLMChatClient(self.litellm_model, api_base=self.api_base, role=role, **kwargs)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class ServerPool:
    """One server per model file (and adapter), shared by every role that uses it; `stop_all()` ends them.

    llama.cpp's server answers one request at a time (`--interrupt_requests False` queues the rest), so
    roles that call one server concurrently, such as a panel of teachers on one file, are served in turn.
    """

    def __init__(self, log_dir: Path | None = None, *, n_threads: int | None = None):
        """Logs go to `log_dir/llama-server-<alias>.log`, or to a temporary folder removed by stop_all()."""
        self._own_log_dir = log_dir is None
        self.log_dir = (
            Path(tempfile.mkdtemp(prefix="teachback-servers-")) if log_dir is None else Path(log_dir)
        )
        self.n_threads = n_threads
        self._servers: dict[tuple[Path, Path | None], LlamaServer] = {}

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()

    @property
    def servers(self) -> list[LlamaServer]:
        return list(self._servers.values())

    def get(
        self,
        model_path: Path,
        *,
        n_ctx: int = 4096,
        timeout: float = HEALTH_TIMEOUT_S,
        lora_path: Path | None = None,
    ) -> LlamaServer:
        """The healthy server for `model_path` (wearing the LoRA adapter `lora_path`, if given), started on
        first use with `n_ctx`.

        Later calls share it; asking for more context than it was started with is a ModelError
        (give every role on one file the same n_ctx).
        """
        path = Path(model_path).resolve()
        lora = Path(lora_path).resolve() if lora_path is not None else None
        server = self._servers.get((path, lora))
        if server is None:
            alias = base = alias_for(path) + (f"-lora-{alias_for(lora)}" if lora else "")
            taken = {s.model_alias for s in self._servers.values()}
            n = 1
            while alias in taken:  # two files with one name in different folders
                n += 1
                alias = f"{base}-{n}"
            server = LlamaServer(
                path,
                n_ctx=n_ctx,
                n_threads=self.n_threads,
                log_path=RunFolder(self.log_dir).server_log(alias),
                model_alias=alias,
                lora_path=lora,
            )
            self._servers[(path, lora)] = server
        elif n_ctx > server.n_ctx:
            raise ModelError(
                f"{path.name} is already served with n_ctx={server.n_ctx}; another role asked for {n_ctx}: "
                "give every role on one model file the same context size"
            )
        if not server.running:
            server.start()
            server.wait_healthy(timeout)
        return server

    def stop_all(self) -> None:
        """Stop every server of this pool (and remove the temporary log folder, if it made one)."""
        for server in self._servers.values():
            server.stop()
        self._servers.clear()
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)


def server_env() -> dict[str, str]:
    """This process's environment without what the server would read as settings.

    The server's settings are pydantic BaseSettings: a stray API_KEY, PORT, MODEL or CONFIG_FILE in the
    environment would silently reconfigure it (API_KEY would make it reject every call).
    """
    from llama_cpp.server.settings import Settings

    names = {name.lower() for name in Settings.model_fields} | {"config_file"}
    return {key: value for key, value in os.environ.items() if key.lower() not in names}


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@atexit.register
def _stop_live_servers() -> None:
    for server in list(_live):
        server.stop(grace=2.0)
