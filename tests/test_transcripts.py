"""The recorder, the reader (and its one-line errors), repair of a cut-off tail, and replay."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from teachback.errors import TeachbackError, TranscriptError
from teachback.transcripts import reader, recorder
from teachback.transcripts.events import (
    Event,
    MessageDone,
    Notice,
    RunFinished,
    RunStarted,
    TokenDelta,
    TurnAccepted,
    TurnRejected,
    TurnStarted,
    Verdict,
    to_json,
)
from teachback.transcripts.reader import read_transcript, repair_truncated_tail
from teachback.transcripts.recorder import TranscriptRecorder
from teachback.transcripts.replay import MAX_PAUSE, replay

STEP = 0.5  # seconds between two events of the sample run


def make_run(turns: int = 2, *, resumed_from_turn: int = 0, start: float = 0.0) -> list[Event]:
    """A plausible run: odd turns accepted, even turns rejected, one event every STEP seconds."""
    clock = iter(start + STEP * i for i in range(1000))
    header = RunStarted(
        t=next(clock),
        run_id="run-1",
        scenario="zorn",
        scenario_path="scenarios/zorn.yaml",
        scenario_sha256="0" * 64,
        models={
            "student": "local/smollm2-135m",
            "teacher": "openai/gpt-4o-mini",
            "judge": "local/smollm2-135m",
        },
        options={"turns": turns, "threshold": 0.7},
        seed=7,
        versions={"teachback": "0.1.0"},
        started_at="2025-01-01T00:00:00Z",
        objectives=["valves", "pressure", "history"],
        resumed_from_turn=resumed_from_turn,
    )
    events: list[Event] = [header]
    accepted = 0
    for turn in range(resumed_from_turn + 1, resumed_from_turn + turns + 1):
        ok = turn % 2 == 1
        accepted += ok
        objective = ["valves", "pressure", "history"][(turn - 1) % 3]
        q = f"What does valve {turn} regulate?"
        a = f"Valve {turn} regulates the Zorn pressure loop."
        say = dict(turn=turn, model="m", tokens=0, seconds=0.0)
        events += [
            TurnStarted(t=next(clock), turn=turn, objective=objective),
            TokenDelta(t=next(clock), turn=turn, role="student", name="student", kind="question", text=q[:9]),
            TokenDelta(t=next(clock), turn=turn, role="student", name="student", kind="question", text=q[9:]),
            MessageDone(
                t=next(clock),
                role="student",
                name="student",
                kind="question",
                text=q,
                **{**say, "tokens": 10},
            ),
            TokenDelta(t=next(clock), turn=turn, role="teacher", name="teacher", kind="answer", text=a[:12]),
            TokenDelta(t=next(clock), turn=turn, role="teacher", name="teacher", kind="answer", text=a[12:]),
            MessageDone(
                t=next(clock),
                role="teacher",
                name="teacher",
                kind="answer",
                text=a,
                **{**say, "tokens": 40, "seconds": 2.0},
            ),
            Verdict(
                t=next(clock),
                turn=turn,
                kind="answer",
                score=0.82 if ok else 0.31,
                accepted=ok,
                reason="names the pressure loop" if ok else "wrong loop",
                components={"llm": 0.8, "grounded": 0.84},
            ),
            TurnAccepted(
                t=next(clock),
                turn=turn,
                objective=objective,
                question=q,
                answer=a,
                score=0.82,
                teacher_model="openai/gpt-4o-mini",
                objective_covered=True,
            )
            if ok
            else TurnRejected(t=next(clock), turn=turn, objective=objective, reason="score 0.31 below 0.70"),
        ]
    events.append(
        RunFinished(
            t=next(clock),
            status="completed",
            turns=turns,
            accepted=accepted,
            acceptance_rate=accepted / turns,
            objectives_covered=["valves"],
        )
    )
    return events


def write_lines(path: Path, lines: list[str], *, final_newline: bool = True) -> Path:
    path.write_text("\n".join(lines) + ("\n" if final_newline else ""), encoding="utf-8")
    return path


def header_json() -> str:
    return to_json(make_run()[0])


# --- recorder ---------------------------------------------------------------------------------------


def test_record_then_read_gives_back_the_same_events(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "deep" / "transcript.jsonl"  # parent folders are created
    events = make_run()
    with TranscriptRecorder(path) as rec:
        for event in events:
            rec.handle(event)
    assert read_transcript(path) == events
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(events)
    assert all(json.loads(line)["v"] == 1 for line in lines)


def test_every_event_is_flushed_before_close(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rec = TranscriptRecorder(path)
    events = make_run()
    rec.handle(events[0])
    rec.handle(events[1])
    assert read_transcript(path) == events[:2]  # read while the recorder is still open
    rec.close()


def test_turn_outcomes_and_the_end_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    path = tmp_path / "t.jsonl"
    rec = TranscriptRecorder(path)
    monkeypatch.setattr(
        recorder.os, "fsync", lambda fd: synced.append(path.read_text(encoding="utf-8").splitlines()[-1])
    )
    for event in make_run():
        rec.handle(event)
    kinds = [json.loads(line)["type"] for line in synced]
    assert kinds == ["turn_accepted", "turn_rejected", "run_finished"]
    rec.close()
    assert len(synced) == 4  # close syncs once more


def test_close_is_idempotent_and_recording_after_close_fails(tmp_path: Path) -> None:
    rec = TranscriptRecorder(tmp_path / "t.jsonl")
    rec.close()
    rec.close()
    assert rec.closed
    with pytest.raises(ValueError, match="closed"):
        rec.handle(make_run()[0])


def test_a_resumed_run_appends_a_second_header(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    first, second = make_run()[:-1], make_run(resumed_from_turn=2)
    for part in (first, second):
        with TranscriptRecorder(path) as rec:
            for event in part:
                rec.handle(event)
    events = read_transcript(path)
    assert events == first + second
    assert [e.resumed_from_turn for e in events if isinstance(e, RunStarted)] == [0, 2]


def test_recorder_refuses_to_append_after_a_cut_off_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [header_json(), '{"v": 1, "ty'], final_newline=False)
    with pytest.raises(TranscriptError, match="truncated"):
        TranscriptRecorder(path)
    assert repair_truncated_tail(path)
    with TranscriptRecorder(path) as rec:
        rec.handle(make_run()[1])
    assert len(read_transcript(path)) == 2


# --- reader -----------------------------------------------------------------------------------------


def _turn_line(**change: object) -> str:
    data = json.loads(to_json(TurnStarted(t=1.0, turn=1, objective="valves")))
    data.update(change)
    return json.dumps({k: v for k, v in data.items() if v is not None})


CORRUPT = {
    "not json": ([header_json(), _turn_line(), "{not json"], 3, "not valid JSON ("),
    "unknown type": ([header_json(), _turn_line(type="bogus")], 2, "unknown event type 'bogus'"),
    "wrong version": ([header_json(), _turn_line(v=2)], 2, "unsupported schema version 2"),
    "missing field": ([header_json(), _turn_line(objective=None)], 2, "turn_started event lacks objective"),
    "not an object": ([header_json(), "[1, 2]"], 2, "not a JSON object"),
    "header missing": ([_turn_line(), header_json()], 1, "first event is 'turn_started', not 'run_started'"),
    "header missing after blanks": (["", "  ", _turn_line()], 3, "not 'run_started'"),
}


@pytest.mark.parametrize("case", CORRUPT, ids=list(CORRUPT))
def test_corrupt_line_is_one_line_error_naming_the_line(tmp_path: Path, case: str) -> None:
    lines, number, what = CORRUPT[case]
    path = write_lines(tmp_path / "t.jsonl", lines)
    with pytest.raises(TranscriptError) as err:
        read_transcript(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{number}: ")
    assert what in message
    assert "\n" not in message


def test_truncated_tail_is_an_error_that_says_how_to_repair(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [header_json(), _turn_line(), '{"v": 1, "type": "tok'])
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    with pytest.raises(TranscriptError) as err:
        read_transcript(path)
    assert str(err.value) == (
        f"{path}:3: truncated last line (the run was cut off mid-write); teachback run --resume repairs it"
    )


def test_truncated_tail_can_be_ignored(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [header_json(), _turn_line(), '{"v": 1'], final_newline=False)
    events = read_transcript(path, allow_truncated_tail=True)
    assert [e.type for e in events] == ["run_started", "turn_started"]


def test_a_complete_last_line_without_newline_still_counts_as_truncated(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [header_json(), _turn_line()], final_newline=False)
    with pytest.raises(TranscriptError, match=r":2: truncated last line"):
        read_transcript(path)
    assert len(read_transcript(path, allow_truncated_tail=True)) == 1


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "blank lines"])
def test_empty_transcript(tmp_path: Path, content: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TranscriptError, match=r"t\.jsonl: empty transcript"):
        read_transcript(path)


def test_missing_transcript(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(TranscriptError) as err:
        read_transcript(path)
    assert str(err.value) == f"{path}: no such transcript"


def test_blank_lines_are_skipped_and_numbering_counts_them(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [header_json(), "", _turn_line(), "", "oops"])
    with pytest.raises(TranscriptError, match=r":5: not valid JSON"):
        read_transcript(path)
    write_lines(path, [header_json(), "", _turn_line(), "   "])
    assert [e.type for e in read_transcript(path)] == ["run_started", "turn_started"]


def test_migrations_upgrade_old_lines_before_parsing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A pretend schema v0 called Notice.message "msg".
    def v0_to_v1(d: dict) -> dict:
        d = {**d, "v": 1}
        if d.get("type") == "notice":
            d["message"] = d.pop("msg")
        return d

    old_header = {**json.loads(header_json()), "v": 0}
    old_notice = {"v": 0, "type": "notice", "t": 1.0, "level": "info", "msg": "server started"}
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(old_header), json.dumps(old_notice)])
    with pytest.raises(TranscriptError, match=r":1: unsupported schema version 0"):
        read_transcript(path)
    monkeypatch.setitem(reader.MIGRATIONS, 0, v0_to_v1)
    events = read_transcript(path)
    assert events[0] == make_run()[0]
    assert events[1] == Notice(t=1.0, level="info", message="server started")


# --- repair -----------------------------------------------------------------------------------------


def test_repair_cuts_the_partial_line_and_only_it(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [header_json(), _turn_line(), '{"v": 1, "type": "to'])
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    assert repair_truncated_tail(path) is True
    assert path.read_text(encoding="utf-8") == header_json() + "\n" + _turn_line() + "\n"
    assert len(read_transcript(path)) == 2
    assert repair_truncated_tail(path) is False
    assert len(read_transcript(path)) == 2


def test_repair_of_a_file_that_is_all_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"v": 1, "type": "run_sta', encoding="utf-8")
    assert repair_truncated_tail(path) is True
    assert path.read_bytes() == b""
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert repair_truncated_tail(empty) is False


def test_repair_finds_the_newline_far_back(tmp_path: Path) -> None:
    # The partial line is longer than the block the repair reads backwards at a time.
    path = tmp_path / "t.jsonl"
    path.write_text(header_json() + "\n" + '{"v": 1, "text": "' + "x" * 200_000, encoding="utf-8")
    assert repair_truncated_tail(path) is True
    assert path.read_text(encoding="utf-8") == header_json() + "\n"


def test_repair_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TranscriptError, match="no such transcript"):
        repair_truncated_tail(tmp_path / "nope.jsonl")


# --- replay -----------------------------------------------------------------------------------------


class Collect:
    """A renderer that keeps what it was shown."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.closed = False

    def handle(self, event: Event) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.closed = True


def recorded(tmp_path: Path, events: list[Event]) -> Path:
    path = tmp_path / "t.jsonl"
    with TranscriptRecorder(path) as rec:
        for event in events:
            rec.handle(event)
    return path


@pytest.mark.parametrize("speed, pause", [(1.0, STEP), (2.0, STEP / 2), (0.5, STEP * 2)])
def test_replay_paces_events_by_their_time_divided_by_speed(
    tmp_path: Path, speed: float, pause: float
) -> None:
    events = make_run()
    sleeps: list[float] = []
    shown = Collect()
    n = replay(recorded(tmp_path, events), shown, speed=speed, sleep=sleeps.append)
    assert n == len(events)
    assert shown.events == events
    assert sleeps == pytest.approx([pause] * (len(events) - 1))
    assert not shown.closed  # the caller closes the renderer


def test_replay_instant_never_sleeps(tmp_path: Path) -> None:
    sleeps: list[float] = []
    n = replay(recorded(tmp_path, make_run()), Collect(), instant=True, speed=0.01, sleep=sleeps.append)
    assert n == len(make_run())
    assert sleeps == []


def test_replay_caps_each_pause(tmp_path: Path) -> None:
    events = make_run()
    events[5:] = [dataclasses.replace(e, t=e.t + 60.0) for e in events[5:]]  # a minute's silence
    sleeps: list[float] = []
    replay(recorded(tmp_path, events), Collect(), sleep=sleeps.append)
    assert sleeps[4] == MAX_PAUSE  # the pause before events[5]
    assert sleeps[:4] + sleeps[5:] == pytest.approx([STEP] * (len(events) - 2))
    slow: list[float] = []
    replay(recorded(tmp_path / "slow", make_run()), Collect(), speed=0.1, sleep=slow.append)
    assert slow == [MAX_PAUSE] * (len(events) - 1)


def test_replay_from_turn_skips_earlier_turns_but_keeps_the_header(tmp_path: Path) -> None:
    events = make_run(3)
    shown = Collect()
    n = replay(recorded(tmp_path, events), shown, from_turn=2, sleep=lambda s: None)
    turns = {getattr(e, "turn", None) for e in shown.events}
    assert isinstance(shown.events[0], RunStarted)
    assert isinstance(shown.events[-1], RunFinished)
    assert turns == {None, 2, 3}
    assert n == len(shown.events) == len(events) - 9


def test_replay_from_turn_does_not_wait_for_skipped_turns(tmp_path: Path) -> None:
    sleeps: list[float] = []
    events = make_run(3)
    replay(recorded(tmp_path, events), Collect(), from_turn=3, sleep=sleeps.append)
    assert sleeps == pytest.approx([STEP] * 10)  # into and through turn 3's 9 events, then the finish


def test_replay_shows_every_header_of_a_resumed_run(tmp_path: Path) -> None:
    events = make_run()[:-1] + make_run(2, resumed_from_turn=2, start=20.0)
    shown = Collect()
    replay(recorded(tmp_path, events), shown, from_turn=3, instant=True)
    headers = [e for e in shown.events if isinstance(e, RunStarted)]
    assert [h.resumed_from_turn for h in headers] == [0, 2]
    assert {getattr(e, "turn", 3) for e in shown.events} <= {3, 4}


def test_replay_past_the_last_turn_is_an_error(tmp_path: Path) -> None:
    path = recorded(tmp_path, make_run())
    with pytest.raises(TranscriptError) as err:
        replay(path, Collect(), from_turn=3)
    assert str(err.value) == f"{path}: cannot start at turn 3: the transcript has 2 turns"


@pytest.mark.parametrize(
    "roles, speakers",
    [({"teacher"}, {"teacher"}), ({"student", "judge"}, {"student", "judge"}), (set(), set())],
)
def test_replay_roles_filters_messages_tokens_and_verdicts(
    tmp_path: Path, roles: set[str], speakers: set[str]
) -> None:
    shown = Collect()
    replay(recorded(tmp_path, make_run()), shown, roles=roles, instant=True)
    seen = {e.role for e in shown.events if isinstance(e, (TokenDelta, MessageDone))}
    seen |= {"judge" for e in shown.events if isinstance(e, Verdict)}
    assert seen == speakers
    kept = [e.type for e in shown.events if not isinstance(e, (TokenDelta, MessageDone, Verdict))]
    assert kept.count("turn_started") == 2 and kept[0] == "run_started" and kept[-1] == "run_finished"


def test_replay_rejects_a_speed_of_zero(tmp_path: Path) -> None:
    with pytest.raises(TeachbackError, match="speed"):
        replay(recorded(tmp_path, make_run()), Collect(), speed=0)


def test_replay_of_a_corrupt_transcript_is_strict(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "t.jsonl", [header_json(), _turn_line()], final_newline=False)
    with pytest.raises(TranscriptError, match="truncated"):
        replay(path, Collect())


def test_lines_from_before_panels_and_classrooms_read_with_defaults(tmp_path: Path) -> None:
    """Seats, seat names and panel fields were added with defaults: older v1 lines still read."""
    from teachback.transcripts.events import RunStarted, TurnAccepted, TurnStarted, Verdict

    old = [
        {"v": 1, "type": "run_started", "t": 0, "run_id": "r", "scenario": "s", "scenario_path": "s.yaml"}
        | {"scenario_sha256": "0", "models": {"student": "m"}, "options": {}, "seed": 0, "versions": {}}
        | {"started_at": "now"},
        {"v": 1, "type": "turn_started", "t": 1, "turn": 1, "objective": "o"},
        {"v": 1, "type": "verdict", "t": 2, "turn": 1, "kind": "answer", "score": 0.9, "accepted": True}
        | {"reason": "ok"},
        {"v": 1, "type": "turn_accepted", "t": 3, "turn": 1, "objective": "o", "question": "q", "answer": "a"}
        | {"score": 0.9, "teacher_model": "t"},
    ]
    path = tmp_path / "old.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in old), encoding="utf-8")
    header, started, judged, accepted = read_transcript(path)
    assert isinstance(header, RunStarted) and header.seats == []
    assert isinstance(started, TurnStarted) and started.student == ""
    assert isinstance(judged, Verdict) and judged.name == ""
    assert isinstance(accepted, TurnAccepted) and (accepted.student, accepted.teacher) == ("", "")
