"""Fine-tune the student: train a LoRA adapter inside llama.cpp on accepted question/answer turns.

    result = train_lora(base_model, [(question, answer), ...], out=Path("adapter.gguf"), config=TrainConfig())
    Llama(model_path=base_model, lora_path=result.adapter)   # the original quantized model + adapter

How (see DESIGN.md, "On-device LoRA fine-tuning with llama.cpp"):
1. The student is copied once to the training type (`TrainConfig.base_type`: F32, F16, BF16 or Q8_0) with
   llama.cpp's own `llama_model_quantize`, cached by the base file's sha256 under
   ~/.cache/teachback/<type>/. Stock ggml's backward pass re-dequantizes every F16 or quantized row per
   output row (about 6x slower than F32); with the patched kernels (below) a Q8_0 copy trains at about
   F32 speed in a quarter of the weight memory.
2. An initial adapter (A random, B zero: an exact no-op) is written, loaded with
   `llama_adapter_lora_init` and attached; its tensors are found through `cb_eval` during one
   throwaway decode and flagged with `ggml_set_param`; `llama_opt_init` gets a param_filter that
   rejects every model tensor, so only the adapter trains and the base stays frozen.
3. Each example is formatted with the student's own chat template, tokenized, and packed into full
   n_ctx windows (no padding). One `llama_opt_epoch` call per window gives Python control between
   optimizer steps: progress, the learning-rate schedule (ggml re-reads the optimizer parameters at
   every step), and Ctrl-C.
4. Loss masking: llama.cpp's dataset labels cannot mask. `llama_opt_epoch` turns each sparse int32
   label into a one-hot row and ggml's cross-entropy backward computes softmax(logits) - label, which
   assumes rows sum to one: an all-zero row still pushes gradient, and a negative id is an
   out-of-bounds write. So every token of a window is trained (system prompt, question, answer); the
   template tokens are learned in a few steps and then cost nothing. Validation loss, which is what
   the user is shown, is computed by us on the ANSWER tokens only.
5. Gradient reset (a llama.cpp bug worked around): ggml-opt accumulates each parameter's gradient in
   place into a persistent tensor and, with llama.cpp's per-step graphs and opt_period == 1, never
   zeroes it, so every AdamW step used the SUM of all gradients so far (the "loss plateaus at ~0.3"
   of the first probes). We find those accumulators in ggml-opt's static context after the first step
   and zero them after every step; the loss curve then matches PyTorch+PEFT on identical windows.
6. The trained tensors are read back and written as a GGUF LoRA, atomically, with metadata.

Speed: a step is a forward pass (MUL_MAT) and its backward (OUT_PROD, the transposed matmul). Stock ggml
runs OUT_PROD as a rank-1 update loop at about a third of its matmul speed, and both below PyTorch's
GEMMs. scripts/setup.sh builds llama.cpp with scripts/patches/llama-cpp-training-gemm.patch, which runs
both as packed, cache-blocked GEMMs on one register tile (and dequantizes F16/Q8_0 weights while
packing, so a Q8_0 training copy trains at F32 speed). On CPUs with Intel AMX (Sapphire Rapids and
later) the patch runs the same matmuls on the tile unit in BF16 with F32 sums, and the trainer turns that on
for the LoRA tensors too while it trains (`TrainConfig.matmul`, "auto"): mixed precision as torch.autocast
does, with the adapter, its gradients and AdamW in F32. A stock build trains correctly, about 2x slower;
`TrainResult.fast_backward` and `TrainResult.matmul` say what ran. tests/test_training_kernel.py checks the
kernels.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import math
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from teachback.errors import FinetuneError
from teachback.files import atomic_path, atomic_write_text

DEFAULT_TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
KNOWN_TARGETS = frozenset(DEFAULT_TARGETS)
# Architectures whose llama.cpp training graph has been run end to end with this trainer.
TRAINABLE_ARCHITECTURES = frozenset({"llama"})
LR_SCHEDULES = ("constant", "cosine")
MATMULS = ("auto", "f32")


@dataclass
class TrainConfig:
    """Options of one fine-tuning run. `validate()` checks them; `train_lora` calls it."""

    rank: int = 32
    alpha: float = 32.0  # llama.cpp scales the adapter by alpha / rank
    epochs: int = 8  # chosen with benchmarks/learning_bench.py (README: "Did it learn?")
    learning_rate: float = 2e-3  # peak; matched PEFT's loss curve on the bundled model (finetune_bench.py)
    targets: tuple[str, ...] = DEFAULT_TARGETS
    n_ctx: int = 256  # training window; llama.cpp needs n_ctx == n_batch == n_ubatch >= 256 to train
    # Nothing held out by default: a held-out turn is a fact the student never trains on, and its loss rose
    # while the quiz rose (issue 14's data point), so it measures nothing the loop needs.
    val_split: float = 0.0
    seed: int = 0
    threads: int | None = None  # None: the CPUs this process may use
    # Stop after this many epochs without a better validation loss, and keep the best epoch's adapter.
    # Off by default: held-out turns are about *other* facts than the trained ones, so their loss
    # measures generalisation, not the knowledge being taught (which is what fine-tuning is for).
    early_stop_patience: int | None = None
    lr_schedule: str = "cosine"  # "constant", or "cosine": linear warmup then cosine decay
    warmup_fraction: float = 0.1  # of all optimizer steps (cosine only)
    min_lr_fraction: float = 0.1  # the cosine ends at learning_rate * this
    weight_decay: float = 0.0
    system_prompt: str | None = None  # None: the chat template's default system prompt, if any
    # The copy of the student's weights that training runs on (the adapter always loads onto the original
    # file): "q8_0" (a quarter of F32's weight memory at about its speed, with the patched kernels),
    # "bf16" (half of F32's; read in place by the AMX kernels), "f32" (1.4x q8_0's peak memory), "f16",
    # or "model" (the student's file as it is, e.g. Q4_1: least memory, the same losses as F32). See
    # benchmarks/finetune_bench.py --base-types.
    base_type: str = "q8_0"
    # "auto": BF16 products on Intel AMX tiles where the CPU has them (F32 sums; the adapter, its
    # gradients and AdamW stay F32), else F32; "f32": F32 matmuls everywhere.
    matmul: str = "auto"
    # Adapters only on blocks >= first_layer: the backward pass stops at that block, so training is
    # faster, at some cost in what the adapter can change.
    first_layer: int = 0
    # "answer": the loss counts the answers' tokens only (the prompt is read, not learned; needs the build
    # of scripts/patches/, else it falls back to "all"); "all": every token of the chat, the question too.
    loss_on: str = "answer"

    def validate(self) -> None:
        problems = []
        if self.rank < 1:
            problems.append(f"rank must be >= 1 (got {self.rank})")
        if not self.alpha > 0:
            problems.append(f"alpha must be > 0 (got {self.alpha})")
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if not 0 < self.learning_rate < 1:
            problems.append(f"learning_rate must be in (0, 1) (got {self.learning_rate})")
        if not self.targets:
            problems.append("targets must name at least one tensor kind")
        unknown = [t for t in self.targets if t not in KNOWN_TARGETS]
        if unknown:
            problems.append(f"unknown target tensors {unknown} (choose from {', '.join(DEFAULT_TARGETS)})")
        if self.n_ctx < 256 or self.n_ctx % 32:
            problems.append(f"n_ctx must be a multiple of 32 and >= 256 (got {self.n_ctx})")
        if not 0 <= self.val_split < 1:
            problems.append(f"val_split must be in [0, 1) (got {self.val_split})")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be >= 1 (got {self.threads})")
        if self.early_stop_patience is not None and self.early_stop_patience < 1:
            problems.append(f"early_stop_patience must be >= 1 or None (got {self.early_stop_patience})")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be one of {LR_SCHEDULES} (got {self.lr_schedule!r})")
        if not 0 <= self.warmup_fraction < 1 or not 0 <= self.min_lr_fraction <= 1:
            problems.append("warmup_fraction must be in [0, 1) and min_lr_fraction in [0, 1]")
        if not 0 <= self.weight_decay <= 1:
            problems.append(f"weight_decay must be in [0, 1] (got {self.weight_decay})")
        if self.first_layer < 0:
            problems.append(f"first_layer must be >= 0 (got {self.first_layer})")
        if self.loss_on not in ("answer", "all"):
            problems.append(f"loss_on must be 'answer' or 'all' (got {self.loss_on!r})")
        if self.matmul not in MATMULS:
            problems.append(f"matmul must be one of {MATMULS} (got {self.matmul!r})")
        if self.base_type not in BASE_TYPES:
            problems.append(f"base_type must be one of {sorted(BASE_TYPES)} (got {self.base_type!r})")
        if problems:
            raise FinetuneError("invalid fine-tuning settings: " + "; ".join(problems))

    def fingerprint(self) -> str:
        """Hash of everything that shapes the trained weights except `epochs` (checkpoints resume)."""
        d = asdict(self)
        d.pop("epochs")
        d.pop("threads")
        d.pop("early_stop_patience")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainProgress:
    """One progress report: after every optimizer step (phase "train") and every validation ("val")."""

    phase: str  # "prepare", "train", "val"
    epoch: int  # 1-based
    epochs: int
    step: int  # 1-based within the epoch
    steps: int
    loss: float  # running mean of this epoch's training loss (all tokens), or the validation loss
    learning_rate: float
    tokens_per_s: float
    eta_s: float
    message: str = ""
    step_loss: float = math.nan  # this step's own loss (phase "train")


@dataclass
class TrainResult:
    adapter: Path
    train_loss: list[float]  # per epoch, mean over the epoch's windows (all tokens)
    val_loss: list[float]  # answer tokens of the held-out turns: [before training, after epoch 1, ...]
    tokens_per_s: float  # training tokens per second of optimizer-step time
    peak_rss_bytes: int
    seconds: float
    base_sha256: str
    data_sha256: str
    n_train: int
    n_val: int
    windows_per_epoch: int
    epochs_run: int
    best_epoch: int  # the epoch whose adapter was written (the last one unless early stopping chose)
    stopped_early: bool = False
    resumed_from_epoch: int = 0
    truncated_examples: int = 0
    fast_backward: bool = False  # llama.cpp built with teachback's GEMM out_prod (scripts/patches/)
    matmul: str = "f32"  # what the matmuls ran as: "amx-bf16" or "f32"
    loss_on: str = "all"  # the tokens the loss counted: "answer" (the prompt masked) or "all"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def val_loss_before(self) -> float | None:
        return self.val_loss[0] if self.val_loss else None

    @property
    def val_loss_after(self) -> float | None:
        return self.val_loss[self.best_epoch] if len(self.val_loss) > self.best_epoch else None


# ---- pure pieces (no model needed) ---------------------------------------------------------------------


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


def lr_at(config: TrainConfig, step: int, total_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`."""
    lr = config.learning_rate
    if config.lr_schedule == "constant" or total_steps <= 1:
        return lr
    warmup = int(round(config.warmup_fraction * total_steps))
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total_steps - warmup - 1)
    floor = lr * config.min_lr_fraction
    return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def adapter_params(targets: Sequence[tuple[int, int]], rank: int) -> int:
    """Number of trainable parameters for LoRA pairs on weights shaped (n_in, n_out)."""
    return sum(rank * (n_in + n_out) for n_in, n_out in targets)


def estimate_memory(
    *,
    weight_bytes: int,  # the training copy's weights (F32, or the smaller copy chosen)
    n_adapter_params: int,
    n_ctx: int,
    n_layer: int,
    n_embd: int,
    n_ff: int,
    n_head: int,
    n_vocab: int,
) -> int:
    """Peak resident bytes a training run needs (model copy + adapter + optimizer + activations).

    The adapter costs 4 copies (weights, gradients, AdamW m and v). Activations: llama.cpp keeps the
    forward intermediates for the backward pass and their gradients, about (16 n_embd + 5 n_ff) floats
    per token and layer, plus the logits, their softmax and gradient (3 n_vocab floats per token).
    100 MiB covers Python, llama.cpp and allocator slack. Fitted to SmolLM2-135M (peak RSS 1350 MiB at
    n_ctx 256, 2005 MiB at 512; this gives 1401 and 2040). `n_head` is accepted for other models'
    attention terms, which are small at these context lengths.
    """
    per_token = n_layer * (16 * n_embd + 5 * n_ff) + 3 * n_vocab
    activations = 4 * n_ctx * per_token
    adapter = 16 * n_adapter_params
    return int(weight_bytes + adapter + activations + 100 * 2**20)


def available_memory() -> int | None:
    """Bytes the system can give this process now (MemAvailable, or the cgroup limit if lower)."""
    avail: int | None = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        raw = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if raw != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            limit = int(raw) - used
            avail = limit if avail is None else min(avail, limit)
    if avail is None:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return avail


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def data_sha256(examples: Sequence[tuple[str, str]]) -> str:
    return hashlib.sha256(json.dumps([list(e) for e in examples], ensure_ascii=False).encode()).hexdigest()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "teachback"


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def _threads(config: TrainConfig) -> int:
    if config.threads:
        return config.threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# ---- the model side ------------------------------------------------------------------------------------


# llama_ftype of each training copy (ALL_F32, MOSTLY_F16, MOSTLY_Q8_0; 1-D tensors stay F32) and its bytes
# per weight; "model" trains on the student's own file.
BASE_TYPES = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "model": -1}
BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32}


def training_copy(base_model: Path, base_sha: str, threads: int, base_type: str) -> Path:
    """The F32 (or F16, Q8_0) copy of `base_model`, made with llama.cpp's own quantizer, cached by sha256
    under ~/.cache/teachback/<type>/ (XDG_CACHE_HOME is honoured); `base_model` itself for "model"."""
    from teachback.memory import llama_train as lt

    if base_type == "model":
        return base_model
    target = cache_dir() / base_type / f"{base_sha}.gguf"
    if target.exists():
        return target
    L = lt.libs().L
    params = L.llama_model_quantize_default_params()
    params.ftype = BASE_TYPES[base_type]
    params.allow_requantize = True
    params.nthread = threads
    with atomic_path(target) as tmp:
        rc = L.llama_model_quantize(str(base_model).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0 or not tmp.exists():
            raise FinetuneError(
                f"{base_model}: llama.cpp could not make a {base_type.upper()} copy for training (code {rc})"
            )
    return target


class _Session:
    """The loaded training copy, the adapter, and the training context; frees them in reverse order."""

    def __init__(self, model_path: Path, n_ctx: int, threads: int) -> None:
        from teachback.memory import llama_train as lt

        self.lt = lt
        self.libs = lt.libs()
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
        adapters = (L.llama_adapter_lora_p_ctypes * 1)(self.adapter)
        scales = (ctypes.c_float * 1)(1.0)
        if L.llama_set_adapters_lora(ctx, adapters, 1, scales) != 0:
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
        lt, L = self.lt, self.L
        ggml, llama = self.libs.ggml, self.libs.llama
        self.ctx = self.make_context(self.n_ctx)
        # llama_opt_epoch never calls the context's graph_compute, so the CPU backend keeps ggml's
        # default thread count (4) unless one ordinary decode has pushed n_threads_batch into it.
        self.decode(self.ctx, list(range(1, 9)))
        self.params = dict(params)

        @lt.EPOCH_CALLBACK
        def grab_opt_ctx(_train: bool, opt_ctx: int, _ds: int, _res: int, _i: int, _n: int, _t: int) -> None:
            self._opt_ctx = opt_ctx

        self._grab_opt_ctx = grab_opt_ctx
        self._keep.append(grab_opt_ctx)
        for ptr in params.values():
            ggml.ggml_set_param(ptr)

        @lt.PARAM_FILTER
        def reject_all(_tensor: int, _ud: int) -> bool:
            return False  # the base model stays frozen; only the adapter's flagged tensors train

        self._keep += [reject_all, pars]
        lp = lt.LlamaOptParams(
            0,
            ctypes.cast(reject_all, ctypes.c_void_p),
            None,
            self.libs.get_constant_opt_pars,
            ctypes.cast(ctypes.pointer(pars), ctypes.c_void_p),
            lt.OPTIMIZER_ADAMW,
        )
        llama.llama_opt_init(self.ctx, self.model, lp)
        self.dataset = ggml.ggml_opt_dataset_init(
            lt.GGML_TYPE_I32, lt.GGML_TYPE_I32, self.n_ctx, self.n_ctx, 1, 1
        )
        self.result = ggml.ggml_opt_result_init()
        import numpy as np

        def view(t: int) -> Any:
            ptr = ctypes.cast(ggml.ggml_get_data(t), ctypes.POINTER(ctypes.c_int32))
            return np.ctypeslib.as_array(ptr, (self.n_ctx,))

        self.data_view = view(ggml.ggml_opt_dataset_data(self.dataset))
        self.label_view = view(ggml.ggml_opt_dataset_labels(self.dataset))
        _ = L

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
        loss, unc = ctypes.c_double(), ctypes.c_double()
        ggml.ggml_opt_result_loss(self.result, ctypes.byref(loss), ctypes.byref(unc))
        return float(loss.value)

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
        lt = self.lt
        if not self._opt_ctx:
            raise FinetuneError("llama.cpp did not report its optimizer context; cannot train")
        accs = []
        for t in lt.opt_static_tensors(self._opt_ctx):
            tt = lt.tensor(t)
            if tt.name.startswith(b"AdamW") or tt.ne[0] * tt.ne[1] * tt.ne[2] * tt.ne[3] == 1:
                continue
            accs.append(t)

        def shapes(ptrs: Any) -> list[tuple[int, int]]:
            return sorted((int(lt.tensor(p).ne[0]), int(lt.tensor(p).ne[1])) for p in ptrs)

        if len(accs) != len(self.params) or shapes(accs) != shapes(self.params.values()):
            raise FinetuneError(
                f"found {len(accs)} gradient accumulators for {len(self.params)} adapter tensors in "
                f"ggml-opt's state; fine-tuning needs llama-cpp-python=={lt.PINNED_LLAMA_CPP}"
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


@dataclass(frozen=True)
class _Example:
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


def _session_formatter(session: _Session, system_prompt: str | None) -> Callable[[str, str], tuple[str, str]]:
    L = session.L
    raw = L.llama_model_chat_template(session.model, None)
    if not raw:
        raise FinetuneError(
            "the student model has no chat template (tokenizer.chat_template); cannot format turns"
        )

    def text(tok: int) -> str:
        t = L.llama_vocab_get_text(session.vocab, tok)
        return t.decode("utf-8", "replace") if t else ""

    eos, bos = text(L.llama_vocab_eos(session.vocab)), text(L.llama_vocab_bos(session.vocab))
    return chat_formatter(raw.decode("utf-8", "replace"), eos, bos, system_prompt)


def _tokenize(session: _Session, text: str) -> list[int]:
    L = session.L
    raw = text.encode("utf-8")
    buf = (L.llama_token * (len(raw) + 16))()
    n = L.llama_tokenize(session.vocab, raw, len(raw), buf, len(buf), False, True)
    if n < 0:
        raise FinetuneError("tokenization failed for a training example")
    return list(buf[:n])


def _encode_examples(
    session: _Session, examples: Sequence[tuple[str, str]], system_prompt: str | None
) -> list[_Example]:
    fmt = _session_formatter(session, system_prompt)
    out = []
    for question, answer in examples:
        prompt, full = fmt(question, answer)
        p_toks, f_toks = _tokenize(session, prompt), _tokenize(session, full)
        start = len(p_toks) if f_toks[: len(p_toks)] == p_toks else len(_tokenize(session, prompt.rstrip()))
        out.append(_Example(f_toks, start))
    return out


def _check_examples(examples: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
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


def _memory_check(base_model: Path, config: TrainConfig) -> tuple[str, list[Any], int]:
    """Architecture, target tensors and the estimate; raises FinetuneError when training cannot run."""
    from teachback.memory.lora import model_info, select_targets

    arch, meta, tensors = model_info(base_model)
    if arch not in TRAINABLE_ARCHITECTURES:
        raise FinetuneError(
            f"{base_model.name}: architecture {arch!r} is not supported for llama.cpp training "
            f"(supported: {', '.join(sorted(TRAINABLE_ARCHITECTURES))})"
        )
    targets = select_targets(tensors, tuple(config.targets), config.first_layer)
    if not targets:
        raise FinetuneError(f"{base_model.name}: no weights match the targets {list(config.targets)}")
    n_elements = 0
    for _name, shape, _t, _nb in tensors:
        n = 1
        for d in shape:
            n *= d
        n_elements += n

    def hp(key: str, default: int) -> int:
        v = meta.get(f"{arch}.{key}", default)
        return int(v[0] if isinstance(v, list) else v)

    n_embd = hp("embedding_length", 0)
    n_vocab = len(meta.get("tokenizer.ggml.tokens", [])) or hp("vocab_size", 32000)
    need = estimate_memory(
        weight_bytes=(
            base_model.stat().st_size
            if config.base_type == "model"
            else int(BYTES_PER_WEIGHT[config.base_type] * n_elements)
        ),
        n_adapter_params=adapter_params([(t.n_in, t.n_out) for t in targets], config.rank),
        n_ctx=config.n_ctx,
        n_layer=hp("block_count", 0),
        n_embd=n_embd,
        n_ff=hp("feed_forward_length", 4 * n_embd),
        n_head=hp("attention.head_count", 1),
        n_vocab=n_vocab,
    )
    avail = available_memory()
    if avail is not None and need > avail:
        raise FinetuneError(
            f"not enough memory: training {base_model.name} at rank {config.rank}, n_ctx {config.n_ctx} "
            f"needs about {need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB is available; "
            "lower --ctx or --rank, or free memory"
        )
    return arch, targets, need


def memory_needed(base_model: Path, config: TrainConfig) -> tuple[int, int | None]:
    """(bytes a training run with `config` needs at its peak, bytes available now or None if unknown).

    Raises FinetuneError when the architecture cannot train or the estimate exceeds what is available.
    """
    config.validate()
    _arch, _targets, need = _memory_check(Path(base_model), config)
    return need, available_memory()


def train_lora(
    base_model: Path,
    examples: list[tuple[str, str]],
    out: Path,
    config: TrainConfig | None = None,
    *,
    progress: Callable[[TrainProgress], None] | None = None,
    checkpoint_dir: Path | None = None,
    metadata: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a LoRA adapter for `base_model` on (question, answer) pairs and write it to `out`.

    `out` is replaced atomically at the end; if training fails or is interrupted it is left as it was.
    With `checkpoint_dir`, the adapter and the curves are saved after every epoch and a later call with
    the same model, data and settings resumes after the last finished epoch (AdamW's moments restart).
    `metadata` adds keys to the adapter file (e.g. runs, namespace); `read_adapter_metadata` returns them.
    """
    import numpy as np

    from teachback.memory import lora

    t_start = time.time()
    config = config or TrainConfig()
    config.validate()
    base_model = Path(base_model)
    out = Path(out)
    if not base_model.is_file():
        raise FinetuneError(f"{base_model}: base model not found")
    examples = _check_examples(examples)
    arch, targets, need = _memory_check(base_model, config)
    threads = _threads(config)
    report = progress or (lambda _p: None)

    base_sha = sha256_file(base_model)
    data_sha = data_sha256(examples)
    train_idx, val_idx = split_examples(examples, config.val_split, config.seed)
    report(
        TrainProgress(
            "prepare", 0, config.epochs, 0, 0, math.nan, 0.0, 0.0, 0.0, f"{config.base_type} training copy"
        )
    )
    from teachback.memory import llama_train as lt

    lt.libs()
    import llama_cpp._logger as llog

    amx_before = lt.amx_mode()
    # TEACHBACK_AMX=0 (or a CPU without AMX) leaves it off; "auto" extends it to the F32 (LoRA) operands
    amx = lt.amx_mode(lt.AMX_ALL if config.matmul == "auto" and amx_before else lt.AMX_OFF)

    prev_level = llog.logger.level
    llog.set_verbose(False)
    train_copy = training_copy(base_model, base_sha, threads, config.base_type)

    expected_names = {t.name + s for t in targets for s in (".lora_a", ".lora_b")}
    fingerprint = f"{base_sha[:16]}-{data_sha[:16]}-{config.fingerprint()}"
    ckpt_state: dict[str, Any] = {}
    if checkpoint_dir is not None:
        state_path = Path(checkpoint_dir) / "state.json"
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(state_path.read_text())
            if loaded.get("fingerprint") == fingerprint and (Path(checkpoint_dir) / "adapter.gguf").is_file():
                ckpt_state = loaded
    if ckpt_state and checkpoint_dir is not None:
        _meta, init_tensors = lora.read_adapter(Path(checkpoint_dir) / "adapter.gguf")
        if set(init_tensors) != expected_names:
            ckpt_state, init_tensors = {}, lora.init_adapter(targets, config.rank, config.seed)
    else:
        init_tensors = lora.init_adapter(targets, config.rank, config.seed)

    session: _Session | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="teachback-lora-") as tmpdir:
            init_path = lora.write_adapter(
                Path(tmpdir) / "init.gguf", init_tensors, architecture=arch, alpha=config.alpha
            )
            session = _Session(train_copy, config.n_ctx, threads)
            session.load_adapter(init_path)
        del init_tensors
        params = session.find_tensors(expected_names)

        encoded = _encode_examples(session, examples, config.system_prompt)
        train_ex = [encoded[i] for i in train_idx]
        val_ex = [encoded[i] for i in val_idx]
        truncated = sum(len(e.tokens) > config.n_ctx + 1 for e in train_ex)
        pad = session.L.llama_vocab_eos(session.vocab)

        pars = lt.OptimizerParams(
            lt.AdamWParams(config.learning_rate, 0.9, 0.999, 1e-8, config.weight_decay),
            lt.SGDParams(config.learning_rate, config.weight_decay),
        )
        session.start_training(params, pars)

        def val_loss() -> float:
            total, count = 0.0, 0
            for ex in val_ex:
                s, n = session.answer_loss(ex.tokens, ex.answer_start, pad)  # type: ignore[union-attr]
                total, count = total + s, count + n
            return total / count if count else math.nan

        train_curve: list[float] = list(ckpt_state.get("train_loss", []))
        val_curve = [math.nan if v is None else float(v) for v in ckpt_state.get("val_loss", [])]
        start_epoch = int(ckpt_state.get("epoch", 0))
        best_epoch = int(ckpt_state.get("best_epoch", 0))
        if not val_curve:
            val_curve.append(val_loss() if val_ex else math.nan)
            report(
                TrainProgress("val", 0, config.epochs, 0, 0, val_curve[0], 0.0, 0.0, 0.0, "before training")
            )
        best_tensors: dict[str, Any] | None = None
        best_val = min((v for v in val_curve[1:] if not math.isnan(v)), default=math.inf)

        # Learned tokens: the answer's only (the prompt stored as ~token, read but never a target) when the
        # build can skip a position's loss and config.loss_on says so; else every token.
        masked = config.loss_on == "answer" and session.libs.masked_labels
        sequences = [e.masked() if masked else e.tokens for e in train_ex]
        windows_per_epoch = len(epoch_windows(sequences, config, 0))
        total_steps = windows_per_epoch * config.epochs
        step_time = 0.0
        steps_done = 0
        stopped_early = False
        epochs_run = start_epoch
        for epoch in range(start_epoch, config.epochs):
            windows = epoch_windows(sequences, config, epoch)
            losses: list[float] = []
            for i, window in enumerate(windows):
                global_step = epoch * windows_per_epoch + i
                lr = lr_at(config, global_step, total_steps)
                pars.adamw.alpha = pars.sgd.alpha = lr
                t0 = time.perf_counter()
                losses.append(session.train_step(window))
                step_time += time.perf_counter() - t0
                steps_done += 1
                tps = steps_done * config.n_ctx / step_time if step_time else 0.0
                remaining = total_steps - global_step - 1
                report(
                    TrainProgress(
                        "train",
                        epoch + 1,
                        config.epochs,
                        i + 1,
                        len(windows),
                        float(np.mean(losses)),
                        lr,
                        tps,
                        remaining * config.n_ctx / tps if tps else 0.0,
                        step_loss=losses[-1],
                    )
                )
            train_curve.append(float(np.mean(losses)))
            epochs_run = epoch + 1
            v = val_loss() if val_ex else math.nan
            val_curve.append(v)
            report(
                TrainProgress("val", epoch + 1, config.epochs, len(windows), len(windows), v, 0.0, 0.0, 0.0)
            )
            improved = not math.isnan(v) and v < best_val
            if improved or math.isnan(v):
                best_val = v if improved else best_val
                best_epoch = epoch + 1
                if config.early_stop_patience is not None:
                    best_tensors = {n: lora.read_tensor(p) for n, p in params.items()}
            if checkpoint_dir is not None:
                _save_checkpoint(
                    Path(checkpoint_dir),
                    params,
                    arch,
                    config,
                    fingerprint,
                    {
                        "epoch": epoch + 1,
                        "train_loss": train_curve,
                        "val_loss": val_curve,
                        "best_epoch": best_epoch,
                    },
                )
            if (
                config.early_stop_patience is not None
                and epoch + 1 - best_epoch >= config.early_stop_patience
            ):
                stopped_early = epoch + 1 < config.epochs
                break
        if config.early_stop_patience is None or best_tensors is None:
            best_tensors = {n: lora.read_tensor(p) for n, p in params.items()}
            if config.early_stop_patience is None:
                best_epoch = epochs_run
        seconds = time.time() - t_start
        result = TrainResult(
            adapter=out,
            train_loss=train_curve,
            val_loss=val_curve,
            tokens_per_s=steps_done * config.n_ctx / step_time if step_time else 0.0,
            peak_rss_bytes=peak_rss_bytes(),
            seconds=seconds,
            base_sha256=base_sha,
            data_sha256=data_sha,
            n_train=len(train_ex),
            n_val=len(val_ex),
            windows_per_epoch=windows_per_epoch,
            epochs_run=epochs_run,
            best_epoch=best_epoch,
            stopped_early=stopped_early,
            resumed_from_epoch=start_epoch,
            truncated_examples=truncated,
            fast_backward=session.libs.fast_backward,
            matmul="amx-bf16" if amx == lt.AMX_ALL else "f32",
            loss_on="answer" if masked else "all",
        )
        result.metadata = {
            "base_model": base_model.name,
            "base_sha256": base_sha,
            "data_sha256": data_sha,
            "rank": config.rank,
            "targets": ",".join(config.targets),
            "n_ctx": config.n_ctx,
            "learning_rate": config.learning_rate,
            "matmul": result.matmul,
            "epochs": epochs_run,
            "best_epoch": best_epoch,
            "n_train": len(train_ex),
            "n_val": len(val_ex),
            "train_loss": train_curve,
            "val_loss": [None if math.isnan(v) else v for v in val_curve],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(metadata or {}),
        }
        lora.write_adapter(out, best_tensors, architecture=arch, alpha=config.alpha, metadata=result.metadata)
        result.peak_rss_bytes = peak_rss_bytes()
        return result
    finally:
        if session is not None:
            session.close()
        lt.amx_mode(amx_before)
        llog.logger.setLevel(prev_level)


def _save_checkpoint(
    directory: Path,
    params: dict[str, int],
    arch: str,
    config: TrainConfig,
    fingerprint: str,
    state: dict[str, Any],
) -> None:
    from teachback.memory import lora

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {n: lora.read_tensor(p) for n, p in params.items()}
    lora.write_adapter(
        directory / "adapter.gguf",
        tensors,
        architecture=arch,
        alpha=config.alpha,
        metadata={"checkpoint_epoch": state["epoch"]},
    )
    state = {
        **state,
        "fingerprint": fingerprint,
        "val_loss": [None if math.isnan(v) else v for v in state["val_loss"]],
    }
    atomic_write_text(directory / "state.json", json.dumps(state))
