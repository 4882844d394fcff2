"""One batch chunk of a (batch, time) window, forward and backward, compiled: the layers one after
the other over the whole window (the recurrence step by step, the rest as window-wide products), then
the output layer's softmax cross-entropy. charrnn.kernels.window's `Kernels` checks the arguments,
owns the buffers and runs the chunks on threads; see its docstring for how the work is laid out.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from charrnn.kernels.blas import NO_TRANS, TRANS, gemm
from charrnn.kernels.cells import gru_backward, gru_forward, lstm_backward, lstm_forward, rnn_backward, rnn_forward
from charrnn.kernels.dropout import apply_mask, apply_mask_in_place
from charrnn.kernels.fastmath import FAST, FASTMATH_ORDERED, fast_exp
from charrnn.kernels.layout import GRU, LSTM, RNN, gate_count, layer_views, output_views
from charrnn.kernels.stepgemm import step_product

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
def sum_into(target, others):
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
def chunk_loss(
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
def chunk_loss_and_grad(
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
