"""Model clients: the scripted fake, litellm (through its mock_response), llama.cpp in-process (real)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import AssistantMessage, CreateResult, SystemMessage, UserMessage
from pydantic import BaseModel

from teachback.agents._chat_client_base import llama_cpp_response_format, to_openai_messages
from teachback.agents.litellm_client import LiteLLMChatClient, import_litellm, short_cause
from teachback.agents.llama_local import LlamaCppChatClient
from teachback.agents.scripted import ScriptedChatClient, ScriptExhaustedError, split_words
from teachback.errors import ModelCallError, ModelError

# litellm's lazily built pydantic schemas warn on first use; the lead may move this into pyproject.
pytestmark = pytest.mark.filterwarnings("ignore:.*is using the `ReadOnly` qualifier:UserWarning")

MESSAGES = [
    SystemMessage(content="You are a patient teacher."),
    UserMessage(content="What is a tidepool?", source="student"),
]


async def collect(stream: Any) -> tuple[list[str], CreateResult]:
    """All str chunks of a create_stream, and its final CreateResult (which must come last, once)."""
    chunks: list[str] = []
    results: list[CreateResult] = []
    async for item in stream:
        assert not results, "nothing may follow the CreateResult"
        if isinstance(item, CreateResult):
            results.append(item)
        else:
            assert isinstance(item, str)
            chunks.append(item)
    assert len(results) == 1
    return chunks, results[0]


class Verdict(BaseModel):
    correct: bool
    score: int


# -- messages ---------------------------------------------------------------------------------------


def test_messages_map_to_openai_dicts() -> None:
    messages = [*MESSAGES, AssistantMessage(content="A pool left by the tide.", source="teacher")]
    assert to_openai_messages(messages) == [
        {"role": "system", "content": "You are a patient teacher."},
        {"role": "user", "content": "What is a tidepool?"},
        {"role": "assistant", "content": "A pool left by the tide."},
    ]


def test_llama_cpp_response_format_carries_the_schema() -> None:
    assert llama_cpp_response_format(None) is None
    assert llama_cpp_response_format(True) == {"type": "json_object"}
    shape = llama_cpp_response_format(Verdict)
    assert shape is not None and shape["type"] == "json_object"
    assert set(shape["schema"]["properties"]) == {"correct", "score"}


# -- scripted ---------------------------------------------------------------------------------------


def test_scripted_replies_in_order_and_records_calls() -> None:
    client = ScriptedChatClient(["first", lambda messages: f"echo: {messages[-1].content}"])

    async def run() -> tuple[CreateResult, CreateResult]:
        one = await client.create(MESSAGES, json_output=True)
        two = await client.create(MESSAGES[1:], extra_create_args={"temperature": 0})
        return one, two

    one, two = asyncio.run(run())
    assert one.content == "first"
    assert two.content == "echo: What is a tidepool?"
    assert [len(c.messages) for c in client.calls] == [2, 1]
    assert client.calls[0].kwargs["json_output"] is True
    assert client.calls[1].kwargs["extra_create_args"] == {"temperature": 0}
    assert client.calls[1].kwargs["stream"] is False
    assert client.total_usage().completion_tokens == 1 + 5


def test_scripted_stream_joins_to_reply_word_by_word() -> None:
    reply = "  A pool  of sea water\nleft behind. "
    client = ScriptedChatClient([reply])
    chunks, result = asyncio.run(collect(client.create_stream(MESSAGES)))
    assert "".join(chunks) == reply == result.content
    assert chunks == split_words(reply) and len(chunks) == 7
    assert result.usage.completion_tokens == 7
    assert result.usage.prompt_tokens == 9  # words in the two messages
    assert client.calls[0].kwargs["stream"] is True


def test_scripted_failures() -> None:
    client = ScriptedChatClient(["ok", TimeoutError("slow"), "after"], raise_on_call=2)

    async def run() -> None:
        assert (await client.create(MESSAGES)).content == "ok"
        with pytest.raises(ModelCallError, match="call 2"):
            await client.create(MESSAGES)  # raise_on_call uses no reply
        with pytest.raises(TimeoutError, match="slow"):
            await collect(client.create_stream(MESSAGES))
        assert (await client.create(MESSAGES)).content == "after"
        with pytest.raises(ScriptExhaustedError, match="no scripted reply left for call 5"):
            await client.create(MESSAGES)

    asyncio.run(run())
    assert len(client.calls) == 5


def test_scripted_client_drives_an_autogen_assistant_agent() -> None:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import ModelClientStreamingChunkEvent, TextMessage

    client = ScriptedChatClient(["Tidepools hold sea water."])
    agent = AssistantAgent("teacher", model_client=client, model_client_stream=True)

    async def run() -> list[Any]:
        return [item async for item in agent.run_stream(task="What is a tidepool?")]

    items = asyncio.run(run())
    chunks = [i.content for i in items if isinstance(i, ModelClientStreamingChunkEvent)]
    texts = [i.content for i in items if isinstance(i, TextMessage) and i.source == "teacher"]
    assert "".join(chunks) == "Tidepools hold sea water."
    assert texts == ["Tidepools hold sea water."]
    assert isinstance(client.calls[0].messages[-1], UserMessage)


# -- litellm ----------------------------------------------------------------------------------------


def test_import_litellm_is_offline_and_cached() -> None:
    litellm = import_litellm()
    assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert litellm.suppress_debug_info is True
    assert import_litellm() is litellm


def test_litellm_create_and_stream_with_mock_response() -> None:
    reply = "A tidepool is a pool of sea water left by the tide."
    client = LiteLLMChatClient("openai/gpt-4o-mini", role="teacher", extra={"mock_response": reply})

    async def run() -> tuple[CreateResult, list[str], CreateResult]:
        whole = await client.create(MESSAGES)
        chunks, streamed = await collect(client.create_stream(MESSAGES))
        return whole, chunks, streamed

    whole, chunks, streamed = asyncio.run(run())
    assert whole.content == reply and whole.finish_reason == "stop"
    assert len(chunks) > 1 and "".join(chunks) == reply == streamed.content
    assert streamed.usage.completion_tokens > 0 and streamed.usage.prompt_tokens > 0
    assert (
        client.total_usage().completion_tokens
        == whole.usage.completion_tokens + streamed.usage.completion_tokens
    )


def test_litellm_mock_per_call_via_extra_create_args() -> None:
    client = LiteLLMChatClient("openai/gpt-4o-mini")
    result = asyncio.run(client.create(MESSAGES, extra_create_args={"mock_response": "per call"}))
    assert result.content == "per call"


def test_litellm_mapped_error_becomes_one_line_model_call_error() -> None:
    secret = "sk-test-secret-123"
    client = LiteLLMChatClient(
        "openai/x",
        api_base="http://127.0.0.1:9/v1",
        api_key=secret,
        num_retries=0,
        role="teacher",
        extra={"mock_response": "litellm.RateLimitError"},
    )
    with pytest.raises(ModelCallError) as caught:
        asyncio.run(client.create(MESSAGES))
    message = str(caught.value)
    assert message.startswith(
        "teacher openai/x at http://127.0.0.1:9/v1 failed after 0 retries: rate limited"
    )
    assert "\n" not in message and secret not in message and secret not in repr(client)

    with pytest.raises(ModelCallError, match="^teacher openai/x .* rate limited"):
        asyncio.run(collect(client.create_stream(MESSAGES)))


def test_litellm_response_format_by_target() -> None:
    local = LiteLLMChatClient("openai/smol", api_base="http://127.0.0.1:1/v1")
    hosted = LiteLLMChatClient("openai/gpt-4o-mini")
    assert local.llama_server and not hosted.llama_server
    assert local._call_args(MESSAGES, Verdict, {}, stream=False)["response_format"]["type"] == "json_object"
    assert hosted._call_args(MESSAGES, Verdict, {}, stream=False)["response_format"] is Verdict
    assert hosted._call_args(MESSAGES, True, {}, stream=False)["response_format"] == {"type": "json_object"}
    assert "response_format" not in hosted._call_args(MESSAGES, None, {}, stream=False)
    streamed = hosted._call_args(MESSAGES, None, {}, stream=True)
    assert streamed["stream"] and streamed["stream_options"] == {"include_usage": True}
    streamed = local._call_args(MESSAGES, None, {}, stream=True)
    assert streamed["stream"] and "stream_options" not in streamed  # usage: chunks counted instead
    assert streamed["api_key"]  # a placeholder: the OpenAI SDK will not send a request without a key


def test_short_cause_names_the_kind() -> None:
    assert short_cause(ConnectionRefusedError(111, "Connection refused")) == "connection refused"
    assert short_cause(TimeoutError("timed out"), timeout=5) == "timed out after 5s"
    assert short_cause(ValueError("bad\nthing")) == "ValueError: bad thing"


# -- llama.cpp in-process ----------------------------------------------------------------------------


def test_llama_missing_model_or_adapter_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        LlamaCppChatClient(tmp_path / "nope.gguf").load()
    model = tmp_path / "model.gguf"
    model.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelError, match="LoRA adapter not found"):
        LlamaCppChatClient(model, lora_path=tmp_path / "nope.gguf").load()


def test_llama_corrupt_model_is_a_one_line_model_error(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"not a gguf file at all" * 100)
    with pytest.raises(ModelError, match="^student: cannot load .*model.gguf") as caught:
        asyncio.run(LlamaCppChatClient(model).create(MESSAGES))
    assert "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def smollm2() -> Path:
    from teachback.agents.models import resolve

    path = resolve("local/smollm2-135m").local_path
    assert path is not None
    return path


@pytest.mark.real
def test_llama_streams_a_short_reply_in_process(smollm2: Path) -> None:
    client = LlamaCppChatClient(smollm2, max_tokens=12, n_ctx=512)

    async def run() -> tuple[list[str], CreateResult, CreateResult]:
        chunks, streamed = await collect(client.create_stream(MESSAGES))
        whole = await client.create(MESSAGES, json_output=Verdict)
        await client.close()
        return chunks, streamed, whole

    chunks, streamed, whole = asyncio.run(run())
    assert "".join(chunks) == streamed.content and streamed.content.strip()
    assert 0 < streamed.usage.completion_tokens <= 12
    assert streamed.usage.prompt_tokens > 10
    assert streamed.finish_reason in ("stop", "length")
    assert isinstance(whole.content, str) and whole.content.startswith(
        "{"
    )  # the grammar holds even when max_tokens cuts the JSON short
    assert 0 < whole.usage.completion_tokens <= 12
    assert not client.loaded


@pytest.mark.real
def test_llama_concurrent_calls_share_one_model_safely(smollm2: Path) -> None:
    client = LlamaCppChatClient(smollm2, max_tokens=6, n_ctx=512, temperature=0)

    async def run() -> list[tuple[list[str], CreateResult]]:
        return list(await asyncio.gather(*(collect(client.create_stream(MESSAGES)) for _ in range(3))))

    results = asyncio.run(run())
    contents = {result.content for _, result in results}
    assert len(contents) == 1, "the same prompt at temperature 0 must give the same reply"
    client.unload()
