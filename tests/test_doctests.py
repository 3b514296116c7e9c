"""The worked examples in docstrings are tests too."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

MODULES = [
    "teachback.agents.claims",
    "teachback.agents.entailment",
    "teachback.agents.terms",
    "teachback.scenarios.curriculum",
    "teachback.scenarios.rounds",
    "teachback.agents.grounding",
    "teachback.agents.instructions",
    "teachback.agents.prompts",
    "teachback.agents.models",
    "teachback.scenarios.director",
    "teachback.scenarios.panel",
    "teachback.scenarios.quiz",
    "teachback.agents.judge",
    "teachback.scenarios.judge_eval",
    "teachback.memory.embeddings",
    "teachback.memory.export",
    "teachback.memory.store",
    "teachback.memory.native",
    "teachback.errors",
    "teachback.transcripts.events",
    "teachback.transcripts.run_folder",
    "teachback.transcripts.progress",
]

PACKAGES = [
    "teachback",
    "teachback.agents",
    "teachback.scenarios",
    "teachback.memory",
    "teachback.transcripts",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_every_module_with_examples_is_listed() -> None:
    with_examples = set()
    for package in PACKAGES:
        for path in Path(importlib.import_module(package).__file__).parent.glob("*.py"):
            if ">>> " in path.read_text(encoding="utf-8"):
                with_examples.add(package if path.stem == "__init__" else f"{package}.{path.stem}")
    assert sorted(with_examples - set(MODULES)) == []
