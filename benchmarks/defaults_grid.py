#!/usr/bin/env python3
"""Which fine-tune settings make the student learn? A grid over one recorded round, quiz before and after.

    .venv/bin/python benchmarks/defaults_grid.py                      # the bundled recorded round
    .venv/bin/python benchmarks/defaults_grid.py --run-dir RUN --grid "epochs=3,8 loss_on=answer,all"

It stores the accepted turns of a round (default: `tests/data/learning/invented-domain-round-1.jsonl`, a
round of the bundled `invented-domain` scenario recorded by the product) into a fresh memory, then trains
the student through `teachback finetune`'s own path once per setting of the grid (every combination of the
values given) and per seed, and quizzes it with the scenario's quiz. The data are the same for every
cell, so the quiz after is the settings' doing. It prints one row per setting: the quiz after (median over
the seeds, and each seed), the final train loss and the training time. `learning_bench.py` measures the
whole loop with the chosen defaults.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORDED = REPO / "tests" / "data" / "learning" / "invented-domain-round-1.jsonl"
DEFAULT_GRID = "epochs=3,8 loss_on=answer,all"
KNOBS = {"epochs": int, "rank": int, "learning_rate": float, "loss_on": str}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, help="a run folder (default: the bundled recorded round)")
    ap.add_argument("--grid", default=DEFAULT_GRID, help=f"knob=v1,v2 ... of {sorted(KNOBS)}")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--out", type=Path, default=Path(f"/tmp/teachback-grid-{time.strftime('%H%M%S')}"))
    args = ap.parse_args()

    from rich.console import Console

    from teachback.memory.finetune import TrainConfig
    from teachback.scenarios.finetune_student import FinetuneRequest, train_from_memory

    grid = parse_grid(args.grid)
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = prepared_run(args.run_dir, args.out)
    memory = args.out / "mem"
    store_round(run_dir, memory)
    rows = []
    before = None
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values, strict=True))
        scores, losses, seconds = [], [], []
        for seed in seeds:
            config = replace(TrainConfig(), seed=seed, **setting)
            if "rank" in setting:
                config = replace(config, alpha=float(setting["rank"]))
            started = time.perf_counter()
            outcome = train_from_memory(
                FinetuneRequest(
                    run_dir=run_dir,
                    memory_dir=memory,
                    out=args.out / f"adapter-{len(rows)}-{seed}.gguf",
                    config=config,
                    known_before=before,
                ),
                Console(file=io.StringIO(), width=120),
            )
            seconds.append(time.perf_counter() - started)
            before = outcome.quiz_before
            scores.append(outcome.quiz_after.totals()["correct"])
            losses.append(outcome.result.train_loss[-1] if outcome.result.train_loss else float("nan"))
        row = {
            "setting": setting,
            "quiz_after": scores,
            "median": statistics.median(scores),
            "of": before.totals()["n"],
            "before": before.totals()["correct"],
            "final_loss": statistics.median(losses),
            "seconds": statistics.median(seconds),
        }
        rows.append(row)
        print(format_row(row), flush=True)
        (args.out / "grid.json").write_text(json.dumps(rows, indent=1))
    return 0


def parse_grid(text: str) -> dict[str, list]:
    """`epochs=3,8 loss_on=answer,all` -> {"epochs": [3, 8], "loss_on": ["answer", "all"]}."""
    grid: dict[str, list] = {}
    for part in text.split():
        name, _, values = part.partition("=")
        name = {"lr": "learning_rate"}.get(name, name)
        if name not in KNOBS or not values:
            sys.exit(f"defaults_grid: --grid {part!r}: expected knob=v1,v2 with a knob of {sorted(KNOBS)}")
        grid[name] = [KNOBS[name](v) for v in values.split(",")]
    return grid


def prepared_run(run_dir: Path | None, out: Path) -> Path:
    """A copy of the round's run folder under `out`, its header pointing at this checkout's scenario."""
    from teachback.scenarios.loader import find_scenario

    target = out / "round"
    target.mkdir(exist_ok=True)
    source = (run_dir / "transcript.jsonl") if run_dir else RECORDED
    lines = source.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    if run_dir is None:
        header["scenario_path"] = str(find_scenario(header["scenario"]))
    (target / "transcript.jsonl").write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    return target


def store_round(run_dir: Path, memory: Path) -> None:
    """The round's accepted turns into a fresh memory, the way a run stores them."""
    from teachback.memory.sink import MemorySink
    from teachback.memory.store import MemoryStore
    from teachback.transcripts.reader import read_transcript

    shutil.rmtree(memory, ignore_errors=True)
    events = read_transcript(run_dir / "transcript.jsonl")
    header = events[0]
    namespace = header.options.get("memory_namespace") or header.scenario
    MemorySink(MemoryStore.open(path=memory), namespace, header).backfill(events)


def format_row(row: dict) -> str:
    setting = " ".join(f"{k}={v}" for k, v in row["setting"].items())
    seeds = ",".join(str(s) for s in row["quiz_after"])
    return (
        f"{setting:<34} quiz {row['before']}/{row['of']} -> {row['median']:g}/{row['of']} (seeds {seeds})"
        f" · final loss {row['final_loss']:.3f} · {row['seconds']:.0f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
