"""Shared fixtures: scenario files in tmp_path and scripted casts (the only fake model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from teachback.agents.scripted import ScriptedChatClient

REPO = Path(__file__).resolve().parents[1]
VELLMAR = REPO / "scenarios" / "knowledge" / "vellmar.md"


@pytest.fixture
def scenario_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a small Vellmar scenario into tmp_path; keyword arguments replace top-level fields."""

    def make(**fields: object) -> Path:
        (tmp_path / "vellmar.md").write_text(VELLMAR.read_text(encoding="utf-8"), encoding="utf-8")
        data: dict[str, object] = {
            "name": "vellmar-test",
            "knowledge": {"files": ["vellmar.md"]},
            "objectives": ["the capital and founding of Vellmar", "the currency of Vellmar"],
            "turns": 2,
            "quiz": [{"question": "What is the capital?", "answer": "Korrin", "keywords": [r"\bKorrin\b"]}],
        }
        data.update(fields)
        path = tmp_path / "scenario.yaml"
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")  # JSON is YAML
        return path

    return make


def verdict(score: int, reason: str = "checked") -> str:
    return json.dumps({"reason": reason, "score": score})


def judge(score: int = 9, calls: int = 64) -> ScriptedChatClient:
    """A scripted judge that gives every call the same verdict: a JSON verdict where the judge model is
    asked for one (no knowledge), P(true) = score / 10 where it is asked whether the notes say a claim."""
    return ScriptedChatClient([verdict(score)] * calls, role="judge")


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_reaches_children() -> None:
    """A shell that starts the suite in the background (`make test &`, nohup) hands it SIGINT ignored, and
    every run a test starts would inherit that: the Ctrl-C tests would test nothing. Handled here, SIGINT
    reaches each child with its default action again (exec resets a caught signal, not an ignored one)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True, scope="session")
def _caches_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test keeps ~/.cache untouched: $XDG_CACHE_HOME is a folder of the session (the children
    that tests start inherit it), so the assembled models and fine-tuning's training copies are written
    there. Those already in the real cache are linked in (a file is replaced, never written through a
    link), and their small stamps copied, so nothing is built twice."""
    real = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "teachback"
    cache = tmp_path_factory.mktemp("cache")
    for folder in real.iterdir() if real.is_dir() else ():
        if not folder.is_dir() or folder.name == "wheels":  # wheels: scripts/setup.sh's, not the tests'
            continue
        mirror = cache / "teachback" / folder.name
        mirror.mkdir(parents=True)
        for file in folder.iterdir():
            if file.is_file() and file.stat().st_size > 1 << 20:
                (mirror / file.name).symlink_to(file)
            elif file.is_file():  # a model's .sha256 stamp: rewritten in place when it is assembled again
                (mirror / file.name).write_bytes(file.read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        patch.delenv("TEACHBACK_CACHE", raising=False)
        yield


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder: nothing lands in the checkout (memory, transcripts, ...)."""
    monkeypatch.chdir(tmp_path)


def run_bundled(name: str, tmp_path: Path, turns: int) -> tuple[subprocess.CompletedProcess[str], list]:
    """`teachback run NAME --turns N --plain --no-quiz` into tmp_path/run (memory in tmp_path/mem), as a
    user would; asserts it exits 0 and returns the process and the transcript's events."""
    from teachback.transcripts.reader import read_transcript

    out = tmp_path / "run"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "teachback.cli", "run", name, "--turns", str(turns), "--plain"]
        + ["--out", str(out), "--memory-dir", str(tmp_path / "mem"), "--no-quiz"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    print(f"{name}, {turns} turns: {time.monotonic() - started:.0f} s")
    return result, read_transcript(out / "transcript.jsonl")
