"""Chaos: SIGKILL `teachback run` at random moments and resume each to completion; make the teacher fail
in every way a hosted model can; count what was lost and what was left running.

    .venv/bin/python benchmarks/chaos_bench.py [--kills 20] [--turns 3] [--seed 0] [--student MODEL]

The teacher and the judge are fake OpenAI-compatible servers on loopback (tests/fake_openai.py) that teach
from the scenario's notes and accept; the student is the bundled SmolLM2 behind a managed llama.cpp server
(learning by retrieval), so every run has a real child process that a kill could orphan (`--student
openai/x` makes the student fake too: faster, and no child). Memory goes to a folder per trial.

Kills: one uninterrupted run first measures how long a run takes (D); then each trial starts a run,
SIGKILLs it after a random delay in [0.3 s, 0.9 D] (during start-up, a turn, the memory write, the end)
and runs `teachback run --resume` until the run completes; a run killed before its first event is started
again in its folder. A run that ends before its moment is no kill: trials go on until `--kills` were.
After each kill and resume:
  orphans left         processes still carrying the trial's mark in their environment 5 s after the kill
  accepted turns lost  turns accepted in any transcript seen, missing from the final transcript or from
                       the memory (compared by question and answer, for the run's id)
  turns counted twice  the objectives' turns in the run's metrics beyond its turn budget
Faults: once a run has accepted a turn the teacher turns faulty for good: 500, a hang past the seat's
2 s timeout, a body that is not JSON, empty choices, 429 with Retry-After: 1 (one retry each). The run must
end with exit 2, one `teachback:` line and a `failed` transcript; the teacher is then mended and the run
resumed to completion. `seconds` is from the fault to the run's exit.

Measured here (2 cores shared with another benchmark; SmolLM2 student; 3 turns; seed 0; 653 s in all):
an uninterrupted run 14.2 s; 20 kills (5 before the run's first event), 20 of 20 resumes completed,
17 turns cut mid-way (kills and faults) played again and counted once, 0 accepted turns lost, 0 turns
counted twice, 0 orphans. Seconds from the fault to the run's exit 2: 500 4.6, hang 7.5 (two 2 s
attempts), invalid JSON 4.7, empty choices 5.0, 429 4.8 (one 1 s Retry-After wait); each run then
resumed to completion. These include the run stopping its llama.cpp server. The bench exits 1 if anything
was lost or left running, or a run did not complete.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/fake_openai.py

from teachback.processes import marked_processes  # noqa: E402
from tests.fake_openai import FakeOpenAI, teaching_reply  # noqa: E402

TEACHBACK = [sys.executable, "-m", "teachback.cli"]
FAULTS = {
    "500": "500",
    "hang": "hang",
    "invalid JSON": "not-json",
    "empty choices": "no-choices",
    "429": "429",
}
ORPHAN_GRACE_S = 5.0
TIMEOUT_S = 2  # the teacher's per-attempt timeout: a hang is cut off after it


@dataclass
class Tally:
    kills: int = 0
    ended_first: int = 0  # runs that finished before their kill moment (not counted as kills)
    before_first_event: int = 0
    turns_cut: int = 0
    resumes_completed: int = 0
    lost: int = 0
    counted_twice: int = 0
    orphans: int = 0
    problems: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, folder: Path, turns: int, student: str):
        self.folder = folder
        self.turns = turns
        self.cast = FakeOpenAI(reply=teaching_reply)
        self.teacher = FakeOpenAI(reply=teaching_reply, hang_s=3 * TIMEOUT_S)
        self.scenario = self._write_scenario(student)
        self.env = {**os.environ, "OPENAI_API_KEY": "sk-chaos-not-a-real-key-0123"}

    def _write_scenario(self, student: str) -> Path:
        (self.folder / "vellmar.md").write_text(
            (REPO / "scenarios" / "knowledge" / "vellmar.md").read_text(encoding="utf-8"), encoding="utf-8"
        )
        fake = {"model": "openai/x", "api_base": self.cast.api_base, "timeout": 10, "retries": 1}
        teacher = {**fake, "api_base": self.teacher.api_base, "timeout": TIMEOUT_S}
        if student.startswith(("local/", "local:")):
            learner = {"model": student, "learning": "retrieval", "max_tokens": 32}
        else:
            learner = {**fake, "model": student}
        data = {
            "name": "chaos",
            "knowledge": {"files": ["vellmar.md"]},
            "objectives": ["the capital and founding of Vellmar", "the currency of Vellmar"],
            "turns": self.turns,
            "student": learner,
            "teacher": teacher,
            "judge": fake,
        }
        path = self.folder / "chaos.yaml"
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")
        return path

    def close(self) -> None:
        self.cast.close()
        self.teacher.close()

    # -- one run ------------------------------------------------------------------------------------------

    def start(self, run_dir: Path, mark: str, resume: bool = False) -> subprocess.Popen[str]:
        where = ["--resume", str(run_dir)] if resume else [str(self.scenario), "--out", str(run_dir)]
        return subprocess.Popen(
            [*TEACHBACK, "run", *where, "--plain", "--no-quiz", "--memory-dir", str(run_dir.parent / "mem")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**self.env, "TEACHBACK_CHAOS_MARK": mark},
            cwd=self.folder,
        )

    def finish(self, run_dir: Path, mark: str, tally: Tally, label: str) -> bool:
        """Resume (or start again) until the run completes; False after three tries."""
        from teachback.transcripts.reader import read_transcript

        transcript = run_dir / "transcript.jsonl"
        for _ in range(3):
            fresh = not transcript.is_file() or transcript.stat().st_size == 0  # killed before it wrote
            proc = self.start(run_dir, mark, resume=not fresh)
            _, err = proc.communicate(timeout=600)
            if proc.returncode == 0:
                events = read_transcript(run_dir / "transcript.jsonl")
                if getattr(events[-1], "status", "") == "completed":
                    return True
            if "before it wrote its first event" in err:
                continue  # the folder is started afresh on the next try
            tally.problems.append(f"{label}: resume exit {proc.returncode}: {err.strip()[-300:]}")
        return False

    def check(self, run_dir: Path, seen: set[tuple[str, str]], tally: Tally, label: str) -> None:
        """Accepted turns lost (transcript and memory) and turns counted twice, once the run completed."""
        from teachback.memory.store import MemoryStore
        from teachback.transcripts.events import TurnAccepted
        from teachback.transcripts.metrics import run_metrics
        from teachback.transcripts.reader import read_transcript

        events = read_transcript(run_dir / "transcript.jsonl")
        accepted = {(e.question, e.answer) for e in events if isinstance(e, TurnAccepted)}
        store = MemoryStore.open(path=run_dir.parent / "mem")
        run_id = events[0].run_id
        turns = store.entries("chaos") if "chaos" in store.namespaces() else []
        stored = {(t.question, t.answer) for t in turns if t.run_id == run_id}
        lost = (seen | accepted) - (accepted & stored)
        if lost:
            tally.problems.append(f"{label}: {len(lost)} accepted turns lost")
        tally.lost += len(lost)
        metrics = run_metrics(events, price=lambda model: (0.0, 0.0))
        twice = sum(o["turns"] for o in metrics["objectives"]) - self.turns
        if twice > 0:
            tally.problems.append(f"{label}: {twice} turns counted twice")
        tally.counted_twice += max(0, twice)
        tally.turns_cut += metrics["totals"]["abandoned_turns"]


def accepted_so_far(run_dir: Path) -> set[tuple[str, str]]:
    from teachback.errors import TranscriptError
    from teachback.transcripts.events import TurnAccepted
    from teachback.transcripts.reader import read_transcript

    try:
        events = read_transcript(run_dir / "transcript.jsonl", allow_truncated_tail=True)
    except TranscriptError:
        return set()
    return {(e.question, e.answer) for e in events if isinstance(e, TurnAccepted)}


def orphans_after(mark: str, grace: float = ORPHAN_GRACE_S) -> int:
    deadline = time.monotonic() + grace
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = marked_processes(mark)
    for pid in left:  # ours: the bench started them (through the run); do not leave them behind
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return len(left)


def calibrate(bench: Bench) -> float:
    run_dir = bench.folder / "calibration" / "run"
    run_dir.parent.mkdir()
    began = time.monotonic()
    proc = bench.start(run_dir, uuid.uuid4().hex)
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        sys.exit(f"the uninterrupted run failed: {err.strip()[-1000:]}")
    return time.monotonic() - began


def kill_trials(bench: Bench, kills: int, length: float, rng: random.Random) -> Tally:
    """Trials until `kills` runs were SIGKILLed; a run that ends before its moment is not one of them."""
    tally = Tally()
    n = 0
    while tally.kills < kills:
        n += 1
        run_dir = bench.folder / f"kill-{n:02d}" / "run"
        run_dir.parent.mkdir()
        mark = uuid.uuid4().hex
        delay = rng.uniform(0.3, 0.9 * length)
        proc = bench.start(run_dir, mark)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(delay)
        if proc.poll() is not None:
            proc.communicate()
            tally.ended_first += 1
            print(f"  trial {n:>2}: the run ended before {delay:4.1f} s; not a kill", flush=True)
            continue
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        tally.kills += 1
        left = orphans_after(mark)
        tally.orphans += left
        if left:
            tally.problems.append(f"kill {tally.kills}: {left} processes outlived the run")
        seen = accepted_so_far(run_dir)
        transcript = run_dir / "transcript.jsonl"
        if not transcript.is_file() or b"\n" not in transcript.read_bytes():
            tally.before_first_event += 1
        if bench.finish(run_dir, mark, tally, f"kill {tally.kills}"):
            tally.resumes_completed += 1
            bench.check(run_dir, seen, tally, f"kill {tally.kills}")
        print(f"  kill {tally.kills:>2} at {delay:4.1f} s: {len(seen)} accepted before it", flush=True)
    return tally


def fault_trials(bench: Bench, tally: Tally) -> list[tuple[str, float, int, str, bool]]:
    rows = []
    for name, mode in FAULTS.items():
        run_dir = bench.folder / f"fault-{mode}" / "run"
        run_dir.parent.mkdir()
        mark = uuid.uuid4().hex
        bench.teacher.mode, bench.teacher.faults = "ok", None
        proc = bench.start(run_dir, mark)
        transcript = run_dir / "transcript.jsonl"
        flipped = None
        while proc.poll() is None:
            if flipped is None and transcript.is_file() and "turn_accepted" in transcript.read_text():
                bench.teacher.mode, flipped = mode, time.monotonic()
            time.sleep(0.05)
        _, err = proc.communicate()
        seconds = time.monotonic() - flipped if flipped is not None else float("nan")
        lines = [line for line in err.splitlines() if line.startswith("teachback:")]
        line = lines[-1].removeprefix("teachback: ") if lines else err.strip()[-200:]
        if proc.returncode != 2 or len(lines) != 1 or "Traceback" in err:
            tally.problems.append(f"fault {name}: exit {proc.returncode}, {len(lines)} error lines")
        tally.orphans += orphans_after(mark)
        bench.teacher.mode = "ok"
        seen = accepted_so_far(run_dir)
        completed = bench.finish(run_dir, mark, tally, f"fault {name}")
        if completed:
            bench.check(run_dir, seen, tally, f"fault {name}")
        rows.append((name, seconds, proc.returncode, line, completed))
        print(f"  fault {name}: exit {proc.returncode} after {seconds:.1f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLed runs (default 20)")
    parser.add_argument("--turns", type=int, default=3, help="turns per run (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    parser.add_argument("--student", default="local/smollm2-135m", help="the student's model")
    args = parser.parse_args()
    if sys.platform != "linux":
        sys.exit("chaos_bench reads /proc: Linux only")

    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="teachback-chaos-") as tmp:
        bench = Bench(Path(tmp), args.turns, args.student)
        try:
            length = calibrate(bench)
            print(
                f"an uninterrupted run ({args.turns} turns, student {args.student}): {length:.1f} s",
                flush=True,
            )
            tally = kill_trials(bench, args.kills, length, random.Random(args.seed))
            rows = fault_trials(bench, tally)
        finally:
            bench.close()
    print()
    print(
        f"kills                 {tally.kills} ({tally.before_first_event} before the run's first event; "
        f"{tally.ended_first} more runs ended before their moment)"
    )
    print(f"resumes completed     {tally.resumes_completed}/{args.kills}")
    print(f"turns cut mid-way     {tally.turns_cut} (by kills and faults; played again, counted once)")
    print(f"accepted turns lost   {tally.lost}")
    print(f"turns counted twice   {tally.counted_twice}")
    print(f"orphans left          {tally.orphans}")
    print("fault           seconds  exit  resumed  error")
    for name, seconds, code, line, completed in rows:
        print(f"{name:<15} {seconds:>7.1f}  {code:>4}  {'yes' if completed else 'NO':>7}  {line[:150]}")
    print(f"total {time.monotonic() - began:.0f} s")
    for problem in tally.problems:
        print(f"PROBLEM {problem}")
    sys.exit(1 if tally.problems or tally.resumes_completed < args.kills else 0)


if __name__ == "__main__":
    main()
