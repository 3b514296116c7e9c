"""The memory as an autogen `Memory`: an agent sees the accepted turns most relevant to its question.

This is how a student that cannot be fine-tuned locally (a hosted model) learns: before each reply,
`update_context` searches the namespace with the latest message and adds the best `k` turns to the
agent's model context as one SystemMessage.

    memory = StoreMemory(MemoryStore.open(), "vellmar", k=3)
    student = AssistantAgent("student", model_client=client, memory=[memory])

The same lookup as a plain function, for a quiz that puts each question to such a student:

    context = retrieval_context(MemoryStore.open(), "vellmar", k=3)
    context("Which city is the capital?")  ->  "Things you were taught earlier ...\n1. Q: ...\nA: ..."
                                               ("" when nothing relevant is stored)

Why not autogen-ext's `ChromaDBVectorMemory`: it stores free text under random uuid ids with its own
metadata (no content ids, no upsert, no deduplication, no provenance), so it would write a second,
incompatible kind of record into our collections; its embedder choices are chromadb's default or
sentence-transformers (both download a model; offline needs a custom callable that cannot be saved in its
config); it opens its own `PersistentClient` with other settings, which chromadb refuses on a path this
process already holds; and autogen-ext is one more package to resolve against autogen-core's protobuf pin.
This class is the `Memory` interface over the one store everything else uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from autogen_core import CancellationToken, Component
from autogen_core.memory import Memory, MemoryContent, MemoryMimeType, MemoryQueryResult, UpdateContextResult
from autogen_core.model_context import ChatCompletionContext
from autogen_core.models import SystemMessage
from pydantic import BaseModel
from typing_extensions import Self

from teachback.errors import MemoryStoreError
from teachback.memory.store import Hit, MemoryStore

HEADER = "Things you were taught earlier that may help (question, then the accepted answer):"


class StoreMemoryConfig(BaseModel):
    """How to reopen a StoreMemory: where the store is, which namespace, how many turns."""

    namespace: str
    path: str | None = None
    url: str | None = None
    k: int = 3
    min_similarity: float = 0.3


class StoreMemory(Memory, Component[StoreMemoryConfig]):
    """An autogen Memory backed by one namespace of a MemoryStore.

    `query` returns the `k` best turns with similarity >= `min_similarity` (duplicates left out), each as
    a MemoryContent whose content is "Q: ...\\nA: ..." and whose metadata carries the id, similarity and
    provenance. `add` stores a turn: the content is the answer and `metadata["question"]` the question
    (other metadata keys that TurnRecord knows are kept). `clear` deletes the whole namespace.
    """

    component_type = "memory"
    component_config_schema = StoreMemoryConfig
    component_provider_override = "teachback.memory.retrieval.StoreMemory"

    def __init__(
        self,
        store: MemoryStore,
        namespace: str,
        k: int = 3,
        min_similarity: float = 0.3,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.k = k
        self.min_similarity = min_similarity

    async def update_context(self, model_context: ChatCompletionContext) -> UpdateContextResult:
        messages = await model_context.get_messages()
        text = _last_text(messages)
        if not text:
            return UpdateContextResult(memories=MemoryQueryResult(results=[]))
        found = await self.query(text)
        if found.results:
            await model_context.add_message(SystemMessage(content=recall_text(found.results)))
        return UpdateContextResult(memories=found)

    async def query(
        self,
        query: str | MemoryContent,
        cancellation_token: CancellationToken | None = None,
        **kwargs: Any,
    ) -> MemoryQueryResult:
        text = query if isinstance(query, str) else str(query.content)
        k = int(kwargs.get("k", self.k))
        try:
            hits = await asyncio.to_thread(self.store.search, self.namespace, text, k)
        except MemoryStoreError as exc:
            if "has no namespace" in str(exc):  # nothing learned yet
                return MemoryQueryResult(results=[])
            raise
        return MemoryQueryResult(results=[_content(h) for h in hits if h.similarity >= self.min_similarity])

    async def add(self, content: MemoryContent, cancellation_token: CancellationToken | None = None) -> None:
        from dataclasses import fields

        from teachback.memory.store import TurnRecord

        meta = dict(content.metadata or {})
        known = {f.name for f in fields(TurnRecord)} - {"question", "answer"}
        provenance = {key: value for key, value in meta.items() if key in known}
        question = str(meta.get("question", ""))
        await asyncio.to_thread(
            self.store.add_turn, self.namespace, question=question, answer=str(content.content), **provenance
        )

    async def clear(self) -> None:
        await asyncio.to_thread(self.store.clear, self.namespace)

    async def close(self) -> None:
        """Nothing to release: the store stays open for whoever else uses it."""

    def _to_config(self) -> StoreMemoryConfig:
        where = {"url": self.store.location} if self.store.remote else {"path": self.store.location}
        return StoreMemoryConfig(
            namespace=self.namespace, k=self.k, min_similarity=self.min_similarity, **where
        )

    @classmethod
    def _from_config(cls, config: StoreMemoryConfig) -> Self:
        from pathlib import Path

        store = MemoryStore.open(Path(config.path) if config.path else None, url=config.url)
        return cls(store, config.namespace, config.k, config.min_similarity)


def retrieval_context(
    store: MemoryStore, namespace: str, k: int = 3, min_similarity: float = 0.3
) -> Callable[[str], str]:
    """A function from a question to what a retrieval student is shown with it ("" when nothing fits).

    The same search and wording as `StoreMemory.update_context`; for synchronous callers such as a quiz.
    """

    def context(question: str) -> str:
        try:
            hits = store.search(namespace, question, k)
        except MemoryStoreError as exc:
            if "has no namespace" in str(exc):  # nothing learned yet
                return ""
            raise
        found = [_content(h) for h in hits if h.similarity >= min_similarity]
        return recall_text(found) if found else ""

    return context


def recall_text(items: list[MemoryContent]) -> str:
    """The recalled turns as one message: the header, then `1. Q: ...\nA: ...` per turn."""
    lines = [f"{i}. {item.content!s}" for i, item in enumerate(items, 1)]
    return HEADER + "\n" + "\n".join(lines)


def _content(hit: Hit) -> MemoryContent:
    meta = {
        "id": hit.id,
        "similarity": hit.similarity,
        "question": hit.question,
        **{k: hit.metadata.get(k) for k in ("scenario", "run_id", "turn", "judge_score", "teacher_model")},
    }
    return MemoryContent(
        content=f"Q: {hit.question}\nA: {hit.answer}", mime_type=MemoryMimeType.TEXT, metadata=meta
    )


def _last_text(messages: list[Any]) -> str:
    """The text of the newest message that has text (a tool result or image list is skipped)."""
    for message in reversed(messages):
        content = getattr(message, "content", None)
        if isinstance(content, str) and content.startswith(HEADER):
            continue  # what this memory added before
        if isinstance(content, str) and content.strip():
            return content
        if isinstance(content, list):
            parts = [p for p in content if isinstance(p, str)]
            if parts:
                return "\n".join(parts)
    return ""
