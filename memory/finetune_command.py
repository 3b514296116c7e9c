"""`teachback finetune`: train the student on the accepted turns in the memory, with a live progress bar.

    teachback finetune --namespace invented-domain [--run RUN_ID] [--min-score 0.6] [--out adapter.gguf]
    teachback finetune --run-dir transcripts/runs/<run>/        # that run's turns, namespace and student

The adapter goes to `--out`, or to `.teachback/adapters/<namespace>-<time>.gguf`; load it with
`Llama(model_path=<student>.gguf, lora_path=...)`, `llama-server --lora ...` or a scenario's
`student: {adapter: <path>}`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from teachback.errors import FinetuneError

ADAPTERS_DIR = Path(".teachback") / "adapters"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("finetune", help="train a LoRA adapter for the student on the accepted turns")
    p.add_argument("--namespace", help="the memory namespace (default: the run's scenario)")
    p.add_argument("--run-dir", type=Path, help="a run folder: train on that run's turns only")
    p.add_argument("--run", metavar="RUN_ID", help="train on the turns of this run id only")
    p.add_argument("--min-score", type=float, default=0.0, help="leave out turns the judge scored lower")
    p.add_argument(
        "--student", metavar="MODEL", help="the local student model (default: the run's, or smollm2)"
    )
    p.add_argument("--out", type=Path, help="the adapter file to write (replaced atomically)")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--alpha", type=float, help="LoRA alpha (default: the rank)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (cosine schedule)")
    p.add_argument("--first-layer", type=int, default=0, help="adapters only on blocks from this one up")
    p.add_argument("--val-split", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--memory-dir", type=Path, metavar="DIR", help="memory folder (default .teachback/memory)"
    )
    where.add_argument("--memory-url", metavar="URL", help="a chroma server, http://host:port")
    p.set_defaults(func=run_finetune)


def _from_run_dir(run_dir: Path) -> tuple[str, str, str]:
    """(namespace, run id, student model) of a recorded run."""
    from teachback.transcripts.events import RunStarted
    from teachback.transcripts.reader import read_transcript

    header = read_transcript(run_dir / "transcript.jsonl", allow_truncated_tail=True)[0]
    assert isinstance(header, RunStarted)
    return header.scenario, header.run_id, header.models.get("student", "")


def run_finetune(args: argparse.Namespace) -> int:
    from rich.console import Console

    from teachback.agents.models import resolve
    from teachback.memory.finetune import TrainConfig, train_lora
    from teachback.memory.store import MemoryStore

    namespace, run_id, student = args.namespace, args.run, args.student
    if args.run_dir is not None:
        ns, rid, model = _from_run_dir(args.run_dir)
        namespace, run_id, student = namespace or ns, run_id or rid, student or model
    if not namespace:
        raise FinetuneError("finetune: name the memory namespace (--namespace) or a run folder (--run-dir)")
    ref = resolve(student or "local/smollm2-135m")
    if ref.local_path is None:
        raise FinetuneError(
            f"finetune: the student {ref.spec} is not a local GGUF model; only those train here"
        )

    store = MemoryStore.open(path=args.memory_dir, url=args.memory_url, create=False)
    turns = [
        t
        for t in store.list(namespace, run=run_id, include_duplicates=False)
        if t.judge_score >= args.min_score
    ]
    if not turns:
        where = f"run {run_id} in " if run_id else ""
        raise FinetuneError(
            f"finetune: no accepted turns for {where}namespace {namespace!r} in {store.location}; "
            "run a scenario first (teachback run ...), or check --namespace/--memory-dir"
        )
    pairs = [(t.question, t.answer) for t in turns]
    out = args.out or ADAPTERS_DIR / f"{namespace}-{time.strftime('%Y%m%d-%H%M%S')}.gguf"
    config = TrainConfig(
        rank=args.rank,
        alpha=args.alpha if args.alpha is not None else float(args.rank),
        epochs=args.epochs,
        learning_rate=args.lr,
        first_layer=args.first_layer,
        val_split=args.val_split,
        seed=args.seed,
    )
    console = Console(highlight=False)
    console.print(
        f"fine-tuning {ref.spec} on {len(pairs)} accepted turns of {namespace!r}"
        + (f" (run {run_id})" if run_id else "")
    )
    result = _train_with_progress(console, train_lora, ref.local_path, pairs, out, config, namespace, turns)
    before, after = result.val_loss_before, result.val_loss_after
    if before is not None and after is not None:
        console.print(f"held-out answer loss: {before:.3f} -> {after:.3f}")
    console.print(
        f"train loss per epoch: {' '.join(f'{x:.3f}' for x in result.train_loss)} · "
        f"{result.tokens_per_s:.0f} tok/s · peak RSS {result.peak_rss_bytes / 2**20:.0f} MB · "
        f"{result.seconds:.0f} s"
    )
    print(result.adapter)
    return 0


def _train_with_progress(
    console: Any, train: Any, base: Path, pairs: list, out: Path, config: Any, namespace: str, turns: list
) -> Any:
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

        def report(p: Any) -> None:
            if p.phase == "train":
                bar.update(
                    task, total=p.steps, completed=p.step, epoch=p.epoch, loss=p.loss, tps=p.tokens_per_s
                )
            elif p.phase == "val":
                bar.console.print(f"  held-out answer loss: {p.loss:.3f}")

        runs = sorted({t.run_id for t in turns if t.run_id})
        return train(
            base,
            pairs,
            out,
            config,
            progress=report,
            checkpoint_dir=out.parent / f".{out.stem}.checkpoints",
            metadata={"namespace": namespace, "runs": runs},
        )
