"""Fine-tune a run's student on the memory's accepted turns, quizzed before and after, and record it.

    train_from_memory(FinetuneRequest(run_dir=Path("transcripts/runs/<run>")), console)  ->  FinetuneOutcome

The turns are the namespace's accepted, non-duplicate ones (of the run's own run ids, objectives and
minimum judge score when asked); the student, its seat, the scenario's quiz and the judge come from the
run's header. The adapter goes to `out`, or into the registry (memory/adapters.py); the training itself is
memory/finetune.py. With a run folder, the training record (`finetune.json`: loss curves, speed, memory)
and the quiz before and after go into that folder (`RunFolder`). `teachback finetune`
(finetune_command.py) and learning rounds (rounds.py) both train through here.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teachback.agents.models import resolve
from teachback.errors import FinetuneError
from teachback.files import atomic_write_text
from teachback.memory.adapters import ADAPTERS_DIR
from teachback.memory.finetune import TrainConfig, TrainProgress, TrainResult, memory_needed, train_lora
from teachback.memory.store import MemoryStore, StoredTurn
from teachback.scenarios import quiz
from teachback.scenarios.run import read_run
from teachback.scenarios.seats import RecordedStudent, recorded_students
from teachback.transcripts.run_folder import RunFolder, seat_label

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from teachback.scenarios.quiz import QuizResult
    from teachback.scenarios.schema import QuizItem
    from teachback.transcripts.events import RunStarted

DEFAULT_STUDENT = "local/smollm2-135m"


@dataclass
class FinetuneRequest:
    """Which turns to train on, where the adapter goes, and how to train."""

    namespace: str | None = None
    run_dir: Path | None = None  # take namespace, run id, student, scenario and the run's adapter from here
    seat: str | None = None  # with run_dir: the student seat to train (needed when a run has several)
    runs: list[str] = field(default_factory=list)  # only these run ids (empty: all runs of the namespace)
    objectives: list[str] = field(default_factory=list)  # only turns on these objectives (substring match)
    min_score: float = 0.0
    student: str | None = None
    out: Path | None = None
    memory_dir: Path | None = None
    memory_url: str | None = None
    quiz: bool = True  # quiz before and after when the run's scenario has a quiz
    known_before: QuizResult | None = None  # the student as it is now (skips the quiz before)
    config: TrainConfig | None = None  # None: the defaults


@dataclass
class FinetuneOutcome:
    adapter: Path
    result: TrainResult
    quiz_before: QuizResult | None = None
    quiz_after: QuizResult | None = None


def trainable_students(header: RunStarted, seat: str | None = None) -> list[RecordedStudent]:
    """The students of a run (its header) that learn by fine-tuning (`seat`: only that one), as
    `RecordedStudent`s; a clear error if there is none."""
    students = recorded_students(header)
    if seat is not None:
        named = [s for s in students if s.name == seat]
        if not named:
            names = ", ".join(s.name for s in students)
            raise FinetuneError(
                f"finetune: run {header.run_id} has no student {seat!r} (its students: {names})"
            )
        students = named
    trainable = [s for s in students if s.learning == "finetune"]
    if not trainable:
        raise FinetuneError(
            f"finetune: no student of run {header.run_id}{f' named {seat!r}' if seat else ''} learns by "
            "fine-tuning; a retrieval student learns from the memory as it is"
        )
    return trainable


def select_turns(
    store: MemoryStore, request: FinetuneRequest, namespace: str, runs: list[str]
) -> list[StoredTurn]:
    """The accepted, non-duplicate turns the request names, in the order they were learned."""
    turns = [
        t
        for t in store.entries(namespace, include_duplicates=False)
        if t.judge_score >= request.min_score
        and (not runs or t.run_id in runs)
        and (
            not request.objectives or any(o.casefold() in t.objective.casefold() for o in request.objectives)
        )
    ]
    if not turns:
        filters = []
        if runs:
            filters.append(f"runs {', '.join(runs)}")
        if request.objectives:
            filters.append(f"objectives matching {request.objectives}")
        if request.min_score:
            filters.append(f"judge score >= {request.min_score}")
        where = f" ({'; '.join(filters)})" if filters else ""
        raise FinetuneError(
            f"finetune: no accepted turns{where} in namespace {namespace!r} of {store.location}; "
            "run a scenario first (teachback run ...), or check --namespace/--memory-dir and the filters"
        )
    return turns


def train_from_memory(request: FinetuneRequest, console: Console) -> FinetuneOutcome:
    """Select the turns, estimate memory, quiz the student before, train, quiz after; record it all."""
    config = request.config or TrainConfig()
    header = student = None
    if request.run_dir is not None:
        header, _ = read_run(request.run_dir)
        students = trainable_students(header, request.seat)
        if len(students) > 1:
            raise FinetuneError(
                f"finetune: {request.run_dir} has several students ({', '.join(s.name for s in students)}); "
                "name one with --seat, or leave out --out to train each into the registry"
            )
        student = students[0]
    namespace = request.namespace or (student.namespace if student else "")
    if not namespace:
        raise FinetuneError("finetune: name the memory namespace (--namespace) or a run folder (--run-dir)")
    runs = list(request.runs) or ([header.run_id] if header else [])
    ref = resolve(request.student or (student.model if student else "") or DEFAULT_STUDENT)
    if ref.local_path is None:
        raise FinetuneError(
            f"finetune: the student {ref.spec} is not a local GGUF model; only those train here "
            "(a hosted student learns by retrieval instead)"
        )
    store = MemoryStore.open(path=request.memory_dir, url=request.memory_url, create=False)
    turns = select_turns(store, request, namespace, runs)
    pairs = [pair for t in turns for pair in t.examples()]
    out = request.out or ADAPTERS_DIR / f"{namespace}-{time.strftime('%Y%m%d-%H%M%S')}.gguf"

    need, avail = memory_needed(ref.local_path, config)
    console.print(
        f"fine-tuning {ref.spec} on {len(pairs)} examples from {len(turns)} accepted turns of {namespace!r}"
        + (f" (runs {', '.join(runs)})" if runs else ""),
        soft_wrap=True,
    )
    facts = header.facts if header is not None else []
    if facts:
        console.print(fact_table(facts, turns), soft_wrap=True)
    console.print(
        f"rank {config.rank} · {config.epochs} epochs · window {config.n_ctx} · "
        f"estimated peak memory {need / 2**30:.2f} GiB"
        + (f" of {avail / 2**30:.1f} GiB available" if avail else ""),
        soft_wrap=True,
    )
    items = quiz.scenario_quiz(header) if request.quiz and header else []
    judge = header.models.get("judge", DEFAULT_STUDENT) if header else DEFAULT_STUDENT
    adapter_before = student.adapter if student else None
    seat = student.file_seat if student else None
    outcome_before = None
    if items and request.known_before is not None:
        outcome_before = request.known_before
    elif items:
        before_adapter = Path(adapter_before) if adapter_before and Path(adapter_before).is_file() else None
        outcome_before = _quiz(
            console, items, ref.spec, before_adapter, judge, "before", seat, request.run_dir, facts
        )

    curve: list[list[float]] = []
    val_curve: list[list[float]] = []
    result = _train_with_progress(
        console, ref.local_path, pairs, out, config, namespace, turns, ref.spec, curve, val_curve
    )
    before, after = result.val_loss_before, result.val_loss_after
    if before is not None and after is not None and math.isfinite(before) and math.isfinite(after):
        console.print(f"held-out answer loss: {before:.3f} -> {after:.3f}")
    console.print(
        f"train loss per epoch: {' '.join(f'{x:.3f}' for x in result.train_loss)} · "
        f"{result.tokens_per_s:.0f} tok/s ({result.matmul} matmuls) · "
        f"peak RSS {result.peak_rss_bytes / 2**20:.0f} MB "
        f"(estimated {need / 2**20:.0f} MB) · {result.seconds:.0f} s",
        soft_wrap=True,
    )
    if not result.fast_backward:
        console.print(
            "[yellow]note:[/] this llama-cpp-python build lacks teachback's training kernel; "
            "scripts/setup.sh builds it (fine-tuning runs about 2x faster)",
            soft_wrap=True,
        )
    outcome = FinetuneOutcome(adapter=Path(result.adapter), result=result, quiz_before=outcome_before)
    if items:
        outcome.quiz_after = _quiz(
            console,
            items,
            ref.spec,
            Path(result.adapter),
            judge,
            "after",
            seat,
            request.run_dir,
            facts,
        )
        assert outcome.quiz_before is not None  # quizzed above, or known
        b, a = outcome.quiz_before.totals(), outcome.quiz_after.totals()
        console.print(f"quiz: {b['correct']}/{b['n']} before -> {a['correct']}/{a['n']} after fine-tuning")
    if request.run_dir is not None:
        record = RunFolder(request.run_dir).finetune(seat)
        _write_record(record, result, config, curve, val_curve, need, outcome)
    return outcome


def _quiz(
    console: Console,
    items: list[QuizItem],
    student: str,
    adapter: Path | None,
    judge: str,
    label: str,
    seat: str | None,
    run_dir: Path | None,
    facts: list[str] | None = None,
) -> QuizResult:
    """Quiz the student `before` or `after` fine-tuning; a classroom's `seat` names the quiz and its file."""
    named = seat_label(label, seat)
    with console.status(f"quiz {named} fine-tuning ({len(items)} questions)..."):
        result = quiz.quiz_student(items, student, adapter=adapter, judge_model=judge, label=named)
    result.mark_facts(facts or [])
    if run_dir is not None:
        result.save(RunFolder(run_dir).quiz(label, seat))
    return result


def _write_record(
    path: Path,
    result: TrainResult,
    config: TrainConfig,
    curve: list[list[float]],
    val_curve: list[list[float]],
    need: int,
    outcome: FinetuneOutcome,
) -> None:
    from dataclasses import asdict

    record = {
        "adapter": str(result.adapter),
        "config": asdict(config),
        "loss_curve": curve,
        "val_loss_curve": val_curve,
        "train_loss": result.train_loss,
        "val_loss_before": result.val_loss_before,
        "val_loss_after": result.val_loss_after,
        "tokens_per_s": result.tokens_per_s,
        "fast_backward": result.fast_backward,
        "loss_on": result.loss_on,
        "matmul": result.matmul,
        "peak_rss_bytes": result.peak_rss_bytes,
        "estimated_bytes": need,
        "seconds": result.seconds,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "base_sha256": result.base_sha256,
        "data_sha256": result.data_sha256,
        "quiz_before": outcome.quiz_before.totals() if outcome.quiz_before else None,
        "quiz_after": outcome.quiz_after.totals() if outcome.quiz_after else None,
    }
    atomic_write_text(path, json.dumps(_finite(record), indent=1, default=str))


def _finite(value: Any) -> Any:
    """NaN and infinities as null, so the record is strict JSON (browsers and jq reject NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _train_with_progress(
    console: Console,
    base: Path,
    pairs: list[tuple[str, str]],
    out: Path,
    config: TrainConfig,
    namespace: str,
    turns: list[StoredTurn],
    student: str,
    curve: list[list[float]],
    val_curve: list[list[float]],
) -> TrainResult:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("{task.fields[tps]:.0f} tok/s"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("train", total=1, epoch=0, epochs=config.epochs, loss=0.0, tps=0.0)

        def report(p: TrainProgress) -> None:
            if p.phase == "train":
                curve.append([len(curve) + 1, p.step_loss])
                bar.update(
                    task, total=p.steps, completed=p.step, epoch=p.epoch, loss=p.loss, tps=p.tokens_per_s
                )
            elif p.phase == "val" and math.isfinite(p.loss):  # NaN: nothing held out
                val_curve.append([len(curve), p.loss])
                bar.console.print(f"  held-out answer loss: {p.loss:.3f}")

        runs = sorted({t.run_id for t in turns if t.run_id})
        objectives = sorted({t.objective for t in turns if t.objective})
        return train_lora(
            base,
            pairs,
            out,
            config,
            progress=report,
            checkpoint_dir=out.parent / f".{out.stem}.checkpoints",
            metadata={"namespace": namespace, "runs": runs, "student": student, "objectives": objectives},
        )


def fact_table(facts: list[str], turns: list[StoredTurn]) -> Table:
    """Per curriculum fact: the examples that state it and how many wordings of it they hold."""
    from rich import box
    from rich.table import Table

    examples: dict[int, int] = {}
    wordings: dict[int, set[str]] = {}
    for turn in turns:
        for index in turn.facts:
            for _question, text in turn.examples():
                examples[index] = examples.get(index, 0) + 1
                wordings.setdefault(index, set()).add(" ".join(text.lower().split()))
    table = Table(box=box.SIMPLE, title="examples per fact", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("fact")
    table.add_column("examples", justify="right")
    table.add_column("phrasings", justify="right")
    for i, fact in enumerate(facts):
        short = fact if len(fact) <= 70 else fact[:69] + "…"
        table.add_row(str(i), short, str(examples.get(i, 0)), str(len(wordings.get(i, ()))))
    taught = sum(1 for i in range(len(facts)) if examples.get(i))
    table.caption = f"{taught}/{len(facts)} facts have at least one example"
    return table
