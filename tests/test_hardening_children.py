"""No child outlives a SIGKILL of its parent: managed llama.cpp servers, the batch's memory server and a
batch's runs all get PR_SET_PDEATHSIG (teachback/processes.py); `batch.json` then reads the jobs that a
killed batch left `running` as `interrupted`, and `teachback batch --resume` finishes them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from teachback.cli import main
from teachback.errors import BatchError
from teachback.processes import marked_processes, running, this_process
from teachback.scenarios.batch import Batch, BatchOptions, Job
from tests.fake_openai import FakeOpenAI, teaching_reply

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from pathlib import Path
    from teachback.processes import die_with_parent

    kind, folder = sys.argv[1], Path(sys.argv[2])
    if kind == "sleep":
        child = subprocess.Popen(["sleep", "600"], preexec_fn=die_with_parent())
        pid = child.pid
    elif kind == "memory":
        from teachback.memory.chroma_server import ChromaServer
        server = ChromaServer(folder / "memory", log=folder / "server.log").__enter__()
        pid = server.pid
    else:
        from teachback.agents.llama_server import LlamaServer
        from teachback.agents.models import resolve
        model = resolve("local/smollm2-135m").local_path
        server = LlamaServer(model, log_path=folder / "llama.log", n_ctx=512)
        server.start()
        server.wait_healthy()
        pid = server.pid
    print(pid, flush=True)
    time.sleep(600)
    """
)


def alive(pid: int) -> bool:
    return running({"pid": pid, "host": None, "started": None})


def gone_within(pids: list[int], seconds: float) -> list[int]:
    """The pids still alive after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def kill_parent_of(kind: str, tmp_path: Path) -> int:
    """Start a parent that starts a child of `kind`, SIGKILL the parent; returns the child's pid."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT, encoding="utf-8")
    parent = subprocess.Popen(
        [sys.executable, str(script), kind, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        line = parent.stdout.readline() if parent.stdout else ""
        assert line.strip().isdigit(), f"the parent printed {line!r}"
        child = int(line)
        assert alive(child)
    finally:
        parent.kill()  # SIGKILL: no atexit, no finally, no signal handler runs in the parent
        parent.wait()
    return child


@pytest.mark.parametrize("kind", ["sleep", "memory"])
def test_a_child_dies_with_its_sigkilled_parent(kind: str, tmp_path: Path) -> None:
    child = kill_parent_of(kind, tmp_path)
    assert gone_within([child], 5.0) == []


@pytest.mark.real
def test_a_llama_server_dies_with_its_sigkilled_parent(tmp_path: Path) -> None:
    child = kill_parent_of("llama", tmp_path)
    assert gone_within([child], 10.0) == []


# ---- batch.json: the jobs of a killed batch ----------------------------------------------------------------


def dead_process() -> dict[str, object]:
    """A process that ran on this host and has ended (reaped), as `this_process` described it."""
    code = "import json, teachback.processes as p; print(json.dumps(p.this_process()))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=60)
    return json.loads(out)


def plan_with_owner(folder: Path, owner: object, status: str = "running") -> Path:
    Batch.create(folder, [Job("a", "/s/a.yaml", status=status, attempts=1), Job("b", "b", status="done")],
                 BatchOptions())  # fmt: skip
    path = folder / "batch.json"
    data = json.loads(path.read_text())
    data["owner"] = owner
    path.write_text(json.dumps(data))
    return folder


def test_jobs_a_killed_batch_left_running_are_read_as_interrupted(tmp_path: Path) -> None:
    folder = plan_with_owner(tmp_path / "b", dead_process())
    jobs = Batch.load(folder).jobs
    assert [job.status for job in jobs] == ["interrupted", "done"]
    assert jobs[0].errors == ["attempt 1: interrupted: its batch stopped without finishing it"]
    # a plan from before owners were recorded: nobody can be running it either
    old = plan_with_owner(tmp_path / "old", None)
    assert Batch.load(old).jobs[0].status == "interrupted"


def test_a_live_batch_keeps_its_running_jobs_and_cannot_be_resumed_twice(tmp_path: Path, capsys) -> None:
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import json, time, teachback.processes as p; "
         "print(json.dumps(p.this_process()), flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        owner = json.loads(sleeper.stdout.readline() if sleeper.stdout else "{}")
        folder = plan_with_owner(tmp_path / "b", owner)
        batch = Batch.load(folder)
        assert batch.jobs[0].status == "running" and batch.owned_elsewhere() == sleeper.pid
        assert main(["batch", "--resume", str(folder)]) == 2
        err = capsys.readouterr().err
        assert (
            err
            == f"teachback: {folder} is being run by process {sleeper.pid}: let it finish, or stop it first\n"
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    assert Batch.load(folder).jobs[0].status == "interrupted"  # its owner is gone now
    me = plan_with_owner(tmp_path / "me", this_process())
    assert Batch.load(me).jobs[0].status == "running" and Batch.load(me).owned_elsewhere() is None
    odd = plan_with_owner(tmp_path / "odd", None, status="paused")
    with pytest.raises(BatchError, match="unknown status"):
        Batch.load(odd)


# ---- the real thing: SIGKILL `teachback batch` while its runs and its memory server work ------------------


@pytest.fixture
def fake_cast() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(reply=teaching_reply)
    yield server
    server.close()


def fake_scenario(folder: Path, name: str, api_base: str, turns: int = 3) -> Path:
    """A Vellmar scenario whose student, teacher and judge are all the fake OpenAI server."""
    from tests.conftest import VELLMAR

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vellmar.md").write_text(VELLMAR.read_text(encoding="utf-8"), encoding="utf-8")
    seat = {"model": "openai/x", "api_base": api_base, "timeout": 10, "retries": 1}
    data = {
        "name": name,
        "knowledge": {"files": ["vellmar.md"]},
        "objectives": ["the capital and founding of Vellmar", "the currency of Vellmar"],
        "turns": turns,
        "student": seat,
        "teacher": seat,
        "judge": seat,
    }
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


@pytest.mark.real
def test_a_sigkilled_batch_leaves_no_process_and_its_resume_finishes_the_runs(
    tmp_path: Path, fake_cast: FakeOpenAI
) -> None:
    scenarios = [str(fake_scenario(tmp_path / "s", n, fake_cast.api_base, turns=6)) for n in ("one", "two")]
    out = tmp_path / "b"
    mark = uuid.uuid4().hex  # in the environment of the batch and of everything it starts
    env = {**os.environ, "TEACHBACK_TEST_MARK": mark, "OPENAI_API_KEY": "sk-fake-0123456789"}
    command = [sys.executable, "-m", "teachback.cli", "batch", *scenarios, "--concurrency", "2", "--no-quiz"]
    batch = subprocess.Popen(
        [*command, "--memory-dir", str(tmp_path / "mem"), "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        transcripts = [out / "runs" / name / "transcript.jsonl" for name in ("one", "two")]
        while not all(t.is_file() and "turn_started" in t.read_text() for t in transcripts):
            assert batch.poll() is None and time.monotonic() < deadline, "the runs never started"
            time.sleep(0.2)
        children = marked_processes(mark)
        assert len(children) >= 3  # the memory server and two runs
    finally:
        batch.send_signal(signal.SIGKILL)
        batch.wait()
    assert gone_within(children, 10.0) == []
    assert marked_processes(mark) == []

    jobs = Batch.load(out).jobs
    assert [job.status for job in jobs] == ["interrupted", "interrupted"]
    resumed = subprocess.run(
        [sys.executable, "-m", "teachback.cli", "batch", "--resume", str(out)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert [job.status for job in Batch.load(out).jobs] == ["done", "done"]
    assert marked_processes(mark) == []
