"""Grounded checks: is a text supported by the scenario's knowledge?

A tiny judge model cannot be trusted alone (SmolLM2 as a judge is at chance: README, judge-eval), so every
verdict also gets these deterministic signals, computed from the knowledge text itself:

- specifics: the answer's numbers and proper names must appear in the knowledge. An answer that says
  "founded in 1623" when the notes say 1487 names a number the notes do not have: unsupported.
- support: how much of the answer's content vocabulary the best-matching passage covers.
- relevance: how much of the question's content vocabulary the answer (or its passage) addresses.

    >>> k = Knowledge("Vellmar's capital is Korrin. Vellmar was founded in 1487.")
    >>> k.check("When was Vellmar founded?", "It was founded in 1487.").unsupported
    []
    >>> k.check("When was Vellmar founded?", "Vellmar was founded in 1623 by Dastor.").unsupported
    ['1623', 'dastor']
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from teachback.agents.claims import split_paragraphs
from teachback.agents.terms import content_words, numbers_as_digits, specifics, stem, words

MIN_SUPPORT = 0.65  # below this share of knowledge vocabulary a text is not grounded


@dataclass(frozen=True)
class GroundedCheck:
    """The deterministic signals for one text against the knowledge, each in 0..1."""

    support: float  # share of the text's content words found in its best passage
    relevance: float  # share of the question's content words the text or its passage addresses
    specifics: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)  # specifics the knowledge does not contain
    passage: str = ""  # the best-matching passage

    @property
    def score(self) -> float:
        """One number: support and relevance, zeroed by any unsupported specific."""
        if self.unsupported:
            return 0.0
        return round(0.6 * self.support + 0.4 * self.relevance, 3)

    @property
    def grounded(self) -> bool:
        """No unsupported specifics, and most of the text's vocabulary comes from the knowledge."""
        return not self.unsupported and self.support >= MIN_SUPPORT

    def explain(self) -> str:
        if self.unsupported:
            return f"not in the knowledge: {', '.join(self.unsupported)}"
        if self.support < MIN_SUPPORT:
            return f"mostly not in the knowledge (support {self.support:.2f})"
        return f"support {self.support:.2f}, relevance {self.relevance:.2f}"


class Knowledge:
    """The scenario's knowledge, split into passages, with lookups for the grounded checks.

    Passages are paragraphs (long ones cut into `passage_sentences`); a heading opens the passages under it.
    `embed` (texts -> unit row vectors) adds meaning to the word overlap of `relevant`, so a question
    in other words ("the seat of government") still finds its passage ("Korrin is the capital").
    """

    def __init__(
        self, text: str, passage_sentences: int = 3, embed: Callable[[list[str]], Any] | None = None
    ):
        self.text = text
        self.passages = []
        heading = ""
        for paragraph in split_paragraphs(text):
            if len(paragraph) == 1 and paragraph[0].lstrip().startswith("#"):
                heading = paragraph[0].lstrip("# ").strip()
                continue
            for i in range(0, len(paragraph), passage_sentences):
                chunk = " ".join(paragraph[i : i + passage_sentences])
                self.passages.append(f"{heading}: {chunk}" if heading else chunk)
        self.passages = self.passages or [""]
        self.embed = embed
        self._vectors: Any = None
        self._passage_stems = [
            Counter(stem(w) for w in content_words(numbers_as_digits(p))) for p in self.passages
        ]
        self._vocabulary = {stem(w) for w in content_words(text)}
        self._specifics = set(specifics(text)) | {w for w in words(text)}
        doc_freq: Counter[str] = Counter()
        for stems in self._passage_stems:
            doc_freq.update(stems.keys())
        n = len(self.passages)
        self._idf = {w: math.log(1 + n / df) for w, df in doc_freq.items()}

    def __bool__(self) -> bool:
        return bool(self.text.strip())

    def foreign_names(self, text: str) -> list[str]:
        """Proper names in `text` (not numbers) that the knowledge never mentions."""
        return [s for s in specifics(text) if not s[:1].isdigit() and s not in self._specifics]

    def relevant(self, query: str, k: int = 3) -> list[str]:
        """The k passages most relevant to the query, best first: the (idf-weighted) content they share
        with it, scaled to the best passage's, plus their cosine similarity to it when there is an
        embedder; in knowledge order among equals."""
        q = {stem(w) for w in content_words(numbers_as_digits(query))}
        lexical = [sum(self._idf.get(w, 0.0) for w in q if w in stems) for stems in self._passage_stems]
        top = max(lexical, default=0.0) or 1.0
        scores = [x / top for x in lexical]
        if self.embed is not None and self.passages != [""]:
            if self._vectors is None:
                self._vectors = self.embed(self.passages)
            similarity = self._vectors @ self.embed([query])[0]
            spread = float(similarity.std()) or 1.0  # how far above the passages' mean, in their spread
            meaning = (similarity - float(similarity.mean())) / spread
            scores = [s + 0.5 * float(c) for s, c in zip(scores, meaning, strict=True)]
        ranked = sorted(range(len(self.passages)), key=lambda i: (-scores[i], i))
        return [self.passages[i] for i in ranked[:k] if scores[i] > 0] or self.passages[:k]

    def coverage(self, text: str) -> float:
        """Share of a text's content words that the knowledge's vocabulary contains."""
        stems = [stem(w) for w in content_words(text)]
        if not stems:
            return 0.0
        return sum(s in self._vocabulary for s in stems) / len(stems)

    def check(self, question: str, text: str) -> GroundedCheck:
        """Ground `text` (an answer or a restatement) in the knowledge, relative to `question`."""
        found = specifics(text)
        unsupported = [s for s in found if s not in self._specifics]
        stems = [stem(w) for w in content_words(text)]
        best, best_i = 0.0, 0
        for i, passage in enumerate(self._passage_stems):
            if stems:
                share = sum(s in passage for s in stems) / len(stems)
                if share > best:
                    best, best_i = share, i
        # Support is measured against the whole knowledge, weighted toward the best passage.
        support = 0.5 * best + 0.5 * self.coverage(text) if stems else 0.0
        # Relevance: the question's words in the text itself, plus partial credit for words of the
        # passage the text draws on (an answer need not repeat the question to address it).
        q_stems = {stem(w) for w in content_words(question)}
        if q_stems:
            direct = len(q_stems & set(stems)) / len(q_stems)
            via_passage = len(q_stems & set(self._passage_stems[best_i])) / len(q_stems) if best else 0.0
            relevance = 0.6 * direct + 0.4 * via_passage
        else:
            relevance = 1.0
        return GroundedCheck(
            support=round(support, 3),
            relevance=round(relevance, 3),
            specifics=found,
            unsupported=unsupported,
            passage=self.passages[best_i],
        )
