"""The native module: every ctypes binding teachback makes to llama.cpp and ggml, checked when it loads.

llama-cpp-python builds llama.cpp's training API (llama_opt_*, ggml-opt) into its shared libraries but
does not bind it, so teachback binds it here, against exactly the build pyproject.toml pins (the one
place the pin is written; `PINNED_LLAMA_CPP` reads it back from the installed package, and
scripts/setup.sh from pyproject.toml). `libs()` refuses any other version. Beyond the functions of the
public headers, this relies on sizes and one offset of the pinned build, each checked by
`check_layout` when the libraries load, so a different layout is a one-line FinetuneError instead of
corrupted memory or a segfault:

- `GgmlTensor` mirrors `struct ggml_tensor` (ggml.h): 336 B, and `ggml_tensor_overhead()` must be that
  plus `GGML_OBJECT_SIZE` (32);
- `LlamaOptParams` / `OptimizerParams` mirror `struct llama_opt_params` (48 B) and
  `struct ggml_opt_optimizer_params` (28 B);
- `OPT_CTX_STATIC_OFFSET`: where the private `struct ggml_opt_context` (ggml-opt.cpp) keeps `ctx_static`,
  the context of the gradient accumulators, after three pointers. The pointer read there is also checked
  before ggml walks it (`opt_static_tensors`): it must point at readable memory that holds a plausible
  `struct ggml_context` (`GGML_CONTEXT_SIZE`, read through /proc/self/mem, which fails cleanly where a
  dereference would crash).

Here too: llama-cpp-python's own low-level module (`Libs.L`), which the training session
(train_session.py) calls through; the few ctypes pieces around those calls (an adapter attached, text
tokenized, a dataset's int32 view, a result's loss, a training copy quantized); copying an adapter's
tensor in and out (lora.py); and the ggml graph calls tests/test_training_kernel.py checks the kernels
with (`kernels()`).

Imported only for training: `libs()` loads the libraries on first use.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from teachback.errors import FinetuneError


def _pinned() -> str:
    """The llama-cpp-python version the installed teachback requires (pyproject.toml's pin), or ""."""
    import importlib.metadata
    import re

    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for requirement in importlib.metadata.requires("teachback") or []:
            found = re.fullmatch(r"llama-cpp-python(?:\[[^]]*\])?\s*==\s*([0-9][0-9A-Za-z.]*)", requirement)
            if found:
                return found.group(1)
    return ""


PINNED_LLAMA_CPP = _pinned()

GGML_TYPE_F32 = 0
GGML_TYPE_I32 = 26
GGML_OP_NONE = 0
GGML_TENSOR_FLAG_PARAM = 4
LLAMA_FTYPE_ALL_F32 = 0
LLAMA_FTYPE_MOSTLY_F16 = 1
OPTIMIZER_ADAMW = 0

c_p = ctypes.c_void_p


class GgmlTensor(ctypes.Structure):
    """The public `struct ggml_tensor` (GGML_MAX_DIMS=4, GGML_MAX_SRC=10, op_params 64 B, name 64 B)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", c_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", c_p * 10),
        ("view_src", c_p),
        ("view_offs", ctypes.c_size_t),
        ("data", c_p),
        ("name", ctypes.c_char * 64),
        ("extra", c_p),
        ("padding", ctypes.c_char * 8),
    ]


TensorP = ctypes.POINTER(GgmlTensor)


class AdamWParams(ctypes.Structure):
    _fields_ = [
        ("alpha", ctypes.c_float),
        ("beta1", ctypes.c_float),
        ("beta2", ctypes.c_float),
        ("eps", ctypes.c_float),
        ("wd", ctypes.c_float),
    ]


class SGDParams(ctypes.Structure):
    _fields_ = [("alpha", ctypes.c_float), ("wd", ctypes.c_float)]


class OptimizerParams(ctypes.Structure):
    """`struct ggml_opt_optimizer_params`; read by ggml at every optimizer step (so mutating it between
    steps is how a learning-rate schedule is applied with `ggml_opt_get_constant_optimizer_params`)."""

    _fields_ = [("adamw", AdamWParams), ("sgd", SGDParams)]


class LlamaOptParams(ctypes.Structure):
    """`struct llama_opt_params`."""

    _fields_ = [
        ("n_ctx_train", ctypes.c_uint32),
        ("param_filter", c_p),
        ("param_filter_ud", c_p),
        ("get_opt_pars", c_p),
        ("get_opt_pars_ud", c_p),
        ("optimizer_type", ctypes.c_int),
    ]


class GgmlInitParams(ctypes.Structure):
    """`struct ggml_init_params`, for `ggml_init` (the kernel tests' graphs)."""

    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", c_p), ("no_alloc", ctypes.c_bool)]


# bool (*llama_opt_param_filter)(const struct ggml_tensor * tensor, void * userdata)
PARAM_FILTER = ctypes.CFUNCTYPE(ctypes.c_bool, c_p, c_p)
# void (*ggml_opt_epoch_callback)(bool train, ggml_opt_context_t, ggml_opt_dataset_t, ggml_opt_result_t,
#                                 int64_t ibatch, int64_t ibatch_max, int64_t t_start_us)
EPOCH_CALLBACK = ctypes.CFUNCTYPE(
    None, ctypes.c_bool, c_p, c_p, c_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64
)
# struct ggml_opt_context (ggml-opt.cpp, private) begins with backend_sched, allocated_graph,
# allocated_graph_copy, ctx_static: the context that holds the gradient accumulators and AdamW moments.
OPT_CTX_STATIC_OFFSET = 3 * ctypes.sizeof(c_p)
# struct ggml_context (ggml.c, private): mem_size, mem_buffer, mem_buffer_owned, no_alloc, n_objects,
# objects_begin, objects_end; read only to check that a pointer is one before ggml walks it.
GGML_CONTEXT = struct.Struct("@NP??iPP")
GGML_CONTEXT_SIZE = GGML_CONTEXT.size

# What the pinned build measures on a 64-bit platform; `check_layout` compares the mirrors with it.
GGML_TENSOR_SIZE = 336
GGML_OBJECT_SIZE = 32
LAYOUT = {
    "sizeof(struct ggml_tensor)": GGML_TENSOR_SIZE,
    "ggml_tensor_overhead()": GGML_TENSOR_SIZE + GGML_OBJECT_SIZE,
    "sizeof(struct llama_opt_params)": 48,
    "sizeof(struct ggml_opt_optimizer_params)": 28,
    "offsetof(struct ggml_opt_context, ctx_static)": 24,
    "sizeof(struct ggml_context)": 40,
}


def measured_layout(ggml: Any) -> dict[str, int]:
    """What this module's mirrors measure, and what the loaded ggml reports, under `LAYOUT`'s names."""
    return {
        "sizeof(struct ggml_tensor)": ctypes.sizeof(GgmlTensor),
        "ggml_tensor_overhead()": int(ggml.ggml_tensor_overhead()),
        "sizeof(struct llama_opt_params)": ctypes.sizeof(LlamaOptParams),
        "sizeof(struct ggml_opt_optimizer_params)": ctypes.sizeof(OptimizerParams),
        "offsetof(struct ggml_opt_context, ctx_static)": OPT_CTX_STATIC_OFFSET,
        "sizeof(struct ggml_context)": GGML_CONTEXT_SIZE,
    }


def check_layout(measured: dict[str, int], expected: dict[str, int] = LAYOUT) -> None:
    """Raise FinetuneError, one line, when a size or offset differs from the pinned build's.

    >>> try:
    ...     check_layout({**LAYOUT, "sizeof(struct ggml_tensor)": 344})
    ... except FinetuneError as exc:
    ...     print(str(exc).split(": ", 1)[1].split(";")[0])
    sizeof(struct ggml_tensor) is 344, not 336
    """
    wrong = [
        f"{name} is {measured.get(name)}, not {want}"
        for name, want in expected.items()
        if measured.get(name) != want
    ]
    if wrong:
        raise FinetuneError(
            f"llama.cpp's structs do not match the layout teachback binds: {'; '.join(wrong)}; "
            f"fine-tuning needs llama-cpp-python=={PINNED_LLAMA_CPP or '(the version pyproject.toml pins)'}"
        )


@dataclass(frozen=True)
class Libs:
    """The loaded libraries with prototypes set, plus llama-cpp-python's own low-level module."""

    llama: Any  # ctypes.CDLL of libllama
    ggml: Any  # ctypes.CDLL of libggml-base
    L: Any  # llama_cpp.llama_cpp (the package's bindings, same library instance)
    get_constant_opt_pars: int  # address of ggml_opt_get_constant_optimizer_params
    libdir: str = ""
    # The patched libggml-cpu that libllama runs (with its `teachback_amx` switch); None on a stock build.
    cpu: Any = None
    # libllama skips negative labels while training (scripts/patches/llama-cpp-answer-loss.patch), so
    # the prompt's tokens can be left out of the loss; a stock build would write out of bounds.
    masked_labels: bool = False

    @property
    def fast_backward(self) -> bool:
        """Whether llama.cpp has the kernels of scripts/patches/ (scripts/setup.sh builds them); a stock
        build trains correctly too, about 2x slower (its backward pass is a rank-1 update loop)."""
        return self.cpu is not None


def _proto(lib: Any, name: str, argtypes: list[Any], restype: Any) -> None:
    fn = getattr(lib, name)
    fn.argtypes = argtypes
    fn.restype = restype


@cache
def libs() -> Libs:
    """Load and check the libraries once; raise FinetuneError when this build is not the pinned one."""
    if not PINNED_LLAMA_CPP:
        raise FinetuneError(
            "fine-tuning binds the llama-cpp-python that teachback pins, but teachback's installed "
            "requirements name none; install teachback (pip install -e .)"
        )
    try:
        import llama_cpp
        from llama_cpp import llama_cpp as L
    except ImportError as exc:  # pragma: no cover - llama-cpp-python is a dependency
        raise FinetuneError(f"fine-tuning needs llama-cpp-python=={PINNED_LLAMA_CPP}: {exc}") from exc
    version = getattr(llama_cpp, "__version__", "?")
    if version != PINNED_LLAMA_CPP:
        raise FinetuneError(
            f"fine-tuning binds llama.cpp's training API for llama-cpp-python=={PINNED_LLAMA_CPP}, "
            f"but {version} is installed; reinstall the pinned version"
        )
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    try:
        llama = ctypes.CDLL(os.path.join(libdir, "libllama.so"))
        ggml = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"))
    except OSError as exc:
        raise FinetuneError(f"cannot load llama.cpp's libraries from {libdir}: {exc}") from exc

    try:
        _proto(ggml, "ggml_tensor_overhead", [], ctypes.c_size_t)
        _proto(llama, "llama_opt_init", [c_p, c_p, LlamaOptParams], None)
        _proto(llama, "llama_opt_epoch", [c_p, c_p, c_p, c_p, ctypes.c_int64, c_p, c_p], None)
        _proto(ggml, "ggml_set_param", [c_p], None)
        _proto(ggml, "ggml_nbytes", [c_p], ctypes.c_size_t)
        _proto(ggml, "ggml_backend_tensor_get", [c_p, c_p, ctypes.c_size_t, ctypes.c_size_t], None)
        _proto(ggml, "ggml_backend_tensor_set", [c_p, c_p, ctypes.c_size_t, ctypes.c_size_t], None)
        _proto(ggml, "ggml_backend_tensor_memset", [c_p, ctypes.c_uint8] + [ctypes.c_size_t] * 2, None)
        _proto(ggml, "ggml_get_first_tensor", [c_p], c_p)
        _proto(ggml, "ggml_get_next_tensor", [c_p, c_p], c_p)
        _proto(ggml, "ggml_opt_dataset_init", [ctypes.c_int, ctypes.c_int] + [ctypes.c_int64] * 4, c_p)
        _proto(ggml, "ggml_opt_dataset_free", [c_p], None)
        _proto(ggml, "ggml_opt_dataset_data", [c_p], c_p)
        _proto(ggml, "ggml_opt_dataset_labels", [c_p], c_p)
        _proto(ggml, "ggml_get_data", [c_p], c_p)
        _proto(ggml, "ggml_opt_result_init", [], c_p)
        _proto(ggml, "ggml_opt_result_free", [c_p], None)
        _proto(ggml, "ggml_opt_result_reset", [c_p], None)
        _proto(ggml, "ggml_opt_result_ndata", [c_p, ctypes.POINTER(ctypes.c_int64)], None)
        _proto(
            ggml,
            "ggml_opt_result_loss",
            [c_p, ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double)],
            None,
        )
        get_const = ctypes.cast(ggml.ggml_opt_get_constant_optimizer_params, c_p).value
    except AttributeError as exc:
        raise FinetuneError(f"this llama.cpp build lacks its training API: {exc}") from exc

    check_layout(measured_layout(ggml))
    assert get_const is not None
    masked = bool(getattr(llama, "teachback_masked_labels", None)) and bool(llama.teachback_masked_labels())
    return Libs(
        llama=llama,
        ggml=ggml,
        L=L,
        get_constant_opt_pars=get_const,
        libdir=libdir,
        cpu=_patched_cpu(libdir),
        masked_labels=masked,
    )


def _patched_cpu(libdir: str) -> Any:
    """libggml-cpu when it has teachback's kernels (scripts/patches/), else None.

    The wheel holds separate copies under each name, and a copy loaded by another name is a separate
    instance with its own settings: this opens libggml-cpu.so.0, the one libllama is linked against."""
    try:
        cpu = ctypes.CDLL(os.path.join(libdir, "libggml-cpu.so.0"))
        if not cpu.teachback_out_prod_gemm():
            return None
        _proto(cpu, "teachback_amx", [ctypes.c_int], ctypes.c_int)
        return cpu
    except (OSError, AttributeError):
        return None


AMX_OFF, AMX_ALL = 0, 2  # and 1, the library's default (see amx_mode)


def amx_mode(mode: int = -1) -> int:
    """Set where llama.cpp uses Intel AMX tiles (BF16 products, F32 sums) and return the mode in effect.

    0: nowhere; 1 (the library's default): matmuls with BF16 or quantized weights; 2: F32 and F16 operands
    too (the LoRA tensors, attention, the gradients; the trainer sets it while it trains). A negative `mode`
    only asks.
    Always 0 on a CPU without AMX, under TEACHBACK_AMX=0 until set here, and on a stock build."""
    cpu = libs().cpu
    return int(cpu.teachback_amx(mode)) if cpu is not None else AMX_OFF


# ---- tensors ---------------------------------------------------------------------------------------------


def tensor(ptr: int) -> GgmlTensor:
    """The ggml tensor at `ptr` (a view on the C struct, not a copy)."""
    return ctypes.cast(ptr, TensorP).contents


def tensor_name(ptr: int) -> str:
    return tensor(ptr).name.decode("utf-8", "replace")


def tensor_get(ptr: int, into: Any) -> None:
    """Copy a ggml tensor's bytes into the contiguous numpy array `into` (its size in bytes)."""
    libs().ggml.ggml_backend_tensor_get(ptr, into.ctypes.data_as(c_p), 0, into.nbytes)


def tensor_set(ptr: int, values: Any) -> None:
    """Overwrite a ggml tensor's bytes with the contiguous numpy array `values`."""
    libs().ggml.ggml_backend_tensor_set(ptr, values.ctypes.data_as(c_p), 0, values.nbytes)


def eval_callback(fn: Callable[[int, bool, int], bool]) -> Any:
    """`fn` as a `ggml_backend_sched_eval_callback` (a context's `cb_eval`): (node, ask, userdata) -> bool.
    Keep the returned object alive while C may call it."""
    return libs().L.ggml_backend_sched_eval_callback(fn)


# ---- ggml-opt's private state ------------------------------------------------------------------------------


def _read(address: int, size: int) -> bytes | None:
    """`size` bytes of this process's memory at `address`, or None where they cannot be read (an unmapped
    address is an error from /proc/self/mem, where a dereference would be a segfault)."""
    if address <= 0:
        return None
    try:
        fd = os.open("/proc/self/mem", os.O_RDONLY)
    except OSError:  # pragma: no cover - not Linux
        return ctypes.string_at(address, size)
    try:
        data = os.pread(fd, size, address)
    except (OSError, OverflowError):
        return None
    finally:
        os.close(fd)
    return data if len(data) == size else None


def is_ggml_context(address: int) -> bool:
    """Whether `address` holds a plausible `struct ggml_context`: readable, its objects inside its buffer."""
    raw = _read(address, GGML_CONTEXT_SIZE)
    if raw is None:
        return False
    mem_size, mem_buffer, _owned, _no_alloc, n_objects, begin, end = GGML_CONTEXT.unpack(raw)
    if n_objects < 0 or (begin == 0) != (end == 0):
        return False
    if begin == 0:
        return True
    inside = mem_buffer <= begin <= end < mem_buffer + mem_size
    return inside and _read(begin, GGML_OBJECT_SIZE) is not None


def opt_static_tensors(opt_ctx: int) -> list[int]:
    """The tensors of ggml-opt's static context, in creation order (see `OPT_CTX_STATIC_OFFSET`).

    Raises FinetuneError when the pointer at that offset is not a ggml context (another layout)."""
    ggml = libs().ggml
    raw = _read(opt_ctx + OPT_CTX_STATIC_OFFSET, ctypes.sizeof(c_p))
    ctx_static = int.from_bytes(raw, "little") if raw is not None else -1
    out: list[int] = []
    if not ctx_static:
        return out
    if not is_ggml_context(ctx_static):
        raise FinetuneError(
            f"ggml-opt's optimizer context has no ggml context at offset {OPT_CTX_STATIC_OFFSET} "
            f"(ctx_static); fine-tuning needs llama-cpp-python=={PINNED_LLAMA_CPP}"
        )
    t = ggml.ggml_get_first_tensor(ctx_static)
    while t:
        out.append(t)
        t = ggml.ggml_get_next_tensor(ctx_static, t)
    return out


# ---- the calls of a training session that take ctypes arguments -------------------------------------------


def quantize(source: str, target: str, ftype: int, threads: int) -> int:
    """llama.cpp's `llama_model_quantize` of `source` into `target` as `ftype` (a llama_ftype, as
    finetune.BASE_TYPES names them); 0 on success."""
    L = libs().L
    params = L.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = threads
    return int(L.llama_model_quantize(source.encode(), target.encode(), ctypes.byref(params)))


def attach_adapter(ctx: Any, adapter: Any) -> int:
    """Attach one LoRA adapter at scale 1 to a context (`llama_set_adapters_lora`); 0 on success."""
    L = libs().L
    adapters = (L.llama_adapter_lora_p_ctypes * 1)(adapter)
    scales = (ctypes.c_float * 1)(1.0)
    return int(L.llama_set_adapters_lora(ctx, adapters, 1, scales))


def tokenize(vocab: Any, text: str) -> list[int] | None:
    """`text`'s tokens (special tokens parsed, no BOS added), or None when llama.cpp cannot tokenize it."""
    L = libs().L
    raw = text.encode("utf-8")
    buf = (L.llama_token * (len(raw) + 16))()
    n = L.llama_tokenize(vocab, raw, len(raw), buf, len(buf), False, True)
    return list(buf[:n]) if n >= 0 else None


def llama_opt_params(param_filter: Any, optimizer: OptimizerParams) -> LlamaOptParams:
    """`llama_opt_params` for AdamW with `param_filter` (a PARAM_FILTER) and the optimizer parameters ggml
    re-reads at every step (keep both alive while training)."""
    return LlamaOptParams(
        0,
        ctypes.cast(param_filter, c_p),
        None,
        libs().get_constant_opt_pars,
        ctypes.cast(ctypes.pointer(optimizer), c_p),
        OPTIMIZER_ADAMW,
    )


def int32_view(ptr: int, n: int) -> Any:
    """A numpy view of `n` int32 values at `ptr` (a dataset's data or labels)."""
    import numpy as np

    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_int32)), (n,))


def result_loss(result: Any) -> float:
    """The mean loss a `ggml_opt_result` holds."""
    loss, unc = ctypes.c_double(), ctypes.c_double()
    libs().ggml.ggml_opt_result_loss(result, ctypes.byref(loss), ctypes.byref(unc))
    return float(loss.value)


# ---- the graph calls the kernel tests build with -------------------------------------------------------


@dataclass(frozen=True)
class Kernels:
    """libggml-base and the libggml-cpu that libllama runs, with the graph calls tests/test_training_kernel.py
    checks the matmul kernels through (`base.ggml_mul_mat`, `cpu.ggml_graph_compute_with_ctx`, ...)."""

    base: Any
    cpu: Any


@cache
def kernels() -> Kernels:
    """The ggml graph API, bound once, on the checked libraries of `libs()`."""
    lib = libs()
    base = lib.ggml
    try:
        # .so.0: the instance libllama runs (the other names are separate copies with their own AMX mode)
        cpu = ctypes.CDLL(os.path.join(lib.libdir, "libggml-cpu.so.0"))
    except OSError as exc:
        raise FinetuneError(f"cannot load llama.cpp's CPU backend from {lib.libdir}: {exc}") from exc
    i64, size = ctypes.c_int64, ctypes.c_size_t
    try:
        calls: list[tuple[Any, str, list[Any], Any]] = [
            (base, "ggml_init", [GgmlInitParams], c_p),
            (base, "ggml_free", [c_p], None),
            (base, "ggml_new_tensor_2d", [c_p, ctypes.c_int, i64, i64], c_p),
            (base, "ggml_new_tensor_3d", [c_p, ctypes.c_int, i64, i64, i64], c_p),
            (base, "ggml_view_2d", [c_p, c_p, i64, i64, size, size], c_p),
            (base, "ggml_view_3d", [c_p, c_p, i64, i64, i64, size, size, size], c_p),
            (base, "ggml_transpose", [c_p, c_p], c_p),
            (base, "ggml_out_prod", [c_p, c_p, c_p], c_p),
            (base, "ggml_mul_mat", [c_p, c_p, c_p], c_p),
            (base, "ggml_cpy", [c_p, c_p, c_p], c_p),
            (base, "ggml_new_graph", [c_p], c_p),
            (base, "ggml_build_forward_expand", [c_p, c_p], None),
            (base, "ggml_quantize_chunk", [ctypes.c_int, c_p, c_p, i64, i64, i64, c_p], size),
            (cpu, "ggml_graph_compute_with_ctx", [c_p, c_p, ctypes.c_int], ctypes.c_int),
            (cpu, "teachback_amx", [ctypes.c_int], ctypes.c_int),
        ]
        for target, name, args, res in calls:
            _proto(target, name, args, res)
    except AttributeError as exc:
        raise FinetuneError(f"this llama.cpp build lacks a ggml graph call: {exc}") from exc
    return Kernels(base=base, cpu=cpu)


def floats_at(ptr: int, n: int) -> Any:
    """A numpy copy of `n` float32 values at `ptr` (a computed tensor's data)."""
    import numpy as np

    return np.array((ctypes.c_float * n).from_address(ptr), dtype=np.float32)


def copy_into(ptr: int, values: Any) -> None:
    """Copy the contiguous numpy array `values` to `ptr` (a tensor's data in a CPU context)."""
    ctypes.memmove(ptr, values.ctypes.data, values.nbytes)
