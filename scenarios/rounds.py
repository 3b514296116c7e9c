"""Learning rounds: dialogue, then each student learns, then the quiz; repeated on what was learned.

    teachback run invented-domain --rounds 3

Round r is an ordinary run (its own folder and transcript), sampled with the run's seed + r - 1, that
goes on with the curriculum where the earlier rounds left it (its header's `taught_before`: the director
steers to the facts not yet taught, then to the next phrasing of those taught), so that each round teaches
anew instead of replaying round 1 into the memory's duplicates. A student that
learns by fine-tuning starts it wearing the adapter of round r-1 and, after it, is fine-tuned on the
accepted turns of rounds 1..r (a fresh adapter on the base each time, so no round compounds another's
drift); in a classroom each student
gets its own adapter from its own namespace. A student that learns by retrieval is quizzed with the notes
its memory now holds. Each round's folder gets `quiz-before.json`, `finetune.json` and `quiz-after.json`
(`-<student>` before `.json` in a classroom); the summary shows the quiz after every round.

A single run (no rounds) quizzes each student once, after the dialogue, as it entered the run: a local
student does not change during a dialogue (it changes when fine-tuned); a retrieval student is also
quizzed with its memory's notes, which is what the dialogue changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teachback.errors import TeachbackError
from teachback.transcripts.run_folder import RunFolder, seat_label

if TYPE_CHECKING:
    from autogen_core.models import ChatCompletionClient
    from rich.console import Console

    from teachback.memory.finetune import TrainConfig
    from teachback.memory.store import MemoryStore
    from teachback.scenarios.quiz import QuizResult
    from teachback.scenarios.run import RunRequest
    from teachback.scenarios.schema import QuizItem
    from teachback.scenarios.seats import RecordedStudent
    from teachback.transcripts.events import RunStarted


@dataclasses.dataclass
class RoundOutcome:
    round: int
    run_dir: Path
    accepted: int
    turns: int
    adapter: Path | None  # the adapter this round trained (None: the student learns by retrieval)
    seat: str = "student"
    quiz_before: QuizResult | None = None
    quiz_after: QuizResult | None = None


def _open_run_memory(header: RunStarted, request: RunRequest) -> tuple[MemoryStore | None, str]:
    """The memory the run stored into (for retrieval students' notes), as the run opened it."""
    from teachback.scenarios.loader import load_scenario
    from teachback.scenarios.run import open_memory

    loaded = load_scenario(Path(header.scenario_path))
    return open_memory(request, loaded.scenario, loaded.path.parent)


def quiz_run(
    run_dir: Path, console: Console, request: RunRequest | None = None, label: str = "before"
) -> dict[str, QuizResult]:
    """Quiz each student of a finished run; writes `quiz-<label>[-<seat>].json` there.

    A fine-tuned student is quizzed as it entered the run (the dialogue does not change it). A student
    that learns by retrieval is quizzed twice: without notes ("before") and with the turns of its memory
    most relevant to each question ("after"), as it would see them in its next dialogue.
    """
    from teachback.scenarios.quiz import scenario_quiz
    from teachback.scenarios.run import read_run
    from teachback.scenarios.seats import recorded_students

    header, _ = read_run(run_dir)
    items = scenario_quiz(header)
    if not items:
        return {}
    results: dict[str, QuizResult] = {}
    store = None
    for student in recorded_students(header):
        adapter = Path(student.adapter) if student.adapter else None
        results[student.name + "/" + label] = _quiz_seat(
            console, items, header, student, adapter, label, run_dir, None
        )
        if student.learning == "retrieval" and request is not None and not request.no_memory:
            from teachback.memory.retrieval import retrieval_context

            if store is None:
                store, _ns = _open_run_memory(header, request)
            if store is not None:
                notes = retrieval_context(store, student.namespace)
                results[student.name + "/after"] = _quiz_seat(
                    console, items, header, student, adapter, "after", run_dir, notes
                )
    return results


def _quiz_seat(
    console: Console,
    items: list[QuizItem],
    header: RunStarted,
    student: RecordedStudent,
    adapter: Path | None,
    label: str,
    run_dir: Path,
    context: Callable[[str], str] | None,
) -> QuizResult:
    """Quiz one student `before` or `after`; a classroom's student names the quiz and its file."""
    from teachback.scenarios.quiz import quiz_student

    how = "with notes from its memory" if context else "no notes"
    named = seat_label(label, student.file_seat)
    with console.status(f"quiz ({named}): {len(items)} questions to {student.name}, {how}..."):
        result = quiz_student(
            items,
            student.model,
            adapter=adapter,
            judge_model=header.models["judge"],
            label=named,
            seed=header.seed,
            context=context,
            endpoints={"student": student.endpoint, "judge": recorded_endpoint(header, "judge")},
        )
    result.mark_facts(header.facts)
    result.save(RunFolder(run_dir).quiz(label, student.file_seat))
    t = result.totals()
    console.print(
        f"quiz ({named}, {student.name}, {how}): {t['correct']}/{t['n']} correct · "
        f"judge mean {t['judge_mean']:.2f}"
    )
    return result


def recorded_endpoint(header: RunStarted, role: str) -> dict[str, Any]:
    """Where a run called a role's first seat (api_base, api_key_env, timeout, retries): its header's word."""
    from teachback.agents.endpoints import ENDPOINT_FIELDS

    said = (header.options.get("roles") or {}).get(role) or {}
    return {name: said[name] for name in ENDPOINT_FIELDS if said.get(name) is not None}


def run_rounds(
    request: RunRequest,
    rounds: int,
    console: Console,
    *,
    quiz: bool = True,
    config: TrainConfig | None = None,
    clients: Callable[[int], dict[str, ChatCompletionClient]] | None = None,
) -> list[RoundOutcome]:
    """Run `rounds` rounds of dialogue then learning; returns what each round did for each student.

    A student that learns by fine-tuning gets a new adapter each round (one per student in a classroom);
    one that learns by retrieval is quizzed with the notes its memory now holds. `config` is the
    TrainConfig (default: the `teachback finetune` defaults); `clients(round)` replaces the dialogue's
    model clients (tests)."""
    from teachback.memory.finetune import TrainConfig
    from teachback.scenarios.finetune_student import FinetuneRequest, train_from_memory
    from teachback.scenarios.quiz import scenario_quiz
    from teachback.scenarios.run import read_run, run_scenario
    from teachback.scenarios.seats import recorded_students

    if request.resume is not None:
        raise TeachbackError(
            "run: --rounds starts new rounds; resume an interrupted round with --resume alone"
        )
    if request.no_memory:
        raise TeachbackError("run: --rounds fine-tunes on the memory of accepted turns; drop --no-memory")
    outcomes: list[RoundOutcome] = []
    adapter, adapters = request.adapter, dict(request.adapters)
    run_ids: list[str] = []
    before: dict[str, QuizResult | None] = {}  # seat -> its quiz as the last round left it
    store = None
    seed = request.seed  # round r samples with seed + r - 1: a round that replayed the last one's
    for r in range(1, rounds + 1):  # dialogue would only add duplicates to the memory
        console.rule(f"round {r} of {rounds}")
        out = RunFolder(request.out).round(r).path if request.out else None
        run_dir = run_scenario(
            dataclasses.replace(
                request,
                adapter=adapter,
                adapters=dict(adapters),
                out=out,
                seed=None if seed is None else seed + r - 1,
                taught_before=taught_in(outcomes),
            ),
            console,
            clients=clients(r) if clients else None,
        )
        header, finished = read_run(run_dir)
        if seed is None:
            seed = header.seed - r + 1  # the scenario's own seed, as round 1 resolved it
        run_ids.append(header.run_id)
        students = recorded_students(header)
        items = scenario_quiz(header) if quiz else []
        for student in students:
            known = before.get(student.name)
            if known is not None:  # the student entered this round as the last one left it
                known.save(RunFolder(run_dir).quiz("before", student.file_seat))
            outcome = RoundOutcome(
                round=r,
                run_dir=run_dir,
                accepted=finished.accepted if finished else 0,
                turns=finished.turns if finished else 0,
                adapter=None,
                seat=student.name,
            )
            if student.learning == "finetune":
                ft = train_from_memory(
                    FinetuneRequest(
                        run_dir=run_dir,
                        seat=student.name,
                        runs=list(run_ids),
                        memory_dir=request.memory_dir,
                        memory_url=request.memory_url,
                        quiz=quiz,
                        known_before=known,
                        config=config or TrainConfig(seed=header.seed),
                    ),
                    console,
                )
                outcome.adapter, outcome.quiz_before, outcome.quiz_after = (
                    ft.adapter,
                    ft.quiz_before,
                    ft.quiz_after,
                )
                if len(students) == 1:
                    adapter = ft.adapter
                else:
                    adapters[student.name] = ft.adapter
            elif items:
                from teachback.memory.retrieval import retrieval_context

                if store is None:
                    store, _ns = _open_run_memory(header, request)
                outcome.quiz_before = known or _quiz_seat(
                    console, items, header, student, None, "before", run_dir, None
                )
                notes = retrieval_context(store, student.namespace) if store is not None else None
                outcome.quiz_after = _quiz_seat(
                    console, items, header, student, None, "after", run_dir, notes
                )
            before[student.name] = outcome.quiz_after
            outcomes.append(outcome)
    ceiling = teacher_ceiling(console, read_run(outcomes[-1].run_dir)[0]) if quiz and outcomes else None
    print_summary(console, outcomes, ceiling)
    return outcomes


def taught_in(outcomes: list[RoundOutcome]) -> dict[int, int]:
    """Per curriculum fact, the accepted turns of these rounds that stated it (their transcripts' word)."""
    from teachback.transcripts.events import TurnAccepted
    from teachback.transcripts.reader import read_transcript

    counts: dict[int, int] = {}
    for run_dir in dict.fromkeys(o.run_dir for o in outcomes):
        for event in read_transcript(RunFolder(run_dir).transcript):
            if isinstance(event, TurnAccepted):
                for fact in event.facts:
                    counts[fact] = counts.get(fact, 0) + 1
    return counts


def teacher_ceiling(console: Console, header: RunStarted) -> QuizResult | None:
    """The scenario's (first) teacher answering the quiz from the notes a dialogue shows it: what a student
    could reach by learning all it was taught. None without a quiz or knowledge."""
    from teachback.agents.grounding import Knowledge
    from teachback.agents.judge import Rubric
    from teachback.scenarios.loader import load_scenario
    from teachback.scenarios.quiz import quiz_student, scenario_quiz
    from teachback.scenarios.run import embedder

    items = scenario_quiz(header)
    loaded = load_scenario(Path(header.scenario_path))
    if not items or not loaded.knowledge_text.strip():
        return None
    rubric = Rubric(Knowledge(loaded.knowledge_text, embed=embedder()), 0.6)
    teacher = header.models.get("teacher", "")
    with console.status(
        f"quiz (ceiling): {len(items)} questions to the teacher {teacher}, with its notes..."
    ):
        return quiz_student(
            items, teacher, adapter=None, judge_model=header.models["judge"], label="ceiling",
            seed=header.seed, context=rubric.notes_for,
        )  # fmt: skip


def print_summary(console: Console, outcomes: list[RoundOutcome], ceiling: QuizResult | None = None) -> None:
    """The rounds as a table, then the learning curve of each student with the teacher's ceiling."""
    from rich.table import Table

    table = Table(title="learning rounds")
    several = len({o.seat for o in outcomes}) > 1
    columns = ["round", "student"] if several else ["round"]
    for column in (*columns, "accepted turns", "quiz before", "quiz after", "learned by", "run folder"):
        table.add_column(column, overflow="fold")

    def score(q: QuizResult | None) -> str:
        if q is None:
            return "–"
        t = q.totals()
        return f"{t['correct']}/{t['n']}"

    for o in outcomes:
        first = [str(o.round), o.seat] if several else [str(o.round)]
        table.add_row(
            *first,
            f"{o.accepted}/{o.turns}",
            score(o.quiz_before),
            score(o.quiz_after),
            o.adapter.name if o.adapter else "retrieval",
            str(o.run_dir),
        )
    console.print(table)
    for seat in dict.fromkeys(o.seat for o in outcomes):
        console.print(
            learning_curve([o for o in outcomes if o.seat == seat], ceiling, seat if several else "")
        )


def learning_curve(
    outcomes: list[RoundOutcome], ceiling: QuizResult | None = None, seat: str = "", width: int = 30
) -> str:
    """A text chart of the quiz over rounds, the ceiling (the grounded teacher's score) drawn in as "┊".

    >>> from types import SimpleNamespace as Q
    >>> quiz = lambda c: Q(totals=lambda: {"correct": c, "n": 10})
    >>> one = RoundOutcome(1, Path("r"), 8, 8, None, quiz_before=quiz(1), quiz_after=quiz(6))
    >>> print(learning_curve([one], quiz(9), width=10))
    learning curve (quiz correct; ┊ the grounded teacher's 9/10)
      before   █░░░░░░░░┊  1/10
      round 1  ██████░░░┊  6/10
    """
    rows: list[tuple[str, QuizResult]] = []
    if outcomes and outcomes[0].quiz_before is not None:
        rows.append(("before", outcomes[0].quiz_before))
    rows += [(f"round {o.round}", o.quiz_after) for o in outcomes if o.quiz_after is not None]
    if not rows:
        return ""
    n = rows[0][1].totals()["n"] or 1
    top = ceiling.totals()["correct"] if ceiling is not None else None
    mark = round(top / n * width) if top is not None else None
    title = f"learning curve{' of ' + seat if seat else ''} (quiz correct"
    title += f"; ┊ the grounded teacher's {top}/{n})" if top is not None else ")"
    lines = [title]
    for label, quiz in rows:
        correct = quiz.totals()["correct"]
        filled = round(correct / n * width)
        bar = ["█" if i < filled else "░" for i in range(width)]
        if mark is not None and 0 <= mark < width:
            bar[mark] = "┊"
        lines.append(f"  {label:<8} {''.join(bar)}  {correct}/{n}")
    return "\n".join(lines)
