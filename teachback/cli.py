"""The `teachback` command line. Imports nothing heavy until a command runs, so `--help` is instant.

    teachback run SCENARIO [--turns N] [--out DIR] [--plain] [--teacher M] [--student M] [--judge M]
                           [--teacher-base URL] [--student-base URL] [--judge-base URL]
                           [--resume RUN_DIR] [--seed N]
    teachback replay TRANSCRIPT|RUN_DIR [--speed X | --instant] [--from TURN] [--role ROLE] [--plain]
    teachback validate FILE...
    teachback models [SCENARIO] [--teacher-base URL] [--student-base URL] [--judge-base URL]

Errors the user can fix print one line each (`teachback: ...`) and exit with code 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from teachback import __version__
from teachback.errors import TeachbackError, mask_secrets

EXIT_USAGE = 2
ROLES = ("teacher", "student", "judge")
EXIT_INTERRUPTED = 130

# What an interrupted command leaves behind, said after "teachback: interrupted".
INTERRUPTED = {
    "run": "; the transcript is complete up to the last event",
    "batch": "; finished runs are kept (teachback batch --resume DIR continues)",
    "validate": " (validate writes nothing)",
    "replay": " (replay writes nothing)",
    "models": "",
    "quiz": "; a quiz result is saved only when its quiz completes",
    "finetune": "; no adapter was written",
    "report": "; the report may be incomplete: run teachback report again",
}


def _console(plain: bool = False):  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(highlight=False, no_color=plain or None, soft_wrap=False)


def cmd_run(args: argparse.Namespace) -> int:
    from teachback.agents.endpoints import given_api_bases
    from teachback.scenarios.run import RunRequest, finished_run, run_scenario

    if args.scenario is None and args.resume is None:
        raise TeachbackError("run: name a scenario (a YAML file or a bundled name), or give --resume RUN_DIR")
    done = finished_run(args.resume, args.turns) if args.resume is not None and not args.rounds else None
    if done is not None:  # nothing to do: no server started, no second header
        print(f"{args.resume}: finished ({done.turns} turns, {done.accepted} accepted); nothing to resume")
        return 0
    api_bases = given_api_bases({role: getattr(args, f"{role}_base") for role in ROLES})
    request = RunRequest(
        scenario=args.scenario,
        turns=args.turns,
        out=args.out,
        plain=args.plain,
        models={"teacher": args.teacher, "student": args.student, "judge": args.judge},
        resume=args.resume,
        seed=args.seed,
        adapter=args.adapter,
        memory_dir=args.memory_dir,
        memory_url=args.memory_url,
        no_memory=args.no_memory,
        api_bases=api_bases,
    )
    console = _console(args.plain)
    if args.rounds:
        from teachback.scenarios.rounds import run_rounds

        outcomes = run_rounds(request, args.rounds, console, quiz=not args.no_quiz)
        print(outcomes[-1].run_dir)
        return 0
    run_dir = run_scenario(request, console)
    if not args.no_quiz:
        from teachback.scenarios.rounds import quiz_run

        quiz_run(run_dir, console, request)
    print(run_dir)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from teachback.scenarios.run import transcript_path
    from teachback.transcripts.render import make_renderer
    from teachback.transcripts.replay import replay

    path: Path = args.transcript
    if path.is_dir():
        path = transcript_path(path)
    renderer = make_renderer(_console(args.plain), plain=args.plain)
    try:
        replay(
            path,
            renderer,
            speed=args.speed,
            instant=args.instant,
            from_turn=args.from_turn,
            roles=set(args.role) if args.role else None,
        )
    finally:
        renderer.close()
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from teachback.errors import ScenarioError
    from teachback.scenarios.loader import find_scenario, load_scenario

    problems: list[str] = []
    for name in args.files:
        try:
            # adapters (GGUF LoRA files) and memory.url too: what a run would only find out later
            loaded = load_scenario(find_scenario(name), check_files=True)
        except ScenarioError as exc:
            problems.extend(exc.problems)
            continue
        s = loaded.scenario
        from teachback.scenarios.seats import student_seats, teacher_seats

        teachers, students = teacher_seats(s), student_seats(s)
        seats = f"{len(teachers)} teacher{'s' * (len(teachers) > 1)}"
        if s.teachers is not None:
            seats += f" ({s.panel.select})"
        seats += f", {len(students)} student{'s' * (len(students) > 1)}"
        retrieval = sum(not st.fine_tunable for st in students)
        if retrieval:
            seats += f" ({retrieval} by retrieval)"
        from teachback.agents.claims import KnowledgeIndex

        facts = len(s.facts) if s.facts else len(KnowledgeIndex(loaded.knowledge_text))
        print(
            f"{name}: ok ({s.name}: {seats}, {len(s.objectives)} objectives, {facts} facts, {s.turns} turns, "
            f"{len(s.quiz)} quiz items)"
        )
        for sentence in loaded.left_out:
            print(f"{name}: knowledge: left out, it addresses the model (knowledge is data): {sentence!r}")
    if problems:
        raise ScenarioError(problems)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from teachback.agents.models import LOCAL_MODELS

    if args.scenario is not None:
        return _scenario_models(args)
    print("Local models (run in-process or behind a managed llama.cpp server):")
    for name, model in LOCAL_MODELS.items():
        try:
            where = str(model.path()) if model.installed() else f"not installed: {model.install}"
        except TeachbackError as exc:
            where = str(exc)
        print(f"  local/{name:<14} {model.description}\n  {'':<20} {where}")
    print("  local:/path/to/model.gguf  any GGUF file")
    print("Any litellm model string also works for teacher and judge: openai/gpt-4o-mini, ollama/llama3, ...")
    return 0


def _scenario_models(args: argparse.Namespace) -> int:
    """Each seat of a scenario: its model, where it is called, its limits and its key's variable."""
    from teachback.agents.endpoints import (
        check_served_elsewhere,
        given_api_bases,
        key_source,
        limits,
        where_called,
    )
    from teachback.scenarios.loader import find_scenario, load_scenario
    from teachback.scenarios.seats import StudentSeat, all_seats, with_api_bases

    api_bases = given_api_bases({role: getattr(args, f"{role}_base") for role in ROLES})
    loaded = load_scenario(find_scenario(args.scenario))
    scenario = with_api_bases(loaded.scenario, api_bases)
    seats = all_seats(scenario)
    for label, _seat, settings in seats:  # a local model given an api_base: one line, before any output
        check_served_elsewhere(settings, settings.model, label)
    print(f"{scenario.name} ({loaded.path}): where each seat's model is called")
    for label, seat, settings in seats:
        in_process = isinstance(seat, StudentSeat) and seat.fine_tunable
        model = settings.model
        print(f"{label}: {model}")
        print(f"    called at  {where_called(model, settings, in_process=in_process)}")
        print(f"    limits     {limits(model, settings, in_process=in_process)}")
        print(f"    key        {key_source(model, settings)}")
    return 0


def _add_base_options(parser: argparse.ArgumentParser, roles: Sequence[str]) -> None:
    """--ROLE-base URL for each role: its OpenAI-compatible server, over the scenario's api_base."""
    for role in roles:
        parser.add_argument(
            f"--{role}-base",
            metavar="URL",
            help=f"the {role}'s OpenAI-compatible server, http://host:port/v1 (overrides api_base; "
            "the key only from the variable api_key_env names)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="teachback",
        description="Distil knowledge from a teacher model into a small local student by conversation.",
    )
    parser.add_argument("--version", action="version", version=f"teachback {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a scenario script and watch the dialogue live")
    run.add_argument("scenario", nargs="?", help="a scenario YAML file, or a bundled scenario's name")
    run.add_argument("--turns", type=_positive_int, help="dialogue turns (overrides the scenario)")
    run.add_argument("--out", type=Path, help="the run's folder (default transcripts/runs/<run-id>/)")
    run.add_argument("--plain", action="store_true", help="line-oriented output for pipes and CI")
    for role in ROLES:
        run.add_argument(
            f"--{role}", metavar="MODEL", help=f"the {role}'s model string (overrides the scenario)"
        )
    _add_base_options(run, ROLES)
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    run.add_argument("--seed", type=int, help="random seed (overrides the scenario)")
    run.add_argument(
        "--adapter",
        type=Path,
        metavar="FILE",
        help="a LoRA adapter for the student, or latest (teachback adapters)",
    )
    run.add_argument(
        "--rounds",
        type=_positive_int,
        metavar="N",
        help="N rounds of dialogue then fine-tuning, each round with the last round's adapter",
    )
    run.add_argument("--no-quiz", action="store_true", help="skip the scenario's quiz")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--memory-dir", type=Path, metavar="DIR", help="the vector memory's folder")
    where.add_argument(
        "--memory-url",
        metavar="URL",
        help="a shared chroma server, http://host:port (its token, if any, in $TEACHBACK_MEMORY_TOKEN)",
    )
    where.add_argument("--no-memory", action="store_true", help="do not store accepted turns")
    run.set_defaults(func=cmd_run)

    rep = sub.add_parser("replay", help="replay a recorded transcript with the live view")
    rep.add_argument("transcript", type=Path, help="a transcript.jsonl or a run folder")
    rep.add_argument("--speed", type=_positive_float, default=1.0, help="playback speed factor (default 1)")
    rep.add_argument("--instant", action="store_true", help="no pauses")
    rep.add_argument(
        "--from", dest="from_turn", type=int, default=0, metavar="TURN", help="start at this turn"
    )
    rep.add_argument(
        "--role",
        action="append",
        choices=["student", "teacher", "judge"],
        help="show only this role (repeatable)",
    )
    rep.add_argument("--plain", action="store_true", help="line-oriented output")
    rep.set_defaults(func=cmd_replay)

    val = sub.add_parser(
        "validate", help="check scenario files; print every problem as file:line: field: message"
    )
    val.add_argument("files", nargs="+", help="scenario YAML files or bundled names")
    val.set_defaults(func=cmd_validate)

    mod = sub.add_parser(
        "models",
        help="list the local models and where their files are; with a scenario, where each seat is called",
    )
    mod.add_argument(
        "scenario",
        nargs="?",
        help="a scenario: print each seat's model, where it is called, its timeout and retries, and the "
        "variable its key comes from (never the key)",
    )
    _add_base_options(mod, ROLES)
    mod.set_defaults(func=cmd_models)

    from teachback.memory import adapters_command
    from teachback.memory import commands as memory_commands
    from teachback.scenarios import finetune_command, judge_eval, quiz_command

    memory_commands.register(sub)
    finetune_command.register(sub)
    quiz_command.register(sub)
    judge_eval.register(sub)
    adapters_command.register(sub)
    from teachback.transcripts import report_command

    report_command.register(sub)
    from teachback.scenarios import batch_command

    batch_command.register(sub)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if threading.current_thread() is threading.main_thread():
        # Stop like Ctrl-C on a kill or a closed terminal: servers down, transcript closed.
        signal.signal(signal.SIGTERM, _interrupt)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, _interrupt)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if sys.excepthook is sys.__excepthook__:  # an unexpected error's traceback: keys masked there too
        sys.excepthook = _masked_excepthook
    try:
        return int(args.func(args))
    except TeachbackError as exc:
        for line in exc.lines():  # secrets masked
            print(f"teachback: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"teachback: interrupted{INTERRUPTED.get(args.command, '')}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _masked_excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    import traceback

    text = "".join(traceback.format_exception(kind, exc, tb))
    sys.stderr.write(mask_secrets(text))


if __name__ == "__main__":
    sys.exit(main())
