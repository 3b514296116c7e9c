"""Learning rounds: dialogue, fine-tune, and the quiz, repeated with the student wearing its new adapter.

    teachback run invented-domain --rounds 3

Round r is an ordinary run (its own folder and transcript) with the adapter of round r-1; after it the
student is fine-tuned on the accepted turns of rounds 1..r (a fresh adapter on the base each time, so
no round compounds another's drift) and quizzed. Each round's folder gets `quiz-before.json`,
`finetune.json` and `quiz-after.json`; the summary shows the quiz after every round.

A single run (no rounds) is quizzed once, after the dialogue, as the student entered it: a local student
does not change during a dialogue (it changes when fine-tuned), so "before" needs no second model load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from teachback.errors import TeachbackError


@dataclasses.dataclass
class RoundOutcome:
    round: int
    run_dir: Path
    accepted: int
    turns: int
    adapter: Path | None
    quiz_before: Any = None  # QuizResult
    quiz_after: Any = None


def _header_and_finish(run_dir: Path) -> tuple[Any, Any]:
    from teachback.transcripts.events import RunFinished, RunStarted
    from teachback.transcripts.reader import read_transcript

    events = read_transcript(run_dir / "transcript.jsonl", allow_truncated_tail=True)
    header = events[0]
    assert isinstance(header, RunStarted)
    finished = next((e for e in reversed(events) if isinstance(e, RunFinished)), None)
    return header, finished


def _quiz_items(scenario_path: str) -> list[Any]:
    from teachback.scenarios.quiz import load_quiz

    return list(load_quiz(Path(scenario_path)))


def quiz_run(run_dir: Path, console: Any, label: str = "before") -> Any:
    """Quiz the student of a finished run as it entered the run; writes `quiz-<label>.json` there."""
    from teachback.scenarios.quiz import quiz_student

    header, _ = _header_and_finish(run_dir)
    items = _quiz_items(header.scenario_path)
    if not items:
        return None
    adapter = header.options.get("adapter")
    with console.status(f"quiz: {len(items)} held-out questions to the student..."):
        result = quiz_student(
            items,
            header.models["student"],
            adapter=Path(adapter) if adapter else None,
            judge_model=header.models["judge"],
            label=label,
            seed=header.seed,
        )
    result.save(run_dir / f"quiz-{label}.json")
    t = result.totals()
    console.print(f"quiz ({label}): {t['correct']}/{t['n']} correct · judge mean {t['judge_mean']:.2f}")
    return result


def run_rounds(
    request: Any,
    rounds: int,
    console: Any,
    *,
    quiz: bool = True,
    config: Any = None,
    clients: Callable[[int], dict[str, Any]] | None = None,
) -> list[RoundOutcome]:
    """Run `rounds` rounds of dialogue then fine-tuning; returns what each round did.

    `config` is the TrainConfig (default: the `teachback finetune` defaults); `clients(round)` replaces
    the dialogue's model clients (tests)."""
    from teachback.memory.finetune import TrainConfig
    from teachback.memory.finetune_command import FinetuneRequest, train_from_memory
    from teachback.scenarios.run import run_scenario

    if request.resume is not None:
        raise TeachbackError(
            "run: --rounds starts new rounds; resume an interrupted round with --resume alone"
        )
    if request.no_memory:
        raise TeachbackError("run: --rounds fine-tunes on the memory of accepted turns; drop --no-memory")
    outcomes: list[RoundOutcome] = []
    adapter = request.adapter
    run_ids: list[str] = []
    before = None
    for r in range(1, rounds + 1):
        console.rule(f"round {r} of {rounds}")
        out = request.out / f"round-{r}" if request.out else None
        run_dir = run_scenario(
            dataclasses.replace(request, adapter=adapter, out=out),
            console,
            clients=clients(r) if clients else None,
        )
        header, finished = _header_and_finish(run_dir)
        run_ids.append(header.run_id)
        if before is not None:  # the student entered this round as the last one left it
            before.save(run_dir / "quiz-before.json")
        ft = train_from_memory(
            FinetuneRequest(
                run_dir=run_dir,
                runs=list(run_ids),
                memory_dir=request.memory_dir,
                memory_url=request.memory_url,
                quiz=quiz,
                known_before=before,
                config=config or TrainConfig(learning_rate=2e-3, seed=header.seed),
            ),
            console,
        )
        adapter = ft.adapter
        outcomes.append(
            RoundOutcome(
                round=r,
                run_dir=run_dir,
                accepted=finished.accepted if finished else 0,
                turns=finished.turns if finished else 0,
                adapter=ft.adapter,
                quiz_before=ft.quiz_before,
                quiz_after=ft.quiz_after,
            )
        )
        before = ft.quiz_after
    print_summary(console, outcomes)
    return outcomes


def print_summary(console: Any, outcomes: list[RoundOutcome]) -> None:
    from rich.table import Table

    table = Table(title="learning rounds")
    for column in ("round", "accepted turns", "quiz before", "quiz after", "adapter", "run folder"):
        table.add_column(column, overflow="fold")

    def score(q: Any) -> str:
        if q is None:
            return "–"
        t = q.totals()
        return f"{t['correct']}/{t['n']}"

    for o in outcomes:
        table.add_row(
            str(o.round),
            f"{o.accepted}/{o.turns}",
            score(o.quiz_before),
            score(o.quiz_after),
            o.adapter.name if o.adapter else "–",
            str(o.run_dir),
        )
    console.print(table)
