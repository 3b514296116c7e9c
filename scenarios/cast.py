"""Seating a scenario's cast: its teachers, students and judge as autogen-agentchat agents.

A student that learns by retrieval speaks through litellm like a teacher and carries its memory namespace
as an autogen `Memory` (memory/retrieval.py). A seat's `adapter:` is a file next to the scenario, or
`latest`: the newest adapter in the registry (memory/adapters.py) trained on the seat's model. The agents'
pieces and the clients they speak through are agents/cast.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from teachback.agents.cast import Cast, Seated, make_client, make_entailer, primed_context, system_prompt
from teachback.agents.models import resolve
from teachback.errors import ModelError
from teachback.memory.adapters import ADAPTERS_DIR, latest_adapter
from teachback.scenarios.seats import student_seats, teacher_seats

if TYPE_CHECKING:
    from autogen_core.memory import Memory
    from autogen_core.models import ChatCompletionClient

    from teachback.agents.llama_server import ServerPool
    from teachback.memory.store import MemoryStore
    from teachback.scenarios.schema import Role, Scenario
    from teachback.scenarios.seats import Seat, StudentSeat

STUDENT_CONTEXT_MESSAGES = 2  # the student sees the current exchange only; a 135M model drowns in more
RECALL_TURNS = 3  # accepted turns a retrieval student is shown with each request


def resolve_adapter(
    adapter: str | None, scenario_dir: Path, model: str | None = None, seat: str = "student"
) -> Path | None:
    """The adapter file a seat loads: a path relative to the scenario, or "latest" for the newest adapter
    in the registry (`teachback adapters`) trained on the seat's own `model` file."""
    if adapter is None:
        return None
    if adapter == "latest":
        base = resolve(model).local_path if model else None
        if base is None:
            raise ModelError(f"{seat}.adapter: 'latest' needs a local GGUF model, not {model!r}")
        found = latest_adapter(base)
        if found is None:
            raise ModelError(
                f"{seat}.adapter: 'latest': no adapter for {base.name} in {ADAPTERS_DIR}/ yet; "
                "train one with `teachback finetune`, or remove `adapter: latest`"
            )
        return found
    path = (scenario_dir / adapter).expanduser()
    if not path.is_file():
        raise ModelError(f"{seat}.adapter: no such adapter file: {path}")
    return path.resolve()


def build_cast(
    scenario: Scenario,
    scenario_dir: Path,
    *,
    models: dict[str, str],
    pool: ServerPool | None,
    seed: int,
    clients: dict[str, ChatCompletionClient] | None = None,
    seats: tuple[list[Seat], list[StudentSeat]] | None = None,
    memory: MemoryStore | None = None,
) -> Cast:
    """Seat every teacher, every student and the judge.

    `seats` are the (teachers, students) to seat, default the scenario's with `models` (role -> model
    string) applied to every seat of a role. `clients` (tests) replaces a seat's client, found by seat
    name, then by role. `memory` is where retrieval students look up what they were taught.
    """
    from autogen_agentchat.agents import AssistantAgent

    if seats is None:
        teachers = [s.with_model(models.get("teacher") or s.model) for s in teacher_seats(scenario)]
        students = [s.with_model(models.get("student") or s.model) for s in student_seats(scenario)]
    else:
        teachers, students = seats
    clients = clients or {}
    made: list[ChatCompletionClient] = []

    def client_for(seat: Seat | None, role: str, settings: Role, model: str, n: int) -> ChatCompletionClient:
        scripted = clients.get(seat.name) if seat is not None else None
        scripted = scripted or clients.get(role)
        if scripted is not None:
            made.append(scripted)
            return scripted
        label = role if seat is None or seat.name == role else f"{role} {seat.name}"
        adapter = (
            resolve_adapter(seat.adapter, scenario_dir, model, seat=label) if seat and seat.adapter else None
        )
        in_process = role == "student" and getattr(seat, "fine_tunable", False)
        if role == "student" and in_process and not resolve(model).is_local:
            raise ModelError(f"{label}: learning: finetune needs a local GGUF model, not {model!r}")
        client = make_client(
            role,
            resolve(model),
            settings,
            pool=pool,
            seed=seed + n,
            adapter=adapter,
            in_process=in_process,
            seat=label,
        )
        made.append(client)
        return client

    topic = scenario.name
    seated_students = []
    for n, seat in enumerate(students):
        recall: list[Memory] = []
        if seat.learning == "retrieval" and memory is not None:
            from teachback.memory.retrieval import StoreMemory  # loads autogen-core: only when used

            recall = [StoreMemory(memory, seat.namespace, k=RECALL_TURNS)]
        agent = AssistantAgent(
            seat.agent_name,
            client_for(seat, "student", seat.settings, seat.model, n),
            system_message=system_prompt("student", seat.settings, topic),
            model_client_stream=True,
            model_context=primed_context(STUDENT_CONTEXT_MESSAGES),
            memory=recall or None,
            description="asks questions and restates what it learned",
        )
        seated_students.append(Seated(seat.name, agent, seat.model, seat.namespace, seat.learning))
    seated_teachers = []
    for n, teacher in enumerate(teachers):
        agent = AssistantAgent(
            teacher.agent_name,
            client_for(teacher, "teacher", teacher.settings, teacher.model, n),
            system_message=system_prompt("teacher", teacher.settings, topic),
            model_client_stream=True,
            description="answers from the scenario's knowledge",
        )
        seated_teachers.append(Seated(teacher.name, agent, teacher.model))
    judge_model = models.get("judge") or scenario.judge.model
    judge_client = client_for(None, "judge", scenario.judge, judge_model, 0)
    judge = AssistantAgent(
        "judge",
        judge_client,
        system_message=system_prompt("judge", scenario.judge, topic),
        model_client_stream=True,
        description="grades answers against the knowledge",
    )
    first = {"student": students[0].model, "teacher": teachers[0].model, "judge": judge_model}
    entailer = make_entailer(judge_model, judge_client, scripted="judge" in clients)
    return Cast(seated_teachers, seated_students, judge, first, made, judge_client, entailer)
