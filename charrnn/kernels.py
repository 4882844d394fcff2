"""Numba kernels of the vanilla RNN: loss and gradients over a (batch, time) window.

    h_t = tanh(x_t U + h_{t-1} W + b_h),   p_t = softmax(h_t V + b_y)

How the work is laid out (each choice measured; see bench/bench_train.py):
- `x_t U` is a gather of rows of `U`, never a one-hot product.
- Only the recurrence runs step by step (one (B, H) @ (H, H) product forward and one backward per
  step). Everything that does not depend on time is one large product over the window: the output
  logits and their gradients (in row blocks, so a vocabulary of thousands stays small in memory),
  `dV` and `dW`.
- On AVX-512 the recurrent step's product (rows, H) @ (H, H) is a register-blocked vector kernel
  generated as LLVM IR (below), which reads W in place; OpenBLAS spends about a third of such a
  small call packing W. The large products call numpy's own OpenBLAS directly through a registered symbol
  (faster than the BLAS Numba's `np.dot` uses, and cacheable), always with one BLAS thread.
- float32 uses vectorisable approximations of tanh and exp (errors of a few 1e-7); float64 keeps the
  exact library functions, so the float64 gradient check tests everything else of the same code.
- `threads > 1` cuts the batch into contiguous chunks; each chunk runs the whole window on its own
  buffers, and the chunks' gradients are summed in a fixed order, so results are deterministic for a
  given thread count (they differ from one thread by float rounding only).
"""

from __future__ import annotations

import ctypes
import math
import os
import threading
import weakref

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic, overload

from charrnn.params import Params

# Without "nnan"/"ninf": a NaN loss must stay visible. `error_model="numpy"` drops the division-by-
# zero check that would otherwise keep the elementwise loops from vectorising.
_FAST = dict(fastmath={"nsz", "arcp", "contract", "afn", "reassoc"}, error_model="numpy")

# ---------------------------------------------------------------------------------------------
# BLAS: numpy's OpenBLAS (ILP64 CBLAS) under a name of our own, so compiled kernels can be cached.
# ---------------------------------------------------------------------------------------------

_ROW_MAJOR = 101
NO_TRANS = 111
TRANS = 112
_GEMM_SYMBOL = {"float32": "charrnn_cblas_sgemm_ilp64", "float64": "charrnn_cblas_dgemm_ilp64"}


def _numpy_blas_library():
    """Handle through which numpy's BLAS symbols resolve (dlsym searches the module's dependencies)."""
    try:
        from numpy._core import _multiarray_umath as core
    except ImportError:  # numpy < 2
        from numpy.core import _multiarray_umath as core
    return ctypes.CDLL(core.__file__)


def _find_numpy_cblas():
    """(sgemm address, dgemm address, get_threads, set_threads) of numpy's ILP64 OpenBLAS, or None."""
    if os.environ.get("CHARRNN_BLAS") == "fallback":  # lets the tests exercise the fallback path
        return None
    lib = _numpy_blas_library()
    for prefix, suffix in (("scipy_", "64_"), ("", "64_")):
        try:
            sgemm = getattr(lib, f"{prefix}cblas_sgemm{suffix}")
            dgemm = getattr(lib, f"{prefix}cblas_dgemm{suffix}")
        except AttributeError:
            continue
        get_threads = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
        set_threads = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
        if get_threads is not None:
            get_threads.restype = ctypes.c_int
            get_threads.argtypes = []
        if set_threads is not None:
            set_threads.restype = None
            set_threads.argtypes = [ctypes.c_int]
        address = lambda f: ctypes.cast(f, ctypes.c_void_p).value  # noqa: E731
        return address(sgemm), address(dgemm), get_threads, set_threads
    return None


def _fallback_gemm_addresses():
    """C-callable gemm with the same ILP64 CBLAS signature, built on Numba's np.dot (scipy's BLAS).

    Used only where numpy's BLAS is not an ILP64 OpenBLAS (e.g. numpy built against Accelerate or
    MKL): slower, but the cached kernels stay valid since they only know the registered name."""
    from numba import carray, cfunc

    @njit
    def gemm_with_dot(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        a_rows, a_cols = (k, m) if trans_a == TRANS else (m, k)
        b_rows, b_cols = (n, k) if trans_b == TRANS else (k, n)
        a_full = carray(a, (a_rows, lda))[:, :a_cols].copy()
        b_full = carray(b, (b_rows, ldb))[:, :b_cols].copy()
        a_op = a_full.T.copy() if trans_a == TRANS else a_full
        b_op = b_full.T.copy() if trans_b == TRANS else b_full
        product = np.dot(a_op, b_op)                                    # (m, n)
        c_view = carray(c, (m, ldc))
        for i in range(m):
            for j in range(n):
                if beta == 0:
                    c_view[i, j] = alpha * product[i, j]
                else:
                    c_view[i, j] = alpha * product[i, j] + beta * c_view[i, j]

    addresses = []
    for dtype in (types.float32, types.float64):
        ptr = types.CPointer(dtype)
        signature = types.void(types.int32, types.int32, types.int32, types.int64, types.int64,
                               types.int64, dtype, ptr, types.int64, ptr, types.int64, dtype, ptr,
                               types.int64)

        def gemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
            gemm_with_dot(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

        addresses.append(cfunc(signature)(gemm).address)
    return addresses


_NUMPY_CBLAS = _find_numpy_cblas()
if _NUMPY_CBLAS is not None:
    _sgemm_address, _dgemm_address, _blas_get_threads, _blas_set_threads = _NUMPY_CBLAS
else:
    _sgemm_address, _dgemm_address = _fallback_gemm_addresses()
    _blas_get_threads = _blas_set_threads = None
llvm.add_symbol(_GEMM_SYMBOL["float32"], _sgemm_address)
llvm.add_symbol(_GEMM_SYMBOL["float64"], _dgemm_address)
BLAS_BACKEND = "numpy-openblas" if _NUMPY_CBLAS is not None else "fallback-np.dot"


@intrinsic
def _gemm(typingctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """C = alpha * op(A) @ op(B) + beta * C on row-major arrays given by their first element.

    The arrays may be views; only their data pointer is used, with the leading dimensions given."""
    if not all(isinstance(x, types.Array) for x in (a, b, c)):
        return None
    dtype = c.dtype
    if a.dtype != dtype or b.dtype != dtype or str(dtype) not in _GEMM_SYMBOL:
        return None
    symbol = _GEMM_SYMBOL[str(dtype)]
    signature = types.void(types.intp, types.intp, types.intp, types.intp, types.intp, dtype, a,
                           types.intp, b, types.intp, dtype, c, types.intp)

    def codegen(context, builder, sig, args):
        real = context.get_value_type(dtype)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        pointer = real.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, real, pointer, i64,
                                               pointer, i64, real, pointer, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, symbol)
        ta, tb, m_, n_, k_, alpha_, a_, lda_, b_, ldb_, beta_, c_, ldc_ = args

        def data(index, value):
            array = context.make_array(sig.args[index])(context, builder, value)
            return builder.bitcast(array.data, pointer)

        builder.call(fn, [i32(_ROW_MAJOR), builder.trunc(ta, i32), builder.trunc(tb, i32), m_, n_,
                          k_, alpha_, data(6, a_), lda_, data(8, b_), ldb_, beta_, data(11, c_),
                          ldc_])
        return context.get_dummy_value()

    return signature, codegen


class _OneBlasThread:
    """Numpy's BLAS runs single-threaded inside the kernels (the batch chunks are the threads;
    nested BLAS threads are slow and collapse on a busy machine); the setting is restored after."""

    def __enter__(self):
        self.saved = None
        if _blas_get_threads is not None and _blas_set_threads is not None:
            self.saved = _blas_get_threads()
            if self.saved != 1:
                _blas_set_threads(1)
        return self

    def __exit__(self, *exc):
        if self.saved is not None and self.saved != 1:
            _blas_set_threads(self.saved)
        return False


# ---------------------------------------------------------------------------------------------
# The recurrent step's product, (rows, H) @ (H, H) with rows = a batch chunk (16 or 32), written as
# a register-blocked vector kernel in LLVM IR. For this shape OpenBLAS spends about a third of each
# call packing the (H, H) operand; reading W in place instead ran at 105-115 GFLOP/s against
# OpenBLAS's 74-88 at H=256 and 512 on one Zen 4 core (same speed at H=128), and one row (batch 1,
# the validation pass) at 41 GFLOP/s against 30.
# ---------------------------------------------------------------------------------------------


def _targets_avx512() -> bool:
    """Whether Numba compiles for a CPU with AVX-512: this host's, unless NUMBA_CPU_NAME names
    another target (e.g. "generic" for portable caches)."""
    if numba_config.CPU_NAME:
        return "+avx512f" in (numba_config.CPU_FEATURES or "")
    return bool(llvm.get_host_cpu_features().get("avx512f", False))


_AVX512 = _targets_avx512()
# Used with AVX-512 only. Compiled for AVX2 (NUMBA_CPU_NAME=haswell on the same Zen 4 core) the
# same kernel with 4 rows x 2 ymm vectors ran at 62 GFLOP/s at 16x512 against OpenBLAS's 65, and
# at half OpenBLAS's speed for one row: there OpenBLAS's tuned kernels do the whole job.
_VECTOR_BYTES = 64                          # one zmm register: 16 float32 or 8 float64
_BLOCK_ROWS = 8                             # 8 rows x 2 vectors: 16 of the 32 zmm accumulate
_BLOCK_VECTORS = 2
# Rows left over (and batch 1, the validation pass) go one at a time, over wider column blocks:
# enough independent accumulators to hide the FMA latency, and longer runs of each row of W.
_SINGLE_ROW_VECTORS = 8


def _step_gemm_function(module, real, itemsize):
    """void f(A*, B*, C*, m, n, k, accumulate): C (m, n) = A (m, k) @ B (k, n) [+ C], row-major,
    contiguous, n a multiple of the block width. For each block of rows and of 2 vectors of
    columns, the accumulators stay in registers over the whole k loop: per k, 2 vector loads of a
    row of B, one broadcast of A per row, 2 FMAs per row."""
    lanes = _VECTOR_BYTES // itemsize
    vec = ir.VectorType(real, lanes)
    i64, i32 = ir.IntType(64), ir.IntType(32)
    pointer = real.as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [pointer, pointer, pointer, i64, i64, i64, ir.IntType(1)])
    fn = cgutils.get_or_insert_function(
        module, fnty, f"charrnn_step_gemm_f{itemsize * 8}_{_BLOCK_ROWS}x{_BLOCK_VECTORS}x{lanes}"
                      f"_{_SINGLE_ROW_VECTORS}")
    if not fn.is_declaration:
        return fn
    fn.linkage = "internal"
    A, B, C, m, n, k, accumulate = fn.args
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    fma = cgutils.get_or_insert_function(module, ir.FunctionType(vec, [vec, vec, vec]),
                                         f"llvm.fma.v{lanes}f{itemsize * 8}")
    const = lambda value: ir.Constant(i64, value)  # noqa: E731
    zero = ir.Constant(vec, None)
    undef = ir.Constant(vec, ir.Undefined)
    splat_mask = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
    # Accumulators live in allocas of the entry block, which LLVM promotes to registers.
    slots = {(rows, width): [[cgutils.alloca_once(builder, vec) for _ in range(width)]
                             for _ in range(rows)]
             for rows, width in ((_BLOCK_ROWS, _BLOCK_VECTORS), (1, _SINGLE_ROW_VECTORS),
                                 (1, _BLOCK_VECTORS))}

    def vector_at(base, offset):
        return builder.bitcast(builder.gep(base, [offset]), vec.as_pointer())

    def block(i0, rows, width, j_from, j_to):
        """C[i0:i0+rows, j_from:j_to] in blocks of `width` vectors of columns."""
        acc = slots[(rows, width)]
        with cgutils.for_range_slice(builder, j_from, j_to, const(width * lanes)) as (j0, _):
            c_ptrs = [[vector_at(C, builder.add(builder.mul(builder.add(i0, const(r)), n),
                                                builder.add(j0, const(v * lanes))))
                       for v in range(width)] for r in range(rows)]
            for r in range(rows):
                for v in range(width):
                    old = builder.load(c_ptrs[r][v], align=itemsize)
                    builder.store(builder.select(accumulate, old, zero), acc[r][v])
            with cgutils.for_range(builder, k) as loop:
                kk = loop.index
                b_row = builder.add(builder.mul(kk, n), j0)
                b_vecs = [builder.load(vector_at(B, builder.add(b_row, const(v * lanes))),
                                       align=itemsize) for v in range(width)]
                for r in range(rows):
                    a_value = builder.load(builder.gep(A, [builder.add(
                        builder.mul(builder.add(i0, const(r)), k), kk)]))
                    a_vec = builder.shuffle_vector(
                        builder.insert_element(undef, a_value, ir.Constant(i32, 0)), undef,
                        splat_mask)
                    for v in range(width):
                        builder.store(builder.call(fma, [a_vec, b_vecs[v], builder.load(acc[r][v])]),
                                      acc[r][v])
            for r in range(rows):
                for v in range(width):
                    builder.store(builder.load(acc[r][v]), c_ptrs[r][v], align=itemsize)

    full_rows = builder.sub(m, builder.urem(m, const(_BLOCK_ROWS)))
    with cgutils.for_range_slice(builder, const(0), full_rows, const(_BLOCK_ROWS)) as (i0, _):
        block(i0, _BLOCK_ROWS, _BLOCK_VECTORS, const(0), n)
    wide_columns = builder.sub(n, builder.urem(n, const(_SINGLE_ROW_VECTORS * lanes)))
    with cgutils.for_range_slice(builder, full_rows, m, const(1)) as (i0, _):
        block(i0, 1, _SINGLE_ROW_VECTORS, const(0), wide_columns)
        block(i0, 1, _BLOCK_VECTORS, wide_columns, n)
    builder.ret_void()
    return fn


@intrinsic
def _step_gemm(typingctx, a, b, c, accumulate):
    """c = a @ b, or c += a @ b if accumulate; a (m, k), b (k, n), c (m, n) C-contiguous, n a
    multiple of 2 vectors (see `_recurrent_product`). Shapes are taken from a and b, not checked."""
    if not all(isinstance(x, types.Array) and x.layout == "C" for x in (a, b, c)):
        return None
    dtype = c.dtype
    if a.dtype != dtype or b.dtype != dtype or str(dtype) not in _GEMM_SYMBOL:
        return None

    def codegen(context, builder, sig, args):
        real = context.get_value_type(dtype)
        fn = _step_gemm_function(builder.module, real, context.get_abi_sizeof(real))
        arrays = [context.make_array(t)(context, builder, v) for t, v in zip(sig.args[:3], args[:3])]
        m = builder.extract_value(arrays[0].shape, 0)
        k = builder.extract_value(arrays[0].shape, 1)
        n = builder.extract_value(arrays[1].shape, 1)
        data = [builder.bitcast(x.data, real.as_pointer()) for x in arrays]
        builder.call(fn, data + [m, n, k, args[3]])
        return context.get_dummy_value()

    return types.void(a, b, c, types.boolean), codegen


@njit(cache=True)
def _recurrent_product(a, w, c, accumulate):
    """c = a @ w (+ c if accumulate): a (rows, H), w (H, H), c (rows, H). The vector kernel on
    AVX-512 when H is a multiple of its block width (32 float32, 16 float64), OpenBLAS otherwise."""
    rows, hidden = a.shape
    if _AVX512 and hidden % (_VECTOR_BYTES // a.itemsize * _BLOCK_VECTORS) == 0:
        _step_gemm(a, w, c, accumulate)
    else:
        beta = c.dtype.type(1.0) if accumulate else c.dtype.type(0.0)
        _gemm(NO_TRANS, NO_TRANS, rows, hidden, hidden, c.dtype.type(1.0), a, hidden, w, hidden,
              beta, c, hidden)


# ---------------------------------------------------------------------------------------------
# Elementwise math: exact in float64, fast vectorisable approximations in float32.
# ---------------------------------------------------------------------------------------------

_F32 = np.float32


@intrinsic
def _pow2_f32(typingctx, n):
    """2**n for an integral float32 n in [-126, 127], built directly from the exponent bits."""
    if n != types.float32:
        return None

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        exponent = builder.add(builder.fptosi(args[0], i32), i32(127))
        return builder.bitcast(builder.shl(exponent, i32(23)), ir.FloatType())

    return types.float32(types.float32), codegen


_EXP_LO, _EXP_HI = _F32(-87.0), _F32(88.0)
_LOG2E = _F32(1.4426950408889634)
_LN2_HI = _F32(0.693145751953125)          # ln 2 split in two so that n * _LN2_HI is exact
_LN2_LO = _F32(1.4286068203094173e-06)
_HALF = _F32(0.5)
_ONE = _F32(1.0)
_INV_FACT = tuple(_F32(1.0 / math.factorial(i)) for i in range(8))
_TANH_SMALL = _F32(0.125)
_MINUS_TWO = _F32(-2.0)
# Taylor series of tanh near 0: x - x^3/3 + 2x^5/15 - 17x^7/315 (error < 1e-10 below 0.125).
_TANH_C3, _TANH_C5, _TANH_C7 = _F32(-1.0 / 3.0), _F32(2.0 / 15.0), _F32(-17.0 / 315.0)


@njit(inline="always", **_FAST)
def _exp_f32(x):
    """exp(x) for float32, relative error below 2e-7: x = n ln2 + r, exp(r) by its Taylor series
    to degree 7 on |r| <= ln2/2, times 2^n from the exponent bits."""
    x = min(max(x, _EXP_LO), _EXP_HI)
    n = np.floor(x * _LOG2E + _HALF)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    c = _INV_FACT
    p = c[0] + r * (c[1] + r * (c[2] + r * (c[3] + r * (c[4] + r * (c[5] + r * (c[6] + r * c[7]))))))
    return p * _pow2_f32(n)


@njit(inline="always", **_FAST)
def _tanh_f32(x):
    """tanh for float32 from one exp: (1 - e) / (1 + e) with e = exp(-2|x|), and the Taylor series
    near 0 where that quotient would lose relative precision. Absolute error below 2e-7."""
    ax = abs(x)
    e = _exp_f32(_MINUS_TWO * ax)
    big = math.copysign((_ONE - e) / (_ONE + e), x)
    x2 = x * x
    small = x + x * x2 * (_TANH_C3 + x2 * (_TANH_C5 + x2 * _TANH_C7))
    return small if ax < _TANH_SMALL else big


def fast_exp(x):
    """exp; a fast approximation for float32, the exact one for float64 (used inside kernels)."""
    return math.exp(x)


def fast_tanh(x):
    """tanh; a fast approximation for float32, the exact one for float64 (used inside kernels)."""
    return math.tanh(x)


@overload(fast_exp, inline="always")
def _fast_exp_overload(x):
    if x == types.float32:
        return lambda x: _exp_f32(x)
    return lambda x: math.exp(x)


@overload(fast_tanh, inline="always")
def _fast_tanh_overload(x):
    if x == types.float32:
        return lambda x: _tanh_f32(x)
    return lambda x: math.tanh(x)


@njit(cache=True, **_FAST)
def _tanh_rows(a):
    """a = tanh(a) in place, a (rows, H)."""
    rows, cols = a.shape
    for i in range(rows):
        for j in range(cols):
            a[i, j] = fast_tanh(a[i, j])


@njit(cache=True, **_FAST)
def _tanh_backward_rows(da, dh_next, h):
    """da = (da + dh_next) * (1 - h^2) in place: the gradient through h = tanh(a), where `da` holds
    the output layer's share of dL/dh on entry and `dh_next` the share flowing back from step t+1.
    All (rows, H)."""
    one = da.dtype.type(1.0)
    rows, cols = da.shape
    for i in range(rows):
        for j in range(cols):
            hij = h[i, j]
            da[i, j] = (da[i, j] + dh_next[i, j]) * (one - hij * hij)


@njit(cache=True, **_FAST)
def _exp_row(row):
    """row = exp(row - max(row)) in place; returns (max, sum of the new row). One function for the
    loss and the gradient paths, so that both compute bit-identical losses."""
    peak = row[0]
    for j in range(1, row.size):
        peak = max(peak, row[j])
    denom = row.dtype.type(0.0)
    for j in range(row.size):
        e = fast_exp(row[j] - peak)
        row[j] = e
        denom += e
    return peak, denom


@njit(cache=True, **_FAST)
def _softmax_xent(logits, targets, b0, chunk_batch, row0):
    """The summed cross-entropy (float64, nats) of `logits` (rows, vocab), overwriting them with
    exp(logits - max). Row r is time step (row0 + r) // chunk_batch of batch row
    b0 + (row0 + r) % chunk_batch."""
    total = 0.0
    for i in range(logits.shape[0]):
        r = row0 + i
        target = targets[b0 + r % chunk_batch, r // chunk_batch]
        target_logit = logits[i, target]
        peak, denom = _exp_row(logits[i])
        total += math.log(float(denom)) - float(target_logit - peak)
    return total


@njit(cache=True, **_FAST)
def _softmax_xent_grad(logits, targets, b0, chunk_batch, row0, scale):
    """As `_softmax_xent`, and turns `logits` into dL/dlogits = (softmax - onehot(target)) * scale."""
    total = 0.0
    for i in range(logits.shape[0]):
        r = row0 + i
        target = targets[b0 + r % chunk_batch, r // chunk_batch]
        row = logits[i]
        target_logit = row[target]
        peak, denom = _exp_row(row)
        total += math.log(float(denom)) - float(target_logit - peak)
        inv = scale / denom
        for j in range(row.size):
            row[j] *= inv
        row[target] -= scale
    return total


# ---------------------------------------------------------------------------------------------
# One chunk of the batch over the whole window.
# ---------------------------------------------------------------------------------------------

@njit(cache=True)
def _param_views(flat, vocab, hidden):
    """U (vocab, H), W (H, H), V (H, vocab), b_h (H,), b_y (vocab,): the layout of Params."""
    vh, hh = vocab * hidden, hidden * hidden
    U = flat[0:vh].reshape((vocab, hidden))
    W = flat[vh:vh + hh].reshape((hidden, hidden))
    V = flat[vh + hh:2 * vh + hh].reshape((hidden, vocab))
    b_h = flat[2 * vh + hh:2 * vh + hh + hidden]
    b_y = flat[2 * vh + hh + hidden:2 * vh + hh + hidden + vocab]
    return U, W, V, b_h, b_y


@njit(cache=True)
def _forward_recurrence(U, W, b_h, inputs, b0, b1, h0, hs):
    """hs[0] = h0[b0:b1]; hs[t+1] = tanh(U[inputs[:, t]] + hs[t] @ W + b_h). hs (T+1, chunk, H)."""
    T = inputs.shape[1]
    chunk = b1 - b0
    hidden = W.shape[0]
    hs[0] = h0[b0:b1]
    for t in range(T):
        a = hs[t + 1]                                                   # (chunk, H)
        for i in range(chunk):
            row = U[inputs[b0 + i, t]]
            for j in range(hidden):
                a[i, j] = row[j] + b_h[j]
        _recurrent_product(hs[t], W, a, True)                          # a += h_{t-1} W
        _tanh_rows(a)


@njit(cache=True, nogil=True)
def _chunk_loss(flat, vocab, hidden, inputs, targets, b0, b1, h0, h_last, hs_buf, logits_buf,
                rows_per_block):
    """Summed cross-entropy of batch rows b0:b1 over the window; writes h_last[b0:b1]."""
    T = inputs.shape[1]
    chunk = b1 - b0
    one = flat.dtype.type(1.0)
    U, W, V, b_h, b_y = _param_views(flat, vocab, hidden)
    hs = hs_buf[:(T + 1) * chunk * hidden].reshape((T + 1, chunk, hidden))
    _forward_recurrence(U, W, b_h, inputs, b0, b1, h0, hs)
    h_last[b0:b1] = hs[T]
    n_rows = T * chunk
    h_rows = hs_buf[chunk * hidden:(T + 1) * chunk * hidden].reshape((n_rows, hidden))  # h_1..h_T
    total = 0.0
    for r0 in range(0, n_rows, rows_per_block):
        r1 = min(n_rows, r0 + rows_per_block)
        logits = logits_buf[:(r1 - r0) * vocab].reshape((r1 - r0, vocab))
        for i in range(r1 - r0):
            logits[i] = b_y
        _gemm(NO_TRANS, NO_TRANS, r1 - r0, vocab, hidden, one, h_rows[r0:], hidden, V, vocab, one,
              logits, vocab)
        total += _softmax_xent(logits, targets, b0, chunk, r0)
    return total


@njit(cache=True, nogil=True)
def _chunk_loss_and_grad(flat, W_T, grad_flat, vocab, hidden, inputs, targets, b0, b1, h0, h_last,
                         dh0, hs_buf, da_buf, logits_buf, rows_per_block, scale):
    """Summed cross-entropy of batch rows b0:b1 over the window, and into `grad_flat` the gradient
    of (that sum * scale) for this chunk alone; writes h_last[b0:b1] and dh0[b0:b1]. `W_T` is a
    contiguous copy of W transposed for the backward step's product: the vector kernel reads its
    right operand row by row (and OpenBLAS too ran 1.4x slower with the transpose flag)."""
    T = inputs.shape[1]
    chunk = b1 - b0
    one, zero = flat.dtype.type(1.0), flat.dtype.type(0.0)
    U, W, V, b_h, b_y = _param_views(flat, vocab, hidden)
    dU, dW, dV, db_h, db_y = _param_views(grad_flat, vocab, hidden)

    # Forward through time.
    hs = hs_buf[:(T + 1) * chunk * hidden].reshape((T + 1, chunk, hidden))
    _forward_recurrence(U, W, b_h, inputs, b0, b1, h0, hs)
    h_last[b0:b1] = hs[T]

    # Output layer, all time steps at once, in blocks of rows (row = t * chunk + i): logits, the
    # loss, dlogits, dV, db_y, and the output layer's share of dL/dh (into da_buf).
    n_rows = T * chunk
    h_rows = hs_buf[chunk * hidden:(T + 1) * chunk * hidden].reshape((n_rows, hidden))  # h_1..h_T
    dh_rows = da_buf[:n_rows * hidden].reshape((n_rows, hidden))
    dV[:] = zero
    db_y[:] = zero
    total = 0.0
    for r0 in range(0, n_rows, rows_per_block):
        r1 = min(n_rows, r0 + rows_per_block)
        logits = logits_buf[:(r1 - r0) * vocab].reshape((r1 - r0, vocab))
        for i in range(r1 - r0):
            logits[i] = b_y
        _gemm(NO_TRANS, NO_TRANS, r1 - r0, vocab, hidden, one, h_rows[r0:], hidden, V, vocab, one,
              logits, vocab)
        total += _softmax_xent_grad(logits, targets, b0, chunk, r0, scale)
        dlogits = logits
        _gemm(TRANS, NO_TRANS, hidden, vocab, r1 - r0, one, h_rows[r0:], hidden, dlogits, vocab,
              one, dV, vocab)
        for i in range(r1 - r0):
            db_y += dlogits[i]
        _gemm(NO_TRANS, TRANS, r1 - r0, hidden, vocab, one, dlogits, vocab, V, vocab, zero,
              dh_rows[r0:], hidden)

    # Backward through time: only the recurrence is per step.
    da = da_buf[:n_rows * hidden].reshape((T, chunk, hidden))
    dh_next = dh0[b0:b1]                                                # (chunk, H)
    dh_next[:] = zero
    for t in range(T - 1, -1, -1):
        _tanh_backward_rows(da[t], dh_next, hs[t + 1])
        _recurrent_product(da[t], W_T, dh_next, False)                # dh_{t-1} = da_t W^T

    # dW = sum_t h_{t-1}^T da_t as one product; db_h; dU by scattering rows of da.
    h_prev_rows = hs_buf[:n_rows * hidden].reshape((n_rows, hidden))    # h_0..h_{T-1}
    _gemm(TRANS, NO_TRANS, hidden, hidden, n_rows, one, h_prev_rows, hidden, dh_rows, hidden, zero,
          dW, hidden)
    db_h[:] = zero
    dU[:] = zero
    for t in range(T):
        for i in range(chunk):
            dU_row = dU[inputs[b0 + i, t]]
            da_row = da[t, i]
            for j in range(hidden):
                db_h[j] += da_row[j]
                dU_row[j] += da_row[j]
    return total


@njit(cache=True, nogil=True)
def _transpose_into(src, dst):
    """dst = src.T for square matrices: strips of 16 columns of src, so that each row of dst being
    written stays in cache while the strip is read (measured 1.5x faster than square tiles)."""
    n = src.shape[0]
    for j0 in range(0, n, 16):
        j1 = min(n, j0 + 16)
        for i in range(n):
            for j in range(j0, j1):
                dst[j, i] = src[i, j]


@njit(cache=True, nogil=True)
def _sum_into(target, others):
    """target += others[0] + others[1] + ... in that order (a fixed order keeps results
    deterministic for a given thread count)."""
    for w in range(others.shape[0]):
        part = others[w]
        for i in range(target.size):
            target[i] += part[i]


# ---------------------------------------------------------------------------------------------
# The Python edge: checks once, preallocates every buffer once.
# ---------------------------------------------------------------------------------------------

# Output-layer rows per block: the logits block (rows x vocab) holds at most 2M values (8 MB of
# float32) per chunk, so a vocabulary of thousands does not need (B*T, vocab) logits. Smaller
# blocks cost speed there: at V=5000, H=512 blocks of 26, 104, 419 and all 2048 rows ran at 64, 88,
# 99 and 100 GFLOP/s (each product re-reads the whole of V and dV). V=65 fits in one block.
_LOGIT_BLOCK_ELEMENTS = 1 << 21


class _ChunkThreads:
    """`n_threads` threads (the caller and n_threads - 1 workers) run task(w) for every chunk w,
    each taking the next chunk not yet taken. Which thread runs a chunk does not change its
    result, and the results are added in chunk order, so the sum is deterministic.

    The hand-offs are counters under one condition, not tokens: a KeyboardInterrupt can land
    between any two bytecodes of the caller, and `run` still returns or raises only once every
    worker is done (a worker still writing the shared buffers would corrupt the next call). A
    call costs about 20 microseconds of hand-offs, a third of what a thread pool's futures cost
    (it shows at H=128, where a whole step takes about 2 ms)."""

    def __init__(self, n_threads: int, n_chunks: int):
        self.n_threads, self.n_chunks = n_threads, n_chunks
        self._cond = threading.Condition()
        self._task = None
        self._generation = 0                     # calls handed out so far
        self._completed = [0] * n_threads        # per worker: the last generation it finished
        self._next_chunk = 0
        self._claim = threading.Lock()
        self._results = [0.0] * n_chunks
        self._errors = []
        self._closed = False
        for w in range(1, n_threads):
            threading.Thread(target=self._serve, args=(w,), name=f"charrnn-kernels-{w}",
                             daemon=True).start()

    def _work(self, task):
        while True:
            with self._claim:
                chunk = self._next_chunk
                self._next_chunk += 1
            if chunk >= self.n_chunks:
                return
            try:
                self._results[chunk] = task(chunk)
            except BaseException as exc:  # handed to the caller by run()
                self._errors.append(exc)
                return

    def _serve(self, w):
        seen = 0
        while True:
            with self._cond:
                while self._generation == seen and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                seen, task = self._generation, self._task
            self._work(task)
            with self._cond:
                self._completed[w] = seen
                self._cond.notify_all()

    def _all_done(self):
        return all(done == self._generation for done in self._completed[1:])

    def _wait_all_done(self):
        """Wait until every worker finished the current generation, through any interrupt;
        the first interrupt is re-raised afterwards."""
        interrupted = None
        while True:
            try:
                with self._cond:
                    while not self._all_done():
                        self._cond.wait()
                break
            except BaseException as exc:
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted

    def run(self, task) -> float:
        """The sum of task(w) over the chunks, added in chunk order."""
        self._wait_all_done()                    # a call interrupted before it could wait
        self._errors.clear()
        self._next_chunk = 0
        with self._cond:
            self._task = task                    # before the generation, which starts workers
            self._generation += 1
            self._cond.notify_all()
        try:
            self._work(task)
        finally:
            self._wait_all_done()
        if self._errors:
            raise self._errors[0]
        total = 0.0
        for value in self._results:
            total += value
        return total

    def close(self):
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def _chunk_bounds(batch_size: int, threads: int) -> list[int]:
    """Batch rows [bounds[w], bounds[w+1]) form chunk w: one chunk per thread. (Two chunks per
    thread, so that a thread slowed by another process leaves work to the other, measured no
    faster with one or two other busy processes, within +-8%, and needs more buffers.)"""
    n_chunks = min(threads, batch_size)
    return [w * batch_size // n_chunks for w in range(n_chunks + 1)]


class RNNKernels:
    """Loss and gradients of the vanilla RNN for windows of shape (batch_size, <= seq_length).

    After each call `h_last` (batch_size, hidden) is the hidden state after the window's last step
    and, after `loss_and_grad`, `dh0` (batch_size, hidden) is d(mean loss)/d(h0). Both are
    overwritten by the next call (passing `h_last` back as `h0` is fine).

    With `threads` > 1 the batch is cut into that many contiguous chunks (at most one per row);
    the calling thread and threads - 1 worker threads run them, each chunk with its own buffers and
    one BLAS thread (the compiled kernels release the GIL). One call at a time per instance; the
    worker threads do not survive a fork."""

    def __init__(self, vocab_size: int, hidden: int, batch_size: int, seq_length: int,
                 dtype=np.float32, threads: int = 1):
        for name, value in (("vocab_size", vocab_size), ("hidden", hidden),
                            ("batch_size", batch_size), ("seq_length", seq_length),
                            ("threads", threads)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        self.vocab_size, self.hidden = int(vocab_size), int(hidden)
        self.batch_size, self.seq_length = int(batch_size), int(seq_length)
        self.threads = int(threads)

        self.bounds = _chunk_bounds(self.batch_size, self.threads)
        n_chunks = len(self.bounds) - 1
        widest = max(b - a for a, b in zip(self.bounds, self.bounds[1:]))
        rows = self.seq_length * widest
        self.rows_per_block = max(1, min(rows, _LOGIT_BLOCK_ELEMENTS // self.vocab_size))
        zeros = lambda *shape: np.zeros(shape, self.dtype)  # noqa: E731
        self._hs_bufs = zeros(n_chunks, (self.seq_length + 1) * widest * self.hidden)
        self._da_bufs = zeros(n_chunks, rows * self.hidden)
        self._logits_bufs = zeros(n_chunks, self.rows_per_block * self.vocab_size)
        n_params = Params(self.vocab_size, self.hidden, self.dtype).flat.size
        self._private_grads = zeros(n_chunks - 1, n_params)   # chunk 0 writes the caller's grads
        self._W_T = zeros(self.hidden, self.hidden)
        self.h_last = zeros(self.batch_size, self.hidden)
        self.dh0 = zeros(self.batch_size, self.hidden)
        self._threads = None
        if n_chunks > 1:
            self._threads = _ChunkThreads(min(self.threads, n_chunks), n_chunks)
            weakref.finalize(self, self._threads.close)

    @property
    def n_chunks(self) -> int:
        return len(self.bounds) - 1

    # -- checks -------------------------------------------------------------------------------

    def _check_params(self, params, what: str) -> None:
        if not isinstance(params, Params):
            raise ValueError(f"{what} must be a Params, got {type(params).__name__}")
        if (params.vocab_size, params.hidden) != (self.vocab_size, self.hidden):
            raise ValueError(f"{what} has vocab {params.vocab_size}, hidden {params.hidden}; "
                             f"kernels are for vocab {self.vocab_size}, hidden {self.hidden}")
        if params.dtype != self.dtype:
            raise ValueError(f"{what} is {params.dtype}; kernels are {self.dtype}")

    def _check_ids(self, ids, what: str) -> np.ndarray:
        if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu":
            raise ValueError(f"{what} must be an integer numpy array")
        if ids.ndim != 2 or ids.shape[0] != self.batch_size or not 1 <= ids.shape[1] <= self.seq_length:
            raise ValueError(f"{what} has shape {ids.shape}; expected ({self.batch_size}, T) with "
                             f"1 <= T <= {self.seq_length}")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"{what} holds ids outside 0..{self.vocab_size - 1}")
        return np.ascontiguousarray(ids, dtype=np.int32)

    def _check_window(self, params, inputs, targets, h0):
        self._check_params(params, "params")
        inputs = self._check_ids(inputs, "inputs")
        targets = self._check_ids(targets, "targets")
        if inputs.shape != targets.shape:
            raise ValueError(f"inputs {inputs.shape} and targets {targets.shape} differ in shape")
        if not isinstance(h0, np.ndarray) or h0.shape != (self.batch_size, self.hidden):
            raise ValueError(f"h0 must be an array of shape ({self.batch_size}, {self.hidden})")
        if h0.dtype != self.dtype:
            raise ValueError(f"h0 is {h0.dtype}; kernels are {self.dtype}")
        return inputs, targets, np.ascontiguousarray(h0)

    def _run_chunks(self, run_chunk) -> float:
        """run_chunk(w) for every chunk, the first on this thread; the summed float64 results."""
        with _OneBlasThread():
            if self._threads is None:
                return run_chunk(0)
            return self._threads.run(run_chunk)

    # -- kernels ------------------------------------------------------------------------------

    def loss_and_grad(self, params: Params, inputs, targets, h0, grads: Params) -> float:
        """Mean cross-entropy (nats per character) over the window; overwrites `grads` with its
        gradient and sets `h_last` and `dh0`."""
        inputs, targets, h0 = self._check_window(params, inputs, targets, h0)
        self._check_params(grads, "grads")
        if np.may_share_memory(grads.flat, params.flat):
            raise ValueError("grads must not share memory with params")
        n_chars = inputs.size
        scale = self.dtype.type(1.0 / n_chars)
        _transpose_into(params.W, self._W_T)

        def run_chunk(w):
            target = grads.flat if w == 0 else self._private_grads[w - 1]
            return _chunk_loss_and_grad(
                params.flat, self._W_T, target, self.vocab_size, self.hidden, inputs, targets,
                self.bounds[w], self.bounds[w + 1], h0, self.h_last, self.dh0, self._hs_bufs[w],
                self._da_bufs[w], self._logits_bufs[w], self.rows_per_block, scale)

        total = self._run_chunks(run_chunk)
        if self.n_chunks > 1:
            _sum_into(grads.flat, self._private_grads)
        return total / n_chars

    def loss(self, params: Params, inputs, targets, h0) -> float:
        """Mean cross-entropy (nats per character) over the window, forward only; sets `h_last`."""
        inputs, targets, h0 = self._check_window(params, inputs, targets, h0)

        def run_chunk(w):
            return _chunk_loss(params.flat, self.vocab_size, self.hidden, inputs, targets,
                               self.bounds[w], self.bounds[w + 1], h0, self.h_last,
                               self._hs_bufs[w], self._logits_bufs[w], self.rows_per_block)

        return self._run_chunks(run_chunk) / inputs.size
