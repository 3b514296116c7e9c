"""The errors a user can act on.

    TeachbackError                 the CLI prints it on one line (or one line per problem), exit code 2
     ├── ScenarioError             a scenario file is malformed: every problem as `file:line: field: message`
     ├── ModelError                an unknown model string, a missing model file, a model that will not load
     │    └── ModelCallError       a model kept failing after its retries (unreachable server, bad key, ...)
     ├── TranscriptError           a transcript is missing, truncated or corrupt: `file:line: what`
     ├── RunDirError               a run folder cannot be resumed or written
     ├── MemoryStoreError          the vector memory cannot be opened or written
     ├── QuizError                 a quiz cannot run: no adapter to load, a result file that is not one
     └── BatchError                a batch cannot start or resume: bad options, a folder that is not a batch

Every message says what is wrong and where, and what to do about it. No message may carry a secret:
`mask_secrets` hides API keys and bearer tokens in any text that becomes a message, log line or event.
A library's exception goes into a message through `one_line` or `first_line`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable

# Environment variables whose values are secrets: OPENAI_API_KEY, ANTHROPIC_API_KEY, HF_TOKEN, ...
SECRET_SUFFIXES = ("_API_KEY", "_KEY", "_TOKEN", "_SECRET")
MIN_SECRET_LENGTH = 8  # shorter values ("1", "true") are too common to hide without mangling text
MASK = "***"
_REMEMBERED: set[str] = set()  # keys read from variables a scenario names (api_key_env), whatever their names
_BEARER = re.compile(r"\b(Bearer\s+)[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE)


def known_secrets(extra: Iterable[str | None] = ()) -> list[str]:
    """The secret values to hide: `extra` (an explicitly given key), those `remember_secret` was given, and
    those of the environment's *_API_KEY, *_KEY, *_TOKEN and *_SECRET variables, at least MIN_SECRET_LENGTH
    characters; longest first, so a key that contains another is hidden whole."""
    found = {value for value in (*extra, *_REMEMBERED) if value and len(value) >= MIN_SECRET_LENGTH}
    for name, value in os.environ.items():
        if name.upper().endswith(SECRET_SUFFIXES) and len(value.strip()) >= MIN_SECRET_LENGTH:
            found.add(value.strip())
    return sorted(found, key=len, reverse=True)


def remember_secret(value: str) -> None:
    """Mask `value` from now on, in this process: a key read from a variable whose name does not end like
    a secret's (a scenario's `api_key_env: TEAM_CREDENTIAL`)."""
    if value.strip():
        _REMEMBERED.add(value.strip())


def mask_secrets(text: str, extra: Iterable[str | None] = ()) -> str:
    """`text` with every known secret value (see `known_secrets`) and every bearer token replaced by ***.

    >>> mask_secrets("401: Incorrect API key provided: sk-example-1234567890", ["sk-example-1234567890"])
    '401: Incorrect API key provided: ***'
    >>> mask_secrets("Authorization: Bearer abc.def-123")
    'Authorization: Bearer ***'
    """
    for secret in known_secrets(extra):
        if secret in text:
            text = text.replace(secret, MASK)
        escaped = json.dumps(secret, ensure_ascii=False)[1:-1]  # as it appears inside a JSON string
        if escaped != secret and escaped in text:
            text = text.replace(escaped, MASK)
    return _BEARER.sub(lambda m: m.group(1) + MASK, text)


class StreamMask:
    """`mask_secrets` for text that arrives in pieces (a streamed reply): what could be the start of a
    secret is held back until the next piece says whether it is one.

    >>> mask = StreamMask(["sk-example-1234567890"])
    >>> [mask.feed("your key is sk-exa"), mask.feed("mple-1234567890, ok"), mask.flush()]
    ['your key is ', '***, ok', '']
    """

    def __init__(self, extra: Iterable[str | None] = ()):
        self._secrets = known_secrets(extra)
        self._held = ""

    def feed(self, piece: str) -> str:
        """The masked text that can be shown now."""
        text = mask_secrets(self._held + piece, self._secrets)
        hold = max((_overlap(text, s) for s in self._secrets), default=0)
        self._held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """What is still held back, masked: the end of the stream."""
        text, self._held = self._held, ""
        return mask_secrets(text, self._secrets)


def _overlap(text: str, secret: str) -> int:
    """The length of the longest end of `text` that begins `secret` (and is not all of it)."""
    for k in range(min(len(secret) - 1, len(text)), 0, -1):
        if text.endswith(secret[:k]):
            return k
    return 0


def one_line(exc: BaseException) -> str:
    """An exception's message with its whitespace collapsed into one line, or its type's name if it has none.

    >>> one_line(OSError("no route\\n  to host"))
    'no route to host'
    >>> one_line(TimeoutError())
    'TimeoutError'
    """
    return " ".join(str(exc).split()) or type(exc).__name__


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (a long library error), or its type's name.

    >>> first_line(ValueError("no such collection\\nTraceback (most recent call last): ..."))
    'no such collection'
    """
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class TeachbackError(Exception):
    """Base of every error the user can fix; the CLI turns it into exit code 2 and no traceback."""

    def lines(self) -> list[str]:
        """The message as printed: one line per problem, secrets masked."""
        return [mask_secrets(str(self))]


class ScenarioError(TeachbackError):
    """A scenario file has one or more problems, each `file:line: field: message`."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def lines(self) -> list[str]:
        return [mask_secrets(problem) for problem in self.problems]


class ModelError(TeachbackError):
    """A model string names nothing we can load or reach."""


class ModelCallError(ModelError):
    """A model call failed after its retries; the run ends cleanly with the transcript intact."""


class TranscriptError(TeachbackError):
    """A transcript file cannot be read: missing, truncated or corrupt."""


class RunDirError(TeachbackError):
    """A run folder cannot be created, written or resumed."""


class MemoryStoreError(TeachbackError):
    """The vector memory cannot be opened, read or written."""


class FinetuneError(TeachbackError):
    """Fine-tuning cannot start or finish: no examples, an untrainable model, not enough memory, ..."""


class QuizError(TeachbackError):
    """A quiz cannot run or its result cannot be read (a bad quiz file is a ScenarioError, with lines)."""


class BatchError(TeachbackError):
    """A batch cannot start or resume: bad executor options, a folder that is not a batch, no Ray, ..."""
