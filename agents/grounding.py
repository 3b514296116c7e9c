"""Grounded checks: is a text supported by the scenario's knowledge?

A tiny judge model cannot be trusted alone (DESIGN.md: SmolLM2 as a judge is at chance), so every verdict
also gets these deterministic signals, computed from the knowledge text itself:

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
import re
from collections import Counter
from dataclasses import dataclass, field

MIN_SUPPORT = 0.65  # below this share of knowledge vocabulary a text is not grounded

_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]*|\d+(?:[.,]\d+)?")
_NUMBER = re.compile(r"^\d+(?:[.,]\d+)?$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "so",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "into",
        "onto",
        "about",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "done",
        "have",
        "has",
        "had",
        "having",
        "it",
        "its",
        "it's",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "not",
        "no",
        "yes",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "me",
        "him",
        "her",
        "us",
        "them",
        "my",
        "your",
        "his",
        "our",
        "their",
        "mine",
        "yours",
        "also",
        "very",
        "just",
        "only",
        "more",
        "most",
        "much",
        "many",
        "some",
        "any",
        "each",
        "every",
        "all",
        "both",
        "few",
        "other",
        "such",
        "own",
        "same",
        "than",
        "too",
        "s",
        "t",
        "don't",
        "let's",
        "tell",
        "explain",
        "describe",
        "please",
        "know",
        "learn",
        "question",
        "answer",
        "one",
        "two",
        "thing",
        "things",
        "something",
        "anything",
        "really",
        "well",
        "like",
        "get",
        "got",
        "make",
        "made",
        "use",
        "used",
        "using",
        "way",
        "ways",
        "sure",
        "great",
        "okay",
        "ok",
        "hope",
        "helps",
        "glad",
        "happy",
        "notes",
        "note",
        "teacher",
        "student",
        "say",
        "says",
        "said",
        "called",
    ]
)

# Capitalised words that start sentences or are common, not proper names.
_COMMON_CAPITALS = STOPWORDS | {"first", "second", "third", "next", "finally", "step", "yes", "no", "note"}


def words(text: str) -> list[str]:
    """Lower-cased word and number tokens."""
    return [w.lower().strip("'-") for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """Tokens that carry meaning: no stopwords, no one-letter words."""
    return [w for w in words(text) if w not in STOPWORDS and len(w) > 1]


def stem(word: str) -> str:
    """A crude stem so 'rivers' meets 'river' and 'founded' meets 'founding'."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _starts_sentence(text: str, start: int) -> bool:
    """Whether the word at `start` opens a sentence, a line or a list item."""
    before = text[:start].rstrip(" \t\"'*-(0123456789")
    return not before or before[-1] in ".!?:\n"


def specifics(text: str) -> list[str]:
    """Numbers and proper names in a text, lower-cased, in order, without repeats.

    A proper name is a capitalised word that is not a common word. A capitalised word that starts a
    sentence is no evidence of a name ("Remember, ..."), so it counts only if it is capitalised again
    later in the text.
    """
    out: list[str] = []
    matches = list(_WORD.finditer(text))
    mid_sentence_capitals = {m.group(0) for m in matches if not _starts_sentence(text, m.start())}
    for match in matches:
        token = match.group(0)
        low = token.lower().strip("'-")
        if _NUMBER.match(token):
            if _starts_sentence(text, match.start()) and text[match.end() : match.end() + 1] in (".", ")"):
                continue  # a list marker such as "1." or "2)"
            candidate = token.replace(",", "")
        elif (
            token[0].isupper()
            and low not in _COMMON_CAPITALS
            and len(low) > 1
            and (token in mid_sentence_capitals or not _starts_sentence(text, match.start()))
        ):
            candidate = low.removesuffix("'s")
        else:
            continue
        if candidate not in out:
            out.append(candidate)
    return out


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
    """The scenario's knowledge, split into passages, with lookups for the grounded checks."""

    def __init__(self, text: str, passage_sentences: int = 2):
        self.text = text
        sentences = [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]
        self.passages = [
            " ".join(sentences[i : i + passage_sentences])
            for i in range(0, len(sentences), passage_sentences)
        ] or [""]
        self._passage_stems = [Counter(stem(w) for w in content_words(p)) for p in self.passages]
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
        """The k passages that share the most (idf-weighted) content with the query, best first."""
        q = {stem(w) for w in content_words(query)}
        scored = [
            (sum(self._idf.get(w, 0.0) for w in q if w in stems), -i, p)
            for i, (p, stems) in enumerate(zip(self.passages, self._passage_stems, strict=True))
        ]
        scored.sort(reverse=True)
        return [p for s, _, p in scored[:k] if s > 0] or self.passages[:k]

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
