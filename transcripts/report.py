"""The run report: one self-contained HTML page, its charts as PNG files, and its figures as JSON.

    write_report(Path("runs/r1"))   # -> [runs/r1/report/report.html, runs/r1/report/scores.png, ...]

A run folder holds `transcript.jsonl` and, when those steps ran, `quiz-before.json`, `quiz-after.json` and
`finetune.json`; the page says "not run" for a step without its file. In a classroom each student has its
own (`quiz-before-<seat>.json`, ...), shown student by student. The report of round N of learning rounds
(`rounds/round-N/`) shows the quiz before round 1 and after each round up to N. The page has
its charts inline as data URIs, its style inline, no script and no external address: it opens offline.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teachback.errors import RunDirError
from teachback.transcripts.charts import CHARTS, draw, usd
from teachback.transcripts.events import Event
from teachback.transcripts.run_folder import ReportFolder, RunFolder, seat_label, student_file_seats

STUDENT_CHARTS = ("finetune", "quiz")  # drawn once per student in a classroom


@dataclass
class StudentFiles:
    """A classroom student's own quiz rounds and fine-tune record."""

    seat: str
    quiz: list[dict[str, Any]] = field(default_factory=list)  # as RunFiles.quiz
    finetune: dict[str, Any] | None = None


@dataclass
class RunFiles:
    """What a run folder holds, read and parsed."""

    events: list[Event]
    quiz: list[dict[str, Any]] = field(default_factory=list)  # before, after (rounds: before, round 1..N)
    finetune: dict[str, Any] | None = None
    classroom: list[StudentFiles] = field(default_factory=list)  # a classroom's students, each its own


def load_run(run_dir: Path) -> RunFiles:
    """Read a run folder; raises RunDirError or TranscriptError with one line saying what is wrong."""
    from teachback.transcripts.reader import read_transcript

    folder = RunFolder(run_dir)
    transcript = folder.transcript
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: not a folder; give a run folder (one holding {transcript.name})")
    if not transcript.is_file():
        raise RunDirError(f"{run_dir}: not a run folder (no {transcript.name} here)")
    events = read_transcript(transcript, allow_truncated_tail=True)
    seats = student_file_seats(events[0] if events else None)
    if seats != [None]:
        classroom = [
            StudentFiles(seat, _read_quiz(folder, seat), _read_json(folder.finetune(seat)))
            for seat in seats
            if seat is not None
        ]
        return RunFiles(events, classroom=classroom)
    return RunFiles(events, _read_quiz(folder), _read_json(folder.finetune()))


def _read_quiz(folder: RunFolder, seat: str | None = None) -> list[dict[str, Any]]:
    """The student's quizzes that were taken, in order, each with a label: before and after the run, or
    before round 1 and after each round so far for a round of learning rounds."""
    rounds = folder.rounds_so_far()
    if rounds:
        files: list[tuple[Path, str | None]] = [(rounds[0].quiz("before", seat), seat_label("before", seat))]
        files += [(r.quiz("after", seat), seat_label(f"round {n}", seat)) for n, r in enumerate(rounds, 1)]
    else:
        files = [(folder.quiz("before", seat), None), (folder.quiz("after", seat), None)]
    quiz = []
    for path, label in files:
        data = _read_json(path)
        if data is not None:
            data["label"] = label or data.get("label") or path.stem.removeprefix("quiz-").replace("-", " ")
            quiz.append(data)
    return quiz


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from an optional file; None when the file is absent."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def write_report(run_dir: Path, out: Path | None = None) -> list[Path]:
    """Write report.html, one PNG per chart with data and metrics.json; returns the paths written."""
    from teachback.transcripts.metrics import run_metrics

    files = load_run(run_dir)
    classroom = [(s.seat, s.quiz, s.finetune) for s in files.classroom]
    metrics = run_metrics(files.events, quiz=files.quiz, finetune=files.finetune, classroom=classroom)
    report = ReportFolder(out) if out is not None else RunFolder(run_dir).report
    try:
        report.path.mkdir(parents=True, exist_ok=True)
        written = []
        charts: dict[str, bytes] = {}
        drawn = [(name, name, metrics) for name in CHARTS]
        for student in metrics["classroom"]:  # each student's own quiz and fine-tune: quiz-ana.png, ...
            drawn += [(seat_label(name, student["seat"]), name, student) for name in STUDENT_CHARTS]
        for key, name, figures in drawn:
            png = draw(name, figures)
            path = report.chart(key)
            if png is None:
                path.unlink(missing_ok=True)  # a stale chart from an earlier report
                continue
            charts[key] = png
            path.write_bytes(png)
            written.append(path)
        report.metrics.write_text(json.dumps(metrics, indent=1, ensure_ascii=False), encoding="utf-8")
        report.page.write_text(render_html(metrics, charts), encoding="utf-8")
    except OSError as e:
        raise RunDirError(f"cannot write the report into {report.path}: {e.strerror}") from None
    return [report.page, *written, report.metrics]


# --- the page -------------------------------------------------------------------------------------------


def render_html(m: dict[str, Any], charts: dict[str, bytes]) -> str:
    """The whole page as one string: header, headline figures, then one section per chart."""
    run = m["run"]
    sections = [
        _section("scores", CHARTS["scores"], _chart(charts, "scores") + _chart(charts, "score_distribution")),
        _section("objectives", CHARTS["objectives"], _chart(charts, "objectives") + _objectives_table(m)),
        _section("facts", "Facts taught", _facts_table(m)),
        _section("dialogue", "Dialogue", _chart(charts, "timeline") + _dialogue_table(m)),
        _section("usage", CHARTS["usage"], _chart(charts, "usage") + _usage_table(m)),
        _section("finetune", CHARTS["finetune"], _finetune_body(m, charts)),
        _section("quiz", CHARTS["quiz"], _quiz_body(m, charts)),
    ]
    if m["notices"]:
        items = "".join(
            f"<li class='{_e(n['level'])}'>{_e(n['level'])}: {_e(n['message'])}</li>" for n in m["notices"]
        )
        sections.append(_section("notices", "Warnings", f"<ul class='notices'>{items}</ul>"))
    nav = " · ".join(f"<a href='#{key}'>{_e(title)}</a>" for key, title in _NAV)
    title = f"teachback · {run['scenario'] or 'run'} · {run['run_id']}"
    return _PAGE.format(
        title=_e(title),
        css=_CSS,
        header=_header(m),
        cards=_cards(m),
        nav=nav,
        sections="\n".join(sections),
    )


_NAV = [
    ("scores", "Scores"),
    ("objectives", "Objectives"),
    ("facts", "Facts taught"),
    ("dialogue", "Dialogue"),
    ("usage", "Usage"),
    ("finetune", "Fine-tune"),
    ("quiz", "Quiz"),
]


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _section(key: str, title: str, body: str) -> str:
    return f"<section id='{key}'><h2>{_e(title)}</h2>{body}</section>"


def _chart(charts: dict[str, bytes], key: str, name: str | None = None) -> str:
    """The chart drawn as `key` (`quiz`, or `quiz-ana` for a classroom's student) with the title of chart
    `name` (default: `key`)."""
    title = CHARTS[name or key]
    if key not in charts:
        return f"<p class='empty'>{_e(title)}: no data in this run.</p>"
    data = base64.b64encode(charts[key]).decode("ascii")
    return f"<figure><img alt='{_e(title)}' src='data:image/png;base64,{data}'></figure>"


def _not_run(what: str, how: str) -> str:
    return f"<p class='empty'><b>Not run.</b> {_e(what)} <code>{_e(how)}</code></p>"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{x:.0%}"


def _num(x: Any, fmt: str = "{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def _cost(x: Any) -> str:
    if x is None:
        return "unknown"
    return "$0 (local)" if x == 0 else usd(x)


def _speaker(role: str, name: str) -> str:
    label = role if name in ("", role) else f"{role} · {name}"
    return f"<span class='who {_e(role)}'>{_e(label)}</span>"


def _header(m: dict[str, Any]) -> str:
    run = m["run"]
    status = run["status"]
    badge = "ok" if status == "completed" else "bad"
    models = "".join(
        f"<dt>{_e(role)}</dt><dd><code>{_e(model)}</code></dd>" for role, model in run["models"].items()
    )
    facts = [
        ("run", run["run_id"]),
        ("started", run["started_at"].replace("T", " ")),
        ("seed", run["seed"]),
        ("turn budget", run["turn_budget"]),
        ("judge threshold", run["threshold"]),
    ]
    if run["adapter"]:
        facts.append(("student adapter", run["adapter"]))
    if run["resumes"]:
        facts.append(("resumed", f"{run['resumes']} time(s)"))
    meta = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts if v not in (None, ""))
    reason = f" — {_e(run['reason'])}" if run["reason"] else ""
    return (
        f"<h1>{_e(run['scenario'] or 'run')} <span class='badge {badge}'>{_e(status)}</span></h1>"
        f"<p class='sub'>teachback run report{reason}</p>"
        f"<div class='meta'><dl>{meta}</dl><dl>{models}</dl></div>"
    )


def _cards(m: dict[str, Any]) -> str:
    t = m["totals"]
    cards = [
        ("acceptance", _pct(t["acceptance_rate"]), f"{t['accepted']} of {t['turns']} turns accepted"),
        ("objectives covered", f"{t['objectives_covered']}/{t['objectives']}", "taught back and accepted"),
        ("mean answer score", _num(t["mean_answer_score"]), f"{t['verdicts']} verdicts in all"),
        (
            "tokens",
            f"{t['tokens']:,}",
            f"{_num(t['tokens_per_s'], '{:.1f}')} tok/s · {t['messages']} messages",
        ),
        ("cost", _cost(t["cost_usd"]), f"run took {m['run']['duration_s']:.0f} s"),
    ]
    if m["classroom"]:
        for student in m["classroom"]:
            cards += _learning_cards(student, student["seat"])
    else:
        cards += _learning_cards(t)
    return "".join(
        f"<div class='card'><div class='k'>{_e(k)}</div><div class='v'>{_e(v)}</div>"
        f"<div class='d'>{_e(d)}</div></div>"
        for k, v, d in cards
    )


def _learning_cards(f: dict[str, Any], seat: str | None = None) -> list[tuple[str, str, str]]:
    """The quiz and fine-tune cards of the run's student (the totals), or of a classroom's `seat` (its
    figures in `classroom`), named `quiz · ana`."""
    named = (lambda card: f"{card} · {seat}") if seat else (lambda card: card)
    cards = []
    qb, qa = f["quiz_before"], f["quiz_after"]
    if qb:
        after = f" → {_quiz_figure(qa)}" if qa else ""
        cards.append((named("quiz"), f"{_quiz_figure(qb)}{after}", "correct, before → after"))
    else:
        cards.append((named("quiz"), "not run", "no quiz file in the run folder"))
    if f["val_loss_before"] is not None or f["val_loss_after"] is not None:
        loss = f"{_num(f['val_loss_before'])} → {_num(f['val_loss_after'])}"
        cards.append((named("held-out loss"), loss, "fine-tune"))
    elif f.get("train_loss_ends"):  # nothing held out (the default): the training loss tells it ran
        first, last = f["train_loss_ends"]
        cards.append((named("train loss"), f"{_num(first)} → {_num(last)}", "fine-tune, first → last epoch"))
    else:
        cards.append((named("fine-tune"), "not run", f"no {_finetune_file(seat)} in the run folder"))
    return cards


def _finetune_file(seat: str | None) -> str:
    return RunFolder(Path()).finetune(seat).name


def _quiz_figure(q: dict[str, Any]) -> str:
    if q.get("correct") is not None and q.get("n"):
        return f"{q['correct']}/{q['n']}"
    return _num(q.get("score"))


def _facts_table(m: dict[str, Any]) -> str:
    """One row per curriculum fact: the accepted turns that taught it and its quiz questions per round."""
    facts = m.get("facts") or {}
    rows = facts.get("facts") or []
    if not rows:
        return "<p>This transcript has no curriculum (it predates fact coverage).</p>"
    labels = facts.get("quiz_labels") or []

    def mark(marks: list[bool] | None) -> str:
        if marks is None:
            return "–"
        return " ".join("<span class=yes>✓</span>" if ok else "<span class=no>✗</span>" for ok in marks)

    head = (
        "<tr><th class='n'>#</th><th>fact</th><th class='n'>taught in turns</th>"
        + "".join(f"<th>quiz {_e(label)}</th>" for label in labels)
        + "</tr>"
    )
    body = "".join(
        f"<tr><td class='n'>{i}</td><td>{_e(r['fact'])}</td>"
        f"<td class='n'>{r['taught'] or '<span class=no>0</span>'}</td>"
        + "".join(f"<td>{mark(q)}</td>" for q in r["quiz"])
        + "</tr>"
        for i, r in enumerate(rows)
    )
    missing = [r["fact"] for r in rows if not r["taught"]]
    summary = f"<p>facts taught {facts.get('taught', 0)}/{facts.get('total', 0)}"
    summary += f"; not taught yet: {_e('; '.join(missing))}</p>" if missing else "</p>"
    return summary + f"<table>{head}{body}</table>"


def _claims(objective: dict[str, Any]) -> str:
    """`5 / 1 / 2`: the claims of the objective's judged answers, by status (– in old transcripts)."""
    counts = objective.get("claims") or {}
    if not any(counts.values()):
        return "–"
    return " / ".join(str(counts.get(k, 0)) for k in ("supported", "uncertain", "unsupported"))


def _objectives_table(m: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_e(o['objective'])}</td>"
        f"<td class='n'>{o['accepted']}</td><td class='n'>{o['rejected']}</td>"
        f"<td class='n'>{_pct(o['acceptance_rate'])}</td><td class='n'>{_num(o['mean_accepted_score'])}</td>"
        f"<td class='n'>{_claims(o)}</td>"
        f"<td>{'<span class=yes>yes</span>' if o['covered'] else '<span class=no>no</span>'}</td></tr>"
        for o in m["objectives"]
    )
    head = (
        "<tr><th>objective</th><th class='n'>accepted</th><th class='n'>rejected</th><th class='n'>rate</th>"
        "<th class='n'>mean score</th><th class='n'>claims supported / uncertain / unsupported</th>"
        "<th>covered</th></tr>"
    )
    table = f"<table>{head}{rows}</table>" if rows else ""
    if len(m["students"]) > 1:
        per_student = "".join(
            f"<tr><td>{_speaker('student', r['student'])}</td><td class='n'>{r['accepted']}</td>"
            f"<td class='n'>{r['rejected']}</td><td class='n'>{_pct(r['acceptance_rate'])}</td></tr>"
            for r in m["students"]
        )
        head = (
            "<tr><th>student</th><th class='n'>accepted</th><th class='n'>rejected</th>"
            "<th class='n'>rate</th></tr>"
        )
        table += f"<table>{head}{per_student}</table>"
    return table


def _dialogue_table(m: dict[str, Any]) -> str:
    """The dialogue turn by turn: who said what, and what the judge thought of it."""
    outcomes = {t["turn"]: t for t in m["turns"]}
    body, current = [], None
    for x in m["timeline"]:
        if x["turn"] != current:
            current = x["turn"]
            o = outcomes.get(current, {})
            outcome = o.get("outcome")
            label = {"accepted": "accepted", "rejected": "rejected"}.get(outcome or "", "undecided")
            body.append(
                f"<tr class='turn'><td colspan='4'>turn {_e(current)} · {_e(o.get('objective', ''))}"
                f" <span class='badge {'ok' if outcome == 'accepted' else 'bad' if outcome else 'none'}'>"
                f"{label}</span></td></tr>"
            )
        if x["role"] == "judge":
            continue  # the judge's raw text; its verdict is shown next to the message it judged
        verdict = x["verdict"]
        judged = ""
        if verdict is not None:
            word, cls = ("accept", "yes") if verdict["accepted"] else ("reject", "no")
            judged = (
                f"<span class='{cls}'>{word} {_num(verdict['score'])}</span>"
                f"<div class='reason'>{_e(verdict['reason'])}</div>"
            )
        kind = x["kind"] if x["attempt"] <= 1 else f"{x['kind']} #{x['attempt']}"
        body.append(
            f"<tr><td class='who-cell'>{_speaker(x['role'], x['name'])}<div class='kind'>{_e(kind)}</div>"
            f"<div class='kind'>{x['t']:.1f} s · {x['tokens']} tok</div></td>"
            f"<td class='text'>{_e(x['text'])}</td><td class='verdict'>{judged}</td></tr>"
        )
    if not body:
        return "<p class='empty'>No messages in this transcript.</p>"
    head = "<tr><th>speaker</th><th>message</th><th>judge</th></tr>"
    return f"<table class='dialogue'>{head}{''.join(body)}</table>"


def _usage_table(m: dict[str, Any]) -> str:
    usage = m["usage"]
    rows = usage["by_speaker"] if usage["named_speakers"] else usage["by_role"]
    body = "".join(
        f"<tr><td>{_speaker(r['role'], r.get('name', r['role']))}</td>"
        f"<td>{', '.join(f'<code>{_e(x)}</code>' for x in r['models'])}</td>"
        f"<td class='n'>{r['messages']}</td><td class='n'>{r['tokens']:,}</td>"
        f"<td class='n'>{r['seconds']:.1f}</td><td class='n'>{_num(r['tokens_per_s'], '{:.1f}')}</td>"
        f"<td class='n'>{_cost(r['cost_usd'])}</td></tr>"
        for r in rows
    )
    head = (
        "<tr><th>speaker</th><th>model</th><th>messages</th><th>completion tokens</th><th>seconds</th>"
        "<th>tok/s</th><th>cost</th></tr>"
    )
    note = (
        "<p class='note'>Cost from litellm's bundled price list, for the completion tokens each message "
        "reports (prompt tokens where recorded); local models cost nothing.</p>"
    )
    return f"<table>{head}{body}</table>{note}" if body else ""


def _finetune_body(m: dict[str, Any], charts: dict[str, bytes]) -> str:
    """The fine-tune of the run's student, or of each student of a classroom under its name."""
    if m["classroom"]:
        return "".join(
            f"<h3>{_e(s['seat'])}</h3>"
            + _finetune_of(
                s["finetune"], _chart(charts, seat_label("finetune", s["seat"]), "finetune"), s["seat"]
            )
            for s in m["classroom"]
        )
    return _finetune_of(m["finetune"], _chart(charts, "finetune"))


def _finetune_of(ft: dict[str, Any] | None, chart: str, seat: str | None = None) -> str:
    if ft is None:
        where = f"No {_finetune_file(seat)} in the run folder. Train the student with"
        return _not_run(where, "teachback finetune")
    facts = [
        ("held-out loss before", _num(ft["val_loss_before"], "{:.3f}")),
        ("held-out loss after", _num(ft["val_loss_after"], "{:.3f}")),
        ("train loss per epoch", " ".join(f"{x:.3f}" for x in ft["train_loss"]) or "–"),
        ("tokens/s", _num(ft["tokens_per_s"], "{:.0f}")),
        ("peak RSS", _num(ft["peak_rss_bytes"] and ft["peak_rss_bytes"] / 2**20, "{:.0f} MB")),
        ("time", _num(ft["seconds"], "{:.0f} s")),
        ("adapter", ft["adapter"] or "–"),
    ]
    facts += [(f"config {k}", v) for k, v in ft["config"].items()]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    return chart + f"<dl class='facts'>{dl}</dl>"


def _quiz_body(m: dict[str, Any], charts: dict[str, bytes]) -> str:
    """The quiz of the run's student, or of each student of a classroom under its name."""
    if m["classroom"]:
        return "".join(
            f"<h3>{_e(s['seat'])}</h3>"
            + _quiz_of(s["quiz"], _chart(charts, seat_label("quiz", s["seat"]), "quiz"), s["seat"])
            for s in m["classroom"]
        )
    return _quiz_of(m["quiz"], _chart(charts, "quiz"))


def _quiz_of(quiz: dict[str, Any] | None, chart: str, seat: str | None = None) -> str:
    if quiz is None:
        run = RunFolder(Path())
        files = f"{run.quiz('before', seat).name} or {run.quiz('after', seat).name}"
        return _not_run(f"No {files} in the run folder.", "teachback quiz")
    labels = quiz["labels"]
    head = "<tr><th>question</th>" + "".join(f"<th>{_e(label)}</th>" for label in labels) + "<th>Δ</th></tr>"
    rows = []
    for q in quiz["questions"]:
        cells = []
        for r in q["results"]:
            if r is None:
                cells.append("<td class='empty'>not asked</td>")
                continue
            kw = {
                True: "<span class=yes>keyword ✓</span>",
                False: "<span class=no>keyword ✗</span>",
                None: "",
            }
            verdict = "" if r["accepted"] is None else ("accepted" if r["accepted"] else "rejected")
            cells.append(
                f"<td><div class='text'>{_e(r['answer']) or '<i>(empty)</i>'}</div>"
                f"<div class='kind'>score {_num(r['score'])} {_e(verdict)} {kw[r['keyword_pass']]}</div></td>"
            )
        delta = q["delta"]
        cls = "" if delta is None else ("yes" if delta > 0 else "no" if delta < 0 else "")
        rows.append(
            f"<tr><td><b>{_e(q['question'])}</b>"
            f"<div class='kind'>reference: {_e(q['reference'] or '–')}</div></td>"
            f"{''.join(cells)}<td class='n {cls}'>{_num(delta, '{:+.2f}')}</td></tr>"
        )
    totals = "".join(
        f"<dt>{_e(label)}</dt><dd>{_e(_quiz_totals(t))}</dd>"
        for label, t in zip(labels, quiz["totals"], strict=True)
    )
    return chart + f"<dl class='facts'>{totals}</dl><table class='quiz'>{head}{''.join(rows)}</table>"


def _quiz_totals(t: dict[str, Any]) -> str:
    parts = []
    if t.get("n"):
        parts.append(f"{t.get('correct', '–')}/{t['n']} correct")
    if t.get("keyword_items"):
        parts.append(f"keywords {t.get('keyword_pass', '–')}/{t['keyword_items']}")
    if t.get("judge_mean") is not None:
        parts.append(f"judge mean {_num(t['judge_mean'])}")
    return " · ".join(parts) or "–"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>{header}<div class="cards">{cards}</div><nav>{nav}</nav></header>
<main>
{sections}
</main>
<footer>Written by <code>teachback report</code>.
The figures are in <code>metrics.json</code> next to this page.</footer>
</body>
</html>
"""

_CSS = """
:root { --ink: #1e293b; --muted: #64748b; --line: #e2e8f0; --bg: #f8fafc; --ok: #15803d; --bad: #b91c1c;
  --student: #0e7490; --teacher: #a21caf; --judge: #b45309; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header, main, footer { max-width: 1100px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 28px; }
h1 { font-size: 28px; margin: 0; display: flex; align-items: center; gap: 12px; }
h3 { font-size: 16px; margin: 18px 0 8px; }
h2 { font-size: 19px; margin: 0 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
.sub { color: var(--muted); margin: 2px 0 14px; }
.meta { display: grid; grid-template-columns: 1fr 1fr; gap: 8px 32px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; font-size: 14px; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #eef2f7;
  padding: 1px 5px; border-radius: 4px; }
.badge { font-size: 12px; font-weight: 600; padding: 2px 9px; border-radius: 999px; vertical-align: middle; }
.badge.ok { background: #dcfce7; color: var(--ok); }
.badge.bad { background: #fee2e2; color: var(--bad); }
.badge.none { background: #e2e8f0; color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(128px, 1fr)); gap: 10px;
  margin: 20px 0 14px; }
.card { background: white; border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; }
.card .k { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.card .v { font-size: 20px; font-weight: 650; margin: 2px 0; white-space: nowrap; }
.card .d { font-size: 12px; color: var(--muted); }
nav { font-size: 14px; padding: 8px 0 4px; }
nav a { color: #2563eb; text-decoration: none; }
section { background: white; border: 1px solid var(--line); border-radius: 12px; padding: 18px 20px;
  margin: 18px 0; }
figure { margin: 0 0 12px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
table { width: 100%; border-collapse: collapse; font-size: 14px; margin: 8px 0; }
th { text-align: left; font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .03em; border-bottom: 2px solid var(--line); padding: 6px 8px; }
td { border-bottom: 1px solid var(--line); padding: 7px 8px; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.turn td { background: #f1f5f9; font-weight: 600; border-top: 2px solid var(--line); }
.dialogue td.text, .quiz .text { white-space: pre-wrap; overflow-wrap: anywhere; }
.dialogue td.who-cell { width: 130px; }
.dialogue td.verdict { width: 260px; }
.who { font-weight: 650; }
.who.student { color: var(--student); }
.who.teacher { color: var(--teacher); }
.who.judge { color: var(--judge); }
.kind, .reason, .note { color: var(--muted); font-size: 12px; }
.yes { color: var(--ok); font-weight: 600; } .no { color: var(--bad); font-weight: 600; }
.empty { color: var(--muted); }
dl.facts { margin: 8px 0 12px; }
.notices li.error { color: var(--bad); } .notices li.warning { color: var(--judge); }
footer { color: var(--muted); font-size: 13px; padding-bottom: 32px; }
@media (max-width: 720px) { .meta { grid-template-columns: 1fr; } .dialogue td.verdict { width: auto; } }
"""
