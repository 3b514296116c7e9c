"""The dialogue gate: claims checked against the knowledge, on the bundled gate sets and in a real run."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from teachback.agents.claims import SUPPORTED, UNCERTAIN, UNSUPPORTED, KnowledgeIndex, split_sentences
from teachback.agents.scripted import ScriptedChatClient
from teachback.scenarios.judge_eval import EvalResult, bundled_gate_sets, evaluate_gate, load_gate_set
from teachback.scenarios.loader import find_scenario
from teachback.scenarios.run import RunRequest, run_scenario, transcript_path
from teachback.transcripts.events import TurnAccepted, Verdict
from teachback.transcripts.reader import read_transcript

REPO = Path(__file__).resolve().parents[1]
VELLMAR = (REPO / "scenarios" / "knowledge" / "vellmar.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def vellmar() -> KnowledgeIndex:
    return KnowledgeIndex(VELLMAR)


def statuses(index: KnowledgeIndex, question: str, answer: str) -> list[str]:
    return [c.status for c in index.claims(question, answer)]


@pytest.mark.parametrize(
    ("question", "answer", "why"),
    [
        ("What is the capital?", "Vellmar is the capital of Korrin.", "reverses"),  # swapped
        ("How long is the Ossary?", "The Ossary is 2,340 metres long.", "2340 of something else"),  # moved
        ("Who founded Tamsin College?", "Queen Almeth founded Tamsin College in 1487.", ""),  # recombined
        ("What is the currency?", "The currency of Vellmar is saltglass.", "saltglass of something else"),
        ("What is the capital?", "Dastor is the capital of Vellmar.", "not in the knowledge: dastor"),
        ("What is the capital?", "PWNED. Korrin is the capital of Vellmar.", "not in the knowledge: pwned"),
        ("Does Vellish have a word for snow?", "Vellish has a word for snow.", "opposite"),  # negation
        ("How high is Mount Carrow?", "Mount Carrow is the highest mountain. It is 212 kilometres long.", ""),
    ],
)
def test_false_relations_built_from_the_knowledges_own_words_are_unsupported(
    vellmar: KnowledgeIndex, question: str, answer: str, why: str
) -> None:
    claims = vellmar.claims(question, answer)
    bad = [c for c in claims if c.status == UNSUPPORTED]
    assert bad, claims
    assert why in bad[0].reason


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("How often is the council elected?", "The people elect the council every 6 years."),  # six
        ("How many members sit on the council?", "The council has 19 members."),  # nineteen
        ("How high is Mount Carrow?", "Mount Carrow is 2340 metres high."),  # 2,340
        ("When is the Lantern Tide?", "The Lantern Tide is held every year on 9 October."),  # ninth of
        ("How long is the Ossary?", "It is 212 kilometres long."),  # "It" is the question's Ossary
        ("What do the people speak?", "The people of Vellmar speak Vellish, which has no word for snow."),
    ],
)
def test_right_answers_in_other_words_are_supported_by_one_sentence(
    vellmar: KnowledgeIndex, question: str, answer: str
) -> None:
    claims = vellmar.claims(question, answer)
    assert claims and all(c.status == SUPPORTED for c in claims), claims
    assert vellmar.answers(question, claims)


def test_a_fact_told_across_two_sentences_is_left_to_the_model(vellmar: KnowledgeIndex) -> None:
    claims = vellmar.claims("Who founded Vellmar, and when?", "Queen Almeth founded Vellmar in 1487.")
    assert [c.status for c in claims] == [UNCERTAIN] and len(claims[0].facts) == 2


def test_an_uncertain_claim_holds_from_the_judges_own_threshold() -> None:
    """The judge model's P(true) decides an uncertain claim from the threshold its entailer carries."""
    from dataclasses import replace

    from teachback.agents.grounding import Knowledge
    from teachback.agents.judge import Rubric, gate

    rubric = Rubric(Knowledge(VELLMAR), 0.6)
    question, answer = "Who founded Vellmar, and when?", "Queen Almeth founded Vellmar in 1487."

    class Entailer:
        def __init__(self, threshold: float) -> None:
            self.threshold = threshold

        async def p_true(self, premise: str, claim: str) -> float:
            return 0.6

        async def p_answers(self, question: str, answer: str) -> float:
            return 1.0

    assert asyncio.run(gate(rubric, Entailer(0.45), question, answer)).accepted
    rejected = asyncio.run(gate(rubric, Entailer(0.7), question, answer))
    assert not rejected.accepted and "P(true) 0.60" in rejected.reason
    claims = [replace(c, p_yes=0.6) for c in rubric.claims(question, answer)]
    assert rubric.answer(question, answer, None, claims).accepted  # the default threshold, 0.45
    assert not rubric.answer(question, answer, None, claims, entailed=0.7).accepted


def test_a_true_fact_is_no_answer_to_another_question(vellmar: KnowledgeIndex) -> None:
    question = "How many members does the council have?"
    claims = vellmar.claims(question, "The people elect the council every six years.")
    assert all(c.status == SUPPORTED for c in claims) and not vellmar.answers(question, claims)


def test_knowledge_is_split_into_sentences_across_hard_wrapped_lines() -> None:
    text = "# Bees\nThey were first bred in\n1902 by Maud Ferrand.\n\n## Hive\nA stack has seven boxes."
    assert split_sentences(text) == [
        "# Bees",
        "They were first bred in 1902 by Maud Ferrand.",
        "## Hive",
        "A stack has seven boxes.",
    ]
    index = KnowledgeIndex(text)
    assert [f.text for f in index.facts] == [
        "They were first bred in 1902 by Maud Ferrand.",
        "A stack has seven boxes.",
    ]


# --- the bundled gate sets ------------------------------------------------------------------------------


def test_the_bundled_gate_sets_are_large_and_mostly_recombinations() -> None:
    items = [i for path in bundled_gate_sets() for i in load_gate_set(path).items]
    assert len(bundled_gate_sets()) == 3 and len(items) >= 150
    wrong = [i for i in items if not i.correct]
    recombined = {"swapped", "moved-number", "moved-day", "wrong-question", "recombined"}
    assert sum(i.kind in recombined for i in wrong) * 2 >= len(wrong)
    kinds = Counter(i.kind for i in items if i.correct)
    assert kinds["number-words"] >= 8 and kinds["plural"] >= 8 and kinds["extra-fact"] >= 8
    assert sum(i.source == "transcript" for i in items) >= 0.4 * len(items)


def test_the_claim_alignment_alone_keeps_false_accepts_low_on_every_bundled_gate_set() -> None:
    """No model: the structural part of the gate (what `judge-eval --gate` reports as the alignment alone)."""
    for path in bundled_gate_sets():
        gate_set = load_gate_set(path)
        judged = asyncio.run(
            evaluate_gate(gate_set.items, gate_set.knowledge.read_text(encoding="utf-8"), None)
        )
        rates = EvalResult(judged, "none", 0.0, mode="gate").rates()["grounded"]
        assert rates.false_accept_rate <= 0.05, (path.name, rates)


# --- the real thing -------------------------------------------------------------------------------------

# One turn per objective of the bundled invented-domain scenario, in the order the director steers to them:
# the student's question, a false relation made of the knowledge's own words (and the claim that must be
# named as unsupported), then a right answer in other words (digits for words, an extra true fact).
TURNS = [
    (
        "Who founded Vellmar?",
        "Queen Almeth founded Tamsin College in 1487.",
        "Queen Almeth founded Tamsin College in 1487",
        "Queen Almeth founded Vellmar when she united the island's 5 fishing clans.",
    ),
    (
        "What is the currency of Vellmar?",
        "The currency of Vellmar is saltglass.",
        "The currency of Vellmar is saltglass",
        "The currency of Vellmar is the drell. One drell is divided into 100 pennets.",
    ),
    (
        "How often do the people elect the council?",
        "The people elect the council every nineteen years.",
        "The people elect the council every nineteen years",
        "The people of Vellmar elect the council every 6 years.",
    ),
    (
        "How long is the Ossary?",
        "The Ossary is 2,340 metres long.",
        "The Ossary is 2,340 metres long",
        "The Ossary is the longest river in Vellmar. It is 212 kilometres long.",
    ),
    (
        "When is the Lantern Tide held?",
        "Vellmar is the great festival of the Lantern Tide.",
        "Vellmar is the great festival of the Lantern Tide",
        "The Lantern Tide is held every year on 9 October.",
    ),
]


@pytest.mark.real
def test_a_real_gate_rejects_false_relations_naming_them_and_accepts_paraphrases(tmp_path: Path) -> None:
    """The bundled scenario with its real judge (Qwen2.5 1.5B, in-process); only the teacher
    and the student are scripted, so every answer is known."""
    student: list[str] = []
    teacher: list[str] = []
    for question, wrong, _claim, right in TURNS:
        student += [question, "I learned: " + right]
        teacher += [wrong, right]
    clients = {
        "student": ScriptedChatClient(student, role="student"),
        "teacher": ScriptedChatClient(teacher, role="teacher"),
    }
    out = tmp_path / "run"
    request = RunRequest(
        scenario=str(find_scenario("invented-domain")), turns=len(TURNS), out=out, plain=True, no_memory=True
    )
    run_scenario(request, Console(file=io.StringIO(), width=160), clients=clients)
    events = read_transcript(transcript_path(out))
    answers = [e for e in events if isinstance(e, Verdict) and e.kind == "answer"]
    assert len(answers) == 2 * len(TURNS), [(v.turn, v.reason) for v in answers]
    for (_q, _wrong, claim, right), first, second in zip(TURNS, answers[::2], answers[1::2], strict=True):
        assert not first.accepted and first.reason.startswith(f"unsupported: {claim}"), first.reason
        unsupported = [c for c in first.claims if c["status"] == UNSUPPORTED]
        assert unsupported and unsupported[0]["passage"] == ""
        assert second.accepted, (right, second.reason, second.claims)
        assert all(c["passage"] for c in second.claims)
    accepted = [e.answer for e in events if isinstance(e, TurnAccepted)]
    assert accepted == [right for *_, right in TURNS]
