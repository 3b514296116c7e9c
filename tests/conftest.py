"""Shared fixtures: scenario files in tmp_path and scripted casts (the only fake model)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VELLMAR = REPO / "scenarios" / "knowledge" / "vellmar.md"


@pytest.fixture
def scenario_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a small Vellmar scenario into tmp_path; keyword arguments replace top-level fields."""

    def make(**fields: object) -> Path:
        (tmp_path / "vellmar.md").write_text(VELLMAR.read_text(encoding="utf-8"), encoding="utf-8")
        data: dict[str, object] = {
            "name": "vellmar-test",
            "knowledge": {"files": ["vellmar.md"]},
            "objectives": ["the capital and founding of Vellmar", "the currency of Vellmar"],
            "turns": 2,
            "quiz": [{"question": "What is the capital?", "answer": "Korrin", "keywords": [r"\bKorrin\b"]}],
        }
        data.update(fields)
        path = tmp_path / "scenario.yaml"
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")  # JSON is YAML
        return path

    return make


def verdict(score: int, reason: str = "checked") -> str:
    return json.dumps({"reason": reason, "score": score})


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own folder: nothing lands in the checkout (memory, transcripts, ...)."""
    monkeypatch.chdir(tmp_path)
