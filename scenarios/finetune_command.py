"""`teachback finetune`: train the student on the accepted turns in the memory, with a live progress bar.

    teachback finetune --namespace invented-domain [--run RUN_ID] [--min-score 0.6] [--out adapter.gguf]
    teachback finetune --run-dir transcripts/runs/<run>/        # that run's turns, namespace and student

The adapter goes to `--out`, or into the registry (`.teachback/adapters/<namespace>-<time>.gguf`, listed
by `teachback adapters`, loaded by `adapter: latest`); load it with `Llama(model_path=..., lora_path=...)`,
`llama-server --lora ...` or a scenario's `student: {adapter: <path>}`. With a run folder, the training
record (`finetune.json`: loss curves, speed, memory) and the quiz before and after go into that folder.
The work itself is `finetune_student.train_from_memory`, which rounds (rounds.py) call too.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from teachback.errors import FinetuneError
from teachback.scenarios.finetune_student import FinetuneRequest, train_from_memory, trainable_students
from teachback.scenarios.run import read_run


def register(subparsers: Any) -> None:
    from teachback.memory.finetune import BASE_TYPES, DEFAULT_TARGETS, MATMULS, TrainConfig

    p = subparsers.add_parser("finetune", help="train a LoRA adapter for the student on the accepted turns")
    p.add_argument("--namespace", help="the memory namespace (default: the run's scenario)")
    p.add_argument("--run-dir", type=Path, help="a run folder: train on that run's turns only")
    p.add_argument(
        "--seat", metavar="NAME", help="with --run-dir: the student to train (default: each one in turn)"
    )
    p.add_argument(
        "--run", metavar="RUN_ID", action="append", default=[], help="only this run's turns (repeatable)"
    )
    p.add_argument(
        "--objective",
        action="append",
        default=[],
        metavar="TEXT",
        help="only turns whose objective contains TEXT (repeatable)",
    )
    p.add_argument("--min-score", type=float, default=0.0, help="leave out turns the judge scored lower")
    p.add_argument(
        "--student", metavar="MODEL", help="the local student model (default: the run's, or smollm2)"
    )
    p.add_argument("--out", type=Path, help="the adapter file to write (default: into the registry)")
    p.add_argument("--rank", type=int, default=TrainConfig.rank)
    p.add_argument("--alpha", type=float, help="LoRA alpha (default: the rank)")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--lr", type=float, default=TrainConfig.learning_rate, help="peak learning rate (cosine)")
    p.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma-separated weight kinds to adapt (default: all attention and feed-forward)",
    )
    p.add_argument("--ctx", type=int, default=256, help="training window in tokens (multiple of 32, >= 256)")
    p.add_argument("--first-layer", type=int, default=0, help="adapters only on blocks from this one up")
    p.add_argument(
        "--loss-on",
        choices=("answer", "all"),
        default=TrainConfig.loss_on,
        help="answer (default): learn the answers' tokens only; all: the questions too",
    )
    p.add_argument(
        "--base-type",
        choices=sorted(BASE_TYPES),
        default=TrainConfig.base_type,
        help="the copy of the student that trains: q8_0 (default), bf16 (2x q8_0's weight memory; "
        "no conversion on AMX), f32 (4x), f16, or model (the student file itself: least memory)",
    )
    p.add_argument(
        "--matmul",
        choices=MATMULS,
        default=TrainConfig.matmul,
        help="auto (default): BF16 products on Intel AMX tiles where the CPU has them (F32 sums, F32 "
        "adapter and optimizer), else F32; f32: F32 everywhere",
    )
    p.add_argument(
        "--val-split",
        type=float,
        default=TrainConfig.val_split,
        help="share of examples held out to report a validation loss (default 0: every fact trains)",
    )
    p.add_argument(
        "--early-stop", type=int, metavar="EPOCHS", help="stop after N epochs without a better val"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-quiz", action="store_true", help="skip the quiz before and after")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--memory-dir", type=Path, metavar="DIR", help="memory folder (default .teachback/memory)"
    )
    where.add_argument("--memory-url", metavar="URL", help="a chroma server, http://host:port")
    p.set_defaults(func=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    from rich.console import Console

    from teachback.memory.finetune import TrainConfig

    config = TrainConfig(
        rank=args.rank,
        alpha=args.alpha if args.alpha is not None else float(args.rank),
        epochs=args.epochs,
        learning_rate=args.lr,
        targets=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        n_ctx=args.ctx,
        first_layer=args.first_layer,
        loss_on=args.loss_on,
        base_type=args.base_type,
        matmul=args.matmul,
        val_split=args.val_split,
        early_stop_patience=args.early_stop,
        seed=args.seed,
    )
    seats: list[str | None] = [args.seat]
    if args.run_dir is not None and args.seat is None and args.namespace is None:
        seats = [s.name for s in trainable_students(read_run(args.run_dir)[0])]
        if len(seats) > 1 and args.out is not None:
            raise FinetuneError(
                f"finetune: --out names one adapter, and {args.run_dir} has {len(seats)} students to train; "
                "name one with --seat, or leave out --out (each goes into the registry)"
            )
    console = Console(highlight=False)
    for seat in seats if len(seats) > 1 else [args.seat]:
        outcome = train_from_memory(_request(args, config, seat), console)
        print(outcome.adapter)
    return 0


def _request(args: argparse.Namespace, config: Any, seat: str | None) -> FinetuneRequest:
    return FinetuneRequest(
        namespace=args.namespace,
        seat=seat,
        run_dir=args.run_dir,
        runs=list(args.run),
        objectives=list(args.objective),
        min_score=args.min_score,
        student=args.student,
        out=args.out,
        memory_dir=args.memory_dir,
        memory_url=args.memory_url,
        quiz=not args.no_quiz,
        config=config,
    )
