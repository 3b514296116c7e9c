"""The table at the end of a batch: one row per run, read from the plan and the run folders.

    run               status   tries   turns   accepted   rate   quiz          seconds
    ─────────────────────────────────────────────────────────────────────────────────
    invented-domain   done         1       1          1   100%   0.40 → 0.80        17
    skill-procedure   failed       2       –          –      –   –                   3

Turns and acceptance come from the transcript's last `RunFinished` (a resumed run ends with the totals
of all its parts); the quiz from `quiz-before.json` / `quiz-after.json` (`{"totals": {"score", "correct",
"n"}}`) when the run folder has them, a classroom's per student (`quiz-before-<seat>.json`, shown as
`ana 0.40 → 0.80 · ben – → 0.60`). Anything missing shows as "–".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from teachback.scenarios.batch import Batch
from teachback.transcripts.run_folder import RunFolder, student_file_seats

if TYPE_CHECKING:
    from rich.console import Console

    from teachback.transcripts.events import Event, RunFinished

NONE = "–"


@dataclass(frozen=True)
class Row:
    name: str
    scenario: str
    status: str
    attempts: int
    turns: int | None
    accepted: int | None
    acceptance_rate: float | None
    quiz: str
    seconds: float
    error: str


def read_events(run_dir: Path) -> list[Event]:
    """The run's events, or none (no transcript, or one that cannot be read)."""
    from teachback.errors import TranscriptError
    from teachback.transcripts.reader import read_transcript

    try:
        return read_transcript(RunFolder(run_dir).transcript, allow_truncated_tail=True)
    except TranscriptError:
        return []


def last_finish(run_dir: Path) -> RunFinished | None:
    """The transcript's last RunFinished event, or None (no transcript, or a run that never finished)."""
    from teachback.transcripts.events import RunFinished

    return next((e for e in reversed(read_events(run_dir)) if isinstance(e, RunFinished)), None)


def quiz_score(run_dir: Path) -> str:
    """`0.40 → 0.80` (before → after; `– → 0.80` with no quiz before), or "–"; from the quiz JSON files.

    A classroom's students each have their own: `ana 0.40 → 0.80 · ben – → 0.60`."""
    events = read_events(run_dir)
    seats = student_file_seats(events[0] if events else None)
    scores = {seat: _quiz_score(RunFolder(run_dir), seat) for seat in seats}
    if all(score == NONE for score in scores.values()):
        return NONE
    return " · ".join(score if seat is None else f"{seat} {score}" for seat, score in scores.items())


def _quiz_score(folder: RunFolder, seat: str | None) -> str:
    scores = []
    for path in (folder.quiz("before", seat), folder.quiz("after", seat)):
        try:
            totals = json.loads(path.read_text(encoding="utf-8"))["totals"]
            scores.append(f"{float(totals['score']):.2f}")
        except (OSError, ValueError, KeyError, TypeError):
            scores.append(NONE)
    return NONE if scores == [NONE, NONE] else " → ".join(scores)


def rows(batch: Batch) -> list[Row]:
    out = []
    for job in batch.jobs:
        run_dir = batch.run_dir(job)
        finish = last_finish(run_dir)
        out.append(
            Row(
                name=job.name,
                scenario=job.scenario,
                status=job.status,
                attempts=job.attempts,
                turns=finish.turns if finish else None,
                accepted=finish.accepted if finish else None,
                acceptance_rate=finish.acceptance_rate if finish else None,
                quiz=quiz_score(run_dir),
                seconds=job.seconds,
                error=job.errors[-1] if job.errors and job.status != "done" else "",
            )
        )
    return out


def render(batch: Batch, console: Console) -> None:
    """Print the summary table, then the last error of each run that did not finish."""
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"batch {batch.dir}", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    for column in ("run", "status", "tries", "turns", "accepted", "rate", "quiz", "seconds"):
        justify: Literal["left", "right"] = "left" if column in ("run", "status", "quiz") else "right"
        table.add_column(column, justify=justify, no_wrap=True)
    style = {
        "done": "green",
        "failed": "red",
        "pending": "yellow",
        "running": "yellow",
        "interrupted": "yellow",
    }
    shown = rows(batch)
    for row in shown:
        table.add_row(
            row.name,
            f"[{style.get(row.status, '')}]{row.status}[/]",
            str(row.attempts),
            _show(row.turns),
            _show(row.accepted),
            NONE if row.acceptance_rate is None else f"{row.acceptance_rate:.0%}",
            row.quiz,
            f"{row.seconds:.0f}",
        )
    console.print(table)
    for row in shown:
        if row.error:
            console.print(f"{row.name}: {row.error}", style="red", markup=False, highlight=False)


def _show(value: int | None) -> str:
    return NONE if value is None else str(value)
