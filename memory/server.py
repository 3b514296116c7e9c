"""A memory folder served over HTTP that refuses every request without its token.

    TEACHBACK_MEMORY_TOKEN=<token> python -m teachback.memory.server --path DIR --port N [--host 127.0.0.1]
    MemoryStore.open(url="http://127.0.0.1:N")     # sends $TEACHBACK_MEMORY_TOKEN as `Authorization: Bearer`

Why not `chroma run`: in chromadb 1.5 it is a Rust server without authentication. It ignores
CHROMA_SERVER_AUTHN_PROVIDER and CHROMA_SERVER_AUTHN_CREDENTIALS and answers anyone who reaches its port
(checked with 1.5.9: a request without a token was answered with 200). A token-checking proxy in front of
it would still leave its own port open to every local process. This is chromadb's own Python server
(`chromadb.server.fastapi`, the same Rust storage underneath, so the folder stays an ordinary chromadb
folder) with chromadb's token authentication (`TokenAuthenticationServerProvider`), the one listener. Only
the heartbeat answers without the token. Its OpenTelemetry instrumentation, an extra that is not installed,
is replaced by a no-op: nothing is traced.

The token comes from the environment, never from argv (every local user can read argv in `ps`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from teachback.memory.store import MEMORY_TOKEN_ENV

TOKEN_AUTHN = "chromadb.auth.token_authn.TokenAuthenticationServerProvider"
SHUTDOWN_GRACE_S = 3  # after SIGTERM: open requests get this long, then the server exits


def serve(folder: Path, host: str, port: int, token: str) -> None:
    """Serve `folder` on host:port until SIGTERM or Ctrl-C; every request but the heartbeat needs `token`."""
    import warnings

    _without_tracing()
    warnings.filterwarnings("ignore", message=".*ORJSONResponse is deprecated")  # FastAPI's, about chromadb
    import uvicorn
    from chromadb.config import Settings
    from chromadb.server.fastapi import FastAPI

    import teachback.memory.embeddings  # noqa: F401 - registers teachback's embedders: the server checks
    # each collection's embedder by name (the embedding itself is done by the clients)

    settings = Settings(
        is_persistent=True,
        persist_directory=str(folder),
        anonymized_telemetry=False,
        allow_reset=False,
        chroma_server_authn_provider=TOKEN_AUTHN,
        chroma_server_authn_credentials=token,
    )
    app = FastAPI(settings).app()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )


def _without_tracing() -> None:
    """chromadb's server imports its FastAPI instrumentation from an OpenTelemetry extra; without that
    extra, put a no-op in its place (teachback turns telemetry off anyway)."""
    import importlib.util
    import types

    try:
        present = importlib.util.find_spec("opentelemetry.instrumentation.fastapi") is not None
    except ImportError:
        present = False
    if not present:
        stub = types.ModuleType("chromadb.telemetry.opentelemetry.fastapi")
        stub.instrument_fastapi = lambda app, excluded_urls=None: None  # type: ignore[attr-defined]
        sys.modules["chromadb.telemetry.opentelemetry.fastapi"] = stub


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m teachback.memory.server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--path", type=Path, required=True, help="the memory folder")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default loopback)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    token = os.environ.get(MEMORY_TOKEN_ENV, "").strip()
    if not token:
        print(f"teachback: the memory server needs its token in ${MEMORY_TOKEN_ENV}", file=sys.stderr)
        return 2
    serve(args.path.expanduser().resolve(), args.host, args.port, token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
