"""The parameter layout of charrnn.model.spec, as compiled kernels see it: the cells' integer codes and
views of one layer's arrays, and of the output layer's, in the flat buffer. Every kernel that walks the
flat buffer (the training window, evaluation) takes its views from here; the sampler cuts the model
into parts by name instead (charrnn.kernels.parts.split_weights)."""

from __future__ import annotations

from numba import njit

from charrnn.model.spec import CELLS

RNN, GRU, LSTM = CELLS.index("rnn"), CELLS.index("gru"), CELLS.index("lstm")  # ModelSpec.cell_code


@njit(cache=True)
def gate_count(cell):
    """G: blocks of H columns in a layer's pre-activation (rnn 1, gru 3, lstm 4)."""
    return 1 if cell == RNN else (3 if cell == GRU else 4)


@njit(cache=True)
def layer_views(flat, cell, vocab, hidden, layer):
    """U (vocab or H, G*H), W (H, G*H), b (G*H,), b_hn (H,; empty unless gru) of one layer."""
    gh = gate_count(cell) * hidden
    extra = hidden if cell == GRU else 0
    start = 0
    if layer > 0:
        start = vocab * gh + hidden * gh + gh + extra + (layer - 1) * (2 * hidden * gh + gh + extra)
    rows = vocab if layer == 0 else hidden
    U = flat[start : start + rows * gh].reshape((rows, gh))
    start += rows * gh
    W = flat[start : start + hidden * gh].reshape((hidden, gh))
    start += hidden * gh
    b = flat[start : start + gh]
    start += gh
    b_hn = flat[start : start + extra]
    return U, W, b, b_hn


@njit(cache=True)
def output_views(flat, vocab, hidden):
    """V (H, vocab), b_y (vocab,): the last arrays of the buffer."""
    end = flat.size
    V = flat[end - hidden * vocab - vocab : end - vocab].reshape((hidden, vocab))
    return V, flat[end - vocab :]
