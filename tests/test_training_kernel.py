"""ggml's matmuls of a training step, checked against numpy in the built library.

scripts/setup.sh builds llama.cpp with scripts/patches/llama-cpp-training-gemm.patch: OUT_PROD (the
matmul backward) becomes a blocked GEMM, and the F32 forward MUL_MAT over a batch of tokens a packed GEMM
on the same register tile. These tests build tiny ggml graphs through the calls memory/native.py binds
(`native.kernels()`) and compare both ops with numpy in each layout training produces: the weight gradient
(contiguous operands), the input gradient (a transposed gradient), K/V views with strided rows,
grouped-query broadcasting, F16 and Q8_0 weights (dequantized while packing, in both ops), and forward
batches around the 32-token threshold. Shapes cross the kernels' block, panel and tile edges on purpose.

On CPUs with Intel AMX the patch also has tile kernels (BF16 products, F32 sums). The tests above run with
them off (`teachback_amx(0)`); the `amx` tests check them against numpy on the BF16-rounded operands, tight
enough that a wrong layout, a missed block or an F32 operand left unrounded fails; elsewhere they skip.
"""

from __future__ import annotations

import numpy as np
import pytest

from teachback.memory import native

GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q4_1, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K = 0, 1, 3, 8, 12
GGML_TYPE_BF16 = 30


class Ggml:
    """A ggml context for these tests' graphs, on the calls native.py binds (`native.kernels()`)."""

    def __init__(self) -> None:
        bound = native.kernels()
        self.base, self.cpu = bound.base, bound.cpu
        self.ctx = self.base.ggml_init(native.GgmlInitParams(256 << 20, None, False))
        assert self.ctx

    def close(self) -> None:
        self.base.ggml_free(self.ctx)

    def amx(self, mode: int = -1) -> int:
        """Set the AMX mode (0 off, 1 BF16/quantized weights, 2 F32 operands too); the mode in effect."""
        return int(self.cpu.teachback_amx(mode))

    def tensor(self, values: np.ndarray, type_: int = GGML_TYPE_F32) -> int:
        """A ggml tensor holding `values` (numpy shape (ne2, ne1, ne0) or (ne1, ne0)), stored as `type_`."""
        v = np.ascontiguousarray(values, dtype=np.float32)
        ne = v.shape[::-1]
        if len(ne) == 2:
            t = self.base.ggml_new_tensor_2d(self.ctx, type_, *ne)
        else:
            t = self.base.ggml_new_tensor_3d(self.ctx, type_, *ne)
        dst = self.base.ggml_get_data(t)
        if type_ == GGML_TYPE_F32:
            native.copy_into(dst, v)
        else:
            rows = v.size // ne[0]
            self.base.ggml_quantize_chunk(type_, v.ctypes.data, dst, 0, rows, ne[0], None)
        return t

    def compute(self, out: int, threads: int, shape: tuple[int, ...]) -> np.ndarray:
        graph = self.base.ggml_new_graph(self.ctx)
        self.base.ggml_build_forward_expand(graph, out)
        assert self.cpu.ggml_graph_compute_with_ctx(self.ctx, graph, threads) == 0
        n = int(np.prod(shape))
        return native.floats_at(self.base.ggml_get_data(out), n).reshape(shape)

    def as_f32(self, t: int, shape: tuple[int, ...]) -> np.ndarray:
        """The values a (quantized) tensor really holds, dequantized by ggml itself."""
        f = self.base.ggml_new_tensor_2d(self.ctx, GGML_TYPE_F32, shape[1], shape[0])
        return self.compute(self.base.ggml_cpy(self.ctx, t, f), 1, shape)


@pytest.fixture
def g():
    native.libs()  # the pinned build, checked
    ggml = Ggml()
    before = ggml.amx()
    ggml.amx(0)  # the F32 kernels; the amx tests below turn the tiles on
    yield ggml
    ggml.amx(before)
    ggml.close()


def ref_out_prod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """numpy OUT_PROD: a (G0, K, N) and b (G, K, M) (ggml order reversed) -> (G, M, N), a broadcast over G."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    rep = b.shape[0] // a.shape[0]
    return np.einsum("gkn,gkm->gmn", np.repeat(a, rep, axis=0), b)


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)


RNG = np.random.default_rng(7)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("n", "k", "m"), [(37, 300, 19), (64, 128, 48), (32, 577, 130), (1, 5, 1)])
def test_weight_gradient_layout(g, threads, n, k, m):
    """Both operands contiguous: the gradient of a LoRA matrix (n = rank 32 is the common case)."""
    a = RNG.standard_normal((k, n)).astype(np.float32)
    b = RNG.standard_normal((k, m)).astype(np.float32)
    out = g.base.ggml_out_prod(g.ctx, g.tensor(a), g.tensor(b))
    assert_close(g.compute(out, threads, (m, n)), ref_out_prod(a[None], b[None])[0])


@pytest.mark.parametrize("threads", [1, 2])
def test_input_gradient_layout_with_a_transposed_gradient(g, threads):
    """dx = out_prod(W, transpose(dy)): src1 is a transposed view, so its rows are k-contiguous."""
    n, k, m = 72, 260, 33
    w = RNG.standard_normal((k, n)).astype(np.float32)
    dy = RNG.standard_normal((m, k)).astype(np.float32)  # ggml ne (k, m); transposed: ne (m, k)
    out = g.base.ggml_out_prod(g.ctx, g.tensor(w), g.base.ggml_transpose(g.ctx, g.tensor(dy)))
    assert_close(g.compute(out, threads, (m, n)), ref_out_prod(w[None], dy.T[None])[0])


def test_strided_rows_of_a_view(g):
    """src0 a view whose rows are further apart than its width, as K and V read from the cache."""
    n, pad, k, m = 48, 16, 150, 20
    base = RNG.standard_normal((k, n + pad)).astype(np.float32)
    view = g.base.ggml_view_2d(g.ctx, g.tensor(base), n, k, (n + pad) * 4, 0)
    b = RNG.standard_normal((k, m)).astype(np.float32)
    out = g.base.ggml_out_prod(g.ctx, view, g.tensor(b))
    assert_close(g.compute(out, 2, (m, n)), ref_out_prod(base[None, :, :n], b[None])[0])


def test_grouped_query_broadcast(g):
    """3-D operands where src0 has fewer matrices than src1 (grouped-query attention)."""
    a = RNG.standard_normal((2, 40, 16)).astype(np.float32)
    b = RNG.standard_normal((6, 40, 24)).astype(np.float32)
    out = g.base.ggml_out_prod(g.ctx, g.tensor(a), g.tensor(b))
    assert_close(g.compute(out, 2, (6, 24, 16)), ref_out_prod(a, b))


@pytest.mark.parametrize(
    "type_", [GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_1, GGML_TYPE_Q4_K]
)
def test_half_and_quantized_weights(g, type_):
    """F16 and quantized src0: the weights of a training copy kept smaller than F32, or the student's own."""
    n, k, m = 256, 200, 40
    w = RNG.standard_normal((k, n)).astype(np.float32)
    wt = g.tensor(w, type_)
    held = g.as_f32(wt, (k, n))
    assert not np.array_equal(held, w) and np.allclose(held, w, atol=0.6)  # really stored as type_
    dy = RNG.standard_normal((m, k)).astype(np.float32)
    out = g.base.ggml_out_prod(g.ctx, wt, g.base.ggml_transpose(g.ctx, g.tensor(dy)))
    assert_close(g.compute(out, 2, (m, n)), ref_out_prod(held[None], dy.T[None])[0])


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    ("k", "n", "m"),
    [(576, 192, 256), (300, 100, 37), (32, 96, 33), (128, 48, 32), (64, 200, 31), (40, 20, 64)],
)
def test_forward_matmul(g, threads, k, n, m):
    """dst (m, n) = X (m, k) @ W (n, k)^T: whole and partial panels, k blocks, batches of 31 (stock path)
    and more, and weights narrower than a panel (stock path)."""
    w = RNG.standard_normal((n, k)).astype(np.float32)
    x = RNG.standard_normal((m, k)).astype(np.float32)
    out = g.base.ggml_mul_mat(g.ctx, g.tensor(w), g.tensor(x))
    want = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    assert_close(g.compute(out, threads, (m, n)), want)


@pytest.mark.parametrize("type_", [GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_1])
@pytest.mark.parametrize(("k", "n", "m"), [(768, 192, 64), (512, 100, 40)])
def test_forward_matmul_with_half_and_quantized_weights(g, type_, k, n, m):
    """F16 and quantized weights are dequantized while packing; the activations stay F32, so the result
    is the dequantized weights' exact product (the stock path quantizes the activations to 8 bits and
    misses by ~1e-2). K-quants keep upstream's tiled kernel, which runs before this one."""
    w = RNG.standard_normal((n, k)).astype(np.float32)
    wt = g.tensor(w, type_)
    held = g.as_f32(wt, (n, k))
    x = RNG.standard_normal((m, k)).astype(np.float32)
    out = g.base.ggml_mul_mat(g.ctx, wt, g.tensor(x))
    want = np.asarray(x, np.float64) @ np.asarray(held, np.float64).T
    assert_close(g.compute(out, 2, (m, n)), want)


def test_forward_matmul_reads_strided_token_rows(g):
    """Activations whose rows are a view with a wider stride than their width."""
    k, pad, n, m = 96, 32, 144, 40
    w = RNG.standard_normal((n, k)).astype(np.float32)
    xb = RNG.standard_normal((m, k + pad)).astype(np.float32)
    x = g.base.ggml_view_2d(g.ctx, g.tensor(xb), k, m, (k + pad) * 4, 0)
    out = g.base.ggml_mul_mat(g.ctx, g.tensor(w), x)
    want = np.asarray(xb[:, :k], np.float64) @ np.asarray(w, np.float64).T
    assert_close(g.compute(out, 2, (m, n)), want)


def test_setup_built_the_gemm_kernel():
    """scripts/setup.sh applies scripts/patches/ to the llama.cpp it builds (a stock one trains 2x slower)."""
    assert native.libs().fast_backward, (
        "llama-cpp-python was built without scripts/patches/llama-cpp-training-gemm.patch; "
        "remove ~/.cache/teachback/wheels and run scripts/setup.sh"
    )


# ---- the AMX tile kernels (BF16 products, F32 sums) ------------------------------------------------------


def bf16(x: np.ndarray) -> np.ndarray:
    """x rounded to BF16 (to nearest, ties to even, as the kernels round), as float64."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


@pytest.fixture
def amx(g):
    if g.amx(1) != 1:
        pytest.skip("this CPU has no AMX-BF16 tiles (or the kernel does not grant them)")
    return g


def test_bf16_rounding_reference():
    """The reference rounding itself: ties go to even, and the result keeps 8 significant bits."""
    x = np.array([1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-9, -2.5, 3.14159], dtype=np.float32)
    np.testing.assert_array_equal(bf16(x), [1.0, 1.0 + 2**-6, 1.0, -2.5, 3.140625])


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("type_", [GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_1])
@pytest.mark.parametrize(("k", "n", "m"), [(576, 192, 256), (320, 100, 37), (64, 40, 70)])
def test_amx_forward_matmul(amx, threads, type_, k, n, m):
    """BF16 and quantized weights on the tiles: whole and partial 32-blocks of tokens and columns, weights
    read in place (BF16, k a multiple of 32) or converted first, and fewer panels than threads."""
    w = RNG.standard_normal((n, k)).astype(np.float32)
    wt = amx.tensor(w, type_)
    held = amx.as_f32(wt, (n, k))
    x = RNG.standard_normal((m, k)).astype(np.float32)
    out = amx.base.ggml_mul_mat(amx.ctx, wt, amx.tensor(x))
    got = amx.compute(out, threads, (m, n))
    assert_close(got, bf16(x) @ bf16(held).T)
    exact = np.asarray(x, np.float64) @ np.asarray(held, np.float64).T
    assert np.abs(got - exact).max() > 1e-3  # really rounded: the F32 kernel would match `exact`


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("type_", "n", "k", "m"),
    [
        (GGML_TYPE_BF16, 576, 256, 256),
        (GGML_TYPE_Q8_0, 576, 256, 256),
        (GGML_TYPE_BF16, 100, 2100, 45),
        (GGML_TYPE_Q8_0, 160, 2100, 45),
        (GGML_TYPE_BF16, 64, 70, 32),
    ],
)
def test_amx_input_gradient(amx, threads, type_, n, k, m):
    """dx = out_prod(W, transpose(dy)) with BF16/quantized W: k past one 2048 block (the second block adds
    onto the first), k not a multiple of 32, partial row and column blocks (rows of Q8_0 are whole blocks)."""
    w = RNG.standard_normal((k, n)).astype(np.float32)
    wt = amx.tensor(w, type_)
    held = amx.as_f32(wt, (k, n))
    dy = RNG.standard_normal((m, k)).astype(np.float32)
    out = amx.base.ggml_out_prod(amx.ctx, wt, amx.base.ggml_transpose(amx.ctx, amx.tensor(dy)))
    assert_close(amx.compute(out, threads, (m, n)), bf16(dy) @ bf16(held))


def test_amx_mode_1_leaves_f32_operands_exact_and_mode_2_rounds_them(amx):
    """Mode 1 (the library's default) keeps F32 weights on the F32 kernels; mode 2 (training) rounds them."""
    k, n, m = 256, 64, 48
    w = RNG.standard_normal((n, k)).astype(np.float32)
    x = RNG.standard_normal((m, k)).astype(np.float32)
    exact = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    out = amx.base.ggml_mul_mat(amx.ctx, amx.tensor(w), amx.tensor(x))
    assert_close(amx.compute(out, 2, (m, n)), exact)
    assert amx.amx(2) == 2
    got = amx.compute(out, 2, (m, n))
    assert_close(got, bf16(x) @ bf16(w).T)
    assert np.abs(got - exact).max() > 1e-3


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("k", "n", "m"), [(576, 32, 256), (32, 576, 256), (300, 33, 40)])
def test_amx_lora_shapes_in_mode_2(amx, threads, k, n, m):
    """The LoRA matmuls of a training step, F32 on both sides: x @ A (n = rank 32: a single panel, so
    threads split the rows) and (xA) @ B (k = rank 32)."""
    assert amx.amx(2) == 2
    w = RNG.standard_normal((n, k)).astype(np.float32)
    x = RNG.standard_normal((m, k)).astype(np.float32)
    out = amx.base.ggml_mul_mat(amx.ctx, amx.tensor(w), amx.tensor(x))
    assert_close(amx.compute(out, threads, (m, n)), bf16(x) @ bf16(w).T)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("n", "k", "m"), [(32, 256, 576), (576, 256, 32), (40, 100, 50)])
def test_amx_weight_gradient_in_mode_2(amx, threads, n, k, m):
    """A LoRA matrix's gradient: out_prod of two contiguous F32 operands (src1's rows strided over k)."""
    assert amx.amx(2) == 2
    a = RNG.standard_normal((k, n)).astype(np.float32)
    b = RNG.standard_normal((k, m)).astype(np.float32)
    out = amx.base.ggml_out_prod(amx.ctx, amx.tensor(a), amx.tensor(b))
    assert_close(amx.compute(out, threads, (m, n)), bf16(b).T @ bf16(a))


def test_amx_off_is_the_f32_kernel(amx):
    """Mode 0 turns the tiles off: a Q8_0 matmul is the dequantized weights' exact product again."""
    k, n, m = 256, 64, 64
    w = RNG.standard_normal((n, k)).astype(np.float32)
    wt = amx.tensor(w, GGML_TYPE_Q8_0)
    held = amx.as_f32(wt, (n, k))
    x = RNG.standard_normal((m, k)).astype(np.float32)
    out = amx.base.ggml_mul_mat(amx.ctx, wt, amx.tensor(x))
    assert amx.amx(0) == 0
    assert_close(amx.compute(out, 2, (m, n)), np.asarray(x, np.float64) @ np.asarray(held, np.float64).T)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_amx_attention_batches_in_mode_2(amx, threads):
    """Attention's matmuls in training: batches of heads with grouped-query broadcast (3 K/V heads serve 9
    query heads), rows read through a strided view, as KQ = K^T Q reads the K cache."""
    assert amx.amx(2) == 2
    d, t, kv, heads = 64, 96, 3, 9
    kb = RNG.standard_normal((t, kv * d)).astype(np.float32)  # rows of all K/V heads side by side
    k = np.stack([kb[:, h * d : (h + 1) * d] for h in range(kv)])  # (kv, t, d)
    kview = amx.base.ggml_view_3d(amx.ctx, amx.tensor(kb), d, t, kv, kv * d * 4, d * 4, 0)
    q = RNG.standard_normal((heads, t, d)).astype(np.float32)
    out = amx.base.ggml_mul_mat(amx.ctx, kview, amx.tensor(q))
    want = np.einsum("gmk,gnk->gmn", bf16(q), np.repeat(bf16(k), heads // kv, axis=0))
    assert_close(amx.compute(out, threads, (heads, t, t)), want)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("type_", "groups"), [(GGML_TYPE_F32, 3), (GGML_TYPE_F16, 9)])
def test_amx_batched_out_prod_in_mode_2(amx, threads, type_, groups):
    """A batch of out_prods (the gradients of attention's matmuls), F32 with src0 broadcast or F16 (which
    ggml only runs unbroadcast)."""
    assert amx.amx(2) == 2
    a = RNG.standard_normal((groups, 80, 64)).astype(np.float32)
    b = RNG.standard_normal((9, 80, 40)).astype(np.float32)
    at = amx.tensor(a, type_)
    held = a if type_ == GGML_TYPE_F32 else a.astype(np.float16).astype(np.float32)
    out = amx.base.ggml_out_prod(amx.ctx, at, amx.tensor(b))
    assert_close(amx.compute(out, threads, (9, 40, 64)), ref_out_prod(bf16(held), bf16(b)))
