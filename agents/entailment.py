"""Entailment: ask the judge model whether the notes say a claim, and read P(yes) from its log-probabilities.

    p = await entailment(client, "Korrin is the capital of Vellmar.", "The capital is Korrin.")   # 0..1

One token is generated (greedy). Where the model's server returns log-probabilities (llama.cpp's server,
OpenAI), P(yes) is the probability mass of "yes"/"true" among the first token's alternatives, over that of
"yes" and "no" together: a graded signal, not a coin flip. Where it returns none, the first word decides
(1.0 or 0.0), and anything else is None: no signal.

The premise is the sentence (or two) of the notes that `claims.py` aligned the claim with, not the whole
notes: a 0.5B model barely separates true from false claims against a whole page (P(yes) 0.25-0.44 for
everything, measured on 39 labelled answers), and does much better against one sentence.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from teachback.agents import prompts

if TYPE_CHECKING:
    from autogen_core.models import ChatCompletionClient

_YES = ("yes", "true")
_NO = ("no", "false")
TOP_LOGPROBS = 10


def entailment_messages(premise: str, claim: str) -> list[Any]:
    """The two messages of an entailment question (system and user), from prompts.yaml."""
    from autogen_core.models import SystemMessage, UserMessage

    return [
        SystemMessage(content=prompts.render("entail_system")),
        UserMessage(content=prompts.render("entail_question", notes=premise, claim=claim), source="director"),
    ]


async def entailment(client: ChatCompletionClient, premise: str, claim: str) -> float | None:
    """P(the notes in `premise` say `claim`), from one greedy token; None when the reply is no answer."""
    result = await client.create(
        entailment_messages(premise, claim),
        json_output=False,
        extra_create_args={
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        },
    )
    p = p_yes_from_logprobs(result.logprobs)
    if p is not None:
        return p
    text = result.content if isinstance(result.content, str) else ""
    return p_yes_from_text(text)


def p_yes_from_logprobs(logprobs: Any) -> float | None:
    """P(yes) / (P(yes) + P(no)) over the first token's alternatives, or None without any.

    The alternatives' text is in their `bytes` (autogen's `TopLogprob` has no token field).

    >>> from autogen_core.models import ChatCompletionTokenLogprob, TopLogprob
    >>> lp = [ChatCompletionTokenLogprob(token="No", logprob=-0.5, top_logprobs=[
    ...       TopLogprob(logprob=-0.5, bytes=list(b"No")), TopLogprob(logprob=-1.5, bytes=list(b" Yes"))])]
    >>> round(p_yes_from_logprobs(lp), 3)
    0.269
    """
    if not logprobs:
        return None
    first = logprobs[0]
    alternatives = [
        (a.logprob, bytes(a.bytes or []).decode("utf-8", "replace")) for a in first.top_logprobs or []
    ]
    alternatives = alternatives or [(first.logprob, first.token)]
    yes = sum(math.exp(lp) for lp, token in alternatives if token.strip().lower() in _YES)
    no = sum(math.exp(lp) for lp, token in alternatives if token.strip().lower() in _NO)
    if yes + no <= 0:
        return None
    return yes / (yes + no)


def p_yes_from_text(text: str) -> float | None:
    """1.0 for a reply that starts with yes/true, 0.0 for no/false; a judge that answers in its verdict
    schema anyway counts as its score / 10; anything else is None.

    >>> p_yes_from_text("Yes."), p_yes_from_text(" no, it says 1487"), p_yes_from_text("Maybe")
    (1.0, 0.0, None)
    >>> p_yes_from_text('{"reason": "agrees with the notes", "score": 8}')
    0.8
    """
    from teachback.agents.judge import parse_verdict

    word = text.strip().split(maxsplit=1)[0].strip(".,!:;").lower() if text.strip() else ""
    if word in _YES:
        return 1.0
    if word in _NO:
        return 0.0
    verdict = parse_verdict(text)
    return verdict.score / 10 if verdict is not None else None
