"""The typed events a run emits: the spine that the recorder, the live view and replay all share.

Wire format (schema version 1): one JSON object per line, `{"v": 1, "type": <event type>, "t": <seconds
since the run started>, ...fields}`. The first line of a transcript is always `run_started` (the header).

    >>> e = TokenDelta(t=1.5, turn=2, role="teacher", name="teacher", kind="answer", text="Zorn")
    >>> to_json(e)  # doctest: +ELLIPSIS
    '{"v": 1, "type": "token", "t": 1.5, "turn": 2, "role": "teacher", ..., "text": "Zorn"}'
    >>> from_dict(json.loads(to_json(e))) == e
    True

Adding a field with a default keeps version 1: older lines read with the default (so transcripts from
before teacher panels and classrooms replay unchanged). Renaming, removing or retyping a field means a
new schema version and a migration in `transcripts/reader.py`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA_VERSION = 1

# What a message or verdict is about.
QUESTION = "question"  # the student's question
ANSWER = "answer"  # the teacher's answer to it
TEACHBACK = "teachback"  # the student restating what it learned


@dataclass(frozen=True)
class Event:
    """Base of every event; `t` is seconds since the run started."""

    type: ClassVar[str] = "event"
    t: float


@dataclass(frozen=True)
class RunStarted(Event):
    """The transcript header: what ran, with which models and options. Never holds a secret."""

    type: ClassVar[str] = "run_started"
    run_id: str
    scenario: str
    scenario_path: str
    scenario_sha256: str
    models: dict[str, str]
    options: dict[str, Any]
    seed: int
    versions: dict[str, str]
    started_at: str
    objectives: list[str] = field(default_factory=list)
    resumed_from_turn: int = 0
    # every teacher and student seat: {"role", "name", "model"[, "adapter"]} and, for a student,
    # {"namespace", "learning"}; empty in transcripts from before panels and classrooms
    seats: list[dict[str, Any]] = field(default_factory=list)
    # the curriculum: the atomic facts to teach (turns name them by index) and, per objective, its facts;
    # empty in transcripts from before fact coverage
    facts: list[str] = field(default_factory=list)
    fact_objectives: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class TurnStarted(Event):
    """A turn begins: `student` (its seat name; "" in old transcripts) asks about `objective`, steered to
    the curriculum facts `facts` (indices into the header's `facts`)."""

    type: ClassVar[str] = "turn_started"
    turn: int
    objective: str
    student: str = ""
    facts: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class TokenDelta(Event):
    """A piece of text streamed by one speaker."""

    type: ClassVar[str] = "token"
    turn: int
    role: str
    name: str
    kind: str
    text: str


@dataclass(frozen=True)
class MessageDone(Event):
    """A complete message with its generation figures."""

    type: ClassVar[str] = "message"
    turn: int
    role: str
    name: str
    kind: str
    text: str
    model: str
    tokens: int
    seconds: float
    attempt: int = 1


@dataclass(frozen=True)
class Verdict(Event):
    """The judge's verdict on a question, an answer or a teach-back.

    `components` shows each signal's contribution (for instance `{"llm": 0.8, "grounded": 0.4}`).
    `name` is the seat whose message was judged: the student for a question or a teach-back, the
    teacher for an answer (in a panel, one verdict per candidate); "" in old transcripts.
    `claims` are the claims of a judged answer or teach-back, each `{"text", "status", "passage",
    "facts"[, "reason", "p_yes"]}`: its status (supported, uncertain, unsupported), the knowledge passage
    that supports it ("" for none) and the indices of those knowledge facts; empty in old transcripts.
    """

    type: ClassVar[str] = "verdict"
    turn: int
    kind: str
    score: float
    accepted: bool
    reason: str
    components: dict[str, float] = field(default_factory=dict)
    attempt: int = 1
    name: str = ""
    claims: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class TurnAccepted(Event):
    """A question and answer the judge accepted: training material from here on."""

    type: ClassVar[str] = "turn_accepted"
    turn: int
    objective: str
    question: str
    answer: str
    score: float
    teacher_model: str
    teachback: str = ""
    teachback_score: float = 0.0
    objective_covered: bool = False
    student: str = ""  # the seat that asked ("" in old transcripts: the one student)
    teacher: str = ""  # the seat whose answer was accepted
    facts: list[int] = field(default_factory=list)  # curriculum facts the answer (and teach-back) stated
    teachback_accepted: bool = False  # the restatement passed the gate: a training example too


@dataclass(frozen=True)
class MemoryStored(Event):
    """An accepted turn landed in the vector memory, or was recognised as a near-duplicate of one."""

    type: ClassVar[str] = "memory_stored"
    turn: int
    namespace: str
    id: str
    duplicate_of: str = ""
    similarity: float = 0.0
    existed: bool = False  # the very same turn was already stored (a re-run or a resume): updated in place


@dataclass(frozen=True)
class TurnRejected(Event):
    type: ClassVar[str] = "turn_rejected"
    turn: int
    objective: str
    reason: str
    student: str = ""


@dataclass(frozen=True)
class PanelDecision(Event):
    """How a teacher panel's answer was chosen in one attempt.

    `candidates` holds one entry per teacher: `{"name", "score", "accepted"}`, plus `"error"` for a
    member that failed. `chosen` is the accepted candidate's name, "" when none was accepted.
    """

    type: ClassVar[str] = "panel_decision"
    turn: int
    select: str
    chosen: str
    candidates: list[dict[str, Any]]
    reason: str = ""
    attempt: int = 1


@dataclass(frozen=True)
class MemoryRecalled(Event):
    """A retrieval student was shown earlier accepted turns from its memory before replying."""

    type: ClassVar[str] = "memory_recalled"
    turn: int
    name: str
    kind: str
    namespace: str
    ids: list[str]
    similarities: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Notice(Event):
    """Something a watcher should know that is not a message: a retry, a server starting, a warning."""

    type: ClassVar[str] = "notice"
    level: str
    message: str
    turn: int = 0


@dataclass(frozen=True)
class RunFinished(Event):
    """The last event of a run; `status` is completed, interrupted or failed."""

    type: ClassVar[str] = "run_finished"
    status: str
    turns: int
    accepted: int
    acceptance_rate: float
    objectives_covered: list[str]
    reason: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        RunStarted,
        TurnStarted,
        TokenDelta,
        MessageDone,
        Verdict,
        TurnAccepted,
        MemoryStored,
        TurnRejected,
        PanelDecision,
        MemoryRecalled,
        Notice,
        RunFinished,
    )
}


def to_dict(event: Event) -> dict[str, Any]:
    """The wire form of an event: version and type first, then `t`, then the fields in order."""
    out: dict[str, Any] = {"v": SCHEMA_VERSION, "type": event.type}
    for f in dataclasses.fields(event):
        out[f.name] = getattr(event, f.name)
    return out


def to_json(event: Event) -> str:
    return json.dumps(to_dict(event), ensure_ascii=False)


def from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from its wire form; raises ValueError naming what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    version = data.get("v")
    if version != SCHEMA_VERSION:
        raise ValueError(f"unsupported schema version {version!r} (this teachback reads v{SCHEMA_VERSION})")
    kind = data.get("type")
    cls = EVENT_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = required - data.keys()
    if missing:
        raise ValueError(f"{kind} event lacks {', '.join(sorted(missing))}")
    return cls(**{k: v for k, v in data.items() if k in names})
