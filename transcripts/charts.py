"""The report's charts: PNG bytes drawn with matplotlib from the metrics dict (`transcripts/metrics.py`).

    png = draw("scores", metrics)       # bytes, or None when the run has nothing to draw for that chart
    for name, title in CHARTS.items(): ...

Each chart is a plain `Figure` on the Agg canvas (no pyplot, no global state, no display needed);
matplotlib is imported inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable
from typing import Any

CHARTS: dict[str, str] = {
    "scores": "Judge scores over the run",
    "score_distribution": "Distribution of judge scores",
    "objectives": "Acceptance per objective",
    "timeline": "Dialogue timeline",
    "usage": "Tokens, time and cost per speaker",
    "finetune": "Fine-tune loss",
    "quiz": "Quiz before and after, per question",
}

ROLE_COLORS = {"student": "#0e7490", "teacher": "#a21caf", "judge": "#b45309"}
KIND_COLORS = {"question": "#2563eb", "answer": "#9333ea", "teachback": "#059669"}
KIND_MARKERS = {"question": "s", "answer": "o", "teachback": "D"}
ACCEPT, REJECT, MUTED, INK, GRID = "#16a34a", "#dc2626", "#94a3b8", "#1e293b", "#e2e8f0"
ROUND_COLORS = ["#94a3b8", "#60a5fa", "#2563eb", "#1e3a8a"]
WIDTH = 9.0  # inches; at DPI this is about 1000 pixels, the report's column
DPI = 115


def draw(name: str, metrics: dict[str, Any]) -> bytes | None:
    """The chart `name` (a key of CHARTS) as PNG bytes, or None when there is no data for it."""
    return _DRAWERS[name](metrics)


def usd(x: float) -> str:
    """`$1.23`; small sums keep four significant digits: `$0.004821`, `$0.00004800`."""
    return f"${x:,.2f}" if x >= 1 else f"${x:.4g}" if x >= 1e-4 else f"${x:.8f}"


# --- figure plumbing ------------------------------------------------------------------------------------


def _figure(height: float, ncols: int = 1, **kw: Any) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False, **kw)[0]
    for ax in axes:
        ax.set_facecolor("white")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_color(MUTED)
        ax.tick_params(colors=INK, labelsize=9)
        ax.grid(True, color=GRID, linewidth=0.8)
        ax.set_axisbelow(True)
    return fig, list(axes)


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def _wrap(text: str, width: int, lines: int = 2) -> str:
    return "\n".join(textwrap.wrap(text, width, max_lines=lines, placeholder="…")) or "—"


# --- the charts -----------------------------------------------------------------------------------------


def _scores(m: dict[str, Any]) -> bytes | None:
    """Every verdict in order, one marker per kind; hollow when rejected; turns shaded alternately."""
    scores = [s for s in m["scores"] if s["score"] is not None]
    if not scores:
        return None
    fig, (ax,) = _figure(3.4)
    turns: dict[int, list[int]] = {}
    for x, s in enumerate(scores):
        turns.setdefault(s["turn"], []).append(x)
    for n, (turn, xs) in enumerate(turns.items()):
        if n % 2 == 0:
            ax.axvspan(min(xs) - 0.5, max(xs) + 0.5, color="#f1f5f9", zorder=0)
        ax.text(
            (min(xs) + max(xs)) / 2, 1.08, f"turn {turn}", ha="center", va="bottom", fontsize=8, color=MUTED
        )
    for kind in dict.fromkeys(s["kind"] for s in scores):
        color = KIND_COLORS.get(kind, INK)
        pts = [(x, s) for x, s in enumerate(scores) if s["kind"] == kind]
        xs, ys = [x for x, _ in pts], [s["score"] for _, s in pts]
        faces = [color if s["accepted"] else "white" for _, s in pts]
        ax.scatter(
            xs,
            ys,
            s=46,
            marker=KIND_MARKERS.get(kind, "o"),
            facecolors=faces,
            edgecolors=color,
            linewidths=1.6,
            zorder=3,
        )
    answers = [(x, s["score"]) for x, s in enumerate(scores) if s["kind"] == "answer"]
    if len(answers) > 1:
        ax.plot(*zip(*answers, strict=True), color=KIND_COLORS["answer"], alpha=0.35, linewidth=1.2, zorder=2)
    threshold = m["run"].get("threshold")
    if isinstance(threshold, (int, float)):
        ax.axhline(threshold, color=REJECT, linestyle="--", linewidth=1, alpha=0.7)
        ax.text(
            len(scores) - 0.5,
            threshold + 0.02,
            f"threshold {threshold:g}",
            ha="right",
            fontsize=8,
            color=REJECT,
        )
    ax.set_ylim(-0.04, 1.16)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlim(-0.6, len(scores) - 0.4)
    ax.set_xticks(range(len(scores)))
    ax.set_xticklabels(
        [str(s["attempt"]) if s["attempt"] > 1 else "" for s in scores], fontsize=7, color=MUTED
    )
    ax.set_xlabel(
        "verdicts in order (a number marks a retry's attempt) · filled = accepted, hollow = rejected",
        fontsize=8,
        color=INK,
    )
    ax.set_ylabel("score", fontsize=9)
    from matplotlib.lines import Line2D

    kinds = list(dict.fromkeys(s["kind"] for s in scores))
    handles = [
        Line2D([], [], linestyle="", marker=KIND_MARKERS.get(k, "o"), color=KIND_COLORS.get(k, INK), label=k)
        for k in kinds
    ]
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, frameon=False, ncols=len(kinds))
    return _png(fig)


def _score_distribution(m: dict[str, Any]) -> bytes | None:
    hist = m["score_histogram"]
    counts = {k: v for k, v in hist["counts"].items() if k != "all" and any(v)}
    if not counts:
        return None
    fig, (ax,) = _figure(2.8)
    edges = hist["edges"]
    width = edges[1] - edges[0]
    bottom = [0] * (len(edges) - 1)
    for kind, values in counts.items():
        ax.bar(
            edges[:-1],
            values,
            width=width * 0.92,
            align="edge",
            bottom=bottom,
            label=kind,
            color=KIND_COLORS.get(kind, MUTED),
            edgecolor="white",
            linewidth=0.5,
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    threshold = m["run"].get("threshold")
    if isinstance(threshold, (int, float)):
        ax.axvline(threshold, color=REJECT, linestyle="--", linewidth=1, alpha=0.7)
    ax.set_xlim(0, 1)
    ax.set_xticks(edges)
    ax.set_xlabel("judge score", fontsize=9)
    ax.set_ylabel("verdicts", fontsize=9)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def _objectives(m: dict[str, Any]) -> bytes | None:
    rows = m["objectives"]
    if not rows:
        return None
    fig, (ax,) = _figure(0.9 + 0.48 * len(rows))
    ys = list(range(len(rows)))[::-1]
    accepted = [r["accepted"] for r in rows]
    rejected = [r["rejected"] for r in rows]
    ax.barh(ys, accepted, color=ACCEPT, height=0.6, label="accepted")
    ax.barh(ys, rejected, left=accepted, color=REJECT, height=0.6, label="rejected", alpha=0.85)
    top = max([a + r for a, r in zip(accepted, rejected, strict=True)] + [1])
    for y, r in zip(ys, rows, strict=True):
        rate = r["acceptance_rate"]
        label = "not tried" if rate is None else f"{rate:.0%} of {r['accepted'] + r['rejected']}"
        if r["covered"]:
            label += " · covered"
        ax.text(r["accepted"] + r["rejected"] + top * 0.015, y, label, va="center", fontsize=8, color=INK)
    ax.set_yticks(ys)
    ax.set_yticklabels([_wrap(r["objective"], 44) for r in rows], fontsize=8)
    ax.set_xlim(0, top * 1.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("turns", fontsize=9)
    ax.grid(False, axis="y")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    return _png(fig)


def _timeline(m: dict[str, Any]) -> bytes | None:
    messages = m["timeline"]
    if not messages:
        return None
    speakers = list(dict.fromkeys((x["role"], x["name"]) for x in messages))
    speakers.sort(key=lambda s: {"student": 0, "teacher": 1, "judge": 2}.get(s[0], 3))
    fig, (ax,) = _figure(1.2 + 0.55 * len(speakers))
    row = {s: len(speakers) - 1 - i for i, s in enumerate(speakers)}
    for x in messages:
        y = row[(x["role"], x["name"])]
        width = max(x["t"] - x["start"], 0.05)
        verdict = x["verdict"]
        edge = INK if verdict is None else (ACCEPT if verdict["accepted"] else REJECT)
        ax.barh(
            y,
            width,
            left=x["start"],
            height=0.55,
            color=KIND_COLORS.get(x["kind"], MUTED),
            edgecolor=edge,
            linewidth=1.2 if verdict else 0.4,
        )
    seen: set[int] = set()
    for x in messages:
        if x["turn"] not in seen:
            seen.add(x["turn"])
            ax.axvline(x["start"], color=MUTED, linewidth=0.8, linestyle=":")
            ax.text(
                x["start"], len(speakers) - 0.45, f" turn {x['turn']}", fontsize=7, color=MUTED, va="bottom"
            )
    ax.set_yticks(list(row.values()))
    ax.set_yticklabels([role if name == role else f"{role} · {name}" for role, name in row], fontsize=9)
    for label, (role, _) in zip(ax.get_yticklabels(), row, strict=True):
        label.set_color(ROLE_COLORS.get(role, INK))
    ax.set_ylim(-0.6, len(speakers) - 0.1)
    ax.set_xlim(0, max(x["t"] for x in messages) * 1.01 + 0.1)
    ax.set_xlabel(
        "seconds since the run started · bar colour = kind · green/red edge = judge accepted/rejected",
        fontsize=8,
    )
    ax.grid(False, axis="y")
    from matplotlib.patches import Patch

    kinds = list(dict.fromkeys(x["kind"] for x in messages))
    ax.legend(
        handles=[Patch(color=KIND_COLORS.get(k, MUTED), label=k) for k in kinds],
        fontsize=8,
        frameon=False,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
    )
    return _png(fig)


def _usage(m: dict[str, Any]) -> bytes | None:
    usage = m["usage"]
    rows = usage["by_speaker"] if usage["named_speakers"] else usage["by_role"]
    if not rows:
        return None
    fig, axes = _figure(0.9 + 0.42 * max(3, len(rows)), ncols=3, sharey=True)
    labels = [
        r["role"] if r.get("name", r["role"]) == r["role"] else f"{r['role']} · {r['name']}" for r in rows
    ]
    ys = list(range(len(rows)))[::-1]
    colors = [ROLE_COLORS.get(r["role"], MUTED) for r in rows]
    panels = [
        ("completion tokens", [r["tokens"] for r in rows], "{:,.0f}"),
        ("generation seconds", [r["seconds"] for r in rows], "{:,.1f} s"),
        ("cost (USD)", [r["cost_usd"] or 0.0 for r in rows], "${:,.4f}"),
    ]
    for ax, (title, values, fmt) in zip(axes, panels, strict=True):
        ax.barh(ys, values, color=colors, height=0.6)
        top = max(values + [1e-9])
        for y, v, r in zip(ys, values, rows, strict=True):
            text = fmt.format(v)
            if title.startswith("cost"):
                text = "price unknown" if r["cost_usd"] is None else ("local · $0" if v == 0 else usd(v))
            ax.text(v + top * 0.03, y, text, va="center", fontsize=8, color=INK)
        ax.set_xlim(0, top * 1.6 if top > 1e-9 else 1)
        ax.set_title(title, fontsize=9, color=INK, loc="left")
        ax.set_xticks([])
        ax.spines["bottom"].set_visible(False)
        ax.grid(False)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels(labels, fontsize=9)
    for label, r in zip(axes[0].get_yticklabels(), rows, strict=True):
        label.set_color(ROLE_COLORS.get(r["role"], INK))
    return _png(fig)


def _finetune(m: dict[str, Any]) -> bytes | None:
    ft = m["finetune"]
    if not ft:
        return None
    train, val = ft["loss_curve"], ft["val_loss_curve"]
    if not train and not val and not ft["train_loss"]:
        return None
    fig, (ax,) = _figure(3.2)
    if train or val:
        if train:
            ax.plot(*zip(*train, strict=True), color="#2563eb", linewidth=1.4, label="train loss")
        if val:
            ax.plot(
                *zip(*val, strict=True),
                color="#ea580c",
                linewidth=1.6,
                marker="o",
                markersize=5,
                label="held-out loss",
            )
        ax.set_xlabel("optimizer step", fontsize=9)
    else:
        epochs = range(1, len(ft["train_loss"]) + 1)
        ax.plot(epochs, ft["train_loss"], color="#2563eb", marker="o", label="train loss (epoch mean)")
        ax.set_xlabel("epoch", fontsize=9)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("loss", fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def _quiz(m: dict[str, Any]) -> bytes | None:
    quiz = m["quiz"]
    if not quiz or not quiz["questions"]:
        return None
    questions, labels = quiz["questions"], quiz["labels"]
    n, k = len(questions), len(labels)
    fig, (ax,) = _figure(1.0 + 0.34 * n * max(2, k) + 0.2 * n)
    height = 0.8 / k
    for j, label in enumerate(labels):
        color = ROUND_COLORS[min(j, len(ROUND_COLORS) - 1)] if j < k - 1 else "#2563eb"
        if j == 0 and k > 1:
            color = MUTED
        ys = [n - 1 - i + (k - 1 - 2 * j) * height / 2 for i in range(n)]
        results = [q["results"][j] for q in questions]
        values = [(r["score"] or 0.0) if r else 0.0 for r in results]
        ax.barh(ys, values, height=height * 0.9, color=color, label=label)
        for y, r in zip(ys, results, strict=True):
            if r is None:
                mark = "not asked"
            else:
                mark = {True: "keyword ✓", False: "keyword ✗", None: ""}[r["keyword_pass"]]
                mark = f"{r['score']:.2f} {mark}" if r["score"] is not None else f"no score {mark}"
            x = (r["score"] or 0.0) if r else 0.0
            ax.text(x + 0.01, y, mark, va="center", fontsize=7, color=INK)
    ax.set_yticks([n - 1 - i for i in range(n)])
    ax.set_yticklabels([_wrap(q["question"], 40) for q in questions], fontsize=8)
    ax.set_xlim(0, 1.25)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("judge score of the student's answer", fontsize=9)
    ax.grid(False, axis="y")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    return _png(fig)


_DRAWERS: dict[str, Callable[[dict[str, Any]], bytes | None]] = {
    "scores": _scores,
    "score_distribution": _score_distribution,
    "objectives": _objectives,
    "timeline": _timeline,
    "usage": _usage,
    "finetune": _finetune,
    "quiz": _quiz,
}
