"""`teachback run --rounds N`: dialogue, fine-tune and quiz, round after round, each on the last adapter."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from teachback.agents.scripted import ScriptedChatClient
from teachback.cli import main
from teachback.errors import TeachbackError
from teachback.memory.adapters import list_adapters
from teachback.memory.finetune import TrainConfig
from teachback.scenarios.rounds import run_rounds, taught_in
from teachback.scenarios.run import RunRequest
from teachback.transcripts.events import RunStarted, TurnAccepted
from teachback.transcripts.reader import read_transcript
from tests.conftest import judge

# Each round learns different turns (the memory keeps one copy of a turn it has seen before).
ROUNDS = {
    1: [
        ("What is the capital of Vellmar?", "Korrin is the capital of Vellmar, on the northern coast."),
        ("What is the currency of Vellmar?", "The currency of Vellmar is the drell."),
    ],
    2: [
        ("Who founded Vellmar?", "Queen Almeth founded Vellmar in 1487 by uniting the five fishing clans."),
        ("How is the currency of Vellmar divided?", "The drell is divided into one hundred pennets."),
    ],
}


def scripted(round_: int) -> dict[str, ScriptedChatClient]:
    turns = ROUNDS[round_]
    student = [line for q, a in turns for line in (q, "I learned: " + a)]
    return {
        "student": ScriptedChatClient(student),
        "teacher": ScriptedChatClient([a for _q, a in turns]),
        "judge": judge(9),
    }


def examples_of(run_dir: Path) -> int:
    accepted = [e for e in read_transcript(run_dir / "transcript.jsonl") if isinstance(e, TurnAccepted)]
    return sum(1 + a.teachback_accepted for a in accepted)


def test_rounds_refuse_resume_and_no_memory(scenario_file, tmp_path: Path) -> None:
    with pytest.raises(TeachbackError, match="--rounds starts new rounds"):
        run_rounds(RunRequest(resume=tmp_path), 2, Console())
    with pytest.raises(TeachbackError, match="drop --no-memory"):
        run_rounds(RunRequest(scenario=str(scenario_file()), no_memory=True), 2, Console())
    with pytest.raises(SystemExit) as stop:
        main(["run", str(scenario_file()), "--rounds", "0"])
    assert stop.value.code == 2


@pytest.mark.real
def test_two_rounds_train_on_all_rounds_and_carry_the_adapter(scenario_file, tmp_path: Path) -> None:
    request = RunRequest(
        scenario=str(scenario_file(turns=2)), out=tmp_path / "rounds", plain=True, memory_dir=tmp_path / "mem"
    )
    config = TrainConfig(epochs=2, learning_rate=2e-3, val_split=0.0)
    outcomes = run_rounds(request, 2, Console(width=120), config=config, clients=scripted)

    assert [o.run_dir for o in outcomes] == [tmp_path / "rounds" / "round-1", tmp_path / "rounds" / "round-2"]
    first, second = outcomes
    header = read_transcript(second.run_dir / "transcript.jsonl")[0]
    assert isinstance(header, RunStarted)
    assert header.options["adapter"] == str(first.adapter.resolve())  # round 2 wore round 1's adapter
    first_header = read_transcript(first.run_dir / "transcript.jsonl")[0]
    assert header.seed == first_header.seed + 1  # round 2 samples anew, not a replay of round 1
    taught = taught_in([first])  # round 2 goes on with the curriculum where round 1 left it
    assert taught and header.options["taught_before"] == {str(f): n for f, n in taught.items()}
    assert [a.path.resolve() for a in list_adapters()] == [first.adapter.resolve(), second.adapter.resolve()]
    # round 2 trained on both rounds' turns: an example per accepted answer, one per teach-back that passed
    examples = [examples_of(o.run_dir) for o in outcomes]
    assert examples[0] >= 2 and examples[1] >= 2
    assert json.loads((first.run_dir / "finetune.json").read_text())["n_train"] == examples[0]
    assert json.loads((second.run_dir / "finetune.json").read_text())["n_train"] == sum(examples)
    for o in outcomes:
        for label in ("before", "after"):
            quiz = json.loads((o.run_dir / f"quiz-{label}.json").read_text())
            assert quiz["totals"]["n"] == 1 and quiz["items"][0]["answer"]
    # round 2 started as round 1 ended: the same quiz result, not a second measurement
    assert (
        json.loads((second.run_dir / "quiz-before.json").read_text())["items"]
        == json.loads((first.run_dir / "quiz-after.json").read_text())["items"]
    )


def test_the_report_of_a_round_shows_the_quiz_after_every_round_so_far(
    scenario_file, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rounds write `round-N/quiz-before.json` and `quiz-after.json` (nothing writes `quiz-round-N.json`):
    the report of round N shows the quiz before round 1 and after each round up to N (training faked)."""
    from teachback.memory.finetune import TrainResult
    from teachback.scenarios import finetune_student, quiz
    from teachback.transcripts.report import load_run, write_report

    answers = iter(["I do not know", "Korrin?", "Korrin", "Korrin"])  # before, round 1, round 2, ceiling

    def fake_quiz_student(items, model, *, adapter, judge_model, label, **_):  # type: ignore[no-untyped-def]
        answer = next(answers)
        item = quiz.QuizItemResult(
            items[0].question, items[0].answer, answer, answer == "Korrin", 0.5, "", False
        )
        return quiz.QuizResult([item], label=label, student=model)

    def fake_training(console, base, pairs, out, config, namespace, turns, student, curve, val_curve):  # type: ignore[no-untyped-def]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"adapter")
        return TrainResult(out, [2.0], [2.2, 1.7], 100.0, 1 << 20, 1.0, "", "", len(pairs), 0, 1, 1, 1)

    monkeypatch.setattr(quiz, "quiz_student", fake_quiz_student)
    monkeypatch.setattr(finetune_student, "_train_with_progress", fake_training)
    request = RunRequest(
        scenario=str(scenario_file(turns=2)), out=tmp_path / "rounds", plain=True, memory_dir=tmp_path / "mem"
    )
    first, second = run_rounds(request, 2, Console(width=120, file=io.StringIO()), clients=scripted)
    assert not list((tmp_path / "rounds").rglob("quiz-round-*.json"))

    assert [q["label"] for q in load_run(first.run_dir).quiz] == ["before", "round 1"]
    assert [q["label"] for q in load_run(second.run_dir).quiz] == ["before", "round 1", "round 2"]
    metrics = json.loads(write_report(second.run_dir)[-1].read_text(encoding="utf-8"))
    assert [(t["correct"], t["n"]) for t in metrics["quiz"]["totals"]] == [(0, 1), (0, 1), (1, 1)]
    assert (
        metrics["totals"]["quiz_before"]["correct"] == 0 and metrics["totals"]["quiz_after"]["correct"] == 1
    )
