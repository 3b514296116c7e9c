"""Draw a run's events in the terminal: the only code that draws dialogue.

The live view of a running scenario and replay feed the same events to the same renderer:

    renderer = make_renderer(Console(), plain=False)
    for event in events:
        renderer.handle(event)
    renderer.close()

`PlainRenderer` writes one line per message, verdict and outcome (pipes, CI logs):

    [turn 2] student (question): What does a Zorn valve regulate?
    [turn 2] judge: answer ACCEPT 0.82 — names the pressure loop

`LiveRenderer` streams each speaker's tokens into its own panel with rich `Live`, shows a progress line
(`turn 2/4 · objectives 1/5 · accepted 67% · 38.2 tok/s`) and prints every finished turn above the live
area, so the scrollback keeps the whole dialogue while the live area stays one turn small.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from teachback.transcripts.events import (
    ANSWER,
    Event,
    MemoryRecalled,
    MemoryStored,
    MessageDone,
    Notice,
    PanelDecision,
    RunFinished,
    RunStarted,
    TokenDelta,
    TurnAccepted,
    TurnRejected,
    TurnStarted,
    Verdict,
)
from teachback.transcripts.progress import Progress

REFRESH_PER_SECOND = 12
PANEL_LINES = 8  # the live area shows the last lines of each speaker's message
PANEL_CHARS = 1200
ROLE_STYLES = {"student": "cyan", "teacher": "magenta", "judge": "yellow"}
ROLE_ORDER = {"student": 0, "teacher": 1, "judge": 2}
LEVEL_STYLES = {"info": "dim", "warning": "yellow", "error": "bold red"}


class Renderer(Protocol):
    """Consumes events and draws them (a `Sink`, transcripts/sinks.py); `close()` ends the drawing."""

    def handle(self, event: Event) -> None: ...

    def close(self) -> None: ...


def make_renderer(console: Console, plain: bool) -> Renderer:
    """The live view on a terminal; plain lines when asked or when the console is not a terminal."""
    if plain or not console.is_terminal:
        return PlainRenderer(console)
    return LiveRenderer(console)


# --- figures both renderers show -------------------------------------------------------------------


class RunStats:
    """What the progress line and the summary report, gathered from the events seen so far: the run's
    `Progress` (the fold the director and a resume use), with the renderer's own figures beside it."""

    def __init__(self) -> None:
        self.header: RunStarted | None = None
        self.turn = 0
        self.so_far = Progress()  # accepted, rejected, objectives covered, facts taught
        self.tokens = 0
        self.seconds = 0.0
        self.teachers: dict[str, SeatStats] = {}  # a panel's members, by name
        self.students: dict[str, int] = {}  # accepted turns per student

    @property
    def accepted(self) -> int:
        return self.so_far.accepted

    @property
    def rejected(self) -> int:
        return self.so_far.rejected

    @property
    def covered(self) -> list[str]:
        return self.so_far.covered

    @property
    def taught(self) -> dict[int, int]:
        return self.so_far.taught

    def update(self, event: Event) -> None:
        self.so_far.apply(event)
        turn = getattr(event, "turn", 0)
        if isinstance(turn, int) and turn > 0:
            self.turn = turn
        if isinstance(event, RunStarted):
            self.header = event
        elif isinstance(event, MessageDone):
            self.tokens += max(0, event.tokens)
            self.seconds += max(0.0, event.seconds)
        elif isinstance(event, TurnAccepted):
            self.students[event.student] = self.students.get(event.student, 0) + 1
        elif isinstance(event, Verdict) and event.kind == ANSWER:
            self.teachers.setdefault(event.name, SeatStats()).judged(event)
        elif isinstance(event, PanelDecision):
            for candidate in event.candidates:
                member = self.teachers.setdefault(str(candidate.get("name", "")), SeatStats())
                member.failed += 1 if candidate.get("error") else 0
            if event.chosen:
                self.teachers.setdefault(event.chosen, SeatStats()).chosen += 1

    def seats(self, role: str) -> list[str]:
        """The names of the header's seats of `role` (none in transcripts from before panels)."""
        seats = self.header.seats if self.header else []
        return [str(s.get("name", "")) for s in seats if isinstance(s, dict) and s.get("role") == role]

    @property
    def budget(self) -> int | None:
        """The run's turn budget (`options["turns"]`), when the header says."""
        options = self.header.options if self.header else None
        turns = options.get("turns") if isinstance(options, dict) else None
        return turns if isinstance(turns, int) and not isinstance(turns, bool) else None

    @property
    def objectives(self) -> int:
        return len(self.header.objectives) if self.header else 0

    @property
    def facts(self) -> list[str]:
        """The curriculum's facts (none in transcripts from before fact coverage)."""
        facts = self.header.facts if self.header else []
        return [str(f) for f in facts] if isinstance(facts, list) else []

    def facts_taught(self) -> str:
        """`12/33`: facts stated by at least one accepted turn, of the curriculum's."""
        return f"{sum(1 for i in range(len(self.facts)) if self.taught.get(i))}/{len(self.facts)}"

    def steered(self, started: TurnStarted) -> str:
        """` · fact: Korrin is the capital…`: the curriculum fact a turn is steered to, if any."""
        facts = self.facts
        targets = [facts[i] for i in started.facts if isinstance(i, int) and 0 <= i < len(facts)]
        return f" · fact: {_short(targets[0])}" if targets else ""

    def missing_facts(self) -> list[str]:
        return [f for i, f in enumerate(self.facts) if not self.taught.get(i)]

    @property
    def acceptance(self) -> float | None:
        decided = self.accepted + self.rejected
        return self.accepted / decided if decided else None

    @property
    def tokens_per_second(self) -> float | None:
        return self.tokens / self.seconds if self.seconds > 0 else None

    def progress(self) -> Text:
        """`turn 2/4 · objectives 1/5 · accepted 67% · 38.2 tok/s`"""
        budget = f"/{self.budget}" if self.budget else ""
        parts = [f"turn {self.turn}{budget}"]
        if self.objectives:
            parts.append(f"objectives {len(self.covered)}/{self.objectives}")
        if self.facts:
            parts.append(f"facts taught {self.facts_taught()}")
        parts.append(f"accepted {_percent(self.acceptance)}")
        parts.append(f"{_rate(self.tokens_per_second)} tok/s")
        return Text(" · ".join(parts), style="dim")


class SeatStats:
    """One teacher's record in a panel: answers judged, accepted, their scores, chosen, failed."""

    def __init__(self) -> None:
        self.answers = 0
        self.accepted = 0
        self.score_sum = 0.0
        self.chosen = 0
        self.failed = 0

    def judged(self, verdict: Verdict) -> None:
        self.answers += 1
        self.accepted += 1 if verdict.accepted else 0
        self.score_sum += verdict.score

    def line(self) -> str:
        """`accepted 3/4 (75%) · mean score 0.71 · chosen 2 · failed 1`"""
        rate = self.accepted / self.answers if self.answers else None
        mean = self.score_sum / self.answers if self.answers else None
        parts = [f"accepted {self.accepted}/{self.answers} ({_percent(rate)})"]
        parts.append("mean score –" if mean is None else f"mean score {mean:.2f}")
        parts.append(f"chosen {self.chosen}")
        if self.failed:
            parts.append(f"failed {self.failed}")
        return " · ".join(parts)


def _percent(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def _rate(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


# --- the lines both renderers print ----------------------------------------------------------------


def speaker(role: str, name: str) -> str:
    """`student`, or `student alice` when a role's speaker has a name of its own."""
    return role if name in ("", role) else f"{role} {name}"


def _named(name: str) -> bool:
    """Whether a seat name says more than its role (panels and classrooms name their seats)."""
    return name not in ("", "teacher", "student")


def message_line(role: str, name: str, kind: str, text: str, attempt: int = 1) -> Text:
    """`student (question): What is ...`; later lines of the message are indented."""
    what = kind if attempt <= 1 else f"{kind}, attempt {attempt}"
    label = Text(f"{speaker(role, name)} ({what})", style=f"bold {ROLE_STYLES.get(role, '')}".strip())
    return Text.assemble(label, ": ", text.replace("\n", "\n    "))


def verdict_line(verdict: Verdict) -> Text:
    """`judge: answer ACCEPT 0.82 — reason [llm 0.80 · grounded 0.40]`"""
    what = verdict.kind if verdict.attempt <= 1 else f"{verdict.kind} (attempt {verdict.attempt})"
    if _named(verdict.name):
        what += f" by {verdict.name}"
    word, style = ("ACCEPT", "bold green") if verdict.accepted else ("REJECT", "bold red")
    line = Text.assemble(
        Text("judge", style=f"bold {ROLE_STYLES['judge']}"),
        f": {what} ",
        (word, style),
        f" {verdict.score:.2f}",
    )
    if verdict.reason:
        line.append(f" — {verdict.reason}")
    if verdict.components:
        parts = " · ".join(f"{k} {v:.2f}" for k, v in verdict.components.items())
        line.append(f" [{parts}]", style="dim")
    return line


def outcome_line(outcome: TurnAccepted | TurnRejected) -> Text:
    """`accepted (score 0.82, objective covered)` or `rejected: reason`"""
    if isinstance(outcome, TurnAccepted):
        extra = f", teacher {outcome.teacher}" if _named(outcome.teacher) else ""
        extra += ", objective covered" if outcome.objective_covered else ""
        return Text.assemble(("accepted", "bold green"), f" (score {outcome.score:.2f}{extra})")
    reason = f": {outcome.reason}" if outcome.reason else ""
    return Text.assemble(("rejected", "bold red"), reason)


def memory_line(stored: MemoryStored) -> Text:
    """`memory: stored 3f2a9c1b in vellmar` or `memory: duplicate of 3f2a9c1b (0.97), not a new example`"""
    if stored.existed:
        return Text(f"memory: {stored.id[:12]} was already stored in {stored.namespace}", style="dim")
    if stored.duplicate_of:
        return Text(
            f"memory: duplicate of {stored.duplicate_of[:12]} (similarity {stored.similarity:.2f}), "
            "kept out of training",
            style="yellow",
        )
    return Text(f"memory: stored {stored.id[:12]} in {stored.namespace}", style="dim")


def panel_line(decision: PanelDecision) -> Text:
    """`panel: ada chosen — best: score 0.82 of 2 accepted [ada 0.82 ✓ · bo 0.41 ✗ · cy failed]`"""
    what = "panel" if decision.attempt <= 1 else f"panel (attempt {decision.attempt})"
    line = Text(f"{what}: ", style="bold")
    if decision.chosen:
        line.append(f"{decision.chosen} chosen", style="bold green")
    else:
        line.append("none chosen", style="bold red")
    if decision.reason:
        line.append(f" — {decision.reason}")
    parts = []
    for c in decision.candidates:
        if c.get("error"):
            parts.append(f"{c.get('name', '?')} failed: {str(c['error'])[:60]}")
        else:
            mark = "✓" if c.get("accepted") else "✗"
            parts.append(f"{c.get('name', '?')} {float(c.get('score', 0.0)):.2f} {mark}")
    if parts:
        line.append(f" [{' · '.join(parts)}]", style="dim")
    return line


def recall_line(recalled: MemoryRecalled) -> Text:
    """`memory: student ana recalled 2 turns from vellmar-ana for its question (0.81, 0.62)`"""
    n = len(recalled.ids)
    sims = ", ".join(f"{x:.2f}" for x in recalled.similarities)
    where = f" from {recalled.namespace}" if recalled.namespace else ""
    text = f"memory: {speaker('student', recalled.name)} recalled {n} turn{'s' if n != 1 else ''}{where}"
    text += f" for its {recalled.kind}" + (f" ({sims})" if sims else "")
    return Text(text, style="dim")


def notice_line(notice: Notice) -> Text:
    return Text(f"{notice.level}: {notice.message}", style=LEVEL_STYLES.get(notice.level, ""))


def header_line(header: RunStarted) -> Text:
    """`run 20250101-abc · scenario zorn · student local/smollm2-135m · ... · 4 turns · threshold 0.7`"""
    start = f"resumed run {header.run_id} from turn {header.resumed_from_turn}"
    parts = [start if header.resumed_from_turn else f"run {header.run_id}", f"scenario {header.scenario}"]
    named = [s for s in header.seats if isinstance(s, dict) and _named(str(s.get("name", "")))]
    if named:
        parts += [f"{s.get('role')} {s.get('name')} {s.get('model')}" for s in named]
        parts += [
            f"{role} {model}"
            for role, model in header.models.items()
            if role not in {s.get("role") for s in named}
        ]
    else:
        parts += [f"{role} {model}" for role, model in header.models.items()]
    options = header.options if isinstance(header.options, dict) else {}
    if "turns" in options:
        parts.append(f"{options['turns']} turns")
    if "threshold" in options:
        parts.append(f"threshold {options['threshold']}")
    if header.objectives:
        parts.append(f"{len(header.objectives)} objectives")
    return Text(" · ".join(parts), style="bold")


def summary_table(finished: RunFinished, stats: RunStats) -> Table:
    """The end of a run: status, turns, accepted, rate, objectives covered, tokens/s, reason."""
    table = Table(title="run summary", show_header=False, box=box.SIMPLE, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    covered = len(set(finished.objectives_covered))
    total = f"/{stats.objectives}" if stats.objectives else ""
    status_style = "green" if finished.status == "completed" else "red"
    table.add_row("status", Text(finished.status, style=status_style))
    table.add_row("turns", str(finished.turns))
    table.add_row("accepted", str(finished.accepted))
    table.add_row("acceptance rate", _percent(finished.acceptance_rate))
    table.add_row("objectives covered", f"{covered}{total}")
    if stats.facts:
        missing = stats.missing_facts()
        table.add_row("facts taught", stats.facts_taught())
        if missing:
            shown = "; ".join(_short(f) for f in missing[:4]) + (
                f"; and {len(missing) - 4} more" if len(missing) > 4 else ""
            )
            table.add_row("not taught yet", shown)
    table.add_row("tokens/s", _rate(stats.tokens_per_second))
    teachers = stats.seats("teacher")
    if len(teachers) > 1:
        for name in teachers:
            table.add_row(f"teacher {name}", stats.teachers.get(name, SeatStats()).line())
    students = stats.seats("student")
    if len(students) > 1:
        for name in students:
            table.add_row(f"student {name}", f"accepted turns {stats.students.get(name, 0)}")
    if finished.reason:
        table.add_row("reason", finished.reason)
    return table


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _asked_by(started: TurnStarted) -> str:
    return f" (asked by {started.student})" if _named(started.student) else ""


def _with_turn(turn: Any, line: Text) -> Text:
    return Text(f"[turn {turn}] ") + line if turn else line


# --- plain ------------------------------------------------------------------------------------------


class PlainRenderer:
    """One line per completed message, verdict, outcome and notice; token deltas are ignored."""

    def __init__(self, console: Console):
        self.console = console
        self.stats = RunStats()

    def handle(self, event: Event) -> None:
        self.stats.update(event)
        if isinstance(event, RunFinished):
            self.console.print(summary_table(event, self.stats))
            return
        line = self._line(event)
        if line is not None:
            self.console.print(_with_turn(getattr(event, "turn", 0), line), soft_wrap=True)

    def _line(self, event: Event) -> Text | None:
        if isinstance(event, RunStarted):
            return header_line(event)
        if isinstance(event, TurnStarted):
            return Text(
                f"objective: {event.objective}" + _asked_by(event) + self.stats.steered(event), style="bold"
            )
        if isinstance(event, MessageDone):
            return message_line(event.role, event.name, event.kind, event.text, event.attempt)
        if isinstance(event, Verdict):
            return verdict_line(event)
        if isinstance(event, (TurnAccepted, TurnRejected)):
            return outcome_line(event)
        if isinstance(event, Notice):
            return notice_line(event)
        if isinstance(event, MemoryStored):
            return memory_line(event)
        if isinstance(event, PanelDecision):
            return panel_line(event)
        if isinstance(event, MemoryRecalled):
            return recall_line(event)
        return None  # token deltas: the completed message follows

    def close(self) -> None:
        pass


# --- live -------------------------------------------------------------------------------------------


@dataclass
class _Message:
    """One speaker's message in the current turn, streaming until `done`; a judge's carries its verdict."""

    role: str
    name: str
    kind: str
    text: str = ""
    attempt: int = 1
    done: bool = False
    verdict: Verdict | None = None
    judged_as: Verdict | None = None  # a panel candidate's verdict, shown in its own live panel

    def lines(self) -> list[Text]:
        out = []
        if self.text or (self.done and self.verdict is None):
            cut_off = "" if self.done else " …(cut off)"
            out.append(message_line(self.role, self.name, self.kind, self.text + cut_off, self.attempt))
        if self.verdict is not None:
            out.append(verdict_line(self.verdict))
        return out

    def panel(self) -> Panel:
        """The live panel: the tail of the text as it streams, then the verdict."""
        body = Text(_tail(self.text))
        if not self.done and self.verdict is None:
            body.append("▌", style="dim")
        for verdict in (self.verdict, self.judged_as):
            if verdict is not None:
                if body:
                    body.append("\n")
                body.append_text(verdict_line(verdict))
        what = self.kind if self.attempt <= 1 else f"{self.kind} · attempt {self.attempt}"
        title = " · ".join(p for p in (self.role, "" if self.name == self.role else self.name, what) if p)
        style = ROLE_STYLES.get(self.role, "white")
        return Panel(body, title=title, title_align="left", border_style=style, box=box.ROUNDED)


@dataclass
class _Turn:
    number: int
    objective: str = ""
    student: str = ""
    messages: list[_Message] = field(default_factory=list)
    outcome: TurnAccepted | TurnRejected | None = None
    decisions: list[tuple[int, PanelDecision]] = field(default_factory=list)  # (after message n, decision)

    @property
    def title(self) -> str:
        asked = f" · asked by {self.student}" if _named(self.student) else ""
        return f"turn {self.number}" + (f" · {self.objective}" if self.objective else "") + asked

    def message(self, role: str, name: str, kind: str) -> _Message:
        """The speaker's message still streaming, or a new one."""
        for m in reversed(self.messages):
            if (m.role, m.name, m.kind) == (role, name, kind) and not m.done:
                return m
        m = _Message(role, name, kind)
        self.messages.append(m)
        return m

    def judged(self, verdict: Verdict) -> _Message:
        """The judge's message this verdict belongs to, or a new one holding just the verdict."""
        for m in reversed(self.messages):
            if m.role == "judge" and m.kind == verdict.kind and m.verdict is None:
                return m
        m = _Message("judge", "judge", verdict.kind, done=True)
        self.messages.append(m)
        return m

    def candidate(self, verdict: Verdict) -> _Message | None:
        """The panel candidate (a named teacher's answer) this verdict is about, if any."""
        if verdict.kind != ANSWER or not _named(verdict.name):
            return None
        for m in reversed(self.messages):
            if (m.role, m.name, m.kind) == ("teacher", verdict.name, ANSWER):
                return m
        return None

    def panel(self) -> Panel:
        """The compact record printed above the live area once the turn is over."""
        lines: list[Text] = []
        for i, m in enumerate(self.messages):
            lines.extend(m.lines())
            lines.extend(panel_line(d) for n, d in self.decisions if n == i + 1)
        lines.extend(panel_line(d) for n, d in self.decisions if n > len(self.messages) or n == 0)
        if self.outcome is not None:
            lines.append(outcome_line(self.outcome))
        style = "dim"
        if isinstance(self.outcome, TurnAccepted):
            style = "green"
        elif isinstance(self.outcome, TurnRejected):
            style = "red"
        return Panel(Group(*lines), title=self.title, title_align="left", border_style=style, box=box.ROUNDED)

    def speakers(self) -> list[_Message]:
        """The latest message of each speaker, students first, then teachers, then judges."""
        latest: list[_Message] = []
        for m in reversed(self.messages):
            if all((m.role, m.name) != (s.role, s.name) for s in latest):
                latest.append(m)
        latest.reverse()
        return sorted(latest, key=lambda m: ROLE_ORDER.get(m.role, len(ROLE_ORDER)))


def _tail(text: str) -> str:
    """The end of a long message: what the live panel has room for."""
    cut = len(text) > PANEL_CHARS
    text = text[-PANEL_CHARS:]
    lines = text.split("\n")
    if len(lines) > PANEL_LINES:
        lines, cut = lines[-PANEL_LINES:], True
    return ("…" if cut else "") + "\n".join(lines)


class LiveRenderer:
    """A rich `Live` view of the current turn; finished turns are printed above it as compact panels.

    Tolerates any event order: events for another turn close the current one, a verdict without a judge
    message gets a panel of its own, a resumed header mid-stream just prints.
    """

    def __init__(self, console: Console, *, refresh_per_second: float = REFRESH_PER_SECOND):
        self.console = console
        self.stats = RunStats()
        self._turn: _Turn | None = None
        self._lock = threading.Lock()  # the refresh thread reads what handle() changes
        self._live = Live(
            console=console,
            refresh_per_second=refresh_per_second,
            get_renderable=self.view,
            vertical_overflow="ellipsis",
        )
        self._started = False
        self._closed = False

    def handle(self, event: Event) -> None:
        if self._closed:
            return
        if not self._started:
            self._live.start()
            self._started = True
        with self._lock:
            printed = self._apply(event)
        # Printed outside the lock: the refresh thread holds Live's lock while it asks for the view.
        for renderable in printed:
            self.console.print(renderable)
        if not isinstance(event, TokenDelta):  # tokens wait for the next tick; the rest shows at once
            self._live.refresh()

    def close(self) -> None:
        """Print the unfinished turn, if any, and stop the live view; calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            printed = self._finish_turn()
        for renderable in printed:
            self.console.print(renderable)
        if self._started:
            self._live.stop()

    def _apply(self, event: Event) -> list[RenderableType]:
        """Update the state for one event; returns what to print above the live area."""
        self.stats.update(event)
        if isinstance(event, RunStarted):
            return [*self._finish_turn(), header_line(event)]
        if isinstance(event, TurnStarted):
            printed = self._finish_turn()
            self._turn = _Turn(event.turn, event.objective + self.stats.steered(event), event.student)
            return printed
        if isinstance(event, (TokenDelta, MessageDone)):
            printed, turn = self._turn_for(event.turn)
            message = turn.message(event.role, event.name, event.kind)
            if isinstance(event, TokenDelta):
                message.text += event.text
            else:
                message.text, message.attempt, message.done = event.text, event.attempt, True
            return printed
        if isinstance(event, Verdict):
            printed, turn = self._turn_for(event.turn)
            turn.judged(event).verdict = event
            candidate = turn.candidate(event)
            if candidate is not None:
                candidate.judged_as = event
            return printed
        if isinstance(event, PanelDecision):
            printed, turn = self._turn_for(event.turn)
            turn.decisions.append((len(turn.messages), event))
            return printed
        if isinstance(event, (TurnAccepted, TurnRejected)):
            printed, turn = self._turn_for(event.turn)
            if not turn.objective:
                turn.objective = event.objective
            turn.outcome = event
            return [*printed, *self._finish_turn()]
        if isinstance(event, Notice):
            return [_with_turn(event.turn, notice_line(event))]
        if isinstance(event, MemoryStored):
            return [_with_turn(event.turn, memory_line(event))]
        if isinstance(event, MemoryRecalled):
            return [_with_turn(event.turn, recall_line(event))]
        if isinstance(event, RunFinished):
            return [*self._finish_turn(), summary_table(event, self.stats)]
        return []

    def _turn_for(self, number: int) -> tuple[list[RenderableType], _Turn]:
        """The current turn if it is `number`; otherwise the current one ends and `number` begins."""
        if self._turn is not None and self._turn.number == number:
            return [], self._turn
        printed = self._finish_turn()
        self._turn = _Turn(number)
        return printed, self._turn

    def _finish_turn(self) -> list[RenderableType]:
        turn, self._turn = self._turn, None
        if turn is None or (not turn.messages and turn.outcome is None):
            return []
        return [turn.panel()]

    def view(self) -> RenderableType:
        """What the live area shows: the current turn's speakers and the progress line."""
        with self._lock:
            parts: list[RenderableType] = []
            turn = self._turn
            if turn is not None:
                parts.append(Text(turn.title, style="bold"))
                parts.extend(m.panel() for m in turn.speakers())
            parts.append(self.stats.progress())
            return Group(*parts)
