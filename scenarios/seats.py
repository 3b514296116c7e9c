"""Who sits at the table: every teacher and student seat of a scenario, named, with its own settings.

A scenario seats one `teacher:` or a panel of `teachers:`, and one `student:` or a classroom of
`students:`. Either way the run sees lists of seats:

    teacher_seats(scenario)             ->  [Seat("teacher", "teacher", TeacherRole(...))]
    student_seats(scenario, "vellmar")  ->  [StudentSeat("student", "student", ..., namespace="vellmar")]

    # students: [{name: ana}, {model: openai/gpt-4o-mini}]
    [(s.name, s.namespace, s.learning) for s in student_seats(scenario, "vellmar")]
        ->  [("ana", "vellmar-ana", "finetune"), ("student-2", "vellmar-student-2", "retrieval")]

A single seat is named by its role (`teacher`, `student`) unless it says otherwise, and a single student
keeps the scenario's namespace, so existing scenarios, transcripts and memories read as before. A listed
seat without a name is `teacher-1`, `student-2`, ... by position; a classroom student stores its turns in
`<namespace>-<name>` unless its `memory_namespace` says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from teachback.agents.endpoints import ENDPOINT_FIELDS, endpoint_record
from teachback.transcripts.run_folder import file_seats

if TYPE_CHECKING:
    from typing_extensions import Self

    from teachback.scenarios.schema import Scenario
    from teachback.transcripts.events import RunStarted

TEACHER = "teacher"
STUDENT = "student"


@dataclass(frozen=True)
class Seat:
    """One teacher or student: its role, its name in events, and its settings from the scenario."""

    role: str
    name: str
    settings: Any  # schema.TeacherRole or schema.StudentRole

    @property
    def model(self) -> str:
        return str(self.settings.model)

    @property
    def adapter(self) -> str | None:
        return getattr(self.settings, "adapter", None)

    @property
    def label(self) -> str:
        """How messages name it: `teacher` for the one teacher, `teacher ada` in a panel."""
        return self.role if self.name == self.role else f"{self.role} {self.name}"

    @property
    def agent_name(self) -> str:
        """The name autogen accepts (an identifier): `teacher-1` -> `teacher_1`."""
        name = "".join(c if c.isalnum() or c == "_" else "_" for c in self.name)
        return name if name.isidentifier() else f"{self.role}_{name}"

    def with_model(self, model: str) -> Self:
        return replace(self, settings=self.settings.model_copy(update={"model": model}))

    def with_adapter(self, adapter: str | None) -> Self:
        return replace(self, settings=self.settings.model_copy(update={"adapter": adapter}))


@dataclass(frozen=True)
class StudentSeat(Seat):
    """A student, with where its accepted turns go and how it learns from them.

    `learning` is `finetune` (a local GGUF run in-process; fine-tune it on `namespace`) or `retrieval`
    (it is shown the turns of `namespace` most relevant to each question; see memory/retrieval.py).
    """

    namespace: str = ""

    @property
    def learning(self) -> str:
        return str(self.settings.learns_by)

    @property
    def fine_tunable(self) -> bool:
        return self.learning == "finetune"


def teacher_seats(scenario: Scenario) -> list[Seat]:
    """The scenario's teachers: its panel, or its one teacher."""
    if scenario.teachers is None:
        return [Seat(TEACHER, scenario.teacher.name or TEACHER, scenario.teacher)]
    return [Seat(TEACHER, t.name or f"{TEACHER}-{i}", t) for i, t in enumerate(scenario.teachers, 1)]


def student_seats(scenario: Scenario, namespace: str | None = None) -> list[StudentSeat]:
    """The scenario's students with their memory namespaces (`namespace`: the scenario's, by default)."""
    base = namespace or scenario.memory.namespace or scenario.name
    if scenario.students is None:
        own = scenario.student.memory_namespace or base
        return [StudentSeat(STUDENT, scenario.student.name or STUDENT, scenario.student, namespace=own)]
    seats = []
    for i, settings in enumerate(scenario.students, 1):
        name = settings.name or f"{STUDENT}-{i}"
        seats.append(
            StudentSeat(STUDENT, name, settings, namespace=settings.memory_namespace or f"{base}-{name}")
        )
    return seats


def with_api_bases(scenario: Scenario, bases: dict[str, str]) -> Scenario:
    """The scenario with every seat of a role in `bases` (role -> URL, as `--teacher-base` gives) called at
    that URL instead of its own `api_base`."""
    update: dict[str, Any] = {}
    for role, several in ((TEACHER, "teachers"), (STUDENT, "students"), ("judge", None)):
        url = bases.get(role)
        if not url:
            continue
        group = getattr(scenario, several) if several else None
        if several and group is not None:
            update[several] = [seat.model_copy(update={"api_base": url}) for seat in group]
        else:
            update[role] = getattr(scenario, role).model_copy(update={"api_base": url})
    return scenario.model_copy(update=update) if update else scenario


def all_seats(scenario: Scenario) -> list[tuple[str, Seat | None, Any]]:
    """Every seat with its label in messages: (`teacher`, `teacher ada`, ..., `judge`), its Seat (None for
    the judge) and its settings."""
    seated: list[tuple[str, Seat | None, Any]] = []
    for seat in [*teacher_seats(scenario), *student_seats(scenario)]:
        seated.append((seat.label, seat, seat.settings))
    seated.append(("judge", None, scenario.judge))
    return seated


def seat_record(seat: Seat) -> dict[str, Any]:
    """What the transcript header says about a seat (RunStarted.seats): enough to quiz or train it later.
    Where it was called (api_base, the key's variable by name, timeout, retries) when the scenario says."""
    record: dict[str, Any] = {"role": seat.role, "name": seat.name, "model": seat.model}
    record["temperature"], record["max_tokens"] = seat.settings.temperature, seat.settings.max_tokens
    record.update(endpoint_record(seat.settings))
    if seat.adapter:
        record["adapter"] = seat.adapter
    if isinstance(seat, StudentSeat):
        record["namespace"] = seat.namespace
        record["learning"] = seat.learning
    return record


@dataclass(frozen=True)
class RecordedStudent:
    """A student as a run's header records it: enough to quiz it or fine-tune it afterwards."""

    name: str
    model: str
    namespace: str
    learning: str
    adapter: str | None = None
    file_seat: str | None = None  # None when the run had one student; its name names its files in a classroom
    endpoint: dict[str, Any] = field(default_factory=dict)  # api_base, api_key_env, timeout, retries if set


def recorded_students(header: RunStarted) -> list[RecordedStudent]:
    """The students a run's header records (its `seat_record`s); a header from before seats, as one."""
    from teachback.agents.models import resolve

    records = [s for s in getattr(header, "seats", None) or [] if s.get("role") == STUDENT]
    if not records:
        model = header.models.get(STUDENT, "")
        records = [
            {
                "name": STUDENT,
                "model": model,
                "adapter": header.options.get("adapter"),
                "namespace": header.options.get("memory_namespace"),
                "learning": "finetune" if model and resolve(model).is_local else "retrieval",
            }
        ]
    seats = file_seats([str(r.get("name")) for r in records])
    return [
        RecordedStudent(
            name=str(r.get("name", STUDENT)),
            model=str(r.get("model", "")),
            namespace=str(r.get("namespace") or header.scenario),
            learning=str(r.get("learning", "finetune")),
            adapter=r.get("adapter"),
            file_seat=seat,
            endpoint={k: r[k] for k in ENDPOINT_FIELDS if r.get(k) is not None},
        )
        for r, seat in zip(records, seats, strict=True)
    ]
