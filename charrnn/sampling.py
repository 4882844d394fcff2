"""Generating text from a trained model, one character at a time.

The per-character loop runs in Numba-compiled kernels, a chunk of characters per call, carrying the
hidden state from one call to the next so that text can be shown as it is made. Every random number
is drawn here, in Python, from the caller's seeded `np.random.Generator` and handed to the kernel
as an array: the same seed gives the same text whether the JIT is on or off (NUMBA_DISABLE_JIT=1),
and however the characters are split into chunks (a Generator's `random(a)` then `random(b)` gives
the same numbers as `random(a + b)`).

One step, in the model's notation (x the one-hot of the last character, so x U.0 is a row of
U.0): every layer's cell (charrnn.spec) updates its state, then
    logits = h V + b_y;  p = softmax(logits / temperature)
from the last layer's h; then p is cut to its `top_k` most likely characters, then to the smallest most likely set whose
mass reaches `top_p` of what is left, renormalised, and one character is drawn by inverse CDF.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numba import njit
from numba.core import config as numba_config

from charrnn.checkpoint import MODEL_FILE, Model, load_model
from charrnn.errors import InputError, ModelFormatError
from charrnn.kernels.fastmath import fast_sigmoid, fast_tanh
from charrnn.kernels.stepgemm import block_columns, operand_width, pack, step_product
from charrnn.params import Params
from charrnn.resources import DEFAULT_MODEL, bundled_model_dir, bundled_model_names
from charrnn.spec import ModelSpec
from charrnn.vocab import Vocab

# Reassociation lets LLVM vectorise the matrix-vector products and fuse multiply-adds; the draw
# itself (_draw) is compiled without it, so a character's choice is exact IEEE arithmetic on the
# probabilities.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Characters per kernel call: small at first so the first characters show at once, then larger so
# the per-call overhead (a Generator call, a dispatch, a decode) is spread thin.
FIRST_CHUNK = 16
MAX_CHUNK = 256


# ----------------------------------------------------------------------------------------------
# Kernels. Arrays are C-contiguous unless said; weights and states float32, ids int64, uniforms
# float64. A batch of n streams is stepped together, and every row's arithmetic is the same
# whatever the other rows are (each loop over rows does the same per-row work in the same order),
# so a stream's text never depends on which streams share its batch.

@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _add_rows_times(x, M, out):
    """out (n, N) += x (n, K) @ M (K, N), as combinations of M's rows, four at a time: each block
    of four rows (8 KB for a 512-unit vanilla layer, 32 KB for an LSTM's) serves every stream
    while it is in the L1 cache, so M (1 MB, or 4 MB for an LSTM: what one stream's step waits on)
    is read from memory once per call whatever n is. A stream's sums are the same whatever the
    other streams are: one loop does every row's work in the same order.

    Measured at H=512 on one core: this loop vectorises (28 GFLOP/s for one stream); blocking the
    columns (range(j0, j1)) or handling four streams per pass kept LLVM from vectorising it
    (7 and 14 GFLOP/s). (Eight rows of M per pass measured no faster.)"""
    n, K = x.shape
    N = M.shape[1]
    full = K - K % 4
    for i in range(0, full, 4):
        m0, m1, m2, m3 = M[i], M[i + 1], M[i + 2], M[i + 3]
        for r in range(n):
            a0, a1, a2, a3 = x[r, i], x[r, i + 1], x[r, i + 2], x[r, i + 3]
            row = out[r]
            for j in range(N):
                row[j] += a0 * m0[j] + a1 * m1[j] + a2 * m2[j] + a3 * m3[j]
    for i in range(full, K):
        m0 = M[i]
        for r in range(n):
            a0 = x[r, i]
            row = out[r]
            for j in range(N):
                row[j] += a0 * m0[j]


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _gates(cell, ax, ah, b_hn, h, c):
    """One layer's new state from its pre-activations, in place, rows (n,) of h (n, H) and c:
    rnn h = tanh(ax); lstm from ax's blocks [i, f, g, o]; gru from ax = x U + b and ah = h W,
    blocks [r, z, n] (see charrnn.spec). tanh and sigmoid are the training kernels' fast float32
    approximations (charrnn.kernels.fastmath)."""
    n, hidden = h.shape
    for r in range(n):
        a = ax[r]
        if cell == 0:
            for j in range(hidden):
                h[r, j] = fast_tanh(a[j])
        elif cell == 2:
            for j in range(hidden):
                i_gate = fast_sigmoid(a[j])
                f_gate = fast_sigmoid(a[hidden + j])
                g_gate = fast_tanh(a[2 * hidden + j])
                o_gate = fast_sigmoid(a[3 * hidden + j])
                c_new = f_gate * c[r, j] + i_gate * g_gate
                c[r, j] = c_new
                h[r, j] = o_gate * fast_tanh(c_new)
        else:
            a_h = ah[r]
            for j in range(hidden):
                reset = fast_sigmoid(a[j] + a_h[j])
                update = fast_sigmoid(a[hidden + j] + a_h[hidden + j])
                new = fast_tanh(a[2 * hidden + j] + reset * (a_h[2 * hidden + j] + b_hn[j]))
                h[r, j] = (np.float32(1.0) - update) * new + update * h[r, j]


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _layer_arrays(flat, offsets, layer, vocab_size, hidden, gates):
    """U (rows, G*H), W (H, G*H), b (G*H,), b_hn (H,) of one layer, views into `flat`; `offsets`
    (layers, 4) holds their starts (b_hn's is -1 but for gru; other cells never read b_hn, and a
    view of b stands in, so a step allocates nothing)."""
    width = gates * hidden
    rows = vocab_size if layer == 0 else hidden
    u0, w0, b0, bhn0 = offsets[layer, 0], offsets[layer, 1], offsets[layer, 2], offsets[layer, 3]
    U = flat[u0:u0 + rows * width].reshape((rows, width))
    W = flat[w0:w0 + hidden * width].reshape((hidden, width))
    b = flat[b0:b0 + width]
    b_hn = flat[bhn0:bhn0 + hidden] if bhn0 >= 0 else b[:hidden]
    return U, W, b, b_hn


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _add_times(x, M, M_packed, packed, x_rows, out):
    """out (n, N) += x (n, K) @ M (K, N). With `packed`, through the training kernels'
    register-blocked product over M packed in strips (M_packed (strips, K, strip)), from a
    contiguous copy of x in x_rows (n, K): every output element is then one chain of
    multiply-adds in k order, whichever block its row falls in. Either way a stream's sums do not
    depend on the other streams."""
    if packed:
        for r in range(x.shape[0]):
            x_rows[r] = x[r]
        step_product(x_rows, M_packed, out, True)
    else:
        _add_rows_times(x, M, out)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _step_rows(flat, offsets, cell, vocab_size, W_packed, U_packed, packed, states, ids, ax, ah,
               x_rows):
    """Feed character ids (n,) to the n streams of `states` (n, L, K, H), in place. ax, ah
    (n, G*H) and x_rows (n, H) are scratch; W_packed, U_packed (L, strips, H, strip) are W.l and
    U.l packed for the register-blocked product, used when `packed` (see _add_times)."""
    n, layers, kinds, hidden = states.shape
    gates = ax.shape[1] // hidden
    for layer in range(layers):
        U, W, b, b_hn = _layer_arrays(flat, offsets, layer, vocab_size, hidden, gates)
        h = states[:, layer, 0, :]                                     # (n, H), rows strided
        c = states[:, layer, kinds - 1, :]                             # lstm: (n, H); else h
        for r in range(n):
            if layer == 0:
                source = U[ids[r]]
                for j in range(ax.shape[1]):
                    ax[r, j] = source[j] + b[j]
            else:
                for j in range(ax.shape[1]):
                    ax[r, j] = b[j]
        if layer > 0:                                                 # + x U, x the layer below
            _add_times(states[:, layer - 1, 0, :], U, U_packed[layer], packed, x_rows, ax)
        if cell == 1:
            ah[:] = 0.0
            _add_times(h, W, W_packed[layer], packed, x_rows, ah)    # a_h = h W, kept apart
        else:
            _add_times(h, W, W_packed[layer], packed, x_rows, ax)    # a += h W
        _gates(cell, ax, ah, b_hn, h, c)


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def read_kernel(flat, offsets, cell, vocab_size, W_packed, U_packed, packed, states, row, ids):
    """Run the characters `ids` (m,) through stream `row` of `states` (n, L, K, H), in place."""
    one = states[row:row + 1]                                         # (1, L, K, H)
    width = _width(offsets, vocab_size)
    ax = np.empty((1, width), dtype=np.float32)                      # (1, G*H)
    ah = np.empty((1, width), dtype=np.float32)
    x_rows = np.empty((1, states.shape[3]), dtype=np.float32)        # (1, H)
    step_id = np.empty(1, dtype=np.int64)
    for t in range(ids.shape[0]):
        step_id[0] = ids[t]
        _step_rows(flat, offsets, cell, vocab_size, W_packed, U_packed, packed, one, step_id, ax,
                   ah, x_rows)


@njit(cache=True, nogil=True)
def _width(offsets, vocab_size):
    """G*H: the width of every layer's U, from where W.0 starts (U.0 is (vocab, G*H))."""
    return (offsets[0, 1] - offsets[0, 0]) // vocab_size


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def _logits_rows(V_t, b_y, states, logits):
    """logits (n, vocab) = h V + b_y for the last layer's h of every stream; V_t (vocab, H) is V
    transposed, so each logit is one contiguous dot product."""
    n, layers, _, hidden = states.shape
    for r in range(n):
        h = states[r, layers - 1, 0]
        for k in range(b_y.shape[0]):
            acc = b_y[k]
            for i in range(hidden):
                acc += V_t[k, i] * h[i]
            logits[r, k] = acc


@njit(cache=True, fastmath=FASTMATH, nogil=True)
def draw_kernel(flat, offsets, cell, vocab_size, W_packed, U_packed, packed, V_t, b_y, states,
                uniforms, inv_temperature, top_k, top_p, greedy, out_ids):
    """For every stream (row) of `states` (n, L, K, H), k times: its logits, one id drawn with its
    next uniform (uniforms (n, k)) and its own options ((n,) arrays), then its state stepped with
    that id. out_ids (n, k). Leaves each state after its last id, so the next call continues."""
    n, k = uniforms.shape
    width = _width(offsets, vocab_size)
    ax = np.empty((n, width), dtype=np.float32)                       # (n, G*H)
    ah = np.empty((n, width), dtype=np.float32)
    x_rows = np.empty((n, states.shape[3]), dtype=np.float32)         # (n, H)
    logits = np.empty((n, b_y.shape[0]), dtype=np.float32)            # (n, V)
    weights = np.empty(b_y.shape[0], dtype=np.float64)                # (V,)
    ids = np.empty(n, dtype=np.int64)                                 # (n,)
    for s in range(k):
        _logits_rows(V_t, b_y, states, logits)
        for r in range(n):
            ids[r] = _draw(logits[r], uniforms[r, s], inv_temperature[r], top_k[r], top_p[r],
                           greedy[r], weights)
            out_ids[r, s] = ids[r]
        _step_rows(flat, offsets, cell, vocab_size, W_packed, U_packed, packed, states, ids, ax,
                   ah, x_rows)


@njit(cache=True)
def _draw(logits, uniform, inv_temperature, top_k, top_p, greedy, weights):
    """The id drawn from softmax(logits * inv_temperature) cut by top_k / top_p, by inverse CDF
    at `uniform` in [0, 1); the first largest logit if `greedy`. `weights` (V,) float64 is scratch.

    Sums run in float64, one element after another, so a total and the running sum that is
    compared with it agree exactly and the walk always ends on a character of non-zero weight.
    """
    vocab_size = logits.shape[0]
    best = 0
    for k in range(1, vocab_size):
        if logits[k] > logits[best]:
            best = k
    if greedy:
        return best
    peak = np.float64(logits[best])
    for k in range(vocab_size):
        # exp(0) = 1 at the peak, so the total is at least 1 however low the temperature.
        weights[k] = np.exp((np.float64(logits[k]) - peak) * inv_temperature)

    if (top_k <= 0 or top_k >= vocab_size) and top_p >= 1.0:
        total = 0.0
        for k in range(vocab_size):
            total += weights[k]
        target = uniform * total
        running = 0.0
        for k in range(vocab_size):
            running += weights[k]
            if running > target:
                return k
        return best

    # Most likely first; a stable sort breaks ties by id, the same with and without the JIT.
    order = np.argsort(-weights, kind="mergesort")             # (V,) ids by falling weight
    keep = vocab_size
    if 0 < top_k < vocab_size:
        keep = top_k
    if top_p < 1.0:
        total = 0.0
        for r in range(keep):
            total += weights[order[r]]
        limit = top_p * total
        running = 0.0
        for r in range(keep):
            running += weights[order[r]]
            if running >= limit:
                keep = r + 1
                break
    total = 0.0
    for r in range(keep):
        total += weights[order[r]]
    target = uniform * total
    running = 0.0
    for r in range(keep):
        running += weights[order[r]]
        if running > target:
            return order[r]
    return order[0]


# ----------------------------------------------------------------------------------------------
# Python layer: checks everything once, then hands contiguous arrays to the kernels.

def _is_whole(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_options(length, temperature, top_k, top_p, greedy, rng) -> None:
    if not _is_whole(length):
        raise InputError(f"length must be a whole number, got {length!r}")
    if length < 0:
        raise InputError(f"length must be 0 or more, got {length}")
    if not _is_number(temperature):
        raise InputError(f"temperature must be a number, got {temperature!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise InputError(f"temperature must be above 0 (use greedy for the most likely character), "
                         f"got {temperature}")
    if not math.isfinite(1.0 / temperature):
        raise InputError(f"temperature {temperature} is too small to compute with; use greedy")
    if not _is_whole(top_k):
        raise InputError(f"top-k must be a whole number, got {top_k!r}")
    if top_k < 0:
        raise InputError(f"top-k must be 0 (off) or more, got {top_k}")
    if not _is_number(top_p):
        raise InputError(f"top-p must be a number, got {top_p!r}")
    if not (0 < top_p <= 1):   # also refuses NaN
        raise InputError(f"top-p must be in (0, 1], got {top_p}")
    if not isinstance(greedy, (bool, np.bool_)):
        raise InputError(f"greedy must be True or False, got {greedy!r}")
    if not isinstance(rng, np.random.Generator):
        raise InputError("rng must be a numpy.random.Generator, "
                         "e.g. numpy.random.default_rng(seed)")


def unknown_prime_message(vocab: Vocab, prime: str) -> str | None:
    """None if every character of `prime` is in the vocabulary, else a one-line description."""
    unknown = vocab.unknown(prime)
    if not unknown:
        return None
    shown = " ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
    return f"the prime has characters not in the model's vocabulary: {shown}"


def drop_unknown(vocab: Vocab, prime: str) -> tuple[str, list[str]]:
    """The prime without its out-of-vocabulary characters, and those characters (distinct, in
    order of appearance)."""
    unknown = vocab.unknown(prime)
    if not unknown:
        return prime, []
    dropped = set(unknown)
    return "".join(c for c in prime if c not in dropped), unknown


class BatchSampler:
    """Generation for one model, any number of streams at once.

    A stream is a row of a state array (n, L, K, H) (see charrnn.spec): `new_states(n)` makes
    them at zero, `read` runs a prime through one row, `draw` draws k characters for every row,
    each with its own uniforms and options. A row's characters and state are bit-identical
    whatever other rows share the batch, so streams may join or leave between calls. The kernels
    release the GIL; one call at a time per state array."""

    def __init__(self, model_or_params, vocab: Vocab | None = None):
        if isinstance(model_or_params, Model):
            params, vocab = model_or_params.params, model_or_params.vocab
        else:
            params = model_or_params
        if not isinstance(params, Params):
            raise InputError(f"params must be a charrnn Params, got {type(params).__name__}")
        if not isinstance(vocab, Vocab):
            raise InputError(f"vocab must be a charrnn Vocab, got {type(vocab).__name__}")
        if params.vocab_size != len(vocab):
            raise InputError(f"the weights are for {params.vocab_size} characters but the "
                             f"vocabulary has {len(vocab)}")
        if not np.isfinite(params.flat).all():
            raise InputError("the model's weights are not finite (NaN or infinity)")
        self.spec: ModelSpec = params.spec
        self.vocab = vocab
        self._flat = np.ascontiguousarray(params.flat, dtype=np.float32)         # (P,)
        found = self.spec.offsets()
        self._offsets = np.array([[found[f"{name}.{layer}"][0] if f"{name}.{layer}" in found
                                   else -1 for name in ("U", "W", "b", "b_hn")]
                                  for layer in range(self.spec.layers)], dtype=np.int64)  # (L, 4)
        self._cell = np.int64(self.spec.cell_code)
        self._pack(params)
        self._V_t = np.ascontiguousarray(params.V.T, dtype=np.float32)          # (vocab, H)
        self._b_y = np.ascontiguousarray(params.b_y, dtype=np.float32)          # (vocab,)
        # Decoding is one gather and one bytes -> str conversion rather than a join of chars.
        self._code_points = np.array([ord(c) for c in vocab.chars], dtype=np.uint32)  # (vocab,)

    def _pack(self, params: Params) -> None:
        """W.l and U.l (l >= 1) packed in the register-blocked product's strips, where it runs
        (AVX-512, G*H a multiple of its strip, compiled code)."""
        spec = self.spec
        width = spec.gates * spec.hidden
        strip = block_columns(4)
        self._packed = bool(operand_width(width, 4) == strip and not numba_config.DISABLE_JIT)
        shape = (spec.layers, width // strip, spec.hidden, strip) if self._packed else (1, 1, 1, 1)
        self._W_packed = np.zeros(shape, dtype=np.float32)                    # (L, strips, H, 32)
        self._U_packed = np.zeros(shape, dtype=np.float32)
        if self._packed:
            for layer in range(spec.layers):
                pack(np.ascontiguousarray(params[f"W.{layer}"], dtype=np.float32),
                     self._W_packed[layer])
                if layer > 0:
                    pack(np.ascontiguousarray(params[f"U.{layer}"], dtype=np.float32),
                         self._U_packed[layer])

    @property
    def _weights(self) -> tuple:
        """The kernels' first arguments: the model's arrays and how to multiply by them."""
        return (self._flat, self._offsets, self._cell, np.int64(len(self.vocab)), self._W_packed,
                self._U_packed, self._packed)

    def new_states(self, n: int) -> np.ndarray:
        return np.zeros(self.spec.state_shape(n), dtype=np.float32)              # (n, L, K, H)

    def read(self, states: np.ndarray, row: int, prime_ids) -> None:
        """Run the character ids `prime_ids` through stream `row` of `states`, in place."""
        ids = np.ascontiguousarray(prime_ids, dtype=np.int64)                     # (m,)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.vocab)):
            raise InputError("character ids outside the vocabulary")
        read_kernel(*self._weights, states, np.int64(row), ids)

    def draw(self, states, uniforms, inv_temperature, top_k, top_p, greedy, out_ids) -> None:
        """k characters for every stream: uniforms (n, k) float64, options (n,) arrays
        (inv_temperature float64, top_k int64 with 0 off, top_p float64 with 1 off, greedy bool),
        out_ids (n, k) int64. Arrays are used as given: make them with these dtypes."""
        draw_kernel(*self._weights, self._V_t, self._b_y, states, uniforms, inv_temperature,
                    top_k, top_p, greedy, out_ids)

    def decode(self, ids) -> str:
        return self._code_points[ids].tobytes().decode("utf-32-le")


def _uniforms(rng, greedy: bool, shape) -> np.ndarray:
    """The draws' random numbers; nothing is drawn when greedy (the generator does not move)."""
    if greedy:
        return np.zeros(shape, dtype=np.float64)
    return rng.random(shape)


def _batch_options(n, temperature, top_k, top_p, greedy):
    return (np.full(n, 1.0 / float(temperature)), np.full(n, int(top_k), dtype=np.int64),
            np.full(n, float(top_p)), np.full(n, bool(greedy)))


def iter_samples(params: Params, vocab: Vocab, length: int, *, num: int = 1, prime: str = "",
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 greedy: bool = False, rng: np.random.Generator,
                 chunk_size: int = MAX_CHUNK) -> Iterator[list[str]]:
    """Generate `num` samples of `length` characters after `prime`, stepped together as one
    batch, yielding a list of `num` new pieces at a time.

    Sample i uses row i of `rng.random((num, length))` (nothing is drawn when greedy), so the
    samples are exactly those `num` calls of `sample_text` in a row would give. Arguments are
    checked here, before the first piece is asked for (InputError, one line). `top_k` 0 and
    `top_p` 1 switch those cuts off; `greedy` takes the most likely character every time.
    """
    _check_options(length, temperature, top_k, top_p, greedy, rng)
    if not _is_whole(num) or num < 1:
        raise InputError(f"num must be a whole number of 1 or more, got {num!r}")
    if not _is_whole(chunk_size) or chunk_size < 1:
        raise InputError(f"chunk size must be a whole number of 1 or more, got {chunk_size!r}")
    if not isinstance(prime, str):
        raise InputError(f"prime must be a string, got {type(prime).__name__}")
    sampler = BatchSampler(params, vocab)
    problem = unknown_prime_message(vocab, prime)
    if problem:
        raise InputError(problem)
    prime_ids = vocab.encode(prime).astype(np.int64)                          # (len(prime),)
    return _generate(sampler, int(length), int(num), prime_ids, bool(greedy), rng,
                     _batch_options(int(num), temperature, top_k, top_p, greedy), int(chunk_size))


def _generate(sampler, length, num, prime_ids, greedy, rng, options, chunk_size):
    """The generator behind iter_samples, over checked arguments."""
    states = sampler.new_states(1)
    sampler.read(states, 0, prime_ids)
    states = np.ascontiguousarray(np.repeat(states, num, axis=0))             # (num, L, K, H)
    # One sample draws its uniforms chunk by chunk (a Generator's random(a) then random(b) gives
    # the numbers random(a + b) gives), so a long stream never holds them all; several need
    # their rows of random((num, length)) from the start.
    uniforms = None if num == 1 else _uniforms(rng, greedy, (num, length))   # (num, length)
    done = 0
    size = min(FIRST_CHUNK, chunk_size)
    while done < length:
        n = min(size, length - done)
        if uniforms is None:
            chunk_uniforms = _uniforms(rng, greedy, (1, n))                  # (1, n)
        else:
            chunk_uniforms = np.ascontiguousarray(uniforms[:, done:done + n])
        ids = np.empty((num, n), dtype=np.int64)                              # (num, n)
        sampler.draw(states, chunk_uniforms, *options, ids)
        yield [sampler.decode(ids[i]) for i in range(num)]
        done += n
        size = min(size * 2, chunk_size)


def iter_sample(params: Params, vocab: Vocab, length: int, *, prime: str = "",
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                greedy: bool = False, rng: np.random.Generator,
                chunk_size: int = MAX_CHUNK) -> Iterator[str]:
    """Generate `length` characters after `prime`, yielding pieces of text as they are made.

    The pieces joined are exactly `sample_text(...)` with the same arguments and generator state;
    `for ch in itertools.chain.from_iterable(iter_sample(...))` gives one character at a time.
    Arguments are checked here, before the first piece is asked for (InputError, one line).
    """
    pieces = iter_samples(params, vocab, length, prime=prime, temperature=temperature,
                          top_k=top_k, top_p=top_p, greedy=greedy, rng=rng, chunk_size=chunk_size)
    return (batch[0] for batch in pieces)


def sample_text(params: Params, vocab: Vocab, length: int, *, prime: str = "",
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                greedy: bool = False, rng: np.random.Generator) -> str:
    """`length` characters generated after `prime` (the prime itself is not included).

    The state starts at zero and reads the prime first; with an empty prime the first character
    is drawn from softmax(b_y). Same generator state, same text.
    """
    return "".join(iter_sample(params, vocab, length, prime=prime, temperature=temperature,
                               top_k=top_k, top_p=top_p, greedy=greedy, rng=rng))


# ----------------------------------------------------------------------------------------------
# Conveniences over a model directory.

def resolve_model_dir(model: str | os.PathLike | None) -> Path:
    """A model directory, a bundled model's name, or None (the default bundled model)."""
    names = bundled_model_names()
    if model is None:
        directory = bundled_model_dir(DEFAULT_MODEL)
        if not (directory / MODEL_FILE).is_file():
            raise ModelFormatError(f"this installation of charrnn has no bundled model "
                                   f"({directory} holds no {MODEL_FILE}); give a model "
                                   f"directory made by `charrnn train`")
        return directory
    path = Path(model)
    if path.exists():
        return path
    if str(model) in names:
        return bundled_model_dir(str(model))
    if os.sep not in str(model) and names:
        raise ModelFormatError(f"{model}: no such model directory, nor a bundled model "
                               f"(bundled: {', '.join(names)})")
    return path


def load(model: Model | str | os.PathLike | None = None) -> Model:
    """A Model as is, the model in a directory, a bundled model by name, or (None) the default
    model that ships with charrnn."""
    if isinstance(model, Model):
        return model
    return load_model(resolve_model_dir(model))


def _rng(seed, rng) -> np.random.Generator:
    if rng is not None and seed is not None:
        raise InputError("give a seed or a generator, not both")
    if rng is not None:
        return rng
    if seed is not None and (not _is_whole(seed) or seed < 0):
        raise InputError(f"seed must be a whole number of 0 or more, got {seed!r}")
    return np.random.default_rng(seed)


def stream(model: Model | str | os.PathLike | None = None, length: int = 500, *, prime: str = "",
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
           seed: int | None = None, rng: np.random.Generator | None = None) -> Iterator[str]:
    """Pieces of generated text from a model (a Model, a directory, a bundled model's name, or
    None for the default bundled one)."""
    model = load(model)
    return iter_sample(model.params, model.vocab, length, prime=prime, temperature=temperature,
                       top_k=top_k, top_p=top_p, greedy=greedy, rng=_rng(seed, rng))


def sample(model: Model | str | os.PathLike | None = None, length: int = 500, *, prime: str = "",
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
           seed: int | None = None, rng: np.random.Generator | None = None) -> str:
    """`length` characters from a model after `prime` (not included), e.g.
    `sample("runs/shakespeare", 200, prime="ROMEO:", seed=1)`."""
    return "".join(stream(model, length, prime=prime, temperature=temperature, top_k=top_k,
                          top_p=top_p, greedy=greedy, seed=seed, rng=rng))
