"""The quiz: held-out questions put to the student with no reference in sight, each answer scored twice.

    items = load_quiz("quiz.yaml")            # a list of {question, answer, keywords?}, or a scenario's quiz:
    result = quiz_student(items, "local/smollm2-135m", adapter=None, judge_model="local/smollm2-135m")
    result.totals()  ->  {"n": 12, "correct": 3, "score": 0.25, "keyword_items": 12, ...}

Each answer is scored by its keywords (regular expressions that must all match as whole words, any case)
when the item has them, and by the judge against the reference answer (`Rubric.reference_answer`: the
grounded checks plus the judge model's verdict). An item is `correct` when its keywords pass; an item
without keywords is correct when the judge accepts it. Generation is greedy (temperature 0) with a fixed
seed, so two runs agree.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teachback.errors import QuizError, ScenarioError
from teachback.files import atomic_write_text

if TYPE_CHECKING:
    from autogen_core.models import ChatCompletionClient

    from teachback.scenarios.schema import QuizItem
    from teachback.transcripts.events import RunStarted

FORMAT_VERSION = 1
STUDENT_MAX_TOKENS = 64
DEFAULT_THRESHOLD = 0.6


@dataclass
class QuizItemResult:
    """One question, the student's answer, and both scores."""

    question: str
    reference: str
    answer: str
    keyword_pass: bool | None  # None: the item has no keywords
    judge_score: float
    judge_reason: str
    judge_accepted: bool
    components: dict[str, float] = field(default_factory=dict)  # the judge's signals (llm, recall)
    facts: list[int] = field(default_factory=list)  # the run's curriculum facts the question asks about

    @property
    def correct(self) -> bool:
        """The keywords decide when the item has them (the author's exact check); otherwise the judge."""
        return self.keyword_pass if self.keyword_pass is not None else self.judge_accepted

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "correct": self.correct}


@dataclass
class QuizResult:
    """A whole quiz: the items in order, who answered, and how long it took."""

    items: list[QuizItemResult]
    label: str = ""
    student: str = ""
    adapter: str | None = None
    seconds: float = 0.0

    def totals(self) -> dict[str, Any]:
        n = len(self.items)
        keyed = [i for i in self.items if i.keyword_pass is not None]
        correct = sum(i.correct for i in self.items)
        return {
            "n": n,
            "correct": correct,
            "score": round(correct / n, 4) if n else 0.0,
            "keyword_items": len(keyed),
            "keyword_pass": sum(bool(i.keyword_pass) for i in keyed),
            "judge_accepted": sum(i.judge_accepted for i in self.items),
            "judge_mean": round(sum(i.judge_score for i in self.items) / n, 4) if n else 0.0,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "label": self.label,
            "student": self.student,
            "adapter": self.adapter,
            "seconds": round(self.seconds, 3),
            "items": [i.to_json() for i in self.items],
            "totals": self.totals(),
        }

    def mark_facts(self, facts: Sequence[str]) -> QuizResult:
        """Name for each question the curriculum fact it asks about (the fact that shares most with the
        question and its reference answer), so reports can show the quiz per fact."""
        if facts:
            from teachback.agents.claims import KnowledgeIndex

            index = KnowledgeIndex("\n\n".join(facts))
            for item in self.items:
                found = index.facts_for(f"{item.question} {item.reference}", 1)
                item.facts = [found[0].index] if found else []
        return self

    def save(self, path: Path) -> None:
        """Write the JSON atomically (teachback/files.py)."""
        atomic_write_text(path, json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> QuizResult:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            items = [
                QuizItemResult(**{k: v for k, v in item.items() if k != "correct"}) for item in data["items"]
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise QuizError(f"{path}: not a quiz result ({exc})") from None
        return cls(
            items,
            label=data.get("label", ""),
            student=data.get("student", ""),
            adapter=data.get("adapter"),
            seconds=data.get("seconds", 0.0),
        )


# --- quiz files ----------------------------------------------------------------------------------------


def load_quiz(path: str | Path) -> list[QuizItem]:
    """The items of a quiz file (a YAML or JSON list), of a scenario file's `quiz:`, or of a bundled scenario.

    Every problem is reported as `file:line: field: message` in one ScenarioError, as the loader does.
    """
    from teachback.scenarios.loader import find_scenario, load_scenario, map_lines, read_yaml

    shown = str(path)
    file = Path(path).expanduser()
    if not file.exists():
        try:
            file = find_scenario(shown)
        except ScenarioError:
            raise ScenarioError([f"{shown}: no such quiz file or bundled scenario"]) from None
    _raw, root, data = read_yaml(shown, file, "quiz file", "YAML or JSON")
    if isinstance(data, dict) and set(data) - {"quiz"}:
        items = list(load_scenario(file).scenario.quiz)  # a scenario: validated whole, as `validate` does
        if not items:
            raise ScenarioError([f"{shown}:1: quiz: the scenario has no quiz: section"])
        return items
    prefix: tuple[str, ...] = ("quiz",) if isinstance(data, dict) else ()
    lines, problems = map_lines(root) if root is not None else ({}, [])
    items_data = data.get("quiz") if isinstance(data, dict) else data
    if not isinstance(items_data, list) or not items_data:
        line = lines.get(prefix, 1)
        got = "an empty list" if items_data == [] else f"{type(items_data).__name__}"
        expected = "a list of items {question, answer, keywords?}"
        raise ScenarioError(
            [f"{shown}:{line}: {'.'.join(prefix) or '(top level)'}: expected {expected}, got {got}"]
        )
    validated = _validate_items(items_data, prefix, lines, problems)
    if problems or validated is None:
        problems.sort(key=lambda p: p[0])
        raise ScenarioError([f"{shown}:{line}: {what}" for line, what in problems])
    return validated


def scenario_quiz(header: RunStarted) -> list[QuizItem]:
    """The quiz of the scenario a run came from; empty when it has none, or moved or no longer loads."""
    if not header.scenario_path:
        return []
    try:
        return list(load_quiz(Path(header.scenario_path)))
    except ScenarioError:
        return []


def _validate_items(
    data: list[Any], prefix: tuple[str, ...], lines: dict[Any, int], problems: list[tuple[int, str]]
) -> list[QuizItem] | None:
    """The schema's validation of a scenario's `quiz:` list, with its messages and line numbers."""
    from pydantic import ValidationError

    from teachback.scenarios.loader import record_errors
    from teachback.scenarios.schema import QuizItem, Scenario

    try:
        Scenario.model_validate({"name": "quiz", "objectives": ["quiz"], "quiz": data})
    except ValidationError as exc:
        # ("quiz", 2, "keywords") -> the file's own path to it
        record_errors(exc, lines, problems, place=lambda loc: prefix + loc[1:])
        return None
    return [QuizItem.model_validate(item) for item in data]


def keyword_pass(answer: str, keywords: Sequence[str]) -> bool | None:
    """Whether every keyword regex matches the answer as a whole word, ignoring case; None without keywords.

    >>> keyword_pass("Korrin is the capital.", [r"korrin"]), keyword_pass("Korrinville", [r"Korrin"])
    (True, False)
    >>> keyword_pass("On the ninth of October", [r"(9|ninth)", r"October"]), keyword_pass("x", [])
    (True, None)
    """
    if not keywords:
        return None
    return all(re.search(rf"(?<!\w)(?:{k})(?!\w)", answer, re.IGNORECASE) for k in keywords)


# --- asking and scoring --------------------------------------------------------------------------------


async def run_quiz(
    items: Sequence[QuizItem],
    student: ChatCompletionClient,
    judge: ChatCompletionClient,
    *,
    label: str = "",
    context: Callable[[str], str] | None = None,
    on_item: Callable[[QuizItemResult], None] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> QuizResult:
    """Ask each question (with `context(question)` as notes when given, else nothing), then score it."""
    from autogen_core.models import SystemMessage, UserMessage

    from teachback.agents import prompts
    from teachback.agents.grounding import Knowledge
    from teachback.agents.judge import Rubric, ask_verdict

    started = time.monotonic()
    results: list[QuizItemResult] = []
    system = SystemMessage(content=prompts.render("quiz_system"))
    for item in items:
        notes = context(item.question) if context is not None else ""
        prompt = prompts.render("quiz_question", question=item.question, context=notes)
        reply = await student.create([system, UserMessage(content=prompt, source="quiz")])
        answer = (reply.content if isinstance(reply.content, str) else "").strip()
        rubric = Rubric(Knowledge(item.answer), threshold)
        verdict, _ = await ask_verdict(judge, item.question, answer, rubric.notes_for(item.question))
        judged = rubric.reference_answer(item.question, answer, verdict)
        result = QuizItemResult(
            question=item.question,
            reference=item.answer,
            answer=answer,
            keyword_pass=keyword_pass(answer, item.keywords),
            judge_score=judged.score,
            judge_reason=judged.reason,
            judge_accepted=judged.accepted,
            components=dict(judged.components),
        )
        results.append(result)
        if on_item is not None:
            on_item(result)
    student_name = getattr(student, "model", "") or ""
    return QuizResult(results, label=label, student=str(student_name), seconds=time.monotonic() - started)


def quiz_student(
    items: Sequence[QuizItem],
    student_model: str,
    *,
    adapter: Path | None,
    judge_model: str,
    label: str = "",
    context: Callable[[str], str] | None = None,
    seed: int = 0,
    on_item: Callable[[QuizItemResult], None] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    endpoints: dict[str, dict[str, Any]] | None = None,
) -> QuizResult:
    """Open the student (greedy, fixed seed, optional LoRA) and the judge as a run does, quiz, close all.

    `endpoints` (role -> api_base, api_key_env, timeout, retries) says where a student or judge served
    elsewhere is called. The judge's servers stop and the student is freed even on an error or Ctrl-C.
    """
    from teachback.agents.cast import make_client
    from teachback.agents.litellm_client import import_litellm
    from teachback.agents.llama_server import ServerPool
    from teachback.agents.models import check_litellm_model, resolve
    from teachback.scenarios.schema import JudgeRole, StudentRole

    student_ref, judge_ref = resolve(student_model), resolve(judge_model)
    for ref in (student_ref, judge_ref):
        if not ref.is_local:
            check_litellm_model(ref.spec)
    if adapter is not None and not Path(adapter).is_file():
        raise QuizError(f"--adapter: no such adapter file: {adapter}")
    if adapter is not None and not student_ref.is_local:
        raise QuizError(f"--adapter: the student {student_ref.spec} is not a local model; adapters need one")
    litellm_import = threading.Thread(target=import_litellm, name="import-litellm", daemon=True)
    litellm_import.start()  # ~5 s, overlapped with starting the judge's server
    endpoints = endpoints or {}
    student_settings = StudentRole(model=student_model, temperature=0.0, max_tokens=STUDENT_MAX_TOKENS)
    student_settings = student_settings.model_copy(update=endpoints.get("student", {}))
    judge_settings = JudgeRole(model=judge_model).model_copy(update=endpoints.get("judge", {}))
    with ServerPool() as pool:
        judge = make_client("judge", judge_ref, judge_settings, pool=pool, seed=seed)
        student = make_client("student", student_ref, student_settings, pool=pool, seed=seed, adapter=adapter)
        litellm_import.join()

        async def quiz() -> QuizResult:
            try:
                return await run_quiz(
                    items, student, judge, label=label, context=context, on_item=on_item, threshold=threshold
                )
            finally:
                await student.close()
                await judge.close()

        result = asyncio.run(quiz())
    result.student = student_model
    result.adapter = str(adapter) if adapter is not None else None
    return result
