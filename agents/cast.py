"""The cast: the autogen-agentchat agents that play student, teacher and judge in one scenario.

Teacher and judge speak through litellm: a hosted model directly, a local GGUF through a managed
llama.cpp server on loopback (one per model file, shared by the roles that use it). A local student runs
in-process through llama.cpp, with an optional LoRA adapter; a hosted student speaks through litellm.
Tests hand in scripted clients instead; everything else is the same code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teachback.agents import prompts
from teachback.agents.judge import LLMVerdict
from teachback.agents.models import ModelRef, resolve
from teachback.errors import ModelError

if TYPE_CHECKING:
    from autogen_agentchat.base import ChatAgent
    from autogen_core.models import ChatCompletionClient

    from teachback.agents.llama_server import ServerPool

ROLES = ("student", "teacher", "judge")
STUDENT_CONTEXT_MESSAGES = 2  # the student sees the current exchange only; a 135M model drowns in more


@dataclass
class Cast:
    """The three agents of a run and the models behind them."""

    student: ChatAgent
    teacher: ChatAgent
    judge: ChatAgent
    models: dict[str, str]  # role -> model string as the user wrote it
    clients: list[ChatCompletionClient] = field(default_factory=list)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


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
) -> ChatCompletionClient:
    """The client a role speaks through, chosen by where its model lives."""
    if role == "student" and ref.is_local:
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
        server = pool.get(ref.local_path)
        return LiteLLMChatClient(
            server.litellm_model,
            api_base=server.api_base,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            seed=seed,
            role=role,
            json_output=schema,
        )
    return LiteLLMChatClient(
        ref.spec,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        seed=seed,
        role=role,
        json_output=schema,
    )


def build_cast(
    scenario: Any,
    scenario_dir: Path,
    *,
    models: dict[str, str],
    pool: ServerPool | None,
    seed: int,
    clients: dict[str, ChatCompletionClient] | None = None,
) -> Cast:
    """Seat the three roles. `models` maps role -> model string; `clients` (tests) replaces the clients."""
    from autogen_agentchat.agents import AssistantAgent

    made: dict[str, ChatCompletionClient] = {}
    for role in ROLES:
        if clients and role in clients:
            made[role] = clients[role]
            continue
        adapter = (
            resolve_adapter(scenario.student.adapter, scenario_dir, models[role])
            if role == "student"
            else None
        )
        made[role] = make_client(
            role, resolve(models[role]), getattr(scenario, role), pool=pool, seed=seed, adapter=adapter
        )
    topic = scenario.name
    student = AssistantAgent(
        "student",
        made["student"],
        system_message=system_prompt("student", scenario.student, topic),
        model_client_stream=True,
        model_context=primed_context(STUDENT_CONTEXT_MESSAGES),
        description="asks questions and restates what it learned",
    )
    teacher = AssistantAgent(
        "teacher",
        made["teacher"],
        system_message=system_prompt("teacher", scenario.teacher, topic),
        model_client_stream=True,
        description="answers from the scenario's knowledge",
    )
    judge = AssistantAgent(
        "judge",
        made["judge"],
        system_message=system_prompt("judge", scenario.judge, topic),
        model_client_stream=True,
        description="grades answers against the knowledge",
    )
    return Cast(student, teacher, judge, dict(models), list(made.values()))
