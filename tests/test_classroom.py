"""A classroom: students take turns asking, follow up on each other, and keep separate memories."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from teachback.agents.scripted import ScriptedChatClient
from teachback.errors import ModelCallError, TeachbackError
from teachback.memory.store import MemoryStore
from teachback.scenarios.loader import find_scenario, load_scenario
from teachback.scenarios.run import RunRequest, run_scenario, transcript_path
from teachback.scenarios.seats import student_seats
from teachback.transcripts.events import MemoryStored, RunStarted, TurnAccepted, TurnStarted
from teachback.transcripts.reader import read_transcript
from tests.conftest import judge, run_bundled

CAPITAL = "Korrin is the capital of Vellmar. Vellmar was founded in 1487 by Queen Almeth."
CURRENCY = "The currency of Vellmar is the drell. One drell is divided into one hundred pennets."
FOUNDING = "Vellmar was founded in 1487 by Queen Almeth, who united the clans."
STUDENTS = [{"name": "ana"}, {"name": "ben", "temperature": 0.9}]


def run(path: Path, tmp_path: Path, clients: dict, out: str = "run", **request: object) -> list:
    req = RunRequest(
        scenario=str(path), out=tmp_path / out, plain=True, memory_dir=tmp_path / "mem", **request
    )  # type: ignore[arg-type]
    console = Console(record=True, width=160, file=io.StringIO())
    run_scenario(req, console, clients=clients)
    return read_transcript(transcript_path(tmp_path / out))


def classroom(ana: list, ben: list, teacher: list) -> dict:
    return {
        "ana": ScriptedChatClient(ana, role="student"),
        "ben": ScriptedChatClient(ben, role="student"),
        "teacher": ScriptedChatClient(teacher, role="teacher"),
        "judge": judge(9),
    }


def three_turns() -> dict:
    return classroom(
        ana=[
            "What is the capital of Vellmar?",
            "Korrin is the capital, founded in 1487 by Almeth.",
            "When was Vellmar founded?",
            "Vellmar was founded in 1487 by Almeth.",
        ],
        ben=["What is the currency of Vellmar?", "The drell, with one hundred pennets."],
        teacher=[CAPITAL, CURRENCY, FOUNDING],
    )


def test_students_take_turns_and_follow_up_on_each_other(scenario_file, tmp_path) -> None:
    clients = three_turns()
    events = run(scenario_file(turns=3, students=STUDENTS), tmp_path, clients)
    assert [e.student for e in events if isinstance(e, TurnStarted)] == ["ana", "ben", "ana"]
    accepted = [e for e in events if isinstance(e, TurnAccepted)]
    assert [(a.turn, a.student) for a in accepted] == [(1, "ana"), (2, "ben"), (3, "ana")]
    # ben heard what ana asked and was taught; ana then heard ben's exchange
    ben_ask = clients["ben"].calls[0].messages[-1].content
    assert "Your classmate ana asked: What is the capital of Vellmar?" in ben_ask and CAPITAL in ben_ask
    ana_first, ana_again = clients["ana"].calls[0].messages[-1].content, clients["ana"].calls[2].messages[-1]
    assert "classmate" not in ana_first
    assert "Your classmate ben asked: What is the currency of Vellmar?" in ana_again.content
    # the one who asked restates: ben's teach-back went to ben
    assert len(clients["ben"].calls) == 2 and "The teacher answered: " + CURRENCY in str(
        clients["ben"].calls[1].messages[-1].content
    )
    finished = events[-1]
    assert finished.status == "completed" and finished.accepted == 3


def test_each_student_has_its_own_namespace(scenario_file, tmp_path) -> None:
    events = run(scenario_file(turns=3, students=STUDENTS), tmp_path, three_turns())
    header = events[0]
    assert isinstance(header, RunStarted)
    seats = {s["name"]: s for s in header.seats if s["role"] == "student"}
    assert seats["ana"]["namespace"] == "vellmar-test-ana" and seats["ben"]["namespace"] == "vellmar-test-ben"
    assert seats["ana"]["learning"] == "finetune" and seats["ben"]["temperature"] == 0.9
    stored = {e.turn: e.namespace for e in events if isinstance(e, MemoryStored)}
    assert stored == {1: "vellmar-test-ana", 2: "vellmar-test-ben", 3: "vellmar-test-ana"}
    store = MemoryStore.open(path=tmp_path / "mem", create=False)
    ana = store.entries("vellmar-test-ana")
    ben = store.entries("vellmar-test-ben")
    assert sorted(t.turn for t in ana) == [1, 3] and [t.turn for t in ben] == [2]
    assert ben[0].question == "What is the currency of Vellmar?"
    assert ben[0].metadata["student_model"] == "local/smollm2-135m"


def test_a_seat_may_name_its_own_namespace(scenario_file, tmp_path) -> None:
    students = [{"name": "ana", "memory_namespace": "ana-notes"}, {"name": "ben"}]
    clients = classroom(["What is the capital of Vellmar?", "Korrin, founded 1487 by Almeth."], [], [CAPITAL])
    events = run(scenario_file(turns=1, students=students), tmp_path, clients)
    assert [e.namespace for e in events if isinstance(e, MemoryStored)] == ["ana-notes"]


def test_seats_api_for_quizzes_and_fine_tuning(tmp_path) -> None:
    scenario = load_scenario(find_scenario("classroom")).scenario
    seats = student_seats(scenario)
    assert [(s.name, s.namespace, s.learning, s.fine_tunable) for s in seats] == [
        ("ana", "classroom-ana", "finetune", True),
        ("ben", "classroom-ben", "finetune", True),
    ]
    assert all(s.model == "local/smollm2-135m" and s.adapter is None for s in seats)
    assert [s.namespace for s in student_seats(scenario, "shared")] == ["shared-ana", "shared-ben"]


def test_resume_gives_each_student_its_own_lessons(scenario_file, tmp_path) -> None:
    path = scenario_file(turns=3, students=STUDENTS)
    first = classroom(
        ["What is the capital of Vellmar?", "Korrin is the capital, founded in 1487 by Almeth."],
        ["What is the currency of Vellmar?", "The drell, with one hundred pennets."],
        [CAPITAL, CURRENCY, ModelCallError("teacher down")],
    )
    first["ana"].replies += ["When was Vellmar founded?"]
    with pytest.raises(ModelCallError):
        run(path, tmp_path, first)
    second = classroom(["When was Vellmar founded?", "Founded in 1487 by Almeth."], [], [FOUNDING])
    req = RunRequest(scenario=None, resume=tmp_path / "run", plain=True, memory_dir=tmp_path / "mem")
    run_scenario(req, Console(record=True, width=120, file=io.StringIO()), clients=second)
    messages = [str(m.content) for m in second["ana"].calls[0].messages]
    assert any(CAPITAL in m for m in messages) and not any(
        CURRENCY in m and "classmate" not in m for m in messages
    )
    events = read_transcript(transcript_path(tmp_path / "run"))
    assert [(e.turn, e.student) for e in events if isinstance(e, TurnAccepted)] == [
        (1, "ana"),
        (2, "ben"),
        (3, "ana"),
    ]


def test_one_adapter_option_for_several_students_is_an_error(scenario_file, tmp_path) -> None:
    adapter = tmp_path / "a.gguf"
    adapter.write_bytes(b"x")
    with pytest.raises(TeachbackError, match="several"):
        run(scenario_file(turns=1, students=STUDENTS), tmp_path, three_turns(), adapter=adapter)


def test_summary_counts_each_students_accepted_turns(scenario_file, tmp_path) -> None:
    run(scenario_file(turns=3, students=STUDENTS), tmp_path, three_turns())
    from teachback.transcripts.render import PlainRenderer
    from teachback.transcripts.replay import replay

    out = Console(record=True, width=160, file=io.StringIO())
    replay(transcript_path(tmp_path / "run"), PlainRenderer(out), instant=True)
    text = out.export_text()
    assert "[turn 2] objective: the currency of Vellmar (asked by ben)" in text
    assert "judge: question by ben ACCEPT" in text
    summary = text.split("run summary")[1]
    assert "student ana" in summary and "accepted turns 2" in summary and "accepted turns 1" in summary


@pytest.mark.real
def test_bundled_classroom_runs_both_students(tmp_path: Path) -> None:
    memory = tmp_path / "mem"
    _result, events = run_bundled("classroom", tmp_path, turns=2)
    assert [e.student for e in events if isinstance(e, TurnStarted)] == ["ana", "ben"]
    stored = {e.namespace for e in events if isinstance(e, MemoryStored)}
    assert stored <= {"classroom-ana", "classroom-ben"}
    accepted = [e for e in events if isinstance(e, TurnAccepted)]
    if accepted:
        store = MemoryStore.open(path=memory, create=False)
        for turn in accepted:
            namespace = f"classroom-{turn.student}"
            assert turn.question in [t.question for t in store.entries(namespace)]


def test_a_retrieval_student_is_quizzed_without_then_with_its_notes(
    scenario_file, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from teachback.scenarios import quiz, rounds

    students = [{"name": "ana"}, {"name": "big", "model": "local/smollm2-135m", "learning": "retrieval"}]
    clients = three_turns()
    clients["big"] = clients.pop("ben")
    path = scenario_file(turns=3, students=students)
    run(path, tmp_path, clients)
    asked: list[tuple[str, str, str]] = []  # (model, label, notes for the quiz's first question)

    def fake_quiz_student(items, model, *, adapter, judge_model, label, seed, context, endpoints):  # type: ignore[no-untyped-def]
        asked.append((model, label, context(items[0].question) if context else ""))
        item = quiz.QuizItemResult(items[0].question, items[0].answer, "Korrin", True, 0.9, "ok", True)
        return quiz.QuizResult([item], label=label, student=model)

    monkeypatch.setattr(quiz, "quiz_student", fake_quiz_student)
    request = RunRequest(scenario=str(path), memory_dir=tmp_path / "mem")
    results = rounds.quiz_run(tmp_path / "run", Console(file=io.StringIO()), request)
    assert [(m, label) for m, label, _ in asked] == [
        ("local/smollm2-135m", "before-ana"),
        ("local/smollm2-135m", "before-big"),
        ("local/smollm2-135m", "after-big"),
    ]
    assert asked[1][2] == ""  # before: no notes
    assert "drell" in asked[2][2] and "Korrin" not in asked[2][2]  # after: notes from big's own memory only
    assert set(results) == {"ana/before", "big/before", "big/after"}
    for name in ("quiz-before-ana.json", "quiz-before-big.json", "quiz-after-big.json"):
        assert (tmp_path / "run" / name).is_file()


@pytest.mark.real
def test_finetune_gives_each_student_its_own_adapter(scenario_file, tmp_path) -> None:
    from teachback.memory.adapters import list_adapters

    events = run(scenario_file(turns=3, students=STUDENTS), tmp_path, three_turns())
    accepted = [e for e in events if isinstance(e, TurnAccepted)]
    # an example per accepted answer, and one per teach-back that passed the gate, in the asking seat only
    examples = {
        seat: sum(1 + a.teachback_accepted for a in accepted if a.student == seat) for seat in ("ana", "ben")
    }
    assert examples["ana"] > examples["ben"] >= 1
    base = [sys.executable, "-m", "teachback.cli", "finetune", "--run-dir", str(tmp_path / "run")]
    base += ["--memory-dir", str(tmp_path / "mem"), "--epochs", "1", "--val-split", "0", "--no-quiz"]
    both = subprocess.run(
        [*base, "--out", "x.gguf"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert both.returncode == 2 and "has 2 students to train" in both.stderr
    done = subprocess.run(base, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    made = {a.namespace: a for a in list_adapters(tmp_path / ".teachback" / "adapters")}
    assert set(made) == {"vellmar-test-ana", "vellmar-test-ben"}
    trained = (made["vellmar-test-ana"].n_train, made["vellmar-test-ben"].n_train)
    assert trained == (examples["ana"], examples["ben"])
    assert (tmp_path / "run" / "finetune-ana.json").is_file() and (
        tmp_path / "run" / "finetune-ben.json"
    ).is_file()
    one = subprocess.run(
        [*base, "--seat", "ben", "--out", "ben.gguf"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )
    assert one.returncode == 0 and (tmp_path / "ben.gguf").is_file()


def test_the_report_and_the_batch_summary_show_each_students_quiz_and_fine_tune(
    scenario_file, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A classroom writes `quiz-before-<seat>.json`, `quiz-after-<seat>.json` and `finetune-<seat>.json`;
    the report and the batch summary read them (training faked: the files are the product's own)."""
    from teachback.memory.finetune import TrainResult
    from teachback.scenarios import finetune_student, quiz
    from teachback.scenarios.batch_summary import quiz_score
    from teachback.transcripts.report import write_report

    run(scenario_file(turns=3, students=STUDENTS), tmp_path, three_turns())

    def fake_quiz_student(items, model, *, adapter, judge_model, label):  # type: ignore[no-untyped-def]
        answer = "Korrin" if label == "after-ana" else "I do not know"
        item = quiz.QuizItemResult(
            items[0].question, items[0].answer, answer, answer == "Korrin", 0.5, "", False
        )
        return quiz.QuizResult([item], label=label, student=model)

    def fake_training(console, base, pairs, out, config, namespace, turns, student, curve, val_curve):  # type: ignore[no-untyped-def]
        curve += [[1, 2.0], [2, 1.5]]
        return TrainResult(out, [2.0, 1.5], [2.2, 1.7], 100.0, 1 << 20, 1.0, "", "", len(pairs), 0, 1, 2, 2)

    monkeypatch.setattr(quiz, "quiz_student", fake_quiz_student)
    monkeypatch.setattr(finetune_student, "_train_with_progress", fake_training)
    folder = tmp_path / "run"
    for seat in ("ana", "ben"):
        request = finetune_student.FinetuneRequest(
            run_dir=folder, seat=seat, memory_dir=tmp_path / "mem", out=tmp_path / f"{seat}.gguf"
        )
        finetune_student.train_from_memory(request, Console(file=io.StringIO()))
    assert {"quiz-after-ana.json", "finetune-ben.json"} <= {p.name for p in folder.iterdir()}

    paths = write_report(folder)
    page = paths[0].read_text(encoding="utf-8")
    assert "not run" not in page.lower()
    for seat, after in (("ana", "1/1"), ("ben", "0/1")):
        assert f"<div class='k'>quiz · {seat}</div><div class='v'>0/1 → {after}</div>" in page
    assert {"quiz-ana.png", "quiz-ben.png", "finetune-ana.png", "finetune-ben.png"} <= {p.name for p in paths}
    metrics = json.loads(paths[-1].read_text(encoding="utf-8"))
    assert [(s["seat"], s["quiz"]["labels"]) for s in metrics["classroom"]] == [
        ("ana", ["before-ana", "after-ana"]),
        ("ben", ["before-ben", "after-ben"]),
    ]
    assert all(s["finetune"]["train_loss"] == [2.0, 1.5] for s in metrics["classroom"])
    assert quiz_score(folder) == "ana 0.00 → 1.00 · ben 0.00 → 0.00"
