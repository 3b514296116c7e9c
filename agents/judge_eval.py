"""`teachback judge-eval`: how often the judge accepts wrong answers and rejects right ones.

    teachback judge-eval [--judge MODEL] [--set FILE] [--limit N] [--json OUT]

The bundled labelled set (`judge_calibration.yaml`) holds questions with a reference answer and candidate
answers labelled correct or not: correct ones, paraphrases, fluent but wrong ones, partly right ones,
off-topic ones, and ones that try to instruct the judge. Every candidate is judged the way a quiz judges
a student's answer (`Rubric.reference_answer`), and three deciders are scored on the same verdicts:

    llm        the judge model's verdict alone (score / 10 >= threshold)
    grounded   the grounded checks alone (no model)
    combined   both, as shipped: what each component contributes is the difference between the rows

False-accept rate = wrong answers accepted / wrong answers; false-reject rate = right answers rejected /
right answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teachback.errors import ScenarioError

if TYPE_CHECKING:
    from autogen_core.models import ChatCompletionClient

CALIBRATION_SET = Path(__file__).with_name("judge_calibration.yaml")
DECIDERS = ("llm", "grounded", "combined")
DECIDER_NAMES = {
    "llm": "llm verdict alone",
    "grounded": "grounded checks alone",
    "combined": "combined (shipped)",
}
THRESHOLD = 0.6


@dataclass(frozen=True)
class LabelledAnswer:
    question: str
    reference: str
    answer: str
    correct: bool
    kind: str


@dataclass
class JudgedAnswer:
    """One labelled answer and each decider's verdict on it."""

    item: LabelledAnswer
    accepted: dict[str, bool]  # decider -> accepted
    llm_score: float | None  # None: the model gave no parsable verdict
    reason: str  # the combined judgement's reason


@dataclass(frozen=True)
class Rates:
    n: int
    accuracy: float
    false_accept_rate: float
    false_reject_rate: float
    false_accepts: int
    false_rejects: int
    wrong: int  # answers labelled not correct
    right: int  # answers labelled correct


def rates(judged: Sequence[JudgedAnswer], decider: str) -> Rates:
    """The decider's accuracy and error rates over the judged answers.

    >>> a = LabelledAnswer("q", "r", "a", True, "correct")
    >>> b = LabelledAnswer("q", "r", "b", False, "wrong")
    >>> rates([JudgedAnswer(a, {"x": False}, None, ""), JudgedAnswer(b, {"x": False}, None, "")], "x")
    Rates(n=2, accuracy=0.5, false_accept_rate=0.0, false_reject_rate=1.0, false_accepts=0, false_rejects=1, wrong=1, right=1)
    """  # noqa: E501
    right = [j for j in judged if j.item.correct]
    wrong = [j for j in judged if not j.item.correct]
    false_accepts = sum(j.accepted[decider] for j in wrong)
    false_rejects = sum(not j.accepted[decider] for j in right)
    n = len(judged)
    return Rates(
        n=n,
        accuracy=round((n - false_accepts - false_rejects) / n, 4) if n else 0.0,
        false_accept_rate=round(false_accepts / len(wrong), 4) if wrong else 0.0,
        false_reject_rate=round(false_rejects / len(right), 4) if right else 0.0,
        false_accepts=false_accepts,
        false_rejects=false_rejects,
        wrong=len(wrong),
        right=len(right),
    )


@dataclass
class EvalResult:
    judged: list[JudgedAnswer]
    judge: str
    seconds: float
    threshold: float = THRESHOLD
    kinds: list[str] = field(default_factory=list)

    def rates(self) -> dict[str, Rates]:
        return {d: rates(self.judged, d) for d in DECIDERS}

    def accepted_by_kind(self) -> dict[str, dict[str, str]]:
        """kind -> decider -> 'accepted/total'."""
        out: dict[str, dict[str, str]] = {}
        for kind in dict.fromkeys(j.item.kind for j in self.judged):
            of_kind = [j for j in self.judged if j.item.kind == kind]
            out[kind] = {d: f"{sum(j.accepted[d] for j in of_kind)}/{len(of_kind)}" for d in DECIDERS}
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "judge": self.judge,
            "threshold": self.threshold,
            "seconds": round(self.seconds, 3),
            "rates": {d: asdict(r) for d, r in self.rates().items()},
            "accepted_by_kind": self.accepted_by_kind(),
            "items": [
                {**asdict(j.item), "accepted": j.accepted, "llm_score": j.llm_score, "reason": j.reason}
                for j in self.judged
            ],
        }

    def report(self) -> str:
        """The table `teachback judge-eval` prints."""
        right = sum(j.item.correct for j in self.judged)
        lines = [
            f"judge-eval: {len(self.judged)} answers ({right} correct, {len(self.judged) - right} not), "
            f"judge {self.judge}, threshold {self.threshold:g}, {self.seconds:.0f} s",
            f"{'decider':<24}{'accuracy':>10}{'false-accept':>14}{'false-reject':>14}",
        ]
        for decider, r in self.rates().items():
            lines.append(
                f"{DECIDER_NAMES[decider]:<24}{r.accuracy:>10.3f}"
                f"{r.false_accept_rate:>9.3f} {r.false_accepts:>2}/{r.wrong:<2}"
                f"{r.false_reject_rate:>9.3f} {r.false_rejects:>2}/{r.right:<2}"
            )
        lines.append(f"{'accepted, by kind':<24}" + "".join(f"{d:>14}" for d in DECIDERS))
        for kind, counts in self.accepted_by_kind().items():
            lines.append(f"  {kind:<22}" + "".join(f"{counts[d]:>14}" for d in DECIDERS))
        return "\n".join(lines)


def load_calibration(path: Path = CALIBRATION_SET) -> list[LabelledAnswer]:
    """The labelled answers of a calibration file, in file order."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return [
            LabelledAnswer(q["question"], q["reference"], a["answer"], bool(a["correct"]), a["kind"])
            for q in data["questions"]
            for a in q["answers"]
        ]
    except OSError as exc:
        raise ScenarioError([f"{path}: cannot read: {exc.strerror}"]) from None
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise ScenarioError(
            [f"{path}: not a calibration set: expected questions: [{{question, reference, answers}}] ({exc})"]
        ) from None


async def evaluate(
    items: Sequence[LabelledAnswer],
    judge: ChatCompletionClient,
    *,
    threshold: float = THRESHOLD,
    on_item: Callable[[JudgedAnswer], None] | None = None,
) -> list[JudgedAnswer]:
    """Ask the judge model about every answer and decide each one three ways."""
    from teachback.agents.grounding import Knowledge
    from teachback.agents.judge import Rubric, ask_verdict

    judged: list[JudgedAnswer] = []
    for item in items:
        rubric = Rubric(Knowledge(item.reference), threshold)
        verdict, _ = await ask_verdict(judge, item.question, item.answer, rubric.notes_for(item.question))
        combined = rubric.reference_answer(item.question, item.answer, verdict)
        grounded = rubric.reference_answer(item.question, item.answer, None)
        llm_score = verdict.score / 10 if verdict is not None else None
        accepted = {
            "llm": llm_score is not None and llm_score >= threshold,
            "grounded": grounded.accepted,
            "combined": combined.accepted,
        }
        judged.append(JudgedAnswer(item, accepted, llm_score, combined.reason))
        if on_item is not None:
            on_item(judged[-1])
    return judged


def evaluate_model(
    items: Sequence[LabelledAnswer],
    judge_model: str,
    *,
    seed: int = 0,
    threshold: float = THRESHOLD,
    on_item: Callable[[JudgedAnswer], None] | None = None,
) -> EvalResult:
    """Open the judge as a run does (a managed server for a local model), evaluate, stop the server."""
    from teachback.agents.cast import make_client
    from teachback.agents.llama_server import ServerPool
    from teachback.agents.models import check_litellm_model, resolve
    from teachback.scenarios.schema import JudgeRole

    ref = resolve(judge_model)
    if not ref.is_local:
        check_litellm_model(ref.spec)
    started = time.monotonic()
    with ServerPool() as pool:
        client = make_client("judge", ref, JudgeRole(model=judge_model), pool=pool, seed=seed)

        async def run() -> list[JudgedAnswer]:
            try:
                return await evaluate(items, client, threshold=threshold, on_item=on_item)
            finally:
                await client.close()

        judged = asyncio.run(run())
    return EvalResult(judged, judge_model, time.monotonic() - started, threshold)


# --- the command ---------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "judge-eval", help="measure the judge on labelled answers: accuracy, false-accept, false-reject"
    )
    p.add_argument("--judge", metavar="MODEL", default="local/smollm2-135m", help="the judge's model string")
    p.add_argument(
        "--set", dest="set_file", type=Path, metavar="FILE", help="a labelled set (default: bundled)"
    )
    p.add_argument("--limit", type=int, metavar="N", help="only the first N answers")
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="acceptance threshold (default 0.6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", type=Path, metavar="OUT", help="write every verdict as JSON")
    p.add_argument("--quiet", action="store_true", help="no line per answer")
    p.set_defaults(func=run_judge_eval)


def run_judge_eval(args: argparse.Namespace) -> int:
    items = load_calibration(args.set_file or CALIBRATION_SET)
    if args.limit is not None:
        items = items[: max(0, args.limit)]
    if not items:
        raise ScenarioError([f"{args.set_file or CALIBRATION_SET}: no labelled answers to judge"])

    def show(j: JudgedAnswer) -> None:
        if args.quiet:
            return
        mark = "ok " if j.accepted["combined"] == j.item.correct else "ERR"
        llm = f"{j.llm_score:.1f}" if j.llm_score is not None else " - "
        verdict = "accept" if j.accepted["combined"] else "reject"
        print(
            f"{mark} {j.item.kind:<10} llm {llm} {verdict}  {j.item.answer[:60]}  ({j.reason[:50]})",
            flush=True,
        )

    result = evaluate_model(items, args.judge, seed=args.seed, threshold=args.threshold, on_item=show)
    print(result.report())
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return 0
