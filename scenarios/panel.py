"""A teacher panel's candidates, and which one becomes the accepted answer.

Every teacher of a panel answers the same question; the judge scores each candidate; then:

- `best`: the accepted candidate with the highest score (ties: the earlier seat);
- `consensus`: the accepted candidate that agrees most with the other accepted candidates, where the
  agreement of two answers is the overlap (Jaccard) of their stemmed content words, the same words the
  grounded checks use; ties, and a panel with fewer than three accepted answers, fall back to the score.
  An answer that several teachers independently say is less likely to be one teacher's slip.

    >>> a = Candidate("ada", "Korrin is the capital, founded in 1487.", score=0.8, accepted=True)
    >>> b = Candidate("bo", "The capital is Korrin; it was founded in 1487.", score=0.7, accepted=True)
    >>> c = Candidate("cy", "Korrin is the capital city of the island nation.", score=0.9, accepted=True)
    >>> choose([a, b, c], "best")[0].name
    'cy'
    >>> choose([a, b, c], "consensus")[0].name
    'ada'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from teachback.agents.terms import content_words, stem


@dataclass
class Candidate:
    """One panel member's answer in one attempt, with its verdict, or the error that stopped it."""

    name: str
    answer: str = ""
    score: float = 0.0
    accepted: bool = False
    reason: str = ""
    judgement: Any = None  # the judge's Judgement, when it got that far
    error: BaseException | None = None

    def record(self) -> dict[str, Any]:
        """What the transcript's PanelDecision keeps of it."""
        out: dict[str, Any] = {"name": self.name, "score": self.score, "accepted": self.accepted}
        if self.error is not None:
            out["error"] = " ".join(str(self.error).split()) or type(self.error).__name__
        return out


def choose(candidates: list[Candidate], select: str) -> tuple[Candidate | None, str]:
    """The accepted candidate per `select` (best or consensus) and why; (None, why) when none passed."""
    accepted = [c for c in candidates if c.accepted and c.error is None]
    if not accepted:
        failed = sum(c.error is not None for c in candidates)
        return None, "no candidate accepted" + (f" ({failed} failed)" if failed else "")
    order = {id(c): i for i, c in enumerate(candidates)}
    if select == "consensus" and len(accepted) >= 3:
        agree = {id(c): agreement(c.answer, [o.answer for o in accepted if o is not c]) for c in accepted}
        chosen = max(accepted, key=lambda c: (agree[id(c)], c.score, -order[id(c)]))
        return chosen, f"consensus: agrees most with the other accepted answers ({agree[id(chosen)]:.2f})"
    chosen = max(accepted, key=lambda c: (c.score, -order[id(c)]))
    how = "best" if select == "best" else "consensus needs 3 accepted answers; best"
    return chosen, f"{how}: score {chosen.score:.2f} of {len(accepted)} accepted"


def agreement(answer: str, others: list[str]) -> float:
    """Mean word overlap (Jaccard of stemmed content words) of `answer` with each of `others`.

    >>> agreement("Korrin is the capital.", ["The capital is Korrin.", "Dastor."])
    0.5
    """
    if not others:
        return 0.0
    mine = _terms(answer)
    total = 0.0
    for other in others:
        theirs = _terms(other)
        union = mine | theirs
        total += len(mine & theirs) / len(union) if union else 0.0
    return round(total / len(others), 3)


def _terms(text: str) -> set[str]:
    return {stem(w) for w in content_words(text)}
