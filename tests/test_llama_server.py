"""Managed llama.cpp servers: start, reach through litellm, grammar-constrained JSON, sharing, stopping."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import CreateResult, SystemMessage, UserMessage
from pydantic import BaseModel

from teachback.agents.litellm_client import LiteLLMChatClient
from teachback.agents.llama_server import LlamaServer, ServerPool, alias_for, free_port
from teachback.errors import ModelCallError, ModelError

# litellm's lazily built pydantic schemas warn on first use; the lead may move this into pyproject.
pytestmark = pytest.mark.filterwarnings("ignore:.*is using the `ReadOnly` qualifier:UserWarning")

MESSAGES = [
    SystemMessage(content="You are a helpful assistant."),
    UserMessage(content="Name one colour of the sky.", source="student"),
]


class Verdict(BaseModel):
    correct: bool
    score: int


async def collect(stream: Any) -> tuple[list[str], CreateResult]:
    chunks: list[str] = []
    result: CreateResult | None = None
    async for item in stream:
        if isinstance(item, CreateResult):
            result = item
        else:
            chunks.append(item)
    assert result is not None
    return chunks, result


def gone(pid: int) -> bool:
    """True when no process `pid` exists (a zombie would still count as present)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def smollm2() -> Path:
    from teachback.agents.models import resolve

    path = resolve("local/smollm2-135m").local_path
    assert path is not None
    return path


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    with ServerPool(tmp_path_factory.mktemp("server-logs")) as servers:
        yield servers


@pytest.fixture(scope="module")
def server(pool: ServerPool, smollm2: Path) -> LlamaServer:
    return pool.get(smollm2, n_ctx=1024)


def test_alias_and_free_port() -> None:
    assert alias_for(Path("/m/SmolLM2-135M-Instruct.Q4_1.gguf")) == "smollm2-135m-instruct.q4_1"
    assert 0 < free_port() < 65536


def test_unreachable_server_fails_fast_with_model_call_error() -> None:
    api_base = f"http://127.0.0.1:{free_port()}/v1"  # nobody listens there
    client = LiteLLMChatClient("openai/ghost", api_base=api_base, role="teacher", num_retries=1, timeout=5)
    started = time.monotonic()
    with pytest.raises(ModelCallError) as caught:
        asyncio.run(client.create(MESSAGES))
    assert time.monotonic() - started < 8
    message = str(caught.value)
    assert message.startswith(f"teacher openai/ghost at {api_base} failed after 1 retry: ")
    assert "connect" in message and "\n" not in message


def test_missing_model_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        LlamaServer(tmp_path / "nope.gguf").start()


def test_a_server_that_dies_fails_fast_with_its_log(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf" * 100)
    server = LlamaServer(broken, log_path=tmp_path / "log.txt")
    server.start()
    started = time.monotonic()
    with pytest.raises(ModelError, match="exited with code") as caught:
        server.wait_healthy(timeout=60)
    assert time.monotonic() - started < 30
    assert "log.txt" in str(caught.value)
    server.stop()


@pytest.mark.real
def test_server_answers_through_litellm(server: LlamaServer) -> None:
    assert server.api_base.startswith("http://127.0.0.1:") and server.api_base.endswith("/v1")
    assert server.litellm_model == f"openai/{server.model_alias}"
    client = server.chat_client(role="teacher", max_tokens=12, temperature=0)

    async def run() -> tuple[CreateResult, list[str], CreateResult]:
        whole = await client.create(MESSAGES)
        chunks, streamed = await collect(client.create_stream(MESSAGES))
        return whole, chunks, streamed

    whole, chunks, streamed = asyncio.run(run())
    assert (
        isinstance(whole.content, str) and whole.content.strip() and 0 < whole.usage.completion_tokens <= 12
    )
    assert len(chunks) > 1 and "".join(chunks) == streamed.content
    # temperature 0: the same reply both ways, up to the float noise of the server's prompt cache (the
    # second request reuses the first's KV cache, a different batch split; late greedy picks can differ)
    assert streamed.content.split()[:3] == whole.content.split()[:3]
    assert 0 < streamed.usage.completion_tokens <= 12 and streamed.usage.prompt_tokens > 10


@pytest.mark.real
def test_json_output_is_constrained_by_the_schema(server: LlamaServer) -> None:
    client = server.chat_client(role="judge", max_tokens=40, temperature=0.7, seed=1)
    messages = [
        SystemMessage(content="You grade answers. Reply in JSON."),
        UserMessage(
            content="Q: capital of France? A: Berlin. Is the answer correct? Score 0-10.", source="director"
        ),
    ]

    async def run() -> list[str]:
        whole = await client.create(messages, json_output=Verdict)
        _, streamed = await collect(client.create_stream(messages, json_output=Verdict))
        return [whole.content, streamed.content]

    for content in asyncio.run(run()):
        verdict = Verdict.model_validate(json.loads(content))
        assert isinstance(verdict.correct, bool)


@pytest.mark.real
def test_pool_shares_one_server_per_file_and_stops_it(smollm2: Path, tmp_path: Path) -> None:
    with ServerPool(tmp_path) as pool:
        teacher = pool.get(smollm2, n_ctx=512)
        judge = pool.get(smollm2, n_ctx=512)
        assert judge is teacher and len(pool.servers) == 1
        assert pool.get(smollm2, n_ctx=256) is teacher
        with pytest.raises(ModelError, match="already served with n_ctx=512"):
            pool.get(smollm2, n_ctx=1024)
        assert teacher.started_s is not None and teacher.started_s < 60
        assert teacher.chat_client(role="teacher").api_base == judge.chat_client(role="judge").api_base
        pid = teacher.pid
        assert pid is not None and teacher.running
        log = teacher.log_path
    assert not teacher.running
    assert gone(pid), "the server process outlived stop()"
    assert log.is_file()


@pytest.mark.real
def test_server_dies_with_its_parent_even_on_sigkill(tmp_path: Path) -> None:
    """A `teachback run` killed with SIGKILL must not leave its llama.cpp server behind."""
    import signal
    import subprocess
    import sys

    code = (
        "import sys, time; from pathlib import Path\n"
        "from teachback.agents.llama_server import ServerPool\n"
        "from teachback.agents.models import resolve\n"
        f"pool = ServerPool(log_dir=Path({str(tmp_path)!r}))\n"
        "server = pool.get(resolve('local/smollm2-135m').local_path)\n"
        "print(server.pid, flush=True); time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    server_pid = int(parent.stdout.readline())
    assert Path(f"/proc/{server_pid}").exists()
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 20
    while Path(f"/proc/{server_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    status = Path(f"/proc/{server_pid}/status")
    alive = status.exists() and "zombie" not in status.read_text()
    assert not alive, "the server outlived its killed parent"
