"""Training-data export: the two JSONL formats, written atomically."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from teachback.errors import MemoryStoreError
from teachback.memory.export import write_jsonl

PAIRS = [("What is the capital?", "Korrin."), ('Währung? "drell"\nnew line', "Die Drell – 100 Pennets.")]


def test_chatml(tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    assert write_jsonl(PAIRS, "chatml", out) == 2
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows[1] == {
        "messages": [{"role": "user", "content": PAIRS[1][0]}, {"role": "assistant", "content": PAIRS[1][1]}]
    }
    assert "Währung" in out.read_text(encoding="utf-8")  # UTF-8, not \\u escapes


def test_sharegpt(tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    write_jsonl(PAIRS, "sharegpt", out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert rows[0] == {
        "conversations": [{"from": "human", "value": PAIRS[0][0]}, {"from": "gpt", "value": "Korrin."}]
    }


def test_an_interrupted_export_leaves_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    out.write_text("old\n", encoding="utf-8")

    def pairs() -> Iterator[tuple[str, str]]:
        yield PAIRS[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(pairs(), "chatml", out)
    assert out.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]  # no temporary file left behind


def test_the_file_is_readable_by_others(tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    write_jsonl(PAIRS, "chatml", out)
    assert out.stat().st_mode & 0o044 == 0o044


@pytest.mark.parametrize(
    "fmt, name, message",
    [
        ("alpaca", "x.jsonl", "unknown export format 'alpaca'"),
        ("chatml", "missing/x.jsonl", "does not exist"),
        ("chatml", ".", "is a folder"),
    ],
)
def test_mistakes(tmp_path: Path, fmt: str, name: str, message: str) -> None:
    with pytest.raises(MemoryStoreError, match=message):
        write_jsonl(PAIRS, fmt, tmp_path / name)
