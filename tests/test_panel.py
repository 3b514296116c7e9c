"""A teacher panel: every teacher answers, every candidate is judged and recorded, one is accepted."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from teachback.agents.scripted import ScriptedChatClient
from teachback.errors import ModelCallError
from teachback.scenarios.panel import Candidate, agreement, choose
from teachback.scenarios.run import RunRequest, run_scenario, transcript_path
from teachback.transcripts.events import (
    MessageDone,
    Notice,
    PanelDecision,
    RunFinished,
    RunStarted,
    TurnAccepted,
    Verdict,
)
from teachback.transcripts.reader import read_transcript
from teachback.transcripts.render import LiveRenderer, PlainRenderer
from teachback.transcripts.replay import replay
from tests.conftest import run_bundled, verdict

GOOD = "Korrin is the capital of Vellmar. Vellmar was founded in 1487 by Queen Almeth."
SHORT = "Korrin is the capital of Vellmar."
WRONG = "The capital of Vellmar is Dastor, founded in 1623."
QUESTION = "What is the capital of Vellmar?"
TEACHBACK = "Korrin is the capital, founded in 1487 by Almeth."
PANEL = [
    {"name": "ada", "model": "local/smollm2-135m"},
    {"name": "bo", "model": "openai/gpt-4o-mini"},
    {"name": "cy", "model": "local/smollm2-135m"},
]


def judge_by_content(messages: list) -> str:
    """The judge model's own score: high for any answer (the grounded checks decide)."""
    return verdict(8)


def run(path: Path, tmp_path: Path, clients: dict, **request: object) -> list:
    out = tmp_path / "run"
    req = RunRequest(scenario=str(path), out=out, plain=True, no_memory=True, **request)  # type: ignore[arg-type]
    run_scenario(req, Console(record=True, width=120, file=io.StringIO()), clients=clients)
    return read_transcript(transcript_path(out))


def panel_clients(ada: list, bo: list, cy: list, student: list | None = None) -> dict:
    return {
        "student": ScriptedChatClient(student or [QUESTION, TEACHBACK], role="student"),
        "ada": ScriptedChatClient(ada, role="teacher"),
        "bo": ScriptedChatClient(bo, role="teacher"),
        "cy": ScriptedChatClient(cy, role="teacher"),
        "judge": ScriptedChatClient([judge_by_content] * 12, role="judge"),
    }


def test_every_candidate_is_judged_and_the_best_is_accepted(scenario_file, tmp_path) -> None:
    path = scenario_file(turns=1, teachers=PANEL)
    clients = panel_clients([SHORT], [WRONG], [GOOD])
    events = run(path, tmp_path, clients)
    header = events[0]
    assert isinstance(header, RunStarted)
    assert [(s["role"], s["name"]) for s in header.seats] == [
        ("teacher", "ada"),
        ("teacher", "bo"),
        ("teacher", "cy"),
        ("student", "student"),
    ]
    assert header.models["teacher"] == "local/smollm2-135m"
    answers = [e for e in events if isinstance(e, MessageDone) and e.role == "teacher"]
    assert {(a.name, a.text) for a in answers} == {("ada", SHORT), ("bo", WRONG), ("cy", GOOD)}
    assert {a.name: a.model for a in answers}["bo"] == "openai/gpt-4o-mini"
    verdicts = {e.name: e for e in events if isinstance(e, Verdict) and e.kind == "answer"}
    assert set(verdicts) == {"ada", "bo", "cy"}
    assert not verdicts["bo"].accepted and "dastor" in verdicts["bo"].reason
    decision = next(e for e in events if isinstance(e, PanelDecision))
    assert decision.select == "best" and [c["name"] for c in decision.candidates] == ["ada", "bo", "cy"]
    best = max((v for v in verdicts.values() if v.accepted), key=lambda v: v.score)
    assert decision.chosen == best.name
    accepted = [e for e in events if isinstance(e, TurnAccepted)]
    assert len(accepted) == 1 and accepted[0].teacher == best.name
    assert accepted[0].answer == {"ada": SHORT, "cy": GOOD}[best.name]
    # every teacher was asked the same question, with the notes
    for name in ("ada", "bo", "cy"):
        assert QUESTION in clients[name].calls[0].messages[-1].content


def test_consensus_picks_the_answer_the_others_agree_with(scenario_file, tmp_path) -> None:
    path = scenario_file(turns=1, teachers=PANEL, panel={"select": "consensus"})
    odd = "Vellmar was founded in 1487 by Queen Almeth; its capital is Korrin."
    events = run(path, tmp_path, panel_clients([GOOD], [odd], [GOOD.replace("Queen ", "")]))
    decision = next(e for e in events if isinstance(e, PanelDecision))
    assert decision.select == "consensus" and decision.reason.startswith("consensus")
    assert decision.chosen in {"ada", "cy"}
    assert next(e for e in events if isinstance(e, TurnAccepted)).teacher == decision.chosen


def test_choose_best_and_consensus_directly() -> None:
    a = Candidate("a", "Korrin is the capital, founded in 1487.", score=0.7, accepted=True)
    b = Candidate("b", "The capital is Korrin; it was founded in 1487.", score=0.6, accepted=True)
    c = Candidate("c", "Korrin is a harbour city with a lantern festival.", score=0.9, accepted=True)
    rejected = Candidate("d", "Dastor.", score=0.95, accepted=False)
    failed = Candidate("e", error=ModelCallError("down"))
    assert choose([a, b, c, rejected, failed], "best")[0] is c
    assert choose([a, b, c, rejected, failed], "consensus")[0] is a  # ties with b on agreement, higher score
    assert choose([a, b], "consensus")[0] is a  # fewer than three accepted: the best
    assert choose([rejected, failed], "best") == (None, "no candidate accepted (1 failed)")
    assert agreement("x", []) == 0.0
    assert failed.record() == {"name": "e", "score": 0.0, "accepted": False, "error": "down"}


def test_a_failing_member_is_recorded_and_the_panel_goes_on(scenario_file, tmp_path) -> None:
    path = scenario_file(turns=1, teachers=PANEL)
    down = ModelCallError("teacher openai/gpt-4o-mini failed: connection refused")
    events = run(path, tmp_path, panel_clients([GOOD], [down], [SHORT]))
    notices = [e for e in events if isinstance(e, Notice) and e.level == "error"]
    assert len(notices) == 1 and "teacher bo failed" in notices[0].message
    decision = next(e for e in events if isinstance(e, PanelDecision))
    bo = next(c for c in decision.candidates if c["name"] == "bo")
    assert "connection refused" in bo["error"] and not bo["accepted"]
    assert decision.chosen in {"ada", "cy"}
    assert events[-1].status == "completed" and events[-1].accepted == 1


def test_a_failed_member_sits_out_the_retries_of_its_turn(scenario_file, tmp_path) -> None:
    path = scenario_file(turns=1, teachers=PANEL, answer_retries=1)
    clients = panel_clients([WRONG, GOOD], [ModelCallError("down")], [WRONG, SHORT])
    events = run(path, tmp_path, clients)
    decisions = [e for e in events if isinstance(e, PanelDecision)]
    assert [d.attempt for d in decisions] == [1, 2] and decisions[0].chosen == ""
    assert [c["name"] for c in decisions[1].candidates] == ["ada", "cy"]
    # each member was told why its own answer was rejected
    assert "not in the knowledge" in clients["ada"].calls[1].messages[-1].content
    assert len(clients["bo"].calls) == 1
    assert events[-1].accepted == 1


def test_when_every_member_fails_the_turn_fails_like_a_lone_teacher(scenario_file, tmp_path) -> None:
    path = scenario_file(turns=1, teachers=PANEL)
    clients = panel_clients([ModelCallError("ada down")], [ModelCallError("bo down")], [ModelCallError("cy")])
    with pytest.raises(ModelCallError, match="ada down"):
        run(path, tmp_path, clients)
    events = read_transcript(transcript_path(tmp_path / "run"))
    assert isinstance(events[-1], RunFinished) and events[-1].status == "failed"
    assert "ada down" in events[-1].reason
    assert len([e for e in events if isinstance(e, Notice) and e.level == "error"]) == 3


def test_replay_and_live_view_show_every_candidate_with_its_verdict(scenario_file, tmp_path) -> None:
    path = scenario_file(turns=1, teachers=PANEL)
    run(path, tmp_path, panel_clients([SHORT], [WRONG], [GOOD]))
    plain = Console(record=True, width=200, file=io.StringIO())
    renderer = PlainRenderer(plain)
    replay(transcript_path(tmp_path / "run"), renderer, instant=True)
    text = plain.export_text()
    for name in ("ada", "bo", "cy"):
        assert f"[turn 1] teacher {name} (answer):" in text
        assert f"judge: answer by {name} " in text
    assert "judge: answer by bo REJECT" in text
    assert "[turn 1] panel: " in text and " chosen — best: score " in text
    assert "bo 0.00 ✗" in text.split("panel:")[1]
    summary = text.split("run summary")[1]
    assert "teacher bo" in summary and "accepted 0/1 (0%)" in summary
    assert "mean score" in summary and "chosen 1" in summary

    live_out = Console(record=True, width=200, force_terminal=True, file=io.StringIO())
    live = LiveRenderer(live_out)
    replay(transcript_path(tmp_path / "run"), live, instant=True)
    live.close()
    shown = live_out.export_text()
    assert "teacher ada (answer)" in shown and "teacher bo (answer)" in shown
    assert "judge: answer by cy ACCEPT" in shown and "panel: " in shown


def test_live_panel_of_a_candidate_carries_its_verdict(scenario_file, tmp_path) -> None:
    path = scenario_file(turns=1, teachers=PANEL, teachback=False)
    run(path, tmp_path, panel_clients([SHORT], [WRONG], [GOOD], student=[QUESTION]))
    events = read_transcript(transcript_path(tmp_path / "run"))
    live = LiveRenderer(Console(record=True, width=160, force_terminal=True, file=io.StringIO()))
    for event in events:
        if isinstance(event, TurnAccepted):
            break
        live.handle(event)
    view = Console(record=True, width=160, file=io.StringIO())
    view.print(live.view())
    live.close()
    text = view.export_text()
    assert "teacher · bo · answer" in text and "judge: answer by bo REJECT" in text
    assert "teacher · ada · answer" in text and "teacher · cy · answer" in text


# --- the real thing -----------------------------------------------------------------------------------


@pytest.mark.real
def test_bundled_teacher_panel_runs_a_turn(tmp_path: Path) -> None:
    result, events = run_bundled("teacher-panel", tmp_path, turns=1)
    out = tmp_path / "run"
    names = {s["name"] for s in events[0].seats if s["role"] == "teacher"}
    assert names == {"archivist", "storyteller", "qwen"}
    decisions = [e for e in events if isinstance(e, PanelDecision)]
    assert decisions
    for decision in decisions:
        judged = {e.name for e in events if isinstance(e, Verdict) and e.kind == "answer" and e.turn == 1}
        answered = {c["name"] for c in decision.candidates if not c.get("error")}
        assert answered <= judged and {c["name"] for c in decision.candidates} == names
    assert sum(bool(d.chosen) for d in decisions) <= 1
    accepted = [e for e in events if isinstance(e, TurnAccepted)]
    assert len(accepted) == sum(bool(d.chosen) for d in decisions)
    if accepted:
        assert accepted[0].teacher == next(d.chosen for d in decisions if d.chosen)
    assert "teacher archivist" in result.stdout.split("run summary")[1]
    # archivist and storyteller share one SmolLM2 server; qwen has its own, and so does the 1.5B judge
    logs = sorted(p.name for p in out.glob("llama-server-*.log"))
    assert len(logs) == 3 and sum("1.5b" in name for name in logs) == 1, logs
