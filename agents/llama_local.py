"""The student's voice: a GGUF model in-process through llama.cpp, optionally with a LoRA adapter.

    client = LlamaCppChatClient(resolve("local/smollm2-135m").local_path, max_tokens=64)
    async for item in client.create_stream([UserMessage(content="Hi", source="teacher")]):
        ...  # str chunks, then one CreateResult

Generation runs in a worker thread (one at a time per model, under a lock) and hands chunks to the
event loop through a queue, so the loop never blocks on llama.cpp.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from autogen_core import CancellationToken
from autogen_core.models import CreateResult, LLMMessage, RequestUsage
from autogen_core.tools import Tool, ToolSchema
from pydantic import BaseModel

from teachback.agents._chat_client_base import (
    ChatClientBase,
    finish_reason,
    llama_cpp_response_format,
    to_openai_messages,
)
from teachback.agents.models import chat_format
from teachback.errors import ModelCallError, ModelError, one_line


def default_threads() -> int:
    """Threads for a local model: all CPUs this process may use but one (at least one).

    llama.cpp's threads spin at barriers between ops; when anything else needs a core (the live view,
    another model, a compiler) a thread that loses its core stalls the rest. Measured on 2 busy cores:
    12 tokens took 46 s with 2 threads and 0.6 s with 1.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(1, cpus - 1)


class LlamaCppChatClient(ChatClientBase):
    """An autogen client over an in-process `llama_cpp.Llama`: lazy loading, one call at a time."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 2048,
        max_tokens: int = 64,
        temperature: float = 0.7,
        seed: int | None = 0,
        lora_path: str | Path | None = None,
        n_threads: int | None = None,
        role: str = "student",
    ):
        """`seed` starts a per-call sequence (seed, seed+1, ...): a run is reproducible, yet a question
        asked again draws a different reply. None draws anew every time."""
        self.model_path = Path(model_path)
        super().__init__(self.model_path.name, role=role, context_window=n_ctx)
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.lora_path = Path(lora_path) if lora_path is not None else None
        self.n_threads = n_threads or default_threads()
        self._llama: Any = None
        self._lock = threading.Lock()
        self._calls = 0

    # -- loading -----------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._llama is not None

    def load(self) -> None:
        """Load the model (and adapter) now instead of on the first call; ModelError if it cannot."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> Any:
        if self._llama is not None:
            return self._llama
        if not self.model_path.is_file():
            raise ModelError(f"{self.role}: model file not found: {self.model_path}")
        if self.lora_path is not None and not self.lora_path.is_file():
            raise ModelError(f"{self.role}: LoRA adapter not found: {self.lora_path}")
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelError(f"{self.role}: llama-cpp-python is not installed ({exc})") from None
        try:
            self._llama = Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                lora_path=str(self.lora_path) if self.lora_path is not None else None,
                seed=self.seed if self.seed is not None else -1,
                chat_format=chat_format(self.model_path),
                verbose=False,
            )
        except Exception as exc:
            what = (
                f"{self.model_path} with adapter {self.lora_path}" if self.lora_path else str(self.model_path)
            )
            raise ModelError(f"{self.role}: cannot load {what}: {one_line(exc)}") from None
        return self._llama

    def unload(self) -> None:
        """Free the model; the next call loads it again."""
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None

    def use_adapter(self, lora_path: str | Path | None) -> None:
        """Swap the LoRA adapter (None: the bare model); takes effect on the next call."""
        with self._lock:
            new = Path(lora_path) if lora_path is not None else None
            if new == self.lora_path:
                return
            if self._llama is not None:
                self._llama.close()
                self._llama = None
            self.lora_path = new

    async def close(self) -> None:
        """Free the model without blocking the loop (a running call finishes first)."""
        await asyncio.to_thread(self.unload)

    # -- tokens ------------------------------------------------------------------------------------
    def _count_text_tokens(self, text: str) -> int:
        llama = self._llama
        if llama is None:
            return super()._count_text_tokens(text)
        return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    # -- calls -------------------------------------------------------------------------------------
    def _call_kwargs(
        self,
        messages: Sequence[LLMMessage],
        json_output: bool | type[BaseModel] | None,
        extra_create_args: Mapping[str, Any],
        stream: bool,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "messages": to_openai_messages(messages),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": stream,
        }
        if self.seed is not None:
            kwargs["seed"] = self.seed + self._calls
        self._calls += 1
        response_format = llama_cpp_response_format(json_output)
        if response_format is not None:
            kwargs["response_format"] = response_format
        kwargs.update(extra_create_args)
        return kwargs

    def _call_error(self, exc: BaseException) -> ModelError:
        if isinstance(exc, ModelError):
            return exc
        return ModelCallError(f"{self.role} {self.model} failed: {one_line(exc)}")

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
        """One whole reply, generated in a worker thread."""
        self._refuse_tools(tools)
        kwargs = self._call_kwargs(messages, json_output, extra_create_args, stream=False)

        def work() -> dict[str, Any]:
            with self._lock:
                return self._load_locked().create_chat_completion(**kwargs)

        try:
            response = await asyncio.get_running_loop().run_in_executor(None, work)
        except Exception as exc:
            raise self._call_error(exc) from None
        choice = response["choices"][0]
        usage = RequestUsage(
            prompt_tokens=response["usage"]["prompt_tokens"],
            completion_tokens=response["usage"]["completion_tokens"],
        )
        self._record_usage(usage)
        return CreateResult(
            finish_reason=finish_reason(choice.get("finish_reason")),
            content=choice["message"].get("content") or "",
            usage=usage,
            cached=False,
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
        """Text chunks as llama.cpp produces them, then one CreateResult.

        completion_tokens counts the streamed chunks (llama.cpp streams one token per chunk, and merges
        a few when a character spans tokens); prompt_tokens comes from the model's tokenizer.
        """
        self._refuse_tools(tools)
        kwargs = self._call_kwargs(messages, json_output, extra_create_args, stream=True)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        if cancellation_token is not None:
            cancellation_token.add_callback(stop.set)

        def put(kind: str, item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, item))
            except RuntimeError:  # the loop has closed: nobody is listening any more
                stop.set()

        def work() -> None:
            try:
                with self._lock:
                    llama = self._load_locked()
                    chunks: Iterator[dict[str, Any]] = llama.create_chat_completion(**kwargs)
                    try:
                        for chunk in chunks:
                            if stop.is_set():
                                break
                            put("chunk", chunk)
                    finally:
                        close: Callable[[], None] | None = getattr(chunks, "close", None)
                        if close is not None:
                            close()
                    prompt_tokens = self.count_tokens(messages)
                put("end", prompt_tokens)
            except BaseException as exc:
                put("error", exc)

        worker = loop.run_in_executor(None, work)
        parts: list[str] = []
        raw_finish: str | None = None
        prompt_tokens = 0
        try:
            while True:
                kind, item = await queue.get()
                if kind == "error":
                    raise self._call_error(item)
                if kind == "end":
                    prompt_tokens = item
                    break
                choice = item["choices"][0]
                raw_finish = choice.get("finish_reason") or raw_finish
                text = choice.get("delta", {}).get("content")
                if text:
                    parts.append(text)
                    yield text
        finally:
            stop.set()
        await worker
        if cancellation_token is not None and cancellation_token.is_cancelled():
            raise asyncio.CancelledError()
        usage = RequestUsage(prompt_tokens=prompt_tokens, completion_tokens=len(parts))
        self._record_usage(usage)
        yield CreateResult(
            finish_reason=finish_reason(raw_finish), content="".join(parts), usage=usage, cached=False
        )
