"""Claims: split an answer into the facts it asserts, and find the knowledge sentence that says each one.

Vocabulary overlap cannot tell "Trovik founded the observatory" from "Trovik built the gauge": both use the
knowledge's words. What tells them apart is *binding*: which names, numbers and words the knowledge says
together, in one sentence, in which roles. So each claim of an answer is aligned with the knowledge's
sentences (`Fact`s) and gets one of three statuses:

- `supported`: one sentence holds every term of the claim, numbers and names included, with the same
  polarity, in the same roles (a swapped subject and object, or "X is Y" where the sentence only relates X
  and Y some other way, is not support);
- `uncertain`: the claim's names and numbers are bound as the notes bind them, but some of its words are
  not in that sentence (a paraphrase, or a fact composed of two sentences that share a subject). An
  entailment question to the judge model decides these (`entailment.py`);
- `unsupported`: a name or number the knowledge lacks, or one the knowledge only says of something else
  ("the Ossary is 2,340 metres long": 2,340 is Mount Carrow's height), a swapped relation, or a negation the
  notes do not make.

    >>> k = KnowledgeIndex("Korrin is the capital of Vellmar. Mount Carrow is 2,340 metres high. "
    ...                    "The Ossary is 212 kilometres long.")
    >>> [c.status for c in k.claims("How high is Mount Carrow?", "It is 2,340 metres high.")]
    ['supported']
    >>> c = k.claims("How long is the Ossary?", "The Ossary is 2,340 metres long.")[0]
    >>> c.status, c.reason
    ('unsupported', 'the notes say 2340 of something else')
    >>> k.claims("What is the capital?", "Vellmar is the capital of Korrin.")[0].reason
    'reverses what the notes say (korrin ... vellmar)'

The knowledge's sentences are its atomic facts: `facts` is the deterministic split that `validate` counts
and that coverage ("facts taught N/M") is measured in.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from teachback.agents.terms import (
    IRREGULAR_FORMS as _IRREGULAR_FORMS,
)
from teachback.agents.terms import (
    MONTHS,
    STOPWORDS,
    WORD,
    common_word,
    content_words,
    numbers_as_digits,
    specifics,
    stem,
)

SUPPORTED, UNCERTAIN, UNSUPPORTED = "supported", "uncertain", "unsupported"
TOPIC_SHARE = 0.2  # a term in at least this share of the sentences is the topic, not a binding
MIN_UNCERTAIN_COVER = 0.5  # share (idf-weighted) of a claim's terms one sentence must hold to be a candidate
MAX_CLAIMS = 8  # an answer is judged on its first claims; a teacher's answer is two or three sentences

_NEGATION = re.compile(r"\b(not|never|no|none|neither|nor|cannot|without)\b|n't\b", re.IGNORECASE)
_PRONOUN_START = re.compile(
    r"^(it|its|they|their|them|he|his|she|her|this|these|those|that|there|which|who|whose|where)\b",
    re.IGNORECASE,
)
_FILLER = re.compile(
    r"^(?:(?:yes|no|sure|okay|ok|well|great question|good question|of course|indeed|certainly|also|"
    r"so|then|first|second|third|next|finally|in short|according to (?:the|my) notes|in fact|however|"
    r"based on (?:the|my) notes|from (?:the|my) notes|the notes say(?: that)?|"
    r"therefore|also|additionally|furthermore|moreover|overall|remember|note that|i learned(?: that)?|"
    r"i have learned(?: that)?|i now know(?: that)?|so|"
    r"the notes say(?: that)?|from the notes)\b[,:!.]?\s*)+",
    re.IGNORECASE,
)
# Where an answer's sentence holds two claims: "...; ...", "..., and ...", "..., which ...".
_CLAUSE_BREAK = re.compile(
    r";\s+|,\s+(?:and then|and|but|while|whereas|then|so|since|because)\s+"
    r"|,\s+(?=(?:which|who|where|when)\b)|\s+and then\s+|\s+(?:because|since)\s+"
)
_ABBREVIATION = re.compile(r"\b(?:[A-Z]|Mr|Mrs|Ms|Dr|St|Mt|No|e\.g|i\.e|etc|approx|vs)\.$")
_HEADING = re.compile(r"^\s{0,3}#+\s*")
_TITLE = re.compile(r"^\s*(?:#+\s*|(?:step|part|stage|section|chapter)\s+\w+\s*[:.]\s)", re.IGNORECASE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_COPULA = {"is", "are", "was", "were", "be", "been", "the", "a", "an", "'s", "called", "named", "known", "as"}
# Words an answer may add without claiming anything the notes must say.
_LIGHT = {
    stem(w)
    for w in """
    located situated known name named call called usual usually typical typically general generally
    actual actually exact exactly approximately around roughly total important importantly famous
    special main once
    """.split()
}
# Capitalised words that open an English sentence without naming anything.
_COMMON_OPENERS = set(
    """
    after before during since because although though while once today now every each most many some
    people everyone nobody another both either neither none always often sometimes never remember note
    however therefore thus hence meanwhile besides furthermore moreover additionally overall instead
    unlike like without within between among along across around above below under over near inside
    outside behind beside beyond until unless whether whenever wherever here there yes no
    """.split()
)
_TIME_WORDS = set(MONTHS) | {
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "spring", "summer",
    "autumn", "winter", "year", "week", "day", "month", "midday", "noon", "morning", "evening", "night",
    "dawn", "dusk", "season", "hour", "minute", "annual", "daily", "weekly", "yearly", "once", "twice",
}  # fmt: skip
_TIME_STEMS = {stem(w) for w in _TIME_WORDS}


def split_sentences(text: str) -> list[str]:
    """A text's sentences: paragraphs joined across hard line wraps, headings and list items on their own.

    >>> split_sentences("# Bees\\nThey were first bred in\\n1902 by Maud. Mt. Carrow is high.\\n- one item")
    ['# Bees', 'They were first bred in 1902 by Maud.', 'Mt. Carrow is high.', '- one item']
    """
    return [s for paragraph in split_paragraphs(text) for s in paragraph]


def split_paragraphs(text: str) -> list[list[str]]:
    """A text's paragraphs (blocks between blank lines; a heading opens a block of its own), each as its
    sentences: see `split_sentences`."""
    out: list[list[str]] = []
    for block in re.split(r"\n\s*\n", text):
        current: list[str] = []
        lines: list[str] = []
        for line in block.splitlines():
            if not line.strip():
                continue
            if _HEADING.match(line) or _LIST_ITEM.match(line):
                current.extend(_sentences_of(" ".join(lines)))
                lines = []
                if _HEADING.match(line):
                    if current:
                        out.append(current)
                    out.append([line.strip()])
                    current = []
                    continue
            lines.append(line.strip())
        current.extend(_sentences_of(" ".join(lines)))
        if current:
            out.append(current)
    return out


def _sentences_of(paragraph: str) -> list[str]:
    pieces: list[str] = []
    current = ""
    for part in re.split(r"(?<=[.!?])\s+(?=[\"'(]?[A-Z0-9])", paragraph.strip()):
        current = f"{current} {part}" if current else part
        if not _ABBREVIATION.search(current):
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    # "The bottom two boxes hold the brood; the five boxes above hold honey." is two facts
    return [part.strip() for p in pieces for part in re.split(r";\s+", p) if part.strip()]


@dataclass(frozen=True)
class Fact:
    """One knowledge sentence: an atomic fact, the unit claims are checked against and coverage counts."""

    index: int
    text: str
    terms: tuple[str, ...]  # stems of its content words in order, numbers as digits
    context: frozenset[str]  # names it refers back to (its heading; the previous sentence's, for "It ...")
    negated: bool
    paragraph: int = 0  # facts of one paragraph are about one thing

    @property
    def term_set(self) -> frozenset[str]:
        return frozenset(self.terms)


@dataclass(frozen=True)
class Claim:
    """One fact an answer asserts, and how the knowledge bears on it."""

    text: str
    status: str  # supported, uncertain or unsupported
    reason: str = ""  # why, when not supported
    facts: tuple[int, ...] = ()  # indices of the knowledge sentences that say it
    terms: tuple[str, ...] = ()
    p_yes: float | None = None  # the judge model's entailment probability, when it was asked

    def record(self, index: KnowledgeIndex) -> dict[str, object]:
        """The claim as the transcript keeps it: its text, status, the passage that supports it ("" for none)
        and its facts; an unsupported claim keeps the sentence it contradicts, if any, as `against`."""
        passage = " ".join(index.facts[i].text for i in self.facts)
        supports = self.status != UNSUPPORTED
        out: dict[str, object] = {
            "text": self.text,
            "status": self.status,
            "passage": passage if supports else "",
            "facts": list(self.facts) if supports else [],
        }
        if passage and not supports:
            out["against"] = passage
        if self.reason:
            out["reason"] = self.reason
        if self.p_yes is not None:
            out["p_yes"] = round(self.p_yes, 3)
        return out


@dataclass
class _Piece:
    text: str
    terms: list[str]  # stems in order
    values: list[str]  # numbers and names, stemmed
    numbers: list[str]
    required: set[str] = field(default_factory=set)  # an antecedent the claim refers back to


class KnowledgeIndex:
    """The knowledge as facts, with an inverted index for aligning claims. `embed` (texts -> unit row
    vectors) lets `answers` find where a question in other words points ("what money" -> the currency)."""

    def __init__(self, text: str, embed: Callable[[list[str]], Any] | None = None):
        self.text = text
        self.embed = embed
        self._vectors: Any = None
        self.facts: list[Fact] = []
        heading: frozenset[str] = frozenset()
        previous_names: frozenset[str] = frozenset()
        for paragraph, sentences in enumerate(split_paragraphs(text)):
            for sentence in sentences:
                if _HEADING.match(sentence):
                    heading = frozenset(_names(_HEADING.sub("", sentence)))  # its names, not its common words
                    previous_names = frozenset()
                    continue
                terms = tuple(_terms(sentence))
                if not terms:
                    continue
                context = set(heading)
                if _PRONOUN_START.match(_LIST_ITEM.sub("", sentence)) or not _names(sentence):
                    context |= previous_names
                negated = bool(_NEGATION.search(sentence))
                self.facts.append(
                    Fact(len(self.facts), sentence, terms, frozenset(context), negated, paragraph)
                )
                previous_names = frozenset(_names(sentence)) or previous_names
        self._where: dict[str, set[int]] = defaultdict(set)
        for fact in self.facts:
            for term in fact.terms:
                self._where[term].add(fact.index)
        n = max(1, len(self.facts))
        self.idf = {t: math.log(1 + n / len(ids)) for t, ids in self._where.items()}
        self.topic = frozenset(t for t, ids in self._where.items() if len(ids) >= max(3, TOPIC_SHARE * n))
        self.names = frozenset(stem(s) for s in specifics(numbers_as_digits(text)))
        self._spellings: dict[str, set[str]] = defaultdict(set)  # stem -> the words of the notes it stems
        for word in WORD.findall(numbers_as_digits(text)):
            self._spellings[stem(word.lower())].add(word.lower())

    def _subject(self, names: list[str]) -> set[str]:
        """What "it" or "they" would refer back to: the first name, unless it is the topic (said of
        everything, so binding nothing): "Vellmar is an island ..., and its currency is the drell"."""
        first = next((n for n in names if not n[:1].isdigit()), None)
        return {first} if first and first not in self.topic else set()

    def _value(self, term: str) -> bool:
        """A number or a name of the notes: a part of a claim on its own ("... in 1487")."""
        return term[:1].isdigit() or term in self.names

    def specific(self, term: str) -> bool:
        """Whether a term of the notes is theirs rather than everyday English: a name, a number, a word of
        the domain ("saltglass", "spanner"); "new", "glass" and "people" are not."""
        return (
            term in self.names
            or term[:1].isdigit()
            or not any(common_word(w) for w in self._spellings.get(term, {term}))
        )

    def __bool__(self) -> bool:
        return bool(self.facts)

    def __len__(self) -> int:
        return len(self.facts)

    # -- claims -----------------------------------------------------------------------------------------

    def claims(self, question: str, answer: str) -> list[Claim]:
        """The claims of an answer, each aligned with the knowledge (see the module docstring)."""
        antecedent = self._subject(_names(question))  # "How long is the Ossary?" "It is ..."
        out: list[Claim] = []
        previous: _Piece | None = None
        for piece in _pieces(answer):
            opening = [stem(w) for w in _opening_capital(piece.text) if stem(w) in self.names]
            piece.values = list(dict.fromkeys(opening + piece.values))  # "Korrin is ...": a name of the notes
            if re.match(r"when\b", piece.text, re.IGNORECASE) and previous is not None:
                piece.required |= {t for t in previous.terms if t[:1].isdigit() or t in _TIME_STEMS}
            content = {t for t in piece.terms if t in self._where and t not in self.topic}
            elliptical = not (set(piece.values) - self.topic) and len(content) <= 2  # "In 1487."
            relative = re.match(r"(which|who|whom|whose|where)\b", piece.text, re.IGNORECASE)
            if relative and previous is not None:
                claim = self._relative(piece, previous)
            else:
                if _PRONOUN_START.match(piece.text) or elliptical:
                    piece.required |= {t for t in antecedent if t not in piece.terms}
                claim = self._check(piece)
            if claim is not None:
                out.append(claim)
            if any(not v[:1].isdigit() for v in piece.values):
                antecedent = self._subject(piece.values)
            previous = piece
            if len(out) >= MAX_CLAIMS:
                break
        return out

    def _relative(self, piece: _Piece, previous: _Piece) -> Claim | None:
        """A relative clause ("..., which was opened in 1610") said of a name of the clause before: the
        nearest name first, then the ones before it ("Tamsin College in Korrin, which": the college)."""
        last = next((t for t in reversed(previous.terms) if t in self._where), "")
        if last not in self.names or last in self.topic:  # "a tall hive called a Ferrand stack, which"
            piece.required = set()
            return self._check(piece)
        names = [t for t in reversed(previous.terms) if t in self.names and t not in self.topic and t != last]
        before = (n for n in dict.fromkeys(names) if _only_preposition_between(previous.text, n, last))
        names = [last, *before]
        first: Claim | None = None
        for name in names:
            piece.required = {name}
            claim = self._check(piece)
            if claim is None or claim.status != UNSUPPORTED:
                return claim
            first = first or claim
        piece.required = {last}
        return first

    def _check(self, piece: _Piece) -> Claim | None:
        known = [t for t in dict.fromkeys(piece.terms) if t in self._where]
        unknown = [t for t in dict.fromkeys(piece.terms) if t not in self._where and t not in _LIGHT]
        foreign_values = [v for v in piece.values if v not in self._where]
        foreign_values += [w for w in _opening_capital(piece.text) if stem(w) not in self._where]
        if foreign_values:
            reason = f"not in the knowledge: {', '.join(dict.fromkeys(foreign_values))}"
            return Claim(piece.text, UNSUPPORTED, reason, terms=tuple(known))
        if not (set(known) - self.topic) and not piece.numbers:
            return None  # says nothing the knowledge is about: filler, not a claim
        # The topic's words (the domain's name, its main thing) are said everywhere: not required of a fact
        wanted = (set(known) - self.topic) | piece.required | (set(piece.numbers) & set(known))
        wanted = wanted or set(known)
        values = (set(piece.values) - self.topic) | piece.required
        negated = bool(_NEGATION.search(piece.text))
        candidates = self._candidates(wanted)
        best: tuple[float, Fact] | None = None
        for fact in candidates:
            covered = wanted & (fact.term_set | fact.context)
            if not values <= covered or not set(piece.numbers) <= fact.term_set:
                continue
            # a whole cover is 1.0 exactly (a float sum over two sets in two orders need not be)
            share = 1.0 if covered == wanted else self._weight(covered) / max(self._weight(wanted), 1e-9)
            if best is None or share > best[0]:
                best = (share, fact)
        conflict = self._conflict(piece, candidates) if best is None or best[0] < 1.0 else ""
        if conflict:
            return Claim(piece.text, UNSUPPORTED, conflict, terms=tuple(known))
        if best is not None and best[0] >= 1.0:
            fact = best[1]
            problem = self._relation_problem(piece, fact) or (
                "the notes say the opposite" if negated != _negated_near(fact.text, piece.terms) else ""
            )
            if problem:
                return Claim(piece.text, UNSUPPORTED, problem, facts=(fact.index,), terms=tuple(known))
            if unknown:
                reason = f"the notes do not say: {', '.join(unknown)}"
                return Claim(piece.text, UNCERTAIN, reason, (fact.index,), tuple(known))
            return Claim(piece.text, SUPPORTED, facts=(fact.index,), terms=tuple(known))
        pair = self._pair(piece, wanted, candidates)
        if pair is not None:
            return Claim(piece.text, UNCERTAIN, "composed of two sentences", pair, tuple(known))
        if (
            best is not None
            and best[0] >= MIN_UNCERTAIN_COVER
            and negated == _negated_near(best[1].text, piece.terms)
        ):
            missing = sorted(wanted - best[1].term_set - best[1].context - self.topic)
            specific = [t for t in missing if self.specific(t)]
            if specific:  # the notes' own terms, said of something else: a recombination, not a paraphrase
                reason = f"the notes say {', '.join(specific)} of something else"
                return Claim(piece.text, UNSUPPORTED, reason, terms=tuple(known))
            problem = self._relation_problem(piece, best[1])
            if problem:
                return Claim(piece.text, UNSUPPORTED, problem, terms=tuple(known))
            reason = f"the notes do not say: {', '.join(missing + unknown)}"
            return Claim(piece.text, UNCERTAIN, reason, (best[1].index,), tuple(known))
        return Claim(piece.text, UNSUPPORTED, self._why_unbound(piece, values), terms=tuple(known))

    def _conflict(self, piece: _Piece, candidates: list[Fact]) -> str:
        """A claim that is one sentence of the notes with one thing exchanged: a number in the same slot
        ("founded in 1610": the notes found it in 1487), or a word between the same neighbours ("marked
        with a red dot": the notes say green; "frames of pine wood": cedar)."""
        claim_terms = [t for t in piece.terms if t in self._where or t[:1].isdigit()]
        for fact in candidates:
            for number in piece.numbers:
                rest = {t for t in claim_terms if t != number and not t[:1].isdigit()}
                if len(rest) < 2 or not rest <= fact.term_set | fact.context or number in fact.term_set:
                    continue
                said_as = _number_slot(piece.text, number)
                for other in (t for t in fact.terms if t[:1].isdigit() and t not in piece.numbers):
                    if _number_slot(fact.text, other) == said_as:  # "founded in 1610" / "founded in 1487"
                        return f"the notes say {other}, not {number}"
            content = [t for t in piece.terms if t not in self.topic]
            swap = _substitution(content, [t for t in fact.terms if t not in self.topic])
            if swap and swap[1] not in piece.terms and swap[0] not in fact.term_set:
                return f"the notes say {swap[1]}, not {swap[0]}"
        return ""

    def _candidates(self, wanted: Iterable[str]) -> list[Fact]:
        ids: set[int] = set()
        for term in wanted:
            if term not in self.topic:
                ids |= self._where.get(term, set())
        if not ids:  # only topic words: every sentence with one of them
            for term in wanted:
                ids |= self._where.get(term, set())
        return [self.facts[i] for i in sorted(ids)]

    def _weight(self, terms: Iterable[str]) -> float:
        return sum(self.idf.get(t, 0.0) for t in terms)

    def _pair(self, piece: _Piece, wanted: set[str], candidates: list[Fact]) -> tuple[int, int] | None:
        """Two sentences that share a subject and each say one part of the claim, the parts being its
        words before and after some point: "Queen Almeth founded Vellmar | in 1487" from "Queen Almeth
        founded Vellmar when ..." and "Vellmar was founded in 1487."."""
        terms = [t for t in piece.terms if t in self._where and t not in self.topic] + sorted(piece.required)
        numbers = set(piece.numbers)
        values = set(piece.values)
        for head, tail in _splits(terms):
            if any(
                len(part) < 2 and not any(self._value(t) or t in values for t in part)
                for part in (head, tail)
            ):
                continue  # a part is a claim of its own: "... hold | the honey" is no second fact
            firsts = [f for f in candidates if self._says(f, head, numbers)]
            seconds = [f for f in candidates if self._says(f, tail, numbers)]
            for a in firsts:
                for b in seconds:
                    if a.index == b.index:
                        continue
                    join = (a.term_set | a.context) & (b.term_set | b.context) & wanted
                    # two whole clauses from neighbouring sentences tell one story ("close the cock and wait")
                    # and a clause told in the sentence after the one its time came from ("founded it in
                    # 1487, when she united the clans": 1487 and the uniting stand in neighbouring sentences)
                    inherited_time = tail <= piece.required and all(_timely(t) for t in tail)
                    clauses = min(len(head), len(tail)) >= 2 or bool(tail) and inherited_time
                    neighbours = clauses and a.paragraph == b.paragraph and abs(a.index - b.index) == 1
                    if join - self.topic or neighbours:  # one subject, or one story told in two sentences
                        return (a.index, b.index)
        return None

    @staticmethod
    def _says(fact: Fact, terms: set[str], numbers: set[str]) -> bool:
        """Whether a sentence holds these terms, its numbers in its own words (names may be context)."""
        return terms <= (fact.term_set | fact.context) and (terms & numbers) <= fact.term_set

    def _relation_problem(self, piece: _Piece, fact: Fact) -> str:
        """A swapped relation ("Vellmar is the capital of Korrin"), or "X is Y" where the sentence relates
        X and Y by a verb ("the gauge is read by the keepers" is not "the keepers are the gauge")."""
        claim_terms = [t for t in dict.fromkeys(piece.terms) if t in fact.term_set]
        positions = {t: fact.terms.index(t) for t in claim_terms}
        for i, x in enumerate(claim_terms):
            for y in claim_terms[i + 2 :]:
                if positions[x] <= positions[y]:
                    continue
                between_claim = set(_between(piece.terms, x, y))
                between_fact = set(_between(list(fact.terms), y, x))
                flip = _has_by_between(piece.text, x, y) != _has_by_between(fact.text, y, x)
                flip = flip or _relative_between(piece.text, x, y)  # "the seat that the ring sits on"
                if between_claim and between_claim <= between_fact and not flip:
                    return f"reverses what the notes say ({y} ... {x})"
        problem = _direction_problem(piece.text, fact.text)
        if problem:
            return problem
        noted = _copular_pairs(fact.text)
        for x, y in _copular_pairs(piece.text):
            if x[0].isdigit() or y[0].isdigit():
                continue  # "X is 2,340 metres": a measurement, not an identity
            other = next((b for a, b in noted if a == x and b != y and b not in piece.terms), None)
            if other is not None and y not in fact.term_set and self.specific(other):
                return f"the notes say {x} is {other}, not {y}"  # "the currency is the euro": it is the drell
            if x == y or x not in self._where or y not in self._where:
                continue  # a word the notes lack is the model's to weigh
            if x not in positions or y not in positions or not _said_to_be(fact.text, x, y):
                return f"the notes do not say that {x} is {y}"
        return ""

    def _why_unbound(self, piece: _Piece, values: set[str]) -> str:
        for value in piece.numbers + [v for v in piece.values if v not in piece.numbers]:
            holders = [f for f in self.facts if value in f.term_set]
            others = values - {value} - self.topic
            if holders and others and not any(others & (f.term_set | f.context) for f in holders):
                return f"the notes say {value} of something else"
        missing = [t for t in piece.terms if t in self._where]
        return "no sentence of the notes says this" if missing else "not in the knowledge"

    # -- facts and questions ----------------------------------------------------------------------------

    def answers(self, question: str, claims: list[Claim]) -> bool | None:
        """Whether some holding claim answers the question: it gives the kind of thing asked for (a number
        for "how many", the thing counted; a time for "when"), and its fact is where the question's words
        point (the paragraphs that name most of them: "clean the seat" is step 3, not the clean cloth of
        step 2). None when the question names nothing of the notes: then only a reader can tell.
        """
        held = [c for c in claims if c.status != UNSUPPORTED]
        counted = re.search(r"\bhow (?:many|much) (\w+)", question, re.IGNORECASE)
        counted_term = stem(counted.group(1)) if counted else ""  # "how many members": members are asked
        fitting = []
        for claim in held:
            said = set(claim.terms)
            for i in claim.facts:
                said |= self.facts[i].term_set | self.facts[i].context
            if counted_term in self._where and counted_term not in said:
                continue
            if _gives(expected_kind(question), claim.text, question):
                fitting.append((claim, said))
        if not fitting:
            return False
        asked = {t for t in _terms(question) if t in self._where}
        if not asked - self.topic:
            return None
        named = asked - self.topic
        holders = [f.index for f in self.facts if len(named) >= 2 and named <= f.term_set | f.context]
        if len(holders) == 1:  # the question names one fact of the notes: the answer must state it
            holder = self.facts[holders[0]]
            if _TITLE.match(holder.text):  # "Step 4: fit the new seal ring.": a title names its paragraph
                return any(self.facts[i].paragraph == holder.paragraph for c, _ in fitting for i in c.facts)
            return any(holders[0] in claim.facts for claim, _ in fitting)
        affinity = self.paragraph_affinity(question, topic=True)
        top = max(affinity.values(), default=0.0)
        near = {p for p, weight in affinity.items() if weight >= 0.75 * top}
        near |= self._closest_paragraphs(question)
        for claim, said in fitting:
            if any(self.facts[i].paragraph in near for i in claim.facts):
                return True
            if not claim.facts and asked - self.topic <= said:
                return True
        return False

    def _closest_paragraphs(self, question: str, k: int = 2) -> set[int]:
        """The paragraphs of the k facts closest in meaning to the question (none without an embedder)."""
        if self.embed is None or not self.facts:
            return set()
        if self._vectors is None:
            self._vectors = self.embed([f.text for f in self.facts])
        similarity = self._vectors @ self.embed([question])[0]
        return {self.facts[int(i)].paragraph for i in similarity.argsort()[::-1][:k]}

    def one_topic(self, question: str) -> bool:
        """Whether one paragraph holds the question's words of the notes (all but one, from three on):
        a question that glues two topics together has no answer in the notes."""
        wanted = {t for t in _terms(question) if t in self._where and t not in self.topic}
        if len(wanted) < 2:
            return True
        allowed = 1 if len(wanted) >= 3 else 0
        for paragraph in {f.paragraph for f in self.facts}:
            vocabulary = {t for f in self.facts if f.paragraph == paragraph for t in f.term_set | f.context}
            if len(wanted - vocabulary) <= allowed:
                return True
        return False

    def facts_of(self, objective: str) -> list[Fact]:
        """The facts an objective is about: the paragraphs holding a sentence that names one of the
        objective's own words ("how Vellmar is governed" -> the paragraph on the Council of Nineteen)."""
        paragraphs = {p for p, weight in self.paragraph_affinity(objective).items() if weight > 0}
        return [f for f in self.facts if f.paragraph in paragraphs]

    def paragraph_affinity(self, text: str, topic: bool = False) -> dict[int, float]:
        """Per paragraph, the idf weight of the text's words it names (a word also meets its own
        derivations: "breeder" meets "bred", "calmly" meets "calmest"); the topic's words count only
        when `topic`."""
        wanted = set(_terms(text)) if topic else set(_terms(text)) - self.topic
        weight: dict[int, float] = defaultdict(float)
        for paragraph in {f.paragraph for f in self.facts}:
            vocabulary = {t for f in self.facts if f.paragraph == paragraph for t in f.term_set | f.context}
            for word in wanted:
                hits = [t for t in vocabulary if _derived(word, t)]
                if hits:
                    weight[paragraph] += max(self.idf.get(t, 0.0) for t in hits)
        return dict(weight)

    def facts_for(self, text: str, k: int = 3) -> list[Fact]:
        """The k facts that share the most (idf-weighted) terms with a text, best first."""
        wanted = set(_terms(text))
        scored = sorted(
            ((self._weight(wanted & f.term_set), -f.index) for f in self._candidates(wanted)), reverse=True
        )
        return [self.facts[-i] for s, i in scored[:k] if s > 0]


def expected_kind(question: str) -> str:
    """What a question asks for: number, time, name or anything.

    >>> expected_kind("How many members sit on the council?"), expected_kind("When is the festival?")
    ('number', 'time')
    """
    q = question.lower()
    if re.search(r"\bhow (many|much|long|tall|high|old|far|deep|wide|big|heavy|large|often)\b", q):
        return "number" if not re.search(r"\bhow (long|often)\b", q) else "number-or-time"
    if re.search(r"\b(when|what year|which year|what date|what day|what month|what time)\b", q):
        return "time"
    if re.search(r"^\W*(who|whom)\b|\bwho\b", q):
        return "name"
    return "any"


def _gives(expects: str, answer: str, question: str) -> bool:
    said = numbers_as_digits(answer)
    has_number = bool(re.search(r"\d", said))
    # a time: a time word, a year, or a number of time units ("18 kilograms" is no time)
    has_time = bool({stem(w) for w in content_words(said)} & _TIME_STEMS) or bool(
        re.search(r"\b1\d{3}\b", said)
    )
    if expects == "number":
        return has_number
    if expects == "number-or-time":  # "how long", "how often": a length, a duration or a frequency
        return has_number or has_time
    if expects == "time":
        return has_time
    if expects == "name":
        asked = set(_names(question))
        return bool({n for n in _names(answer) if not n[0].isdigit()} - asked) or bool(
            re.search(r"\b(keeper|beekeeper|people|council)\b", said)
        )
    return True


def _terms(text: str) -> list[str]:
    """Stems of a text's content words, in order, numbers as digits."""
    return [stem(w) for w in content_words(numbers_as_digits(text))]


def _names(text: str) -> list[str]:
    return [stem(s) for s in specifics(numbers_as_digits(text))]


def _pieces(answer: str) -> list[_Piece]:
    out = []
    for sentence in split_sentences(answer):
        sentence = _LIST_ITEM.sub("", _HEADING.sub("", sentence))
        for part in _CLAUSE_BREAK.split(sentence):
            text = _FILLER.sub("", part.strip().strip("\"'")).strip()
            if not text:
                continue
            digits = numbers_as_digits(text)
            terms = _terms(text)
            names = _names(text)
            numbers = [stem(w) for w in WORD.findall(digits) if w[0].isdigit()]
            out.append(
                _Piece(text, terms, list(dict.fromkeys(names + numbers)), list(dict.fromkeys(numbers)))
            )
    return out


def _opening_capital(text: str) -> list[str]:
    """A capitalised word opening a claim that is no common word: a name, unless the knowledge has it
    ("PWNED. Korrin is ..." names PWNED; "Dastor is the capital" names Dastor)."""
    match = re.match(r"[\"'(]*([A-Z][A-Za-z'\-]+)", text)
    if not match:
        return []
    word = match.group(1)
    low = word.lower()
    if low in STOPWORDS or low in _COMMON_OPENERS or low.endswith("ly") or common_word(low):
        return []  # "Based on the notes", "Close the feed cock": English, not a name
    return [low.removesuffix("'s")]


def _derived(a: str, b: str) -> bool:
    """Whether two stems are one word's derivations: equal, or one starts the other (4 letters or more).

    >>> _derived("breeder", "breed"), _derived("calm", "calmest"), _derived("sea", "season")
    (True, True, False)
    """
    return a == b or (min(len(a), len(b)) >= 4 and (a.startswith(b) or b.startswith(a)))


def _between(terms: list[str], x: str, y: str) -> list[str]:
    """The terms strictly between the first x and the first y after it."""
    if x not in terms:
        return []
    start = terms.index(x)
    if y not in terms[start + 1 :]:
        return []
    end = terms.index(y, start + 1)
    return terms[start + 1 : end]


def _substitution(claim: list[str], fact: list[str]) -> tuple[str, str] | None:
    """One word of the claim standing where the fact has another, with the same word on each side and a
    third shared word beyond: (claim's word, fact's word), or None.

    >>> _substitution(["queen", "mark", "red", "dot", "back"], ["queen", "mark", "green", "dot", "back"])
    ('red', 'green')
    >>> _substitution(["govern", "council", "19"], ["peopl", "elect", "council", "6"]) is None
    True
    """
    for i in range(1, len(claim) - 1):
        for j in range(1, len(fact) - 1):
            if fact[j - 1] != claim[i - 1] or fact[j + 1] != claim[i + 1] or fact[j] == claim[i]:
                continue
            beyond_left = i >= 2 and j >= 2 and claim[i - 2] == fact[j - 2]
            beyond_right = i + 2 < len(claim) and j + 2 < len(fact) and claim[i + 2] == fact[j + 2]
            if beyond_left or beyond_right:
                return (claim[i], fact[j])
    return None


def _number_slot(text: str, number: str) -> tuple[str, str]:
    """The words on each side of a number, stopwords included: "founded in 1487" -> ("in", "")."""
    tokens = [w.lower() for w in WORD.findall(numbers_as_digits(text))]
    if number not in tokens:
        return ("", "")
    i = tokens.index(number)
    return (tokens[i - 1] if i else "", tokens[i + 1] if i + 1 < len(tokens) else "")


def _stemmed_tokens(text: str) -> tuple[list[str], list[str]]:
    """A text's tokens, lower-cased, and their stems, numbers as digits."""
    tokens = [w.lower() for w in WORD.findall(numbers_as_digits(text))]
    return tokens, [stem(t) for t in tokens]


def _negated_near(sentence: str, terms: list[str]) -> bool:
    """Whether a negation governs the part of a sentence that holds these terms: between the first and the
    last of them, or just before ("never open ..."); "written with the Latin alphabet and has no word for
    snow" does not negate "written with the Latin alphabet"."""
    tokens, stems_ = _stemmed_tokens(sentence)
    wanted = set(terms) & set(stems_)
    if not wanted:
        return bool(_NEGATION.search(sentence))
    best = (0, len(tokens))  # the shortest stretch holding every term the sentence shares with the claim
    for start in range(len(tokens)):
        seen: set[str] = set()
        for end in range(start, len(tokens)):
            if stems_[end] in wanted:
                seen.add(stems_[end])
            if seen == wanted:
                if end - start < best[1] - best[0]:
                    best = (start, end + 1)
                break
    window = " ".join(tokens[max(0, best[0] - 3) : best[1]])
    return bool(_NEGATION.search(window))


def _only_preposition_between(text: str, first: str, last: str) -> bool:
    """Whether a name's phrase is followed by the last name through a preposition alone ("Tamsin College
    in Korrin": a relative clause after it may be said of the college; "the college is in Korrin": not)."""
    tokens = re.findall(r"[\w'-]+", text)
    stems = [stem(t.lower()) for t in tokens]
    if first not in stems or last not in stems:
        return False
    i, j = stems.index(first), len(stems) - 1 - stems[::-1].index(last)
    gap = [t.lower() for t in tokens[i + 1 : j] if t[:1].islower()]  # a name's own words are capitalised
    return (
        i < j
        and len(gap) <= 2
        and bool(gap)
        and gap[0] in _PREPOSITIONS
        and all(w in _PREPOSITIONS or w in ("the", "a", "an") for w in gap)
    )


def _timely(term: str) -> bool:
    """A number or a word of time ("1487", "june", "year")."""
    return term[:1].isdigit() or term in _TIME_STEMS


def _splits(terms: list[str]) -> Iterator[tuple[set[str], set[str]]]:
    """The ways a claim's terms fall into two parts: the words before and after some point ("Queen Almeth
    founded Vellmar | in 1487"), or a time or number phrase set inside the clause ("Queen Almeth founded
    Vellmar | in 1487 | by uniting the clans": the middle is one part, the clause around it the other)."""
    for k in range(1, len(terms)):
        yield set(terms[:k]), set(terms[k:])
    timely = [_timely(t) for t in terms]
    for i in range(1, len(terms) - 1):
        for j in range(i + 1, len(terms)):
            if all(timely[i:j]):
                yield set(terms[:i] + terms[j:]), set(terms[i:j])


def _has_by_between(text: str, x: str, y: str) -> bool:
    """Whether "by" stands between the first x and the next y: a passive ("founded by"), whose order of
    doer and done-to is the active's reversed."""
    tokens, stems_ = _stemmed_tokens(text)
    if x not in stems_:
        return False
    start = stems_.index(x)
    end = stems_.index(y, start + 1) if y in stems_[start + 1 :] else len(stems_)
    return "by" in tokens[start + 1 : end]


def _relative_between(text: str, x: str, y: str) -> bool:
    """Whether a relative clause opens between the first x and the next y: its order is its own."""
    tokens, stems_ = _stemmed_tokens(text)
    if x not in stems_:
        return False
    start = stems_.index(x)
    end = stems_.index(y, start + 1) if y in stems_[start + 1 :] else len(stems_)
    return any(t in ("that", "which", "who", "where", "whom") for t in tokens[start + 1 : end])


_FROM = {"from", "out"}
_TO = {"into", "to", "onto", "toward", "towards"}


def _direction_problem(claim: str, fact: str) -> str:
    """A source and a destination exchanged: "from a house into a cistern" where the notes say "from a
    cistern into a house"."""

    def roles(text: str) -> dict[str, str]:
        tokens, stems_ = _stemmed_tokens(text)
        out: dict[str, str] = {}
        for i, token in enumerate(tokens):
            role = "from" if token in _FROM else "to" if token in _TO else ""
            if not role:
                continue
            for j in range(i + 1, min(i + 5, len(tokens))):  # the noun the preposition governs
                if tokens[j] in _FROM or tokens[j] in _TO:
                    break
                if tokens[j] not in STOPWORDS:
                    out.setdefault(stems_[j], role)
        return out

    said, noted = roles(claim), roles(fact)
    swapped = sorted(t for t in said if t in noted and said[t] != noted[t])
    # both ends exchanged: "from a house into a cistern" (one end alone is a paraphrase: "until", "to")
    both = {"from", "to"} <= {said[t] for t in swapped}
    return f"the notes say it goes the other way ({', '.join(swapped)})" if both else ""


def _said_to_be(sentence: str, x: str, y: str) -> bool:
    """Whether a sentence says terms x and y are one thing: "x is (a, the, old, ...) y", "x called y", with
    nothing between them but the link and the words of y's own phrase; a verb ("read by", "lives in")
    or another noun before "called" relates them some other way.

    >>> _said_to_be("The head of the council is called the Warden.", "warden", "head")
    True
    >>> _said_to_be("The gauge is read by the keepers.", "keeper", "gaug")
    False
    >>> _said_to_be("A Quorra colony lives in a tall hive called a Ferrand stack.", "ferrand", "coloni")
    False
    >>> _said_to_be("Mount Carrow is an old volcano that last erupted in 1702.", "carrow", "volcano")
    True
    >>> _said_to_be("Korrin is the capital of Vellmar.", "korrin", "vellmar")
    False
    >>> _said_to_be("Close the feed cock, which is the small black lever on the pipe.", "cock", "lever")
    True
    """
    tokens = [w.lower() for w in re.findall(rf"{WORD.pattern}|,", numbers_as_digits(sentence))]
    stems_ = [stem(t) if t != "," else t for t in tokens]
    if x not in stems_ or y not in stems_:
        return False
    lo, hi = sorted((stems_.index(x), stems_.index(y)))
    between = tokens[lo + 1 : hi]
    if between and between[0] == "," and not any(t in _PHRASE_END or t.endswith("ed") for t in between[1:]):
        return True  # apposition: "one university, Tamsin College"
    if between[:2] in ([",", "which"], [",", "who"]):
        between = between[2:]  # "the feed cock, which is the small black lever": a link all the same
    between = [t for t in between if t != ","]
    links = [k for k, t in enumerate(between) if t in ("is", "are", "was", "were", "called", "named")]
    if not links:
        return False
    link = links[0]
    before, after = between[:link], between[link + 1 :]
    if before[:1] and before[0] in _PREPOSITIONS:
        before = []  # "the head of the council is ...": the rest of the subject's own phrase
    if any(t in _PHRASE_END or t.endswith("ed") for t in before):
        return False  # "a colony lives in a tall hive called ...": the link names the hive, not the colony
    if any(t == "by" or t.endswith("ed") and t not in ("called", "named") for t in after):
        return False  # "is read by": a verb, not a link
    return not any(t in ("of", "in", "on", "at", "for", "with", "that", "which", "who") for t in after)


_PREPOSITIONS = set(
    "of to in on for at with inside outside under above below near along from into onto behind beside".split()
)
_PHRASE_END = set(
    "of in on at for with by to from into onto inside outside under above below near along that which who "
    "whom whose where when because while and but or so than as , ; :".split()
)


def _copular_pairs(text: str) -> list[tuple[str, str]]:
    """Pairs of terms a claim says are the same thing, as (subject head, complement head).

    >>> _copular_pairs("The capital of Vellmar is Korrin.")
    [('capit', 'korrin')]
    >>> _copular_pairs("The storm petrel is the national bird of Vellmar.")
    [('petrel', 'bird')]
    >>> _copular_pairs("They were first bred in 1902.")  # a passive verb, not an identity
    []
    """
    tokens = [w.lower() for w in re.findall(rf"{WORD.pattern}|[,;:]", numbers_as_digits(text))]
    pairs = []
    for i, token in enumerate(tokens):
        if token not in ("is", "are", "was", "were"):
            continue
        subject = [t for t in tokens[:i] if t not in ",;:"]
        for k in range(len(subject) - 1, -1, -1):  # the clause's start: after "that", "and", ...
            if subject[k] in ("that", "which", "who", "and", "but", "because", "when", "while"):
                subject = subject[k + 1 :]
                break
        for k, t in enumerate(subject):  # "the capital of Vellmar", "the side facing down": the head before
            participle = t.endswith("ing") and len(t) >= 6 and k < len(subject) - 1  # "the side facing down"
            if k > 0 and (t in _PREPOSITIONS or participle) and any(w not in STOPWORDS for w in subject[:k]):
                subject = subject[:k]
                break
        left = next((t for t in reversed(subject) if t not in STOPWORDS), None)
        complement: list[str] = []
        for t in tokens[i + 1 :]:
            if t in _PHRASE_END:
                break
            complement.append(t)
        complement = [t for t in complement if t not in ("called", "named", "known")]  # "is called X"
        if any(t.endswith("ed") or t in _IRREGULAR_FORMS for t in complement):
            continue  # "were first bred", "is read": a passive verb
        right = next((t for t in reversed(complement) if t not in STOPWORDS), None)
        if left and right:
            pairs.append((stem(left), stem(right)))
    return pairs
