"""ctypes bindings to llama.cpp's training API (llama_opt_*) and the bits of ggml it needs.

llama-cpp-python builds these functions into its shared libraries but does not bind them, so teachback
binds them here against exactly the pinned build (`llama-cpp-python==0.3.36`). Two things are only
correct for that build and are checked on load, so a different build fails with a clear message
instead of corrupting memory:

- `GgmlTensor` mirrors the public `struct ggml_tensor` (ggml.h); its size must equal
  `ggml_tensor_overhead() - GGML_OBJECT_SIZE` (336 + 32 on 64-bit builds).
- `LlamaOptParams` / `OptimizerParams` mirror `struct llama_opt_params` / `ggml_opt_optimizer_params`.

Imported only for training (it loads numpy-free ctypes state and the llama_cpp package).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from functools import cache
from typing import Any

from teachback.errors import FinetuneError

PINNED_LLAMA_CPP = "0.3.36"
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
GGML_TENSOR_SIZE = 336
GGML_OBJECT_SIZE = 32


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


def opt_static_tensors(opt_ctx: int) -> list[int]:
    """The tensors of ggml-opt's static context, in creation order (see `OPT_CTX_STATIC_OFFSET`)."""
    ggml = libs().ggml
    ctx_static = c_p.from_address(opt_ctx + OPT_CTX_STATIC_OFFSET).value
    out: list[int] = []
    if not ctx_static:
        return out
    t = ggml.ggml_get_first_tensor(ctx_static)
    while t:
        out.append(t)
        t = ggml.ggml_get_next_tensor(ctx_static, t)
    return out


@dataclass(frozen=True)
class Libs:
    """The loaded libraries with prototypes set, plus llama-cpp-python's own low-level module."""

    llama: Any  # ctypes.CDLL of libllama
    ggml: Any  # ctypes.CDLL of libggml-base
    L: Any  # llama_cpp.llama_cpp (the package's bindings, same library instance)
    get_constant_opt_pars: int  # address of ggml_opt_get_constant_optimizer_params
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

    overhead = ggml.ggml_tensor_overhead()
    if ctypes.sizeof(GgmlTensor) != GGML_TENSOR_SIZE or overhead != GGML_TENSOR_SIZE + GGML_OBJECT_SIZE:
        raise FinetuneError(
            f"struct ggml_tensor does not match this build (mirror {ctypes.sizeof(GgmlTensor)} B, "
            f"ggml_tensor_overhead {overhead} B); fine-tuning needs llama-cpp-python=={PINNED_LLAMA_CPP}"
        )
    assert get_const is not None
    masked = bool(getattr(llama, "teachback_masked_labels", None)) and bool(llama.teachback_masked_labels())
    return Libs(
        llama=llama,
        ggml=ggml,
        L=L,
        get_constant_opt_pars=get_const,
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


def tensor(ptr: int) -> GgmlTensor:
    """The ggml tensor at `ptr` (a view on the C struct, not a copy)."""
    return ctypes.cast(ptr, TensorP).contents


def tensor_name(ptr: int) -> str:
    return tensor(ptr).name.decode("utf-8", "replace")
