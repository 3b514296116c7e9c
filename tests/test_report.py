"""`teachback report`: the metrics, the charts, the page, the command, and the page in a real Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from teachback.cli import main
from teachback.errors import RunDirError, TranscriptError
from teachback.transcripts.events import (
    MessageDone,
    Notice,
    RunFinished,
    RunStarted,
    TurnAccepted,
    TurnRejected,
    TurnStarted,
    Verdict,
    to_json,
)
from teachback.transcripts.metrics import (
    litellm_price,
    objective_acceptance,
    quiz_comparison,
    run_metrics,
    score_histogram,
    timeline,
    usage_by_speaker,
)
from teachback.transcripts.report import load_run, write_report

OBJECTIVES = ["the capital of Vellmar", "the currency of Vellmar", "the main export"]


def header(**kw: Any) -> RunStarted:
    fields: dict[str, Any] = {
        "t": 0.0,
        "run_id": "20250101-120000-vellmar",
        "scenario": "vellmar",
        "scenario_path": "/s/vellmar.yaml",
        "scenario_sha256": "0" * 64,
        "models": {
            "student": "local/smollm2-135m",
            "teacher": "openai/gpt-4o-mini",
            "judge": "local/smollm2-135m",
        },
        "options": {"turns": 2, "threshold": 0.6},
        "seed": 7,
        "versions": {},
        "started_at": "2025-01-01T12:00:00+0000",
        "objectives": OBJECTIVES,
    }
    fields.update(kw)
    return RunStarted(**fields)


def msg(
    t: float, turn: int, role: str, kind: str, text: str, tokens: int, seconds: float, **kw: Any
) -> MessageDone:
    model = {"teacher": "openai/gpt-4o-mini"}.get(role, "local/smollm2-135m")
    fields = {"name": role, "model": model, "attempt": 1} | kw
    return MessageDone(
        t=t, turn=turn, role=role, kind=kind, text=text, tokens=tokens, seconds=seconds, **fields
    )


def verdict(t: float, turn: int, kind: str, score: float, accepted: bool, **kw: Any) -> Verdict:
    return Verdict(t=t, turn=turn, kind=kind, score=score, accepted=accepted, reason=f"{kind} {score}", **kw)


def sample_events() -> list:
    """Two turns: the first accepted after a retry (objective covered), the second rejected."""
    return [
        header(),
        TurnStarted(t=0.1, turn=1, objective=OBJECTIVES[0]),
        msg(1.0, 1, "student", "question", "What is the capital of Vellmar?", 9, 0.9),
        verdict(1.2, 1, "question", 0.9, True),
        msg(3.0, 1, "teacher", "answer", "It is Zorn.", 5, 1.8),
        msg(3.5, 1, "judge", "answer", '{"score": 0}', 6, 0.5),
        verdict(
            3.5,
            1,
            "answer",
            0.2,
            False,
            components={"llm": 0.0, "grounded": 0.4},
            claims=[{"text": "It is Zorn.", "status": "unsupported", "passage": "", "facts": []}],
        ),  # fmt: skip
        msg(5.0, 1, "teacher", "answer", "It is Korrin.", 5, 1.4, attempt=2),
        verdict(
            5.5,
            1,
            "answer",
            0.85,
            True,
            attempt=2,
            claims=[
                {"text": "It is Korrin.", "status": "supported", "passage": "Korrin is ...", "facts": [1]}
            ],
        ),  # fmt: skip
        msg(6.0, 1, "student", "teachback", "The capital is Korrin.", 6, 0.5),
        verdict(6.2, 1, "teachback", 1.0, True),
        TurnAccepted(
            t=6.3,
            turn=1,
            objective=OBJECTIVES[0],
            question="q",
            answer="a",
            score=0.85,
            teacher_model="openai/gpt-4o-mini",
            objective_covered=True,
        ),  # fmt: skip
        TurnStarted(t=6.4, turn=2, objective=OBJECTIVES[1]),
        msg(7.0, 2, "student", "question", "And the money?", 4, 0.6),
        verdict(7.1, 2, "question", 0.7, True),
        msg(9.0, 2, "teacher", "answer", "Dollars.", 2, 1.9),
        verdict(9.2, 2, "answer", float("nan"), False),
        TurnRejected(t=9.3, turn=2, objective=OBJECTIVES[1], reason="not grounded"),
        Notice(t=9.4, level="warning", message="judge slow"),
        RunFinished(
            t=9.5,
            status="completed",
            turns=2,
            accepted=1,
            acceptance_rate=0.5,
            objectives_covered=[OBJECTIVES[0]],
        ),
    ]


def fixed_price(model: str) -> tuple[float, float] | None:
    return {"openai/gpt-4o-mini": (1e-6, 4e-6)}.get(model, (0.0, 0.0) if model.startswith("local") else None)


QUIZ_BEFORE = {
    "label": "before",
    "student": "local/smollm2-135m",
    "adapter": None,
    "items": [
        {"question": "Capital?", "reference": "Korrin", "answer": "Paris", "keyword_pass": False,
         "judge_score": 0.1, "judge_reason": "wrong", "judge_accepted": False},
        {"question": "Currency?", "reference": "the vell", "answer": "", "keyword_pass": None,
         "judge_score": None, "judge_reason": "", "judge_accepted": None},
    ],
    "totals": {"n": 2, "correct": 0, "score": 0.0, "keyword_items": 1, "keyword_pass": 0, "judge_accepted": 0,
               "judge_mean": 0.1},
}  # fmt: skip
QUIZ_AFTER = {
    "label": "after",
    "student": "local/smollm2-135m",
    "adapter": "/a/vellmar.gguf",
    "items": [
        {"question": "Capital?", "reference": "Korrin", "answer": "Korrin", "keyword_pass": True,
         "judge_score": 0.9, "judge_reason": "right", "judge_accepted": True},
        {"question": "Export?", "reference": "salt", "answer": "salt", "keyword_pass": True,
         "judge_score": 0.8, "judge_reason": "ok", "judge_accepted": True},
    ],
    "totals": {"n": 2, "correct": 2, "score": 1.0, "keyword_items": 2, "keyword_pass": 2, "judge_accepted": 2,
               "judge_mean": 0.85},
}  # fmt: skip
FINETUNE = {
    "adapter": "/a/vellmar.gguf",
    "loss_curve": [[1, 3.2], [2, 2.5], [3, 1.9], [4, 1.4], ["bad"], [5, float("inf")]],
    "val_loss_curve": [[0, 3.0], [4, 1.6]],
    "train_loss": [2.8, 1.6],
    "val_loss_before": 3.0,
    "val_loss_after": 1.6,
    "tokens_per_s": 410.0,
    "peak_rss_bytes": 512 * 2**20,
    "seconds": 42.0,
    "config": {"rank": 32, "epochs": 2},
}


def write_run(folder: Path, events: list | None = None, *, quiz: bool = True, finetune: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [to_json(e) for e in (events if events is not None else sample_events())]
    (folder / "transcript.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if quiz:
        (folder / "quiz-before.json").write_text(json.dumps(QUIZ_BEFORE), encoding="utf-8")
        (folder / "quiz-after.json").write_text(json.dumps(QUIZ_AFTER), encoding="utf-8")
    if finetune:
        (folder / "finetune.json").write_text(json.dumps(FINETUNE), encoding="utf-8")
    return folder


# --- metrics --------------------------------------------------------------------------------------------


def test_metrics_totals_and_run_info() -> None:
    m = run_metrics(sample_events(), price=fixed_price)
    t = m["totals"]
    assert (t["turns"], t["accepted"], t["rejected"], t["acceptance_rate"]) == (2, 1, 1, 0.5)
    assert (t["objectives"], t["objectives_covered"]) == (3, 1)
    assert t["verdicts"] == 6
    assert t["mean_answer_score"] == pytest.approx((0.2 + 0.85) / 2)  # the NaN score is left out
    assert t["messages"] == 7 and t["tokens"] == 9 + 5 + 6 + 5 + 6 + 4 + 2
    assert (
        m["run"]["status"] == "completed" and m["run"]["threshold"] == 0.6 and m["run"]["duration_s"] == 9.5
    )
    assert m["notices"] == [{"t": 9.4, "turn": 0, "level": "warning", "message": "judge slow"}]
    assert m["quiz"] is None and m["finetune"] is None
    json.dumps(m, allow_nan=False)  # plain JSON, no NaN


def test_metrics_per_turn_scores_keep_the_last_attempt() -> None:
    turns = run_metrics(sample_events(), price=fixed_price)["turns"]
    assert turns[0] == {
        "turn": 1, "objective": OBJECTIVES[0], "outcome": "accepted", "reason": "", "question": 0.9,
        "answer": 0.85, "teachback": 1.0, "attempts": 2, "covered": True,
    }  # fmt: skip
    assert turns[1]["outcome"] == "rejected" and turns[1]["reason"] == "not grounded"
    assert turns[1]["answer"] is None  # NaN is not a score


def test_score_histogram_bins_tenths_and_puts_one_in_the_last_bin() -> None:
    hist = score_histogram(
        [
            {"kind": "answer", "score": 0.0},
            {"kind": "answer", "score": 0.95},
            {"kind": "answer", "score": 1.0},
        ]
        + [
            {"kind": "question", "score": 0.3},
            {"kind": "question", "score": 0.6},
            {"kind": "x", "score": None},
        ]
    )
    assert hist["edges"][0] == 0 and hist["edges"][-1] == 1 and len(hist["edges"]) == 11
    assert hist["counts"]["answer"] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert hist["counts"]["question"] == [0, 0, 0, 1, 0, 0, 1, 0, 0, 0]  # 0.3 and 0.6 despite float error
    assert sum(hist["counts"]["all"]) == 5 and "x" not in hist["counts"]


def test_acceptance_per_objective_in_header_order_with_untried_ones() -> None:
    rows = objective_acceptance(sample_events())
    assert [r["objective"] for r in rows] == OBJECTIVES
    assert rows[0] == {
        "objective": OBJECTIVES[0], "turns": 1, "accepted": 1, "rejected": 0, "covered": True,
        "acceptance_rate": 1.0, "mean_accepted_score": 0.85,
        "claims": {"supported": 1, "uncertain": 0, "unsupported": 1},
    }  # fmt: skip
    assert rows[1]["acceptance_rate"] == 0.0 and not rows[1]["covered"]
    assert rows[1]["claims"] == {"supported": 0, "uncertain": 0, "unsupported": 0}  # an old verdict
    assert rows[2]["acceptance_rate"] is None and rows[2]["turns"] == 0


def test_acceptance_counts_an_objective_missing_from_the_header() -> None:
    events = [header(objectives=[]), TurnRejected(t=1, turn=1, objective="odd one", reason="r")]
    assert objective_acceptance(events)[0]["objective"] == "odd one"


def test_timeline_has_start_end_and_the_verdict_on_each_message() -> None:
    rows = timeline(sample_events())
    first = rows[0]
    assert (first["start"], first["t"], first["role"], first["kind"], first["tokens"]) == (
        0.1, 1.0, "student", "question", 9
    )  # fmt: skip
    assert first["verdict"]["score"] == 0.9
    answers = [r for r in rows if r["role"] == "teacher" and r["turn"] == 1]
    assert [a["verdict"]["accepted"] for a in answers] == [False, True]  # each attempt its own verdict
    assert [r["verdict"] for r in rows if r["role"] == "judge"] == [None]


def test_timeline_matches_verdicts_to_the_named_seat_of_a_panel() -> None:
    events = [
        header(),
        msg(1, 1, "teacher", "answer", "A", 1, 0.5, name="alice"),
        msg(2, 1, "teacher", "answer", "B", 1, 0.5, name="bob"),
        verdict(3, 1, "answer", 0.3, False, name="alice"),
        verdict(3, 1, "answer", 0.9, True, name="bob"),
    ]
    rows = {r["name"]: r["verdict"]["score"] for r in timeline(events)}
    assert rows == {"alice": 0.3, "bob": 0.9}


def test_usage_per_role_and_per_named_speaker_with_cost() -> None:
    events = [
        header(),
        msg(1, 1, "teacher", "answer", "A", 1000, 2.0, name="alice"),
        msg(2, 1, "teacher", "answer", "B", 500, 1.0, name="bob", model="local/smollm2-135m"),
        msg(3, 1, "student", "question", "Q", 10, 1.0),
    ]
    asked: list[str] = []

    def price(model: str) -> tuple[float, float] | None:
        asked.append(model)
        return fixed_price(model)

    usage = usage_by_speaker(events, price)
    assert sorted(asked) == ["local/smollm2-135m", "openai/gpt-4o-mini"]  # once per model
    assert usage["named_speakers"] is True
    assert [(s["role"], s["name"]) for s in usage["by_speaker"]] == [
        ("student", "student"), ("teacher", "alice"), ("teacher", "bob")
    ]  # fmt: skip
    teacher = next(r for r in usage["by_role"] if r["role"] == "teacher")
    assert teacher["tokens"] == 1500 and teacher["seconds"] == 3.0 and teacher["tokens_per_s"] == 500
    assert teacher["cost_usd"] == pytest.approx(1000 * 4e-6)
    assert teacher["models"] == ["openai/gpt-4o-mini", "local/smollm2-135m"]


def test_usage_cost_is_unknown_when_a_model_has_no_price() -> None:
    events = [header(), msg(1, 1, "teacher", "answer", "A", 10, 1.0, model="mystery/model")]
    m = run_metrics(events, price=fixed_price)
    assert m["usage"]["by_role"][0]["cost_usd"] is None and m["totals"]["cost_usd"] is None
    assert m["usage"]["prices"] == {"mystery/model": None}


def test_local_models_cost_nothing_without_importing_litellm() -> None:
    code = (
        "import sys; from teachback.transcripts.metrics import litellm_price\n"
        "print(litellm_price('local/smollm2-135m'), litellm_price('local:/m.gguf'), 'litellm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert out.strip() == "(0.0, 0.0) (0.0, 0.0) False"


@pytest.mark.real
def test_litellm_price_reads_the_local_cost_map() -> None:
    prompt, completion = litellm_price("openai/gpt-4o-mini") or (0, 0)
    assert 0 < prompt < completion < 1e-4
    assert litellm_price("no-such-provider/no-such-model") is None


def test_quiz_comparison_matches_questions_across_rounds() -> None:
    q = quiz_comparison([QUIZ_BEFORE, QUIZ_AFTER])
    assert q["labels"] == ["before", "after"]
    by_question = {x["question"]: x for x in q["questions"]}
    assert list(by_question) == ["Capital?", "Currency?", "Export?"]
    capital = by_question["Capital?"]
    assert [r["answer"] for r in capital["results"]] == ["Paris", "Korrin"]
    assert capital["delta"] == pytest.approx(0.8)
    assert by_question["Currency?"]["results"][1] is None and by_question["Currency?"]["delta"] is None
    assert by_question["Export?"]["results"][0] is None
    m = run_metrics(sample_events(), quiz=[QUIZ_BEFORE, QUIZ_AFTER], price=fixed_price)
    assert m["totals"]["quiz_before"]["correct"] == 0 and m["totals"]["quiz_after"]["correct"] == 2


def test_quiz_and_finetune_tolerate_missing_and_odd_fields() -> None:
    q = quiz_comparison([{"items": [{"answer": 3}, "junk"], "totals": "x"}])
    assert q["labels"] == ["round 1"] and q["questions"][0]["question"] == "question 1"
    assert q["questions"][0]["results"][0]["score"] is None and q["totals"] == [{}]
    m = run_metrics(sample_events(), finetune={"loss_curve": "nope"}, price=fixed_price)
    assert m["finetune"]["loss_curve"] == [] and m["finetune"]["val_loss_before"] is None
    m = run_metrics(sample_events(), finetune=FINETUNE, price=fixed_price)
    assert m["finetune"]["loss_curve"] == [[1, 3.2], [2, 2.5], [3, 1.9], [4, 1.4]]  # bad points dropped
    assert m["totals"]["val_loss_after"] == 1.6


def test_metrics_of_a_header_only_transcript() -> None:
    m = run_metrics([header()], price=fixed_price)
    assert m["totals"]["turns"] == 0 and m["totals"]["acceptance_rate"] is None
    assert m["run"]["status"] == "unfinished" and m["timeline"] == [] and m["scores"] == []


# --- the report files and the command -------------------------------------------------------------------


def test_report_writes_page_charts_and_metrics(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    paths = write_report(run)
    names = [p.name for p in paths]
    assert names[0] == "report.html" and names[-1] == "metrics.json"
    assert set(names[1:-1]) == {
        "scores.png", "score_distribution.png", "objectives.png", "timeline.png", "usage.png", "finetune.png",
        "quiz.png",
    }  # fmt: skip
    for p in paths:
        assert p.parent == run / "report" and p.stat().st_size > 0
    for p in paths[1:-1]:
        assert p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    page = paths[0].read_text(encoding="utf-8")
    assert page.count("src='data:image/png;base64,") == 7
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", page), "the page must not load anything"
    assert "<script" not in page and "not run" not in page.lower()
    assert "It is Korrin." in page and "Capital?" in page and "openai/gpt-4o-mini" in page
    metrics = json.loads((run / "report" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["totals"]["accepted"] == 1 and metrics["quiz"]["labels"] == ["before", "after"]


def test_report_says_not_run_for_missing_quiz_and_finetune(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", quiz=False, finetune=False)
    out = tmp_path / "elsewhere"
    paths = write_report(run, out)
    assert {p.name for p in paths} >= {"report.html", "metrics.json", "scores.png"}
    assert not (out / "quiz.png").exists() and not (out / "finetune.png").exists()
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count("Not run.") == 2 and not (run / "report").exists()


def test_a_fine_tune_with_nothing_held_out_shows_its_training_loss(tmp_path: Path) -> None:
    """val_split 0 is the default: finetune.json then has no held-out loss, and the fine-tune still ran."""
    run = write_run(tmp_path / "run", finetune=False)
    held_nothing = {k: v for k, v in FINETUNE.items() if not k.startswith("val_")}
    (run / "finetune.json").write_text(json.dumps(held_nothing), encoding="utf-8")
    page = write_report(run)[0].read_text(encoding="utf-8")
    assert "not run" not in page.lower() and "2.80 → 1.60" in page


def test_report_escapes_the_dialogue(tmp_path: Path) -> None:
    events = [header(), msg(1, 1, "teacher", "answer", "<script>alert(1)</script> & co", 3, 0.5)]
    page = (write_report(write_run(tmp_path / "run", events))[0]).read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page


def test_a_round_shows_the_quiz_after_every_round_so_far(tmp_path: Path) -> None:
    """Learning rounds write `rounds/round-N/` run folders (scenarios/rounds.py); round N's report reads the
    quiz before round 1 and after each round up to N. A `round-N` folder with no rounds beside it is a run."""
    for n in (1, 2, 3):
        write_run(tmp_path / "rounds" / f"round-{n}")
    (tmp_path / "rounds" / "round-1" / "quiz-after.json").write_text(
        json.dumps(dict(QUIZ_AFTER, label="mid"))
    )
    assert [q["label"] for q in load_run(tmp_path / "rounds" / "round-2").quiz] == [
        "before",
        "round 1",
        "round 2",
    ]
    assert [q["label"] for q in load_run(write_run(tmp_path / "round-2")).quiz] == ["before", "after"]


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="not a run folder"):
        load_run(tmp_path)
    with pytest.raises(RunDirError, match="not a folder"):
        load_run(tmp_path / "missing")
    run = write_run(tmp_path / "run", finetune=False)
    (run / "finetune.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(RunDirError, match=r"finetune.json:1: not valid JSON"):
        load_run(run)
    (run / "finetune.json").unlink()
    (run / "transcript.jsonl").write_text('{"v": 1, "type": "notice"}\n', encoding="utf-8")
    with pytest.raises(TranscriptError, match="transcript.jsonl:1:"):
        load_run(run)


def test_report_command_prints_paths_and_fails_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "run")
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed[0] == str(tmp_path / "out" / "report.html") and len(printed) == 9
    assert main(["report", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"teachback: {tmp_path / 'nothing'}: not a folder; give a run folder (one holding transcript.jsonl)"
    ]


def test_report_of_an_interrupted_run_with_a_cut_off_line(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", sample_events()[:8], quiz=False, finetune=False)
    with open(run / "transcript.jsonl", "a", encoding="utf-8") as f:
        f.write('{"v": 1, "type": "mess')
    page = write_report(run)[0].read_text(encoding="utf-8")
    assert "unfinished" in page


# --- the page in a real browser -------------------------------------------------------------------------


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fd 3 in, fd 4 out): no dependencies.

    `open(url)` loads a page and returns a full-page PNG screenshot and the errors the page logged:
    uncaught exceptions, console.error/assert calls and error log entries (a resource that failed to load).
    """

    def __init__(self, profile: Path, width: int = 1200):
        exe = next(
            (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
        )
        if exe is None:
            pytest.fail(
                "Chromium is not installed: run `apt-get install chromium` "
                "(scripts/setup.sh installs it when run as root)"
            )
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def wire() -> None:  # in the child: the protocol's pipes on fd 3 and 4, kept across exec
            import fcntl

            a, b = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
            os.dup2(a, 3, inheritable=True)
            os.dup2(b, 4, inheritable=True)

        args = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]  # fmt: skip
        self.proc = subprocess.Popen(
            [exe, *args], preexec_fn=wire, close_fds=False,  # our own pipe ends are not inheritable
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_child)
        os.close(from_child)
        self.width = width
        self._id = 0
        self._inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        buf = b""
        while chunk := os.read(self._read, 1 << 16):
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                self._inbox.put(json.loads(raw))
        self._inbox.put(None)

    def _call(
        self, method: str, session: str | None = None, events: list | None = None, **params: Any
    ) -> dict:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._wait(lambda m: m.get("id") == self._id, events)

    def _wait(self, done: Any, events: list | None, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self._inbox.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError("Chromium did not answer in time") from None
            if m is None:
                raise RuntimeError("Chromium exited")
            if "error" in m and m.get("id") == self._id:
                raise RuntimeError(f"DevTools error: {m['error']}")
            if done(m):
                return m.get("result", m)
            if events is not None and "method" in m:
                events.append(m)

    def open(self, url: str) -> tuple[bytes, list[str]]:
        import base64

        events: list[dict[str, Any]] = []
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self._call(f"{domain}.enable", session, events)
        self._call("Emulation.setDeviceMetricsOverride", session, events, width=self.width, height=900,
                   deviceScaleFactor=1, mobile=False)  # fmt: skip
        self._call("Page.navigate", session, events, url=url)
        self._wait(lambda m: m.get("method") == "Page.loadEventFired", events)
        time.sleep(0.3)  # late console messages
        while not self._inbox.empty():
            m = self._inbox.get()
            if m is not None and "method" in m:
                events.append(m)
        height = self._call("Page.getLayoutMetrics", session, events)["cssContentSize"]["height"]
        self._call("Emulation.setDeviceMetricsOverride", session, events, width=self.width,
                   height=int(min(height, 16000)), deviceScaleFactor=1, mobile=False)  # fmt: skip
        shot = self._call("Page.captureScreenshot", session, events, format="png", captureBeyondViewport=True)
        return base64.b64decode(shot["data"]), page_errors(events)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self._call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._write)


def page_errors(events: list[dict[str, Any]]) -> list[str]:
    """The errors among DevTools events, one line each."""
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append(f"uncaught: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description"))) for a in p["args"])
            out.append(f"console.{p['type']}: {args}")
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
    return out


def pixels(data: bytes) -> Any:
    """A PNG as an array of RGB floats, height x width x 3 (matplotlib's reader)."""
    import io

    from matplotlib import image

    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return image.imread(io.BytesIO(data), format="png")[:, :, :3]


def colours(data: bytes) -> int:
    """How many distinct colours the image has."""
    import numpy as np

    rgb = (pixels(data) * 255).astype(np.uint8).reshape(-1, 3)
    return len(np.unique(rgb, axis=0))


@pytest.fixture
def chromium(tmp_path: Path):  # type: ignore[no-untyped-def]
    browser = Chromium(tmp_path / "chromium-profile")
    yield browser
    browser.close()


@pytest.mark.real
@pytest.mark.timeout(120)
def test_report_renders_in_headless_chromium_without_errors(tmp_path: Path, chromium: Chromium) -> None:
    page = write_report(write_run(tmp_path / "run"))[0]
    shot, errors = chromium.open(page.resolve().as_uri())
    (tmp_path / "screenshot.png").write_bytes(shot)
    if os.environ.get("TEACHBACK_SCREENSHOT"):
        Path(os.environ["TEACHBACK_SCREENSHOT"]).write_bytes(shot)
    assert errors == []
    height, width, _ = pixels(shot).shape
    assert width == 1200 and height > 3000  # the whole page, not a viewport
    assert colours(shot) > 50 and pixels(shot).std() > 0.05  # charts and text, not a blank page


@pytest.mark.real
@pytest.mark.timeout(120)
def test_the_browser_check_catches_a_broken_page(tmp_path: Path, chromium: Chromium) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<p>x</p><img src='missing.png'><script>console.error('bad'); throw new Error('boom')</script>",
        encoding="utf-8",
    )
    _, errors = chromium.open(broken.as_uri())
    assert any("uncaught" in e and "boom" in e for e in errors), errors
    assert any(e.startswith("console.error: bad") for e in errors), errors
    assert any("missing.png" in e for e in errors), errors
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>", encoding="utf-8")
    shot, errors = chromium.open(blank.as_uri())
    assert errors == [] and colours(shot) == 1 and pixels(shot).std() == 0


def test_facts_taught_and_the_quiz_per_fact() -> None:
    from teachback.transcripts.metrics import fact_coverage

    facts = ["Korrin is the capital of Vellmar.", "The currency is the drell.", "The Ossary is long."]
    events = [
        header(facts=facts),
        TurnAccepted(
            t=1.0, turn=1, objective=OBJECTIVES[0], question="q", answer="a", score=1.0,
            teacher_model="m", facts=[0, 1],
        ),
        TurnAccepted(
            t=2.0, turn=2, objective=OBJECTIVES[0], question="q", answer="b", score=1.0,
            teacher_model="m", facts=[0],
        ),
    ]  # fmt: skip
    quiz = [
        {"label": "before", "items": [{"question": "capital?", "correct": False, "facts": [0]}]},
        {"label": "after", "items": [{"question": "capital?", "correct": True, "facts": [0]}]},
    ]
    coverage = fact_coverage(events, quiz)
    assert (coverage["taught"], coverage["total"]) == (2, 3)
    assert [r["taught"] for r in coverage["facts"]] == [2, 1, 0]
    assert coverage["facts"][0]["quiz"] == [[False], [True]] and coverage["facts"][2]["quiz"] == [None, None]
    assert fact_coverage([header()])["facts"] == []  # a transcript from before fact coverage
