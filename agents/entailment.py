"""Entailment: ask the judge model whether the notes say a claim, and read P(true) from its probabilities.

    p = await entailment(client, "Korrin is the capital of Vellmar.", "The capital is Korrin.")   # 0..1
    p = await LocalEntailer(path).p_true("Korrin is the capital of Vellmar.", "The capital is Korrin.")

Two ways to ask, one question (prompts.yaml: `entail_system`, `entail_question`):

- `LocalEntailer`: a local GGUF judge, in-process. One prompt evaluation, no generation: P(true) is the
  softmax mass of "true" over "true" and "false" at the answer's first position, read from the last
  position's logits. A llama.cpp server returns log-probabilities only when it keeps the logits of every
  prompt token (`logits_all`): for Qwen's 151,936-token vocabulary that is 2.5 GB of scores and several
  times the prompt time, so teachback's servers do not, and its local judge answers here instead.
- `entailment(client, ...)`: any chat client (a hosted judge). One token is generated (greedy); where the
  API returns log-probabilities (OpenAI), P(true) is read from the first token's alternatives; where it
  returns none, the first word decides (1.0 or 0.0), and anything else is None: no signal.

The premise is the sentence (or two) of the notes that `claims.py` aligned the claim with, not the whole
notes: a 0.5B model barely separates true from false claims against a whole page (P(yes) 0.25-0.44 for
everything, measured on 39 labelled answers), and does much better against one sentence.
"""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from teachback.agents import prompts

if TYPE_CHECKING:
    from autogen_core.models import ChatCompletionClient

_YES = ("yes", "true")
_NO = ("no", "false")
TOP_LOGPROBS = 10
# P(true) an uncertain claim needs from a judge whose own threshold was not measured. Each bundled judge
# carries its measured one (agents/models.py `LocalModel.entailed`; README, "The dialogue gate").
ENTAILED = 0.45


def entailment_messages(premise: str, claim: str) -> list[Any]:
    """The two messages of an entailment question (system and user), from prompts.yaml."""
    from autogen_core.models import SystemMessage, UserMessage

    return [
        SystemMessage(content=prompts.render("entail_system")),
        UserMessage(content=prompts.render("entail_question", notes=premise, claim=claim), source="director"),
    ]


class Entailer(Protocol):
    """Whatever answers the gate's entailment question: P(the premise says the claim), or None; and from
    which P(true) its word makes a claim hold (each model's probabilities sit differently)."""

    threshold: float

    async def p_true(self, premise: str, claim: str) -> float | None: ...

    async def p_answers(self, question: str, answer: str) -> float | None: ...


class ChatEntailer:
    """The entailment question put to any chat client (a hosted judge, or the scripted one in tests)."""

    def __init__(self, client: ChatCompletionClient, threshold: float | None = None):
        self.client = client
        self.threshold = ENTAILED if threshold is None else threshold

    async def p_true(self, premise: str, claim: str) -> float | None:
        return await entailment(self.client, premise, claim)

    async def p_answers(self, question: str, answer: str) -> float | None:
        return await _ask_true(self.client, _answers_messages(question, answer))


async def entailment(client: ChatCompletionClient, premise: str, claim: str) -> float | None:
    """P(the notes in `premise` say `claim`), from one greedy token; None when the reply is no answer."""
    return await _ask_true(client, entailment_messages(premise, claim))


def _answers_messages(question: str, answer: str) -> list[Any]:
    """Does an answer answer its question? Asked only when the question names nothing of the notes."""
    from autogen_core.models import SystemMessage, UserMessage

    return [
        SystemMessage(content=prompts.render("entail_system")),
        UserMessage(
            content=prompts.render("answers_question", question=question, answer=answer), source="director"
        ),
    ]


async def _ask_true(client: ChatCompletionClient, messages: list[Any]) -> float | None:
    result = await client.create(
        messages,
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


class LocalEntailer:
    """P(true) from a local GGUF judge, in-process, with the prompt's shared beginning kept between calls."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 1024,
        n_threads: int | None = None,
        threshold: float | None = None,
    ):
        self.model_path = Path(model_path)
        self.threshold = ENTAILED if threshold is None else threshold
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._llama: Any = None
        self._format: Any = None
        self._true: list[int] = []
        self._false: list[int] = []
        self._lock = threading.Lock()

    async def p_true(self, premise: str, claim: str) -> float | None:
        question = prompts.render("entail_question", notes=premise, claim=claim)
        return await asyncio.to_thread(self._p_true, question)

    async def p_answers(self, question: str, answer: str) -> float | None:
        asked = prompts.render("answers_question", question=question, answer=answer)
        return await asyncio.to_thread(self._p_true, asked)

    def _p_true(self, question: str) -> float | None:
        import numpy as np

        with self._lock:
            llama = self._load()
            messages = [
                {"role": "system", "content": prompts.render("entail_system")},
                {"role": "user", "content": question},
            ]
            prompt = self._format(messages=messages).prompt
            tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
            tokens = tokens[-(self.n_ctx - 1) :]
            kept = min(Llama_prefix(llama, tokens), len(tokens) - 1)  # at least one token is evaluated
            llama.n_tokens = kept
            llama.eval(tokens[kept:])
            logits = np.ctypeslib.as_array(_last_logits(llama), shape=(llama.n_vocab(),))
            top = float(logits.max())
            true = float(np.exp(logits[self._true] - top).sum())
            false = float(np.exp(logits[self._false] - top).sum())
            return true / (true + false) if true + false > 0 else None

    def _load(self) -> Any:
        if self._llama is not None:
            return self._llama
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        from teachback.agents.llama_local import default_threads
        from teachback.errors import ModelError

        try:
            llama = Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads or default_threads(),
                n_threads_batch=self.n_threads or default_threads(),
                logits_all=False,
                verbose=False,
            )
        except Exception as exc:
            raise ModelError(f"judge {self.model_path}: cannot load it for entailment ({exc})") from None
        template = llama.metadata.get("tokenizer.chat_template") or _PLAIN_TEMPLATE
        eos = llama.detokenize([llama.token_eos()]).decode("utf-8", "replace")
        bos = (
            llama.detokenize([llama.token_bos()]).decode("utf-8", "replace") if llama.token_bos() >= 0 else ""
        )
        self._format = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos, add_generation_prompt=True)
        self._true = _first_tokens(llama, ("true", "True", " true", " True", "TRUE"))
        self._false = _first_tokens(llama, ("false", "False", " false", " False", "FALSE"))
        self._llama = llama
        return llama

    def close(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None


# A model with no chat template of its own (a base model) reads the question as plain text.
_PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Answer:{% endif %}"
)


def _first_tokens(llama: Any, words: tuple[str, ...]) -> list[int]:
    """The first token of each spelling of an answer word, without repeats."""
    out: list[int] = []
    for word in words:
        ids = llama.tokenize(word.encode("utf-8"), add_bos=False, special=False)
        if ids and ids[0] not in out:
            out.append(ids[0])
    return out


def Llama_prefix(llama: Any, tokens: list[int]) -> int:  # noqa: N802 - names the Llama state it reads
    """How many of `tokens` the context already holds (from the last call), so only the rest is evaluated."""
    held = llama.input_ids[: llama.n_tokens].tolist()
    n = 0
    for a, b in zip(held, tokens, strict=False):
        if a != b:
            break
        n += 1
    return n


def _last_logits(llama: Any) -> Any:
    import llama_cpp

    return llama_cpp.llama_get_logits_ith(llama.ctx, -1)
