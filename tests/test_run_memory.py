"""Accepted turns reach the vector memory as they are accepted, and survive crashes and kills."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from teachback.agents.scripted import ScriptedChatClient
from teachback.memory.store import MemoryStore
from teachback.scenarios.run import RunRequest, run_scenario, transcript_path
from teachback.transcripts.events import MemoryStored, TurnAccepted
from teachback.transcripts.reader import read_transcript
from tests.conftest import judge, verdict

CAPITAL = "Korrin is the capital of Vellmar. Vellmar was founded in 1487 by Queen Almeth."
CURRENCY = "The currency of Vellmar is the drell. One drell is divided into one hundred pennets."


def clients(*answers: str) -> dict[str, ScriptedChatClient]:
    student: list = []
    for answer in answers:
        topic = "capital" if "capital" in answer else "currency"
        student += [f"What is the {topic} of Vellmar?"]
        student += ["I learned: " + answer]
    return {
        "student": ScriptedChatClient(student),
        "teacher": ScriptedChatClient(list(answers)),
        "judge": judge(9),
    }


def run(scenario: Path, out: Path, memory: Path, cast: dict, **kw: object) -> list:
    request = RunRequest(scenario=str(scenario), out=out, plain=True, memory_dir=memory, **kw)  # type: ignore[arg-type]
    run_scenario(request, Console(record=True, width=120), clients=cast)
    return read_transcript(transcript_path(out))


def stored(memory: Path, namespace: str = "vellmar-test") -> list:
    return MemoryStore.open(path=memory, create=False).entries(namespace)


def test_accepted_turns_are_stored_with_provenance(scenario_file, tmp_path: Path) -> None:
    events = run(scenario_file(), tmp_path / "run", tmp_path / "mem", clients(CAPITAL, CURRENCY))
    accepted = [e for e in events if isinstance(e, TurnAccepted)]
    notes = [e for e in events if isinstance(e, MemoryStored)]
    assert [n.turn for n in notes] == [a.turn for a in accepted] == [1, 2]
    assert all(not n.duplicate_of and not n.existed for n in notes)
    # each MemoryStored follows its TurnAccepted directly: written as the judge accepts, not at the end
    for note in notes:
        i = events.index(note)
        assert isinstance(events[i - 1], TurnAccepted) and events[i - 1].turn == note.turn
    turns = stored(tmp_path / "mem")
    assert len(turns) == 2
    meta = {t.metadata["turn"]: t.metadata for t in turns}
    assert meta[1]["run_id"] == events[0].run_id and meta[1]["objective"].startswith("the capital")
    assert meta[1]["teacher_model"] == "local/qwen2.5-0.5b" and meta[1]["judge_score"] > 0.6
    assert "support" in meta[1]["judge_reason"]


def test_rerun_updates_in_place_and_near_duplicates_are_marked(scenario_file, tmp_path: Path) -> None:
    path = scenario_file(turns=1)
    run(path, tmp_path / "a", tmp_path / "mem", clients(CAPITAL))
    again = run(path, tmp_path / "b", tmp_path / "mem", clients(CAPITAL))
    assert [e.existed for e in again if isinstance(e, MemoryStored)] == [True]
    near = CAPITAL.replace("Queen Almeth.", "Queen Almeth!")  # same content, other punctuation
    third = run(path, tmp_path / "c", tmp_path / "mem", clients(near))
    note = next(e for e in third if isinstance(e, MemoryStored))
    assert note.existed or note.duplicate_of
    assert len([t for t in stored(tmp_path / "mem") if not t.duplicate_of]) == 1


def test_no_memory_stores_nothing(scenario_file, tmp_path: Path) -> None:
    events = run(scenario_file(turns=1), tmp_path / "run", tmp_path / "mem", clients(CAPITAL), no_memory=True)
    assert not [e for e in events if isinstance(e, MemoryStored)]
    assert not (tmp_path / "mem").exists()


def test_a_turn_the_memory_missed_is_stored_on_resume(scenario_file, tmp_path: Path, monkeypatch) -> None:
    """A crash between the transcript write and the memory write: the resume repairs the memory."""
    from teachback.errors import MemoryStoreError
    from teachback.memory import sink

    path = scenario_file(turns=2)
    real = sink.MemorySink._store
    calls = {"n": 0}

    def flaky(self, event):  # the second accepted turn fails to reach the memory
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryStoreError("chroma server went away")
        return real(self, event)

    monkeypatch.setattr(sink.MemorySink, "_store", flaky)
    with pytest.raises(MemoryStoreError):
        run(path, tmp_path / "run", tmp_path / "mem", clients(CAPITAL, CURRENCY))
    events = read_transcript(transcript_path(tmp_path / "run"))
    assert [e.turn for e in events if isinstance(e, TurnAccepted)] == [1, 2]
    assert len(stored(tmp_path / "mem")) == 1
    monkeypatch.setattr(sink.MemorySink, "_store", real)
    request = RunRequest(resume=tmp_path / "run", plain=True, memory_dir=tmp_path / "mem")
    run_scenario(request, Console(record=True), clients=clients())
    assert len(stored(tmp_path / "mem")) == 2
    assert "stored 1 turns a crash left out" in (tmp_path / "run" / "transcript.jsonl").read_text()


KILLER = textwrap.dedent(
    """
    import os, signal, sys, json
    from pathlib import Path
    from rich.console import Console
    from teachback.agents.scripted import ScriptedChatClient
    from teachback.scenarios.run import RunRequest, run_scenario

    scenario, out, memory, capital, currency, judge = sys.argv[1:7]

    def die(messages):
        os.kill(os.getpid(), signal.SIGKILL)  # mid-turn 2, while the teacher is answering

    clients = {
        "student": ScriptedChatClient(["What is the capital of Vellmar?", "I learned: " + capital,
                                       "What is the currency of Vellmar?"]),
        "teacher": ScriptedChatClient([capital, die]),
        "judge": ScriptedChatClient([judge] * 16),
    }
    run_scenario(RunRequest(scenario=scenario, out=Path(out), plain=True, memory_dir=Path(memory)),
                 Console(), clients=clients)
    """
)


def test_sigkill_mid_turn_leaves_memory_and_transcript_consistent(scenario_file, tmp_path: Path) -> None:
    script = tmp_path / "killer.py"
    script.write_text(KILLER, encoding="utf-8")
    out, mem = tmp_path / "run", tmp_path / "mem"
    proc = subprocess.run(
        [sys.executable, str(script), str(scenario_file(turns=3)), str(out), str(mem)]
        + [CAPITAL, CURRENCY, verdict(9)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    lines = (out / "transcript.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["type"] != "run_finished"  # really killed, no clean ending
    assert len(stored(mem)) == 1

    run_scenario(
        RunRequest(resume=out, plain=True, memory_dir=mem), Console(), clients=clients(CURRENCY, CAPITAL)
    )
    events = read_transcript(transcript_path(out))
    accepted = {(e.question, e.answer) for e in events if isinstance(e, TurnAccepted)}
    in_memory = {(t.question, t.answer) for t in stored(mem)}
    assert [e.turn for e in events if isinstance(e, TurnAccepted)] == [1, 2, 3]
    assert in_memory == accepted  # no turn accepted in one and missing from the other
