"""Any model in any role: a retrieval student recalls its accepted turns; a teacher may wear an adapter."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from autogen_core.models import SystemMessage
from rich.console import Console

from teachback.agents.llama_server import LlamaServer
from teachback.agents.scripted import ScriptedChatClient
from teachback.memory.retrieval import HEADER, retrieval_context
from teachback.memory.store import MemoryStore
from teachback.scenarios.loader import find_scenario, load_scenario
from teachback.scenarios.run import RunRequest, run_scenario, transcript_path
from teachback.scenarios.seats import student_seats, teacher_seats
from teachback.transcripts.events import MemoryRecalled, MemoryStored, RunStarted, TurnAccepted
from teachback.transcripts.reader import read_transcript
from tests.conftest import judge, run_bundled

CAPITAL = "Korrin is the capital of Vellmar. Vellmar was founded in 1487 by Queen Almeth."
CURRENCY = "The currency of Vellmar is the drell. One drell is divided into one hundred pennets."
HOSTED = {"model": "openai/gpt-4o-mini", "max_tokens": 40}


def run(path: Path, tmp_path: Path, clients: dict, **request: object) -> list:
    out = tmp_path / "run"
    req = RunRequest(scenario=str(path), out=out, plain=True, memory_dir=tmp_path / "mem", **request)  # type: ignore[arg-type]
    run_scenario(req, Console(record=True, width=160, file=io.StringIO()), clients=clients)
    return read_transcript(transcript_path(out))


def two_turns() -> dict:
    return {
        "student": ScriptedChatClient(
            [
                "What is the capital of Vellmar?",
                "Korrin is the capital, founded in 1487 by Almeth.",
                "What is the currency of Vellmar?",
                "The drell, with one hundred pennets.",
            ]
        ),
        "teacher": ScriptedChatClient([CAPITAL, CURRENCY]),
        "judge": judge(9),
    }


def test_a_hosted_student_learns_by_retrieval(scenario_file, tmp_path) -> None:
    clients = two_turns()
    events = run(scenario_file(student=HOSTED), tmp_path, clients)
    header = events[0]
    assert isinstance(header, RunStarted)
    seat = next(s for s in header.seats if s["role"] == "student")
    assert seat["learning"] == "retrieval" and seat["namespace"] == "vellmar-test"
    stored = next(e for e in events if isinstance(e, MemoryStored) and e.turn == 1)
    recalled = [e for e in events if isinstance(e, MemoryRecalled)]
    assert recalled and all(e.turn == 2 for e in recalled)  # nothing was stored before turn 1 ended
    assert recalled[0].namespace == "vellmar-test" and stored.id in recalled[0].ids
    assert recalled[0].name == "student" and recalled[0].kind == "question"
    # the second question was asked with the first lesson in the student's context
    second_ask = clients["student"].calls[2].messages
    recalls = [m for m in second_ask if isinstance(m, SystemMessage) and m.content.startswith(HEADER)]
    assert len(recalls) == 1 and CAPITAL in recalls[0].content
    first_ask = clients["student"].calls[0].messages
    assert not any(isinstance(m, SystemMessage) and m.content.startswith(HEADER) for m in first_ask)


def test_a_local_student_may_learn_by_retrieval_too(scenario_file, tmp_path) -> None:
    student = {"model": "local/smollm2-135m", "learning": "retrieval"}
    events = run(scenario_file(student=student), tmp_path, two_turns())
    assert any(isinstance(e, MemoryRecalled) for e in events)


def test_a_fine_tuned_student_is_not_shown_its_memory(scenario_file, tmp_path) -> None:
    events = run(scenario_file(), tmp_path, two_turns())
    assert not any(isinstance(e, MemoryRecalled) for e in events)
    assert next(s for s in events[0].seats if s["role"] == "student")["learning"] == "finetune"


def test_retrieval_context_is_what_a_quiz_puts_before_each_question(scenario_file, tmp_path) -> None:
    run(scenario_file(student=HOSTED), tmp_path, two_turns())
    store = MemoryStore.open(path=tmp_path / "mem", create=False)
    context = retrieval_context(store, "vellmar-test", k=1)
    text = context("Which city is the seat of Vellmar's government?")
    assert text.startswith(HEADER) and "Korrin" in text and "drell" not in text
    assert retrieval_context(store, "nobody-yet", k=3)("Which city?") == ""


def test_memory_off_warns_that_a_retrieval_student_recalls_nothing(scenario_file, tmp_path) -> None:
    events = run(scenario_file(student=HOSTED), tmp_path, two_turns(), no_memory=True)
    assert any("recall nothing" in getattr(e, "message", "") for e in events)
    assert not any(isinstance(e, MemoryRecalled) for e in events)


def test_a_teacher_may_wear_an_adapter(scenario_file, tmp_path) -> None:
    (tmp_path / "specialist.gguf").write_bytes(b"GGUF")
    teacher = {"name": "specialist", "model": "local/smollm2-135m", "adapter": "specialist.gguf"}
    clients = two_turns()
    clients["specialist"] = clients.pop("teacher")
    events = run(scenario_file(teacher=teacher, student=HOSTED), tmp_path, clients)
    seat = next(s for s in events[0].seats if s["role"] == "teacher")
    assert seat["name"] == "specialist" and seat["adapter"] == str((tmp_path / "specialist.gguf").resolve())
    assert next(e for e in events if isinstance(e, TurnAccepted)).teacher == "specialist"
    server = LlamaServer(Path("/models/m.gguf"), lora_path=tmp_path / "specialist.gguf")
    command = server.command()
    assert command[command.index("--lora_path") + 1] == str(tmp_path / "specialist.gguf")
    assert "--lora_path" not in LlamaServer(Path("/models/m.gguf")).command()


def test_bundled_bidirectional_seats_a_specialist_and_a_retrieval_student() -> None:
    scenario = load_scenario(find_scenario("bidirectional")).scenario
    (teacher,) = teacher_seats(scenario)
    (student,) = student_seats(scenario)
    assert (teacher.name, teacher.model) == ("specialist", "local/smollm2-135m")
    assert (student.name, student.model, student.learning) == (
        "generalist",
        "local/qwen2.5-0.5b",
        "retrieval",
    )
    assert student.namespace == "bidirectional" and not student.fine_tunable


@pytest.mark.real
def test_bundled_bidirectional_student_recalls_what_it_was_taught(tmp_path: Path) -> None:
    memory = tmp_path / "mem"
    earlier = MemoryStore.open(path=memory).add_turn(  # a lesson from an earlier run
        "bidirectional",
        question="Who bred the first Quorra bees?",
        answer="Maud Ferrand bred the first Quorra bees in 1902.",
        run_id="earlier",
        turn=1,
    )
    result, events = run_bundled("bidirectional", tmp_path, turns=2)
    recalled = [e for e in events if isinstance(e, MemoryRecalled)]
    assert recalled and recalled[0].turn == 1 and earlier.id in recalled[0].ids
    assert {e.name for e in recalled} == {"generalist"}
    first = next((e for e in events if isinstance(e, MemoryStored) and e.turn == 1), None)
    if first is not None:  # turn 1 was accepted: the second turn can recall it
        assert any(first.id in e.ids for e in recalled if e.turn == 2)
    assert "memory: student generalist recalled" in result.stdout
