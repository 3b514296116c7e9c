"""The director: stages one scenario turn by turn and emits the events everything else consumes.

One turn:
  1. the student asks a question about the objective it is steered to (the first one not yet covered,
     with what it got wrong last time); the judge rates the question's relevance, and an off-topic
     question is asked again (bounded; after that the director asks a plain question itself);
  2. the teacher answers from the knowledge passages relevant to the question; the judge scores the
     answer, and a rejected answer is asked again with the judge's reason (bounded);
  3. the student restates what it learned (teach-back) and the judge scores that: an objective counts as
     covered when its teach-back is accepted.
An accepted turn is emitted as `TurnAccepted` the moment it is complete; the recorder syncs it to disk.

Several seats (see seats.py):
- a teacher panel: each question goes to every teacher at once; the judge scores each candidate as it
  arrives (one verdict per candidate, `Verdict.name`), and `panel.choose` picks the accepted answer
  (`PanelDecision`). A member that fails is recorded and left out for the rest of the turn; when every
  member fails, the turn fails as a single teacher's failure does.
- a classroom: the students ask in turn (round-robin by turn number); each is told what the previous
  student asked and was taught, so it may follow up. The asking student does the teach-back.
- a retrieval student carries an autogen Memory: before it replies, the accepted turns of its namespace
  most relevant to the request join its context, and the director records what was recalled
  (`MemoryRecalled`).

The director speaks to the agents only through autogen-agentchat's `on_messages_stream`, so any AutoGen
agent can fill a role. Teacher and judge start each call fresh; the student keeps a short memory.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from teachback.agents import prompts
from teachback.agents.judge import Judgement, Rubric, parse_verdict, topic_words
from teachback.agents.terms import content_words
from teachback.errors import one_line
from teachback.scenarios.panel import Candidate, choose
from teachback.transcripts.events import (
    ANSWER,
    QUESTION,
    TEACHBACK,
    Event,
    MemoryRecalled,
    MessageDone,
    Notice,
    PanelDecision,
    RunFinished,
    TokenDelta,
    TurnAccepted,
    TurnRejected,
    TurnStarted,
    Verdict,
)
from teachback.transcripts.progress import Progress

if TYPE_CHECKING:
    from autogen_agentchat.base import ChatAgent

    from teachback.agents.cast import Cast, Seated
    from teachback.scenarios.curriculum import Curriculum
    from teachback.scenarios.schema import Scenario

Emit = Callable[[Event], None]


class Director:
    """Runs the dialogue of one scenario with one cast, emitting events."""

    def __init__(
        self,
        scenario: Scenario,
        cast: Cast,
        rubric: Rubric,
        emit: Emit,
        *,
        clock: Callable[[], float] = time.monotonic,
        t_offset: float = 0.0,
        curriculum: Curriculum | None = None,
    ):
        self.scenario = scenario
        self.cast = cast
        self.rubric = rubric
        self.curriculum = curriculum
        self.phrasings = int(getattr(scenario, "phrasings", 1))
        self._emit = emit
        self._clock = clock
        self._t0 = clock() - t_offset
        self._topic_words = topic_words(list(scenario.objectives))
        self._select = getattr(getattr(scenario, "panel", None), "select", "best")
        self._progress: Progress | None = None  # the run's, from `run`: every event emitted moves it

    def now(self) -> float:
        return round(self._clock() - self._t0, 3)

    def emit(self, event_type: type[Event], **fields: Any) -> None:
        """Count the event in the run's `Progress` (the one fold that resume and the renderer use too),
        then send it to the sinks."""
        event = event_type(t=self.now(), **fields)  # type: ignore[call-arg]
        if self._progress is not None:
            self._progress.apply(event)
        self._emit(event)

    async def run(self, progress: Progress) -> Progress:
        """Play turns until the budget is spent. Cancellation propagates after the transcript is closed."""
        from autogen_core import CancellationToken

        self._cancel = CancellationToken()
        self._judge_lock = asyncio.Lock()  # panel candidates are judged one at a time
        self._progress = progress
        await self._remind_students(progress)
        try:
            while progress.next_turn <= self.scenario.turns:
                await self._turn(progress)  # its outcome (accepted or rejected) moves next_turn on
        except BaseException as exc:
            self._cancel.cancel()
            status = (
                "interrupted" if isinstance(exc, KeyboardInterrupt | asyncio.CancelledError) else "failed"
            )
            self._finish(progress, status, one_line(exc) if status == "failed" else "stopped by the user")
            raise
        self._finish(progress, "completed", "")
        return progress

    def _finish(self, progress: Progress, status: str, reason: str) -> None:
        self.emit(
            RunFinished,
            status=status,
            turns=progress.next_turn - 1,
            accepted=progress.accepted,
            acceptance_rate=progress.acceptance_rate,
            objectives_covered=list(progress.covered),
            reason=reason,
        )

    async def _remind_students(self, progress: Progress) -> None:
        """After a resume, give each student its earlier lessons back (they are its conversation)."""
        from autogen_core.models import AssistantMessage, UserMessage

        first = self.cast.students[0].name
        for seat in self.cast.students:
            context = getattr(seat.agent, "model_context", None)
            if context is None:
                continue
            for question, answer, student in progress.lessons:
                if (student or first) == seat.name:
                    await context.add_message(AssistantMessage(content=question, source="student"))
                    await context.add_message(UserMessage(content=answer, source="teacher"))

    # -- one turn ---------------------------------------------------------------------------------------

    async def _turn(self, progress: Progress) -> None:
        turn = progress.next_turn
        seat = self.cast.students[(turn - 1) % len(self.cast.students)]
        curriculum = self.curriculum
        so_far = progress.taught_so_far()  # earlier rounds' included: go on to what is not yet taught
        missed = progress.missed
        open_objectives = curriculum.open_objectives(so_far, self.phrasings, missed) if curriculum else []
        objective = progress.next_objective(open_objectives)
        target = curriculum.next_fact(objective, so_far, self.phrasings, missed) if curriculum else None
        self.emit(
            TurnStarted,
            turn=turn,
            objective=objective,
            student=seat.name,
            facts=[target] if target is not None else [],
        )

        classmate = self._classmate(progress, seat)
        mistake = progress.mistakes.get(objective, "")
        steer, draft = await self._steer(objective, target, progress)
        question = await self._ask(turn, seat, objective, mistake, classmate, steer, target, draft)
        if target is not None:
            progress.asked.setdefault(target, []).append(question)
        before = progress.said.get(target, "") if target is not None else ""
        answer, verdict, teacher = await self._answer(turn, question, before)
        if not verdict.accepted or teacher is None:
            self.emit(TurnRejected, turn=turn, objective=objective, reason=verdict.reason, student=seat.name)
            return

        restatement, check = "", None
        if self.scenario.teachback:
            restatement, check = await self._teachback(turn, seat, objective, answer)
        covered = check.accepted if check is not None else True
        taught = self._taught(question, objective, verdict, check)
        self.emit(
            TurnAccepted,
            turn=turn,
            objective=objective,
            question=question,
            answer=answer,
            score=verdict.score,
            teacher_model=teacher.model,
            teachback=restatement,
            teachback_score=check.score if check else 0.0,
            objective_covered=covered,
            student=seat.name,
            teacher=teacher.name,
            facts=taught,
            teachback_accepted=bool(check and check.accepted),
        )

    def _taught(
        self, question: str, objective: str, verdict: Judgement, check: Judgement | None
    ) -> list[int]:
        """The curriculum facts an accepted turn stated: its answer's, then its accepted teach-back's."""
        if self.curriculum is None:
            return []
        taught = self.curriculum.taught(question, verdict.claims)
        if check is not None and check.accepted:
            taught += [f for f in self.curriculum.taught(objective, check.claims) if f not in taught]
        return taught

    async def _steer(self, objective: str, target: int | None, progress: Progress) -> tuple[str, str]:
        """What the student is asked to ask, and the director's own question for it ("" when none).

        Steered to a fact, the director asks it back as a question ("The council has how many
        members?"), and the student asks that in its own words; each time the fact comes up again, the
        judge model rewords the director's question, so each return asks it differently, as a held-out
        question would; the third time, and whenever no rewording is usable, the student checks the fact
        with a yes-or-no question instead (an open question in new words trains recall, a yes-or-no
        check only confirms, so it comes after). Without a curriculum: the objective."""
        if self.curriculum is None or target is None:
            return prompts.render("student_ask", objective=objective, feedback=""), ""
        times = progress.taught_so_far().get(target, 0)
        fact = self.curriculum.facts[target]
        draft = self.curriculum.echo(target, objective)
        reworded = ""
        if times >= 1 and times != 2 and draft:
            reworded = await self._reword(objective, draft, progress.asked.get(target, []))
        if times >= 1 and not reworded:  # the director's own check: the fact as a yes-no question
            opening = fact.split(maxsplit=1)[0].lower() if fact.strip() else ""
            said = (
                f"{fact[:1].lower()}{fact[1:]}"
                if opening in ("the", "a", "an", "most", "each", "every")
                else fact
            )
            check = f"Is it true that {said.rstrip('.')}?"
            return prompts.render("student_check", objective=objective, fact=fact), check
        draft = reworded or draft
        if draft:
            return prompts.render("student_ask_draft", objective=objective, draft=draft), draft
        hint = self.curriculum.hint(target, objective)
        return prompts.render("student_ask_fact", objective=objective, hint=hint), ""

    async def _reword(self, objective: str, question: str, asked: list[str]) -> str:
        """The question in other words, by the judge model, unlike those already asked; "" if unusable."""
        if self.curriculum is None or self.cast.judge_client is None:
            return ""
        from autogen_core.models import LLMMessage, SystemMessage, UserMessage

        messages: list[LLMMessage] = [
            SystemMessage(content=prompts.render("question_writer_system")),
            UserMessage(
                content=prompts.render("question_writer", question=question, asked=asked[-3:]),
                source="director",
            ),
        ]
        try:
            result = await self.cast.judge_client.create(
                messages, json_output=False, extra_create_args={"max_tokens": 40, "temperature": 0.5}
            )
        except Exception:  # the director's own question serves
            return ""
        text = result.content if isinstance(result.content, str) else ""
        reworded = _first_question(text)
        facts = [self.curriculum.facts[i] for i in self.curriculum.of_objective.get(objective, [])]
        judged = self.rubric.question(reworded, objective, self._topic_words, facts)
        return reworded if reworded.endswith("?") and judged.accepted and reworded not in asked else ""

    def _classmate(self, progress: Progress, seat: Seated) -> str:
        """In a classroom, what the previous student asked and was taught ("" when it was this student)."""
        if len(self.cast.students) < 2 or not progress.lessons:
            return ""
        question, answer, student = progress.lessons[-1]
        if (student or self.cast.students[0].name) == seat.name:
            return ""
        return prompts.render("student_classmate", classmate=student, question=question, answer=answer)

    async def _ask(
        self,
        turn: int,
        seat: Seated,
        objective: str,
        mistake: str,
        classmate: str,
        steer: str,
        target: int | None,
        draft: str = "",
    ) -> str:
        """The student's question, checked; asked again with what was wrong (bounded); then the director's
        draft, or a question the director writes, in its place (the transcript says so)."""
        from autogen_agentchat.messages import TextMessage

        feedback = mistake
        facts = (
            [self.curriculum.facts[i] for i in self.curriculum.of_objective.get(objective, [])]
            if self.curriculum
            else []
        )
        # with a draft in hand, the student gets one more try, then the draft is asked as it is
        attempts = min(self.scenario.question_retries, 1) if draft else self.scenario.question_retries
        for attempt in range(1, attempts + 2):
            prompt = f"{feedback}\n{steer}" if feedback else steer
            if classmate:
                prompt = f"{classmate}\n{prompt}"
            text = await self._speak(
                seat,
                [TextMessage(content=prompt, source="director")],
                turn=turn,
                role="student",
                kind=QUESTION,
                attempt=attempt,
            )
            question = _first_question(text)
            judged = self.rubric.question(question, objective, self._topic_words, facts)
            self._verdict(turn, QUESTION, judged, attempt, seat.name)
            if judged.accepted:
                return question
            feedback = (
                f"Your question '{question[:80]}' was not right ({judged.reason}). Ask about {objective}."
            )
        question = draft or await self._repair(objective, target, turn)
        self.emit(
            Notice,
            level="warning",
            turn=turn,
            message=f"the student's question was not usable ({judged.reason}); director asks: {question}",
        )
        return question

    async def _repair(self, objective: str, target: int | None, turn: int) -> str:
        """A question the director asks itself when the student's stay unusable: the steered fact asked
        back; without one, a plain question about the objective."""
        if self.curriculum is not None and target is not None:
            echo = self.curriculum.echo(target, objective)
            if echo:
                return echo
        return fallback_question(objective, turn)

    async def _answer(
        self, turn: int, question: str, before: str = ""
    ) -> tuple[str, Judgement, Seated | None]:
        """Every teacher answers (at once); the judge scores each; a rejected round is asked again.
        `before` is an earlier accepted answer about the same fact: the teacher is asked to word it anew.

        Returns the chosen answer, its verdict and its teacher; when none was accepted, the best-scoring
        answer of the last round and None.
        """
        notes = self.rubric.notes_for(question)
        panel = self.cast.teachers
        feedback = {seat.name: "" for seat in panel}
        active = list(panel)
        best: Candidate | None = None
        for attempt in range(1, self.scenario.answer_retries + 2):
            results = await asyncio.gather(
                *(
                    self._candidate(turn, seat, question, notes, feedback[seat.name], attempt, before)
                    for seat in active
                ),
                return_exceptions=True,
            )
            for result in results:  # the judge failed, or the run was cancelled: not a member's failure
                if isinstance(result, BaseException):
                    raise result
            candidates: list[Candidate] = [r for r in results if isinstance(r, Candidate)]
            errors = [c for c in candidates if c.error is not None]
            if len(errors) == len(candidates):
                raise errors[0].error  # type: ignore[misc]  # every member failed: the turn fails
            chosen, why = choose(candidates, self._select)
            if len(panel) > 1:
                self._panel_decision(turn, attempt, candidates, chosen, why)
            answered = [c for c in candidates if c.error is None]
            best = chosen or max(answered, key=lambda c: c.score)
            if chosen is not None:
                break
            active = [seat for seat in active if seat.name not in {c.name for c in errors}]
            feedback.update({c.name: c.reason for c in answered})
        assert best is not None
        teacher = next((seat for seat in panel if seat.name == best.name), None) if best.accepted else None
        return best.answer, best.judgement, teacher

    async def _candidate(
        self,
        turn: int,
        seat: Seated,
        question: str,
        notes: str,
        feedback: str,
        attempt: int,
        before: str = "",
    ) -> Candidate:
        """One teacher's answer and its verdict; a failing teacher becomes a candidate with its error."""
        from autogen_agentchat.messages import TextMessage

        try:
            await seat.agent.on_reset(self._cancel)
            prompt = prompts.render(
                "teacher_question", notes=notes, question=question, feedback=feedback, before=before
            )
            text = await self._speak(
                seat,
                [TextMessage(content=prompt, source="student")],
                turn=turn,
                role="teacher",
                kind=ANSWER,
                attempt=attempt,
            )
        except Exception as exc:
            if len(self.cast.teachers) > 1:
                self.emit(
                    Notice,
                    level="error",
                    turn=turn,
                    message=f"teacher {seat.name} failed; the panel goes on: {one_line(exc)}",
                )
            return Candidate(seat.name, error=exc)
        answer = text.strip()
        async with self._judge_lock:
            judged = await self._judge_answer(turn, question, answer, notes, attempt, seat.name)
        return Candidate(seat.name, answer, judged.score, judged.accepted, judged.reason, judged)

    def _panel_decision(
        self, turn: int, attempt: int, candidates: list[Candidate], chosen: Candidate | None, why: str
    ) -> None:
        self.emit(
            PanelDecision,
            turn=turn,
            select=self._select,
            chosen=chosen.name if chosen else "",
            candidates=[c.record() for c in candidates],
            reason=why,
            attempt=attempt,
        )

    async def _judge_answer(
        self, turn: int, question: str, answer: str, notes: str, attempt: int, teacher: str
    ) -> Judgement:
        """Claim by claim against the knowledge, the judge model asked about each claim the alignment
        leaves open (judge.gate); without knowledge, the judge model's verdict. The model's answers are
        one judge message in the transcript, a line per claim."""
        from teachback.agents.judge import gate

        if not self.rubric.knowledge or self.cast.entailer is None:
            return await self._judge_by_verdict(turn, question, answer, notes, attempt, teacher)
        started = self._clock()
        judged = await gate(self.rubric, self.cast.entailer, question, answer)
        asked = [c for c in judged.claims if "p_yes" in c]
        if asked:
            lines = [f"P(true) {c['p_yes']:.2f}: {c['text']}" for c in asked]
            if "relevance" in judged.components:
                lines.append(f"P(answers the question) {judged.components['relevance']:.2f}")
            self.emit(
                MessageDone,
                turn=turn,
                role="judge",
                name="judge",
                kind=ANSWER,
                text="\n".join(lines),
                model=self.cast.models.get("judge", ""),
                tokens=len(lines),
                seconds=round(self._clock() - started, 3),
                attempt=attempt,
            )
        self._verdict(turn, ANSWER, judged, attempt, teacher)
        return judged

    async def _judge_by_verdict(
        self, turn: int, question: str, answer: str, notes: str, attempt: int, teacher: str
    ) -> Judgement:
        from autogen_agentchat.messages import TextMessage

        await self.cast.judge.on_reset(self._cancel)
        prompt = prompts.render("judge_answer", notes=notes, question=question, answer=answer)
        text = await self._speak(
            self.cast.judge,
            [TextMessage(content=prompt, source="director")],
            turn=turn,
            role="judge",
            kind=ANSWER,
            attempt=attempt,
        )
        judged = self.rubric.answer(question, answer, parse_verdict(text))
        self._verdict(turn, ANSWER, judged, attempt, teacher)
        return judged

    async def _teachback(self, turn: int, seat: Seated, objective: str, answer: str) -> tuple[str, Judgement]:
        from autogen_agentchat.messages import TextMessage

        prompt = prompts.render("student_teachback", answer=answer, objective=objective)
        text = await self._speak(
            seat,
            [TextMessage(content=prompt, source="teacher")],
            turn=turn,
            role="student",
            kind=TEACHBACK,
            attempt=1,
        )
        judged = self.rubric.teachback(objective, answer, text)
        self._verdict(turn, TEACHBACK, judged, 1, seat.name)
        return text.strip(), judged

    # -- speaking and judging ---------------------------------------------------------------------------

    def _verdict(self, turn: int, kind: str, judged: Judgement, attempt: int, name: str) -> None:
        self.emit(
            Verdict,
            turn=turn,
            kind=kind,
            score=judged.score,
            accepted=judged.accepted,
            reason=judged.reason,
            components=judged.components,
            attempt=attempt,
            name=name,
            claims=judged.claims,
        )

    async def _speak(
        self,
        speaker: ChatAgent | Seated,
        messages: Sequence[Any],
        *,
        turn: int,
        role: str,
        kind: str,
        attempt: int,
    ) -> str:
        """Send messages to a seat's agent (or the judge), streaming tokens as events; returns the text."""
        from autogen_agentchat.base import Response
        from autogen_agentchat.messages import MemoryQueryEvent, ModelClientStreamingChunkEvent

        from teachback.agents.cast import Seated

        seat = speaker if isinstance(speaker, Seated) else None
        agent = speaker.agent if isinstance(speaker, Seated) else speaker
        name = seat.name if seat is not None else agent.name
        started = self._clock()
        chunks = 0
        final: Any = None
        async for item in agent.on_messages_stream(messages, self._cancel):
            if isinstance(item, ModelClientStreamingChunkEvent):
                chunks += 1
                self.emit(TokenDelta, turn=turn, role=role, name=name, kind=kind, text=item.content)
            elif isinstance(item, MemoryQueryEvent):
                meta = [m.metadata or {} for m in item.content]
                self.emit(
                    MemoryRecalled,
                    turn=turn,
                    name=name,
                    kind=kind,
                    namespace=seat.namespace if seat is not None else "",
                    ids=[str(m.get("id", "")) for m in meta],
                    similarities=[round(float(m.get("similarity", 0.0)), 4) for m in meta],
                )
            elif isinstance(item, Response):
                final = item.chat_message
        text = final.to_text() if final is not None else ""
        usage = getattr(final, "models_usage", None)
        tokens = usage.completion_tokens if usage and usage.completion_tokens else chunks
        seconds = round(self._clock() - started, 3)
        self.emit(
            MessageDone,
            turn=turn,
            role=role,
            name=name,
            kind=kind,
            text=text,
            model=seat.model if seat is not None else self.cast.models.get(role, ""),
            tokens=tokens,
            seconds=seconds,
            attempt=attempt,
        )
        return text


def _first_question(text: str) -> str:
    """The student's question, trimmed: the first sentence that asks something of substance.

    >>> _first_question('What? Can you tell me the capital of Vellmar? It is big.')
    'Can you tell me the capital of Vellmar?'
    """
    text = " ".join(text.strip().strip('"').split())
    for sentence in re.findall(r"[^.?!]*\?", text):
        if len(content_words(sentence)) >= 2:
            return sentence.strip()[:300]
    return text[:300]


def fallback_question(objective: str, turn: int) -> str:
    """A plain, narrow question the director asks when the student stays off topic.

    >>> fallback_question("the capital and founding of Vellmar", 1)
    'What is the capital of Vellmar?'
    >>> fallback_question("the capital and founding of Vellmar", 2)
    'What is the founding of Vellmar?'
    >>> fallback_question("how Vellmar is governed", 1)
    'Can you explain how Vellmar is governed?'
    """
    if objective.lower().startswith(("how ", "why ", "what ", "when ", "where ", "who ", "which ")):
        return f"Can you explain {objective}?"
    match = re.match(r"(?P<first>.+?) and (?P<second>.+?)(?P<rest> of .+)?$", objective)
    if match:
        parts = [
            match["first"],
            match["second"] if match["second"].startswith("the ") else f"the {match['second']}",
        ]
        return f"What is {parts[(turn - 1) % 2]}{match['rest'] or ''}?"
    return f"What is {objective}?"
