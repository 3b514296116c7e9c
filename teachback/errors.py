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

Every message says what is wrong and where, and what to do about it.
"""

from __future__ import annotations


class TeachbackError(Exception):
    """Base of every error the user can fix; the CLI turns it into exit code 2 and no traceback."""

    def lines(self) -> list[str]:
        """The message as printed: one line per problem."""
        return [str(self)]


class ScenarioError(TeachbackError):
    """A scenario file has one or more problems, each `file:line: field: message`."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def lines(self) -> list[str]:
        return self.problems


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
