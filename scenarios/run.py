"""Running a scenario: the run folder, the transcript, the servers, the cast and the director together.

    run_scenario(RunRequest(scenario="invented-domain", turns=2), console)  ->  Path of the run folder

A run folder holds `transcript.jsonl` (the events) and the managed servers' logs. `resume` reads the
transcript back, repairs a line cut off by a crash, and continues after the last complete turn: accepted
turns are never asked again. A turn cut off before its verdict is played again; its first attempt is
abandoned (transcripts/metrics.py leaves it out). A run that completed has nothing to resume
(`finished_run`).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from teachback.errors import RunDirError, TeachbackError
from teachback.transcripts.run_folder import RunFolder

if TYPE_CHECKING:
    from autogen_core.models import ChatCompletionClient
    from rich.console import Console

    from teachback.memory.store import MemoryStore
    from teachback.scenarios.schema import Scenario
    from teachback.scenarios.seats import Seat, StudentSeat

    SeatT = TypeVar("SeatT", bound=Seat)
    from teachback.transcripts.events import Event, RunFinished, RunStarted
    from teachback.transcripts.progress import Progress
    from teachback.transcripts.sinks import Sink

DEFAULT_RUNS_DIR = Path("transcripts") / "runs"
VERSIONED_PACKAGES = ("teachback", "autogen-agentchat", "litellm", "llama-cpp-python", "chromadb", "rich")


@dataclass
class RunRequest:
    """What the user asked for on the command line."""

    scenario: str | None = None
    turns: int | None = None
    out: Path | None = None
    plain: bool = False
    models: dict[str, str] = field(default_factory=dict)  # role -> model override
    resume: Path | None = None
    seed: int | None = None
    adapter: Path | None = None  # a LoRA adapter for the student (overrides the scenario's student.adapter)
    adapters: dict[str, Path] = field(default_factory=dict)  # classroom: student seat name -> its adapter
    memory_dir: Path | None = None  # overrides the scenario's memory.dir
    memory_url: str | None = None  # overrides the scenario's memory.url
    no_memory: bool = False
    api_bases: dict[str, str] = field(default_factory=dict)  # role -> its server's URL (--teacher-base ...)
    # learning rounds: curriculum fact -> accepted turns of the earlier rounds that stated it
    taught_before: dict[int, int] = field(default_factory=dict)


def open_memory(
    request: RunRequest, scenario: Scenario, scenario_dir: Path
) -> tuple[MemoryStore | None, str]:
    """The run's vector memory and namespace (CLI options win over the scenario's), or None when off."""
    settings = scenario.memory
    if request.no_memory or not settings.enabled:
        return None, ""
    from teachback.memory.store import MemoryStore

    url = request.memory_url or (settings.url if request.memory_dir is None else None)
    folder = request.memory_dir
    if folder is None and url is None and settings.dir:
        folder = (scenario_dir / settings.dir).expanduser()
    store = MemoryStore.open(path=folder, url=url, duplicate_threshold=settings.duplicate_threshold)
    return store, settings.namespace or scenario.name


def transcript_path(run_dir: Path) -> Path:
    return RunFolder(run_dir).transcript


def read_run(run_dir: Path) -> tuple[RunStarted, RunFinished | None]:
    """A run folder's header (RunStarted) and its last RunFinished (None if it never finished)."""
    from teachback.transcripts.events import RunFinished, RunStarted
    from teachback.transcripts.reader import read_transcript

    path = transcript_path(run_dir)
    if not path.is_file():
        raise RunDirError(f"{run_dir}: not a run folder (no {path.name})")
    events = read_transcript(path, allow_truncated_tail=True)
    header = events[0]
    assert isinstance(header, RunStarted)
    finished = next((e for e in reversed(events) if isinstance(e, RunFinished)), None)
    return header, finished


def finished_run(run_dir: Path, turns: int | None = None) -> RunFinished | None:
    """The run's RunFinished when it completed and `turns` (a new budget) asks for no more: nothing to
    resume. None for a run to continue (or not a run folder: resuming says so)."""
    from teachback.errors import TranscriptError
    from teachback.transcripts.events import RunFinished
    from teachback.transcripts.reader import read_transcript

    try:
        events = read_transcript(transcript_path(run_dir), allow_truncated_tail=True)
    except TranscriptError:
        return None
    last = events[-1] if events else None
    if (
        isinstance(last, RunFinished)
        and last.status == "completed"
        and (turns is None or turns <= last.turns)
    ):
        return last
    return None


def new_run_id(scenario_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", scenario_name.lower()).strip("-")[:40] or "run"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


def package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def progress_from(events: list[Event], objectives: list[str]) -> tuple[Progress, float]:
    """Rebuild the progress of an interrupted run (`Progress.apply` over its events, as the renderer
    counts them), and the time its transcript had reached."""
    from teachback.transcripts.progress import Progress

    progress = Progress(objectives=list(objectives))
    for event in events:
        progress.apply(event)
    return progress, (events[-1].t if events else 0.0)


def seats_for_run(
    scenario: Scenario,
    scenario_dir: Path,
    request: RunRequest,
    header: RunStarted | None,
    models: dict[str, str],
    namespace: str,
) -> tuple[list[Seat], list[StudentSeat]]:
    """The run's teachers and students: the scenario's seats with the models and adapters that the command
    line, or the header of the run being resumed, name. A model given on the command line for a role
    seats every seat of that role on it; adapters are resolved to files (a missing one fails here)."""
    from teachback.scenarios.cast import resolve_adapter
    from teachback.scenarios.seats import student_seats, teacher_seats

    recorded = {(s.get("role"), s.get("name")): s for s in header.seats} if header else {}
    teachers, students = teacher_seats(scenario), student_seats(scenario, namespace or None)
    if len(students) > 1 and request.adapter is not None:
        raise TeachbackError(
            "--adapter names the adapter of one student; this scenario has several: give each its own "
            "`adapter:` in the scenario"
        )

    def settle(seat: SeatT, single: bool) -> SeatT:
        old = recorded.get((seat.role, seat.name), {})
        model = models[seat.role] if single else (request.models.get(seat.role) or old.get("model"))
        seat = seat.with_model(model or seat.model)
        if single and seat.role == "student":
            return seat  # its adapter is settled already, --adapter and the header's included
        adapter = request.adapters.get(seat.name) or old.get("adapter") or seat.adapter
        if adapter:
            label = seat.role if single else f"{seat.role} {seat.name}"
            seat = seat.with_adapter(str(resolve_adapter(str(adapter), scenario_dir, seat.model, seat=label)))
        return seat

    return (
        [settle(t, len(teachers) == 1 and scenario.teachers is None) for t in teachers],
        [settle(s, len(students) == 1 and scenario.students is None) for s in students],
    )


def _previous_run(run_dir: Path) -> tuple[RunStarted, list[Event]]:
    from teachback.transcripts.events import RunStarted
    from teachback.transcripts.reader import read_transcript, repair_truncated_tail

    path = transcript_path(run_dir)
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no {path.name} here to resume; give the folder of an earlier run")
    repair_truncated_tail(path)
    if not path.read_bytes().strip():
        raise RunDirError(
            f"{run_dir}: the run was stopped before it wrote its first event; nothing to resume: start it "
            f"again with `teachback run SCENARIO --out {run_dir}`"
        )
    events = read_transcript(path)
    header = events[0]
    assert isinstance(header, RunStarted)
    return header, events


def _cut_off_before_it_began(path: Path) -> bool:
    """Whether a transcript holds no complete line: its run was killed while writing its header."""
    try:
        return b"\n" not in path.read_bytes()
    except OSError:
        return False


def embedder() -> Callable[[list[str]], Any] | None:
    """MiniLM sentence vectors (offline, agents/minilm.py) for the notes a question is shown, whether an
    answer answers it and where the curriculum places a fact; None if the model cannot load (each of those
    then goes by words alone)."""
    from teachback.agents.minilm import encode
    from teachback.errors import ModelError

    try:
        encode(["probe"])
    except ModelError:
        return None
    return encode


def _import_litellm_in_background() -> threading.Thread:
    """litellm takes ~5 s to import; start it now so it overlaps with server and model start-up."""
    from teachback.agents.litellm_client import import_litellm

    thread = threading.Thread(target=import_litellm, name="import-litellm", daemon=True)
    thread.start()
    return thread


def run_scenario(
    request: RunRequest, console: Console, *, clients: dict[str, ChatCompletionClient] | None = None
) -> Path:
    """Run (or resume) a scenario, rendering it live; returns the run folder. Ctrl-C propagates."""
    from teachback.agents.cast import ROLES
    from teachback.agents.endpoints import client_options, endpoint_record
    from teachback.agents.grounding import Knowledge
    from teachback.agents.judge import Rubric
    from teachback.agents.llama_server import ServerPool
    from teachback.agents.models import check_litellm_model, resolve
    from teachback.memory.sink import MemorySink
    from teachback.scenarios.cast import build_cast, resolve_adapter
    from teachback.scenarios.curriculum import Curriculum
    from teachback.scenarios.director import Director
    from teachback.scenarios.loader import find_scenario, load_scenario
    from teachback.scenarios.seats import seat_record, with_api_bases
    from teachback.transcripts.events import Notice, RunStarted
    from teachback.transcripts.metrics import abandoned_turns
    from teachback.transcripts.progress import Progress
    from teachback.transcripts.recorder import TranscriptRecorder
    from teachback.transcripts.render import make_renderer
    from teachback.transcripts.sinks import Fanout

    litellm_import = _import_litellm_in_background() if clients is None else None
    header: RunStarted | None = None
    events: list[Event] = []
    if request.resume is not None:
        header, events = _previous_run(request.resume)
    scenario_file = request.scenario or (header.scenario_path if header else None)
    if scenario_file is None:
        raise TeachbackError("run: name a scenario file (or a bundled scenario), or --resume RUN_DIR")
    loaded = load_scenario(find_scenario(scenario_file))
    scenario = loaded.scenario
    turns = request.turns or (int(header.options.get("turns", scenario.turns)) if header else scenario.turns)
    scenario = scenario.model_copy(update={"turns": turns})
    api_bases = {**((header.options.get("api_bases") or {}) if header else {}), **request.api_bases}
    scenario = with_api_bases(scenario, api_bases)
    adapter = request.adapter or (header.options.get("adapter") if header else None)
    if adapter:
        named = "latest" if str(adapter) == "latest" else str(Path(adapter).expanduser().resolve())
        student = scenario.student.model_copy(update={"adapter": named})
        scenario = scenario.model_copy(update={"student": student})
    seed = request.seed if request.seed is not None else (header.seed if header else scenario.seed)
    models = {role: getattr(scenario, role).model for role in ROLES}
    if header:
        models.update(header.models)
    models.update({role: spec for role, spec in request.models.items() if spec})
    if clients is None:  # an unknown model or a missing adapter fails here, before anything is written
        for spec in models.values():
            if not resolve(spec).is_local:
                check_litellm_model(spec)
    adapter_path = resolve_adapter(scenario.student.adapter, loaded.path.parent, models["student"])
    if adapter_path is not None:  # "latest" becomes the file it named now, for the cast and the header
        student = scenario.student.model_copy(update={"adapter": str(adapter_path)})
        scenario = scenario.model_copy(update={"student": student})

    memory, namespace = open_memory(request, scenario, loaded.path.parent)
    teachers, students = seats_for_run(scenario, loaded.path.parent, request, header, models, namespace)
    models.update({"teacher": teachers[0].model, "student": students[0].model})
    if clients is None:
        for spec in {seat.model for seat in (*teachers, *students)} - set(models.values()):
            if not resolve(spec).is_local:
                check_litellm_model(spec)
        # a key's variable that is not set, or a local model given an api_base, fails here too
        for seat in (*teachers, *students):
            client_options(seat.settings, seat.model, seat.label)
        client_options(scenario.judge, models["judge"], "judge")

    embed = embedder() if loaded.knowledge_text.strip() else None
    rubric = Rubric(Knowledge(loaded.knowledge_text, embed=embed), scenario.judge.threshold)
    curriculum = (
        Curriculum.build(rubric.index, list(scenario.objectives), scenario.facts, embed=embed)
        if rubric.knowledge
        else None
    )
    if header is not None and request.resume is not None:
        run_dir = request.resume
        progress, t_offset = progress_from(events, scenario.objectives)
        run_id = header.run_id
    else:
        run_id = new_run_id(scenario.name)
        run_dir = request.out or DEFAULT_RUNS_DIR / run_id
        if transcript_path(run_dir).exists():
            if not _cut_off_before_it_began(transcript_path(run_dir)):
                raise RunDirError(f"{run_dir} already holds a transcript: resume it with --resume {run_dir}")
            transcript_path(run_dir).unlink()  # nothing in it to keep: start the run there again
        progress, t_offset = Progress(objectives=list(scenario.objectives)), 0.0
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create run folder {run_dir}: {exc.strerror}") from None

    taught_before = request.taught_before or {  # a resumed round goes on from where its header said
        int(f): int(n) for f, n in (header.options.get("taught_before", {}) if header else {}).items()
    }
    options: dict[str, Any] = {
        "turns": turns,
        "threshold": scenario.judge.threshold,
        "answer_retries": scenario.answer_retries,
        "question_retries": scenario.question_retries,
        "teachback": scenario.teachback,
        "phrasings": scenario.phrasings,
        "adapter": str(adapter_path) if adapter_path else None,
        "memory_namespace": namespace or None,
        **({"api_bases": api_bases} if api_bases else {}),  # --teacher-base ..., kept for a resume
        **({"taught_before": {str(f): n for f, n in taught_before.items()}} if taught_before else {}),
        "roles": {  # the first seat of each role; every seat's own are in the header's seats
            role: {
                "temperature": settings.temperature,
                "max_tokens": settings.max_tokens,
                **endpoint_record(settings),  # where it was called; the key's variable by name only
            }
            for role, settings in zip(
                ROLES, (students[0].settings, teachers[0].settings, scenario.judge), strict=True
            )
        },
    }
    renderer = make_renderer(console, plain=request.plain)
    recorder = TranscriptRecorder(transcript_path(run_dir))
    sinks: list[Sink] = [recorder, renderer]  # first the recorder: the transcript is the record of truth
    emit = Fanout(sinks)

    try:
        start = RunStarted(
            t=t_offset,
            run_id=run_id,
            scenario=scenario.name,
            scenario_path=str(loaded.path),
            scenario_sha256=loaded.sha256,
            models=models,
            options=options,
            seed=seed,
            versions=package_versions(),
            started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            objectives=list(scenario.objectives),
            resumed_from_turn=progress.next_turn - 1 if header else 0,
            seats=[seat_record(seat) for seat in (*teachers, *students)],
            facts=list(curriculum.facts) if curriculum else [],
            fact_objectives=dict(curriculum.of_objective) if curriculum else {},
        )
        progress.apply(start)  # the earlier rounds' facts taught, if any
        emit(start)
        if memory is not None:
            sink = MemorySink(memory, namespace, start)
            sinks.append(sink)  # its MemoryStored goes through every sink in turn
            recovered = sink.backfill(events)  # turns a crash left out of the memory
            if recovered:
                emit(
                    Notice(
                        t=t_offset, level="info", message=f"memory: stored {recovered} turns a crash left out"
                    )
                )
        if memory is None and any(seat.learning == "retrieval" for seat in students):
            emit(
                Notice(
                    t=t_offset, level="warning", message="memory is off: retrieval students recall nothing"
                )
            )
        cut = abandoned_turns([*events, start])  # with the turn the interruption cut off, if it did
        if len(cut) > len(abandoned_turns(events)):
            turn = getattr(events[cut[-1][0]], "turn", 0)
            emit(
                Notice(
                    t=t_offset,
                    level="info",
                    turn=turn,
                    message=f"turn {turn} was cut off before its verdict: it is played again",
                )
            )
        if header is not None and header.scenario_sha256 != loaded.sha256:
            emit(Notice(t=t_offset, level="warning", message=f"{loaded.path} changed since the run began"))
        if progress.next_turn > turns:
            emit(
                Notice(
                    t=t_offset, level="info", message=f"all {turns} turns were already done; nothing to do"
                )
            )
        with ServerPool(log_dir=run_dir) as pool:
            cast = build_cast(
                scenario,
                loaded.path.parent,
                models=models,
                pool=pool,
                seed=seed,
                clients=clients,
                seats=(teachers, students),
                memory=memory,
            )
            director = Director(scenario, cast, rubric, emit, t_offset=t_offset, curriculum=curriculum)

            if litellm_import is not None:
                litellm_import.join()  # overlapped with loading the scenario, the servers and the student

            async def play() -> None:
                try:
                    await director.run(progress)
                finally:
                    await cast.close()

            try:
                asyncio.run(play())
            except KeyboardInterrupt:
                console.print(f"interrupted: resume with `teachback run --resume {run_dir}`", style="yellow")
                raise
    finally:
        renderer.close()
        recorder.close()
    return run_dir
