"""A model client over `litellm.acompletion`: any hosted API, or a local OpenAI-compatible server.

    client = LiteLLMChatClient("openai/smollm2", api_base="http://127.0.0.1:8123/v1", role="teacher")
    result = await client.create([UserMessage(content="Why is the sky blue?", source="student")])

Failures that outlast the client's retries become one-line `ModelCallError`s naming role, model, server,
the retries really made and the cause; a reply that is not one (a 200 with a body that is not JSON, no
`choices`) is a failure too, never an empty answer. The API key is passed to litellm on each call and never
appears in repr, messages or logs; neither does any other key of the environment (`mask_secrets`), not even
in a reply that echoes one (masked as it streams, `StreamMask`).

Retries are the client's own, not litellm's: litellm is called with `num_retries=0` (which also sets the
OpenAI SDK's `max_retries` to 0: litellm would otherwise retry inside the SDK *and* again around it, five
attempts for `num_retries=2`), so each call makes at most `num_retries + 1` attempts, each cut off after
`timeout` seconds (a stream: `timeout` seconds without a chunk). A rate limit's Retry-After is honoured up
to MAX_RETRY_AFTER seconds, and the waits are logged and named in the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import re
import time
import warnings
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any, Literal

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
from teachback.agents.endpoints import DEFAULT_RETRIES, DEFAULT_TIMEOUT
from teachback.errors import ModelCallError, StreamMask, mask_secrets

_litellm: ModuleType | None = None
log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 60.0  # seconds: a rate limit asking for a longer wait fails instead of stalling the run
BACKOFF_START = 0.5  # seconds before the first retry without a Retry-After, doubling, at most BACKOFF_MAX
BACKOFF_MAX = 8.0

# Failures that the same request would meet again: retrying them only wastes time (and quota).
_FINAL = {
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "BadRequestError",
    "ContextWindowExceededError",
    "ContentPolicyViolationError",
    "UnprocessableEntityError",
    "UnsupportedParamsError",
}
_TIMEOUTS = {"Timeout", "APITimeoutError", "TimeoutError", "ReadTimeout", "ConnectTimeout"}


class InvalidReplyError(Exception):
    """The server answered, but not with a reply: no choices, a body that is not a completion."""


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
        timeout: float = DEFAULT_TIMEOUT,
        num_retries: int = DEFAULT_RETRIES,
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
        if not timeout > 0:
            raise ValueError(f"timeout must be above 0 seconds, got {timeout}")
        if num_retries < 0:
            raise ValueError(f"num_retries must be at least 0, got {num_retries}")
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
            # one attempt per litellm call (and none inside the OpenAI SDK): the client retries itself
            "num_retries": 0,
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

    def _call_error(self, exc: BaseException, attempts: int, waits: Sequence[float] = ()) -> ModelCallError:
        """One line: who failed, where, after how many retries (really made), and the short cause."""
        cause = short_cause(exc, timeout=self.timeout, secrets=[self._api_key])
        retries = attempts - 1
        counted = f"{retries} retries" if retries != 1 else "1 retry"
        if waits:
            cause += f"; waited {', '.join(f'{w:g}s' for w in waits)} as the server asked (Retry-After)"
        asked = retry_after(exc)
        if asked is not None and asked > MAX_RETRY_AFTER and retries < self.num_retries:
            limit = f"{MAX_RETRY_AFTER:g}s"
            cause += f"; the server asked to wait {asked:g}s, more than the {limit} teachback waits"
        message = f"{self.role} {self.where} failed after {counted}: {cause}"
        return ModelCallError(mask_secrets(message, [self._api_key]))

    def _retry_wait(self, exc: BaseException, attempt: int) -> tuple[float, bool] | None:
        """(seconds to wait, whether the server asked for them) before retrying after `attempt` failed
        with `exc`; None when no retry is left or worth making."""
        if attempt > self.num_retries or type(exc).__name__ in _FINAL:
            return None
        asked = retry_after(exc)
        if asked is not None:
            return (asked, True) if asked <= MAX_RETRY_AFTER else None
        if _is_timeout(exc):
            return 0.0, False  # the attempt already waited its whole timeout
        return min(BACKOFF_START * 2 ** (attempt - 1), BACKOFF_MAX), False

    async def _bounded(self, awaitable: Awaitable[Any], cancellation_token: CancellationToken | None) -> Any:
        """`awaitable`, cancelled with the token and cut off after `timeout` seconds."""
        task = asyncio.ensure_future(asyncio.wait_for(awaitable, self.timeout))
        if cancellation_token is not None:
            cancellation_token.link_future(task)
        return await task

    async def _before_retry(self, exc: BaseException, attempt: int, waits: list[float]) -> bool:
        """Wait as `_retry_wait` says and return True, or return False when there is no retry to make."""
        plan = self._retry_wait(exc, attempt)
        if plan is None:
            return False
        seconds, asked = plan
        if asked:
            waits.append(seconds)
        why = short_cause(exc, timeout=self.timeout, secrets=[self._api_key])
        note = f"retrying in {seconds:g}s" + (" as the server asked (Retry-After)" if asked else "")
        log.info(
            "%s",
            mask_secrets(
                f"{self.role} {self.where}: attempt {attempt} failed ({why}); {note}", [self._api_key]
            ),
        )
        if seconds > 0:
            await asyncio.sleep(seconds)
        return True

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
        """One whole reply."""
        self._refuse_tools(tools)
        litellm = await import_litellm_async()
        args = self._call_args(messages, json_output, extra_create_args, stream=False)
        waits: list[float] = []
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._bounded(litellm.acompletion(**args), cancellation_token)
                choice = _first_choice(response)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not await self._before_retry(exc, attempt, waits):
                    raise self._call_error(exc, attempt, waits) from None
        content = mask_secrets(choice.message.content or "", [self._api_key])  # a server may echo the key
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
        tool_choice: Tool | Literal["auto", "required", "none"] = "auto",  # autogen's; unused: no tools
        json_output: bool | type[BaseModel] | None = None,
        extra_create_args: Mapping[str, Any] = {},
        cancellation_token: CancellationToken | None = None,
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Text chunks as they arrive, then one CreateResult with the whole reply and its usage.

        A failure before the first chunk is retried; one after it ends the call (the text is out)."""
        self._refuse_tools(tools)
        litellm = await import_litellm_async()
        args = self._call_args(messages, json_output, extra_create_args, stream=True)
        parts: list[str] = []
        mask = StreamMask([self._api_key])  # a server may echo the key, split over chunks
        n_chunks = 0
        raw_finish: str | None = None
        usage: RequestUsage | None = None
        waits: list[float] = []
        attempt = 0
        while True:
            attempt += 1
            any_choice = False
            stream = None
            try:
                stream = await self._bounded(litellm.acompletion(**args), cancellation_token)
                chunks = stream.__aiter__()
                while True:
                    try:
                        chunk = await self._bounded(chunks.__anext__(), cancellation_token)
                    except StopAsyncIteration:
                        break
                    usage = _usage(getattr(chunk, "usage", None)) or usage
                    if not getattr(chunk, "choices", None):
                        continue
                    any_choice = True
                    choice = chunk.choices[0]
                    raw_finish = choice.finish_reason or raw_finish
                    text = getattr(choice.delta, "content", None)
                    if text:
                        parts.append(text)
                        n_chunks += 1
                        shown = mask.feed(text)
                        if shown:
                            yield shown
                # litellm makes up a closing chunk for a stream that held nothing (a body that is not
                # server-sent events, an error page): only a chunk from the server carries its id
                if not any_choice or (not parts and getattr(stream, "received_model_id", "") is None):
                    raise InvalidReplyError("the server streamed no reply (no chat-completion chunks)")
                break
            except asyncio.CancelledError:
                raise
            except ModelCallError:
                raise
            except Exception as exc:
                await _close_quietly(stream)  # a stream given up on: free its connection
                if parts or not await self._before_retry(exc, attempt, waits):
                    raise self._call_error(exc, attempt, waits) from None
        tail = mask.flush()
        if tail:
            yield tail
        content = mask_secrets("".join(parts), [self._api_key])
        if usage is None:  # the server sent no usage: count chunks, estimate the prompt
            usage = RequestUsage(prompt_tokens=self.count_tokens(messages), completion_tokens=n_chunks)
        self._record_usage(usage)
        yield CreateResult(
            finish_reason=finish_reason(raw_finish), content=content, usage=usage, cached=False
        )

    async def close(self) -> None:
        """Nothing to free: litellm pools its own HTTP clients."""


async def _close_quietly(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is None:
        return
    with contextlib.suppress(Exception):  # closing is a courtesy; the call's own error is what matters
        await asyncio.wait_for(close(), 1.0)


def _first_choice(response: Any) -> Any:
    """The reply's first choice; InvalidReplyError, with what the server said, when it has none."""
    choices = getattr(response, "choices", None)
    if choices:
        choice = choices[0]
        if getattr(choice, "message", None) is not None:
            return choice
        raise InvalidReplyError("the server's reply has a choice without a message")
    said = getattr(response, "error", None) or (
        response.get("error") if isinstance(response, Mapping) else None
    )
    words = f": {' '.join(str(said).split())}" if said else ""
    raise InvalidReplyError(f"the server's reply has no choices (an empty reply){words}")


def retry_after(exc: BaseException) -> float | None:
    """The seconds a rate-limited (or busy) server asked to wait, from its Retry-After(-ms) header."""
    for e in _chain(exc):
        headers = getattr(e, "litellm_response_headers", None)
        if headers is None:
            response = getattr(e, "response", None)
            headers = getattr(response, "headers", None) if response is not None else None
        if not headers or not hasattr(headers, "get"):
            continue
        try:
            ms = headers.get("retry-after-ms")
            if ms is not None:
                return max(0.0, float(ms) / 1000)
            value = headers.get("retry-after")
        except (TypeError, ValueError):
            continue
        if value is None:
            continue
        try:
            return max(0.0, float(value))
        except (TypeError, ValueError):
            pass
        try:  # an HTTP date
            when = email.utils.parsedate_to_datetime(str(value))
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - time.time())
    return None


def _is_timeout(exc: BaseException) -> bool:
    return bool({type(e).__name__ for e in _chain(exc)} & _TIMEOUTS)


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


def short_cause(
    exc: BaseException, *, timeout: float | None = None, secrets: Iterable[str | None] = ()
) -> str:
    """A few words on why a call failed: 'connection refused', 'timed out after 5s', ...

    litellm maps every provider's errors onto OpenAI's exception names; their text is long
    ("litellm.APIConnectionError: OpenAIException - Connection error."), so name the kind and keep the
    first line of the detail. Secrets (`secrets` and the environment's keys, see `mask_secrets`) are
    masked before the detail is cut short, so no part of one survives.
    """
    secrets = list(secrets)

    def said(e: BaseException) -> str:
        return _detail(mask_secrets(" ".join(str(e).split()), secrets))

    return mask_secrets(_short_cause(exc, timeout, said), secrets)


def _short_cause(exc: BaseException, timeout: float | None, said: Callable[[BaseException], str]) -> str:
    chain = _chain(exc)
    if isinstance(exc, InvalidReplyError):
        return "invalid reply: " + said(exc)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    names = {type(e).__name__ for e in chain}
    if names & _TIMEOUTS:
        return f"timed out after {timeout:g}s" if timeout else "timed out"
    if any(isinstance(e, json.JSONDecodeError) for e in chain) or _NOT_JSON.search(str(exc)):
        return f"invalid reply: the server's answer is not JSON ({said(exc)})"
    if names & {"APIConnectionError", "ConnectError", "ClientConnectorError"} or isinstance(
        exc, ConnectionError
    ):
        return f"cannot connect ({said(chain[-1])})"
    name = type(exc).__name__
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
    detail = said(exc)
    if kind is None:
        return f"{name}: {detail}" if detail else name
    return f"{kind} ({detail})" if detail else kind


# json's messages, as the OpenAI SDK passes them on when a 200 reply's body does not parse
_NOT_JSON = re.compile(
    r"Expecting (value|property name|',' delimiter|':' delimiter)|Extra data: line|Unterminated string|"
    r"Invalid control character|Invalid \\escape"
)


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
    for _ in range(2):  # drop a leading "APIConnectionError: " (litellm may say it twice)
        head, sep, rest = text.partition(": ")
        if not (sep and head.replace("Error", "").isalnum() and " " not in head):
            break
        text = rest
    text = text.replace("OpenAIException - ", "")
    text = re.sub(r"\s*LiteLLM Retried: \d+ times?\.?", "", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
