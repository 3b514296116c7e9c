"""The curriculum: the atomic facts a run should teach, the objective each belongs to, and what a turn taught.

    curriculum = Curriculum.build(knowledge_text, objectives)             # or with the scenario's `facts:`
    curriculum.facts                      # ["Korrin is the capital of Vellmar.", ...], in knowledge order
    curriculum.of_objective[objective]    # indices of the facts that objective is about
    curriculum.taught(question, claims)   # indices of the facts an accepted answer's claims state

The facts are the knowledge's sentences (`claims.KnowledgeIndex.facts`: a deterministic split), or the
scenario's own `facts:` list; every one of them is in the curriculum. Each paragraph belongs to one
objective: the one whose words it names most (idf-weighted), else the one closest in meaning (MiniLM
embeddings, when an embedder is given: "the language of Vellmar" owns "The people of Vellmar speak
Vellish"), else the objective with the fewest facts. What a turn taught is read from the gate's claims: the
facts that support its held claims.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from teachback.agents.claims import UNSUPPORTED, KnowledgeIndex
from teachback.agents.terms import (
    _COMPOUND,
    _NUMBER_WORD_RE,
    MONTHS,
    STOPWORDS,
    WORD,
    numbers_as_digits,
    specifics,
    stem,
)

GAP = "..."


MAX_MISSES = 2  # turns steered to a fact that did not teach it, after which a run gives the fact up


@dataclass
class Curriculum:
    """The facts in scope, by objective; indices are positions in `facts`."""

    facts: list[str]
    of_objective: dict[str, list[int]]
    index: KnowledgeIndex  # the knowledge (or the explicit facts) the indices below refer to
    _position: dict[int, int] = field(default_factory=dict)  # index fact -> position in `facts`
    explicit: bool = False  # the scenario listed its facts

    @classmethod
    def build(
        cls,
        knowledge: KnowledgeIndex,
        objectives: list[str],
        facts: list[str] | None = None,
        embed: Callable[[list[str]], Any] | None = None,
    ) -> Curriculum:
        """The curriculum of a scenario: see the module docstring. `knowledge` is the gate's index, whose
        claims `taught` reads; explicit `facts` get an index of their own. `embed` maps texts to unit
        vectors (rows)."""
        explicit = bool(facts)
        index = KnowledgeIndex("\n\n".join(facts)) if facts else knowledge
        paragraphs = sorted({f.paragraph for f in index.facts})
        affinity = {o: index.paragraph_affinity(o) for o in objectives}
        owner: dict[int, str] = {}
        for paragraph in paragraphs:  # by the objective's own words
            best = max((affinity[o].get(paragraph, 0.0), -n, o) for n, o in enumerate(objectives))
            if best[0] > 0:
                owner[paragraph] = best[2]
        unowned = [p for p in paragraphs if p not in owner]
        if unowned and embed is not None:  # by meaning
            texts = [" ".join(f.text for f in index.facts if f.paragraph == p) for p in unowned]
            similarity = embed(list(objectives)) @ embed(texts).T
            for column, paragraph in enumerate(unowned):
                owner[paragraph] = objectives[int(similarity[:, column].argmax())]
        for paragraph in unowned:  # else to the objective with the fewest facts so far
            if paragraph not in owner:
                sizes = {o: sum(1 for f in index.facts if owner.get(f.paragraph) == o) for o in objectives}
                owner[paragraph] = min(objectives, key=lambda o: sizes[o])
        in_scope = [f.index for f in index.facts]
        position = {i: p for p, i in enumerate(in_scope)}
        of_objective = {
            o: [position[f.index] for f in index.facts if owner.get(f.paragraph) == o] for o in objectives
        }
        return cls([index.facts[i].text for i in in_scope], of_objective, index, position, explicit)

    def __len__(self) -> int:
        return len(self.facts)

    def taught(self, question: str, claims: list[dict[str, Any]]) -> list[int]:
        """The curriculum facts that the held claims of an accepted answer state (claims as a verdict
        records them), in order. Explicit facts are matched by aligning each claim with them."""
        out: list[int] = []
        for claim in claims:
            if claim.get("status") == UNSUPPORTED:
                continue
            if self.explicit:
                aligned = self.index.claims(question, str(claim.get("text", "")))
                ids = [i for c in aligned if c.status != UNSUPPORTED for i in c.facts]
            else:
                ids = [int(i) for i in claim.get("facts", [])]
            out += [self._position[i] for i in ids if i in self._position and self._position[i] not in out]
        return out

    def hint(self, fact: int, objective: str) -> str:
        """The fact with what it answers left out, for the student to ask about ("Vellmar was founded in
        ..."): its numbers and the names the objective does not give, else its rarest word."""
        return cloze(self.facts[fact], objective, self.index.idf, self.index.names)

    def echo(self, fact: int, objective: str) -> str:
        """The fact asked back as a question ("The council has how many members?")."""
        return echo_question(self.facts[fact], objective, self.index.idf, self.index.names)

    def objective_of(self, fact: int) -> str:
        return next(o for o, ids in self.of_objective.items() if fact in ids)

    def next_fact(
        self, objective: str, taught: dict[int, int], phrasings: int, missed: dict[int, int] | None = None
    ) -> int | None:
        """The objective's fact taught (or tried and missed) fewest times, the first of those; None once each
        of its facts was taught `phrasings` times or missed `MAX_MISSES` times in this run (a fact the
        teacher cannot teach does not hold the dialogue up: `missed` counts the turns steered to it that
        did not teach it)."""
        missed = missed or {}
        open_facts = [
            f
            for f in self.of_objective.get(objective, [])
            if taught.get(f, 0) < phrasings and missed.get(f, 0) < MAX_MISSES
        ]
        return min(open_facts, key=lambda f: taught.get(f, 0) + missed.get(f, 0)) if open_facts else None

    def open_objectives(
        self, taught: dict[int, int], phrasings: int, missed: dict[int, int] | None = None
    ) -> list[str]:
        """The objectives with a fact still to teach (see `next_fact`), in order."""
        return [o for o in self.of_objective if self.next_fact(o, taught, phrasings, missed) is not None]

    def missing(self, taught: dict[int, int]) -> list[int]:
        """Facts not taught yet, in order."""
        return [i for i in range(len(self.facts)) if not taught.get(i)]


def answer_spans(
    fact: str, objective: str, idf: dict[str, float], names: frozenset[str] = frozenset()
) -> list[tuple[int, int]]:
    """Where a fact's answer stands (character spans, in order): its numbers ("one hundred" and "the ninth"
    count); else the names the objective does not give, but the first (the subject); else its rarest word
    the objective does not use. `names` are the knowledge's own (stemmed), so a name that opens the
    sentence counts."""
    asked = {stem(w) for w in WORD.findall(numbers_as_digits(objective))}
    named = {s.removesuffix("'s") for s in specifics(fact)} | set(names)
    tokens = list(WORD.finditer(fact))
    spans = [m.span() for m in re.finditer(r"\d[\d,./]*", fact)]
    for pattern in (_COMPOUND, _NUMBER_WORD_RE):  # "one hundred", "nineteen", "the ninth": numbers too
        spans += [m.span() for m in pattern.finditer(fact) if m.group(0).strip()]
    numbers = [m.span() for m in tokens if any(a <= m.start() < b for a, b in spans)]
    if numbers:
        return _merge(numbers, fact)

    def is_name(word: str) -> bool:
        low = word.lower().removesuffix("'s")
        return word[0].isupper() and (low in named or stem(low) in named) and stem(low) not in asked

    groups: list[list[tuple[int, int]]] = []
    for m in tokens:
        if is_name(m.group(0)):
            if groups and fact[groups[-1][-1][1] : m.start()].strip() == "":
                groups[-1].append(m.span())  # "Mount Carrow" is one name
            else:
                groups.append([m.span()])
    if groups:
        chosen = groups[1:] if len(groups) > 1 else groups
        return _merge([span for group in chosen for span in group], fact)
    candidates = [
        m for m in tokens if m.group(0).lower() not in STOPWORDS and stem(m.group(0).lower()) not in asked
    ]
    if not candidates:
        return []
    rarest = max(candidates, key=lambda m: (idf.get(stem(m.group(0).lower()), 0.0), m.start()))
    return [rarest.span()]


def _merge(spans: list[tuple[int, int]], text: str) -> list[tuple[int, int]]:
    """Spans with only spaces or hyphens between them joined: "Queen Almeth" is one answer."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and text[out[-1][1] : a].strip(" -") == "":
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def cloze(fact: str, objective: str, idf: dict[str, float], names: frozenset[str] = frozenset()) -> str:
    """The fact with its answer left out ("..."), for a question to fill: see `answer_spans`.

    >>> cloze("Queen Almeth founded Vellmar in 1487.", "the founding of Vellmar", {})
    'Queen Almeth founded Vellmar in ...'
    >>> cloze("The Ossary rises on Mount Carrow and flows into Korrin harbour.", "the river", {})
    'The Ossary rises on ... and flows into ... harbour'
    >>> cloze("The currency of Vellmar is the drell.", "the currency of Vellmar", {"drell": 2.0})
    'The currency of Vellmar is the ...'
    """
    spans = answer_spans(fact, objective, idf, names)
    text = _fill(fact, spans, lambda _span: GAP)
    return text[:-1] if text.endswith(".") and not text.endswith(GAP) or text.endswith(GAP + ".") else text


def echo_question(
    fact: str, objective: str, idf: dict[str, float], names: frozenset[str] = frozenset()
) -> str:
    """The fact asked back as a question, its answer (the last span) replaced by a question word: a plain
    question that a fact always answers, whatever the student makes of it.

    >>> echo_question("The council has nineteen members.", "the council", {})
    'The council has how many members?'
    >>> echo_question("Vellmar was founded in 1487.", "the founding", {})
    'Vellmar was founded in which year?'
    >>> echo_question("Korrin is the capital of Vellmar.", "Vellmar", {}, frozenset({"korrin"}))
    'What is the capital of Vellmar?'
    >>> echo_question("The Lantern Tide is held on the ninth of October.", "the festival", {})
    'The Lantern Tide is held on which day of October?'
    """
    spans = answer_spans(fact, objective, idf, names)
    if not spans:
        return ""
    a, b = spans[-1]
    determiner = re.search(r"(?:^|\s)(the|a|an)\s+$", fact[:a], re.IGNORECASE)
    if determiner:  # "is the drell" -> "is what", "The Ossary is ..." -> "What is ..."
        a = determiner.start(1)
    answer, after = fact[a:b], fact[b:].lstrip()
    if re.fullmatch(r"1\d{3}|20\d{2}", answer):
        word = "which year"
    elif answer.lower() in MONTHS:
        word = "which month"
    elif after.lower().startswith("of ") and after[3:4].isupper() and numbers_as_digits(answer) != answer:
        word = "which day"  # "the ninth of October"
    elif any(ch.isdigit() for ch in numbers_as_digits(answer)):
        word = "how many" if re.match(r"[a-z]+", after) else "what number"
    else:
        word = "what"
    text = (fact[:a] + word + fact[b:]).strip().rstrip(".")
    if a == 0:
        text = text[:1].upper() + text[1:]
    return text + "?"


def _fill(text: str, spans: list[tuple[int, int]], replace: Callable[[tuple[int, int]], str]) -> str:
    out, last = [], 0
    for span in spans:
        out.append(text[last : span[0]])
        out.append(replace(span))
        last = span[1]
    out.append(text[last:])
    return "".join(out).strip()
