"""The cast's pieces: the seated agents of a run (`Seated`, `Cast`) and the client each seat speaks through.

Teachers and the judge speak through litellm: a hosted model directly (or the OpenAI-compatible server a
seat's `api_base` names), a local GGUF through a managed llama.cpp server on loopback (one per model file
and adapter, shared by the seats that use it). A student that learns by fine-tuning is a local GGUF run
in-process through llama.cpp, with an optional LoRA adapter; each such seat gets its own `Llama` (and its
lock), so two seats on one file never share one. Tests hand in scripted clients instead; everything else
is the same code path. Seating a scenario's cast (its seats, adapters and memory) is
`teachback.scenarios.cast.build_cast`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teachback.agents import prompts
from teachback.agents.endpoints import client_options
from teachback.agents.judge import LLMVerdict
from teachback.agents.models import ModelRef, entailment_threshold, resolve
from teachback.errors import ModelError

if TYPE_CHECKING:
    from autogen_agentchat.base import ChatAgent
    from autogen_core.models import ChatCompletionClient

    from teachback.agents.entailment import Entailer
    from teachback.agents.llama_server import ServerPool

ROLES = ("student", "teacher", "judge")


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


def make_entailer(model: str, client: ChatCompletionClient, *, scripted: bool = False) -> Entailer:
    """The gate's entailment: in-process for a local judge (P(true) from its logits), else the question
    put to the judge's client (log-probabilities where the API gives them)."""
    from teachback.agents.entailment import ChatEntailer, LocalEntailer

    ref = resolve(model)
    threshold = entailment_threshold(model)
    if ref.local_path is not None and not scripted:
        return LocalEntailer(ref.local_path, threshold=threshold)
    return ChatEntailer(client, threshold=threshold)
