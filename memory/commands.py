"""`teachback memory ...`: look into the vector memory, export training data, delete a run.

    teachback memory stats
    teachback memory search QUERY [--namespace NS] [-k N] [--json]
    teachback memory list [--namespace NS] [--run RUN] [--json]
    teachback memory export --format chatml|sharegpt --out FILE [--namespace NS] [--min-score X]
                            [--include-duplicates]
    teachback memory delete --run RUN [--namespace NS]

Every subcommand takes --memory-dir DIR (default .teachback/memory) or --memory-url http://host:port.
This module imports only argparse and pathlib at the top; the store loads when a subcommand runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from teachback.errors import TeachbackError


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `memory` and its subcommands to a parser's subparsers; returns the `memory` parser."""
    memory = subparsers.add_parser(
        "memory", help="look into the memory of accepted turns; export training data"
    )
    memory.set_defaults(func=_no_subcommand)
    sub = memory.add_subparsers(dest="memory_command", metavar="SUBCOMMAND")

    stats = sub.add_parser("stats", help="namespaces with their turns, duplicates, runs and embedder")
    stats.set_defaults(func=cmd_stats)

    search = sub.add_parser("search", help="the stored turns closest in meaning to QUERY")
    search.add_argument("query", help="a question or a few words")
    search.add_argument("--namespace", help="search one namespace (default: all)")
    search.add_argument("-k", type=_positive_int, default=5, help="how many turns (default 5)")
    search.add_argument("--json", action="store_true", help="one JSON object per line")
    search.set_defaults(func=cmd_search)

    lst = sub.add_parser("list", help="stored turns in the order they were learned")
    lst.add_argument("--namespace", help="one namespace (default: all)")
    lst.add_argument("--run", help="only the turns of this run id")
    lst.add_argument("--json", action="store_true", help="one JSON object per line")
    lst.set_defaults(func=cmd_list)

    export = sub.add_parser(
        "export", help="write the turns as JSONL training data (axolotl, LLaMA-Factory, unsloth)"
    )
    export.add_argument(
        "--format", dest="fmt", required=True, choices=["chatml", "sharegpt"], help="JSONL format"
    )
    export.add_argument("--out", type=Path, required=True, help="the file to write (replaced atomically)")
    export.add_argument("--namespace", help="one namespace (default: all)")
    export.add_argument(
        "--min-score", type=float, default=0.0, help="leave out turns the judge scored below this"
    )
    export.add_argument("--include-duplicates", action="store_true", help="also export near-duplicate turns")
    export.set_defaults(func=cmd_export)

    delete = sub.add_parser("delete", help="delete the turns a run stored")
    delete.add_argument("--run", required=True, help="the run id (see `memory list`)")
    delete.add_argument("--namespace", help="one namespace (default: all)")
    delete.set_defaults(func=cmd_delete)

    for parser in (stats, search, lst, export, delete):
        where = parser.add_mutually_exclusive_group()
        where.add_argument(
            "--memory-dir", type=Path, metavar="DIR", help="memory folder (default .teachback/memory)"
        )
        where.add_argument("--memory-url", metavar="URL", help="a chroma server, http://host:port")
    return memory


def cmd_stats(args: argparse.Namespace) -> int:
    stats = _open(args).stats()
    print(f"memory at {stats.location}")
    if not stats.namespaces:
        print("  no namespaces yet: accepted turns land here when a scenario runs")
        return 0
    print(f"  {'namespace':<24} {'turns':>6} {'dups':>5} {'runs':>5}  {'last write':<20}  embedder")
    for ns in stats.namespaces:
        counts = f"{ns.turns:>6} {ns.duplicates:>5} {ns.runs:>5}"
        print(f"  {ns.namespace:<24} {counts}  {ns.last_write:<20}  {ns.embedder}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    hits = _open(args).search(args.namespace, args.query, args.k)
    for hit in hits:
        if args.json:
            print(json.dumps(_as_json(hit, similarity=hit.similarity), ensure_ascii=False))
        else:
            print(f"{hit.similarity:.3f}  {hit.namespace}  {_where(hit)}\n  Q: {_one_line(hit.question)}")
            print(f"  A: {_one_line(hit.answer)}")
    if not hits and not args.json:
        print("no stored turns to search")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    turns = _open(args).entries(args.namespace, run=args.run)
    for turn in turns:
        if args.json:
            print(json.dumps(_as_json(turn), ensure_ascii=False))
            continue
        dup = f"  duplicate of {turn.duplicate_of}" if turn.duplicate_of else ""
        print(f"{turn.namespace}  {_where(turn)}  score {turn.judge_score:.2f}  {turn.id}{dup}")
        print(f"  Q: {_one_line(turn.question)}\n  A: {_one_line(turn.answer)}")
    if not turns and not args.json:
        print("no stored turns" + (f" from run {args.run}" if args.run else ""))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    result = _open(args).export(
        args.namespace,
        args.fmt,
        args.out,
        include_duplicates=args.include_duplicates,
        min_score=args.min_score,
    )
    print(
        f"wrote {result.written} example(s) to {result.path} ({args.fmt}); left out "
        f"{result.skipped_duplicates} duplicate(s) and {result.skipped_low_score} below --min-score"
    )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from teachback.errors import MemoryStoreError

    store = _open(args)
    deleted = store.delete_run(args.namespace, args.run)
    if deleted == 0:
        where = f"namespace {args.namespace!r}" if args.namespace else "any namespace"
        raise MemoryStoreError(f"memory at {store.location} has no turns of run {args.run!r} in {where}")
    print(f"deleted {deleted} turn(s) of run {args.run}")
    return 0


def _open(args: argparse.Namespace) -> Any:
    from teachback.memory.store import MemoryStore

    return MemoryStore.open(args.memory_dir, url=args.memory_url, create=False)


def _no_subcommand(args: argparse.Namespace) -> int:
    raise TeachbackError("memory: name a subcommand: stats, search, list, export or delete (see --help)")


def _where(turn: Any) -> str:
    return f"run {turn.run_id or '-'} turn {turn.turn}"


def _one_line(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _as_json(turn: Any, **extra: Any) -> dict[str, Any]:
    return {"id": turn.id, "namespace": turn.namespace, **turn.metadata, **extra}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
