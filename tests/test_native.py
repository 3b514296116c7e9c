"""The native module's checks: the pin read from one place, and every size and offset it relies on
checked when the libraries load, a mismatch a one-line FinetuneError instead of a segfault."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from teachback.errors import FinetuneError
from teachback.memory import native

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def test_the_pin_is_pyprojects_and_the_installed_build() -> None:
    import llama_cpp

    requirements = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"llama-cpp-python[server]=={native.PINNED_LLAMA_CPP}" in requirements
    assert llama_cpp.__version__ == native.PINNED_LLAMA_CPP


def test_another_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "__version__", "0.0.1")
    with pytest.raises(FinetuneError, match=r"but 0\.0\.1 is installed"):
        native.libs.__wrapped__()  # type: ignore[attr-defined]  # the uncached load


def test_the_pinned_build_has_the_layout_the_mirrors_bind() -> None:
    measured = native.measured_layout(native.libs().ggml)
    assert measured == native.LAYOUT
    native.check_layout(measured)


def one_line_error(measured: dict[str, int]) -> str:
    with pytest.raises(FinetuneError) as raised:
        native.check_layout(measured)
    message = str(raised.value)
    assert "\n" not in message and f"llama-cpp-python=={native.PINNED_LLAMA_CPP}" in message
    return message


def test_a_wrong_offset_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "OPT_CTX_STATIC_OFFSET", 4 * ctypes.sizeof(ctypes.c_void_p))
    message = one_line_error(native.measured_layout(native.libs().ggml))
    assert "offsetof(struct ggml_opt_context, ctx_static) is 32, not 24" in message


def test_a_wrong_struct_size_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Shorter(ctypes.Structure):  # the mirror of a struct ggml_tensor without its padding
        _fields_ = [f for f in native.GgmlTensor._fields_ if f[0] != "padding"]

    monkeypatch.setattr(native, "GgmlTensor", Shorter)
    message = one_line_error(native.measured_layout(native.libs().ggml))
    assert "sizeof(struct ggml_tensor) is 328, not 336" in message
    # what ggml itself reports is checked too: a build whose tensors are larger
    message = one_line_error({**native.LAYOUT, "ggml_tensor_overhead()": 376})
    assert "ggml_tensor_overhead() is 376, not 368" in message


def test_a_pointer_at_the_offset_that_is_no_ggml_context_is_an_error_not_a_segfault() -> None:
    """What `opt_static_tensors` reads at OPT_CTX_STATIC_OFFSET of ggml-opt's context is checked before
    ggml walks it: an unmapped address or another kind of object is a FinetuneError."""
    bound = native.kernels()
    ctx = bound.base.ggml_init(native.GgmlInitParams(1 << 20, None, False))
    try:
        tensors = [bound.base.ggml_new_tensor_2d(ctx, native.GGML_TYPE_F32, 4, 4) for _ in range(2)]
        fields = (ctypes.c_void_p * 8)()  # stands in for struct ggml_opt_context
        slot = native.OPT_CTX_STATIC_OFFSET // ctypes.sizeof(ctypes.c_void_p)
        fields[slot] = ctx
        assert native.opt_static_tensors(ctypes.addressof(fields)) == tensors
        fields[slot] = None
        assert native.opt_static_tensors(ctypes.addressof(fields)) == []
        for wrong in (8, tensors[0], ctypes.addressof(fields)):  # unmapped, a tensor, these fields
            fields[slot] = wrong
            with pytest.raises(FinetuneError, match="no ggml context at offset 24"):
                native.opt_static_tensors(ctypes.addressof(fields))
    finally:
        bound.base.ggml_free(ctx)
