"""Replay a recorded transcript through a renderer, at the pace it was recorded (or faster).

    renderer = make_renderer(Console(), plain=False)
    replay("run/transcript.jsonl", renderer, speed=4, from_turn=3, roles={"teacher"})
    renderer.close()

The pause before each event is its distance in `t` from the previous event, divided by `speed` and
capped at `MAX_PAUSE` seconds, so a slow model's long silences don't stall the replay.

The reader checks each field's type; an event the renderer still cannot show (a hand-edited value inside
a free-form field, such as a panel candidate's score "high") is a `file:line: what` TranscriptError.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from teachback.errors import TeachbackError, TranscriptError
from teachback.transcripts.events import (
    Event,
    MemoryRecalled,
    MessageDone,
    PanelDecision,
    RunStarted,
    TokenDelta,
    Verdict,
)
from teachback.transcripts.reader import read_numbered
from teachback.transcripts.render import Renderer

MAX_PAUSE = 2.0  # seconds, per gap between two events


def replay(
    path: str | os.PathLike[str],
    renderer: Renderer,
    *,
    speed: float = 1.0,
    instant: bool = False,
    from_turn: int = 0,
    roles: set[str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Feed the transcript's events to `renderer`; returns how many it was shown.

    Headers are always shown. Events of turns before `from_turn` are skipped; with `roles`, only those
    speakers' messages and tokens are shown (verdicts and panel decisions count as the judge's, recalled
    memories as the student's). The caller closes the renderer.
    """
    if speed <= 0:
        raise TeachbackError(f"replay speed must be greater than 0, not {speed}")
    numbered = read_numbered(path)
    events = [e for _, e in numbered]
    last_turn = max((_turn(e) for e in events), default=0)
    if from_turn > last_turn:
        has = f"{last_turn} turns" if last_turn != 1 else "1 turn"
        raise TranscriptError(f"{path}: cannot start at turn {from_turn}: the transcript has {has}")

    shown = 0
    previous: Event | None = None
    for line, event in numbered:
        if _shows(event, from_turn, roles):
            if previous is not None and shown and not instant:
                pause = min(max(0.0, event.t - previous.t) / speed, MAX_PAUSE)
                if pause > 0:
                    sleep(pause)
            try:
                renderer.handle(event)
            except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
                what = " ".join(str(exc).split())[:120] or type(exc).__name__
                raise TranscriptError(
                    f"{path}:{line}: cannot show this {event.type} event: a value has the wrong type ({what})"
                ) from None
            shown += 1
        previous = event
    return shown


def _turn(event: Event) -> int:
    turn = getattr(event, "turn", 0)
    return turn if isinstance(turn, int) else 0


def _shows(event: Event, from_turn: int, roles: set[str] | None) -> bool:
    if isinstance(event, RunStarted):
        return True
    if _turn(event) and _turn(event) < from_turn:
        return False
    if roles is not None:
        if isinstance(event, (TokenDelta, MessageDone)):
            return event.role in roles
        if isinstance(event, (Verdict, PanelDecision)):
            return "judge" in roles
        if isinstance(event, MemoryRecalled):
            return "student" in roles
    return True
