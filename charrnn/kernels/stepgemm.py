"""The recurrent step's product, c (rows, n) = a (rows, k) @ w (k, n), rows = a batch chunk.

Forward it is h_{t-1} (rows, H) @ W (H, G*H), backward da (rows, G*H) @ W^T (G*H, H). On AVX-512 it
is a register-blocked vector kernel generated as LLVM IR (below), which reads w in place: for these
shapes OpenBLAS spends about a third of each call packing w. For the vanilla RNN, reading W in
place ran at 105-115 GFLOP/s against OpenBLAS's 74-88 at H=256 and 512 on one Zen 4 core (same
speed at H=128), and one row (batch 1, the validation pass) at 41 GFLOP/s against 30. Elsewhere
(no AVX-512, or n not a multiple of the block width) the product goes through OpenBLAS.

Blocks of 8 rows x 2 vectors of columns keep 16 accumulators in registers over the whole k loop.
w is read in strips of 2 vectors of columns (32 float32), packed beforehand (`pack`,
`pack_transposed`: once per window, w being constant over it) so that each strip is contiguous:
an LSTM's W at H=512 (4 MB) does not fit in L2, and reading a strip of the row-major matrix, 128
bytes from every row 8 KB apart, defeated the hardware prefetcher (16x512 @ 512x2048 ran at 59
GFLOP/s from the row-major W, 111 packed, 134 with a software prefetch). Column strips are the
outer loop and row blocks the inner one, so a strip is read from memory once per step and from L2
by the other row blocks. Rows left over (and batch 1) go in blocks of 4, 2 and 1 rows over wider
column blocks.

The operand of `step_product` is always a 3-D array (strips, k, width) holding w (k, n) with
w[kk, s * width + l] at [s, kk, l]: packed when width is the strip width, or w itself (one strip
of width n) where OpenBLAS does the product (`operand_width` chooses).
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic

from charrnn.kernels.blas import GEMM_SYMBOL, NO_TRANS, gemm


def _targets_avx512() -> bool:
    """Whether Numba compiles with AVX-512, by its own rule: the features NUMBA_CPU_FEATURES
    gives where set (empty, its default with NUMBA_CPU_NAME=generic: the named CPU's defaults,
    taken as no AVX-512), else this host's, whatever NUMBA_CPU_NAME names. (So haswell alone on
    an AVX-512 host still compiles with AVX-512: add NUMBA_CPU_FEATURES= for Haswell's own.)"""
    if numba_config.CPU_FEATURES is not None:
        return "+avx512f" in numba_config.CPU_FEATURES
    return bool(llvm.get_host_cpu_features().get("avx512f", False))


AVX512 = _targets_avx512()
# Used with AVX-512 only. Compiled for AVX2 (NUMBA_CPU_NAME=haswell on the same Zen 4 core) the
# same kernel with 4 rows x 2 ymm vectors ran at 62 GFLOP/s at 16x512 against OpenBLAS's 65, and
# at half OpenBLAS's speed for one row: there OpenBLAS's tuned kernels do the whole job.
VECTOR_BYTES = 64  # one zmm register: 16 float32 or 8 float64
BLOCK_ROWS = 8  # 8 rows x 2 vectors: 16 of the 32 zmm accumulate
BLOCK_VECTORS = 2
# A single row left over (and batch 1, the validation pass) goes over wider column blocks: enough
# independent accumulators to hide the FMA latency, and longer runs of each row of w.
SINGLE_ROW_VECTORS = 8
# Blocks of the rows left over from the 8-row blocks, (rows, vectors of columns), in order: a
# block of 4 rows, then 2, then 1, each taken if that many rows are left.
LEFTOVER_BLOCKS = ((4, 4), (2, 8), (1, SINGLE_ROW_VECTORS))
# In the k loop of a 2-vector strip, a software prefetch of the strip 1 KB (8 rows of the strip)
# ahead: +5-15% at 16x512x2048 and 16x2048x512 (an LSTM's W streamed from L3, 117-127 -> 133-141
# GFLOP/s), and at 16x512x512 (from L2), neutral at H=128 and for one row; 512 B and 2 KB ahead
# measured between.
PREFETCH_BYTES = 1024


def block_columns(itemsize: int) -> int:
    """The vector kernel's strip width: 32 float32 or 16 float64 columns (n must be a multiple)."""
    return VECTOR_BYTES // itemsize * BLOCK_VECTORS


def operand_width(n: int, itemsize: int) -> int:
    """The width of the operand's strips for a product with n columns: the vector kernel's strip
    where it runs, else n (the plain matrix, for OpenBLAS)."""
    strip = block_columns(itemsize)
    return strip if AVX512 and n % strip == 0 else n


@njit(cache=True, nogil=True)
def pack(w, out):
    """out (n // width, k, width) = w (k, n) in strips of `width` columns."""
    strips, k, width = out.shape
    for kk in range(k):
        row = w[kk]
        for s in range(strips):
            dst = out[s, kk]
            for l in range(width):
                dst[l] = row[s * width + l]


@njit(cache=True, nogil=True)
def pack_transposed(w, out):
    """out (n // width, k, width) = w.T in strips, w (n, k): the backward step's operand W^T
    packed straight from W. Blocks of 16 rows of w are read while their strip is written."""
    strips, k, width = out.shape
    for s in range(strips):
        strip = out[s]
        for k0 in range(0, k, 16):
            k1 = min(k, k0 + 16)
            for l in range(width):
                row = w[s * width + l]
                for kk in range(k0, k1):
                    strip[kk, l] = row[kk]


def _step_gemm_function(module, real, itemsize):
    """void f(A*, B*, C*, m, n, k, accumulate): C (m, n) = A (m, k) @ B (k, n) [+ C]; A and C
    row-major, B packed in strips of 2 vectors of columns (see `pack`), n a multiple of the strip
    width. For each block of rows and strip, the accumulators stay in registers over the whole k
    loop: per k, 2 vector loads of the strip, one broadcast of A per row, 2 FMAs per row."""
    lanes = VECTOR_BYTES // itemsize
    pointer = real.as_pointer()
    fnty = ir.FunctionType(
        ir.VoidType(), [pointer, pointer, pointer, ir.IntType(64), ir.IntType(64), ir.IntType(64), ir.IntType(1)]
    )
    fn = cgutils.get_or_insert_function(
        module,
        fnty,
        f"charrnn_step_gemm_packed_f{itemsize * 8}_{BLOCK_ROWS}x{BLOCK_VECTORS}"
        f"x{lanes}_{SINGLE_ROW_VECTORS}_pf{PREFETCH_BYTES}_rows421",
    )
    if not fn.is_declaration:
        return fn
    fn.linkage = "internal"
    _StepGemmBody(module, fn, real, itemsize).emit()
    return fn


class _StepGemmBody:
    """The body of one step-gemm function (see `_step_gemm_function`): its IR builder, and the
    constants, intrinsics and register accumulators its tiles share."""

    def __init__(self, module, fn, real, itemsize):
        self.itemsize = itemsize
        self.lanes = lanes = VECTOR_BYTES // itemsize
        self.vec = vec = ir.VectorType(real, lanes)
        self.i64 = ir.IntType(64)
        self.i32 = i32 = ir.IntType(32)
        self.A, self.B, self.C, self.m, self.n, self.k, self.accumulate = fn.args
        self.builder = builder = ir.IRBuilder(fn.append_basic_block("entry"))
        self.fma = cgutils.get_or_insert_function(
            module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fma.v{lanes}f{itemsize * 8}"
        )
        self.zero = ir.Constant(vec, None)
        self.undef = ir.Constant(vec, ir.Undefined)
        self.splat_mask = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)
        # Accumulators live in allocas of the entry block, which LLVM promotes to registers.
        self.slots = {
            (rows, width): [[cgutils.alloca_once(builder, vec) for _ in range(width)] for _ in range(rows)]
            for rows, width in {(BLOCK_ROWS, BLOCK_VECTORS)}
            | {
                (rows, narrow)
                for rows, vectors in LEFTOVER_BLOCKS
                for narrow in range(BLOCK_VECTORS, vectors + 1, BLOCK_VECTORS)
            }
        }
        self.prefetch = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32]), "llvm.prefetch.p0i8"
        )
        self.strip_width = BLOCK_VECTORS * lanes
        self.strip_size = builder.mul(self.k, self.const(self.strip_width))

    def const(self, value):
        return ir.Constant(self.i64, value)

    def vector_at(self, base, offset):
        return self.builder.bitcast(self.builder.gep(base, [offset]), self.vec.as_pointer())

    def tile(self, i0, j0, rows, width):
        """C[i0:i0+rows, j0:j0+width*lanes] over the whole k loop, in registers."""
        builder, const, lanes, strip_width = self.builder, self.const, self.lanes, self.strip_width
        acc = self.slots[(rows, width)]
        strip0 = builder.udiv(j0, const(strip_width))
        b_bases = [
            builder.add(
                builder.mul(builder.add(strip0, const(v * lanes // strip_width)), self.strip_size),
                const(v * lanes % strip_width),
            )
            for v in range(width)
        ]
        c_ptrs = [
            [
                self.vector_at(
                    self.C,
                    builder.add(builder.mul(builder.add(i0, const(r)), self.n), builder.add(j0, const(v * lanes))),
                )
                for v in range(width)
            ]
            for r in range(rows)
        ]
        self._load_accumulators(acc, c_ptrs)
        with cgutils.for_range(builder, self.k) as loop:
            self._k_step(loop.index, i0, rows, width, acc, b_bases)
        for r in range(rows):
            for v in range(width):
                builder.store(builder.load(acc[r][v]), c_ptrs[r][v], align=self.itemsize)

    def _load_accumulators(self, acc, c_ptrs):
        """Each accumulator starts at C's value if accumulating, else 0."""
        builder = self.builder
        for r, row in enumerate(acc):
            for v, slot in enumerate(row):
                old = builder.load(c_ptrs[r][v], align=self.itemsize)
                builder.store(builder.select(self.accumulate, old, self.zero), slot)

    def _k_step(self, kk, i0, rows, width, acc, b_bases):
        """One k of a tile: the strip's vectors loaded (and, in 2-vector strips, prefetched ahead),
        then per row A's element broadcast and multiplied-added into the row's accumulators."""
        builder, const, itemsize, i32 = self.builder, self.const, self.itemsize, self.i32
        b_row = builder.mul(kk, const(self.strip_width))
        b_vecs = [
            builder.load(self.vector_at(self.B, builder.add(b_bases[v], b_row)), align=itemsize) for v in range(width)
        ]
        if width == BLOCK_VECTORS:
            for v in range(width):
                ahead = builder.add(builder.add(b_bases[v], b_row), const(PREFETCH_BYTES // itemsize))
                address = builder.bitcast(builder.gep(self.B, [ahead]), ir.IntType(8).as_pointer())
                builder.call(self.prefetch, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        for r in range(rows):
            a_value = builder.load(
                builder.gep(self.A, [builder.add(builder.mul(builder.add(i0, const(r)), self.k), kk)])
            )
            a_vec = builder.shuffle_vector(
                builder.insert_element(self.undef, a_value, ir.Constant(i32, 0)), self.undef, self.splat_mask
            )
            for v in range(width):
                builder.store(builder.call(self.fma, [a_vec, b_vecs[v], builder.load(acc[r][v])]), acc[r][v])

    def row_block(self, i0, rows, vectors):
        """`rows` rows from i0 over blocks of `vectors` vectors of columns, then the columns left
        in one narrower block."""
        builder, const = self.builder, self.const
        n = self.n
        span = const(vectors * self.lanes)
        wide = builder.sub(n, builder.urem(n, span))
        with cgutils.for_range_slice(builder, const(0), wide, span) as (j0, _):
            self.tile(i0, j0, rows, vectors)
        rest = builder.sub(n, wide)
        for narrow in range(BLOCK_VECTORS, vectors, BLOCK_VECTORS):
            with builder.if_then(builder.icmp_unsigned("==", rest, const(narrow * self.lanes))):
                self.tile(i0, wide, rows, narrow)

    def emit(self):
        builder, const, m = self.builder, self.const, self.m
        # Full blocks of rows: column strips outside, row blocks inside (the strip stays in L2).
        full_rows = builder.sub(m, builder.urem(m, const(BLOCK_ROWS)))
        strip = const(BLOCK_VECTORS * self.lanes)
        with (
            cgutils.for_range_slice(builder, const(0), self.n, strip) as (j0, _),
            cgutils.for_range_slice(builder, const(0), full_rows, const(BLOCK_ROWS)) as (i0, _),
        ):
            self.tile(i0, j0, BLOCK_ROWS, BLOCK_VECTORS)
        # Rows left over (fewer than 8: a few streams of the sampler, or batch 1) in blocks of 4,
        # then 2, then 1 row: each block reads w once, over column blocks wide enough for 16 (or 8)
        # accumulators, and the columns left (2, 4 or 6 vectors) in one block, whose independent
        # accumulators hide more of the FMA latency than 2-vector blocks one after another (the
        # sampler's logits, 64 columns of one row: 0.8 against 1.6 us).
        start = full_rows
        for rows, vectors in LEFTOVER_BLOCKS:
            fits = builder.icmp_unsigned(">=", builder.sub(m, start), const(rows))
            with builder.if_then(fits):
                self.row_block(start, rows, vectors)
            start = builder.add(start, builder.select(fits, const(rows), const(0)))
        builder.ret_void()


@intrinsic
def _step_gemm(typingctx, a, b, c, accumulate):
    """c = a @ b, or c += a @ b if accumulate; a (m, k), c (m, n) C-contiguous, b packed
    (n // strip, k, strip). Shapes are taken from a and c, not checked."""
    if not all(isinstance(x, types.Array) and x.layout == "C" for x in (a, b, c)):
        return None
    dtype = c.dtype
    if a.dtype != dtype or b.dtype != dtype or str(dtype) not in GEMM_SYMBOL:
        return None

    def codegen(context, builder, sig, args):
        real = context.get_value_type(dtype)
        fn = _step_gemm_function(builder.module, real, context.get_abi_sizeof(real))
        arrays = [context.make_array(t)(context, builder, v) for t, v in zip(sig.args[:3], args[:3], strict=True)]
        m = builder.extract_value(arrays[0].shape, 0)
        k = builder.extract_value(arrays[0].shape, 1)
        n = builder.extract_value(arrays[2].shape, 1)
        data = [builder.bitcast(x.data, real.as_pointer()) for x in arrays]
        builder.call(fn, data + [m, n, k, args[3]])
        return context.get_dummy_value()

    return types.void(a, b, c, types.boolean), codegen


@njit(cache=True, nogil=True)
def step_product(a, w, c, accumulate):
    """c = a @ w (+ c if accumulate): a (rows, k), c (rows, n), w the operand (strips, k, width)
    (see the module's docstring). The vector kernel on AVX-512 when w is packed in its strips,
    OpenBLAS on the plain matrix otherwise."""
    rows, k = a.shape
    n = c.shape[1]
    if AVX512 and w.shape[2] == VECTOR_BYTES // a.itemsize * BLOCK_VECTORS:
        _step_gemm(a, w, c, accumulate)
    else:
        beta = c.dtype.type(1.0) if accumulate else c.dtype.type(0.0)
        gemm(NO_TRANS, NO_TRANS, rows, n, k, c.dtype.type(1.0), a, k, w[0], n, beta, c, n)
