"""The only fake model: canned replies for fast unit tests, and a record of what it was asked.

    client = ScriptedChatClient(["Paris.", lambda messages: messages[-1].content.upper(), TimeoutError()])
    (await client.create(msgs)).content   -> "Paris."
    client.calls[0].messages              -> the messages of the first call

Streaming yields the reply word by word with its spaces ("a b" -> "a ", "b"); usage counts words.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import CreateResult, LLMMessage, RequestUsage
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from teachback.agents._chat_client_base import ChatClientBase, to_openai_messages
from teachback.errors import ModelCallError

Reply = str | Callable[[list[LLMMessage]], str] | BaseException


@dataclass
class ScriptedCall:
    """One call the client received."""

    messages: list[LLMMessage]
    kwargs: dict[str, Any] = field(default_factory=dict)  # stream, json_output, extra_create_args, tools


class ScriptExhaustedError(RuntimeError):
    """More calls than scripted replies: a test bug, never a model failure."""


class ScriptedChatClient(ChatClientBase):
    """Replies from a list, in order: a string, a callable of the messages, or an exception to raise."""

    def __init__(
        self,
        replies: Iterable[Reply],
        *,
        raise_on_call: int | None = None,
        model: str = "scripted",
        role: str = "model",
    ):
        """`raise_on_call=n` makes the n-th call (1-based) fail with ModelCallError without using a reply."""
        super().__init__(model, role=role, context_window=1_000_000)
        self.replies: list[Reply] = list(replies)
        self.raise_on_call = raise_on_call
        self.calls: list[ScriptedCall] = []

    def _count_text_tokens(self, text: str) -> int:
        return len(text.split())

    def _next_reply(self, messages: Sequence[LLMMessage], **kwargs: Any) -> str:
        self.calls.append(ScriptedCall(list(messages), kwargs))
        n = len(self.calls)
        if self.raise_on_call == n:
            raise ModelCallError(f"{self.role} {self.model} failed: scripted failure on call {n}")
        if not self.replies:
            raise ScriptExhaustedError(f"{self.role} {self.model}: no scripted reply left for call {n}")
        item = self.replies.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item if isinstance(item, str) else item(list(messages))

    def _result(self, messages: Sequence[LLMMessage], reply: str) -> CreateResult:
        usage = RequestUsage(
            prompt_tokens=sum(len(m["content"].split()) for m in to_openai_messages(messages)),
            completion_tokens=len(reply.split()),
        )
        self._record_usage(usage)
        return CreateResult(finish_reason="stop", content=reply, usage=usage, cached=False)

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",  # autogen's; unused: no tools
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        reply = self._next_reply(
            messages,
            stream=False,
            json_output=json_output,
            extra_create_args=dict(extra_create_args),
            tools=tools,
        )
        return self._result(messages, reply)

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",  # autogen's; unused: no tools
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        reply = self._next_reply(
            messages,
            stream=True,
            json_output=json_output,
            extra_create_args=dict(extra_create_args),
            tools=tools,
        )
        for word in split_words(reply):
            yield word
        yield self._result(messages, reply)

    async def close(self) -> None:
        """Nothing to free."""


def split_words(text: str) -> list[str]:
    """Stream chunks that join back to `text`: "  a  b " -> ["  a  ", "b "]."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])
