"""The loop's point: a student fine-tuned on a round's accepted turns answers more of the quiz than before.

A whole round (24 turns with the bundled cast) takes about ten minutes on 2 cores, so the real test starts
from one the product recorded: `tests/data/learning/invented-domain-round-1.jsonl`, a transcript of a round of
the bundled `invented-domain` scenario (token deltas left out). Its accepted turns go into a memory the way a
run stores them, and `teachback finetune`'s own path trains the student with the default settings and quizzes
it before and after.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from teachback.memory.sink import MemorySink
from teachback.memory.store import MemoryStore
from teachback.scenarios.finetune_student import FinetuneRequest, train_from_memory
from teachback.scenarios.loader import find_scenario
from teachback.transcripts.events import RunStarted, TurnAccepted
from teachback.transcripts.reader import read_transcript

RECORDED = Path(__file__).parent / "data" / "learning" / "invented-domain-round-1.jsonl"


def recorded_run(tmp_path: Path) -> Path:
    """The recorded round as a run folder here, its header pointing at this checkout's bundled scenario."""
    run_dir = tmp_path / "round-1"
    run_dir.mkdir()
    lines = RECORDED.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    header["scenario_path"] = str(find_scenario("invented-domain"))
    (run_dir / "transcript.jsonl").write_text(
        "\n".join([json.dumps(header), *lines[1:]]) + "\n", encoding="utf-8"
    )
    return run_dir


def test_the_recorded_round_is_a_product_transcript_with_facts_taught() -> None:
    events = read_transcript(RECORDED)
    header = events[0]
    assert isinstance(header, RunStarted) and header.scenario == "invented-domain" and header.facts
    accepted = [e for e in events if isinstance(e, TurnAccepted)]
    assert len(accepted) >= 12 and all(a.facts for a in accepted)


@pytest.mark.real
def test_a_student_fine_tuned_on_a_recorded_round_answers_more_of_the_quiz(tmp_path: Path) -> None:
    run_dir = recorded_run(tmp_path)
    events = read_transcript(run_dir / "transcript.jsonl")
    header = events[0]
    assert isinstance(header, RunStarted)
    store = MemoryStore.open(path=tmp_path / "mem")
    stored = MemorySink(store, header.scenario, header).backfill(events)
    assert stored == sum(isinstance(e, TurnAccepted) for e in events)

    outcome = train_from_memory(
        FinetuneRequest(run_dir=run_dir, memory_dir=tmp_path / "mem"),
        Console(file=io.StringIO(), width=120),
    )
    before, after = outcome.quiz_before.totals(), outcome.quiz_after.totals()
    assert after["correct"] > before["correct"], (before, after)
    assert outcome.result.loss_on == "answer"  # the build of scripts/patches/ masks the prompt
    assert (run_dir / "finetune.json").is_file() and (run_dir / "quiz-after.json").is_file()
