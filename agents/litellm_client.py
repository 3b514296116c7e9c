"""A model client over `litellm.acompletion`: any hosted API, or a local OpenAI-compatible server.

    client = LiteLLMChatClient("openai/smollm2", api_base="http://127.0.0.1:8123/v1", role="teacher")
    result = await client.create([UserMessage(content="Why is the sky blue?", source="student")])

Failures that outlast litellm's retries become one-line `ModelCallError`s naming role, model and server.
The API key is passed to litellm on each call and never appears in repr, messages or logs.
"""

from __future__ import annotations

import asyncio
import os
import re
import warnings
from collections.abc import AsyncGenerator, Mapping, Sequence
from types import ModuleType
from typing import Any

from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionTokenLogprob,
    CreateResult,
    LLMMessage,
    RequestUsage,
    TopLogprob,
)
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from teachback.agents._chat_client_base import (
    ChatClientBase,
    finish_reason,
    json_schema_of,
    llama_cpp_response_format,
    to_openai_messages,
)
from teachback.errors import ModelCallError

_litellm: ModuleType | None = None

# pydantic's warning about litellm's TypedDicts; tests add it to their filters as "ignore:<this>:UserWarning".
READONLY_WARNING = r".*is using the `ReadOnly` qualifier"

# Placeholder key for keyless local servers: the OpenAI SDK refuses to send a request without one.
_NO_KEY = "sk-no-key-needed"


def import_litellm() -> ModuleType:
    """Import litellm once, offline and quiet (no price-list fetch, no telemetry, no debug banners).

    litellm builds pydantic schemas lazily on its first calls, and pydantic warns about their TypedDict
    `ReadOnly` items; that warning is silenced for the process (pytest's own filters still apply first).
    """
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        warnings.filterwarnings("ignore", message=READONLY_WARNING, category=UserWarning)
        import litellm

        litellm.suppress_debug_info = True
        if hasattr(litellm, "telemetry"):
            litellm.telemetry = False
        _litellm = litellm
    return _litellm


async def import_litellm_async() -> ModuleType:
    """import_litellm in a worker thread the first time (it takes ~5 s), so the event loop keeps running."""
    return _litellm if _litellm is not None else await asyncio.to_thread(import_litellm)


class LiteLLMChatClient(ChatClientBase):
    """An autogen ChatCompletionClient over `litellm.acompletion`, streaming or not."""

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        temperature: float = 0.2,
        max_tokens: int = 256,
        timeout: float = 120,
        num_retries: int = 2,
        seed: int | None = None,
        role: str = "model",
        extra: Mapping[str, Any] | None = None,
        context_window: int = 8192,
        llama_server: bool | None = None,
        json_output: bool | type[BaseModel] | None = None,
    ):
        """`extra` goes into every litellm call (e.g. `{"mock_response": "hi"}` in tests).

        `json_output` is the structured output every call asks for unless the call names its own: how a
        judge agent gets grammar-constrained verdicts without the agent knowing about schemas.

        `llama_server` says whether `api_base` is a llama-cpp-python server, which wants its own
        structured-output shape; by default it is assumed for `openai/...` models with an `api_base`.
        """
        super().__init__(model, role=role, context_window=context_window)
        self.api_base = api_base
        self._api_key = api_key
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.num_retries = num_retries
        self.seed = seed
        self._calls = 0
        self._extra = dict(extra or {})
        if llama_server is None:
            llama_server = api_base is not None and model.startswith("openai/")
        self.llama_server = llama_server
        self.json_output = json_output

    @property
    def where(self) -> str:
        """`model` or `model at api_base`, for messages."""
        return self.model if self.api_base is None else f"{self.model} at {self.api_base}"

    def _response_format(self, json_output: bool | type[BaseModel] | None) -> Any:
        if json_output is False:  # the call asks for plain text, whatever the client's default
            return None
        json_output = json_output or self.json_output
        if not json_output:
            return None
        if self.llama_server:
            return llama_cpp_response_format(json_output)
        if json_schema_of(json_output) is None:
            return {"type": "json_object"}
        return json_output  # litellm turns a pydantic class into each provider's structured-output shape

    def _call_args(
        self,
        messages: Sequence[LLMMessage],
        json_output: bool | type[BaseModel] | None,
        extra_create_args: Mapping[str, Any],
        stream: bool,
    ) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(messages),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "timeout": self.timeout,
            "num_retries": self.num_retries,
        }
        if self.api_base is not None:
            args["api_base"] = self.api_base
        if self._api_key is not None:
            args["api_key"] = self._api_key
        elif self.api_base is not None:
            args["api_key"] = _NO_KEY
        if self.seed is not None:  # a per-call sequence, as the in-process student: reproducible, yet a
            args["seed"] = self.seed + self._calls  # retried question is not answered the same way again
        self._calls += 1
        response_format = self._response_format(json_output)
        if response_format is not None:
            args["response_format"] = response_format
        if stream:
            args["stream"] = True
            if not self.llama_server:
                # llama.cpp's server sends no usage when streaming; asked anyway, litellm would make
                # some up with its own tokenizer. Counting chunks there is exact (one token each).
                args["stream_options"] = {"include_usage": True}
        args.update(self._extra)
        args.update(extra_create_args)
        return args

    def _call_error(self, exc: BaseException) -> ModelCallError:
        """One line: who failed, where, after how many retries, and the short cause."""
        cause = short_cause(exc, timeout=self.timeout)
        if self._api_key:
            cause = cause.replace(self._api_key, "***")
        retries = f"{self.num_retries} retries" if self.num_retries != 1 else "1 retry"
        return ModelCallError(f"{self.role} {self.where} failed after {retries}: {cause}")

    async def create(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> CreateResult:
        """One whole reply."""
        self._refuse_tools(tools)
        litellm = await import_litellm_async()
        args = self._call_args(messages, json_output, extra_create_args, stream=False)
        task = asyncio.ensure_future(litellm.acompletion(**args))
        if cancellation_token is not None:
            cancellation_token.link_future(task)
        try:
            response = await task
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise self._call_error(exc) from None
        choice = response.choices[0]
        content = choice.message.content or ""
        usage = _usage(getattr(response, "usage", None))
        if usage is None:
            usage = RequestUsage(
                prompt_tokens=self.count_tokens(messages), completion_tokens=self._count_text_tokens(content)
            )
        self._record_usage(usage)
        return CreateResult(
            finish_reason=finish_reason(choice.finish_reason),
            content=content,
            usage=usage,
            cached=False,
            logprobs=_logprobs(getattr(choice, "logprobs", None)),
        )

    async def create_stream(
        self,
        messages: Sequence[LLMMessage],
        *,
        tools: Sequence[Tool | ToolSchema] = [],
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Text chunks as they arrive, then one CreateResult with the whole reply and its usage."""
        self._refuse_tools(tools)
        litellm = await import_litellm_async()
        args = self._call_args(messages, json_output, extra_create_args, stream=True)
        parts: list[str] = []
        n_chunks = 0
        raw_finish: str | None = None
        usage: RequestUsage | None = None
        try:
            opening = asyncio.ensure_future(litellm.acompletion(**args))
            if cancellation_token is not None:
                cancellation_token.link_future(opening)
            stream = await opening
            async for chunk in stream:
                usage = _usage(getattr(chunk, "usage", None)) or usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                raw_finish = choice.finish_reason or raw_finish
                text = getattr(choice.delta, "content", None)
                if text:
                    parts.append(text)
                    n_chunks += 1
                    yield text
        except asyncio.CancelledError:
            raise
        except ModelCallError:
            raise
        except Exception as exc:
            raise self._call_error(exc) from None
        content = "".join(parts)
        if usage is None:  # the server sent no usage: count chunks, estimate the prompt
            usage = RequestUsage(prompt_tokens=self.count_tokens(messages), completion_tokens=n_chunks)
        self._record_usage(usage)
        yield CreateResult(
            finish_reason=finish_reason(raw_finish), content=content, usage=usage, cached=False
        )

    async def close(self) -> None:
        """Nothing to free: litellm pools its own HTTP clients."""


def _logprobs(raw: Any) -> list[ChatCompletionTokenLogprob] | None:
    """litellm's per-token log-probabilities (OpenAI's shape) as autogen's, or None when absent."""
    content = getattr(raw, "content", None) if raw is not None else None
    if not content:
        return None
    out = []
    for item in content:
        # autogen's TopLogprob has no token field: the alternative's text travels as its UTF-8 bytes
        tops = [
            TopLogprob(logprob=float(t.logprob), bytes=list(str(t.token).encode("utf-8")))
            for t in (item.top_logprobs or [])
        ]
        out.append(
            ChatCompletionTokenLogprob(token=str(item.token), logprob=float(item.logprob), top_logprobs=tops)
        )
    return out


def _usage(raw: Any) -> RequestUsage | None:
    """litellm's usage object as autogen's, or None when absent or empty."""
    if raw is None:
        return None
    prompt = getattr(raw, "prompt_tokens", None) or 0
    completion = getattr(raw, "completion_tokens", None) or 0
    if not prompt and not completion:
        return None
    return RequestUsage(prompt_tokens=int(prompt), completion_tokens=int(completion))


def short_cause(exc: BaseException, *, timeout: float | None = None) -> str:
    """A few words on why a call failed: 'connection refused', 'timed out after 5s', ...

    litellm maps every provider's errors onto OpenAI's exception names; their text is long
    ("litellm.APIConnectionError: OpenAIException - Connection error."), so name the kind and keep the
    first line of the detail.
    """
    chain = _chain(exc)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    names = {type(e).__name__ for e in chain}
    if names & {"Timeout", "APITimeoutError", "TimeoutError", "ReadTimeout", "ConnectTimeout"}:
        return f"timed out after {timeout:g}s" if timeout else "timed out"
    if names & {"APIConnectionError", "ConnectError", "ClientConnectorError"} or isinstance(
        exc, ConnectionError
    ):
        return f"cannot connect ({_detail(' '.join(str(chain[-1]).split()))})"
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    kinds = {
        "AuthenticationError": "authentication failed: check the API key",
        "PermissionDeniedError": "permission denied: check the API key's access",
        "NotFoundError": "model not found",
        "RateLimitError": "rate limited",
        "ContextWindowExceededError": "the prompt exceeds the model's context window",
        "ContentPolicyViolationError": "refused by the provider's content policy",
        "BadRequestError": "bad request",
        "UnprocessableEntityError": "request rejected",
        "InternalServerError": "server error",
        "ServiceUnavailableError": "service unavailable",
        "BadGatewayError": "bad gateway",
    }
    kind = kinds.get(name)
    detail = _detail(text)
    if kind is None:
        return f"{name}: {detail}" if detail else name
    return f"{kind} ({detail})" if detail else kind


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions behind it (__cause__ / __context__), outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _detail(text: str, limit: int = 160) -> str:
    """The provider's message without litellm's prefixes, cut to `limit` characters."""
    for prefix in ("litellm.", "OpenAIException - ", "Exception - "):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    head, sep, rest = text.partition(": ")
    if sep and head.replace("Error", "").isalnum() and " " not in head:
        text = rest  # drop a leading "APIConnectionError: "
    text = text.replace("OpenAIException - ", "")
    text = re.sub(r"\s*LiteLLM Retried: \d+ times?\.?", "", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
