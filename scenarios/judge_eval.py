"""`teachback judge-eval`: how often the judge accepts wrong answers and rejects right ones, in both modes.

    teachback judge-eval [--judge MODEL] [--set FILE] [--limit N] [--json OUT]       # the quiz judge
    teachback judge-eval --knowledge FILE --set FILE [--judge MODEL]                 # the dialogue gate
    teachback judge-eval --gate                                                      # every bundled gate set

The quiz judge: the bundled labelled set (`judge_calibration.yaml`) holds questions with a reference answer
and candidate answers labelled correct or not: correct ones, paraphrases, fluent but wrong ones, partly
right ones, off-topic ones, and ones that try to instruct the judge. Every candidate is judged the way a
quiz judges a student's answer (`Rubric.reference_answer`). Three deciders are scored on the same verdicts:

    llm        the judge model's verdict alone (score / 10 >= threshold)
    grounded   the grounded checks alone (no model)
    combined   both, as shipped: what each component contributes is the difference between the rows

The dialogue gate: a gate set (`scenarios/gate_sets/*.yaml`) holds answers from real dialogues and
variants of them, labelled by reading the knowledge: right ones (also with number words against digits,
plurals, a true extra fact) and wrong ones, most of them recombining the knowledge's own names and numbers
(a swapped subject and object, a number or a day moved to another fact, a true fact answering another
question). Every answer is judged the way the gate judges a teacher's answer (`Rubric.answer`, against
the knowledge, with no reference), by the same three deciders:

    llm        the judge model alone: every claim of the answer entailed (P(true) >= the judge's threshold) by
               the two knowledge sentences that share most with it
    grounded   the claim alignment alone: every claim supported by one sentence, and the question answered
    combined   the gate as shipped (alignment, then the model on what alignment leaves open)

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

from teachback.agents.models import DEFAULT_JUDGE
from teachback.errors import ScenarioError

if TYPE_CHECKING:
    from autogen_core.models import ChatCompletionClient

    from teachback.agents.entailment import Entailer

CALIBRATION_SET = Path(__file__).resolve().parents[1] / "agents" / "judge_calibration.yaml"  # beside judge.py
DECIDERS = ("llm", "grounded", "combined")
DECIDER_NAMES = {
    "llm": "llm verdict alone",
    "grounded": "grounded checks alone",
    "combined": "combined (shipped)",
}
GATE_DECIDER_NAMES = {
    "llm": "model alone (entails)",
    "grounded": "claim alignment alone",
    "combined": "gate (shipped)",
}
THRESHOLD = 0.6


@dataclass(frozen=True)
class LabelledAnswer:
    question: str
    reference: str  # the quiz judge's reference answer; "" in a gate set, which judges against knowledge
    answer: str
    correct: bool
    kind: str
    source: str = ""  # a gate set's: transcript (a real teacher answer) or crafted


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
    mode: str = "quiz"  # quiz: against a reference answer; gate: against the knowledge, as in a dialogue

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
            "mode": self.mode,
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
        what = "the dialogue gate" if self.mode == "gate" else "the quiz judge"
        names = GATE_DECIDER_NAMES if self.mode == "gate" else DECIDER_NAMES
        lines = [
            f"judge-eval ({what}): {len(self.judged)} answers "
            f"({right} correct, {len(self.judged) - right} not), "
            f"judge {self.judge}, threshold {self.threshold:g}, {self.seconds:.0f} s",
            f"{'decider':<24}{'accuracy':>10}{'false-accept':>14}{'false-reject':>14}",
        ]
        for decider, r in self.rates().items():
            lines.append(
                f"{names[decider]:<24}{r.accuracy:>10.3f}"
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


@dataclass(frozen=True)
class GateSet:
    """A labelled set for the dialogue gate: its answers and the knowledge they are judged against."""

    path: Path
    knowledge: Path
    items: list[LabelledAnswer]


def load_gate_set(path: Path, knowledge: Path | None = None) -> GateSet:
    """A gate set file; its knowledge is `knowledge`, else the file the set names (relative to the set)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        named = data.get("knowledge") if isinstance(data, dict) else None
        if knowledge is None:
            if not named:
                raise ScenarioError([f"{path}: names no knowledge file: give --knowledge FILE"])
            knowledge = (Path(path).parent / str(named)).resolve()
        items = [
            LabelledAnswer(
                q["question"], "", a["answer"], bool(a["correct"]), a["kind"], str(a.get("source", ""))
            )
            for q in data["questions"]
            for a in q["answers"]
        ]
    except OSError as exc:
        raise ScenarioError([f"{path}: cannot read: {exc.strerror}"]) from None
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ScenarioError(
            [
                f"{path}: not a gate set: expected knowledge: FILE and "
                f"questions: [{{question, answers}}] ({exc})"
            ]
        ) from None
    if not Path(knowledge).is_file():
        raise ScenarioError([f"{path}: knowledge file {knowledge} not found: give --knowledge FILE"])
    return GateSet(Path(path), Path(knowledge), items)


def bundled_gate_sets() -> list[Path]:
    """The gate sets that ship with teachback, one per bundled knowledge file."""
    return sorted(Path(__file__).resolve().with_name("gate_sets").glob("*.yaml"))


async def evaluate_gate(
    items: Sequence[LabelledAnswer],
    knowledge_text: str,
    judge: Entailer | None,
    *,
    threshold: float = THRESHOLD,
    on_item: Callable[[JudgedAnswer], None] | None = None,
    embed: Callable[[list[str]], Any] | None = None,
) -> list[JudgedAnswer]:
    """Judge every answer as the dialogue gate does, and decide it three ways (see the module docstring).

    With `judge` None the model is never asked: only the grounded decider is meaningful. `embed` is the
    sentence embedder a run gives the gate (agents/minilm.py), or None for words alone.
    """
    from teachback.agents.claims import SUPPORTED
    from teachback.agents.grounding import Knowledge
    from teachback.agents.judge import ENTAILED, Rubric, addresses_the_judge, gate

    rubric = Rubric(Knowledge(knowledge_text, embed=embed), threshold)

    async def p_true(premise: str, claim: str) -> float | None:
        return None if judge is None else await judge.p_true(premise, claim)

    judged: list[JudgedAnswer] = []
    for item in items:
        claims = rubric.claims(item.question, item.answer)
        alone = []  # the model alone: each claim against the two sentences that share most with it
        for claim in claims:
            facts = rubric.index.facts_for(claim.text, 2)
            alone.append(await p_true("\n".join(f"- {f.text}" for f in facts), claim.text))
        model_alone = (
            bool(claims)
            and not addresses_the_judge(item.answer)
            and all(p is not None and p >= (judge.threshold if judge else ENTAILED) for p in alone)
        )
        grounded = rubric.answer(item.question, item.answer, None, claims)
        grounded_ok = grounded.accepted and all(c.status == SUPPORTED for c in claims)
        combined = await gate(rubric, judge, item.question, item.answer) if judge is not None else grounded
        ps = [p for p in alone if p is not None]
        judged.append(
            JudgedAnswer(
                item,
                {"llm": model_alone, "grounded": grounded_ok, "combined": combined.accepted},
                round(min(ps), 3) if ps else None,
                combined.reason,
            )
        )
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
    knowledge_text: str | None = None,
) -> EvalResult:
    """Open the judge as a run does (a managed server for a local model), evaluate, stop the server.

    With `knowledge_text`, the items are a gate set and are judged as the dialogue gate judges answers."""
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
                if knowledge_text is not None:
                    from teachback.agents.cast import make_entailer

                    entailer = make_entailer(judge_model, client)
                    try:
                        from teachback.agents.minilm import encode

                        return await evaluate_gate(
                            items,
                            knowledge_text,
                            entailer,
                            threshold=threshold,
                            on_item=on_item,
                            embed=encode,
                        )
                    finally:
                        close = getattr(entailer, "close", None)
                        if close is not None:
                            close()
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
    p.add_argument(
        "--judge", metavar="MODEL", default=DEFAULT_JUDGE, help=f"the judge's model (default {DEFAULT_JUDGE})"
    )
    p.add_argument(
        "--set",
        dest="set_files",
        type=Path,
        action="append",
        metavar="FILE",
        help="a labelled set (default: the bundled quiz-judge set); repeat for several gate sets",
    )
    p.add_argument(
        "--knowledge",
        type=Path,
        metavar="FILE",
        help="judge the set as the dialogue gate does, against this knowledge (default: the set's own)",
    )
    p.add_argument("--gate", action="store_true", help="the dialogue gate on every bundled gate set")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N answers of each set")
    p.add_argument("--threshold", type=float, default=THRESHOLD, help="acceptance threshold (default 0.6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_out", type=Path, metavar="OUT", help="write every verdict as JSON")
    p.add_argument("--quiet", action="store_true", help="no line per answer")
    p.set_defaults(func=run_judge_eval)


def run_judge_eval(args: argparse.Namespace) -> int:
    gate_mode = args.gate or args.knowledge is not None or any(_is_gate_set(f) for f in args.set_files or [])

    def show(j: JudgedAnswer) -> None:
        if args.quiet:
            return
        mark = "ok " if j.accepted["combined"] == j.item.correct else "ERR"
        llm = f"{j.llm_score:.2f}" if j.llm_score is not None else " -  "
        verdict = "accept" if j.accepted["combined"] else "reject"
        print(
            f"{mark} {j.item.kind:<13} llm {llm} {verdict}  {j.item.answer[:60]:<60}  ({j.reason[:70]})",
            flush=True,
        )

    if not gate_mode:
        path = (args.set_files or [CALIBRATION_SET])[0]
        items = load_calibration(path)
        if args.limit is not None:
            items = items[: max(0, args.limit)]
        if not items:
            raise ScenarioError([f"{path}: no labelled answers to judge"])
        result = evaluate_model(items, args.judge, seed=args.seed, threshold=args.threshold, on_item=show)
        print(result.report())
        results = [result]
    else:
        files = list(args.set_files or []) + (bundled_gate_sets() if args.gate else [])
        if not files:
            raise ScenarioError(["judge-eval --knowledge FILE needs --set FILE (a gate set), or use --gate"])
        sets = [load_gate_set(f, args.knowledge) for f in files]
        results = []
        for gate_set in sets:
            items = gate_set.items[: max(0, args.limit)] if args.limit is not None else gate_set.items
            if not items:
                raise ScenarioError([f"{gate_set.path}: no labelled answers to judge"])
            print(f"== {gate_set.path.name} against {gate_set.knowledge}", flush=True)
            text = gate_set.knowledge.read_text(encoding="utf-8")
            result = evaluate_model(
                items, args.judge, seed=args.seed, threshold=args.threshold, on_item=show, knowledge_text=text
            )
            result.mode = "gate"
            print(result.report() + "\n", flush=True)
            results.append(result)
        if len(results) > 1:
            total = EvalResult(
                [j for r in results for j in r.judged],
                args.judge,
                sum(r.seconds for r in results),
                args.threshold,
                mode="gate",
            )
            print("== all gate sets")
            print(total.report())
            results.append(total)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        data = results[-1].to_json()
        if len(results) > 1:
            data["sets"] = [r.to_json() for r in results[:-1]]
        args.json_out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return 0


def _is_gate_set(path: Path) -> bool:
    """Whether a labelled set is a gate set (it names its knowledge) rather than a quiz-judge set."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "knowledge" in data
