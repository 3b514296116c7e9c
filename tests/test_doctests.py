"""The worked examples in docstrings are tests too."""

from __future__ import annotations

import doctest
import importlib

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
    "teachback.scenarios.director",
    "teachback.scenarios.panel",
    "teachback.transcripts.events",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
