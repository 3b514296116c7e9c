"""`teachback batch`: the plan and its state, retries, resume, the summary, errors; and real batches, locally
and on a local Ray with a real `chroma run` on loopback.

The fast tests run the real executors on a small stand-in for `teachback run` (FAKE_RUN below): it writes a
real transcript and behaves by the scenario's name (`flaky` fails once, `broken` always, `slow` waits).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rich.console import Console

from teachback.cli import main
from teachback.errors import BatchError
from teachback.scenarios import batch as batch_module
from teachback.scenarios.batch import (
    Attempt,
    Batch,
    BatchOptions,
    Job,
    LocalExecutor,
    job_names,
    run_args,
    run_batch,
    write_files,
)
from teachback.scenarios.batch_summary import quiz_score, render, rows
from teachback.transcripts.events import RunFinished, TurnAccepted
from teachback.transcripts.reader import read_transcript

FAKE_RUN = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from teachback.transcripts.events import RunFinished, RunStarted
    from teachback.transcripts.reader import read_transcript
    from teachback.transcripts.recorder import TranscriptRecorder

    args = sys.argv[1:]
    print(json.dumps(args), flush=True)
    if "--resume" in args:
        run_dir = Path(args[args.index("--resume") + 1])
        scenario = read_transcript(run_dir / "transcript.jsonl")[0].scenario
    else:
        scenario, run_dir = Path(args[2]).stem, Path(args[args.index("--out") + 1])
    if "broken" in scenario and not Path("FIXED").exists():
        print("teachback: teacher local:/nowhere.gguf: no such model file", file=sys.stderr)
        sys.exit(2)
    header = RunStarted(t=0.0, run_id="r-" + scenario, scenario=scenario, scenario_path=scenario,
                        scenario_sha256="0", models={}, options={}, seed=0, versions={}, started_at="now")
    with TranscriptRecorder(run_dir / "transcript.jsonl") as rec:
        rec.handle(header)
        if "slow" in scenario:
            time.sleep(60)
        if "flaky" in scenario and "--resume" not in args:
            rec.handle(RunFinished(t=1.0, status="failed", turns=1, accepted=0, acceptance_rate=0.0,
                                   objectives_covered=[], reason="teacher timed out"))
            print("teachback: teacher timed out", file=sys.stderr)
            sys.exit(2)
        rec.handle(RunFinished(t=2.0, status="completed", turns=2, accepted=1, acceptance_rate=0.5,
                               objectives_covered=[]))
    """
)


@pytest.fixture
def fake_run(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_run.py"
    script.write_text(FAKE_RUN, encoding="utf-8")
    return [sys.executable, str(script)]


def scenario_copy(folder: Path, name: str) -> Path:
    """A valid scenario file named `name`.yaml (the bundled invented-domain with its knowledge)."""
    bundled = Path(batch_module.__file__).parent
    folder.mkdir(parents=True, exist_ok=True)
    knowledge = folder / "knowledge"
    knowledge.mkdir(exist_ok=True)
    (knowledge / "vellmar.md").write_text((bundled / "knowledge" / "vellmar.md").read_text())
    text = (bundled / "invented-domain.yaml").read_text().replace("name: invented-domain", f"name: {name}")
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_job_names_are_folder_safe_and_unique() -> None:
    assert job_names(["/x/a.yaml", "b", "/y/a.yaml", "c d"]) == ["a", "b", "a-2", "c-d"]


def test_the_plan_is_saved_and_loaded_and_refuses_what_is_not_a_batch(tmp_path: Path) -> None:
    jobs = [Job("a", "/s/a.yaml"), Job("b", "skill-procedure", status="failed", attempts=2, errors=["x"])]
    batch = Batch.create(tmp_path / "b", jobs, BatchOptions(turns=1, concurrency=2, memory_url="http://h:1"))
    again = Batch.load(tmp_path / "b")
    assert again.options == batch.options and again.jobs == jobs
    assert (tmp_path / "b" / "runs").is_dir() and not list((tmp_path / "b").glob(".*tmp"))
    with pytest.raises(BatchError, match="already holds a batch"):
        Batch.create(tmp_path / "b", jobs, BatchOptions())
    with pytest.raises(BatchError, match="not a batch folder"):
        Batch.load(tmp_path)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "batch.json").write_text('{"v": 9}')
    with pytest.raises(BatchError, match="version 9"):
        Batch.load(tmp_path / "c")


def test_run_args_start_fresh_or_resume_and_pass_the_options() -> None:
    options = BatchOptions(turns=1, models={"teacher": "openai/gpt-4o-mini"}, memory_url="http://h:8000")
    fresh = run_args(Attempt("a", "/s/a.yaml", options, 1, resume=False), Path("/b/runs/a"))
    assert fresh == ["run", "--plain", "/s/a.yaml", "--out", "/b/runs/a", "--turns", "1"] + [
        "--teacher",
        "openai/gpt-4o-mini",
        "--memory-url",
        "http://h:8000",
    ]
    quiet = BatchOptions(no_memory=True, no_quiz=True)
    again = run_args(Attempt("a", "/s/a.yaml", quiet, 2, resume=True), Path("/r"))
    assert again == ["run", "--plain", "--resume", "/r", "--no-quiz", "--no-memory"]


def test_a_failed_run_is_retried_with_resume_and_a_broken_one_reported(tmp_path: Path, fake_run) -> None:
    jobs = [Job(n, f"/s/{n}.yaml") for n in ("ok", "flaky", "broken")]
    batch = Batch.create(tmp_path / "b", jobs, BatchOptions(retries=1, concurrency=2))
    lines: list[str] = []
    run_batch(batch, LocalExecutor(concurrency=2, command=fake_run, poll=0.05), report=lines.append)
    state = {job.name: job for job in Batch.load(tmp_path / "b").jobs}
    assert {n: (j.status, j.attempts) for n, j in state.items()} == {
        "ok": ("done", 1),
        "flaky": ("done", 2),
        "broken": ("failed", 2),
    }
    assert state["broken"].errors == [
        f"attempt {n}: teacher local:/nowhere.gguf: no such model file" for n in (1, 2)
    ]
    assert state["flaky"].errors == ["attempt 1: teacher timed out"]
    flaky = tmp_path / "b" / "runs" / "flaky"
    assert "--resume" in (flaky / "attempt-2.log").read_text()  # the retry continued its own transcript
    assert "--resume" not in (tmp_path / "b" / "runs" / "broken" / "attempt-2.log").read_text()
    assert any(line.startswith("failed  flaky") and "trying again" in line for line in lines)


def test_resume_runs_only_what_is_not_done(tmp_path: Path, fake_run, monkeypatch, capsys) -> None:
    monkeypatch.setattr(batch_module, "TEACHBACK", fake_run)
    ok, broken = scenario_copy(tmp_path / "s", "ok"), scenario_copy(tmp_path / "s", "broken")
    out = tmp_path / "b"
    argv = ["batch", str(ok), str(broken), "--concurrency", "2", "--no-memory", "--retries", "0"]
    assert main([*argv, "--out", str(out)]) == 1
    assert "broken" in capsys.readouterr().out
    assert [(j.status, j.attempts) for j in Batch.load(out).jobs] == [("done", 1), ("failed", 1)]

    assert main([*argv, "--out", str(out)]) == 2  # a second batch in the same folder
    assert "already holds a batch: finish it with `teachback batch --resume" in capsys.readouterr().err
    (tmp_path / "FIXED").touch()  # the fake run's cwd is the test's folder
    assert main(["batch", "--resume", str(out)]) == 0
    assert [(j.status, j.attempts) for j in Batch.load(out).jobs] == [("done", 1), ("done", 2)]
    assert not (out / "runs" / "ok" / "attempt-2.log").exists()


def test_ctrl_c_stops_the_runs_and_leaves_the_batch_resumable(tmp_path: Path, fake_run) -> None:
    batch = Batch.create(tmp_path / "b", [Job("slow", "/s/slow.yaml")], BatchOptions())
    transcript = tmp_path / "b" / "runs" / "slow" / "transcript.jsonl"

    def interrupt_once_started(line: str) -> None:
        if not line.startswith("start"):
            return
        deadline = time.monotonic() + 30
        while not transcript.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        raise KeyboardInterrupt

    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_batch(batch, LocalExecutor(command=fake_run, poll=0.05), report=interrupt_once_started)
    assert time.monotonic() - began < 30  # the run stopped on SIGINT, not after its minute
    job = Batch.load(tmp_path / "b").jobs[0]
    assert (job.status, job.attempts, job.errors) == ("pending", 1, [])


def test_a_shipped_attempt_brings_its_run_folder_back(tmp_path: Path, fake_run) -> None:
    """What a Ray task does on its worker, without Ray: run in a temporary folder, return the files."""
    from teachback.scenarios.batch_ray import run_shipped

    first = run_shipped(Attempt("flaky", "/s/flaky.yaml", BatchOptions(), 1, False), {}, fake_run)
    assert first.returncode == 2 and first.error == "teacher timed out"
    assert set(first.files) == {"transcript.jsonl", "attempt-1.log"}
    files = {"transcript.jsonl": first.files["transcript.jsonl"]}
    second = run_shipped(Attempt("flaky", "/s/flaky.yaml", BatchOptions(), 2, True), files, fake_run)
    assert second.returncode == 0 and second.error == ""
    run_dir = tmp_path / "runs" / "flaky"
    write_files(run_dir, first.files)
    write_files(run_dir, second.files)
    assert sorted(p.name for p in run_dir.iterdir()) == ["attempt-1.log", "attempt-2.log", "transcript.jsonl"]
    assert read_transcript(run_dir / "transcript.jsonl")[-1].status == "completed"
    with pytest.raises(BatchError, match="outside the run folder"):
        write_files(run_dir, {"../evil": b""})


def test_the_summary_shows_turns_acceptance_and_quiz(tmp_path: Path, fake_run) -> None:
    jobs = [Job(n, f"/s/{n}.yaml") for n in ("ok", "broken")]
    batch = Batch.create(tmp_path / "b", jobs, BatchOptions(retries=0))
    run_batch(batch, LocalExecutor(concurrency=2, command=fake_run, poll=0.05), report=lambda line: None)
    ok = tmp_path / "b" / "runs" / "ok"
    (ok / "quiz-before.json").write_text(json.dumps({"totals": {"score": 0.25, "correct": 1, "n": 4}}))
    (ok / "quiz-after.json").write_text(json.dumps({"totals": {"score": 0.75, "correct": 3, "n": 4}}))
    by_name = {row.name: row for row in rows(batch)}
    assert (by_name["ok"].turns, by_name["ok"].accepted, by_name["ok"].acceptance_rate) == (2, 1, 0.5)
    assert by_name["ok"].quiz == "0.25 → 0.75" and by_name["broken"].quiz == "–"
    (ok / "quiz-before.json").unlink()
    assert quiz_score(ok) == "– → 0.75"
    assert by_name["broken"].turns is None and "no such model file" in by_name["broken"].error
    (ok / "quiz-before.json").write_text(json.dumps({"totals": {"score": 0.25, "correct": 1, "n": 4}}))
    console = Console(record=True, width=120)
    render(batch, console)
    text = console.export_text()
    assert "50%" in text and "0.25 → 0.75" in text and "failed" in text
    assert "broken: attempt 1: teacher local:/nowhere.gguf: no such model file" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["batch", "no-such-scenario"], "no-such-scenario: no such scenario file"),
        (["batch"], "name one or more scenarios"),
        (["batch", "invented-domain", "--ray-address", "auto"], "--ray-address needs --executor ray"),
        (
            ["batch", "invented-domain", "--executor", "ray", "--ray-address", "ray://h:10001"],
            "--memory-url http://host:port",
        ),
        (["batch", "--resume", "."], "not a batch folder"),
    ],
)
def test_mistakes_are_one_line_and_start_nothing(argv, message, tmp_path: Path, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "transcripts").exists()


def test_an_unreachable_memory_server_and_a_missing_ray_are_one_line(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    from teachback.processes import free_port

    url = f"http://127.0.0.1:{free_port()}"
    assert main(["batch", "invented-domain", "--memory-url", url]) == 2
    assert f"cannot reach the chroma server at {url}" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as when it is not installed
    assert main(["batch", "invented-domain", "--executor", "ray", "--no-memory"]) == 2
    assert capsys.readouterr().err == "teachback: --executor ray needs Ray: pip install 'teachback[ray]'\n"
    assert not (tmp_path / "transcripts").exists()


# ---- real runs: the bundled cast (SmolLM2 student, Qwen2.5 teacher and judge) -------------------------

TEACHBACK = [sys.executable, "-m", "teachback.cli"]


def finished(run_dir: Path) -> tuple[RunFinished, list]:
    events = read_transcript(run_dir / "transcript.jsonl")
    last = events[-1]
    assert isinstance(last, RunFinished)
    return last, events


@pytest.mark.real
def test_real_local_batch_reports_a_failed_run_and_finishes_the_other(tmp_path: Path) -> None:
    """Two runs at once through the local executor; the memory folder is served to both by `chroma run`."""
    broken = scenario_copy(tmp_path / "s", "broken")
    text = broken.read_text().replace(
        "teacher:\n  model: local/qwen2.5-0.5b", "teacher:\n  model: local:/x.gguf"
    )
    assert "local:/x.gguf" in text
    broken.write_text(text)
    out = tmp_path / "b"
    result = subprocess.run(
        [
            *TEACHBACK,
            "batch",
            "invented-domain",
            str(broken),
            "--turns",
            "1",
            "--concurrency",
            "2",
            "--no-quiz",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    jobs = {job.name: job for job in Batch.load(out).jobs}
    assert (jobs["invented-domain"].status, jobs["invented-domain"].attempts) == ("done", 1)
    assert (jobs["broken"].status, jobs["broken"].attempts) == ("failed", 2)
    assert "/x.gguf" in jobs["broken"].errors[-1]
    last, events = finished(out / "runs" / "invented-domain")
    assert last.status == "completed" and last.turns == 1
    assert "invented-domain" in result.stdout and "broken" in result.stdout and "/x.gguf" in result.stdout
    from teachback.memory.store import MemoryStore

    accepted = [e for e in events if isinstance(e, TurnAccepted)]
    store = MemoryStore.open(path=tmp_path / ".teachback" / "memory", create=False)
    # the namespace is created by the first accepted turn: a one-turn run the judge rejected stores nothing
    stored = store.entries("invented-domain") if "invented-domain" in store.namespaces() else []
    assert len([t for t in stored if t.run_id == events[0].run_id]) == len(accepted)


@pytest.mark.real
def test_real_ray_batch_shares_one_chroma_server(tmp_path: Path) -> None:
    """The issue's test: two short scenarios on a local Ray, sharing a real `chroma run` on loopback."""
    pytest.importorskip("ray")
    from teachback.memory.chroma_server import ChromaServer
    from teachback.memory.store import MemoryStore

    copy = scenario_copy(tmp_path / "s", "vellmar-copy")  # another namespace, the same knowledge
    out = tmp_path / "b"
    with ChromaServer(tmp_path / "chroma", log=tmp_path / "chroma.log") as server:
        result = subprocess.run(  # the server's token reaches the runs through the batch's environment
            # two turns each: with 135M models a single turn is rejected often enough to leave nothing stored
            [*TEACHBACK, "batch", "invented-domain", str(copy), "--turns", "2", "--concurrency", "2"]
            + ["--executor", "ray", "--memory-url", server.url, "--no-quiz", "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
            env={**os.environ, "TEACHBACK_MEMORY_TOKEN": server.token},
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        store = MemoryStore.open(url=server.url, token=server.token)
        total = 0
        for name, namespace in (("invented-domain", "invented-domain"), ("vellmar-copy", "vellmar-copy")):
            last, events = finished(out / "runs" / name)
            assert last.status == "completed" and last.turns == 2
            accepted = {(e.question, e.answer) for e in events if isinstance(e, TurnAccepted)}
            in_memory = set()
            if namespace in store.namespaces():  # created by the first accepted turn, not before
                in_memory = {
                    (t.question, t.answer) for t in store.entries(namespace) if t.run_id == events[0].run_id
                }
            assert in_memory == accepted
            total += len(accepted)
        assert total >= 1  # the judge accepted something, so the server really holds turns from the runs
    assert [job.attempts for job in Batch.load(out).jobs] == [1, 1]
    assert (out / "runs" / "invented-domain" / "attempt-1.log").is_file()  # came back from the Ray task
