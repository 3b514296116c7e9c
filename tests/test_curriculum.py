"""The curriculum: facts by objective, the director steering to them, and turns recording what they taught."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from teachback.agents.claims import KnowledgeIndex
from teachback.agents.scripted import ScriptedChatClient
from teachback.scenarios.curriculum import Curriculum
from teachback.scenarios.run import RunRequest, run_scenario, transcript_path
from teachback.transcripts.events import RunStarted, TurnAccepted, TurnStarted
from teachback.transcripts.reader import read_transcript
from tests.conftest import VELLMAR, judge

OBJECTIVES = ["the capital and founding of Vellmar", "the currency of Vellmar"]


def test_every_fact_belongs_to_the_objective_that_names_it() -> None:
    curriculum = Curriculum.build(KnowledgeIndex(VELLMAR.read_text(encoding="utf-8")), OBJECTIVES)
    assert len(curriculum) == 33  # every sentence of the notes
    capital = [curriculum.facts[i] for i in curriculum.of_objective[OBJECTIVES[0]]]
    currency = [curriculum.facts[i] for i in curriculum.of_objective[OBJECTIVES[1]]]
    assert "Korrin is the capital of Vellmar." in capital and "Vellmar was founded in 1487." in capital
    assert "The currency of Vellmar is the drell." in currency
    owned = sorted(i for ids in curriculum.of_objective.values() for i in ids)
    assert owned == list(range(33))  # each fact once


def test_a_scenarios_own_facts_are_the_curriculum() -> None:
    facts = ["Korrin is the capital of Vellmar.", "The currency of Vellmar is the drell."]
    curriculum = Curriculum.build(KnowledgeIndex(VELLMAR.read_text(encoding="utf-8")), OBJECTIVES, facts)
    assert curriculum.facts == facts and curriculum.explicit
    claims = [{"status": "supported", "text": "The capital of Vellmar is Korrin.", "facts": [1]}]
    assert curriculum.taught("What is the capital?", claims) == [0]  # aligned with the facts, not the notes


def test_the_least_taught_fact_comes_next_and_each_fact_returns_until_taught_enough() -> None:
    curriculum = Curriculum.build(KnowledgeIndex(VELLMAR.read_text(encoding="utf-8")), OBJECTIVES)
    ids = curriculum.of_objective[OBJECTIVES[1]]
    taught: dict[int, int] = {}
    first = curriculum.next_fact(OBJECTIVES[1], taught, phrasings=2)
    assert first == ids[0]
    taught[first] = 1
    assert curriculum.next_fact(OBJECTIVES[1], taught, phrasings=2) == ids[1]
    for i in ids:
        taught[i] = 2
    assert curriculum.next_fact(OBJECTIVES[1], taught, phrasings=2) is None
    assert OBJECTIVES[1] not in curriculum.open_objectives(taught, phrasings=2)


def test_a_fact_the_teacher_cannot_teach_goes_behind_then_is_given_up_for_the_run() -> None:
    """A turn steered to a fact that did not teach it counts as a miss: the fact goes behind the others
    and, after MAX_MISSES, is no longer steered to in this run (the dialogue is not held up by it)."""
    from teachback.scenarios.curriculum import MAX_MISSES
    from teachback.transcripts.events import TurnAccepted, TurnRejected, TurnStarted
    from teachback.transcripts.progress import Progress

    curriculum = Curriculum.build(KnowledgeIndex(VELLMAR.read_text(encoding="utf-8")), OBJECTIVES)
    ids = curriculum.of_objective[OBJECTIVES[1]]
    progress = Progress(list(OBJECTIVES))
    first = curriculum.next_fact(OBJECTIVES[1], progress.taught, 2, progress.missed)
    assert first == ids[0]
    progress.apply(TurnStarted(t=1.0, turn=1, objective=OBJECTIVES[1], facts=[first]))
    progress.apply(TurnRejected(t=2.0, turn=1, objective=OBJECTIVES[1], reason="too short"))
    assert progress.missed == {first: 1}
    assert curriculum.next_fact(OBJECTIVES[1], progress.taught, 2, progress.missed) == ids[1]  # behind
    # an accepted answer that taught another fact is a miss of the one steered to, too
    progress.apply(TurnStarted(t=3.0, turn=2, objective=OBJECTIVES[1], facts=[first]))
    progress.apply(
        TurnAccepted(t=4.0, turn=2, objective=OBJECTIVES[1], question="q", answer="a", score=0.9,
                     teacher_model="m", facts=[ids[1]])
    )  # fmt: skip
    assert progress.missed[first] == MAX_MISSES and progress.taught == {ids[1]: 1}
    while (nxt := curriculum.next_fact(OBJECTIVES[1], progress.taught, 2, progress.missed)) is not None:
        assert nxt != first
        progress.taught[nxt] = 2
    assert first not in progress.taught and len(progress.taught) == len(ids) - 1
    assert curriculum.next_fact(OBJECTIVES[1], progress.taught, 2, progress.missed) is None  # given up


def run(scenario: Path, tmp_path: Path, clients: dict) -> list:
    out = tmp_path / "run"
    request = RunRequest(scenario=str(scenario), out=out, plain=True, no_memory=True)
    run_scenario(request, Console(file=io.StringIO(), width=160), clients=clients)
    return read_transcript(transcript_path(out))


def test_a_run_steers_to_facts_records_what_it_taught_and_checks_a_fact_the_second_time(
    scenario_file, tmp_path: Path
) -> None:
    facts = ["Korrin is the capital of Vellmar.", "The currency of Vellmar is the drell."]
    asked: list[str] = []

    def student(messages: list) -> str:
        asked.append(str(messages[-1].content))
        return (
            "Is it true that Korrin is the capital of Vellmar?" if "yes-or-no" in asked[-1] else "What is it?"
        )

    clients = {
        "student": ScriptedChatClient([student] * 20, role="student"),
        "teacher": ScriptedChatClient(
            [
                "Korrin is the capital of Vellmar.",
                "The currency of Vellmar is the drell.",
                "Yes, Korrin is the capital of Vellmar.",
            ],
            role="teacher",
        ),
        "judge": judge(9),
    }
    events = run(scenario_file(turns=3, facts=facts, phrasings=2, teachback=False), tmp_path, clients)
    header = events[0]
    assert isinstance(header, RunStarted) and header.facts == facts
    starts = [e for e in events if isinstance(e, TurnStarted)]
    assert [s.facts for s in starts] == [[0], [1], [0]]  # each fact once, then the first again
    accepted = [e for e in events if isinstance(e, TurnAccepted)]
    assert [a.facts for a in accepted] == [[0], [1], [0]]
    # the first time, the student is given the fact asked back as a question; the second, a yes-no check
    assert "What is the capital of Vellmar?" in asked[0]
    assert any("yes-or-no" in a and "Korrin is the capital of Vellmar" in a for a in asked)


def test_a_fact_comes_back_as_an_open_question_in_other_words_before_a_yes_no_check(
    scenario_file, tmp_path: Path
) -> None:
    """The second time a fact comes up, the judge model rewords the director's question (an open question,
    as a held-out one would be); the yes-or-no check comes only when no rewording is usable."""
    from tests.conftest import verdict

    asked: list[str] = []

    def student(messages: list) -> str:
        asked.append(str(messages[-1].content))
        return "Which city is the capital of Vellmar?" if "Which city" in asked[-1] else "What is it?"

    def judge_model(messages: list) -> str:
        if "In other words:" in str(messages[-1].content):
            return "Which city is the capital of Vellmar?"
        return verdict(9)

    clients = {
        "student": ScriptedChatClient([student] * 20, role="student"),
        "teacher": ScriptedChatClient(
            ["Korrin is the capital of Vellmar.", "The currency of Vellmar is the drell."]
            + ["The capital of Vellmar is Korrin."] * 3,
            role="teacher",
        ),
        "judge": ScriptedChatClient([judge_model] * 40, role="judge"),
    }
    facts = ["Korrin is the capital of Vellmar.", "The currency of Vellmar is the drell."]
    events = run(scenario_file(turns=3, facts=facts, phrasings=2, teachback=False), tmp_path, clients)
    starts = [e for e in events if isinstance(e, TurnStarted)]
    assert [s.facts for s in starts] == [[0], [1], [0]]
    assert "Which city is the capital of Vellmar?" in asked[-1]  # the rewording, not a yes-or-no check
    assert not any("yes-or-no" in a for a in asked)
