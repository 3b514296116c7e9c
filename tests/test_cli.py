"""The `teachback` command: every command, as a user invokes it, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from teachback.cli import main
from tests.conftest import REPO

TEACHBACK = [sys.executable, "-m", "teachback.cli"]


def cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TEACHBACK, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from teachback.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('litellm', 'llama_cpp', 'chromadb', 'autogen_agentchat', 'autogen_core',"
        " 'rich',"
        " 'pydantic', 'yaml') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "HEAVY []" in out
    assert "run" in out and "replay" in out and "validate" in out and "models" in out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_validate_bundled_scenarios_ok() -> None:
    result = cli("validate", "invented-domain", str(REPO / "scenarios" / "skill-procedure.yaml"))
    assert result.returncode == 0, result.stderr
    assert "invented-domain: ok" in result.stdout and "skill-procedure.yaml: ok" in result.stdout
    assert "33 facts" in result.stdout  # vellmar.md's sentences: the curriculum a run steers through


def test_validate_counts_a_scenarios_own_facts(scenario_file) -> None:
    path = scenario_file(facts=["Korrin is the capital of Vellmar.", "Vellmar was founded in 1487."])
    result = cli("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert "2 facts" in result.stdout


def test_validate_bad_scenario_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nobjectives: []\njudge:\n  threshold: 1.5\nturns: 0\n", encoding="utf-8")
    result = cli("validate", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert f"teachback: {bad}:2: objectives:" in lines[0]
    assert any(f"{bad}:4: judge.threshold:" in line for line in lines)
    assert any(f"{bad}:5: turns:" in line for line in lines)
    assert "Traceback" not in result.stderr


def test_models_lists_the_bundled_model_file() -> None:
    result = cli("models")
    assert result.returncode == 0
    assert "local/smollm2-135m" in result.stdout and "SmolLM2-135M-Instruct.Q4_1.gguf" in result.stdout
    assert "local/gemma3-270m" in result.stdout and "local/qwen2.5-0.5b" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no-such-scenario"], "no such scenario file or bundled scenario"),
        (["run", "invented-domain", "--teacher", "local/nope"], "unknown local model 'local/nope'"),
        (["run", "invented-domain", "--student", "local:/no/such.gguf"], "model file not found"),
        (["run"], "name a scenario"),
        (["run", "--resume", "/no/such/run"], "no transcript.jsonl here to resume"),
        (["run", "invented-domain", "--adapter", "latest"], "'latest': no adapter for SmolLM2"),
        (["run", "invented-domain", "--rounds", "2", "--no-memory"], "drop --no-memory"),
        (["finetune", "--run-dir", "/no/such/run"], "not a run folder"),
        (["replay", "/no/such/transcript.jsonl"], "no such transcript"),
    ],
)
def test_user_mistakes_are_one_line_errors_with_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "transcripts").exists()  # nothing written for a run that never started


def test_replay_of_corrupt_transcript_names_the_line(tmp_path: Path) -> None:
    good = {"v": 1, "type": "notice", "t": 0.0, "level": "info", "message": "x"}
    path = tmp_path / "transcript.jsonl"
    header = {
        "v": 1,
        "type": "run_started",
        "t": 0.0,
        "run_id": "r",
        "scenario": "s",
        "scenario_path": "s.yaml",
        "scenario_sha256": "0" * 64,
        "models": {},
        "options": {"turns": 1},
        "seed": 0,
        "versions": {},
        "started_at": "now",
    }
    path.write_text(json.dumps(header) + "\n" + json.dumps(good) + "\n{not json\n", encoding="utf-8")
    result = cli("replay", str(tmp_path), "--instant")
    assert result.returncode == 2
    assert f"{path}:3: not valid JSON" in result.stderr and "Traceback" not in result.stderr


def test_replay_shows_a_recorded_run(scenario_file, tmp_path: Path) -> None:
    from rich.console import Console

    from teachback.agents.scripted import ScriptedChatClient
    from teachback.scenarios.run import RunRequest, run_scenario
    from tests.conftest import judge

    answer = "Korrin is the capital of Vellmar. Vellmar was founded in 1487 by Queen Almeth."
    clients = {
        "student": ScriptedChatClient(
            ["What is the capital of Vellmar?", "Korrin is the capital, founded 1487."]
        ),
        "teacher": ScriptedChatClient([answer]),
        "judge": judge(9),
    }
    run_dir = run_scenario(
        RunRequest(scenario=str(scenario_file(turns=1)), out=tmp_path / "r", plain=True),
        Console(),
        clients=clients,
    )
    result = cli("replay", str(run_dir), "--instant", "--plain")
    assert result.returncode == 0, result.stderr
    assert "What is the capital of Vellmar?" in result.stdout and answer in result.stdout
    assert "ACCEPT" in result.stdout and "completed" in result.stdout
    only_teacher = cli("replay", str(run_dir), "--instant", "--plain", "--role", "teacher")
    assert answer in only_teacher.stdout and "What is the capital of Vellmar?" not in only_teacher.stdout
    too_far = cli("replay", str(run_dir), "--instant", "--from", "5")
    assert too_far.returncode == 2 and "1 turn" in too_far.stderr


def test_unknown_litellm_provider_fails_before_anything_is_written(tmp_path: Path) -> None:
    result = cli("run", "invented-domain", "--teacher", "nosuchprovider/model-x", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown model 'nosuchprovider/model-x'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "transcripts").exists()


def test_missing_adapter_fails_before_anything_is_written(tmp_path: Path) -> None:
    result = cli("run", "invented-domain", "--adapter", "no-such-adapter.gguf", cwd=tmp_path)
    assert result.returncode == 2
    assert "no such adapter file" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "transcripts").exists()
