"""No secret is ever stored: a whole run against a careless provider that echoes the keys it was sent (and
others) in its error bodies, failed, resumed and reported, leaves none of them in any file of the run
folder or the memory folder, nor in anything it printed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from teachback.transcripts.events import RunFinished, TurnAccepted
from teachback.transcripts.reader import read_transcript
from tests.fake_openai import FakeOpenAI, teaching_reply
from tests.test_hardening_children import fake_scenario

OPENAI_KEY = "sk-planted-openai-0123456789abcdef"  # OPENAI_API_KEY: litellm sends it as a bearer token
TEACHER_KEY = "sk-planted-teacher-fedcba9876543210"  # the teacher seat's own key, named by api_key_env
MEMORY_TOKEN = "planted-memory-token-0123456789"  # TEACHBACK_MEMORY_TOKEN
SECRETS = (OPENAI_KEY, TEACHER_KEY, MEMORY_TOKEN)
TEACHBACK = [sys.executable, "-m", "teachback.cli"]


@pytest.fixture
def servers() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    """The student's and judge's server, and a careless teacher's that echoes every secret it can."""
    cast, teacher = FakeOpenAI(reply=teaching_reply), FakeOpenAI(reply=teaching_reply)
    teacher.echo = " ".join(SECRETS)
    yield cast, teacher
    cast.close()
    teacher.close()


def leaks(*folders: Path, texts: tuple[str, ...] = ()) -> list[str]:
    """Where any secret appears: `file: secret` for every file under `folders` (bytes), and the texts."""
    found = []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in SECRETS if s.encode() in data]
    found += [f"output: {s}" for text in texts for s in SECRETS if s in text]
    return found


def test_no_key_or_token_reaches_any_file_or_message(tmp_path: Path, servers) -> None:
    cast, teacher = servers
    path = fake_scenario(tmp_path / "s", "secrets", cast.api_base, turns=3)
    text = path.read_text().replace(
        f'"teacher": {{\n    "model": "openai/x",\n    "api_base": "{cast.api_base}"',
        f'"teacher": {{\n    "model": "openai/x",\n    "api_base": "{teacher.api_base}",\n'
        '    "api_key_env": "TEACHBACK_TEST_TEACHER_KEY"',
    )
    assert teacher.api_base in text
    path.write_text(text)
    env = {**os.environ, "OPENAI_API_KEY": OPENAI_KEY, "TEACHBACK_TEST_TEACHER_KEY": TEACHER_KEY}
    env["TEACHBACK_MEMORY_TOKEN"] = MEMORY_TOKEN
    out, memory = tmp_path / "run", tmp_path / "mem"
    args = ["--plain", "--no-quiz", "--memory-dir", str(memory)]

    # The first answer fails once with a 500 that echoes everything (retried); once a turn is accepted,
    # every answer is a 401 that echoes everything: the run fails, its reason holds the echo.
    teacher.mode, teacher.faults = "echo-500", 1
    transcript = out / "transcript.jsonl"

    def turn_bad_after_a_turn() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if transcript.is_file() and "turn_accepted" in transcript.read_text():
                teacher.mode, teacher.faults = "401", None
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=turn_bad_after_a_turn, daemon=True)
    watcher.start()
    failed = subprocess.run(
        [*TEACHBACK, "run", str(path), "--out", str(out), *args],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    watcher.join(1)
    assert failed.returncode == 2, failed.stdout[-2000:] + failed.stderr[-2000:]
    assert "authentication failed" in failed.stderr and "Traceback" not in failed.stderr
    events = read_transcript(transcript)
    assert isinstance(events[-1], RunFinished) and events[-1].status == "failed"
    assert "***" in events[-1].reason and any(isinstance(e, TurnAccepted) for e in events)

    teacher.mode = "ok"
    resumed = subprocess.run(
        [*TEACHBACK, "run", "--resume", str(out), *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    report = subprocess.run(
        [*TEACHBACK, "report", str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert (out / "report" / "metrics.json").is_file() and any(memory.rglob("*.sqlite3"))

    outputs = tuple(p.stdout + p.stderr for p in (failed, resumed, report))
    assert leaks(out, memory, texts=outputs) == []
    assert teacher.hits >= 3  # the echoes really were sent
