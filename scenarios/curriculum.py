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
from teachback.agents.terms import STOPWORDS, WORD, numbers_as_digits, specifics, stem

GAP = "..."


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

    def objective_of(self, fact: int) -> str:
        return next(o for o, ids in self.of_objective.items() if fact in ids)

    def next_fact(self, objective: str, taught: dict[int, int], phrasings: int) -> int | None:
        """The objective's fact taught fewest times (the first of those), or None once each of its facts was
        taught `phrasings` times."""
        open_facts = [f for f in self.of_objective.get(objective, []) if taught.get(f, 0) < phrasings]
        return min(open_facts, key=lambda f: taught.get(f, 0)) if open_facts else None

    def open_objectives(self, taught: dict[int, int], phrasings: int) -> list[str]:
        """The objectives with a fact not yet taught `phrasings` times, in order."""
        return [o for o in self.of_objective if self.next_fact(o, taught, phrasings) is not None]

    def missing(self, taught: dict[int, int]) -> list[int]:
        """Facts not taught yet, in order."""
        return [i for i in range(len(self.facts)) if not taught.get(i)]


def cloze(fact: str, objective: str, idf: dict[str, float], names: frozenset[str] = frozenset()) -> str:
    """The fact with its answer left out, for a question to fill: its numbers; else the names the objective
    does not give, but the first (the subject); else its rarest word the objective does not use. `names`
    are the knowledge's own (stemmed), so a name that opens the sentence counts.

    >>> cloze("Queen Almeth founded Vellmar in 1487.", "the founding of Vellmar", {})
    'Queen Almeth founded Vellmar in ...'
    >>> cloze("The Ossary rises on Mount Carrow and flows into Korrin harbour.", "the river", {})
    'The Ossary rises on ... and flows into ... harbour'
    >>> cloze("The currency of Vellmar is the drell.", "the currency of Vellmar", {"drell": 2.0})
    'The currency of Vellmar is the ...'
    """
    asked = {stem(w) for w in WORD.findall(numbers_as_digits(objective))}
    named = {s.removesuffix("'s") for s in specifics(fact)} | set(names)
    tokens = list(WORD.finditer(fact))

    def is_number(word: str) -> bool:
        return word[0].isdigit() or numbers_as_digits(word) != word

    def is_name(word: str) -> bool:
        low = word.lower().removesuffix("'s")
        return word[0].isupper() and (low in named or stem(low) in named) and stem(low) not in asked

    masked = [m for m in tokens if is_number(m.group(0))]
    if not masked:
        groups: list[list[re.Match[str]]] = []
        for m in tokens:
            if is_name(m.group(0)):
                if groups and fact[groups[-1][-1].end() : m.start()].strip() == "":
                    groups[-1].append(m)  # "Mount Carrow" is one name
                else:
                    groups.append([m])
        masked = (
            [m for group in groups[1:] for m in group] if len(groups) > 1 else [m for g in groups for m in g]
        )
    if not masked:
        candidates = [
            m for m in tokens if m.group(0).lower() not in STOPWORDS and stem(m.group(0).lower()) not in asked
        ]
        if not candidates:
            return fact
        masked = [max(candidates, key=lambda m: (idf.get(stem(m.group(0).lower()), 0.0), m.start()))]
    out, last = [], 0
    for m in masked:
        out.append(fact[last : m.start()])
        out.append(GAP)
        last = m.end()
    out.append(fact[last:])
    text = re.sub(r"\.\.\.(?:[\s-]*\.\.\.)+", GAP, "".join(out))  # "Queen Almeth" is one gap
    text = text.strip()
    return text[:-1] if text.endswith(".") and not text.endswith(GAP) or text.endswith(GAP + ".") else text
