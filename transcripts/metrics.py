"""A run's figures, computed from its events (and its quiz and fine-tune files when there are some).

    metrics = run_metrics(read_transcript("run/transcript.jsonl"), quiz=[before, after], finetune=ft)
    metrics["totals"]["acceptance_rate"]      # 0.67
    metrics["objectives"][0]                  # {"objective": ..., "accepted": 2, "rejected": 1, ...}
    json.dumps(metrics)                       # plain JSON: the report's metrics.json

Pure functions: nothing here reads files. Prices come from `price`, a function `model -> (USD per prompt
token, USD per completion token)` or None when unknown; the default asks litellm's local cost map, and
only for models that are not local, so a local-only run never imports litellm.

A turn cut off by a kill, a crash or Ctrl-C before its verdict is played again by `--resume` under the
same number. Its first, abandoned attempt counts nowhere but in tokens and cost, which were spent
(`without_abandoned`); old transcripts are read the same way, with no marker needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from teachback.transcripts.events import (
    ANSWER,
    QUESTION,
    TEACHBACK,
    Event,
    MemoryRecalled,
    MessageDone,
    Notice,
    PanelDecision,
    RunFinished,
    RunStarted,
    TokenDelta,
    TurnAccepted,
    TurnRejected,
    TurnStarted,
    Verdict,
)

METRICS_VERSION = 1
KINDS = (QUESTION, ANSWER, TEACHBACK)
HISTOGRAM_BINS = 10  # judge scores in [0, 1], in tenths
LOCAL_PREFIXES = ("local/", "local:")
TURN_EVENTS = (TurnStarted, TokenDelta, MessageDone, Verdict, PanelDecision, MemoryRecalled)  # of one turn

Price = Callable[[str], "tuple[float, float] | None"]
StudentFiles = tuple[str, Sequence[Mapping[str, Any]], "Mapping[str, Any] | None"]  # seat, quiz, fine-tune


def run_metrics(
    events: Sequence[Event],
    *,
    quiz: Sequence[Mapping[str, Any]] = (),
    finetune: Mapping[str, Any] | None = None,
    classroom: Sequence[StudentFiles] = (),
    price: Price | None = None,
) -> dict[str, Any]:
    """Every figure the report shows, as one JSON-serialisable dict (see the module docstring).

    `quiz` holds the quiz rounds in order (before, ..., after), each a quiz JSON document with a `label`.
    A classroom's students have their own instead, in `classroom`: (seat, its quiz rounds, its fine-tune
    record) each, figured in `metrics["classroom"]` (`student_learning`).
    Turns a resume played again count once (`without_abandoned`); tokens and cost count every message.
    """
    usage = usage_by_speaker(events, price or litellm_price)
    abandoned = len(abandoned_turns(events))
    events = without_abandoned(events)
    scores = judge_scores(events)
    quiz_part = quiz_comparison(quiz) if quiz else None
    finetune_part = finetune_curves(finetune) if finetune is not None else None
    return {
        "version": METRICS_VERSION,
        "run": run_info(events),
        "totals": {**totals(events, scores, usage, quiz_part, finetune_part), "abandoned_turns": abandoned},
        "turns": turn_outcomes(events),
        "scores": scores,
        "score_histogram": score_histogram(scores),
        "objectives": objective_acceptance(events),
        "facts": fact_coverage(events, [*quiz, *(q for _seat, rounds, _ft in classroom for q in rounds)]),
        "students": student_acceptance(events),
        "timeline": timeline(events),
        "usage": usage,
        "finetune": finetune_part,
        "quiz": quiz_part,
        "classroom": [student_learning(*student) for student in classroom],
        "notices": [
            {"t": e.t, "turn": e.turn, "level": e.level, "message": e.message}
            for e in events
            if isinstance(e, Notice) and e.level in ("warning", "error")
        ],
    }


# --- the run --------------------------------------------------------------------------------------------


def abandoned_turns(events: Sequence[Event]) -> list[list[int]]:
    """The positions of each abandoned turn attempt's events: a turn started and not yet accepted or
    rejected when a resumed run's header (a later `run_started`) came, so the resume played it again.

    [Started(1), Accepted(1), Started(2), Verdict(2), RunStarted, Started(2), Accepted(2)] -> [[2, 3]]

    A turn still open at the end of the events is not abandoned: it is being played, or the run ended
    there and was not resumed.
    """
    out: list[list[int]] = []
    open_turn: int | None = None
    positions: list[int] = []
    for i, e in enumerate(events):
        if isinstance(e, RunStarted):
            if open_turn is not None:
                out.append(positions)
            open_turn, positions = None, []
        elif isinstance(e, TurnStarted):
            open_turn, positions = e.turn, [i]
        elif isinstance(e, (TurnAccepted, TurnRejected)) and e.turn == open_turn:
            open_turn, positions = None, []
        elif isinstance(e, TURN_EVENTS) and open_turn is not None and e.turn == open_turn:
            positions.append(i)
    return out


def without_abandoned(events: Sequence[Event]) -> list[Event]:
    """The events without those of abandoned turn attempts (see `abandoned_turns`); notices stay."""
    dropped = {i for positions in abandoned_turns(events) for i in positions}
    return [e for i, e in enumerate(events) if i not in dropped]


def run_info(events: Sequence[Event]) -> dict[str, Any]:
    """What ran: the first header, how many times it was resumed, and how it finished."""
    headers = [e for e in events if isinstance(e, RunStarted)]
    finished = [e for e in events if isinstance(e, RunFinished)]
    first = headers[0] if headers else None
    options = first.options if first and isinstance(first.options, dict) else {}
    return {
        "run_id": first.run_id if first else "",
        "scenario": first.scenario if first else "",
        "started_at": first.started_at if first else "",
        "models": dict(first.models) if first else {},
        "seed": first.seed if first else None,
        "objectives": list(first.objectives) if first else [],
        "turn_budget": _count(options.get("turns")),
        "threshold": _finite(options.get("threshold")),
        "adapter": str(options["adapter"]) if options.get("adapter") else None,
        "resumes": max(0, len(headers) - 1),
        "status": finished[-1].status if finished else "unfinished",
        "reason": finished[-1].reason if finished else "",
        "duration_s": round(max((e.t for e in events), default=0.0), 3),
    }


def turn_outcomes(events: Sequence[Event]) -> list[dict[str, Any]]:
    """One row per turn: its objective, outcome and the last verdict of each kind.

    [TurnStarted(turn=1, objective="o"), Verdict(turn=1, kind="answer", score=0.8, ...), TurnAccepted(...)]
    -> [{"turn": 1, "objective": "o", "outcome": "accepted", "answer": 0.8, ...}]
    """
    rows: dict[int, dict[str, Any]] = {}

    def row(turn: int) -> dict[str, Any]:
        if turn not in rows:
            rows[turn] = {"turn": turn, "objective": "", "outcome": None, "reason": ""}
            rows[turn].update({kind: None for kind in KINDS})
            rows[turn]["attempts"] = 0
        return rows[turn]

    for e in events:
        if isinstance(e, TurnStarted):
            row(e.turn)["objective"] = e.objective
        elif isinstance(e, Verdict):
            r = row(e.turn)
            r[e.kind] = _finite(e.score)
            if e.kind == ANSWER:
                r["attempts"] = max(r["attempts"], e.attempt)
        elif isinstance(e, TurnAccepted):
            r = row(e.turn)
            r.update(outcome="accepted", objective=r["objective"] or e.objective)
            r["covered"] = e.objective_covered
        elif isinstance(e, TurnRejected):
            r = row(e.turn)
            r.update(outcome="rejected", objective=r["objective"] or e.objective, reason=e.reason)
    return [rows[t] for t in sorted(rows)]


# --- the judge ------------------------------------------------------------------------------------------


def judge_scores(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Every verdict in order: `{"i", "t", "turn", "kind", "attempt", "seat", "score", "accepted", ...}`.

    `seat` names the speaker whose message was judged (a panel's teacher, one of several students).
    """
    out: list[dict[str, Any]] = []
    for e in events:
        if isinstance(e, Verdict):
            out.append(
                {
                    "i": len(out),
                    "t": e.t,
                    "turn": e.turn,
                    "kind": e.kind,
                    "attempt": e.attempt,
                    "seat": str(getattr(e, "name", "") or ""),  # who was judged; "" in old transcripts
                    "score": _finite(e.score),
                    "accepted": bool(e.accepted),
                    "reason": e.reason,
                    "components": {k: _finite(v) for k, v in (e.components or {}).items()},
                }
            )
    return out


def score_histogram(scores: Sequence[Mapping[str, Any]], bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Counts of scores per bin of [0, 1], per verdict kind and in all; 1.0 falls in the last bin.

    [{"kind": "answer", "score": 0.95}, {"kind": "answer", "score": 1.0}] -> answer: [0, ..., 0, 2]
    """
    edges = [round(i / bins, 6) for i in range(bins + 1)]
    counts: dict[str, list[int]] = {"all": [0] * bins}
    for s in scores:
        score = s.get("score")
        if score is None:
            continue
        index = min(bins - 1, max(0, int(math.floor(float(score) * bins + 1e-9))))
        counts.setdefault(str(s.get("kind", "")), [0] * bins)[index] += 1
        counts["all"][index] += 1
    return {"edges": edges, "counts": counts}


def objective_acceptance(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Per objective (the header's first, in order, then any others): turns accepted and rejected, and
    the claims of its judged answers by status (supported, uncertain, unsupported).

    The acceptance rate is accepted / (accepted + rejected), None for an objective never tried.
    """
    order: list[str] = []
    for e in events:
        if isinstance(e, RunStarted):
            order.extend(o for o in e.objectives if o not in order)
    stats: dict[str, dict[str, Any]] = {}

    def entry(objective: str) -> dict[str, Any]:
        if objective not in order:
            order.append(objective)
        return stats.setdefault(
            objective,
            {
                "objective": objective,
                "turns": 0,
                "accepted": 0,
                "rejected": 0,
                "covered": False,
                "scores": [],
                "claims": {"supported": 0, "uncertain": 0, "unsupported": 0},
            },
        )

    current = ""  # the objective of the turn being played
    for e in events:
        if isinstance(e, Verdict) and e.kind == ANSWER and current:
            for claim in e.claims if isinstance(e.claims, list) else []:
                status = claim.get("status") if isinstance(claim, dict) else None
                if status in ("supported", "uncertain", "unsupported"):
                    entry(current)["claims"][status] += 1
        if isinstance(e, TurnStarted):
            current = e.objective
            entry(e.objective)["turns"] += 1
        elif isinstance(e, TurnAccepted):
            s = entry(e.objective)
            s["accepted"] += 1
            s["covered"] = s["covered"] or e.objective_covered
            s["scores"].append(_finite(e.score))
        elif isinstance(e, TurnRejected):
            entry(e.objective)["rejected"] += 1
        elif isinstance(e, RunFinished):
            for objective in e.objectives_covered:
                entry(objective)["covered"] = True
    out = []
    for objective in order:
        s = entry(objective)
        decided = s["accepted"] + s["rejected"]
        scores = [x for x in s.pop("scores") if x is not None]
        s["turns"] = max(s["turns"], decided)
        s["acceptance_rate"] = s["accepted"] / decided if decided else None
        s["mean_accepted_score"] = sum(scores) / len(scores) if scores else None
        out.append(s)
    return out


def fact_coverage(events: Sequence[Event], quiz: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The curriculum's facts: how many accepted turns taught each, and how the quiz questions about it
    went in each quiz round (`quiz` in order, before .. after; a question names its facts in `facts`).

    Empty (`{"facts": []}`) for transcripts from before fact coverage.
    """
    header = next((e for e in events if isinstance(e, RunStarted)), None)
    facts = [str(f) for f in (header.facts if header and isinstance(header.facts, list) else [])]
    taught = [0] * len(facts)
    for e in events:
        if isinstance(e, TurnAccepted) and isinstance(e.facts, list):
            for f in e.facts:
                if isinstance(f, int) and 0 <= f < len(facts):
                    taught[f] += 1
    rows: list[dict[str, Any]] = [
        {"fact": text, "taught": n, "quiz": []} for text, n in zip(facts, taught, strict=True)
    ]
    for round_ in quiz:
        marks: dict[int, list[bool]] = {}
        for item in _list(round_.get("items")):
            if not isinstance(item, Mapping):
                continue
            for f in _list(item.get("facts")):
                if isinstance(f, int) and 0 <= f < len(rows):
                    marks.setdefault(f, []).append(bool(item.get("correct")))
        for i, row in enumerate(rows):
            row["quiz"].append(marks.get(i))  # None: no question of this round asks about the fact
    return {
        "facts": rows,
        "taught": sum(1 for n in taught if n),
        "total": len(facts),
        "quiz_labels": [str(r.get("label") or "") for r in quiz],
    }


def student_acceptance(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Turns accepted and rejected per student seat (one row, named "", before several students)."""
    rows: dict[str, dict[str, Any]] = {}
    for e in events:
        if isinstance(e, (TurnAccepted, TurnRejected)):
            name = str(getattr(e, "student", "") or "")
            r = rows.setdefault(name, {"student": name, "accepted": 0, "rejected": 0})
            r["accepted" if isinstance(e, TurnAccepted) else "rejected"] += 1
    for r in rows.values():
        r["acceptance_rate"] = r["accepted"] / (r["accepted"] + r["rejected"])
    return list(rows.values())


# --- the dialogue ---------------------------------------------------------------------------------------


def timeline(events: Sequence[Event]) -> list[dict[str, Any]]:
    """Every complete message: when it ended (`t`), when it began (`start` = t - seconds), who, what.

    The verdict on an answer or a teach-back follows its message; it is attached as `verdict`.
    """
    out: list[dict[str, Any]] = []
    for e in events:
        if isinstance(e, MessageDone):
            seconds = max(0.0, _finite(e.seconds) or 0.0)
            out.append(
                {
                    "t": e.t,
                    "start": round(max(0.0, e.t - seconds), 3),
                    "turn": e.turn,
                    "role": e.role,
                    "name": e.name or e.role,
                    "kind": e.kind,
                    "attempt": e.attempt,
                    "model": e.model,
                    "tokens": max(0, int(e.tokens)),
                    "seconds": seconds,
                    "text": e.text,
                    "verdict": None,
                }
            )
        elif isinstance(e, Verdict):
            seat = getattr(e, "name", "")
            for m in reversed(out):  # the latest message of this turn (and seat) that the verdict is about
                if m["turn"] != e.turn or m["kind"] != e.kind or m["role"] == "judge":
                    continue
                if not seat or m["name"] == seat:
                    if m["verdict"] is None:
                        m["verdict"] = {
                            "score": _finite(e.score),
                            "accepted": bool(e.accepted),
                            "reason": e.reason,
                        }
                    break
    return out


# --- tokens and cost ------------------------------------------------------------------------------------


def is_local(model: str) -> bool:
    return model.startswith(LOCAL_PREFIXES) or not model


def litellm_price(model: str) -> tuple[float, float] | None:
    """(USD per prompt token, USD per completion token) from litellm's bundled cost map; None if unknown."""
    if is_local(model):
        return (0.0, 0.0)
    import contextlib
    import io
    import os

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    with contextlib.redirect_stdout(io.StringIO()):  # litellm prints a provider list for unknown models
        import litellm

        litellm.suppress_debug_info = True
        try:
            prompt, _ = litellm.cost_per_token(model=model, prompt_tokens=1_000_000, completion_tokens=0)
            _, completion = litellm.cost_per_token(model=model, prompt_tokens=0, completion_tokens=1_000_000)
        except Exception:  # noqa: BLE001 - litellm raises many kinds for a model it has no price for
            return None
    return (float(prompt) / 1e6, float(completion) / 1e6)


def usage_by_speaker(events: Sequence[Event], price: Price) -> dict[str, Any]:
    """Messages, tokens, generation seconds and cost per role, and per speaker (role and name).

    Cost counts the completion tokens each message reports, plus `prompt_tokens` when an event carries
    them; None when a model has no known price. Local models cost nothing.
    """
    prices: dict[str, tuple[float, float] | None] = {}
    speakers: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        if not isinstance(e, MessageDone):
            continue
        key = (e.role, e.name or e.role)
        s = speakers.setdefault(
            key,
            {"role": key[0], "name": key[1], "models": [], "messages": 0, "tokens": 0, "prompt_tokens": 0}
            | {"seconds": 0.0, "cost_usd": 0.0},
        )
        tokens, prompt_tokens = max(0, int(e.tokens)), max(0, int(getattr(e, "prompt_tokens", 0) or 0))
        s["messages"] += 1
        s["tokens"] += tokens
        s["prompt_tokens"] += prompt_tokens
        s["seconds"] = round(s["seconds"] + max(0.0, _finite(e.seconds) or 0.0), 3)
        if e.model not in s["models"]:
            s["models"].append(e.model)
        if e.model not in prices:
            prices[e.model] = price(e.model)
        unit = prices[e.model]
        if unit is None or s["cost_usd"] is None:
            s["cost_usd"] = None
        else:
            s["cost_usd"] += prompt_tokens * unit[0] + tokens * unit[1]
    by_speaker = sorted(speakers.values(), key=lambda s: (_role_rank(s["role"]), s["name"]))
    by_role: dict[str, dict[str, Any]] = {}
    for s in by_speaker:
        r = by_role.setdefault(
            s["role"],
            {"role": s["role"], "names": [], "models": [], "messages": 0, "tokens": 0, "prompt_tokens": 0}
            | {"seconds": 0.0, "cost_usd": 0.0},
        )
        r["names"].append(s["name"])
        r["models"].extend(m for m in s["models"] if m not in r["models"])
        for field in ("messages", "tokens", "prompt_tokens"):
            r[field] += s[field]
        r["seconds"] = round(r["seconds"] + s["seconds"], 3)
        r["cost_usd"] = (
            None if r["cost_usd"] is None or s["cost_usd"] is None else r["cost_usd"] + s["cost_usd"]
        )
    for s in (*by_speaker, *by_role.values()):
        s["tokens_per_s"] = s["tokens"] / s["seconds"] if s["seconds"] > 0 else None
    return {
        "by_role": list(by_role.values()),
        "by_speaker": by_speaker,
        "named_speakers": any(len(r["names"]) > 1 for r in by_role.values()),
        "prices": {
            m: (None if p is None else {"prompt": p[0], "completion": p[1]}) for m, p in prices.items()
        },
    }


def _role_rank(role: str) -> int:
    return {"student": 0, "teacher": 1, "judge": 2}.get(role, 3)


# --- fine-tuning and the quiz ---------------------------------------------------------------------------


def finetune_curves(data: Mapping[str, Any]) -> dict[str, Any]:
    """The fine-tune's loss curves and figures from finetune.json, tolerating missing or odd keys."""
    out: dict[str, Any] = {
        "loss_curve": _curve(data.get("loss_curve")),
        "val_loss_curve": _curve(data.get("val_loss_curve")),
        "train_loss": [x for x in (_finite(v) for v in _list(data.get("train_loss"))) if x is not None],
    }
    for key in ("val_loss_before", "val_loss_after", "tokens_per_s", "seconds"):
        out[key] = _finite(data.get(key))
    out["peak_rss_bytes"] = (
        data.get("peak_rss_bytes") if isinstance(data.get("peak_rss_bytes"), int) else None
    )
    out["adapter"] = str(data.get("adapter") or "")
    out["config"] = dict(data["config"]) if isinstance(data.get("config"), Mapping) else {}
    return out


def student_learning(
    seat: str, quiz: Sequence[Mapping[str, Any]], finetune: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A classroom student's quiz and fine-tune, shaped as the run's own (`quiz`, `finetune` and the
    totals' quiz and held-out loss), so the same charts and cards show them."""
    quiz_part = quiz_comparison(quiz) if quiz else None
    finetune_part = finetune_curves(finetune) if finetune is not None else None
    before, after = quiz_ends(quiz_part)
    return {
        "seat": seat,
        "quiz": quiz_part,
        "finetune": finetune_part,
        "quiz_before": before,
        "quiz_after": after,
        "val_loss_before": finetune_part["val_loss_before"] if finetune_part else None,
        "val_loss_after": finetune_part["val_loss_after"] if finetune_part else None,
        "train_loss_ends": _ends(finetune_part["train_loss"]) if finetune_part else None,
    }


def _ends(losses: Sequence[Any]) -> list[float] | None:
    """The first and last epoch's training loss, or None when the fine-tune recorded none."""
    return [losses[0], losses[-1]] if losses else None


def quiz_comparison(rounds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The quiz rounds side by side, question by question (matched by question text, else position).

    Each question's `results` has one entry per round (None when that round lacked it); `delta` is the
    last round's judge score minus the first's.
    """
    labels = [str(r.get("label") or f"round {i + 1}") for i, r in enumerate(rounds)]
    questions: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for n, quiz in enumerate(rounds):
        for position, item in enumerate(_list(quiz.get("items"))):
            if not isinstance(item, Mapping):
                continue
            text = str(item.get("question") or f"question {position + 1}")
            if text not in index:
                index[text] = len(questions)
                questions.append(
                    {
                        "question": text,
                        "reference": str(item.get("reference") or ""),
                        "results": [None] * len(rounds),
                    }
                )
            questions[index[text]]["results"][n] = {
                "answer": str(item.get("answer") or ""),
                "score": _finite(item.get("judge_score")),
                "keyword_pass": item.get("keyword_pass")
                if isinstance(item.get("keyword_pass"), bool)
                else None,
                "accepted": item.get("judge_accepted")
                if isinstance(item.get("judge_accepted"), bool)
                else None,
                "reason": str(item.get("judge_reason") or ""),
            }
    for q in questions:
        first, last = q["results"][0], q["results"][-1]
        both = first and last and first["score"] is not None and last["score"] is not None
        q["delta"] = last["score"] - first["score"] if both and len(rounds) > 1 else None
    totals = [_quiz_totals(r.get("totals")) for r in rounds]
    meta = [
        {"student": str(r.get("student") or ""), "adapter": str(r["adapter"]) if r.get("adapter") else None}
        for r in rounds
    ]
    return {"labels": labels, "totals": totals, "rounds": meta, "questions": questions}


# --- totals ---------------------------------------------------------------------------------------------


def totals(
    events: Sequence[Event],
    scores: Sequence[Mapping[str, Any]],
    usage: Mapping[str, Any],
    quiz: Mapping[str, Any] | None,
    finetune: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The headline figures."""
    accepted = sum(isinstance(e, TurnAccepted) for e in events)
    rejected = sum(isinstance(e, TurnRejected) for e in events)
    covered = {e.objective for e in events if isinstance(e, TurnAccepted) and e.objective_covered}
    for e in events:
        if isinstance(e, RunFinished):
            covered.update(e.objectives_covered)
    objectives = {o for e in events if isinstance(e, RunStarted) for o in e.objectives}
    roles = usage["by_role"]
    tokens = sum(r["tokens"] for r in roles)
    seconds = sum(r["seconds"] for r in roles)
    costs = [r["cost_usd"] for r in roles]
    answer_scores = [s["score"] for s in scores if s["kind"] == ANSWER and s["score"] is not None]
    out: dict[str, Any] = {
        "turns": accepted + rejected,
        "accepted": accepted,
        "rejected": rejected,
        "acceptance_rate": accepted / (accepted + rejected) if accepted + rejected else None,
        "objectives": len(objectives | covered),
        "objectives_covered": len(covered),
        "messages": sum(r["messages"] for r in roles),
        "tokens": tokens,
        "generation_s": round(seconds, 3),
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        "cost_usd": None if any(c is None for c in costs) else sum(costs),
        "verdicts": len(scores),
        "mean_answer_score": sum(answer_scores) / len(answer_scores) if answer_scores else None,
        "quiz_before": None,
        "quiz_after": None,
        "val_loss_before": finetune.get("val_loss_before") if finetune else None,
        "val_loss_after": finetune.get("val_loss_after") if finetune else None,
        "train_loss_ends": _ends(finetune_curves(finetune)["train_loss"]) if finetune else None,
    }
    out["quiz_before"], out["quiz_after"] = quiz_ends(quiz)
    return out


def quiz_ends(quiz: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The first quiz round's score and the last one's (None without a quiz, or with one round only)."""
    if not quiz or not quiz["totals"]:
        return None, None
    after = _quiz_score(quiz["totals"][-1]) if len(quiz["totals"]) > 1 else None
    return _quiz_score(quiz["totals"][0]), after


QUIZ_COUNTS = ("n", "correct", "keyword_items", "keyword_pass", "judge_accepted")
QUIZ_RATES = ("score", "judge_mean")


def _quiz_totals(value: Any) -> dict[str, Any]:
    """A quiz file's totals with each figure a count, a finite number or None (a hand-edited or foreign
    file may hold anything there); unknown keys are dropped."""
    t = value if isinstance(value, Mapping) else {}
    out: dict[str, Any] = {key: _count(t.get(key)) for key in QUIZ_COUNTS if key in t}
    out.update({key: _finite(t.get(key)) for key in QUIZ_RATES if key in t})
    return out


def _quiz_score(t: Mapping[str, Any]) -> dict[str, Any]:
    n = _count(t.get("n"))
    return {
        "n": n,
        "correct": _count(t.get("correct")),
        "score": _finite(t.get("score")),
        "judge_mean": _finite(t.get("judge_mean")),
    }


# --- helpers --------------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    """A float for JSON, or None for anything else (a missing key, a string, NaN, infinity)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int | None:
    """A whole number of at least 0, or None for anything else (a string, a bool, a negative number)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _curve(value: Any) -> list[list[float]]:
    """[[step, loss], ...] with both numbers finite; anything else is dropped."""
    out = []
    for point in _list(value):
        if isinstance(point, (list, tuple)) and len(point) >= 2:
            step, loss = _finite(point[0]), _finite(point[1])
            if step is not None and loss is not None:
                out.append([step, loss])
    return out
