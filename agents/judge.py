"""The judge's rubric: how questions, answers and teach-backs are scored, and when they are accepted.

An answer's verdict combines two signals, and the transcript keeps both (`components`):

- `llm`: the judge model's own score (0..10 scaled to 0..1), asked for as JSON that a llama.cpp grammar
  constrains when the judge is local. Any autogen agent can give it; a reply that is not the schema
  simply contributes nothing.
- `grounded`: the deterministic checks of `grounding.py` against the scenario's knowledge.

With knowledge, `score = LLM_WEIGHT * llm + (1 - LLM_WEIGHT) * grounded`, and an answer that names a
number or a name the knowledge does not contain, or whose vocabulary is mostly foreign to it, is
rejected whatever the model said: that is the gate a tiny judge model cannot be trusted to keep.
Without knowledge, the model's score is the score.

Questions and teach-backs are scored by the grounded checks alone (no model call): a question's
relevance to the objective and the knowledge, a teach-back's agreement with the accepted answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from pydantic import BaseModel, Field, ValidationError

from teachback.agents.grounding import STOPWORDS, Knowledge, content_words, specifics, stem

LLM_WEIGHT = 0.25  # DESIGN.md: a 135M judge model is at chance; the grounded checks carry the verdict
QUESTION_THRESHOLD = 0.5
MIN_ANSWER_WORDS = 3
TEACHBACK_KEY_POINTS = 2
REASON_CHARS = 160


class LLMVerdict(BaseModel):
    """What the judge model is asked to return (a llama.cpp grammar enforces it for local judges)."""

    reason: str = Field(max_length=REASON_CHARS)  # the grammar bounds it: a short verdict is a fast one
    score: int = Field(ge=0, le=10)


@dataclass(frozen=True)
class Judgement:
    score: float
    accepted: bool
    reason: str
    components: dict[str, float] = field(default_factory=dict)


def parse_verdict(text: str) -> LLMVerdict | None:
    """The verdict in a judge reply, or None. Tolerates prose around one JSON object."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if not match:
        return None
    try:
        data = json.loads(match.group(0))
        if isinstance(data, dict) and "score" in data:
            data["score"] = max(0, min(10, round(float(data["score"]))))
            data.setdefault("reason", "")
            data["reason"] = str(data["reason"])[:REASON_CHARS]
        return LLMVerdict.model_validate(data)
    except (ValueError, TypeError, ValidationError):
        return None


class Rubric:
    """Scores against one scenario's knowledge and acceptance threshold."""

    def __init__(self, knowledge: Knowledge, threshold: float):
        self.knowledge = knowledge
        self.threshold = threshold

    def notes_for(self, question: str, k: int = 3) -> str:
        """The knowledge passages the teacher and the judge see for a question."""
        if not self.knowledge:
            return "(no notes: answer from what you know)"
        return "\n".join(f"- {p}" for p in self.knowledge.relevant(question, k))

    def question(self, question: str, objective: str, topic_words: frozenset[str] = frozenset()) -> Judgement:
        """Is the student's question a question, and on the objective? Off-topic ones are asked again.

        `topic_words` are the words every objective shares (the domain's name, say): naming them
        alone does not put a question on a particular objective.
        """
        words = {stem(w) for w in content_words(question)}
        if not words:
            return Judgement(0.0, False, "empty question", {})
        if "?" not in question:
            return Judgement(0.0, False, "not a question", {})
        specific = {stem(w) for w in content_words(objective)} - topic_words
        shared = len(specific & words)
        on_objective = min(1.0, shared / max(1, min(len(specific), 2)))
        in_domain = self.knowledge.coverage(question) if self.knowledge else on_objective
        score = round(0.6 * on_objective + 0.4 * in_domain, 3)
        accepted = shared > 0 and score >= QUESTION_THRESHOLD
        reason = "on topic" if accepted else f"off topic for '{objective}'"
        return Judgement(score, accepted, reason, {"objective": on_objective, "domain": round(in_domain, 3)})

    def answer(self, question: str, answer: str, verdict: LLMVerdict | None) -> Judgement:
        """Combine the model's verdict with the grounded checks; see the module docstring."""
        components: dict[str, float] = {}
        if verdict is not None:
            components["llm"] = verdict.score / 10
        if len(content_words(answer)) < MIN_ANSWER_WORDS:
            return Judgement(0.0, False, "answer too short to teach anything", components)
        if not self.knowledge:
            if verdict is None:
                return Judgement(
                    0.0, False, "the judge gave no verdict and there is no knowledge", components
                )
            score = components["llm"]
            return Judgement(score, score >= self.threshold, verdict.reason or "judge model", components)
        check = self.knowledge.check(question, answer)
        components["grounded"] = check.score
        if not _adds_something(question, answer):
            return Judgement(0.0, False, "the answer only repeats the question", components)
        if verdict is None:
            score = check.score
        else:
            score = LLM_WEIGHT * components["llm"] + (1 - LLM_WEIGHT) * check.score
        score = round(score, 3)
        if not check.grounded:
            return Judgement(score, False, check.explain(), components)
        reason = check.explain() + (f"; judge: {verdict.reason}" if verdict and verdict.reason else "")
        return Judgement(score, score >= self.threshold, reason, components)

    def teachback(self, objective: str, answer: str, restatement: str) -> Judgement:
        """Did the student restate what the accepted answer taught, without inventing facts?"""
        if len(content_words(restatement)) < 2:
            return Judgement(0.0, False, "nothing restated", {})
        topic = set(content_words(objective))
        taught = (_key_points(answer) - topic) or (set(content_words(answer)) - topic)
        said = _key_points(restatement) | set(content_words(restatement))
        hits = len(taught & said)
        # Two key points restated (or all, when fewer were taught) is full credit.
        recall = min(1.0, hits / min(len(taught), TEACHBACK_KEY_POINTS)) if taught else 0.0
        components = {"recall": round(recall, 3)}
        if self.knowledge:
            check = self.knowledge.check(objective, restatement)
            components["grounded"] = check.score
            if check.unsupported:
                return Judgement(0.0, False, check.explain(), components)
            score = 0.6 * recall + 0.4 * check.score
        else:
            score = recall
        score = round(score, 3)
        accepted = score >= self.threshold
        reason = f"restated {hits} of {len(taught)} key points"
        return Judgement(score, accepted, reason, components)


def _key_points(text: str) -> set[str]:
    """Numbers and capitalised words wherever they stand: what a restatement should carry over."""
    found = set(specifics(text))
    found.update(w.lower() for w in re.findall(r"\b[A-Z][a-z]{2,}\b", text) if w.lower() not in STOPWORDS)
    return found


def topic_words(objectives: list[str]) -> frozenset[str]:
    """The (stemmed) content words that every objective shares, when there are several."""
    if len(objectives) < 2:
        return frozenset()
    sets = [{stem(w) for w in content_words(o)} for o in objectives]
    return frozenset(set.intersection(*sets))


def _adds_something(question: str, answer: str) -> bool:
    """Whether the answer says anything the question did not ("The capital of X is X" does not)."""
    asked = {stem(w) for w in content_words(question)}
    return bool({stem(w) for w in content_words(answer)} - asked)
