"""The adapter registry: `teachback adapters`, `adapter: latest`, and what each adapter says about itself."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from teachback.cli import main
from teachback.errors import ModelError
from teachback.memory import lora
from teachback.memory.adapters import ADAPTERS_DIR, latest_adapter, list_adapters
from teachback.memory.finetune import sha256_file
from teachback.scenarios.cast import resolve_adapter


def adapter(path: Path, base: Path, created: str, namespace: str = "vellmar", **extra: object) -> Path:
    """A small but real adapter file, with the metadata `teachback finetune` writes."""
    meta = {
        "base_model": base.name,
        "base_sha256": sha256_file(base),
        "rank": 4,
        "targets": "attn_q,ffn_up",
        "data_sha256": "d" * 64,
        "namespace": namespace,
        "runs": ["run-a", "run-b"],
        "n_train": 7,
        "train_loss": [2.5, 1.25],
        "val_loss": [3.0, 2.0],
        "created": created,
        **extra,
    }
    tensor = np.ones((4, 8), np.float32)
    return lora.write_adapter(
        path, {"blk.0.attn_q.weight.lora_a": tensor}, architecture="llama", alpha=8.0, metadata=meta
    )


@pytest.fixture
def bases(tmp_path: Path) -> tuple[Path, Path]:
    one, two = tmp_path / "one.gguf", tmp_path / "two.gguf"
    one.write_bytes(b"base model one")
    two.write_bytes(b"base model two")
    return one, two


def test_registry_lists_oldest_first_and_skips_foreign_files(bases: tuple[Path, Path]) -> None:
    one, two = bases
    adapter(ADAPTERS_DIR / "b.gguf", one, "2026-11-02T10:00:00")
    adapter(ADAPTERS_DIR / "a.gguf", two, "2026-11-01T10:00:00")
    (ADAPTERS_DIR / "broken.gguf").write_bytes(b"not a gguf at all")
    found = list_adapters()
    assert [a.path.name for a in found] == ["a.gguf", "b.gguf"]
    b = found[1]
    assert (b.base_model, b.rank, b.alpha, b.targets) == ("one.gguf", 4, 8.0, "attn_q,ffn_up")
    assert b.runs == ["run-a", "run-b"] and b.train_loss == [2.5, 1.25] and b.val_loss == [3.0, 2.0]
    assert b.base_sha256 == sha256_file(one) and b.n_train == 7


def test_latest_matches_the_base_file_not_just_the_date(bases: tuple[Path, Path]) -> None:
    one, two = bases
    assert latest_adapter(one) is None  # no registry yet
    old = adapter(ADAPTERS_DIR / "old.gguf", one, "2026-11-01T10:00:00")
    adapter(ADAPTERS_DIR / "other-base.gguf", two, "2026-11-03T10:00:00")
    assert latest_adapter(one) == old.resolve()
    new = adapter(ADAPTERS_DIR / "new.gguf", one, "2026-11-02T10:00:00", namespace="tessel")
    assert latest_adapter(one) == new.resolve()
    assert latest_adapter(one, namespace="vellmar") == old.resolve()
    assert latest_adapter(two, namespace="tessel") is None


def test_latest_names_a_newer_adapter_it_cannot_read(bases: tuple[Path, Path]) -> None:
    """A cut-off newest adapter is an error that names it, not an older adapter loaded in its place."""
    one, _ = bases
    old = adapter(ADAPTERS_DIR / "old.gguf", one, "2026-11-01T10:00:00")
    cut = ADAPTERS_DIR / "new.gguf"
    cut.write_bytes(old.read_bytes()[:40])
    then = old.stat().st_mtime
    os.utime(cut, (then + 60, then + 60))
    with pytest.raises(ModelError, match=r"new\.gguf is newer than old\.gguf, .* cannot be read"):
        latest_adapter(one)
    os.utime(cut, (then - 60, then - 60))  # an older unreadable file hides nothing
    assert latest_adapter(one) == old.resolve()


def test_adapter_latest_in_a_scenario(bases: tuple[Path, Path], tmp_path: Path) -> None:
    one, _ = bases
    with pytest.raises(ModelError, match=r"'latest': no adapter for one.gguf .*teachback finetune"):
        resolve_adapter("latest", tmp_path, f"local:{one}")
    with pytest.raises(ModelError, match="needs a local GGUF model"):
        resolve_adapter("latest", tmp_path, "openai/gpt-4o-mini")
    made = adapter(ADAPTERS_DIR / "x.gguf", one, "2026-11-01T10:00:00")
    assert resolve_adapter("latest", tmp_path, f"local:{one}") == made.resolve()
    with pytest.raises(ModelError, match="no such adapter file"):
        resolve_adapter("missing.gguf", tmp_path, f"local:{one}")


def test_adapters_command_table_and_json(
    bases: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    one, _ = bases
    assert main(["adapters"]) == 0
    assert "no adapters in" in capsys.readouterr().out
    adapter(ADAPTERS_DIR / "vellmar-1.gguf", one, "2026-11-01T10:00:00")
    os.environ["COLUMNS"] = "200"
    assert main(["adapters"]) == 0
    out = capsys.readouterr().out
    assert "vellmar-1.gguf" in out and "one.gguf" in out and "4/8" in out and "2.500 → 1.250" in out
    assert main(["adapters", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert (
        listed[0]["rank"] == 4
        and listed[0]["namespace"] == "vellmar"
        and listed[0]["runs"] == ["run-a", "run-b"]
    )
