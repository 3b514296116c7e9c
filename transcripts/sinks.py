"""Where a run's events go: sinks, each with one method, fed in order by one fan-out.

    sinks: list[Sink] = [TranscriptRecorder(path), make_renderer(console, plain)]
    emit = Fanout(sinks)
    sinks.append(MemorySink(store, namespace, header))   # from the next event on
    emit(event)     # the recorder writes it, the renderer draws it, the memory stores it

A sink may answer an event with one of its own (`MemorySink`: `MemoryStored` for a stored turn); the
answer goes through every sink in turn, the recorder first, so the transcript records it too. The
recorder is first: the transcript is the record of truth, written before anything else happens.
"""

from __future__ import annotations

from typing import Protocol

from teachback.transcripts.events import Event


class Sink(Protocol):
    """Takes the run's events one at a time (the recorder, the renderers, the memory sink)."""

    def handle(self, event: Event) -> Event | None: ...


class Fanout:
    """Every event to every sink, in order; an event a sink answers with goes to them all in turn."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks  # the list itself: a sink appended later gets the events from then on

    def __call__(self, event: Event) -> None:
        for sink in self.sinks:
            answer = sink.handle(event)
            if answer is not None:
                self(answer)
