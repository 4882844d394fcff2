"""Dropout masks from a counter-based hash: no stored mask, no state to save for an exact resume.

Inverted dropout with probability p: a unit is kept with probability 1 - p and then scaled by
1 / (1 - p), dropped (zero) otherwise. It applies to the non-recurrent connections only: layer l's
h_t on its way up to layer l + 1, and the last layer's h_t on its way to the output layer (that is
"layer" l = layers - 1 below). Whether a unit is kept depends on nothing but

    (seed, step, layer, row, t, j)

- seed: the training run's seed; step: the global step number (both from the training loop);
- layer: the layer whose output it is; row: the row of the whole batch (not of a thread's chunk);
- t: the position in the window (0 .. T-1); j: the unit (0 .. H-1),

so masks do not depend on the thread count, and the backward pass recomputes them. The hash
(pinned: changing it changes every dropout run) uses splitmix64's finaliser, all arithmetic
modulo 2**64:

    mix64(z)  = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
                z ^ (z >> 31)
    GOLDEN    = 0x9E3779B97F4A7C15
    key       = mix64(mix64(seed ^ GOLDEN) + step)                 # stream_key(seed, step)
    row_key   = mix64(mix64(mix64(key + layer) + row) + t)
    bits      = mix64(row_key + (j + 1) * GOLDEN)
    kept      = (bits >> 40) >= threshold,   threshold = round(p * 2**24)

(seed is taken modulo 2**64, so a negative seed means seed + 2**64.) The top 24 bits of `bits` are
a uniform integer in [0, 2**24); a unit is dropped with probability threshold / 2**24, p to within
3e-8.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_MASK64 = (1 << 64) - 1
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(40)
THRESHOLD_BITS = 24


@njit(inline="always")
def mix64(z):
    """splitmix64's finaliser of a uint64 (a bijection)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True)
def _stream_key(seed, step):
    return mix64(mix64(seed ^ GOLDEN) + step)


def stream_key(seed: int, step: int) -> np.uint64:
    """The key of one training step's masks, from the run's seed and the global step number."""
    # (Numba returns a uint64 as a Python int, which it would type as int64 when passed back.)
    return np.uint64(_stream_key(np.uint64(int(seed) & _MASK64), np.uint64(int(step) & _MASK64)))


def threshold(p: float) -> np.uint64:
    """Units whose top 24 bits fall below this are dropped."""
    return np.uint64(min(1 << THRESHOLD_BITS, round(float(p) * (1 << THRESHOLD_BITS))))


@njit(inline="always")
def _row_key(key, layer, row, t):
    k = mix64(np.uint64(key) + np.uint64(layer))
    k = mix64(k + np.uint64(row))
    return mix64(k + np.uint64(t))


@njit(cache=True, nogil=True, error_model="numpy")
def apply_mask(src, dst, key, layer, row0, limit, scale):
    """dst[t, i, j] = src[t, i, j] * scale if unit (layer, row0 + i, t, j) is kept, else 0;
    src, dst (T, rows, H), not overlapping (see `apply_mask_in_place`). `limit` is
    `threshold(p)`, `scale` 1/(1-p)."""
    T, rows, hidden = src.shape
    zero = dst.dtype.type(0.0)
    for t in range(T):
        for i in range(rows):
            k = _row_key(key, layer, row0 + i, t)
            s = src[t, i]
            d = dst[t, i]
            for j in range(hidden):
                bits = mix64(k + np.uint64(j + 1) * GOLDEN)
                d[j] = s[j] * scale if (bits >> _S40) >= limit else zero


@njit(cache=True, nogil=True, error_model="numpy")
def apply_mask_in_place(a, key, layer, row0, limit, scale):
    """`apply_mask(a, a, ...)`, as its own loop: LLVM vectorises the two-array loop behind a
    run-time overlap check, and with the same array twice that check sent every call down the
    scalar path, branches and all (3x slower with p = 0.3)."""
    T, rows, hidden = a.shape
    zero = a.dtype.type(0.0)
    for t in range(T):
        for i in range(rows):
            k = _row_key(key, layer, row0 + i, t)
            d = a[t, i]
            for j in range(hidden):
                bits = mix64(k + np.uint64(j + 1) * GOLDEN)
                d[j] = d[j] * scale if (bits >> _S40) >= limit else zero


@njit(cache=True)
def _kept(key, layer, rows, T, hidden, limit):
    out = np.zeros((rows.size, T, hidden), np.bool_)  # (rows, T, H)
    for r in range(rows.size):
        for t in range(T):
            k = _row_key(key, layer, rows[r], t)
            for j in range(hidden):
                out[r, t, j] = (mix64(k + np.uint64(j + 1) * GOLDEN) >> _S40) >= limit
    return out


def kept(seed: int, step: int, layer: int, rows, T: int, hidden: int, p: float) -> np.ndarray:
    """Which units are kept: bool array (len(rows), T, hidden) for batch rows `rows` (for tests and
    references; the kernels compute the same bits inline)."""
    rows = np.asarray(rows, dtype=np.int64)
    return _kept(stream_key(seed, step), np.int64(layer), rows, int(T), int(hidden), threshold(p))
