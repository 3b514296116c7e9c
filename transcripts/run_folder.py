"""Every file of a run folder, named in one place.

    >>> run = RunFolder(Path("r1"))
    >>> [p.as_posix() for p in (run.transcript, run.quiz("before"), run.quiz("after", "ana"))]
    ['r1/transcript.jsonl', 'r1/quiz-before.json', 'r1/quiz-after-ana.json']
    >>> [p.as_posix() for p in (run.finetune(), run.finetune("ana"), run.report.page)]
    ['r1/finetune.json', 'r1/finetune-ana.json', 'r1/report/report.html']
    >>> [p.as_posix() for p in (run.server_log("smollm2-135m"), run.attempt_log(2), run.round(3).path)]
    ['r1/llama-server-smollm2-135m.log', 'r1/attempt-2.log', 'r1/round-3']

A run with one student names its quiz and fine-tune files without a seat; in a classroom each student
names its own by its seat (`file_seats`), and so does the label its quiz carries (`seat_label`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunFolder:
    """A run folder: the transcript, the quiz and fine-tune records of its students, the servers' logs,
    a batch's attempt logs and the report."""

    path: Path

    @property
    def transcript(self) -> Path:
        """The events of the run (transcripts/recorder.py), the one file every run folder holds."""
        return self.path / "transcript.jsonl"

    def quiz(self, label: str, seat: str | None = None) -> Path:
        """A quiz of the run's student (`before`, `after`), or of seat `seat` in a classroom."""
        return self.path / f"quiz-{seat_label(label, seat)}.json"

    def finetune(self, seat: str | None = None) -> Path:
        """The record of fine-tuning the run's student (loss curves, speed, memory), or of seat `seat`."""
        return self.path / f"{seat_label('finetune', seat)}.json"

    def server_log(self, alias: str) -> Path:
        """The log of the managed llama-server serving the model `alias`."""
        return self.path / f"llama-server-{alias}.log"

    def attempt_log(self, number: int) -> Path:
        """What attempt `number` of a batch's job printed."""
        return self.path / f"attempt-{number}.log"

    @property
    def report(self) -> ReportFolder:
        return ReportFolder(self.path / "report")

    def round(self, number: int) -> RunFolder:
        """Round `number` of learning rounds, a run folder of its own inside this folder."""
        return RunFolder(self.path / f"round-{number}")

    def rounds_so_far(self) -> list[RunFolder]:
        """Rounds 1..N when this folder is round N of learning rounds (`round-N` beside rounds 1..N-1, each
        a run folder); none for a run of its own."""
        number = re.fullmatch(r"round-([1-9][0-9]*)", self.path.name)
        if number is None:
            return []
        rounds = [RunFolder(self.path.parent).round(n) for n in range(1, int(number.group(1)) + 1)]
        return rounds if all(r.transcript.is_file() for r in rounds) else []


@dataclass(frozen=True)
class ReportFolder:
    """What `teachback report` writes: the page, its figures and a PNG per chart."""

    path: Path

    @property
    def page(self) -> Path:
        return self.path / "report.html"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    def chart(self, name: str) -> Path:
        return self.path / f"{name}.png"


def seat_label(label: str, seat: str | None = None) -> str:
    """A classroom's files and quiz labels name their student: ("before", "ana") -> "before-ana"."""
    return f"{label}-{seat}" if seat else label


def file_seats(students: Sequence[str]) -> list[str | None]:
    """The seat each student names its files by: none for a run's one student, its name in a classroom.

    >>> file_seats(["student"]), file_seats(["ana", "ben"])
    ([None], ['ana', 'ben'])
    """
    return [None] if len(students) == 1 else list(students)


def student_file_seats(header: Any) -> list[str | None]:
    """The seats a run's students name their files by, from its header (`RunStarted.seats`); one unnamed
    seat for a run with one student, or a header from before seats (or none: a transcript that is gone)."""
    names = [str(s.get("name")) for s in getattr(header, "seats", None) or [] if s.get("role") == "student"]
    return file_seats(names) if names else [None]
