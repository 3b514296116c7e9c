"""Read a JSONL transcript back into events; every problem is one `file:line: what` line.

    events = read_transcript("run/transcript.jsonl")
    events[0]              # RunStarted, the header; a resumed run has a second one further down

Old schema versions are upgraded line by line through `MIGRATIONS` before they become events.

Every field is checked against its event's annotation (`"t": "soon"`, `"turn": "x"`, a list where a
mapping belongs are `file:line: field: expected ..., got ...`), so replay, report and resume can trust the
events' types. A line longer than MAX_LINE_BYTES is refused before it is parsed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from teachback.errors import TranscriptError
from teachback.transcripts.events import SCHEMA_VERSION, Event, RunStarted, from_dict

# No event comes near it: a header holds the scenario's objectives and facts, a message at most a few
# thousand tokens.
MAX_LINE_BYTES = 16 * 1024 * 1024

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
    return [event for _, event in read_numbered(path, allow_truncated_tail=allow_truncated_tail)]


def read_numbered(
    path: str | os.PathLike[str], *, allow_truncated_tail: bool = False
) -> list[tuple[int, Event]]:
    """`read_transcript`, each event with its 1-based line number (for messages about it later)."""
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
    events: list[tuple[int, Event]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        event = _parse_line(path, number, raw)
        if not events and not isinstance(event, RunStarted):
            raise TranscriptError(
                f"{path}:{number}: first event is {event.type!r}, not 'run_started' (the header is missing)"
            )
        events.append((number, event))
    if tail.strip() and not allow_truncated_tail:
        raise TranscriptError(f"{path}:{len(lines) + 1}: {RESUME_HINT}")
    if not events:
        raise TranscriptError(f"{path}: empty transcript (no events)")
    return events


def _parse_line(path: Path, number: int, raw: bytes) -> Event:
    where = f"{path}:{number}"
    if len(raw) > MAX_LINE_BYTES:
        raise TranscriptError(
            f"{where}: line too long ({len(raw)} bytes; an event is at most {MAX_LINE_BYTES} bytes, "
            "MAX_LINE_BYTES): not a teachback transcript, or a corrupt one"
        )
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise TranscriptError(f"{where}: not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise TranscriptError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise TranscriptError(f"{where}: nested too deeply to be an event") from None
    try:
        event = from_dict(migrate(data))
    except (ValueError, TypeError) as e:
        raise TranscriptError(f"{where}: {e}") from None
    problem = event_problem(event)
    if problem:
        raise TranscriptError(f"{where}: {problem}")
    return event


def event_problem(event: Event) -> str | None:
    """`field: expected ..., got ...` for the first field whose value does not fit its annotation, else
    None. `t` must also be a finite number of seconds."""
    hints = _hints(type(event))
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        problem = _type_problem(value, hints.get(f.name, Any), f.name)
        if problem:
            return f"{problem} (in a {type(event).type} event)"
    if not math.isfinite(event.t):
        return f"t: expected a finite number of seconds, got {event.t!r} (in a {type(event).type} event)"
    return None


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _type_problem(value: Any, hint: Any, where: str) -> str | None:
    """Why `value` does not fit `hint` (str, int, float, bool, Any, list[X], dict[str, X], X | None)."""
    if hint is Any:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _type_problem(value, inner[0], where) if len(inner) == 1 else None
    if origin is list:
        if not isinstance(value, list):
            return f"{where}: expected a list, got {_shown(value)}"
        for i, item in enumerate(value):
            problem = _type_problem(item, args[0] if args else Any, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if origin is dict:
        if not isinstance(value, dict):
            return f"{where}: expected a mapping, got {_shown(value)}"
        for key, item in value.items():
            problem = _type_problem(item, args[1] if len(args) > 1 else Any, f"{where}.{key}")
            if problem:
                return problem
        return None
    if hint is bool:
        return None if isinstance(value, bool) else f"{where}: expected true or false, got {_shown(value)}"
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return None
        return f"{where}: expected a whole number, got {_shown(value)}"
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        return f"{where}: expected a number, got {_shown(value)}"
    if hint is str:
        return None if isinstance(value, str) else f"{where}: expected text, got {_shown(value)}"
    return None


def _shown(value: Any) -> str:
    """A JSON value, short: 'soon' -> '"soon"', [1] -> 'a list'."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


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
