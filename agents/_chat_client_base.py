"""What every teachback model client shares: usage accounting, token estimates, model info, message mapping.

Subclasses implement `create`, `create_stream` and `close`; the rest of autogen's abstract
`ChatCompletionClient` surface lives here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelCapabilities,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from teachback.errors import ModelError

FinishReason = Literal["stop", "length", "function_calls", "content_filter", "unknown"]

# Per-message overhead of chat templates such as ChatML: `<|im_start|>role\n ... <|im_end|>\n`.
_MESSAGE_OVERHEAD_TOKENS = 5


class ChatClientBase(ChatCompletionClient):
    """Usage accounting and the boilerplate abstract members; text only, no tools, no vision."""

    def __init__(self, model: str, *, role: str, context_window: int, structured_output: bool = True):
        self.model = model
        self.role = role
        self.context_window = context_window
        self._total_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._actual_usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
        self._model_info = ModelInfo(
            vision=False,
            function_calling=False,
            json_output=structured_output,
            structured_output=structured_output,
            family=ModelFamily.UNKNOWN,
            multiple_system_messages=True,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(role={self.role!r}, model={self.model!r})"

    # -- usage -------------------------------------------------------------------------------------
    def _record_usage(self, usage: RequestUsage) -> None:
        self._total_usage = RequestUsage(
            prompt_tokens=self._total_usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._total_usage.completion_tokens + usage.completion_tokens,
        )
        self._actual_usage = RequestUsage(
            prompt_tokens=self._actual_usage.prompt_tokens + usage.prompt_tokens,
            completion_tokens=self._actual_usage.completion_tokens + usage.completion_tokens,
        )

    def actual_usage(self) -> RequestUsage:
        return self._actual_usage

    def total_usage(self) -> RequestUsage:
        return self._total_usage

    # -- token estimates ---------------------------------------------------------------------------
    def _count_text_tokens(self, text: str) -> int:
        """Tokens in `text`; a rough 4-characters-per-token estimate unless a subclass has a tokenizer."""
        return (len(text) + 3) // 4

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []) -> int:
        """Estimated prompt tokens for `messages`, chat-template overhead included."""
        total = 3  # the assistant header that opens the reply
        for message in to_openai_messages(messages):
            total += _MESSAGE_OVERHEAD_TOKENS + self._count_text_tokens(message["content"])
        return total

    def remaining_tokens(
        self, messages: Sequence[LLMMessage], *, tools: Sequence[Tool | ToolSchema] = []
    ) -> int:
        return max(0, self.context_window - self.count_tokens(messages, tools=tools))

    # -- capabilities ------------------------------------------------------------------------------
    @property
    def model_info(self) -> ModelInfo:
        return self._model_info

    @property
    def capabilities(self) -> ModelCapabilities:  # type: ignore[override]  # deprecated but abstract
        return ModelCapabilities(
            vision=False,
            function_calling=False,
            json_output=self._model_info["json_output"],
        )

    def _refuse_tools(self, tools: Sequence[Tool | ToolSchema]) -> None:
        if tools:
            raise ModelError(f"{self.role} {self.model}: teachback model clients do not support tools")


def _text(content: Any) -> str:
    """Message content as plain text: strings joined, anything else (images, calls) as its str."""
    if isinstance(content, str):
        return content
    return "\n".join(part if isinstance(part, str) else str(part) for part in content)


def to_openai_messages(messages: Sequence[LLMMessage]) -> list[dict[str, str]]:
    """Map autogen messages to OpenAI chat dicts.

    SystemMessage("Be brief") -> {"role": "system", "content": "Be brief"};
    UserMessage("Why?", source="student") -> {"role": "user", "content": "Why?"}. The source is not sent
    as `name`: local chat templates drop it and some providers reject it; agents put speaker names in
    the text when they matter.
    """
    out: list[dict[str, str]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            out.append({"role": "system", "content": message.content})
        elif isinstance(message, UserMessage):
            out.append({"role": "user", "content": _text(message.content)})
        elif isinstance(message, AssistantMessage):
            out.append({"role": "assistant", "content": _text(message.content)})
        elif isinstance(message, FunctionExecutionResultMessage):
            out.append({"role": "user", "content": "\n".join(r.content for r in message.content)})
        else:  # pragma: no cover - autogen's LLMMessage union is closed
            raise ModelError(f"unsupported message type {type(message).__name__}")
    return out


def json_schema_of(json_output: bool | type[BaseModel] | None) -> dict[str, Any] | None:
    """The JSON schema a structured-output request asks for, or None for plain JSON mode / no JSON."""
    if isinstance(json_output, type) and issubclass(json_output, BaseModel):
        return json_output.model_json_schema()
    return None


def llama_cpp_response_format(json_output: bool | type[BaseModel] | None) -> dict[str, Any] | None:
    """The `response_format` llama.cpp turns into a grammar: `{"type": "json_object"[, "schema": ...]}`.

    llama-cpp-python (in-process and its server) reads only type "json_object" and an optional "schema";
    OpenAI's `{"type": "json_schema", ...}` shape is not understood there.
    """
    if not json_output:
        return None
    schema = json_schema_of(json_output)
    return {"type": "json_object"} if schema is None else {"type": "json_object", "schema": schema}


def finish_reason(raw: str | None) -> FinishReason:
    """OpenAI's finish reasons in autogen's vocabulary."""
    if raw in ("stop", "length", "content_filter"):
        return raw  # type: ignore[return-value]
    if raw in ("tool_calls", "function_call"):
        return "function_calls"
    return "unknown"


def merged(base: Mapping[str, Any], *overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated by each mapping in turn (later wins)."""
    out = dict(base)
    for override in overrides:
        out.update(override)
    return out
