"""Retrieval: the labelled paraphrase set (quality), and the store as an autogen Memory."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from teachback.memory.store import MemoryStore, TurnRecord

PARAPHRASES = Path(__file__).parent / "data" / "paraphrases.yaml"


@pytest.fixture
def taught(tmp_path: Path) -> tuple[MemoryStore, dict[str, Any]]:
    """A store holding the labelled set's turns in namespace `facts`, and the set itself."""
    data = yaml.safe_load(PARAPHRASES.read_text(encoding="utf-8"))
    store = MemoryStore.open(tmp_path / "memory")
    records = [
        TurnRecord(question=t["q"], answer=t["a"], run_id="r1", turn=i, objective=key)
        for i, (key, t) in enumerate(data["turns"].items())
    ]
    results = store.add_turns("facts", records)
    assert not any(r.duplicate_of for r in results), "the labelled turns must all be distinct"
    return store, data


def test_paraphrased_questions_find_their_turn(taught: tuple[MemoryStore, dict[str, Any]]) -> None:
    store, data = taught
    assert len(data["turns"]) >= 20 and len(data["queries"]) >= 20
    misses = []
    for item in data["queries"]:
        assert item["turn"] in data["turns"], item
        best = store.search("facts", item["query"], k=1)[0]
        if best.metadata["objective"] != item["turn"]:
            misses.append(f"{item['query']!r}: wanted {item['turn']}, got {best.metadata['objective']}")
    hits = len(data["queries"]) - len(misses)
    rate = hits / len(data["queries"])
    n_turns = len(data["turns"])
    print(f"\nretrieval top-1: {hits}/{len(data['queries'])} = {rate:.0%} (minilm int8, {n_turns} turns)")
    for miss in misses:
        print("  miss:", miss)
    assert rate >= 0.9, f"top-1 {rate:.0%} < 90%: " + "; ".join(misses)


# ---- StoreMemory: autogen's Memory interface over the store ---------------------------------------------


def test_update_context_adds_the_relevant_turns(taught: tuple[MemoryStore, dict[str, Any]]) -> None:
    from autogen_core.model_context import UnboundedChatCompletionContext
    from autogen_core.models import SystemMessage, UserMessage

    from teachback.memory.retrieval import HEADER, StoreMemory

    store, _ = taught
    memory = StoreMemory(store, "facts", k=2)

    async def go() -> Any:
        context = UnboundedChatCompletionContext()
        await context.add_message(UserMessage(content="Which bird is pictured on the coins?", source="user"))
        result = await memory.update_context(context)
        return result, await context.get_messages()

    result, messages = asyncio.run(go())
    assert 1 <= len(result.memories.results) <= 2
    assert "storm petrel" in str(result.memories.results[0].content)
    assert isinstance(messages[-1], SystemMessage) and messages[-1].content.startswith(HEADER)
    assert "storm petrel" in messages[-1].content
    assert result.memories.results[0].metadata["similarity"] > 0.3


def test_query_add_clear_and_config(tmp_path: Path) -> None:
    from autogen_core.memory import MemoryContent, MemoryMimeType

    from teachback.memory.retrieval import StoreMemory

    store = MemoryStore.open(tmp_path / "memory")
    memory = StoreMemory(store, "class-a", k=3, min_similarity=0.0)

    async def go() -> None:
        assert (await memory.query("anything")).results == []  # nothing learned yet: no error
        await memory.add(
            MemoryContent(
                content="The drell.",
                mime_type=MemoryMimeType.TEXT,
                metadata={"question": "What is the currency?", "run_id": "r1", "turn": 4, "unknown": 1},
            )
        )
        [item] = (await memory.query("Which money do they use?")).results
        assert item.content == "Q: What is the currency?\nA: The drell."
        assert (item.metadata or {})["run_id"] == "r1"
        again = StoreMemory.load_component(memory.dump_component())
        assert again.namespace == "class-a" and again.k == 3
        assert len((await again.query("currency")).results) == 1
        await memory.clear()
        assert (await memory.query("currency")).results == []
        await memory.close()

    asyncio.run(go())


def test_an_assistant_agent_sees_what_was_taught(taught: tuple[MemoryStore, dict[str, Any]]) -> None:
    from autogen_agentchat.agents import AssistantAgent

    from teachback.agents.scripted import ScriptedChatClient
    from teachback.memory.retrieval import StoreMemory

    store, _ = taught
    client = ScriptedChatClient(["The drell."])
    agent = AssistantAgent("student", model_client=client, memory=[StoreMemory(store, "facts", k=1)])
    result = asyncio.run(agent.run(task="What money do people pay with in Vellmar?"))
    assert result.messages[-1].to_text() == "The drell."
    seen = "\n".join(str(m.content) for m in client.calls[0].messages)
    assert "one hundred pennets" in seen
