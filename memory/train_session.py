"""The native training session: the student's training copy loaded in llama.cpp, the adapter attached,
and the optimizer's context, one step at a time.

    session = Session(train_copy, n_ctx=256, threads=4)
    session.load_adapter(initial_adapter)           # A random, B zero: an exact no-op
    params = session.find_tensors(expected_names)   # the adapter's tensors, found in one throwaway decode
    session.start_training(params, optimizer)
    loss = session.train_step(window)               # one optimizer step on n_ctx + 1 tokens
    session.close()                                 # frees in reverse order

It calls llama.cpp through native.py (teachback's bindings, and llama-cpp-python's low-level module,
`Libs.L`); the training loop (finetune.py) and the data (train_data.py) never touch ctypes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from teachback.errors import FinetuneError
from teachback.memory import native


class Session:
    """The loaded training copy, the adapter, and the training context; frees them in reverse order."""

    def __init__(self, model_path: Path, n_ctx: int, threads: int) -> None:
        self.libs = native.libs()
        self.L = self.libs.L
        self.n_ctx = n_ctx
        self.threads = threads
        self.model = None
        self.adapter = None
        self.ctx = None
        self.dataset = None
        self.result = None
        self._keep: list[Any] = []  # ctypes objects C holds pointers to
        self.grad_accs: list[int] = []  # ggml-opt's gradient accumulators of the adapter tensors
        self._opt_ctx: int | None = None
        self.L.llama_backend_init()
        mp = self.L.llama_model_default_params()
        mp.load_mode = 0  # LLAMA_LOAD_MODE_NONE: read the weights into memory
        self.model = self.L.llama_model_load_from_file(str(model_path).encode(), mp)
        if not self.model:
            raise FinetuneError(f"llama.cpp could not load the training copy {model_path}")
        self.vocab = self.L.llama_model_get_vocab(self.model)
        self.n_vocab = self.L.llama_vocab_n_tokens(self.vocab)

    # -- contexts
    def make_context(self, n_ctx: int, cb_eval: Any = None) -> Any:
        L = self.L
        cp = L.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx  # equal, or the context is not in training mode
        cp.n_threads = cp.n_threads_batch = self.threads
        cp.type_k = cp.type_v = 0  # F32 KV cache: OUT_PROD has no F16 path
        cp.flash_attn_type = 0  # FLASH_ATTN_EXT has no backward pass
        cp.no_perf = True
        if cb_eval is not None:
            cp.cb_eval = cb_eval
        ctx = L.llama_init_from_model(self.model, cp)
        if not ctx:
            raise FinetuneError(f"llama.cpp could not create a context of {n_ctx} tokens for training")
        if native.attach_adapter(ctx, self.adapter) != 0:
            L.llama_free(ctx)
            raise FinetuneError("llama.cpp could not attach the LoRA adapter to the training context")
        return ctx

    def decode(self, ctx: Any, tokens: Sequence[int], all_logits: bool = False) -> None:
        L = self.L
        n = len(tokens)
        batch = L.llama_batch_init(n, 0, 1)
        try:
            for i, tok in enumerate(tokens):
                batch.token[i] = int(tok)
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = all_logits or i == n - 1
            batch.n_tokens = n
            L.llama_memory_clear(L.llama_get_memory(ctx), True)
            rc = L.llama_decode(ctx, batch)
        finally:
            L.llama_batch_free(batch)
        if rc != 0:
            raise FinetuneError(f"llama.cpp decode failed during training (code {rc})")

    def load_adapter(self, path: Path) -> None:
        self.adapter = self.L.llama_adapter_lora_init(self.model, str(path).encode())
        if not self.adapter:
            raise FinetuneError(f"llama.cpp could not load the initial adapter {path}")

    def find_tensors(self, expected: set[str]) -> dict[str, int]:
        from teachback.memory.lora import find_adapter_tensors

        def probe(cb: Any) -> None:
            ctx = self.make_context(256, cb)
            try:
                self.decode(ctx, list(range(1, 9)))
            finally:
                self.L.llama_free(ctx)

        return find_adapter_tensors(probe, expected)

    def start_training(self, params: dict[str, int], pars: Any) -> None:
        """Create the training context, warm its thread count, and hand the adapter to the optimizer."""
        ggml, llama = self.libs.ggml, self.libs.llama
        self.ctx = self.make_context(self.n_ctx)
        # llama_opt_epoch never calls the context's graph_compute, so the CPU backend keeps ggml's
        # default thread count (4) unless one ordinary decode has pushed n_threads_batch into it.
        self.decode(self.ctx, list(range(1, 9)))
        self.params = dict(params)

        @native.EPOCH_CALLBACK
        def grab_opt_ctx(_train: bool, opt_ctx: int, _ds: int, _res: int, _i: int, _n: int, _t: int) -> None:
            self._opt_ctx = opt_ctx

        self._grab_opt_ctx = grab_opt_ctx
        self._keep.append(grab_opt_ctx)
        for ptr in params.values():
            ggml.ggml_set_param(ptr)

        @native.PARAM_FILTER
        def reject_all(_tensor: int, _ud: int) -> bool:
            return False  # the base model stays frozen; only the adapter's flagged tensors train

        self._keep += [reject_all, pars]
        llama.llama_opt_init(self.ctx, self.model, native.llama_opt_params(reject_all, pars))
        self.dataset = ggml.ggml_opt_dataset_init(
            native.GGML_TYPE_I32, native.GGML_TYPE_I32, self.n_ctx, self.n_ctx, 1, 1
        )
        self.result = ggml.ggml_opt_result_init()
        self.data_view = native.int32_view(
            ggml.ggml_get_data(ggml.ggml_opt_dataset_data(self.dataset)), self.n_ctx
        )
        self.label_view = native.int32_view(
            ggml.ggml_get_data(ggml.ggml_opt_dataset_labels(self.dataset)), self.n_ctx
        )

    def train_step(self, window: Sequence[int]) -> float:
        """One optimizer step on one window of n_ctx + 1 tokens; the mean token loss. A token stored as
        ~token (negative) is read but not learned: it is no position's target (see `masked`)."""
        import numpy as np

        ggml, llama = self.libs.ggml, self.libs.llama
        w = np.asarray(window, dtype=np.int64)
        tokens = np.where(w < 0, ~w, w)
        self.data_view[:] = tokens[:-1]
        labels = w[1:] if self.libs.masked_labels else tokens[1:]
        self.label_view[:] = np.where(labels < 0, -1, labels)
        ggml.ggml_opt_result_reset(self.result)
        first = not self.grad_accs
        llama.llama_opt_epoch(
            self.ctx, self.dataset, self.result, None, 1, self._grab_opt_ctx if first else None, None
        )
        if first and self.reset_grads_needed:
            self._find_grad_accs()
        self.reset_grads()
        return native.result_loss(self.result)

    # ggml-opt builds its graphs anew for every step (llama.cpp does) and then accumulates each
    # parameter's gradient in place into a persistent tensor. It zeroes those accumulators only at
    # gradient-accumulation boundaries when opt_period > 1; with opt_period == 1 (n_batch == n_ubatch,
    # which training requires) it never does, so step t's "gradient" is the SUM of all gradients so far
    # and AdamW follows a stale, growing direction: the loss plateaus and spikes. We zero them after
    # every optimizer step. (Checked against PyTorch+PEFT on identical windows: with the reset the two
    # loss curves match; without it they part after a few steps. See benchmarks/finetune_bench.py.)
    reset_grads_needed = True

    def _find_grad_accs(self) -> None:
        """After the first step: ggml-opt's static context holds, in creation order, one accumulator
        per parameter (and one scalar for the loss), then AdamW's m and v (named "AdamW m/v for ...")."""
        if not self._opt_ctx:
            raise FinetuneError("llama.cpp did not report its optimizer context; cannot train")
        accs = []
        for t in native.opt_static_tensors(self._opt_ctx):
            tt = native.tensor(t)
            if tt.name.startswith(b"AdamW") or tt.ne[0] * tt.ne[1] * tt.ne[2] * tt.ne[3] == 1:
                continue
            accs.append(t)

        def shapes(ptrs: Any) -> list[tuple[int, int]]:
            return sorted((int(native.tensor(p).ne[0]), int(native.tensor(p).ne[1])) for p in ptrs)

        if len(accs) != len(self.params) or shapes(accs) != shapes(self.params.values()):
            raise FinetuneError(
                f"found {len(accs)} gradient accumulators for {len(self.params)} adapter tensors in "
                f"ggml-opt's state; fine-tuning needs llama-cpp-python=={native.PINNED_LLAMA_CPP}"
            )
        self.grad_accs = accs

    def reset_grads(self) -> None:
        if not self.reset_grads_needed:
            return
        ggml = self.libs.ggml
        for acc in self.grad_accs:
            ggml.ggml_backend_tensor_memset(acc, 0, 0, ggml.ggml_nbytes(acc))

    def answer_loss(self, tokens: Sequence[int], answer_start: int, pad: int) -> tuple[float, int]:
        """(sum of -log p(answer token | prefix), number of answer tokens), the adapter applied.

        Decoded on the training context itself (no second compute buffer); in training mode a decode
        must cover the whole window, so the example is followed by padding, which causal attention
        keeps from influencing the scored positions.
        """
        import numpy as np

        L = self.L
        toks = list(tokens)[: self.n_ctx]
        if answer_start >= len(toks):
            return 0.0, 0
        window = toks + [pad] * (self.n_ctx - len(toks))
        self.decode(self.ctx, window, all_logits=True)
        logits_ptr = L.llama_get_logits(self.ctx)
        logits = np.ctypeslib.as_array(logits_ptr, (self.n_ctx, self.n_vocab))
        rows = logits[answer_start - 1 : len(toks) - 1].astype(np.float64)
        targets = np.asarray(toks[answer_start:], dtype=np.int64)
        m = rows.max(axis=1, keepdims=True)
        logz = m[:, 0] + np.log(np.exp(rows - m).sum(axis=1))
        nll = logz - rows[np.arange(len(targets)), targets]
        return float(nll.sum()), len(targets)

    # -- text
    def tokenize(self, text: str) -> list[int]:
        tokens = native.tokenize(self.vocab, text)
        if tokens is None:
            raise FinetuneError("tokenization failed for a training example")
        return tokens

    def formatter(self, system_prompt: str | None) -> Callable[[str, str], tuple[str, str]]:
        """(question, answer) -> (prompt, full turn) in the student's own chat template (`chat_formatter`)."""
        from teachback.memory.train_data import chat_formatter

        L = self.L
        raw = L.llama_model_chat_template(self.model, None)
        if not raw:
            raise FinetuneError(
                "the student model has no chat template (tokenizer.chat_template); cannot format turns"
            )

        def text(tok: int) -> str:
            t = L.llama_vocab_get_text(self.vocab, tok)
            return t.decode("utf-8", "replace") if t else ""

        eos, bos = text(L.llama_vocab_eos(self.vocab)), text(L.llama_vocab_bos(self.vocab))
        return chat_formatter(raw.decode("utf-8", "replace"), eos, bos, system_prompt)

    @property
    def eos(self) -> int:
        return int(self.L.llama_vocab_eos(self.vocab))

    def close(self) -> None:
        L, ggml = self.L, self.libs.ggml
        if self.result:
            ggml.ggml_opt_result_free(self.result)
            self.result = None
        if self.dataset:
            ggml.ggml_opt_dataset_free(self.dataset)
            self.dataset = None
        if self.ctx:
            L.llama_free(self.ctx)
            self.ctx = None
        if self.adapter:
            L.llama_adapter_lora_free(self.adapter)
            self.adapter = None
        if self.model:
            L.llama_model_free(self.model)
            self.model = None
