"""A teacher or judge behind litellm, faulty: a tiny OpenAI-compatible server on 127.0.0.1 misbehaves on
purpose (a body that is not JSON, no choices, a hang, 5xx, 429 with Retry-After, a 401 that echoes the key).

Each fault is one ModelCallError line that counts the attempts really made, never an empty answer or a
traceback, and no API key (given, or from the environment) ever reaches a message, a log or a transcript.
"""

from __future__ import annotations

import asyncio
import doctest
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from autogen_core.models import CreateResult, UserMessage

from teachback.agents.litellm_client import LiteLLMChatClient, short_cause
from teachback.errors import ModelCallError, TeachbackError, mask_secrets
from tests.fake_openai import FakeOpenAI

pytestmark = pytest.mark.filterwarnings("ignore:.*is using the `ReadOnly` qualifier:UserWarning")

MESSAGES = [UserMessage(content="What is the capital of Vellmar?", source="student")]
PLANTED = "sk-planted-env-key-0123456789abcdef"  # an environment key the server echoes back
GIVEN = "sk-given-key-abcdefghijklmnop"  # a key passed to the client


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    s = FakeOpenAI()
    s.echo = PLANTED
    yield s
    s.close()


@pytest.fixture
def faulty(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Set the server's mode; returns a client factory for it. A key is planted in the environment."""
    monkeypatch.setenv("TEACHBACK_TEST_API_KEY", PLANTED)

    def make(mode: str, **kwargs: Any) -> LiteLLMChatClient:
        server.mode, server.hits = mode, 0
        kwargs.setdefault("num_retries", 0)
        kwargs.setdefault("timeout", 5)
        return LiteLLMChatClient("openai/x", api_base=server.api_base, role="teacher", **kwargs)

    return make


async def streamed(client: LiteLLMChatClient) -> CreateResult:
    result = None
    async for item in client.create_stream(MESSAGES):
        if isinstance(item, CreateResult):
            result = item
    assert result is not None
    return result


def fails(client: LiteLLMChatClient, stream: bool = False) -> str:
    """The one-line ModelCallError message that a call (or a stream) ends in."""
    with pytest.raises(ModelCallError) as caught:
        asyncio.run(streamed(client) if stream else client.create(MESSAGES))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_faulty_server_answers_when_it_is_well(faulty, server: FakeOpenAI) -> None:
    assert asyncio.run(faulty("ok").create(MESSAGES)).content == "Korrin."


# --- replies that are not replies -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_body_that_is_not_json_is_a_model_call_error(faulty, stream: bool) -> None:
    message = fails(faulty("not-json"), stream)
    assert message.startswith("teacher openai/x at http://127.0.0.1:") and "failed after 0 retries" in message
    assert "invalid reply" in message


def test_a_body_that_is_not_json_names_the_parse_error(faulty) -> None:
    assert "not JSON (Expecting value: line 1 column 1" in fails(faulty("not-json"))


@pytest.mark.parametrize("stream", [False, True])
def test_empty_choices_are_a_model_call_error_not_an_empty_answer(faulty, stream: bool) -> None:
    message = fails(faulty("no-choices"), stream)
    assert "failed after 0 retries: invalid reply: the server" in message
    assert "no choices" in message or "no reply" in message


# --- attempts, timeouts, rate limits --------------------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 2])
def test_the_message_counts_the_attempts_really_made(faulty, server: FakeOpenAI, retries: int) -> None:
    message = fails(faulty("500", num_retries=retries))
    assert server.hits == retries + 1  # not 5 for 2 retries (litellm's and the OpenAI SDK's, stacked)
    counted = "1 retry" if retries == 1 else f"{retries} retries"
    assert f"failed after {counted}: server error (the GPU fell over)" in message


def test_a_bad_key_is_not_retried(faulty, server: FakeOpenAI) -> None:
    message = fails(faulty("401", num_retries=2))
    assert server.hits == 1 and "failed after 0 retries: authentication failed" in message


@pytest.mark.parametrize("stream", [False, True])
def test_a_hang_is_cut_off_at_timeout_times_attempts(faulty, server: FakeOpenAI, stream: bool) -> None:
    client = faulty("hang", timeout=0.5, num_retries=1)
    started = time.monotonic()
    message = fails(client, stream)
    elapsed = time.monotonic() - started
    assert server.hits == 2 and elapsed < 2 * 0.5 + 1.0, elapsed
    assert "failed after 1 retry: timed out after 0.5s" in message


def test_retry_after_is_honoured_and_recorded(faulty, server: FakeOpenAI, caplog) -> None:
    server.retry_after = "1"
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="teachback.agents.litellm_client"):
        message = fails(faulty("429", num_retries=1))
    assert time.monotonic() - started >= 1.0 and server.hits == 2
    assert (
        "failed after 1 retry: rate limited (slow down); waited 1s as the server asked (Retry-After)"
        in message
    )
    assert any("retrying in 1s as the server asked" in r.getMessage() for r in caplog.records)


def test_a_retry_after_too_long_to_wait_fails_at_once(faulty, server: FakeOpenAI) -> None:
    server.retry_after = "3600"
    started = time.monotonic()
    message = fails(faulty("429", num_retries=2))
    assert time.monotonic() - started < 2 and server.hits == 1
    assert "the server asked to wait 3600s, more than the 60s teachback waits" in message


def test_timeout_and_retries_are_per_client() -> None:
    one = LiteLLMChatClient("openai/x", timeout=3, num_retries=4)
    two = LiteLLMChatClient("openai/x")
    args = one._call_args(MESSAGES, None, {}, stream=False)
    assert args["timeout"] == 3 and args["num_retries"] == 0  # litellm makes one attempt; the client retries
    assert (one.timeout, one.num_retries, two.timeout, two.num_retries) == (3, 4, 120, 2)
    with pytest.raises(ValueError, match="timeout"):
        LiteLLMChatClient("openai/x", timeout=0)


# --- secrets --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_an_echoed_key_never_reaches_the_message(faulty, stream: bool) -> None:
    message = fails(faulty("401", api_key=GIVEN), stream)
    assert "authentication failed" in message and "***" in message
    assert PLANTED not in message and GIVEN not in message and "Bearer sk-" not in message
    # no part of a key survives the cut to 160 characters either
    assert "sk-planted" not in message and "sk-given" not in message


def test_short_cause_masks_environment_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    cause = short_cause(RuntimeError(f"bad key {PLANTED}; header Authorization: Bearer abcdefgh123"))
    assert PLANTED not in cause and "abcdefgh123" not in cause and cause.count("***") == 2


def test_mask_secrets_by_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "HF_TOKEN", "MY_SERVICE_SECRET", "SOME_KEY"):
        monkeypatch.setenv(name, f"value-of-{name.lower()}")
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to hide without mangling ordinary text
    monkeypatch.setenv("HOME_DIR", "value-of-home_dir")  # not a secret's name
    text = " ".join(f"value-of-{n.lower()}" for n in ("ANTHROPIC_API_KEY", "HF_TOKEN", "MY_SERVICE_SECRET"))
    assert (
        mask_secrets(text + " value-of-some_key abc value-of-home_dir")
        == "*** *** *** *** abc value-of-home_dir"
    )
    assert mask_secrets(json.dumps('q"uote' + PLANTED), [PLANTED]) == '"q\\"uote***"'
    assert doctest.testmod(__import__("teachback.errors", fromlist=["x"])).failed == 0


def test_the_transcript_never_holds_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from teachback.transcripts.events import Notice, RunFinished, RunStarted
    from teachback.transcripts.reader import read_transcript
    from teachback.transcripts.recorder import TranscriptRecorder

    monkeypatch.setenv("TEACHBACK_TEST_API_KEY", PLANTED)
    path = tmp_path / "transcript.jsonl"
    header = RunStarted(
        t=0.0,
        run_id="r",
        scenario="s",
        scenario_path="",
        scenario_sha256="0" * 64,
        models={"teacher": "openai/gpt-4o-mini"},
        options={},
        seed=0,
        versions={},
        started_at="2026-01-01T00:00:00Z",
    )
    with TranscriptRecorder(path) as rec:
        rec.handle(header)
        rec.handle(Notice(t=0.5, level="error", message=f'teacher said "{PLANTED}"'))
        reason = f"teacher failed: authentication failed (Incorrect API key provided: {PLANTED})"
        rec.handle(RunFinished(t=1.0, status="failed", turns=0, accepted=0, acceptance_rate=0.0,
                               objectives_covered=[], reason=reason))  # fmt: skip
    text = path.read_text(encoding="utf-8")
    assert PLANTED not in text and "sk-planted" not in text
    events = read_transcript(path)  # still valid JSON, line by line
    assert events[-1].reason.endswith("provided: ***)") and events[1].message == 'teacher said "***"'


def test_the_cli_masks_keys_in_errors(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    from teachback import cli

    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)

    def failing(args: Any) -> int:
        raise TeachbackError(f"judge openai/gpt-4o-mini failed: key {PLANTED} rejected")

    monkeypatch.setattr(cli, "cmd_models", failing)
    assert cli.main(["models"]) == 2
    err = capsys.readouterr().err
    assert (
        PLANTED not in err and err.strip() == "teachback: judge openai/gpt-4o-mini failed: key *** rejected"
    )
