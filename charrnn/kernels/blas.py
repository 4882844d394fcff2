"""Numpy's own OpenBLAS (ILP64 CBLAS) for the kernels' large products, under a symbol of our own.

`gemm` calls it from compiled code; registering the address under a fixed name (rather than
baking it into the code) lets the kernels that call it be cached. Where numpy's BLAS is not an
ILP64 OpenBLAS (numpy built against Accelerate or MKL), or with CHARRNN_BLAS=fallback (the tests),
the same symbol points at a slower fallback built on Numba's np.dot. Inside the kernels BLAS always
runs on one thread (`OneBlasThread`): the batch chunks are the threads.
"""

from __future__ import annotations

import ctypes
import os

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_ROW_MAJOR = 101
NO_TRANS = 111
TRANS = 112
GEMM_SYMBOL = {"float32": "charrnn_cblas_sgemm_ilp64", "float64": "charrnn_cblas_dgemm_ilp64"}


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
        product = np.dot(a_op, b_op)  # (m, n)
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
        signature = types.void(
            types.int32,
            types.int32,
            types.int32,
            types.int64,
            types.int64,
            types.int64,
            dtype,
            ptr,
            types.int64,
            ptr,
            types.int64,
            dtype,
            ptr,
            types.int64,
        )

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
llvm.add_symbol(GEMM_SYMBOL["float32"], _sgemm_address)
llvm.add_symbol(GEMM_SYMBOL["float64"], _dgemm_address)
BLAS_BACKEND = "numpy-openblas" if _NUMPY_CBLAS is not None else "fallback-np.dot"


@intrinsic
def gemm(typingctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """C = alpha * op(A) @ op(B) + beta * C on row-major arrays given by their first element.

    The arrays may be views; only their data pointer is used, with the leading dimensions given."""
    if not all(isinstance(x, types.Array) for x in (a, b, c)):
        return None
    dtype = c.dtype
    if a.dtype != dtype or b.dtype != dtype or str(dtype) not in GEMM_SYMBOL:
        return None
    symbol = GEMM_SYMBOL[str(dtype)]
    signature = types.void(
        types.intp,
        types.intp,
        types.intp,
        types.intp,
        types.intp,
        dtype,
        a,
        types.intp,
        b,
        types.intp,
        dtype,
        c,
        types.intp,
    )

    def codegen(context, builder, sig, args):
        real = context.get_value_type(dtype)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        pointer = real.as_pointer()
        fnty = ir.FunctionType(
            ir.VoidType(), [i32, i32, i32, i64, i64, i64, real, pointer, i64, pointer, i64, real, pointer, i64]
        )
        fn = cgutils.get_or_insert_function(builder.module, fnty, symbol)
        ta, tb, m_, n_, k_, alpha_, a_, lda_, b_, ldb_, beta_, c_, ldc_ = args

        def data(index, value):
            array = context.make_array(sig.args[index])(context, builder, value)
            return builder.bitcast(array.data, pointer)

        builder.call(
            fn,
            [
                i32(_ROW_MAJOR),
                builder.trunc(ta, i32),
                builder.trunc(tb, i32),
                m_,
                n_,
                k_,
                alpha_,
                data(6, a_),
                lda_,
                data(8, b_),
                ldb_,
                beta_,
                data(11, c_),
                ldc_,
            ],
        )
        return context.get_dummy_value()

    return signature, codegen


class OneBlasThread:
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
