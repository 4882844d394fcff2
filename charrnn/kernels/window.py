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

import weakref

import numpy as np

from charrnn.kernels.blas import BLAS_BACKEND, OneBlasThread
from charrnn.kernels.chunk import chunk_loss, chunk_loss_and_grad, sum_into
from charrnn.kernels.dropout import stream_key, threshold
from charrnn.kernels.stepgemm import operand_width, pack, pack_transposed
from charrnn.kernels.threads import ChunkThreads, chunk_bounds
from charrnn.model.params import Params
from charrnn.model.spec import ModelSpec

__all__ = ["Kernels", "BLAS_BACKEND"]

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
            return chunk_loss_and_grad(
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
            sum_into(grads.flat, self._private_grads)
        return total / n_chars

    def loss(self, params: Params, inputs, targets, state0) -> float:
        """Mean cross-entropy (nats per character) over the window, forward only and without
        dropout (evaluation); sets `state_last`."""
        inputs, targets, state0 = self._check_window(params, inputs, targets, state0)
        spec = self.spec
        self._pack(params, transposed=False)

        def run_chunk(w):
            return chunk_loss(
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
