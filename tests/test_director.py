"""The turn loop on scripted models: steering, retries, teach-back, events, transcript and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from teachback.agents.scripted import ScriptedChatClient
from teachback.errors import ModelCallError
from teachback.scenarios.run import RunRequest, run_scenario, transcript_path
from teachback.transcripts.events import (
    MessageDone,
    Notice,
    RunFinished,
    RunStarted,
    TokenDelta,
    TurnAccepted,
    TurnRejected,
    TurnStarted,
    Verdict,
)
from teachback.transcripts.reader import read_transcript
from tests.conftest import verdict

GOOD_CAPITAL = "Korrin is the capital of Vellmar. Vellmar was founded in 1487 by Queen Almeth."
GOOD_CURRENCY = "The currency of Vellmar is the drell. One drell is divided into one hundred pennets."
WRONG_CAPITAL = "The capital of Vellmar is Dastor, founded in 1623."


def cast(student: list, teacher: list, judge: list) -> dict[str, ScriptedChatClient]:
    """Scripted seats; the judge's last reply answers every later call (one call per claim checked)."""
    return {
        "student": ScriptedChatClient(student, role="student"),
        "teacher": ScriptedChatClient(teacher, role="teacher"),
        "judge": ScriptedChatClient(judge + judge[-1:] * 40, role="judge"),
    }


def run(scenario: Path, tmp_path: Path, clients: dict, **request: object) -> list:
    out = tmp_path / "run"
    req = RunRequest(scenario=str(scenario), out=out, plain=True, **request)  # type: ignore[arg-type]
    console = Console(record=True, width=120, force_terminal=False)
    run_dir = run_scenario(req, console, clients=clients)
    assert run_dir == out
    return read_transcript(transcript_path(out))


def test_two_good_turns_are_accepted_and_cover_both_objectives(scenario_file, tmp_path) -> None:
    clients = cast(
        student=[
            "What is the capital of Vellmar? And more rambling",
            "I learned that Korrin is the capital, and Vellmar was founded in 1487 by Almeth.",
            "What is the currency of Vellmar?",
            "The currency of Vellmar is the drell, with one hundred pennets.",
        ],
        teacher=[GOOD_CAPITAL, GOOD_CURRENCY],
        judge=[verdict(9), verdict(8)],
    )
    events = run(scenario_file(), tmp_path, clients)
    header = events[0]
    assert isinstance(header, RunStarted)
    assert header.models == {  # the bundled cast
        "student": "local/smollm2-135m",
        "teacher": "local/qwen2.5-0.5b",
        "judge": "local/qwen2.5-1.5b",
    }
    assert header.options["turns"] == 2 and len(header.scenario_sha256) == 64
    accepted = [e for e in events if isinstance(e, TurnAccepted)]
    assert [a.objective for a in accepted] == [
        "the capital and founding of Vellmar",
        "the currency of Vellmar",
    ]
    assert accepted[0].question == "What is the capital of Vellmar?"  # rambling after '?' trimmed
    assert accepted[0].answer == GOOD_CAPITAL and accepted[0].objective_covered
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.status == "completed"
    assert (
        finished.accepted == 2 and finished.acceptance_rate == 1.0 and len(finished.objectives_covered) == 2
    )
    # tokens streamed and messages completed for every speaker
    assert {e.role for e in events if isinstance(e, TokenDelta)} == {"student", "teacher"}
    assert {e.role for e in events if isinstance(e, MessageDone)} == {"student", "teacher", "judge"}
    teacher_msgs = [e for e in events if isinstance(e, MessageDone) and e.role == "teacher"]
    assert [m.text for m in teacher_msgs] == [GOOD_CAPITAL, GOOD_CURRENCY]
    assert (
        "".join(e.text for e in events if isinstance(e, TokenDelta) and e.role == "teacher" and e.turn == 1)
        == GOOD_CAPITAL
    )
    # the teacher was given the knowledge passages relevant to the question, not the quiz
    teacher_prompt = clients["teacher"].calls[0].messages[-1].content
    assert "Korrin" in teacher_prompt and "What is the capital of Vellmar?" in teacher_prompt


def test_contradicting_answer_is_rejected_then_retried(scenario_file, tmp_path) -> None:
    clients = cast(
        student=["What is the capital of Vellmar?", "Korrin is the capital, founded in 1487 by Almeth."],
        teacher=[WRONG_CAPITAL, GOOD_CAPITAL],
        judge=[verdict(10), verdict(9)],  # the judge model is fooled; the grounded gate is not
    )
    events = run(scenario_file(turns=1), tmp_path, clients)
    answer_verdicts = [e for e in events if isinstance(e, Verdict) and e.kind == "answer"]
    assert [v.accepted for v in answer_verdicts] == [False, True]
    assert "dastor" in answer_verdicts[0].reason and "1623" in answer_verdicts[0].reason
    # the retry told the teacher why
    assert "not in the knowledge" in clients["teacher"].calls[1].messages[-1].content
    assert [e.answer for e in events if isinstance(e, TurnAccepted)] == [GOOD_CAPITAL]


def test_turn_rejected_when_retries_run_out(scenario_file, tmp_path) -> None:
    clients = cast(
        student=[
            "What is the capital of Vellmar?",
            "What is the currency of Vellmar?",  # turn 2 moves on to the objective not yet tried
            "The drell, in one hundred pennets.",
        ],
        teacher=[WRONG_CAPITAL, WRONG_CAPITAL, GOOD_CURRENCY],
        judge=[verdict(10), verdict(10), verdict(9)],
    )
    events = run(scenario_file(answer_retries=1), tmp_path, clients)
    rejected = [e for e in events if isinstance(e, TurnRejected)]
    assert len(rejected) == 1 and rejected[0].turn == 1
    finished = events[-1]
    assert finished.accepted == 1 and finished.acceptance_rate == 0.5


def test_off_topic_question_is_asked_again_then_director_steps_in(scenario_file, tmp_path) -> None:
    clients = cast(
        student=["Do you like pizza?", "What about football?", "Korrin is the capital, founded 1487."],
        teacher=[GOOD_CAPITAL],
        judge=[verdict(9)],
    )
    events = run(scenario_file(turns=1, question_retries=1), tmp_path, clients)
    q_verdicts = [e for e in events if isinstance(e, Verdict) and e.kind == "question"]
    assert [v.accepted for v in q_verdicts] == [False, False]
    assert "off topic" in clients["student"].calls[1].messages[-1].content
    notices = [e for e in events if isinstance(e, Notice)]
    assert any("director asks" in n.message for n in notices)
    assert [e.question for e in events if isinstance(e, TurnAccepted)] == ["What is the capital of Vellmar?"]


def test_failed_teachback_keeps_objective_uncovered_and_steers_next_turn(scenario_file, tmp_path) -> None:
    clients = cast(
        student=[
            "What is the capital of Vellmar?",
            "I dunno.",
            "What is the currency of Vellmar?",
            "The currency of Vellmar is the drell, divided into one hundred pennets.",
            "When was Vellmar founded?",
            "Vellmar was founded in 1487 by Queen Almeth; Korrin is the capital.",
        ],
        teacher=[GOOD_CAPITAL, GOOD_CURRENCY, GOOD_CAPITAL],
        judge=[verdict(9), verdict(9), verdict(9)],
    )
    events = run(scenario_file(turns=3), tmp_path, clients)
    starts = [e for e in events if isinstance(e, TurnStarted)]
    capital, currency = "the capital and founding of Vellmar", "the currency of Vellmar"
    # the uncovered objective comes back after the one not yet tried, with what went wrong
    assert [s.objective for s in starts] == [capital, currency, capital]
    assert "misunderstood" in clients["student"].calls[4].messages[-1].content
    accepted = [e for e in events if isinstance(e, TurnAccepted)]
    assert [a.objective_covered for a in accepted] == [False, True, True]


def test_teacher_failure_ends_run_with_clear_error_and_transcript_intact(scenario_file, tmp_path) -> None:
    clients = cast(
        student=[
            "What is the capital of Vellmar?",
            "Korrin is the capital, founded 1487.",
            "What is the currency?",
        ],
        teacher=[
            GOOD_CAPITAL,
            ModelCallError("teacher openai/x at http://127.0.0.1:9/v1 failed: connection refused"),
        ],
        judge=[verdict(9)],
    )
    with pytest.raises(ModelCallError, match="connection refused"):
        run(scenario_file(), tmp_path, clients)
    events = read_transcript(transcript_path(tmp_path / "run"))
    assert [e.turn for e in events if isinstance(e, TurnAccepted)] == [1]
    assert isinstance(events[-1], RunFinished) and events[-1].status == "failed"
    assert "connection refused" in events[-1].reason


def test_resume_continues_after_last_complete_turn(scenario_file, tmp_path) -> None:
    path = scenario_file(turns=3)
    first = cast(
        student=[
            "What is the capital of Vellmar?",
            "Korrin is the capital, founded 1487 by Almeth.",
            "What is the currency?",
        ],
        teacher=[GOOD_CAPITAL, ModelCallError("teacher down")],
        judge=[verdict(9)],
    )
    with pytest.raises(ModelCallError):
        run(path, tmp_path, first)
    second = cast(
        student=[
            "What is the currency of Vellmar?",
            "The drell, with one hundred pennets.",
            "Who founded Vellmar?",
            "Almeth founded it in 1487.",
        ],
        teacher=[GOOD_CURRENCY, GOOD_CAPITAL],
        judge=[verdict(9), verdict(9)],
    )
    req = RunRequest(scenario=None, resume=tmp_path / "run", plain=True)
    run_scenario(req, Console(record=True, width=120), clients=second)
    events = read_transcript(transcript_path(tmp_path / "run"))
    accepted = [e.turn for e in events if isinstance(e, TurnAccepted)]
    assert accepted == [1, 2, 3]  # turn 1 was not asked again
    headers = [e for e in events if isinstance(e, RunStarted)]
    assert [h.resumed_from_turn for h in headers] == [0, 1]
    # the resumed student was reminded of its first lesson
    first_call = second["student"].calls[0].messages
    assert any(GOOD_CAPITAL in str(m.content) for m in first_call)
    assert events[-1].status == "completed"
    times = [e.t for e in events]
    assert times == sorted(times)  # the resumed clock continues


def test_existing_run_folder_is_not_overwritten(scenario_file, tmp_path) -> None:
    from teachback.errors import RunDirError

    clients = cast(["What is the capital of Vellmar?", "Korrin, 1487."], [GOOD_CAPITAL], [verdict(9)])
    run(scenario_file(turns=1), tmp_path, clients)
    with pytest.raises(RunDirError, match="--resume"):
        run(scenario_file(turns=1), tmp_path, cast([], [], []))


def test_resume_rebuilds_turns_spent_per_objective() -> None:
    from teachback.scenarios.run import progress_from
    from teachback.transcripts.events import TurnRejected

    a, b = "the capital and founding of Vellmar", "the currency of Vellmar"
    events = [
        TurnRejected(t=1.0, turn=1, objective=a, reason="x"),
        TurnRejected(t=2.0, turn=2, objective=b, reason="y"),
    ]
    events.append(TurnRejected(t=3.0, turn=3, objective=a, reason="z"))
    progress, t = progress_from(events, [a, b])
    assert progress.tries == {a: 2, b: 1} and progress.next_turn == 4 and t == 3.0
    assert progress.next_objective() == b  # fewest turns among the uncovered


def test_resume_restores_what_went_wrong_per_objective() -> None:
    """A resumed student is told what went wrong last time, as it would have been without the crash: a
    rejected answer, or a teach-back that was not accepted (with the judge's reason)."""
    from teachback.scenarios.run import progress_from
    from teachback.transcripts.progress import MISUNDERSTOOD, REJECTED

    a, b = "the capital and founding of Vellmar", "the currency of Vellmar"
    events = [
        TurnRejected(t=1.0, turn=1, objective=a, reason="x"),
        Verdict(t=2.0, turn=2, kind="teachback", score=0.2, accepted=False, reason="it named no currency"),
        TurnAccepted(
            t=2.1, turn=2, objective=b, question="q", answer=GOOD_CURRENCY, score=0.9, teacher_model="m",
            teachback="I dunno.", teachback_score=0.2, objective_covered=False,
        ),
    ]  # fmt: skip
    progress, _ = progress_from(events, [a, b])
    assert progress.mistakes == {a: REJECTED, b: MISUNDERSTOOD.format(reason="it named no currency")}
    covered = TurnAccepted(
        t=3.0, turn=3, objective=b, question="q", answer=GOOD_CURRENCY, score=0.9, teacher_model="m",
        objective_covered=True,
    )  # fmt: skip
    progress, _ = progress_from([*events, covered], [a, b])
    assert progress.mistakes == {a: REJECTED} and progress.covered == [b] and progress.next_turn == 4


def test_a_resume_rebuilds_the_progress_the_live_run_had(scenario_file, tmp_path, monkeypatch) -> None:
    """`Progress.apply` over the transcript gives what the director itself counted: turns, outcomes,
    objectives, what went wrong, lessons, facts (`asked` is the director's own)."""
    from dataclasses import asdict

    from teachback.scenarios.director import Director
    from teachback.scenarios.run import progress_from

    live = []
    play = Director.run

    async def keep(self, progress):  # type: ignore[no-untyped-def]
        live.append(await play(self, progress))
        return live[-1]

    monkeypatch.setattr(Director, "run", keep)
    clients = cast(
        student=[
            "What is the capital of Vellmar?",
            "What is the currency of Vellmar?",
            "I dunno.",
            "When was Vellmar founded?",
            "Vellmar was founded in 1487 by Queen Almeth; Korrin is the capital.",
        ],
        teacher=[WRONG_CAPITAL, WRONG_CAPITAL, GOOD_CURRENCY, GOOD_CAPITAL],
        judge=[verdict(10), verdict(10), verdict(9)],
    )
    events = run(scenario_file(turns=3, answer_retries=1), tmp_path, clients)
    assert [type(e) for e in events if isinstance(e, TurnAccepted | TurnRejected)] == [
        TurnRejected, TurnAccepted, TurnAccepted,
    ]  # fmt: skip
    (progress,) = live
    rebuilt, _ = progress_from(events, progress.objectives)
    assert progress.mistakes  # the currency's teach-back was not accepted
    assert {**asdict(rebuilt), "asked": {}} == {**asdict(progress), "asked": {}}


def test_a_later_round_goes_on_to_the_facts_the_earlier_rounds_did_not_teach(scenario_file, tmp_path) -> None:
    """`taught_before` (learning rounds) counts in the steering: the first turn goes to a fact no earlier
    round taught, the header keeps the counts, and a resume restores them from it."""
    from teachback.scenarios.run import progress_from

    clients = cast(
        student=["What is the capital of Vellmar?"] * 4, teacher=[GOOD_CAPITAL] * 4, judge=[verdict(9)]
    )
    first = run(scenario_file(turns=1), tmp_path / "a", clients)
    steered = next(e for e in first if isinstance(e, TurnStarted)).facts
    assert steered, "the scenario's curriculum steers its first turn to a fact"

    clients = cast(
        student=["What is the capital of Vellmar?"] * 4, teacher=[GOOD_CAPITAL] * 4, judge=[verdict(9)]
    )
    earlier = {steered[0]: 3}  # the fact the first turn went to, taught 3 times already
    later = run(scenario_file(turns=1), tmp_path / "b", clients, taught_before=earlier)
    header = later[0]
    assert isinstance(header, RunStarted) and header.options["taught_before"] == {str(steered[0]): 3}
    assert next(e for e in later if isinstance(e, TurnStarted)).facts != steered
    progress, _ = progress_from(later, header.objectives)
    assert progress.earlier == earlier and progress.taught_so_far()[steered[0]] >= 3
