"""Training data out of the memory: the JSONL formats that axolotl, LLaMA-Factory and unsloth read.

    chatml    {"messages": [{"role": "user", "content": Q}, {"role": "assistant", "content": A}]}
    sharegpt  {"conversations": [{"from": "human", "value": Q}, {"from": "gpt", "value": A}]}

One turn per line, UTF-8, written atomically (teachback/files.py), so a reader never sees half a file
and an interrupted export leaves the old file as it was.

    >>> print(format_line("chatml", "Capital?", "Korrin."))
    {"messages": [{"role": "user", "content": "Capital?"}, {"role": "assistant", "content": "Korrin."}]}
    >>> print(format_line("sharegpt", "Capital?", "Korrin."))
    {"conversations": [{"from": "human", "value": "Capital?"}, {"from": "gpt", "value": "Korrin."}]}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from teachback.errors import MemoryStoreError
from teachback.files import atomic_path


def _chatml(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _sharegpt(question: str, answer: str) -> dict[str, Any]:
    return {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}


FORMATS: dict[str, Callable[[str, str], dict[str, Any]]] = {"chatml": _chatml, "sharegpt": _sharegpt}


def format_line(fmt: str, question: str, answer: str) -> str:
    """One example as a JSON line (without the newline)."""
    try:
        build = FORMATS[fmt]
    except KeyError:
        raise MemoryStoreError(f"unknown export format {fmt!r}: use {' or '.join(FORMATS)}") from None
    return json.dumps(build(question, answer), ensure_ascii=False)


def write_jsonl(pairs: Iterable[tuple[str, str]], fmt: str, out: Path) -> int:
    """Write (question, answer) pairs to `out` in format `fmt`, atomically; returns the number written."""
    format_line(fmt, "", "")  # an unknown format fails before a file is touched
    out = Path(out)
    if out.is_dir():
        raise MemoryStoreError(f"export: {out} is a folder; give a file name such as {out / 'train.jsonl'}")
    if not out.parent.is_dir():
        raise MemoryStoreError(f"export: folder {out.parent} does not exist")
    count = 0
    try:
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for question, answer in pairs:
                f.write(format_line(fmt, question, answer) + "\n")
                count += 1
    except OSError as exc:
        raise MemoryStoreError(f"export: cannot write {out}: {exc.strerror or exc}") from exc
    return count
