#!/usr/bin/env python3
"""Did the student learn? The scenario's quiz before, after each round of dialogue + fine-tuning, and the
grounded teacher's own score on the same quiz (the ceiling), all with the bundled offline models.

    .venv/bin/python benchmarks/learning_bench.py                       # invented-domain, 24 turns, 1 round
    .venv/bin/python benchmarks/learning_bench.py --rounds 2 --turns 12 --epochs 6 --out /tmp/learning

The same thing by hand: `teachback run invented-domain --turns 24 --rounds 1` (quiz before and after) and
`teachback quiz invented-domain --student local/smollm2-135m` for the untrained student.

The ceiling is the teacher model answering each quiz question with the knowledge passages the teacher
sees in a dialogue (the same retrieval), scored by the same judge and keywords. Everything is written to
`--out` (run folders, memory, adapters, `learning.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="invented-domain")
    ap.add_argument("--turns", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", type=Path, default=Path(f"/tmp/teachback-learning-{time.strftime('%H%M%S')}"))
    args = ap.parse_args()

    from rich.console import Console

    from teachback.agents.grounding import Knowledge
    from teachback.agents.judge import Rubric
    from teachback.memory.finetune import TrainConfig
    from teachback.scenarios.loader import find_scenario, load_scenario
    from teachback.scenarios.quiz import quiz_student
    from teachback.scenarios.rounds import run_rounds
    from teachback.scenarios.run import RunRequest

    args.out.mkdir(parents=True, exist_ok=True)
    os.chdir(args.out)  # the adapter registry and memory live here, away from the user's
    console = Console(highlight=False, width=120)
    loaded = load_scenario(find_scenario(args.scenario))
    scenario = loaded.scenario
    rubric = Rubric(Knowledge(loaded.knowledge_text), scenario.judge.threshold)
    print(f"load average: {os.getloadavg()[0]:.2f}", flush=True)

    t0 = time.time()
    ceiling = quiz_student(
        scenario.quiz,
        scenario.teacher.model,
        adapter=None,
        judge_model=scenario.judge.model,
        label="teacher-ceiling",
        context=rubric.notes_for,
    )
    ceiling.save(args.out / "quiz-teacher-ceiling.json")
    print(f"teacher ceiling quiz: {ceiling.totals()} ({time.time() - t0:.0f} s)", flush=True)

    request = RunRequest(
        scenario=str(loaded.path),
        turns=args.turns,
        out=args.out / "rounds",
        plain=True,
        memory_dir=args.out / "mem",
    )
    config = TrainConfig(rank=args.rank, alpha=float(args.rank), epochs=args.epochs, learning_rate=args.lr)
    outcomes = run_rounds(request, args.rounds, console, config=config)

    def score(q: object) -> dict:
        return q.totals() if q is not None else {}  # type: ignore[attr-defined]

    summary = {
        "scenario": scenario.name,
        "turns": args.turns,
        "rounds": args.rounds,
        "train": {"epochs": args.epochs, "rank": args.rank, "lr": args.lr},
        "before": score(outcomes[0].quiz_before),
        "after": [score(o.quiz_after) for o in outcomes],
        "accepted": [o.accepted for o in outcomes],
        "ceiling": ceiling.totals(),
        "seconds": time.time() - t0,
    }
    (args.out / "learning.json").write_text(json.dumps(summary, indent=1))
    n = summary["ceiling"]["n"]
    print(f"\n| quiz ({n} questions) | correct | judge accepted | judge mean |")
    print("|---|---|---|---|")
    rows = [("student before", summary["before"])]
    rows += [(f"student after round {i + 1}", a) for i, a in enumerate(summary["after"])]
    rows += [("grounded teacher (ceiling)", summary["ceiling"])]
    for name, t in rows:
        if t:
            accepted = f"{t['judge_accepted']}/{t['n']}"
            print(f"| {name} | {t['correct']}/{t['n']} | {accepted} | {t['judge_mean']:.2f} |")
    print(
        f"\naccepted turns per round: {summary['accepted']} · total {summary['seconds']:.0f} s · {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
