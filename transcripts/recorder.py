"""Append events to a JSONL transcript, one line each, so a crash loses at most the line being written.

    with TranscriptRecorder(run_dir / "transcript.jsonl") as rec:
        rec.handle(header)
        rec.handle(TurnAccepted(...))  # flushed and fsynced: accepted turns survive a crash

A run's first sink (transcripts/sinks.py): it writes each event before the renderer draws it and the
memory stores it.

Every event is flushed as it is written; turn outcomes and the end of the run are also fsynced.
No secret is written: an API key or bearer token in any field (a provider's error that echoes the key,
in `run_finished.reason`) is masked first (`teachback.errors.mask_secrets`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from teachback.errors import TranscriptError, mask_secrets
from teachback.transcripts.events import Event, RunFinished, TurnAccepted, TurnRejected, to_dict, to_json

# Events that must reach the disk before the run goes on.
DURABLE = (TurnAccepted, TurnRejected, RunFinished)


class TranscriptRecorder:
    """Appends events to `path` (creating its folders). Writes nothing but events."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if _ends_mid_line(self.path):
            raise TranscriptError(
                f"{self.path}: ends with a truncated line; teachback run --resume repairs it before appending"
            )
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def handle(self, event: Event) -> None:
        """Write one event as one line; flush it, and fsync turn outcomes and the end of the run."""
        if self._file.closed:
            raise ValueError(f"{self.path}: recorder is closed")
        self._file.write(_masked_json(event) + "\n")
        self._file.flush()
        if isinstance(event, DURABLE):
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Flush, fsync and close; calling it again does nothing."""
        if self._file.closed:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._file.close()

    def __enter__(self) -> TranscriptRecorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _masked_json(event: Event) -> str:
    """The event's JSON line, with every secret in its strings masked (the line stays valid JSON)."""
    line = to_json(event)
    if mask_secrets(line) == line:
        return line
    return json.dumps(_mask(to_dict(event)), ensure_ascii=False)


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, dict):
        return {_mask(k): _mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(v) for v in value]
    return value


def _ends_mid_line(path: Path) -> bool:
    """Whether an existing, non-empty file lacks its final newline."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False
