"""Prompt templates, loaded from `prompts.yaml` and rendered strictly.

>>> render("student_ask", objective="the capital", feedback="")
'Ask the teacher one short question about: the capital.'
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

PROMPTS_FILE = Path(__file__).with_name("prompts.yaml")


@cache
def _templates() -> dict[str, Any]:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    return {name: env.from_string(text) for name, text in _raw().items() if isinstance(text, str)}


@cache
def _raw() -> dict[str, Any]:
    import yaml

    data: dict[str, Any] = yaml.safe_load(PROMPTS_FILE.read_text(encoding="utf-8"))
    return data


def render(name: str, **variables: Any) -> str:
    """Render the prompt `name`; a variable the template uses but the caller omits is an error."""
    return str(_templates()[name].render(**variables)).strip()


def examples(name: str) -> list[dict[str, str]]:
    """A list of worked examples from the prompts file (data, not templates)."""
    return list(_raw()[name])
