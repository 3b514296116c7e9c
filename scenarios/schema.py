"""The scenario script schema: what a YAML scenario may say, with defaults and limits.

    name: vellmar                 # required
    knowledge: {files: [knowledge/vellmar.md]}
    objectives: [the capital and founding of Vellmar, ...]   # required, at least one
    teacher: {model: local/smollm2-135m, max_tokens: 120}
    student: {model: local/smollm2-135m, adapter: latest}
    judge: {threshold: 0.6}
    # any seat on an OpenAI-compatible server: its URL, the variable holding its key, and its limits
    # teacher: {model: openai/qwen2.5-7b, api_base: http://gpu-box:8000/v1, api_key_env: VLLM_API_KEY,
    #           timeout: 60, retries: 1}
    # or several seats: a teacher panel and a classroom (each list excludes its single form)
    teachers: [{name: ada}, {name: bo, model: openai/gpt-4o-mini}]
    panel: {select: best}         # or consensus: the accepted answer the others agree with most
    students: [{name: ana}, {name: ben, model: openai/gpt-4o-mini, learning: retrieval}]
    turns: 4
    quiz: [{question: ..., answer: ..., keywords: ['\\bKorrin\\b']}]

Every model forbids unknown fields and is strict about types (`turns: "4"` is an error, not 4).
`teachback.scenarios.loader` turns validation errors into `file:line: field: message` problems.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from teachback.agents.endpoints import MAX_RETRIES, MAX_TIMEOUT, api_base_problem, is_local, key_env_problem
from teachback.agents.models import DEFAULT_JUDGE, DEFAULT_STUDENT, DEFAULT_TEACHER, check_model_string

DEFAULT_MODEL = DEFAULT_TEACHER  # teachers (the judge has its own default, DEFAULT_JUDGE)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be empty")
    return value


def _compiles(pattern: str) -> str:
    if not pattern:
        raise PydanticCustomError("regex", "an empty keyword matches everything; give a word or regex")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise PydanticCustomError(
            "regex",
            "not a valid regular expression ({error}): '{pattern}'",
            {"error": str(exc), "pattern": pattern},
        ) from None
    return pattern


def _first_repeat(values: list[str]) -> tuple[int, int] | None:
    """(index, index of its first occurrence) of the first value seen before, ignoring case and spacing."""
    first: dict[str, int] = {}
    for i, value in enumerate(values):
        key = " ".join(value.split()).casefold()
        if key in first:
            return i, first[key]
        first[key] = i
    return None


SEAT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
RESERVED_NAMES = ("judge", "director")


def _seat_name(name: str) -> str:
    if not SEAT_NAME.fullmatch(name):
        raise PydanticCustomError(
            "name",
            "a seat name is 1 to 40 letters, digits, '-', '_' or '.', starting with a letter or digit; "
            "got '{name}'",
            {"name": name},
        )
    if name.lower() in RESERVED_NAMES:
        raise PydanticCustomError("name", "'{name}' is reserved; choose another name", {"name": name})
    return name


# A quiz question or reference answer is a sentence or a paragraph; one this long would only overflow the
# student's and the judge's context window, minutes into a quiz (a 5 MB question once did).
MAX_QUIZ_TEXT = 4000  # characters


def _quiz_length(value: str) -> str:
    if len(value) > MAX_QUIZ_TEXT:
        raise PydanticCustomError(
            "too_long_text",
            "{length} characters long; a quiz question or answer may be at most {limit} (MAX_QUIZ_TEXT): "
            "shorten it",
            {"length": len(value), "limit": MAX_QUIZ_TEXT},
        )
    return value


Text = Annotated[str, AfterValidator(_not_blank)]
QuizText = Annotated[str, AfterValidator(_not_blank), AfterValidator(_quiz_length)]
Regex = Annotated[str, AfterValidator(_compiles)]
SeatName = Annotated[str, AfterValidator(_seat_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Knowledge(_Strict):
    """What the teacher and the judge are grounded in: inline text, files, or both."""

    text: str = Field(default="", description="reference text, inline")
    files: list[Text] = Field(
        default_factory=list, description="reference text files, relative to the scenario file"
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Knowledge:
        if not self.text.strip() and not self.files:
            raise PydanticCustomError("knowledge", "needs `text` or `files` (at least one non-empty)")
        return self


class Role(_Strict):
    """One seat at the table: the model it speaks through and how it speaks (defaults: the teacher's)."""

    model: str = Field(
        default=DEFAULT_MODEL, description="model string: local/smollm2-135m, local:/path.gguf, openai/..."
    )
    temperature: float = Field(default=0.2, ge=0.0, le=2.0, description="sampling temperature, 0 to 2")
    max_tokens: int = Field(default=160, ge=1, le=4096, description="longest reply in tokens, 1 to 4096")
    system_prompt: str | None = Field(default=None, description="replaces the built-in system prompt")
    persona: str | None = Field(default=None, description="a line of character added to the system prompt")
    name: SeatName | None = Field(
        default=None,
        description="the seat's name in a panel or classroom (default teacher-1, student-1, ...)",
    )
    api_base: str | None = Field(
        default=None,
        description="the base URL of the OpenAI-compatible server that serves the model "
        "(http://host:port/v1: vLLM, LM Studio, Ollama, llama-server); default: litellm's for the provider",
    )
    api_key_env: str | None = Field(
        default=None,
        description="the NAME of the environment variable that holds the key (never the key itself)",
    )
    timeout: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT, description="seconds each attempt may take (default 120)"
    )
    retries: int | None = Field(
        default=None, ge=0, le=MAX_RETRIES, description="attempts after a failed one, 0 to 10 (default 2)"
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        problem = check_model_string(value)
        if problem:
            raise PydanticCustomError("model", "{problem}", {"problem": problem})
        return value.strip()

    @field_validator("api_base")
    @classmethod
    def _well_formed_url(cls, value: str | None) -> str | None:
        problem = api_base_problem(value) if value is not None else None
        if problem:
            raise PydanticCustomError("api_base", "{problem}", {"problem": problem})
        return value

    @field_validator("api_key_env")
    @classmethod
    def _a_variable_name(cls, value: str | None) -> str | None:
        problem = key_env_problem(value) if value is not None else None
        if problem:
            raise PydanticCustomError("api_key_env", "{problem}", {"problem": problem})
        return value

    @model_validator(mode="after")
    def _endpoint_fits_model(self) -> Role:
        for name in ("api_base", "api_key_env"):
            if getattr(self, name) is not None and is_local(self.model):
                raise PydanticCustomError(
                    name,
                    "{name} is for a model served elsewhere; {model} runs on teachback's own llama.cpp "
                    "server. Remove {name}, or name the served model (openai/<name> with api_base)",
                    {"at": [name], "name": name, "model": self.model},
                )
        return self


class TeacherRole(Role):
    """A teacher: any model; a local one may wear a LoRA adapter (a specialist from an earlier run)."""

    adapter: Text | None = Field(
        default=None, description="a GGUF LoRA adapter for a local teacher, relative to the scenario file"
    )

    @model_validator(mode="after")
    def _adapter_needs_local(self) -> TeacherRole:
        if self.adapter is not None and not is_local(self.model):
            raise PydanticCustomError(
                "adapter", "an adapter needs a local model (local/... or local:...)", {"at": ["adapter"]}
            )
        return self


class StudentRole(Role):
    """A student: a small local model, optionally wearing a LoRA adapter from earlier runs.

    `learning` is how it keeps what it is taught: `finetune` (a local GGUF, run in-process; its turns
    train adapters) or `retrieval` (any model, a local one served like a teacher: before each reply it is
    shown the accepted turns most relevant to the question, from its memory namespace). Default: finetune
    for a local model, retrieval for any other.
    """

    model: str = Field(
        default=DEFAULT_STUDENT, description="model string: local/smollm2-135m, local:/path.gguf, openai/..."
    )
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="sampling temperature, 0 to 2")
    max_tokens: int = Field(default=64, ge=1, le=4096, description="longest reply in tokens, 1 to 4096")
    adapter: Text | None = Field(
        default=None, description='a GGUF LoRA adapter, relative to the scenario file, or "latest"'
    )
    learning: Literal["finetune", "retrieval"] | None = Field(
        default=None, description="finetune (local models) or retrieval; default: by the model"
    )
    memory_namespace: Text | None = Field(
        default=None, description="this student's memory namespace (default: <scenario namespace>-<name>)"
    )

    @model_validator(mode="after")
    def _learning_fits_model(self) -> StudentRole:
        if self.learning == "finetune" and not is_local(self.model):
            raise PydanticCustomError(
                "learning",
                "finetune needs a local GGUF student (local/... or local:...); a hosted model learns by "
                "retrieval",
                {"at": ["learning"]},
            )
        if self.adapter is not None and not is_local(self.model):
            raise PydanticCustomError(
                "adapter", "an adapter needs a local model (local/... or local:...)", {"at": ["adapter"]}
            )
        return self

    @property
    def learns_by(self) -> str:
        """`finetune` or `retrieval`: as set, else by where the model lives."""
        return self.learning or ("finetune" if is_local(self.model) else "retrieval")


class JudgeRole(Role):
    """The judge: scores each answer against the knowledge; accepts at or above `threshold`."""

    model: str = Field(
        default=DEFAULT_JUDGE, description="model string: local/qwen2.5-1.5b, local:/path.gguf, openai/..."
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="sampling temperature, 0 to 2")
    max_tokens: int = Field(default=96, ge=1, le=4096, description="longest reply in tokens, 1 to 4096")
    threshold: float = Field(default=0.6, ge=0.0, le=1.0, description="acceptance threshold, 0 to 1")


class Panel(_Strict):
    """How a teacher panel's candidate answers become the accepted one."""

    select: Literal["best", "consensus"] = Field(
        default="best",
        description="best: the highest-scoring accepted answer; consensus: the accepted answer that "
        "shares the most words with the other accepted answers",
    )


class QuizItem(_Strict):
    """A held-out question, asked of the student before and after; scored by its keywords."""

    question: QuizText = Field(description="the question put to the student")
    answer: QuizText = Field(description="the reference answer")
    keywords: list[Regex] = Field(
        default_factory=list, description="regexes a correct answer matches (case-insensitive)"
    )


class MemorySettings(_Strict):
    """Where accepted turns are stored: a local chromadb folder, or a shared `chroma run` server."""

    enabled: bool = Field(default=True, description="store accepted turns in the vector memory")
    url: str | None = Field(default=None, description="a chroma server, http://host:port (shared memory)")
    dir: str | None = Field(default=None, description="a local memory folder (default .teachback/memory)")
    namespace: str | None = Field(
        default=None, description="the collection to store in (default: scenario name)"
    )
    duplicate_threshold: float = Field(
        default=0.95,
        ge=0.0,
        le=1.0,
        description="cosine similarity above which a turn is a duplicate, 0 to 1",
    )


class Scenario(_Strict):
    """A scenario script: who talks, about what, for how long, and how learning is checked."""

    name: Text = Field(description="a short name for the scenario")
    description: str = Field(default="", description="what the scenario is for")
    knowledge: Knowledge | None = Field(
        default=None, description="reference text that grounds the teacher and judge"
    )
    objectives: list[Text] = Field(min_length=1, description="what the student should learn, one per item")
    teacher: TeacherRole = Field(default_factory=TeacherRole, description="the teacher's model and settings")
    student: StudentRole = Field(default_factory=StudentRole, description="the student's model and settings")
    teachers: list[TeacherRole] | None = Field(
        default=None,
        min_length=1,
        description="a teacher panel: every question goes to each (not with teacher)",
    )
    students: list[StudentRole] | None = Field(
        default=None,
        min_length=1,
        description="a classroom: the students take turns asking (not with student)",
    )
    panel: Panel = Field(default_factory=Panel, description="how a teacher panel's answer is chosen")
    judge: JudgeRole = Field(default_factory=JudgeRole, description="the judge's model and settings")
    turns: int = Field(default=4, ge=1, description="the budget: number of dialogue turns, at least 1")
    answer_retries: int = Field(
        default=1, ge=0, le=5, description="times a rejected answer is asked again, 0 to 5"
    )
    question_retries: int = Field(
        default=2, ge=0, le=5, description="times an off-topic question is asked again, 0 to 5"
    )
    teachback: bool = Field(
        default=True, description="the student restates what it learned after each accepted answer"
    )
    facts: list[Text] | None = Field(
        default=None,
        description="the atomic facts to teach, one per item (default: the knowledge's sentences)",
    )
    phrasings: int = Field(
        default=3,
        ge=1,
        le=10,
        description="accepted turns each fact is taught in, each worded differently, 1 to 10",
    )
    seed: int = Field(default=0, description="random seed for sampling")
    quiz: list[QuizItem] = Field(
        default_factory=list, description="held-out questions with reference answers"
    )
    memory: MemorySettings = Field(
        default_factory=MemorySettings, description="where accepted turns are stored"
    )

    # A repeat is reported at its own index: the loader appends ctx["at"] to the error's location.
    @field_validator("objectives")
    @classmethod
    def _distinct_objectives(cls, value: list[str]) -> list[str]:
        repeat = _first_repeat(value)
        if repeat:
            raise PydanticCustomError(
                "duplicate", "duplicate of objectives[{first}]", {"at": [repeat[0]], "first": repeat[1]}
            )
        return value

    @field_validator("teachers", "students")
    @classmethod
    def _distinct_names(cls, value: list[Role] | None, info: ValidationInfo) -> list[Role] | None:
        if value is None:
            return value
        role = info.field_name.rstrip("s")  # type: ignore[union-attr]
        repeat = _first_repeat([seat.name or f"{role}-{i + 1}" for i, seat in enumerate(value)])
        if repeat:
            raise PydanticCustomError(
                "duplicate",
                "the same name as {field}[{first}]; every seat needs its own name",
                {"at": [repeat[0], "name"], "first": repeat[1], "field": info.field_name},
            )
        return value

    @model_validator(mode="after")
    def _one_form_per_seat(self) -> Scenario:
        for single, several in (("teacher", "teachers"), ("student", "students")):
            if single in self.model_fields_set and getattr(self, several) is not None:
                raise PydanticCustomError(
                    "exclusive",
                    "give either `{single}:` (one) or `{several}:` (a list), not both",
                    {"at": [several], "single": single, "several": several},
                )
        return self

    @field_validator("quiz")
    @classmethod
    def _distinct_questions(cls, value: list[QuizItem]) -> list[QuizItem]:
        repeat = _first_repeat([item.question for item in value])
        if repeat:
            raise PydanticCustomError(
                "duplicate",
                "the same question as quiz[{first}]",
                {"at": [repeat[0], "question"], "first": repeat[1]},
            )
        return value
