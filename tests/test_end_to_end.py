"""The real thing: the bundled cast, SmolLM2 as student (in-process) and Qwen2.5 0.5B as teacher and judge
(through litellm to a managed llama.cpp server on loopback), driven through the `teachback` command."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from teachback.memory.native import PINNED_LLAMA_CPP
from teachback.transcripts.events import MessageDone, RunFinished, RunStarted, TurnStarted, Verdict
from teachback.transcripts.reader import read_transcript

pytestmark = pytest.mark.real
TEACHBACK = [sys.executable, "-m", "teachback.cli"]


def servers_left_running(run_dir: Path) -> list[int]:
    """The managed servers of a run (uvicorn logs each one's pid) that are still alive."""
    pids = []
    for log in run_dir.glob("*.log"):
        pids += [int(p) for p in re.findall(r"Started server process \[(\d+)\]", log.read_text())]
    assert pids, "the run started no server"
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def test_run_a_scenario_end_to_end_and_replay_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = subprocess.run(
        [*TEACHBACK, "run", "invented-domain", "--turns", "1", "--plain", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(out)
    events = read_transcript(out / "transcript.jsonl")
    header = events[0]
    assert isinstance(header, RunStarted)
    assert header.versions["llama-cpp-python"] == PINNED_LLAMA_CPP
    assert header.models["teacher"] == "local/qwen2.5-0.5b"
    assert isinstance(events[1], TurnStarted)
    roles = {e.role for e in events if isinstance(e, MessageDone)}
    # the judge model speaks only when the notes leave a claim open (its P(true) is read in-process)
    assert {"student", "teacher"} <= roles <= {"student", "teacher", "judge"}
    answers = [e for e in events if isinstance(e, Verdict) and e.kind == "answer"]
    assert answers and all("grounded" in v.components for v in answers)
    assert all(0.0 <= v.score <= 1.0 for v in answers)
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.status == "completed" and finished.turns == 1
    assert all(e.tokens > 0 for e in events if isinstance(e, MessageDone) and e.text)
    assert servers_left_running(out) == []
    assert (out / "transcript.jsonl").read_text().count('"v": 1') == len(events)

    replayed = subprocess.run(
        [*TEACHBACK, "replay", str(out), "--instant", "--plain"], capture_output=True, text=True, timeout=120
    )
    assert replayed.returncode == 0, replayed.stderr
    teacher_text = next(e.text for e in events if isinstance(e, MessageDone) and e.role == "teacher")
    assert teacher_text.splitlines()[0][:60] in replayed.stdout


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [*TEACHBACK, "run", "invented-domain", "--turns", "2", "--plain", "--no-quiz", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    transcript = out / "transcript.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if transcript.exists() and '"type": "message"' in transcript.read_text():
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the run never produced a message")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "--resume" in stderr + _
    events = read_transcript(transcript)
    assert isinstance(events[-1], RunFinished) and events[-1].status == "interrupted"
    assert servers_left_running(out) == []

    resumed = subprocess.run(
        [*TEACHBACK, "run", "--resume", str(out), "--plain", "--no-quiz"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    events = read_transcript(transcript)
    headers = [e for e in events if isinstance(e, RunStarted)]
    assert len(headers) == 2 and headers[1].models == headers[0].models
    assert isinstance(events[-1], RunFinished) and events[-1].status == "completed" and events[-1].turns == 2


def test_unreachable_teacher_ends_the_run_with_one_line_and_the_transcript_intact(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OPENAI_API_BASE=f"http://127.0.0.1:{port}/v1", OPENAI_API_KEY="sk-secret-test-key")
    out = tmp_path / "run"
    result = subprocess.run(
        [
            *TEACHBACK,
            "run",
            "invented-domain",
            "--turns",
            "1",
            "--plain",
            "--out",
            str(out),
            "--teacher",
            "openai/ghost",
            "--judge",
            "openai/ghost",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("teachback:")]
    assert len(errors) == 1 and "teacher openai/ghost" in errors[0] and "Traceback" not in result.stderr
    text = (out / "transcript.jsonl").read_text()
    assert "sk-secret-test-key" not in text
    events = read_transcript(out / "transcript.jsonl")
    assert isinstance(events[-1], RunFinished) and events[-1].status == "failed"
