"""Atomic writes (teachback/files.py): the old file or the new one, durable, and nothing left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from teachback import files
from teachback.files import atomic_path, atomic_write_bytes, atomic_write_text


def test_writes_make_the_folder_and_leave_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "plan.json"
    atomic_write_text(out, "één\n")
    atomic_write_bytes(tmp_path / "sub" / "data.bin", b"\x00\x01")
    assert out.read_bytes() == "één\n".encode()
    assert sorted(p.name for p in out.parent.iterdir()) == ["data.bin", "plan.json"]


def test_an_interrupted_writer_leaves_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "adapter.gguf"
    out.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_path(out) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter.gguf"]


def test_a_replaced_file_keeps_its_permissions(tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    out.write_text("old")
    out.chmod(0o640)
    atomic_write_text(out, "new")
    assert out.read_text() == "new" and out.stat().st_mode & 0o777 == 0o640


def test_the_file_and_its_folder_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    fsync = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: synced.append(fd) or fsync(fd))
    atomic_write_text(tmp_path / "state.json", "{}")
    assert len(synced) == 2  # the temporary file before the rename, the folder after it
