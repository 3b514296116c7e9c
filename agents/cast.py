"""The cast: the autogen-agentchat agents that play the students, the teachers and the judge of a scenario.

Teachers and the judge speak through litellm: a hosted model directly (or the OpenAI-compatible server a
seat's `api_base` names), a local GGUF through a managed llama.cpp server on loopback (one per model file
and adapter, shared by the seats that use it). A student that learns by fine-tuning is a local GGUF run
in-process through llama.cpp, with an optional LoRA adapter; each such seat gets its own `Llama` (and its
lock), so two seats on one file never share one. A student that learns by retrieval speaks through
litellm like a teacher and carries its memory namespace as an autogen `Memory`. Tests hand in scripted
clients instead; everything else is the same code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teachback.agents import prompts
from teachback.agents.endpoints import client_options
from teachback.agents.judge import LLMVerdict
from teachback.agents.models import ModelRef, resolve
from teachback.errors import ModelError

if TYPE_CHECKING:
    from autogen_agentchat.base import ChatAgent
    from autogen_core.models import ChatCompletionClient

    from teachback.agents.entailment import Entailer
    from teachback.agents.llama_server import ServerPool
    from teachback.memory.store import MemoryStore
    from teachback.scenarios.seats import Seat, StudentSeat

ROLES = ("student", "teacher", "judge")
STUDENT_CONTEXT_MESSAGES = 2  # the student sees the current exchange only; a 135M model drowns in more
RECALL_TURNS = 3  # accepted turns a retrieval student is shown with each request


@dataclass
class Seated:
    """A seat and the agent sitting in it."""

    name: str
    agent: ChatAgent
    model: str
    namespace: str = ""  # a student's memory namespace
    learning: str = ""  # a student's: finetune or retrieval


@dataclass
class Cast:
    """The agents of a run and the models behind them: one or more teachers and students, one judge."""

    teachers: list[Seated]
    students: list[Seated]
    judge: ChatAgent
    models: dict[str, str]  # role -> the first seat's model string, as the user wrote it
    clients: list[ChatCompletionClient] = field(default_factory=list)
    judge_client: ChatCompletionClient | None = None  # asked directly: the director's own questions
    entailer: Entailer | None = None  # the judge model's entailment question for the gate (entailment.py)

    @property
    def teacher(self) -> ChatAgent:
        return self.teachers[0].agent

    @property
    def student(self) -> ChatAgent:
        return self.students[0].agent

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        close = getattr(self.entailer, "close", None)
        if close is not None:
            close()


def primed_context(buffer_size: int) -> Any:
    """A short rolling memory that always begins with the worked examples of good questions."""
    from autogen_core.model_context import BufferedChatCompletionContext
    from autogen_core.models import AssistantMessage, LLMMessage, UserMessage

    priming: list[LLMMessage] = []
    for example in prompts.examples("student_examples"):
        priming.append(UserMessage(content=example["ask"], source="director"))
        priming.append(AssistantMessage(content=example["question"], source="student"))

    class PrimedContext(BufferedChatCompletionContext):
        async def get_messages(self) -> list[LLMMessage]:
            return priming + await super().get_messages()

    return PrimedContext(buffer_size=buffer_size)


def system_prompt(role: str, settings: Any, topic: str) -> str:
    """The role's system prompt: the scenario's own, or the bundled one, plus the persona if any."""
    base = settings.system_prompt or prompts.render(f"{role}_system", topic=topic)
    return f"{base}\n\n{settings.persona}" if settings.persona else base


def resolve_adapter(
    adapter: str | None, scenario_dir: Path, model: str | None = None, seat: str = "student"
) -> Path | None:
    """The adapter file a seat loads: a path relative to the scenario, or "latest" for the newest adapter
    in the registry (`teachback adapters`) trained on the seat's own `model` file."""
    if adapter is None:
        return None
    if adapter == "latest":
        from teachback.memory.adapters import ADAPTERS_DIR, latest_adapter

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


def make_client(
    role: str,
    ref: ModelRef,
    settings: Any,
    *,
    pool: ServerPool | None,
    seed: int,
    adapter: Path | None = None,
    in_process: bool | None = None,
    seat: str | None = None,
) -> ChatCompletionClient:
    """The client a role speaks through, chosen by where its model lives.

    A local model runs in-process when `in_process` (default: for the student), else behind a server.
    A model served elsewhere is called at the seat's `api_base` with the key its `api_key_env` names,
    read now (agents/endpoints.py); `seat` names it in errors (default: the role).
    """
    if in_process is None:
        in_process = role == "student"
    endpoint = client_options(settings, ref.spec, seat or role)
    if in_process and ref.is_local:
        from teachback.agents.llama_local import LlamaCppChatClient

        return LlamaCppChatClient(
            str(ref.local_path),
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            seed=seed,
            lora_path=str(adapter) if adapter else None,
            role=role,
        )
    from teachback.agents.litellm_client import LiteLLMChatClient

    # The judge always asks for its verdict schema (a llama.cpp grammar when local).
    schema = LLMVerdict if role == "judge" else None
    if ref.is_local:
        if pool is None:
            raise ModelError(f"{role}: a local model needs a server pool")
        assert ref.local_path is not None
        server = pool.get(ref.local_path, lora_path=adapter)
        endpoint["api_base"] = server.api_base
        return LiteLLMChatClient(
            server.litellm_model,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            seed=seed,
            role=role,
            json_output=schema,
            **endpoint,
        )
    return LiteLLMChatClient(
        ref.spec,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        seed=seed,
        role=role,
        json_output=schema,
        **endpoint,
    )


def build_cast(
    scenario: Any,
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

    from teachback.scenarios.seats import student_seats, teacher_seats

    if seats is None:
        teachers = [s.with_model(models.get("teacher") or s.model) for s in teacher_seats(scenario)]
        students = [s.with_model(models.get("student") or s.model) for s in student_seats(scenario)]
    else:
        teachers, students = seats
    clients = clients or {}
    made: list[ChatCompletionClient] = []

    def client_for(seat: Seat | None, role: str, settings: Any, model: str, n: int) -> ChatCompletionClient:
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
        recall: list[Any] = []
        if seat.learning == "retrieval" and memory is not None:
            from teachback.memory.retrieval import StoreMemory

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
    for n, seat in enumerate(teachers):
        agent = AssistantAgent(
            seat.agent_name,
            client_for(seat, "teacher", seat.settings, seat.model, n),
            system_message=system_prompt("teacher", seat.settings, topic),
            model_client_stream=True,
            description="answers from the scenario's knowledge",
        )
        seated_teachers.append(Seated(seat.name, agent, seat.model))
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


def make_entailer(model: str, client: ChatCompletionClient, *, scripted: bool = False) -> Entailer:
    """The gate's entailment: in-process for a local judge (P(true) from its logits), else the question
    put to the judge's client (log-probabilities where the API gives them)."""
    from teachback.agents.entailment import ChatEntailer, LocalEntailer

    ref = resolve(model)
    if ref.local_path is not None and not scripted:
        return LocalEntailer(ref.local_path)
    return ChatEntailer(client)
