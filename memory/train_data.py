"""The training data: accepted (question, answer) turns made into the token windows the trainer steps on.

    examples = check_examples(turns)                          # stripped pairs; a FinetuneError if none
    train, val = split_examples(examples, 0.1, seed=0)        # indices, deterministic per seed
    encoded = encode_examples(session, examples, None)        # tokens in the student's chat template
    windows = epoch_windows([e.tokens for e in encoded], config, epoch=0)   # n_ctx + 1 tokens each

Each turn is formatted with the student's own chat template (`chat_formatter`, the rendering
llama-cpp-python uses when the student is asked), tokenized by the training session, and packed into full
windows without padding (`pack_windows`); `Example.masked` marks the prompt's tokens as read but not
learned. Only `encode_examples` needs a model (a train_session.Session); the rest is pure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from teachback.errors import FinetuneError

if TYPE_CHECKING:
    from teachback.memory.finetune import TrainConfig
    from teachback.memory.train_session import Session


def check_examples(examples: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    clean = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, (tuple, list)) or len(ex) != 2:
            raise FinetuneError(f"example {i}: expected a (question, answer) pair")
        q, a = str(ex[0]).strip(), str(ex[1]).strip()
        if q and a:
            clean.append((q, a))
    if not clean:
        raise FinetuneError(
            "no accepted turns to train on (every example is empty or the selection is empty)"
        )
    return clean


def split_examples(
    examples: Sequence[tuple[str, str]], val_split: float, seed: int
) -> tuple[list[int], list[int]]:
    """Deterministic (train indices, validation indices). At least one validation example when
    val_split > 0 and there are 2 or more examples; never all of them."""
    import numpy as np

    n = len(examples)
    order = [int(i) for i in np.random.default_rng(seed).permutation(n)]
    n_val = int(round(n * val_split))
    if val_split > 0 and n >= 2:
        n_val = max(1, n_val)
    n_val = min(n_val, n - 1) if n else 0
    return sorted(order[n_val:]), sorted(order[:n_val])


def pack_windows(sequences: Sequence[Sequence[int]], n_ctx: int, seed: int) -> list[list[int]]:
    """Pack tokenized examples into windows of n_ctx + 1 tokens (inputs = w[:-1], labels = w[1:]).

    No padding: the examples are shuffled (by `seed`) and laid end to end. An example that does not
    fit in what is left of a window fills that rest with its beginning and then starts the next
    window whole, so every answer is trained with its full question in view. The last window is
    filled by continuing from the first examples again. Examples longer than a window are cut.
    """
    import numpy as np

    size = n_ctx + 1
    seqs = [list(s)[:size] for s in sequences if len(s)]
    if not seqs:
        return []
    order = [seqs[int(i)] for i in np.random.default_rng(seed).permutation(len(seqs))]
    windows: list[list[int]] = []
    cur: list[int] = []
    for seq in order:
        if len(cur) + len(seq) <= size:
            cur.extend(seq)
            continue
        cur.extend(seq[: size - len(cur)])
        windows.append(cur)
        cur = list(seq)
    if cur:
        i = 0
        while len(cur) < size:
            seq = order[i % len(order)]
            cur.extend(seq[: size - len(cur)])
            i += 1
        windows.append(cur)
    elif len(windows) == 0:  # pragma: no cover - unreachable: seqs is non-empty
        pass
    return windows


def epoch_windows(train_tokens: Sequence[Sequence[int]], config: TrainConfig, epoch: int) -> list[list[int]]:
    """The windows of epoch `epoch` (0-based): a fresh shuffle per epoch, reproducible from the seed."""
    return pack_windows(train_tokens, config.n_ctx, config.seed * 1000 + epoch)


def data_sha256(examples: Sequence[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps([list(e) for e in examples], ensure_ascii=False).encode()).hexdigest()


@dataclass(frozen=True)
class Example:
    tokens: list[int]
    answer_start: int  # index of the first answer token

    def masked(self) -> list[int]:
        """The tokens with the prompt's stored as ~token: read by the model, learned by no position.
        The answer's first token stays the target of the prompt's last position."""
        return [~t for t in self.tokens[: self.answer_start]] + list(self.tokens[self.answer_start :])


def chat_formatter(
    template: str, eos_token: str, bos_token: str, system_prompt: str | None = None
) -> Callable[[str, str], tuple[str, str]]:
    """(question, answer) -> (prompt up to the assistant's reply, full turn) in a model's chat template.

    The same rendering llama-cpp-python's `Llama` uses for `create_chat_completion` with that template,
    so what is trained is what the student sees when asked.
    """
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    full_fmt = Jinja2ChatFormatter(
        template, eos_token=eos_token, bos_token=bos_token, add_generation_prompt=False
    )
    prompt_fmt = Jinja2ChatFormatter(
        template, eos_token=eos_token, bos_token=bos_token, add_generation_prompt=True
    )

    def fmt(question: str, answer: str) -> tuple[str, str]:
        msgs: list[Any] = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        msgs.append({"role": "user", "content": question})
        prompt = prompt_fmt(messages=msgs).prompt
        full = full_fmt(messages=[*msgs, {"role": "assistant", "content": answer}]).prompt
        return prompt, full

    return fmt


def encode_examples(
    session: Session, examples: Sequence[tuple[str, str]], system_prompt: str | None
) -> list[Example]:
    """Each (question, answer) as the tokens of its whole chat turn and where its answer starts."""
    fmt = session.formatter(system_prompt)
    out = []
    for question, answer in examples:
        prompt, full = fmt(question, answer)
        p_toks, f_toks = session.tokenize(prompt), session.tokenize(full)
        start = len(p_toks) if f_toks[: len(p_toks)] == p_toks else len(session.tokenize(prompt.rstrip()))
        out.append(Example(f_toks, start))
    return out
