"""`teachback finetune`: from the turns a run stored in memory to an adapter the student loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from teachback.agents.scripted import ScriptedChatClient
from teachback.scenarios.run import RunRequest, run_scenario
from teachback.transcripts.events import TurnAccepted
from teachback.transcripts.reader import read_transcript
from tests.conftest import judge

TEACHBACK = [sys.executable, "-m", "teachback.cli"]
ANSWERS = [
    "Korrin is the capital of Vellmar. Vellmar was founded in 1487 by Queen Almeth.",
    "The currency of Vellmar is the drell. One drell is divided into one hundred pennets.",
    "Vellmar was founded in 1487. Queen Almeth united the five fishing clans.",
]


def recorded_run(scenario_file, tmp_path: Path) -> Path:
    student: list = []
    questions = [
        "What is the capital of Vellmar?",
        "What is the currency of Vellmar?",
        "When was Vellmar founded?",
    ]
    for question, answer in zip(questions, ANSWERS, strict=True):
        student += [question, "I learned: " + answer]
    clients = {
        "student": ScriptedChatClient(student),
        "teacher": ScriptedChatClient(ANSWERS),
        "judge": judge(9),
    }
    request = RunRequest(
        scenario=str(scenario_file(turns=3)), out=tmp_path / "run", plain=True, memory_dir=tmp_path / "mem"
    )
    return run_scenario(request, Console(), clients=clients)


def test_finetune_with_no_turns_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "mem").mkdir()
    result = subprocess.run(
        [*TEACHBACK, "finetune", "--namespace", "nothing-here", "--memory-dir", str(tmp_path / "mem")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "has no namespace 'nothing-here'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--objective", "volcanoes"], "objectives matching ['volcanoes'])"),
        (["--min-score", "1.01"], "judge score >= 1.01)"),
        (["--run", "no-such-run"], "no accepted turns (runs no-such-run)"),
    ],
)
def test_finetune_filters_that_leave_nothing_are_one_line_errors(
    scenario_file, tmp_path: Path, flags: list[str], message: str
) -> None:
    run_dir = recorded_run(scenario_file, tmp_path)
    result = subprocess.run(
        [*TEACHBACK, "finetune", "--run-dir", str(run_dir), "--memory-dir", str(tmp_path / "mem"), *flags],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_select_turns_filters_by_objective_score_and_run(scenario_file, tmp_path: Path) -> None:
    from teachback.memory.store import MemoryStore
    from teachback.scenarios.finetune_student import FinetuneRequest, select_turns

    run_dir = recorded_run(scenario_file, tmp_path)
    store = MemoryStore.open(path=tmp_path / "mem", create=False)
    everything = select_turns(store, FinetuneRequest(), "vellmar-test", [])
    assert len(everything) == 3
    objective = everything[0].objective
    only = select_turns(store, FinetuneRequest(objectives=[objective.upper()[:12]]), "vellmar-test", [])
    assert only and all(t.objective == objective for t in only)
    assert len(select_turns(store, FinetuneRequest(), "vellmar-test", [everything[0].run_id])) == 3
    assert run_dir.is_dir()


@pytest.mark.real
def test_finetune_a_run_and_load_the_adapter(scenario_file, tmp_path: Path) -> None:
    run_dir = recorded_run(scenario_file, tmp_path)
    out = tmp_path / "adapter.gguf"
    result = subprocess.run(
        [
            *TEACHBACK,
            "finetune",
            "--run-dir",
            str(run_dir),
            "--memory-dir",
            str(tmp_path / "mem"),
            "--epochs",
            "2",
            "--out",
            str(out),
            "--val-split",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(out) and out.is_file()
    assert "from 3 accepted turns" in result.stdout and "train loss per epoch" in result.stdout
    import llama_cpp

    from teachback.agents.models import resolve
    from teachback.memory.lora import read_adapter_metadata

    meta = read_adapter_metadata(out)
    assert meta["namespace"] == "vellmar-test" and meta["student"] == "local/smollm2-135m"
    # an example per accepted answer and one per teach-back that passed the gate
    accepted = [e for e in read_transcript(run_dir / "transcript.jsonl") if isinstance(e, TurnAccepted)]
    assert len(meta["runs"]) == 1 and meta["n_train"] == 3 + sum(a.teachback_accepted for a in accepted)
    assert "estimated peak memory" in result.stdout
    record = json.loads((run_dir / "finetune.json").read_text())
    assert record["adapter"] == str(out) and len(record["loss_curve"]) >= 2
    assert record["loss_curve"][-1][1] < record["loss_curve"][0][1]  # it learned
    assert record["estimated_bytes"] > 0 and record["peak_rss_bytes"] > 0
    for label in ("before", "after"):  # the scenario's quiz, before and after fine-tuning
        quiz = json.loads((run_dir / f"quiz-{label}.json").read_text())
        assert quiz["items"][0]["question"] == "What is the capital?"
    assert "quiz:" in result.stdout and "before ->" in result.stdout
    llm = llama_cpp.Llama(str(resolve("local/smollm2-135m").local_path), lora_path=str(out), verbose=False)
    assert llm.create_completion("Vellmar", max_tokens=2)["choices"]
