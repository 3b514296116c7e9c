"""What a run has achieved so far, as a fold over its events: the director steers by it, a resume rebuilds
it from the transcript, and the renderer's figures count with it.

    progress = Progress(objectives=["the capital of Vellmar"])
    for event in read_transcript(path):
        progress.apply(event)
    progress.next_turn, progress.accepted, progress.mistakes   # 3, 1, {objective: what went wrong}

Only outcomes move it: `TurnAccepted` and `TurnRejected` (a turn cut off before its verdict is played
again, so it counts for nothing), the teach-back `Verdict` that says why a restatement was not accepted,
and `RunFinished`'s covered objectives. `asked` is the director's own (the questions it steered to each
fact, rejected turns' included, which no event carries); a resume starts it empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from teachback.transcripts.events import (
    TEACHBACK,
    Event,
    RunFinished,
    RunStarted,
    TurnAccepted,
    TurnRejected,
    TurnStarted,
    Verdict,
)

REJECTED = "The last answer about this was rejected; ask more precisely."
MISUNDERSTOOD = "Last time you misunderstood it ({reason})."


@dataclass
class Progress:
    """What the run has achieved so far; rebuilt from the transcript when a run resumes."""

    objectives: list[str] = field(default_factory=list)
    next_turn: int = 1
    accepted: int = 0
    rejected: int = 0
    covered: list[str] = field(default_factory=list)
    mistakes: dict[str, str] = field(default_factory=dict)  # objective -> what went wrong last time
    # (question, answer, student) accepted so far, so a resumed student remembers its lessons and the
    # next student in a classroom can follow up; student "" (old transcripts) is the first student
    lessons: list[tuple[str, str, str]] = field(default_factory=list)

    tries: dict[str, int] = field(default_factory=dict)  # objective -> turns spent on it
    taught: dict[int, int] = field(default_factory=dict)  # curriculum fact -> accepted turns that stated it
    # curriculum fact -> accepted turns of earlier learning rounds that stated it (the header's
    # `taught_before`): the director goes on from there, to the facts and phrasings not yet taught
    earlier: dict[int, int] = field(default_factory=dict)
    # curriculum fact -> turns steered to it that did not teach it (rejected, or an answer about something
    # else): the director tries other facts first, and gives one up for the run after MAX_MISSES
    missed: dict[int, int] = field(default_factory=dict)
    said: dict[int, str] = field(default_factory=dict)  # curriculum fact -> the last answer that taught it
    asked: dict[int, list[str]] = field(default_factory=dict)  # curriculum fact -> questions asked about it
    _steered: dict[int, list[int]] = field(default_factory=dict, repr=False, compare=False)  # turn -> facts
    # turn -> why its teach-back was not accepted, until the turn's outcome
    _misunderstood: dict[int, str] = field(default_factory=dict, repr=False, compare=False)

    def apply(self, event: Event) -> None:
        """Count one event of the run.

        >>> p = Progress(["o"])
        >>> p.apply(TurnRejected(t=1.0, turn=1, objective="o", reason="wrong"))
        >>> p.rejected, p.next_turn, p.mistakes["o"]
        (1, 2, 'The last answer about this was rejected; ask more precisely.')
        """
        if isinstance(event, RunStarted) and "taught_before" in event.options:
            self.earlier = {int(f): int(n) for f, n in event.options["taught_before"].items()}
        elif isinstance(event, TurnStarted):
            self._steered[event.turn] = list(event.facts) if isinstance(event.facts, list) else []
        elif isinstance(event, Verdict) and event.kind == TEACHBACK:
            if event.accepted:
                self._misunderstood.pop(event.turn, None)
            else:
                self._misunderstood[event.turn] = event.reason
        elif isinstance(event, TurnRejected):
            self._missed(event.turn, [])
            self.tries[event.objective] = self.tries.get(event.objective, 0) + 1
            self.rejected += 1
            self.mistakes[event.objective] = REJECTED
            self._misunderstood.pop(event.turn, None)
            self.next_turn = max(self.next_turn, event.turn + 1)
        elif isinstance(event, TurnAccepted):
            self._accepted(event)
        elif isinstance(event, RunFinished):
            self.covered += [o for o in dict.fromkeys(event.objectives_covered) if o not in self.covered]

    def _missed(self, turn: int, taught: list[int]) -> None:
        for fact in self._steered.pop(turn, []):
            if fact not in taught:
                self.missed[fact] = self.missed.get(fact, 0) + 1

    def _accepted(self, event: TurnAccepted) -> None:
        self._missed(event.turn, event.facts if isinstance(event.facts, list) else [])
        objective = event.objective
        self.tries[objective] = self.tries.get(objective, 0) + 1
        self.accepted += 1
        self.lessons.append((event.question, event.answer, event.student))
        for fact in event.facts if isinstance(event.facts, list) else []:
            self.taught[fact] = self.taught.get(fact, 0) + 1
            self.said[fact] = event.answer
        reason = self._misunderstood.pop(event.turn, None)
        if event.objective_covered:
            if objective not in self.covered:
                self.covered.append(objective)
            self.mistakes.pop(objective, None)
        elif reason is not None:
            self.mistakes[objective] = MISUNDERSTOOD.format(reason=reason)
        self.next_turn = max(self.next_turn, event.turn + 1)

    def taught_so_far(self) -> dict[int, int]:
        """Per curriculum fact, the accepted turns that stated it in this run and the earlier rounds.

        >>> p = Progress(earlier={0: 2, 1: 1})
        >>> p.taught = {1: 1, 3: 1}
        >>> p.taught_so_far()
        {0: 2, 1: 2, 3: 1}
        """
        merged = dict(self.earlier)
        for fact, n in self.taught.items():
            merged[fact] = merged.get(fact, 0) + n
        return merged

    def next_objective(self, open_objectives: Sequence[str] = ()) -> str:
        """Of the objectives with facts still to teach (`open_objectives`, when there is a curriculum),
        the one with the fewest turns; else the objective not yet covered that had the fewest turns (the
        first of those); once all are covered, cycle through them by turn. A small student that fails its
        teach-back again and again on one objective so moves on, and comes back to it with the hint of
        what went wrong."""
        if open_objectives:
            return min(open_objectives, key=lambda o: self.tries.get(o, 0))
        uncovered = [o for o in self.objectives if o not in self.covered]
        if uncovered:
            return min(uncovered, key=lambda o: self.tries.get(o, 0))
        return self.objectives[(self.next_turn - 1) % len(self.objectives)]

    @property
    def acceptance_rate(self) -> float:
        done = self.accepted + self.rejected
        return round(self.accepted / done, 3) if done else 0.0
