"""Prompt templates, loaded from `prompts.yaml` and rendered strictly.

    >>> render("student_ask", objective="the capital", feedback="")
    'Ask the teacher one short question about: the capital.\\nReply with the question only.'
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

PROMPTS_FILE = Path(__file__).with_name("prompts.yaml")


@cache
def _templates() -> dict[str, Any]:
    import jinja2
    import yaml

    raw = yaml.safe_load(PROMPTS_FILE.read_text(encoding="utf-8"))
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    return {name: env.from_string(text) for name, text in raw.items()}


def render(name: str, **variables: Any) -> str:
    """Render the prompt `name`; a variable the template uses but the caller omits is an error."""
    return str(_templates()[name].render(**variables)).strip()
