"""The one renderer: plain lines for pipes and CI, the live view for terminals, and the summary."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

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
)
from teachback.transcripts.render import (
    PANEL_LINES,
    LiveRenderer,
    PlainRenderer,
    Renderer,
    RunStats,
    make_renderer,
)

HEADER = RunStarted(
    t=0.0,
    run_id="run-7",
    scenario="zorn",
    scenario_path="scenarios/zorn.yaml",
    scenario_sha256="0" * 64,
    models={"student": "local/smollm2-135m", "teacher": "openai/gpt-4o-mini", "judge": "local/smollm2-135m"},
    options={"turns": 2, "threshold": 0.7},
    seed=1,
    versions={},
    started_at="2025-01-01T00:00:00Z",
    objectives=["valves", "pressure", "history"],
)


def turn_events(turn: int, *, ok: bool) -> list[Event]:
    """One turn: streamed question and answer, the judge's verdict, the outcome (50 tokens in 2 s)."""
    q, a = f"What does valve {turn} regulate?", f"Valve {turn} regulates the\nZorn pressure loop."
    common = dict(t=float(turn), turn=turn)
    return [
        TurnStarted(**common, objective="valves"),
        TokenDelta(**common, role="student", name="student", kind="question", text=q[:8]),
        TokenDelta(**common, role="student", name="student", kind="question", text=q[8:]),
        MessageDone(
            **common,
            role="student",
            name="student",
            kind="question",
            text=q,
            model="s",
            tokens=10,
            seconds=0.5,
        ),
        TokenDelta(**common, role="teacher", name="teacher", kind="answer", text=a[:14]),
        TokenDelta(**common, role="teacher", name="teacher", kind="answer", text=a[14:]),
        MessageDone(
            **common, role="teacher", name="teacher", kind="answer", text=a, model="t", tokens=40, seconds=1.5
        ),
        Verdict(
            **common,
            kind="answer",
            score=0.82 if ok else 0.31,
            accepted=ok,
            reason="names the loop" if ok else "wrong loop",
            components={"llm": 0.8},
        ),
        TurnAccepted(
            **common,
            objective="valves",
            question=q,
            answer=a,
            score=0.82,
            teacher_model="t",
            objective_covered=True,
        )
        if ok
        else TurnRejected(**common, objective="valves", reason="score 0.31 below 0.70"),
    ]


FINISHED = RunFinished(
    t=9.0, status="completed", turns=2, accepted=1, acceptance_rate=0.5, objectives_covered=["valves"]
)
RUN = [HEADER, *turn_events(1, ok=True), *turn_events(2, ok=False), FINISHED]


def console(*, terminal: bool) -> Console:
    return Console(record=True, width=120, force_terminal=terminal, file=io.StringIO(), color_system="auto")


def render(renderer: Renderer, events: list[Event]) -> None:
    for event in events:
        renderer.handle(event)
    renderer.close()


# --- plain ------------------------------------------------------------------------------------------


def test_plain_shows_one_line_per_message_verdict_and_outcome() -> None:
    out = console(terminal=False)
    render(PlainRenderer(out), RUN)
    text = out.export_text()
    lines = text.splitlines()
    assert lines[0].startswith(
        "run run-7 · scenario zorn · student local/smollm2-135m · teacher openai/gpt-4o-mini"
    )
    assert "2 turns · threshold 0.7 · 3 objectives" in lines[0]
    assert "[turn 1] objective: valves" in lines
    assert "[turn 1] student (question): What does valve 1 regulate?" in lines
    assert "[turn 1] teacher (answer): Valve 1 regulates the" in lines
    assert "    Zorn pressure loop." in lines  # later lines of a message are indented
    assert "[turn 1] judge: answer ACCEPT 0.82 — names the loop [llm 0.80]" in lines
    assert "[turn 1] accepted (score 0.82, objective covered)" in lines
    assert "[turn 2] judge: answer REJECT 0.31 — wrong loop [llm 0.80]" in lines
    assert "[turn 2] rejected: score 0.31 below 0.70" in lines
    # Token deltas are not drawn: each message appears exactly once.
    assert sum("student (question)" in line for line in lines) == 2
    assert "What does " not in [line.strip() for line in lines]


def test_plain_summary_table() -> None:
    out = console(terminal=False)
    render(PlainRenderer(out), RUN)
    summary = out.export_text().split("run summary")[1]
    for label, value in [
        ("status", "completed"),
        ("turns", "2"),
        ("accepted", "1"),
        ("acceptance rate", "50%"),
        ("objectives covered", "1/3"),
        ("tokens/s", "25.0"),  # 100 tokens in 4 s of MessageDone
    ]:
        assert any(line.split() == [*label.split(), value] for line in summary.splitlines()), label
    assert "reason" not in summary


def test_plain_summary_shows_the_reason_of_a_failed_run() -> None:
    out = console(terminal=False)
    failed = RunFinished(
        t=1,
        status="failed",
        turns=0,
        accepted=0,
        acceptance_rate=0.0,
        objectives_covered=[],
        reason="teacher unreachable after 3 retries",
    )
    render(PlainRenderer(out), [HEADER, failed])
    text = out.export_text()
    assert "failed" in text and "teacher unreachable after 3 retries" in text
    assert "0/3" in text and "–" in text  # no tokens yet: no rate


def test_plain_writes_no_colour_codes_to_a_pipe() -> None:
    out = console(terminal=False)
    render(PlainRenderer(out), RUN)
    raw = out.file.getvalue()  # type: ignore[attr-defined]
    assert "ACCEPT" in raw and "\x1b[" not in raw


def test_plain_keeps_brackets_and_long_lines_intact() -> None:
    out = Console(record=True, width=40, force_terminal=False, file=io.StringIO())
    text = "Use [bold]x[/bold] and " + "y" * 80
    msg = MessageDone(
        t=1,
        turn=3,
        role="teacher",
        name="ada",
        kind="answer",
        text=text,
        model="m",
        tokens=1,
        seconds=1,
        attempt=2,
    )
    render(PlainRenderer(out), [msg, Notice(t=2, level="warning", message="retrying [429]", turn=3)])
    lines = out.export_text().splitlines()
    assert lines[0] == f"[turn 3] teacher ada (answer, attempt 2): {text}"  # not wrapped, no markup
    assert lines[1] == "[turn 3] warning: retrying [429]"


# --- choosing ---------------------------------------------------------------------------------------


def test_make_renderer_chooses_plain_off_a_terminal() -> None:
    assert isinstance(make_renderer(console(terminal=False), plain=False), PlainRenderer)
    assert isinstance(make_renderer(console(terminal=True), plain=True), PlainRenderer)
    live = make_renderer(console(terminal=True), plain=False)
    assert isinstance(live, LiveRenderer)
    live.close()


# --- live -------------------------------------------------------------------------------------------


def test_live_prints_every_turn_the_summary_and_the_progress_line() -> None:
    out = console(terminal=True)
    render(LiveRenderer(out), RUN)
    text = out.export_text()
    assert "run run-7 · scenario zorn" in text
    assert "turn 1 · valves" in text and "turn 2 · valves" in text
    assert "student (question): What does valve 1 regulate?" in text
    assert "teacher (answer): Valve 2 regulates the" in text
    assert "judge: answer ACCEPT 0.82 — names the loop" in text
    assert "judge: answer REJECT 0.31 — wrong loop" in text
    assert "rejected: score 0.31 below 0.70" in text
    assert "acceptance rate" in text and "50%" in text
    assert "turn 2/2 · objectives 1/3 · accepted 50% · 25.0 tok/s" in text
    assert "\x1b[" in out.file.getvalue()  # type: ignore[attr-defined]  # a terminal gets colour


def test_live_view_streams_each_speaker_into_its_own_panel() -> None:
    live = LiveRenderer(console(terminal=True))
    for event in [
        HEADER,
        TurnStarted(t=1, turn=1, objective="valves"),
        TokenDelta(t=1, turn=1, role="student", name="ana", kind="question", text="What does the "),
        TokenDelta(t=1, turn=1, role="student", name="ana", kind="question", text="valve do?"),
        TokenDelta(t=2, turn=1, role="teacher", name="teacher", kind="answer", text="It regu"),
    ]:
        live.handle(event)
    view = console(terminal=False)
    view.print(live.view())
    live.close()
    text = view.export_text()
    assert "turn 1 · valves" in text
    assert "student · ana · question" in text and "What does the valve do?" in text
    assert "teacher · answer" in text and "It regu▌" in text
    assert "turn 1/2 · objectives 0/3 · accepted – · – tok/s" in text


def test_live_view_keeps_only_the_tail_of_a_long_message() -> None:
    out = console(terminal=True)
    live = LiveRenderer(out)
    live.handle(TurnStarted(t=0, turn=1, objective="o"))
    for i in range(40):
        live.handle(
            TokenDelta(t=1, turn=1, role="teacher", name="teacher", kind="answer", text=f"line {i}\n")
        )
    view = console(terminal=False)
    view.print(live.view())
    shown = view.export_text()
    assert "line 39" in shown and f"line {39 - PANEL_LINES}" not in shown
    live.close()
    # The whole message reaches the scrollback once the turn is over.
    scrollback = out.export_text()
    assert "line 0" in scrollback and "line 39" in scrollback and "cut off" in scrollback


def test_live_view_shows_a_verdict_in_the_judge_panel_and_the_next_turn_replaces_it() -> None:
    live = LiveRenderer(console(terminal=True))
    live.handle(Verdict(t=1, turn=1, kind="question", score=0.2, accepted=False, reason="off topic"))
    first = console(terminal=False)
    first.print(live.view())
    live.handle(TurnStarted(t=2, turn=2, objective="pressure"))
    second = console(terminal=False)
    second.print(live.view())
    live.close()
    before, after = first.export_text(), second.export_text()
    assert "judge · question" in before and "REJECT 0.20 — off topic" in before
    assert "REJECT" not in after and "turn 2 · pressure" in after


ODD_ORDERS = {
    "verdict without messages": [Verdict(t=1, turn=1, kind="answer", score=0.9, accepted=True, reason="ok")],
    "tokens without a turn start": [
        TokenDelta(t=1, turn=5, role="teacher", name="teacher", kind="answer", text="Zorn"),
        TokenDelta(t=1, turn=6, role="judge", name="j", kind="answer", text="{"),
    ],
    "resumed header mid-stream": [
        HEADER,
        TurnStarted(t=1, turn=1, objective="valves"),
        TokenDelta(t=1, turn=1, role="student", name="student", kind="question", text="Zorn"),
        RunStarted(**{**HEADER.__dict__, "resumed_from_turn": 1}),
        TurnAccepted(t=2, turn=2, objective="o", question="q", answer="a", score=1.0, teacher_model="t"),
    ],
    "finish without header": [FINISHED, FINISHED],
    "outcome twice": [TurnRejected(t=1, turn=1, objective="o", reason="r")] * 2,
    "unknown role and level": [
        MessageDone(
            t=1, turn=1, role="critic", name="c", kind="note", text="Zorn", model="m", tokens=0, seconds=0
        ),
        Notice(t=1, level="shout", message="hi"),
    ],
}


@pytest.mark.parametrize("case", ODD_ORDERS, ids=list(ODD_ORDERS))
@pytest.mark.parametrize("kind", [LiveRenderer, PlainRenderer])
def test_renderers_survive_any_event_order(case: str, kind: type) -> None:
    out = console(terminal=True)
    renderer = kind(out)
    render(renderer, ODD_ORDERS[case])
    renderer.close()  # closing twice is fine
    renderer.handle(FINISHED)  # and so is an event after close
    assert out.export_text().strip()


def test_live_resumed_header_closes_the_open_turn_and_says_resumed() -> None:
    out = console(terminal=True)
    render(LiveRenderer(out), ODD_ORDERS["resumed header mid-stream"])
    text = out.export_text()
    assert "resumed run run-7 from turn 1" in text
    assert "student (question): Zorn …(cut off)" in text
    assert text.index("(cut off)") < text.index("resumed run")


# --- figures ----------------------------------------------------------------------------------------


def test_progress_line_counts_accepted_objectives_and_tokens_per_second() -> None:
    stats = RunStats()
    assert stats.progress().plain == "turn 0 · accepted – · – tok/s"
    for event in [HEADER, *turn_events(1, ok=True)]:
        stats.update(event)
    assert stats.progress().plain == "turn 1/2 · objectives 1/3 · accepted 100% · 25.0 tok/s"
    for event in turn_events(2, ok=False):
        stats.update(event)
    assert stats.progress().plain == "turn 2/2 · objectives 1/3 · accepted 50% · 25.0 tok/s"
    stats.update(TurnRejected(t=1, turn=3, objective="o", reason=""))
    assert stats.progress().plain == "turn 3/2 · objectives 1/3 · accepted 33% · 25.0 tok/s"
