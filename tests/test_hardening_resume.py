"""Resume, hardened: a turn cut off before its verdict is played again and its first attempt counts nowhere
(metrics, report); a completed run has nothing to resume; a run killed before its first event starts over."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from teachback.cli import main
from teachback.errors import ModelCallError
from teachback.scenarios.run import RunRequest, finished_run, run_scenario, transcript_path
from teachback.transcripts.events import (
    MessageDone,
    Notice,
    RunFinished,
    RunStarted,
    TurnAccepted,
    TurnRejected,
    TurnStarted,
    Verdict,
)
from teachback.transcripts.metrics import abandoned_turns, run_metrics, without_abandoned
from teachback.transcripts.reader import read_transcript
from tests.conftest import verdict
from tests.test_director import GOOD_CAPITAL, GOOD_CURRENCY, cast

A, B = "the capital and founding of Vellmar", "the currency of Vellmar"


def header(t: float = 0.0, resumed_from_turn: int = 0) -> RunStarted:
    return RunStarted(t=t, run_id="r", scenario="s", scenario_path="s.yaml", scenario_sha256="0" * 64,
                      models={"student": "local/smollm2-135m", "teacher": "openai/x", "judge": "openai/x"},
                      options={"turns": 2}, seed=0, versions={}, started_at="now", objectives=[A, B],
                      resumed_from_turn=resumed_from_turn)  # fmt: skip


def message(t: float, turn: int, text: str) -> MessageDone:
    return MessageDone(t=t, turn=turn, role="teacher", name="teacher", kind="answer", text=text,
                       model="openai/x", tokens=10, seconds=1.0)  # fmt: skip


def answer_verdict(t: float, turn: int, score: float) -> Verdict:
    return Verdict(t=t, turn=turn, kind="answer", score=score, accepted=score >= 0.6, reason="r")


def accepted(t: float, turn: int, objective: str) -> TurnAccepted:
    return TurnAccepted(t=t, turn=turn, objective=objective, question="q", answer="a", score=0.9,
                        teacher_model="openai/x")  # fmt: skip


# An old transcript (no notice, no marker): turn 2 was cut off after a low verdict, then played again.
CUT_AND_RESUMED = [
    header(),
    TurnStarted(t=1.0, turn=1, objective=A),
    message(2.0, 1, "Korrin."),
    answer_verdict(2.1, 1, 0.9),
    accepted(2.2, 1, A),
    TurnStarted(t=3.0, turn=2, objective=B),
    message(4.0, 2, "The drell?"),
    answer_verdict(4.1, 2, 0.2),
    RunFinished(t=4.5, status="interrupted", turns=1, accepted=1, acceptance_rate=1.0, objectives_covered=[]),
    header(5.0, resumed_from_turn=1),
    TurnStarted(t=6.0, turn=2, objective=B),
    message(7.0, 2, "The drell."),
    answer_verdict(7.1, 2, 0.8),
    accepted(7.2, 2, B),
    RunFinished(
        t=8.0, status="completed", turns=2, accepted=2, acceptance_rate=1.0, objectives_covered=[A, B]
    ),
]


def test_an_abandoned_turn_counts_once_and_its_verdicts_not_at_all() -> None:
    assert abandoned_turns(CUT_AND_RESUMED) == [[5, 6, 7]]
    m = run_metrics(CUT_AND_RESUMED, price=lambda model: (0.0, 0.0))
    assert [(o["objective"], o["turns"]) for o in m["objectives"]] == [(A, 1), (B, 1)]
    assert [s["score"] for s in m["scores"]] == [0.9, 0.8]  # not the abandoned attempt's 0.2
    assert [(r["turn"], r["outcome"], r["answer"]) for r in m["turns"]] == [
        (1, "accepted", 0.9),
        (2, "accepted", 0.8),
    ]
    assert [e["text"] for e in m["timeline"]] == ["Korrin.", "The drell."]
    assert m["totals"]["turns"] == 2 and m["totals"]["abandoned_turns"] == 1
    assert m["totals"]["tokens"] == 30  # the abandoned message's tokens were spent all the same


def test_a_turn_still_open_at_the_end_is_not_abandoned() -> None:
    open_tail = CUT_AND_RESUMED[:8]  # cut off, never resumed: the report shows how far it got
    assert abandoned_turns(open_tail) == [] and without_abandoned(open_tail) == open_tail
    decided = [header(), TurnStarted(t=1.0, turn=1, objective=A), answer_verdict(1.5, 1, 0.1)]
    decided += [TurnRejected(t=2.0, turn=1, objective=A, reason="x"), header(3.0, 1)]
    assert abandoned_turns(decided) == []  # rejected is an end too


def test_a_turn_cut_off_mid_way_is_played_again_and_counted_once(scenario_file, tmp_path: Path) -> None:
    path = scenario_file(turns=3)
    first = cast(
        student=[
            "What is the capital of Vellmar?",
            "Korrin is the capital, founded 1487 by Almeth.",
            "What is the currency?",
        ],  # fmt: skip
        teacher=[GOOD_CAPITAL, ModelCallError("teacher openai/x at http://127.0.0.1:9/v1 failed: reset")],
        judge=[verdict(9)],
    )
    out = tmp_path / "run"
    console = Console(record=True, width=120)
    with pytest.raises(ModelCallError):
        run_scenario(RunRequest(scenario=str(path), out=out, plain=True), console, clients=first)
    cut = read_transcript(transcript_path(out))
    assert [e.turn for e in cut if isinstance(e, TurnStarted)] == [1, 2]
    assert any(
        isinstance(e, Verdict) and e.turn == 2 for e in cut
    )  # the abandoned attempt's question verdict

    second = cast(
        student=[
            "What is the currency of Vellmar?",
            "The drell, with one hundred pennets.",
            "Who founded Vellmar?",
            "Almeth founded it in 1487.",
        ],  # fmt: skip
        teacher=[GOOD_CURRENCY, GOOD_CAPITAL],
        judge=[verdict(9), verdict(9)],
    )
    run_scenario(RunRequest(resume=out, plain=True), console, clients=second)
    events = read_transcript(transcript_path(out))
    notices = [e for e in events if isinstance(e, Notice) and "cut off" in e.message]
    assert [(n.turn, n.message) for n in notices] == [
        (2, "turn 2 was cut off before its verdict: it is played again")
    ]
    assert [e.turn for e in events if isinstance(e, TurnStarted)] == [1, 2, 2, 3]
    m = run_metrics(events, price=lambda model: (0.0, 0.0))
    assert sum(o["turns"] for o in m["objectives"]) == 3 and [r["turn"] for r in m["turns"]] == [1, 2, 3]
    assert m["totals"]["abandoned_turns"] == 1 and m["totals"]["turns"] == 3
    kept = without_abandoned(events)
    abandoned = [e for e in events if e not in kept]
    assert abandoned and all(getattr(e, "turn", 0) == 2 for e in abandoned)
    assert len(m["scores"]) == sum(isinstance(e, Verdict) for e in events) - sum(
        isinstance(e, Verdict) for e in abandoned
    )


def test_resuming_a_completed_run_says_so_and_does_nothing(
    scenario_file, tmp_path: Path, monkeypatch, capsys
) -> None:
    clients = cast(["What is the capital of Vellmar?", "Korrin, 1487."], [GOOD_CAPITAL], [verdict(9)])
    out = tmp_path / "run"
    run_scenario(
        RunRequest(scenario=str(scenario_file(turns=1)), out=out, plain=True), Console(), clients=clients
    )
    before = transcript_path(out).read_bytes()
    capsys.readouterr()

    from teachback.agents import llama_server

    def no_server(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished run started a server")

    monkeypatch.setattr(llama_server.ServerPool, "get", no_server)
    assert main(["run", "--resume", str(out), "--plain"]) == 0
    said = capsys.readouterr()
    assert said.out == f"{out}: finished (1 turns, 1 accepted); nothing to resume\n" and said.err == ""
    assert transcript_path(out).read_bytes() == before  # no second header
    assert finished_run(out) is not None and finished_run(out, turns=2) is None  # more turns: continue


def test_a_run_killed_before_its_first_event_starts_again_in_its_folder(
    scenario_file, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    transcript_path(out).write_text('{"v": 1, "type": "run_sta')  # SIGKILL in the middle of the header
    assert main(["run", "--resume", str(out), "--plain"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stopped before it wrote its first event" in err and "--out" in err
    clients = cast(["What is the capital of Vellmar?", "Korrin, 1487."], [GOOD_CAPITAL], [verdict(9)])
    run_scenario(
        RunRequest(scenario=str(scenario_file(turns=1)), out=out, plain=True), Console(), clients=clients
    )
    events = read_transcript(transcript_path(out))
    assert isinstance(events[0], RunStarted) and events[-1].status == "completed"
