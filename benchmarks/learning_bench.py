#!/usr/bin/env python3
"""Did the student learn? The acceptance test of the loop, on every bundled fact scenario (or any scenario).

    .venv/bin/python benchmarks/learning_bench.py                          # every bundled fact scenario
    .venv/bin/python benchmarks/learning_bench.py --scenarios invented-domain --seeds 0,1,2 --rounds 2
    .venv/bin/python benchmarks/learning_bench.py --scenarios my.yaml --turns 24 --epochs 8

For each scenario and seed, with the bundled cast (the scenario's own models), it runs `--rounds` rounds of
at most `--turns` turns of dialogue, each followed by learning (`teachback run SCENARIO --rounds N`):
a student that learns by fine-tuning gets a LoRA adapter trained on the accepted turns of all rounds so
far; a student that learns by retrieval is quizzed with its memory's notes. It records:

- the quiz before, after round 1 and after round 2 (correct by keywords, out of the quiz's questions);
- the ceiling: the scenario's teacher answering the quiz from the notes a dialogue would show it;
- the precision of accepted turns: the share whose claims all hold, by the gate (no claim unsupported)
  and by the scenario's own facts (every claim stated by the curriculum's facts, aligned without a model);
- facts taught N/M after each round (in it and the rounds before), and the wall time of each round
  (dialogue, training and quizzes);
- where a turn's time goes: its median seconds, the teacher's and student's tokens per second, and the
  judge's seconds per judged answer (from the transcript's messages).

It prints a table per scenario, the medians over the seeds, and writes everything to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FACT_SCENARIOS = ("invented-domain", "classroom", "skill-procedure", "bidirectional", "teacher-panel")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default=",".join(FACT_SCENARIOS), help="bundled names or YAML paths")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (the targets use 0,1,2)")
    ap.add_argument("--turns", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, help="fine-tuning epochs (default: teachback finetune's)")
    ap.add_argument("--rank", type=int, help="LoRA rank (default: teachback finetune's)")
    ap.add_argument("--lr", type=float, help="peak learning rate (default: teachback finetune's)")
    ap.add_argument("--out", type=Path, default=Path(f"/tmp/teachback-learning-{time.strftime('%H%M%S')}"))
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    home = Path.cwd()
    print(f"load average: {os.getloadavg()[0]:.2f} · cores: {len(os.sched_getaffinity(0))}", flush=True)
    results: list[dict[str, Any]] = []
    for name in args.scenarios.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            os.chdir(home)
            results.append(bench_one(name.strip(), seed, args))
            (args.out / "learning.json").write_text(json.dumps(results, indent=1))
    os.chdir(home)
    print()
    for name in dict.fromkeys(r["scenario"] for r in results):
        print(table([r for r in results if r["scenario"] == name], args.rounds))
        print()
    print(f"everything is in {args.out}")
    return 0


def bench_one(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One scenario, one seed: ceiling, rounds, precision, facts; returns the figures as a dict."""
    from dataclasses import replace

    from rich.console import Console

    from teachback.agents.grounding import Knowledge
    from teachback.agents.judge import Rubric
    from teachback.memory.finetune import TrainConfig
    from teachback.scenarios.loader import find_scenario, load_scenario
    from teachback.scenarios.quiz import quiz_student
    from teachback.scenarios.rounds import run_rounds
    from teachback.scenarios.run import RunRequest, embedder

    loaded = load_scenario(find_scenario(name))
    scenario = loaded.scenario
    out = args.out / f"{scenario.name}-seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # the adapter registry and memory live here, away from the user's
    round_started: list[float] = []

    class TimedConsole(Console):
        """The console the rounds print to; its rule opens each round, so it times them."""

        def rule(self, *a: Any, **k: Any) -> None:
            round_started.append(time.monotonic())
            super().rule(*a, **k)

    console = TimedConsole(highlight=False, width=120, file=open(out / "console.log", "w"))  # noqa: SIM115
    rubric = Rubric(Knowledge(loaded.knowledge_text, embed=embedder()), scenario.judge.threshold)
    teacher = (scenario.teachers or [scenario.teacher])[0]

    t0 = time.monotonic()
    ceiling = quiz_student(
        scenario.quiz,
        teacher.model,
        adapter=None,
        judge_model=scenario.judge.model,
        label="teacher-ceiling",
        context=rubric.notes_for,
        seed=seed,
    )
    ceiling.save(out / "quiz-teacher-ceiling.json")
    print(
        f"{scenario.name} seed {seed}: ceiling {ceiling.totals()['correct']}/{len(scenario.quiz)}", flush=True
    )

    defaults = TrainConfig(seed=seed)
    config = replace(
        defaults,
        epochs=args.epochs or defaults.epochs,
        rank=args.rank or defaults.rank,
        alpha=float(args.rank or defaults.rank),
        learning_rate=args.lr or defaults.learning_rate,
    )
    request = RunRequest(
        scenario=str(loaded.path), turns=args.turns, out=out / "rounds", plain=True, seed=seed,
        memory_dir=out / "mem",
    )  # fmt: skip
    outcomes = run_rounds(request, args.rounds, console, config=config)
    ended = time.monotonic()
    bounds = [*round_started[1:], ended]
    first_seat = outcomes[0].seat
    mine = [o for o in outcomes if o.seat == first_seat]
    rounds = []
    so_far: set[int] = set()
    for i, o in enumerate(mine):
        figures = run_figures(o.run_dir, rubric, loaded)
        so_far |= set(figures["facts_taught_ids"])
        rounds.append(
            {
                "round": o.round,
                "turns": o.turns,
                "accepted": o.accepted,
                "quiz_before": _correct(o.quiz_before),
                "quiz_after": _correct(o.quiz_after),
                "seconds": round(bounds[i] - round_started[i], 1),
                **figures,
                "facts_taught_so_far": len(so_far),  # in this round and the ones before
            }
        )
    result = {
        "scenario": scenario.name,
        "seed": seed,
        "quiz_items": len(scenario.quiz),
        "ceiling": ceiling.totals()["correct"],
        "learning": "retrieval" if mine[0].adapter is None else "finetune",
        "train": {"epochs": config.epochs, "rank": config.rank, "lr": config.learning_rate},
        "rounds": rounds,
        "seconds": round(ended - t0, 1),
    }
    (out / "learning.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)
    return result


def run_figures(run_dir: Path, rubric: Any, loaded: Any) -> dict[str, Any]:
    """Acceptance, precision by the gate and by the facts, and facts taught, from one round's transcript."""
    from teachback.agents.claims import KnowledgeIndex
    from teachback.transcripts.events import RunStarted, TurnAccepted, TurnRejected, Verdict
    from teachback.transcripts.reader import read_transcript

    events = read_transcript(run_dir / "transcript.jsonl")
    header = next(e for e in events if isinstance(e, RunStarted))
    accepted = [e for e in events if isinstance(e, TurnAccepted)]
    decided = len(accepted) + sum(isinstance(e, TurnRejected) for e in events)
    verdicts = {}  # turn -> the accepted answer's verdict
    for e in events:
        if isinstance(e, Verdict) and e.kind == "answer" and e.accepted:
            verdicts[e.turn] = e
    by_gate = sum(
        all(c.get("status") != "unsupported" for c in verdicts[a.turn].claims)
        for a in accepted
        if a.turn in verdicts
    )
    facts = KnowledgeIndex("\n\n".join(header.facts)) if header.facts else None
    by_facts = 0
    for a in accepted:
        claims = facts.claims(a.question, a.answer) if facts else []
        by_facts += bool(claims) and all(c.status != "unsupported" for c in claims)
    taught = {f for a in accepted for f in a.facts}
    return {
        **turn_timing(events),
        "acceptance": round(len(accepted) / decided, 3) if decided else None,
        "precision_gate": round(by_gate / len(accepted), 3) if accepted else None,
        "precision_facts": round(by_facts / len(accepted), 3) if accepted else None,
        "facts_taught": len(taught),
        "facts_taught_ids": sorted(taught),
        "facts": len(header.facts),
    }


def turn_timing(events: list[Any]) -> dict[str, Any]:
    """Median seconds per turn (its first event to its outcome), tokens/s of the teacher and student, and
    the judge's median seconds per judged answer (its message carries one line per claim it was asked)."""
    from teachback.transcripts.events import MessageDone, TurnAccepted, TurnRejected, TurnStarted

    started: dict[int, float] = {}
    spans: list[float] = []
    for e in events:
        if isinstance(e, TurnStarted):
            started.setdefault(e.turn, e.t)
        elif isinstance(e, (TurnAccepted, TurnRejected)) and e.turn in started:
            spans.append(e.t - started[e.turn])

    def rate(role: str) -> float | None:
        said = [e for e in events if isinstance(e, MessageDone) and e.role == role and e.seconds > 0]
        seconds = sum(e.seconds for e in said)
        return round(sum(e.tokens for e in said) / seconds, 1) if seconds else None

    judged = [e.seconds for e in events if isinstance(e, MessageDone) and e.role == "judge"]
    return {
        "seconds_per_turn": round(statistics.median(spans), 1) if spans else None,
        "teacher_tokens_per_s": rate("teacher"),
        "student_tokens_per_s": rate("student"),
        "judge_seconds": round(statistics.median(judged), 2) if judged else None,
    }


def _so_far(figures: dict[str, Any]) -> int:
    """Facts taught in a round and the rounds before it (older results: in the round alone)."""
    return int(figures.get("facts_taught_so_far", figures["facts_taught"]))


def _correct(quiz: Any) -> int | None:
    return quiz.totals()["correct"] if quiz is not None else None


def table(results: list[dict[str, Any]], n_rounds: int) -> str:
    """A markdown table for one scenario: one row per seed, then the medians."""
    first = results[0]
    n = first["quiz_items"]
    head = ["seed", "before"] + [f"after r{r}" for r in range(1, n_rounds + 1)]
    head += ["ceiling", "accepted", "precision (gate / facts)", "facts taught", "minutes per round"]
    lines = [f"### {first['scenario']} ({first['learning']}, quiz of {n})", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---|" * len(head))

    def row(
        label: str, before: Any, afters: list[Any], ceiling: Any, acc: Any, prec: str, facts: str, mins: str
    ) -> str:
        cells = (
            [label, f"{before}/{n}"]
            + [f"{a}/{n}" for a in afters]
            + [f"{ceiling}/{n}", acc, prec, facts, mins]
        )
        return "| " + " | ".join(str(c) for c in cells) + " |"

    for r in results:
        rounds = r["rounds"]
        lines.append(
            row(
                str(r["seed"]),
                rounds[0]["quiz_before"],
                [x["quiz_after"] for x in rounds],
                r["ceiling"],
                " / ".join(f"{x['acceptance']:.0%}" for x in rounds if x["acceptance"] is not None),
                " · ".join(
                    f"{x['precision_gate']:.0%} / {x['precision_facts']:.0%}"
                    for x in rounds
                    if x["precision_gate"] is not None
                ),
                " → ".join(f"{_so_far(x)}/{x['facts']}" for x in rounds),
                " / ".join(f"{x['seconds'] / 60:.1f}" for x in rounds),
            )
        )
    if len(results) > 1:
        med = statistics.median
        afters = [
            med(r["rounds"][i]["quiz_after"] or 0 for r in results) for i in range(len(results[0]["rounds"]))
        ]
        lines.append(
            row(
                "median",
                med(r["rounds"][0]["quiz_before"] or 0 for r in results),
                afters,
                med(r["ceiling"] for r in results),
                f"{med(r['rounds'][0]['acceptance'] or 0 for r in results):.0%}",
                f"{med(min(x['precision_gate'] or 0 for x in r['rounds']) for r in results):.0%} / "
                f"{med(min(x['precision_facts'] or 0 for x in r['rounds']) for r in results):.0%}",
                f"{med(_so_far(r['rounds'][-1]) for r in results)}/{first['rounds'][-1]['facts']}",
                f"{med(x['seconds'] for r in results for x in r['rounds']) / 60:.1f}",
            )
        )
    ceiling = statistics.median(r["ceiling"] for r in results) or 1
    share = [
        statistics.median(r["rounds"][i]["quiz_after"] or 0 for r in results) / ceiling
        for i in range(n_rounds)
    ]
    lines.append("")
    lines.append("share of the ceiling after each round (medians): " + " · ".join(f"{s:.0%}" for s in share))
    timing = [x for r in results for x in r["rounds"] if x.get("seconds_per_turn") is not None]
    if timing:

        def middle(key: str) -> str:
            values = [x[key] for x in timing if x.get(key) is not None]
            return f"{statistics.median(values):g}" if values else "–"

        lines.append(
            f"a turn (medians over rounds): {middle('seconds_per_turn')} s; teacher "
            f"{middle('teacher_tokens_per_s')} tokens/s, student {middle('student_tokens_per_s')} tokens/s; "
            f"the judge {middle('judge_seconds')} s per answer it was asked about"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
