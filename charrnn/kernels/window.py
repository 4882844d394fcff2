"""Loss and gradients of a model (rnn, gru or lstm; one or more layers; dropout) over a (batch,
time) window: `Kernels`.

How the work is laid out (each choice measured; see bench/bench_train.py):
- Layer 0's input product x_t U.0 is a gather of rows of U.0, never a one-hot product.
- Only the recurrence runs step by step: per layer and step one fused (rows, H) @ (H, G*H)
  product forward (charrnn.kernels.stepgemm) and one fused elementwise kernel for the gates
  (charrnn.kernels.cells), and backward one kernel and one (rows, G*H) @ (G*H, H) product with W
  transposed. Both products read their W (or W^T) packed in strips once per window.
- Everything that does not depend on time is one large product over the window through numpy's
  OpenBLAS (charrnn.kernels.blas): the input products of layers >= 1 and their gradients, dW,
  and the output layer (its logits and their gradients in row blocks, so that a vocabulary of
  thousands stays small in memory). The layers run one after the other, each over the whole window.
- float32 uses vectorisable approximations of exp, tanh and sigmoid (charrnn.kernels.fastmath);
  float64 keeps the exact library functions, so the float64 gradient check tests everything else.
- `threads > 1` cuts the batch into contiguous chunks; each chunk runs the whole window on its own
  buffers with one BLAS thread, and the chunks' gradients are summed in a fixed order, so results
  are deterministic for a given thread count (they differ from one thread by float rounding only).
- Dropout masks are recomputed from a hash of (seed, step, layer, batch row, t, unit)
  (charrnn.kernels.dropout): the same for any thread count, and nothing to save for a resume.
"""

from __future__ import annotations

import math
import weakref

import numpy as np
from numba import njit

from charrnn.kernels.blas import BLAS_BACKEND, NO_TRANS, TRANS, OneBlasThread, gemm
from charrnn.kernels.cells import gru_backward, gru_forward, lstm_backward, lstm_forward, rnn_backward, rnn_forward
from charrnn.kernels.dropout import apply_mask, apply_mask_in_place, stream_key, threshold
from charrnn.kernels.fastmath import FAST, FASTMATH_ORDERED, fast_exp
from charrnn.kernels.layout import GRU, LSTM, RNN, gate_count, layer_views, output_views
from charrnn.kernels.stepgemm import operand_width, pack, pack_transposed, step_product
from charrnn.kernels.threads import ChunkThreads, chunk_bounds
from charrnn.model.params import Params
from charrnn.model.spec import ModelSpec

__all__ = ["Kernels", "BLAS_BACKEND"]

# ---------------------------------------------------------------------------------------------
# Small helpers.
# ---------------------------------------------------------------------------------------------


@njit(inline="always")
def _window(buf, n, rows, width):
    """The first n * rows * width entries of a flat buffer as (n, rows, width)."""
    return buf[: n * rows * width].reshape((n, rows, width))


@njit(cache=True, nogil=True)
def _gather(U, b, inputs, b0, t, out):
    """out (rows, G*H) = U[inputs[b0 + i, t]] + b: layer 0's input product."""
    for i in range(out.shape[0]):
        row = U[inputs[b0 + i, t]]
        o = out[i]
        for j in range(o.size):
            o[j] = row[j] + b[j]


@njit(cache=True, nogil=True)
def _input_product(x, U, b, out):
    """out (n, G*H) = x (n, H) @ U (H, G*H) + b: a layer >= 1's input product, whole window."""
    n, gh = out.shape
    for i in range(n):
        out[i] = b
    gemm(NO_TRANS, NO_TRANS, n, gh, x.shape[1], out.dtype.type(1.0), x, x.shape[1], U, gh, out.dtype.type(1.0), out, gh)


@njit(cache=True, nogil=True)
def _add_column_sums(a, out):
    """out += a.sum(axis=0), a (n, m), in row order."""
    for i in range(a.shape[0]):
        row = a[i]
        for j in range(out.size):
            out[j] += row[j]


@njit(cache=True, nogil=True)
def _sum_into(target, others):
    """target += others[0] + others[1] + ... in that order (a fixed order keeps results
    deterministic for a given thread count)."""
    for w in range(others.shape[0]):
        part = others[w]
        for i in range(target.size):
            target[i] += part[i]


# ---------------------------------------------------------------------------------------------
# Output layer: softmax cross-entropy.
# ---------------------------------------------------------------------------------------------


@njit(cache=True, **FAST)
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


@njit(cache=True, fastmath=FASTMATH_ORDERED, error_model="numpy")
def _softmax_xent(logits, targets, b0, chunk_batch, row0, scale, grad):
    """The summed cross-entropy (float64, nats) of `logits` (rows, vocab), overwriting them with
    exp(logits - max), or with dL/dlogits = (softmax - onehot(target)) * scale if `grad`. Row r
    is time step (row0 + r) // chunk_batch of batch row b0 + (row0 + r) % chunk_batch.

    Numba compiles it once for grad=True and once for grad=False (a literal at both calls), so
    the sum is compiled without "reassoc": with it, x86's backend grouped the adds of `total`
    differently in the two (loss and loss_and_grad 1 ulp apart in float64 without FMA)."""
    total = 0.0
    for i in range(logits.shape[0]):
        r = row0 + i
        target = targets[b0 + r % chunk_batch, r // chunk_batch]
        row = logits[i]
        target_logit = row[target]
        peak, denom = _exp_row(row)
        total += math.log(float(denom)) - float(target_logit - peak)
        if grad:
            inv = scale / denom
            for j in range(row.size):
                row[j] *= inv
            row[target] -= scale
    return total


@njit(cache=True, nogil=True)
def _output_layer(x, V, b_y, targets, b0, chunk, logits_buf, rows_per_block, scale, grad, dV, db_y, dx):
    """Summed cross-entropy of softmax(x V + b_y), x (T * chunk, H) with row t * chunk + i for
    batch row b0 + i at step t, in blocks of rows. If `grad`: dV, db_y (overwritten) and dx
    (T * chunk, H) = dL/dx for the loss times `scale`."""
    n_rows, hidden = x.shape
    vocab = b_y.size
    one, zero = V.dtype.type(1.0), V.dtype.type(0.0)
    if grad:
        dV[:] = zero
        db_y[:] = zero
    total = 0.0
    for r0 in range(0, n_rows, rows_per_block):
        r1 = min(n_rows, r0 + rows_per_block)
        logits = logits_buf[: (r1 - r0) * vocab].reshape((r1 - r0, vocab))
        for i in range(r1 - r0):
            logits[i] = b_y
        gemm(NO_TRANS, NO_TRANS, r1 - r0, vocab, hidden, one, x[r0:], hidden, V, vocab, one, logits, vocab)
        total += _softmax_xent(logits, targets, b0, chunk, r0, scale, grad)
        if grad:
            gemm(TRANS, NO_TRANS, hidden, vocab, r1 - r0, one, x[r0:], hidden, logits, vocab, one, dV, vocab)
            _add_column_sums(logits, db_y)
            gemm(NO_TRANS, TRANS, r1 - r0, hidden, vocab, one, logits, vocab, V, vocab, zero, dx[r0:], hidden)
    return total


# ---------------------------------------------------------------------------------------------
# One chunk of the batch over the whole window, layer after layer.
# Buffers are flat per layer ((layers, size) arrays, sized for the widest chunk and the longest
# window) and viewed as (T, rows, width) here; a width is 0 where the cell does not need the buffer.
# ---------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _layer_forward(cell, layer, U, W, b, b_hn, inputs, b0, hs, cs, gates, ahn, ah):
    """The recurrence of one layer over the window, W its step operand (see stepgemm): hs
    (T+1, rows, H) with hs[0] the initial h
    (and cs for lstm likewise); gates (T, rows, G*H) hold the input product for layers >= 1 (for
    rnn that is hs[1:]) and the gate values after; ahn (T, rows, H) gru's a_h[n] + b_hn; ah
    (rows, G*H) gru's scratch for h_{t-1} W."""
    T = hs.shape[0] - 1
    for t in range(T):
        if cell == RNN:
            pre = hs[t + 1]
            if layer == 0:
                _gather(U, b, inputs, b0, t, pre)
            step_product(hs[t], W, pre, True)
            rnn_forward(pre)
        elif cell == LSTM:
            pre = gates[t]
            if layer == 0:
                _gather(U, b, inputs, b0, t, pre)
            step_product(hs[t], W, pre, True)
            lstm_forward(pre, cs[t], cs[t + 1], hs[t + 1])
        else:
            pre = gates[t]
            if layer == 0:
                _gather(U, b, inputs, b0, t, pre)
            step_product(hs[t], W, ah, False)
            gru_forward(pre, ah, b_hn, hs[t], hs[t + 1], ahn[t])


@njit(cache=True, nogil=True)
def _forward(
    flat,
    W_op,
    cell,
    layers,
    vocab,
    hidden,
    inputs,
    b0,
    b1,
    state0,
    state_last,
    hs_buf,
    cs_buf,
    gates_buf,
    ahn_buf,
    ah_buf,
    drop_buf,
    key,
    limit,
    keep_scale,
):
    """All layers forward for batch rows b0:b1, W_op[l] layer l's W as step operand; writes
    state_last[b0:b1] (after reading state0[b0:b1, l] for layer l: they may be the same array).
    With dropout (drop_buf of width H), drop_buf[l] holds layer l's output after dropout. Returns
    the last layer's output as (T * rows, H), what the output layer reads."""
    T = inputs.shape[1]
    rows = b1 - b0
    gh = gate_count(cell) * hidden
    c_width = hidden if cell == LSTM else 0
    g_width = gh if cell != RNN else 0
    n_width = hidden if cell == GRU else 0
    dropping = drop_buf.shape[1] > 0
    ah = ah_buf[: rows * n_width * 3].reshape((rows, n_width * 3))
    x = hs_buf[0, : T * rows * hidden].reshape((T * rows, hidden))
    for layer in range(layers):
        U, W, b, b_hn = layer_views(flat, cell, vocab, hidden, layer)
        hs = _window(hs_buf[layer], T + 1, rows, hidden)
        cs = _window(cs_buf[layer], T + 1, rows, c_width)
        gates = _window(gates_buf[layer], T, rows, g_width)
        ahn = _window(ahn_buf[layer], T, rows, n_width)
        hs[0] = state0[b0:b1, layer, 0]
        if cell == LSTM:
            cs[0] = state0[b0:b1, layer, 1]
        if layer > 0:  # x: the layer below's output, (T * rows, H)
            if cell == RNN:
                pre = hs_buf[layer, rows * hidden : (T + 1) * rows * hidden].reshape((T * rows, gh))
            else:
                pre = gates_buf[layer, : T * rows * gh].reshape((T * rows, gh))
            _input_product(x, U, b, pre)
        _layer_forward(cell, layer, U, W_op[layer], b, b_hn, inputs, b0, hs, cs, gates, ahn, ah)
        state_last[b0:b1, layer, 0] = hs[T]
        if cell == LSTM:
            state_last[b0:b1, layer, 1] = cs[T]
        if dropping:
            dropped = _window(drop_buf[layer], T, rows, hidden)
            apply_mask(hs[1:], dropped, key, layer, b0, limit, keep_scale)
            x = drop_buf[layer, : T * rows * hidden].reshape((T * rows, hidden))
        else:
            x = hs_buf[layer, rows * hidden : (T + 1) * rows * hidden].reshape((T * rows, hidden))
    return x


@njit(cache=True, nogil=True)
def _chunk_loss(
    flat,
    W_op,
    cell,
    layers,
    vocab,
    hidden,
    inputs,
    targets,
    b0,
    b1,
    state0,
    state_last,
    hs_buf,
    cs_buf,
    gates_buf,
    ahn_buf,
    ah_buf,
    drop_buf,
    logits_buf,
    rows_per_block,
):
    """Summed cross-entropy of batch rows b0:b1 over the window (no dropout: drop_buf has width
    0); writes state_last[b0:b1]."""
    rows = b1 - b0
    V, b_y = output_views(flat, vocab, hidden)
    x = _forward(
        flat,
        W_op,
        cell,
        layers,
        vocab,
        hidden,
        inputs,
        b0,
        b1,
        state0,
        state_last,
        hs_buf,
        cs_buf,
        gates_buf,
        ahn_buf,
        ah_buf,
        drop_buf,
        np.uint64(0),
        np.uint64(0),
        flat.dtype.type(1.0),
    )
    return _output_layer(
        x, V, b_y, targets, b0, rows, logits_buf, rows_per_block, flat.dtype.type(1.0), False, V, b_y, x
    )


@njit(cache=True, nogil=True)
def _layer_backward(cell, W_T, dh_up, hs, cs, gates, ahn, da, dxn, dh_next, dc_next):
    """Backward through one layer's recurrence: from dh_up (T, rows, H), dL/dh_t from above,
    writes da (T, rows, G*H), the gradient of the pre-activations (for gru that of a_h = h W, and
    dxn (T, rows, H) the n block of a_x's; see cells.gru_backward). Leaves dL/dh_0 in dh_next
    and, for lstm, dL/dc_0 in dc_next (rows, H)."""
    T = dh_up.shape[0]
    zero = dh_next.dtype.type(0.0)
    dh_next[:] = zero
    dc_next[:] = zero
    for t in range(T - 1, -1, -1):
        if cell == RNN:
            rnn_backward(dh_up[t], dh_next, hs[t + 1], da[t])
            step_product(da[t], W_T, dh_next, False)  # dh_{t-1} = da_t W^T
        elif cell == LSTM:
            lstm_backward(dh_up[t], dh_next, dc_next, gates[t], cs[t], cs[t + 1], da[t])
            step_product(da[t], W_T, dh_next, False)
        else:
            gru_backward(dh_up[t], dh_next, gates[t], ahn[t], hs[t], da[t], dxn[t])
            step_product(da[t], W_T, dh_next, True)  # dh_{t-1} = dh_t z + dah_t W^T


@njit(cache=True, nogil=True)
def _scatter_input_rows(dU, db, da, dxn, split, inputs, b0):
    """dU[inputs[b0 + i, t]] += dx[t, i] and db = the sum of dx: layer 0's input gradients (dU, db
    zeroed here), dx (T, rows, G*H) the gradient of x U + b: da's columns below `split`, and
    dxn's (T, rows, G*H - split) above (gru's n block; split = G*H for the other cells)."""
    zero = dU.dtype.type(0.0)
    dU[:] = zero
    db[:] = zero
    T, rows, gh = da.shape
    for t in range(T):
        for i in range(rows):
            dU_row = dU[inputs[b0 + i, t]]
            da_row = da[t, i]
            for j in range(split):
                db[j] += da_row[j]
                dU_row[j] += da_row[j]
            if split < gh:
                dU_rest = dU_row[split:]
                db_rest = db[split:]
                xn = dxn[t, i]
                for j in range(gh - split):
                    db_rest[j] += xn[j]
                    dU_rest[j] += xn[j]


@njit(cache=True, nogil=True)
def _input_grads(x, U, dU, db, da_rows, dxn_rows, split, dx):
    """A layer >= 1's input gradients: dU = x^T dax, db = the sum of dax, dx = dax U^T, where dax
    (n, G*H), the gradient of x U + b, is da_rows's columns below `split` and dxn_rows's above
    (see `_scatter_input_rows`); x (n, H)."""
    n, hidden = x.shape
    gh = U.shape[1]
    one, zero = U.dtype.type(1.0), U.dtype.type(0.0)
    gemm(TRANS, NO_TRANS, hidden, split, n, one, x, hidden, da_rows, gh, zero, dU, gh)
    db[:] = zero
    _add_column_sums(da_rows[:, :split], db[:split])
    gemm(NO_TRANS, TRANS, n, hidden, split, one, da_rows, gh, U, gh, zero, dx, hidden)
    if split < gh:
        rest = gh - split
        gemm(TRANS, NO_TRANS, hidden, rest, n, one, x, hidden, dxn_rows, rest, zero, dU[:, split:], gh)
        _add_column_sums(dxn_rows, db[split:])
        gemm(NO_TRANS, TRANS, n, hidden, rest, one, dxn_rows, rest, U[:, split:], gh, one, dx, hidden)


@njit(cache=True, nogil=True)
def _chunk_loss_and_grad(
    flat,
    W_op,
    W_T,
    grad_flat,
    cell,
    layers,
    vocab,
    hidden,
    inputs,
    targets,
    b0,
    b1,
    state0,
    state_last,
    dstate0,
    hs_buf,
    cs_buf,
    gates_buf,
    ahn_buf,
    ah_buf,
    drop_buf,
    dh_buf,
    da_buf,
    dxn_buf,
    dh_next,
    dc_next,
    logits_buf,
    rows_per_block,
    scale,
    key,
    limit,
    keep_scale,
):
    """Summed cross-entropy of batch rows b0:b1 over the window, and into `grad_flat` the gradient
    of (that sum * scale) for this chunk alone; writes state_last[b0:b1] and dstate0[b0:b1].
    W_op[l] and W_T[l] are layer l's W and W^T as step operands (see stepgemm): packed, or plain
    and contiguous (OpenBLAS too ran 1.4x slower with the transpose flag)."""
    T = inputs.shape[1]
    rows = b1 - b0
    n = T * rows
    gh = gate_count(cell) * hidden
    one, zero = flat.dtype.type(1.0), flat.dtype.type(0.0)
    c_width = hidden if cell == LSTM else 0
    g_width = gh if cell != RNN else 0
    n_width = hidden if cell == GRU else 0
    dropping = drop_buf.shape[1] > 0
    V, b_y = output_views(flat, vocab, hidden)
    dV, db_y = output_views(grad_flat, vocab, hidden)

    x = _forward(
        flat,
        W_op,
        cell,
        layers,
        vocab,
        hidden,
        inputs,
        b0,
        b1,
        state0,
        state_last,
        hs_buf,
        cs_buf,
        gates_buf,
        ahn_buf,
        ah_buf,
        drop_buf,
        key,
        limit,
        keep_scale,
    )
    dx = dh_buf[: n * hidden].reshape((n, hidden))
    total = _output_layer(x, V, b_y, targets, b0, rows, logits_buf, rows_per_block, scale, True, dV, db_y, dx)
    dh_up = _window(dh_buf, T, rows, hidden)
    if dropping:
        apply_mask_in_place(dh_up, key, layers - 1, b0, limit, keep_scale)

    da = _window(da_buf, T, rows, gh)
    dxn = _window(dxn_buf, T, rows, n_width)
    da_rows = da_buf[: n * gh].reshape((n, gh))
    dxn_rows = dxn_buf[: n * n_width].reshape((n, n_width))
    split = gh - n_width  # gru: a_x's n block is in dxn
    dh_rows = dh_next[:rows]
    dc_rows = dc_next[:rows]
    for layer in range(layers - 1, -1, -1):
        U, W, b, b_hn = layer_views(flat, cell, vocab, hidden, layer)
        dU, dW, db, db_hn = layer_views(grad_flat, cell, vocab, hidden, layer)
        hs = _window(hs_buf[layer], T + 1, rows, hidden)
        cs = _window(cs_buf[layer], T + 1, rows, c_width)
        gates = _window(gates_buf[layer], T, rows, g_width)
        ahn = _window(ahn_buf[layer], T, rows, n_width)
        _layer_backward(cell, W_T[layer], dh_up, hs, cs, gates, ahn, da, dxn, dh_rows, dc_rows)
        dstate0[b0:b1, layer, 0] = dh_rows
        if cell == LSTM:
            dstate0[b0:b1, layer, 1] = dc_rows

        # dW = sum_t h_{t-1}^T da(t) as one product; b_hn's gradient is the sum of gru's da[n].
        h_prev = hs_buf[layer, : n * hidden].reshape((n, hidden))  # h_0 .. h_{T-1}
        gemm(TRANS, NO_TRANS, hidden, gh, n, one, h_prev, hidden, da_rows, gh, zero, dW, gh)
        if cell == GRU:
            db_hn[:] = zero
            _add_column_sums(da_rows[:, split:], db_hn)
        if layer == 0:
            _scatter_input_rows(dU, db, da, dxn, split, inputs, b0)
        else:
            # This layer's input is the one below's output (after dropout): dU, db, and dL/dx,
            # which becomes dh_up of the layer below.
            if dropping:
                x = drop_buf[layer - 1, : n * hidden].reshape((n, hidden))
            else:
                x = hs_buf[layer - 1, rows * hidden : (T + 1) * rows * hidden].reshape((n, hidden))
            _input_grads(x, U, dU, db, da_rows, dxn_rows, split, dx)
            if dropping:
                apply_mask_in_place(dh_up, key, layer - 1, b0, limit, keep_scale)
    return total


# ---------------------------------------------------------------------------------------------
# The Python edge: checks once, preallocates every buffer once.
# ---------------------------------------------------------------------------------------------

# Output-layer rows per block: the logits block (rows x vocab) holds at most 2M values (8 MB of
# float32) per chunk, so a vocabulary of thousands does not need (B*T, vocab) logits. Smaller
# blocks cost speed there: at V=5000, H=512 blocks of 26, 104, 419 and all 2048 rows ran at 64, 88,
# 99 and 100 GFLOP/s (each product re-reads the whole of V and dV). V=65 fits in one block.
LOGIT_BLOCK_ELEMENTS = 1 << 21


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _whole_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)


class Kernels:
    """Loss and gradients of the model `spec` for windows of shape (batch_size, <= seq_length).

    After each call `state_last` (batch_size, layers, K, H) (see ModelSpec.state_shape) is the
    state after the window's last step and, after `loss_and_grad`, `dstate0` (same shape) is
    d(mean loss)/d(state0). Both are overwritten by the next call (passing `state_last` back as
    `state0` is fine).

    `dropout` p applies (in `loss_and_grad` only) to each layer's output on its way up, the last
    layer's included; masks come from (seed, step), see charrnn.kernels.dropout.

    With `threads` > 1 the batch is cut into that many contiguous chunks (at most one per row);
    the calling thread and threads - 1 worker threads run them, each chunk with its own buffers and
    one BLAS thread (the compiled kernels release the GIL). One call at a time per instance; the
    worker threads do not survive a fork."""

    def __init__(
        self,
        spec: ModelSpec,
        batch_size: int,
        seq_length: int,
        dtype=np.float32,
        threads: int = 1,
        dropout: float = 0.0,
    ):
        if not isinstance(spec, ModelSpec):
            raise ValueError(f"spec must be a ModelSpec, got {type(spec).__name__}")
        self.spec = spec
        self.batch_size = _positive_int("batch_size", batch_size)
        self.seq_length = _positive_int("seq_length", seq_length)
        self.threads = _positive_int("threads", threads)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)

        self.bounds = chunk_bounds(self.batch_size, self.threads)
        n_chunks = len(self.bounds) - 1
        widest = max(b - a for a, b in zip(self.bounds, self.bounds[1:], strict=False))
        L, H, V, S = spec.layers, spec.hidden, spec.vocab_size, self.seq_length
        GH = spec.gates * H
        cell = spec.cell
        rows = S * widest
        self.rows_per_block = max(1, min(rows, LOGIT_BLOCK_ELEMENTS // V))

        def per_chunk(*shape):
            return np.zeros((n_chunks,) + shape, self.dtype)

        # Per chunk, flat per layer (viewed as (T, rows, width) by the kernels):
        self._hs = per_chunk(L, (S + 1) * widest * H)  # h_0 .. h_T
        self._cs = per_chunk(L, (S + 1) * widest * H if cell == "lstm" else 0)  # c_0 .. c_T
        self._gates = per_chunk(L, rows * GH if cell != "rnn" else 0)  # gate values
        self._ahn = per_chunk(L, rows * H if cell == "gru" else 0)  # a_h[n] + b_hn
        self._ah = per_chunk(widest * GH if cell == "gru" else 0)  # h_{t-1} W
        self._drop = per_chunk(L, rows * H if self.dropout > 0 else 0)  # outputs dropped
        self._no_drop = per_chunk(L, 0)
        self._dh = per_chunk(rows * H)  # dL/dh from above
        self._da = per_chunk(rows * GH)  # dL/d(pre-act.; gru: a_h)
        self._dxn = per_chunk(rows * H if cell == "gru" else 0)  # gru: dL/d(a_x[n])
        self._dh_next = per_chunk(widest, H)
        self._dc_next = per_chunk(widest, H)
        self._logits = per_chunk(self.rows_per_block * V)
        self._private_grads = np.zeros((n_chunks - 1, spec.n_params), self.dtype)
        # The step products' operands, packed once per call (see stepgemm): W.l, and W.l^T.
        wf, wb = operand_width(GH, self.dtype.itemsize), operand_width(H, self.dtype.itemsize)
        self._W_op = np.zeros((L, GH // wf, H, wf), self.dtype)
        self._W_T = np.zeros((L, H // wb, GH, wb), self.dtype)
        self.state_last = np.zeros(spec.state_shape(self.batch_size), self.dtype)
        self.dstate0 = np.zeros(spec.state_shape(self.batch_size), self.dtype)
        self._keep_scale = self.dtype.type(1.0 / (1.0 - self.dropout))
        self._limit = threshold(self.dropout)
        self._threads = None
        if n_chunks > 1:
            self._threads = ChunkThreads(min(self.threads, n_chunks), n_chunks)
            weakref.finalize(self, self._threads.close)

    @property
    def n_chunks(self) -> int:
        return len(self.bounds) - 1

    # -- checks -------------------------------------------------------------------------------

    def _check_params(self, params, what: str) -> None:
        if not isinstance(params, Params):
            raise ValueError(f"{what} must be a Params, got {type(params).__name__}")
        if params.spec != self.spec:
            raise ValueError(
                f"{what} is a {params.spec.describe()} model (vocab "
                f"{params.spec.vocab_size}); kernels are for a {self.spec.describe()}"
                f" model (vocab {self.spec.vocab_size})"
            )
        if params.dtype != self.dtype:
            raise ValueError(f"{what} is {params.dtype}; kernels are {self.dtype}")

    def _check_ids(self, ids, what: str) -> np.ndarray:
        if not isinstance(ids, np.ndarray) or ids.dtype.kind not in "iu":
            raise ValueError(f"{what} must be an integer numpy array")
        if ids.ndim != 2 or ids.shape[0] != self.batch_size or not 1 <= ids.shape[1] <= self.seq_length:
            raise ValueError(
                f"{what} has shape {ids.shape}; expected ({self.batch_size}, T) with 1 <= T <= {self.seq_length}"
            )
        if ids.min() < 0 or ids.max() >= self.spec.vocab_size:
            raise ValueError(f"{what} holds ids outside 0..{self.spec.vocab_size - 1}")
        return np.ascontiguousarray(ids, dtype=np.int32)

    def _check_window(self, params, inputs, targets, state0):
        self._check_params(params, "params")
        inputs = self._check_ids(inputs, "inputs")
        targets = self._check_ids(targets, "targets")
        if inputs.shape != targets.shape:
            raise ValueError(f"inputs {inputs.shape} and targets {targets.shape} differ in shape")
        shape = self.spec.state_shape(self.batch_size)
        if not isinstance(state0, np.ndarray) or state0.shape != shape:
            raise ValueError(f"state0 must be an array of shape {shape}")
        if state0.dtype != self.dtype:
            raise ValueError(f"state0 is {state0.dtype}; kernels are {self.dtype}")
        return inputs, targets, np.ascontiguousarray(state0)

    def _run_chunks(self, run_chunk) -> float:
        """run_chunk(w) for every chunk, the first on this thread; the summed float64 results."""
        with OneBlasThread():
            if self._threads is None:
                return run_chunk(0)
            return self._threads.run(run_chunk)

    def _pack(self, params, transposed: bool) -> None:
        """Each W.l as the step product's operand (and W.l^T for the backward pass)."""
        for layer in range(self.spec.layers):
            W = params[f"W.{layer}"]
            pack(W, self._W_op[layer])
            if transposed:
                pack_transposed(W, self._W_T[layer])

    # -- kernels ------------------------------------------------------------------------------

    def loss_and_grad(
        self, params: Params, inputs, targets, state0, grads: Params, seed: int = 0, step: int = 0
    ) -> float:
        """Mean cross-entropy (nats per character) over the window, with dropout if the kernels
        have it (masks from `seed` and the global `step`); overwrites `grads` with its gradient
        and sets `state_last` and `dstate0`."""
        inputs, targets, state0 = self._check_window(params, inputs, targets, state0)
        self._check_params(grads, "grads")
        if np.may_share_memory(grads.flat, params.flat):
            raise ValueError("grads must not share memory with params")
        seed, step = _whole_number("seed", seed), _whole_number("step", step)
        if step < 0:
            raise ValueError(f"step must not be negative, got {step}")
        key = stream_key(seed, step)
        n_chars = inputs.size
        scale = self.dtype.type(1.0 / n_chars)
        spec = self.spec
        self._pack(params, transposed=True)
        drop = self._drop if self.dropout > 0 else self._no_drop

        def run_chunk(w):
            target = grads.flat if w == 0 else self._private_grads[w - 1]
            return _chunk_loss_and_grad(
                params.flat,
                self._W_op,
                self._W_T,
                target,
                spec.cell_code,
                spec.layers,
                spec.vocab_size,
                spec.hidden,
                inputs,
                targets,
                self.bounds[w],
                self.bounds[w + 1],
                state0,
                self.state_last,
                self.dstate0,
                self._hs[w],
                self._cs[w],
                self._gates[w],
                self._ahn[w],
                self._ah[w],
                drop[w],
                self._dh[w],
                self._da[w],
                self._dxn[w],
                self._dh_next[w],
                self._dc_next[w],
                self._logits[w],
                self.rows_per_block,
                scale,
                key,
                self._limit,
                self._keep_scale,
            )

        total = self._run_chunks(run_chunk)
        if self.n_chunks > 1:
            _sum_into(grads.flat, self._private_grads)
        return total / n_chars

    def loss(self, params: Params, inputs, targets, state0) -> float:
        """Mean cross-entropy (nats per character) over the window, forward only and without
        dropout (evaluation); sets `state_last`."""
        inputs, targets, state0 = self._check_window(params, inputs, targets, state0)
        spec = self.spec
        self._pack(params, transposed=False)

        def run_chunk(w):
            return _chunk_loss(
                params.flat,
                self._W_op,
                spec.cell_code,
                spec.layers,
                spec.vocab_size,
                spec.hidden,
                inputs,
                targets,
                self.bounds[w],
                self.bounds[w + 1],
                state0,
                self.state_last,
                self._hs[w],
                self._cs[w],
                self._gates[w],
                self._ahn[w],
                self._ah[w],
                self._no_drop[w],
                self._logits[w],
                self.rows_per_block,
            )

        return self._run_chunks(run_chunk) / inputs.size

    def layer_states(self, layer: int, T: int) -> tuple[np.ndarray, np.ndarray | None]:
        """After `loss` (or `loss_and_grad`, before dropout) of a T-step window on one chunk:
        layer `layer`'s h_1 .. h_T as a (T, batch, H) view of the kernels' buffers, and c_1 ..
        c_T likewise for lstm (else None). The next call overwrites them (charrnn.analysis)."""
        if self.n_chunks != 1:
            raise ValueError("layer_states needs kernels with one chunk (threads=1)")
        if not 0 <= layer < self.spec.layers or not 1 <= T <= self.seq_length:
            raise ValueError(f"layer {layer} or T {T} out of range")
        rows, H = self.batch_size, self.spec.hidden
        h = self._hs[0, layer, rows * H : (T + 1) * rows * H].reshape((T, rows, H))
        c = None
        if self.spec.cell == "lstm":
            c = self._cs[0, layer, rows * H : (T + 1) * rows * H].reshape((T, rows, H))
        return h, c
