"""Fine-tune the student: train a LoRA adapter inside llama.cpp on accepted question/answer turns.

    result = train_lora(base_model, [(question, answer), ...], out=Path("adapter.gguf"), config=TrainConfig())
    Llama(model_path=base_model, lora_path=result.adapter)   # the original quantized model + adapter

This module holds the settings (`TrainConfig`), the progress reports and the result, the memory estimate,
and the loop (`train_lora`). The turns become token windows in train_data.py (importable from here too:
`split_examples`, `pack_windows`, `epoch_windows`, `chat_formatter`, `data_sha256`); the model, the
adapter and the optimizer live in llama.cpp through train_session.py; every ctypes binding is in
native.py, checked when it loads; the adapter's files are lora.py's.

How (ARCHITECTURE.md, "Fine-tuning"):
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
from teachback.memory.train_data import (
    chat_formatter,
    check_examples,
    data_sha256,
    encode_examples,
    epoch_windows,
    pack_windows,
    split_examples,
)

__all__ = [
    "BASE_TYPES",
    "DEFAULT_TARGETS",
    "MATMULS",
    "TrainConfig",
    "TrainProgress",
    "TrainResult",
    "adapter_params",
    "available_memory",
    "chat_formatter",
    "data_sha256",
    "epoch_windows",
    "estimate_memory",
    "lr_at",
    "memory_needed",
    "pack_windows",
    "sha256_file",
    "split_examples",
    "train_lora",
    "training_copy",
]

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
    from teachback.memory import native

    if base_type == "model":
        return base_model
    target = cache_dir() / base_type / f"{base_sha}.gguf"
    if target.exists():
        return target
    with atomic_path(target) as tmp:
        rc = native.quantize(str(base_model), str(tmp), BASE_TYPES[base_type], threads)
        if rc != 0 or not tmp.exists():
            raise FinetuneError(
                f"{base_model}: llama.cpp could not make a {base_type.upper()} copy for training (code {rc})"
            )
    return target


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
    examples = check_examples(examples)
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
    from teachback.memory import native
    from teachback.memory.train_session import Session

    native.libs()
    import llama_cpp._logger as llog

    amx_before = native.amx_mode()
    # TEACHBACK_AMX=0 (or a CPU without AMX) leaves it off; "auto" extends it to the F32 (LoRA) operands
    amx = native.amx_mode(native.AMX_ALL if config.matmul == "auto" and amx_before else native.AMX_OFF)

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

    session: Session | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="teachback-lora-") as tmpdir:
            init_path = lora.write_adapter(
                Path(tmpdir) / "init.gguf", init_tensors, architecture=arch, alpha=config.alpha
            )
            session = Session(train_copy, config.n_ctx, threads)
            session.load_adapter(init_path)
        del init_tensors
        params = session.find_tensors(expected_names)

        encoded = encode_examples(session, examples, config.system_prompt)
        train_ex = [encoded[i] for i in train_idx]
        val_ex = [encoded[i] for i in val_idx]
        truncated = sum(len(e.tokens) > config.n_ctx + 1 for e in train_ex)
        pad = session.eos

        pars = native.OptimizerParams(
            native.AdamWParams(config.learning_rate, 0.9, 0.999, 1e-8, config.weight_decay),
            native.SGDParams(config.learning_rate, config.weight_decay),
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
            matmul="amx-bf16" if amx == native.AMX_ALL else "f32",
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
        native.amx_mode(amx_before)
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
