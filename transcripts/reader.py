"""Read a JSONL transcript back into events; every problem is one `file:line: what` line.

    events = read_transcript("run/transcript.jsonl")
    events[0]              # RunStarted, the header; a resumed run has a second one further down

Old schema versions are upgraded line by line through `MIGRATIONS` before they become events.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from teachback.errors import TranscriptError
from teachback.transcripts.events import SCHEMA_VERSION, Event, RunStarted, from_dict

# MIGRATIONS[n] turns one line of schema version n into the same line at version n + 1 (setting "v").
# Empty while version 1 is the only one. When a field changes: bump events.SCHEMA_VERSION and add
# MIGRATIONS[old] here, for example `MIGRATIONS[1] = lambda d: {**d, "v": 2, "new_field": default}`.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

RESUME_HINT = "truncated last line (the run was cut off mid-write); teachback run --resume repairs it"


def read_transcript(path: str | os.PathLike[str], *, allow_truncated_tail: bool = False) -> list[Event]:
    """All events of a transcript, header first. Blank lines are skipped.

    A last line without its newline (a run killed mid-write) is an error, or ignored when
    `allow_truncated_tail` is set. Raises TranscriptError with one line saying where and what.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TranscriptError(f"{path}: no such transcript") from None
    except IsADirectoryError:
        raise TranscriptError(f"{path}: is a folder, not a transcript file") from None
    except OSError as e:
        raise TranscriptError(f"{path}: cannot read ({e.strerror})") from None

    lines = data.split(b"\n")
    tail = lines.pop()  # what follows the last newline: empty unless the last line was cut off
    events: list[Event] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        event = _parse_line(path, number, raw)
        if not events and not isinstance(event, RunStarted):
            raise TranscriptError(
                f"{path}:{number}: first event is {event.type!r}, not 'run_started' (the header is missing)"
            )
        events.append(event)
    if tail.strip() and not allow_truncated_tail:
        raise TranscriptError(f"{path}:{len(lines) + 1}: {RESUME_HINT}")
    if not events:
        raise TranscriptError(f"{path}: empty transcript (no events)")
    return events


def _parse_line(path: Path, number: int, raw: bytes) -> Event:
    where = f"{path}:{number}"
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise TranscriptError(f"{where}: not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise TranscriptError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    try:
        return from_dict(migrate(data))
    except (ValueError, TypeError) as e:
        raise TranscriptError(f"{where}: {e}") from None


def migrate(data: Any) -> Any:
    """Upgrade one line's dict to the current schema version through MIGRATIONS (if it is older)."""
    while isinstance(data, dict):
        version = data.get("v")
        if not isinstance(version, int) or version >= SCHEMA_VERSION or version not in MIGRATIONS:
            break
        data = MIGRATIONS[version](data)
        if data.get("v") == version:
            raise ValueError(f"migration from schema version {version} did not change the version")
    return data


def repair_truncated_tail(path: str | os.PathLike[str]) -> bool:
    """Cut a partial last line (no newline) off the file; returns whether it did.

    `{"v": 1, ...}\\n{"v": 1, "ty` -> `{"v": 1, ...}\\n`
    """
    path = Path(path)
    try:
        f = open(path, "r+b")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise TranscriptError(f"{path}: no such transcript") from None
    with f:
        size = f.seek(0, os.SEEK_END)
        end = size
        chunk = 64 * 1024
        while end > 0:  # search backwards for the last newline
            start = max(0, end - chunk)
            f.seek(start)
            block = f.read(end - start)
            if end == size and block.endswith(b"\n"):
                return False
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            if size == 0:
                return False
            keep = 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return True
