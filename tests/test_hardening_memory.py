"""The batch's shared memory: a real memory server on loopback that refuses every client without its token.

`chroma run` (chromadb 1.5) has no authentication, so the batch serves its memory folder with chromadb's
own server and token authentication (memory/server.py); the token reaches clients through
$TEACHBACK_MEMORY_TOKEN, never a command line.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from teachback.cli import main
from teachback.errors import MemoryStoreError
from teachback.memory.chroma_server import ChromaServer
from teachback.memory.store import MEMORY_TOKEN_ENV, MemoryStore

COLLECTIONS = "/api/v2/tenants/default_tenant/databases/default_database/collections"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    folder = tmp_path_factory.mktemp("served")
    with ChromaServer(folder / "memory", log=folder / "server.log") as s:
        yield s


def status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_client_without_the_token_is_refused_and_one_with_it_works(
    server: ChromaServer, monkeypatch
) -> None:
    monkeypatch.delenv(MEMORY_TOKEN_ENV, raising=False)
    with pytest.raises(MemoryStoreError, match="wants a token: set TEACHBACK_MEMORY_TOKEN") as none:
        MemoryStore.open(url=server.url)
    with pytest.raises(MemoryStoreError, match=r"refused the token in \$TEACHBACK_MEMORY_TOKEN") as wrong:
        MemoryStore.open(url=server.url, token="not-the-token-at-all")
    assert "\n" not in str(none.value) + str(wrong.value)

    monkeypatch.setenv(MEMORY_TOKEN_ENV, server.token)  # how a run gets it
    store = MemoryStore.open(url=server.url)
    store.add_turn("vellmar", question="What is the capital?", answer="Korrin.", run_id="r1", turn=1)
    assert [t.answer for t in store.entries("vellmar")] == ["Korrin."]

    # below the client: the HTTP API itself refuses reads and writes without the token
    assert status(server.url + COLLECTIONS) == 403
    assert status(server.url + COLLECTIONS, {"Authorization": "Bearer not-the-token"}) == 403
    assert status(server.url + COLLECTIONS, {"Authorization": f"Bearer {server.token}"}) == 200
    post = urllib.request.Request(
        server.url + COLLECTIONS, data=json.dumps({"name": "intruder"}).encode(), method="POST"
    )
    post.add_header("content-type", "application/json")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, timeout=10)
    assert refused.value.code == 403
    assert "intruder" not in store.namespaces()


def test_the_server_listens_on_loopback_and_its_token_is_in_no_command_line(server: ChromaServer) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    assert server.pid is not None
    argv = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    assert server.token.encode() not in argv and b"--port" in argv
    listening = Path("/proc/net/tcp").read_text()  # local_address column: 0100007F:PORT is 127.0.0.1
    assert f"0100007F:{server.port:04X}" in listening
    assert f"00000000:{server.port:04X}" not in listening


def test_the_memory_commands_take_the_token_from_the_environment(
    server: ChromaServer, monkeypatch, capsys
) -> None:
    store = MemoryStore.open(url=server.url, token=server.token)
    store.add_turn("vellmar", question="What is the capital?", answer="Korrin.", run_id="r1", turn=1)
    monkeypatch.delenv(MEMORY_TOKEN_ENV, raising=False)
    assert main(["memory", "list", "--memory-url", server.url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wants a token" in err and "Traceback" not in err
    monkeypatch.setenv(MEMORY_TOKEN_ENV, server.token)
    assert main(["memory", "list", "--memory-url", server.url, "--json"]) == 0
    out = capsys.readouterr().out
    assert "Korrin." in out and server.token not in out
