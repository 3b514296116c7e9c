"""`teachback memory ...`: the subcommands on a parser of our own (and through `teachback` once wired)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from teachback.errors import MemoryStoreError, TeachbackError
from teachback.memory.commands import register
from teachback.memory.store import MemoryStore

CAPITAL = {"question": "What is the capital of Vellmar?", "answer": "Korrin is the capital of Vellmar."}
CURRENCY = {
    "question": "What money does Vellmar use?",
    "answer": "The drell, divided into one hundred pennets.",
}


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="teachback")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def memory(tmp_path: Path) -> Path:
    folder = tmp_path / "memory"
    store = MemoryStore.open(folder)
    store.add_turn("vellmar", **CAPITAL, run_id="r1", turn=1, judge_score=0.9)
    store.add_turn("vellmar", **CURRENCY, run_id="r2", turn=1, judge_score=0.4)
    store.add_turn("tessel", question="Which ring?", answer="The red T-22 ring.", run_id="r3", turn=1)
    return folder


def test_stats(memory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["memory", "stats", "--memory-dir", str(memory)]) == 0
    out = capsys.readouterr().out
    assert f"memory at {memory}" in out
    assert any(line.split()[:4] == ["vellmar", "2", "0", "2"] for line in out.splitlines())
    assert "minilm" in out


def test_stats_of_an_empty_and_a_missing_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    run(["memory", "stats", "--memory-dir", str(tmp_path / "empty")])
    assert "no namespaces yet" in capsys.readouterr().out
    with pytest.raises(MemoryStoreError, match="no memory at"):
        run(["memory", "stats", "--memory-dir", str(tmp_path / "missing")])
    assert not (tmp_path / "missing").exists()


def test_search(memory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(
        [
            "memory",
            "search",
            "Which coins do they use?",
            "--namespace",
            "vellmar",
            "-k",
            "1",
            "--memory-dir",
            str(memory),
        ]
    )
    out = capsys.readouterr().out
    assert "Q: What money does Vellmar use?" in out and "A: The drell" in out and "run r2 turn 1" in out
    run(["memory", "search", "ring", "--json", "--memory-dir", str(memory)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["namespace"] == "tessel" and rows[0]["similarity"] > 0 and len(rows) == 3


def test_list(memory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["memory", "list", "--run", "r1", "--memory-dir", str(memory)])
    out = capsys.readouterr().out
    assert "vellmar  run r1 turn 1  score 0.90" in out and "Korrin" in out and "drell" not in out
    run(["memory", "list", "--json", "--namespace", "vellmar", "--memory-dir", str(memory)])
    assert [json.loads(line)["run_id"] for line in capsys.readouterr().out.splitlines()] == ["r1", "r2"]


def test_export(memory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "train.jsonl"
    argv = ["memory", "export", "--format", "sharegpt", "--out", str(out), "--min-score", "0.5"]
    run([*argv, "--namespace", "vellmar", "--memory-dir", str(memory)])
    assert "wrote 1 example(s)" in capsys.readouterr().out
    [row] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert row["conversations"][1] == {"from": "gpt", "value": CAPITAL["answer"]}


def test_delete(memory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["memory", "delete", "--run", "r2", "--memory-dir", str(memory)])
    assert "deleted 1 turn(s) of run r2" in capsys.readouterr().out
    with pytest.raises(MemoryStoreError, match="no turns of run 'r2'"):
        run(["memory", "delete", "--run", "r2", "--memory-dir", str(memory)])


def test_user_mistakes(memory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TeachbackError, match="name a subcommand"):
        run(["memory"])
    with pytest.raises(MemoryStoreError, match="has no namespace 'nope'"):
        run(["memory", "list", "--namespace", "nope", "--memory-dir", str(memory)])
    with pytest.raises(SystemExit):  # argparse: one of --memory-dir / --memory-url
        run(["memory", "stats", "--memory-dir", str(memory), "--memory-url", "http://127.0.0.1:1"])
    with pytest.raises(SystemExit):
        run(["memory", "search", "x", "-k", "0", "--memory-dir", str(memory)])
    capsys.readouterr()


def test_through_the_teachback_command(memory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from teachback.cli import build_parser, main

    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert "memory" in commands  # `teachback memory` is wired into teachback/cli.py
    assert main(["memory", "stats", "--memory-dir", str(memory)]) == 0
    assert main(["memory", "delete", "--run", "nope", "--memory-dir", str(memory)]) == 2
    assert "teachback: memory at" in capsys.readouterr().err
