"""`teachback quiz`: put a quiz to the student and print how it did, item by item, then as a table.

teachback quiz invented-domain --student local/smollm2-135m [--adapter FILE|latest] [--json OUT]
teachback quiz quiz.yaml --student local/smollm2-135m --judge openai/gpt-4o-mini --plain
teachback quiz invented-domain --judge openai/qwen2.5-7b --judge-base http://gpu-box:8000/v1
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teachback.agents.models import DEFAULT_JUDGE, DEFAULT_STUDENT
from teachback.errors import QuizError

if TYPE_CHECKING:
    from teachback.scenarios.quiz import QuizItemResult, QuizResult


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("quiz", help="quiz the student on held-out questions (keywords and judge)")
    p.add_argument(
        "quiz_file", metavar="QUIZ_FILE", help="a YAML/JSON quiz, a scenario file or a bundled name"
    )
    p.add_argument("--student", metavar="MODEL", default=DEFAULT_STUDENT, help="the student's model string")
    p.add_argument(
        "--adapter", metavar="PATH|latest", help="a LoRA adapter for the student, or the newest trained one"
    )
    p.add_argument("--judge", metavar="MODEL", default=DEFAULT_JUDGE, help="the judge's model string")
    for role in ("student", "judge"):
        p.add_argument(
            f"--{role}-base",
            metavar="URL",
            help=f"the {role}'s OpenAI-compatible server, http://host:port/v1 (keyless)",
        )
    p.add_argument("--json", dest="json_out", type=Path, metavar="OUT", help="write the results as JSON")
    p.add_argument("--seed", type=int, default=0, help="random seed (generation is greedy anyway)")
    p.add_argument("--plain", action="store_true", help="no colours or box drawing")
    p.set_defaults(func=run_quiz_command)


def resolve_adapter(adapter: str | None, student_model: str) -> Path | None:
    """The adapter file to load: a path, or `latest`, the newest adapter trained on this student's file."""
    if adapter is None:
        return None
    if adapter != "latest":
        path = Path(adapter).expanduser()
        if not path.is_file():
            raise QuizError(f"--adapter: no such adapter file: {path}")
        return path.resolve()
    from teachback.agents.models import resolve
    from teachback.memory.adapters import latest_adapter

    ref = resolve(student_model)
    if ref.local_path is None:
        raise QuizError(f"--adapter latest: the student {student_model} is not a local model")
    found = latest_adapter(ref.local_path)
    if found is None:
        raise QuizError(
            f"--adapter latest: no adapter trained on {ref.local_path.name} yet; "
            "run `teachback finetune` first"
        )
    return Path(found)


def run_quiz_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from teachback.agents.endpoints import given_api_bases
    from teachback.scenarios.quiz import load_quiz, quiz_student

    bases = given_api_bases({"student": args.student_base, "judge": args.judge_base})
    items = load_quiz(args.quiz_file)  # a bad file fails here, before any model loads
    adapter = resolve_adapter(args.adapter, args.student)
    console = Console(highlight=False, no_color=args.plain or None, soft_wrap=False)
    total = len(items)
    console.print(
        f"quiz {args.quiz_file}: {total} questions for {args.student}"
        + (f" + {adapter.name}" if adapter else "")
        + f", judged by {args.judge}"
    )
    done = 0

    def show(item: QuizItemResult) -> None:
        nonlocal done
        done += 1
        mark = "[green]✓[/]" if item.correct else "[red]✗[/]"
        console.print(
            f"{mark} {done}/{total} {_escape(item.question)}\n    → {_escape(item.answer) or '(nothing)'}"
            f"  [dim]keywords {_keyword_mark(item.keyword_pass)} · judge {item.judge_score:.2f}[/]"
        )

    result = quiz_student(
        items,
        args.student,
        adapter=adapter,
        judge_model=args.judge,
        label=str(args.quiz_file),
        seed=args.seed,
        on_item=show,
        endpoints={role: {"api_base": url} for role, url in bases.items()},
    )
    console.print(results_table(result, plain=args.plain))
    console.print(totals_line(result))
    if args.json_out is not None:
        result.save(args.json_out)
        console.print(f"wrote {args.json_out}")
    return 0


def results_table(result: QuizResult, *, plain: bool = False) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(box=box.ASCII if plain else box.SIMPLE_HEAD, show_edge=False)
    table.add_column("#", justify="right")
    table.add_column("question", overflow="fold", ratio=3)
    table.add_column("keywords", justify="center")
    table.add_column("judge", justify="right")
    table.add_column("verdict", overflow="fold", ratio=2)
    for i, item in enumerate(result.items, 1):
        verdict = ("accepted" if item.judge_accepted else "rejected") + f": {item.judge_reason}"
        table.add_row(
            str(i), item.question, _keyword_mark(item.keyword_pass), f"{item.judge_score:.2f}", verdict
        )
    return table


def totals_line(result: QuizResult) -> str:
    t = result.totals()
    return (
        f"correct {t['correct']}/{t['n']} ({t['score']:.0%})"
        f" · keywords {t['keyword_pass']}/{t['keyword_items']}"
        f" · judge accepted {t['judge_accepted']}/{t['n']} (mean {t['judge_mean']:.2f})"
        f" · {result.seconds:.0f} s"
    )


def _keyword_mark(passed: bool | None) -> str:
    return "–" if passed is None else ("✓" if passed else "✗")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(" ".join(text.split()))
