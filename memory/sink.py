"""From the event stream into the vector memory: every accepted turn is stored the moment it is accepted.

The transcript is written first (and synced), the memory second, so a crash between the two can only
leave a turn in the transcript that the memory lacks, never the reverse. `backfill` closes that gap when a
run resumes: it stores every accepted turn of the transcript again, which costs nothing for turns already
there (ids come from the content, so storing is an upsert).

In a classroom each student has a namespace of its own (the header's `seats` say which): a turn goes to
the namespace of the student who asked it, with that student's model as `student_model`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from teachback.transcripts.events import ANSWER, Event, MemoryStored, RunStarted, TurnAccepted, Verdict

if TYPE_CHECKING:
    from teachback.memory.store import AddResult, MemoryStore


class MemorySink:
    """Stores the accepted turns of one run in a MemoryStore: in `namespace`, or in the asking student's."""

    def __init__(self, store: MemoryStore, namespace: str, header: RunStarted):
        self.store = store
        self.namespace = namespace
        self.header = header
        self._reasons: dict[int, str] = {}  # turn -> the judge's reason for the accepted answer
        students = [s for s in header.seats if s.get("role") == "student"]
        self._namespaces = {s["name"]: s.get("namespace") or namespace for s in students}
        self._models = {s["name"]: s.get("model", "") for s in students}

    def namespace_of(self, student: str) -> str:
        """Where the turns `student` asked are stored ("" or unknown: the run's namespace)."""
        return self._namespaces.get(student, self.namespace)

    def handle(self, event: Event) -> MemoryStored | None:
        """Store an accepted turn; returns the event that says what happened to it, else None."""
        if isinstance(event, Verdict) and event.kind == ANSWER and event.accepted:
            self._reasons[event.turn] = event.reason
            return None
        if not isinstance(event, TurnAccepted):
            return None
        result = self._store(event)
        return MemoryStored(
            t=event.t,
            turn=event.turn,
            namespace=self.namespace_of(event.student),
            id=result.id,
            duplicate_of=result.duplicate_of or "",
            similarity=round(result.similarity, 4),
            existed=result.existed,
        )

    def backfill(self, events: Iterable[Event]) -> int:
        """Store every accepted turn of an earlier part of the run that the memory lacks; returns how many."""
        added = 0
        for event in events:
            if isinstance(event, TurnAccepted):
                added += 0 if self._store(event).existed else 1
            else:
                self.handle(event)  # remembers the judge's reasons
        return added

    def _store(self, event: TurnAccepted) -> AddResult:
        from dataclasses import replace

        from teachback.memory.store import TurnRecord

        record = TurnRecord.from_event(event, self.header, judge_reason=self._reasons.pop(event.turn, ""))
        if event.student in self._models:
            record = replace(record, student_model=self._models[event.student])
        return self.store.add_turns(self.namespace_of(event.student), [record])[0]
