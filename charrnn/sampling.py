"""Generating text from a trained model, one character at a time.

The per-character loop runs in Numba-compiled kernels, a chunk of characters per call, carrying the
hidden state from one call to the next so that text can be shown as it is made. Every random number
is drawn here, in Python, from the caller's seeded `np.random.Generator` and handed to the kernel
as an array: the same seed gives the same text whether the JIT is on or off (NUMBA_DISABLE_JIT=1),
and however the characters are split into chunks (a Generator's `random(a)` then `random(b)` gives
the same numbers as `random(a + b)`).

One step, in the model's notation (x the one-hot of the last character, so x U is a row of U):
    h = tanh(x U + h W + b_h);  logits = h V + b_y;  p = softmax(logits / temperature)
then p is cut to its `top_k` most likely characters, then to the smallest most likely set whose
mass reaches `top_p` of what is left, renormalised, and one character is drawn by inverse CDF.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numba import njit

from charrnn.checkpoint import MODEL_FILE, Model, load_model
from charrnn.errors import InputError, ModelFormatError
from charrnn.params import Params
from charrnn.resources import bundled_model_dir
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
# Kernels. Arrays are C-contiguous; weights and hidden state float32, ids int64, uniforms float64.

@njit(cache=True, fastmath=FASTMATH)
def _tanh(x):
    """tanh of a float32 through one float64 exp: faster than libm's tanhf here, and within 3e-8
    of the exact value (in float64, e - 1 keeps arguments down to 1e-4 accurate to 1e-12)."""
    x64 = np.float64(x)
    if abs(x64) < 1e-4:
        return x                    # tanh(x) = x (1 - x^2/3 + ...): exact to float32 precision
    # Beyond +-20 tanh is 1 to float64 precision; the clamp keeps exp finite.
    x64 = min(max(x64, -20.0), 20.0)
    e = np.exp(2.0 * x64)
    return np.float32((e - 1.0) / (e + 1.0))


@njit(cache=True, fastmath=FASTMATH)
def _step(U, W, b_h, h, char_id, pre):
    """h <- tanh(U[char_id] + h W + b_h), in place; `pre` (H,) is scratch.

    h W is summed as a combination of W's rows (row i scaled by h[i]), so W is read once, row by
    row, in memory order, and the inner loop is a contiguous multiply-add the compiler vectorises.
    Taking four rows per pass over `pre` loads and stores it a quarter as often (W, 1 MB at
    H=512, is what the step waits on; eight rows measured no faster).
    """
    hidden = h.shape[0]
    for j in range(hidden):
        pre[j] = U[char_id, j] + b_h[j]
    full = hidden - hidden % 4
    for i in range(0, full, 4):
        h0 = h[i]
        h1 = h[i + 1]
        h2 = h[i + 2]
        h3 = h[i + 3]
        for j in range(hidden):
            pre[j] += h0 * W[i, j] + h1 * W[i + 1, j] + h2 * W[i + 2, j] + h3 * W[i + 3, j]
    for i in range(full, hidden):
        hi = h[i]
        for j in range(hidden):
            pre[j] += hi * W[i, j]
    for j in range(hidden):
        h[j] = _tanh(pre[j])


@njit(cache=True, fastmath=FASTMATH)
def _logits(V_t, b_y, h, out):
    """out <- h V + b_y, with V given transposed, V_t (vocab, H): one contiguous dot product per
    character. (With only ~100 characters, combining V's short rows as _step does for W leaves
    the vector units idle on loop remainders.)"""
    hidden = h.shape[0]
    for k in range(b_y.shape[0]):
        acc = b_y[k]
        for i in range(hidden):
            acc += V_t[k, i] * h[i]
        out[k] = acc


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


@njit(cache=True, fastmath=FASTMATH)
def advance_kernel(U, W, b_h, h, ids):
    """Run the characters `ids` (n,) through the network from hidden state `h` (H,), in place."""
    pre = np.empty(h.shape[0], dtype=np.float32)               # (H,)
    for t in range(ids.shape[0]):
        _step(U, W, b_h, h, ids[t], pre)


@njit(cache=True, fastmath=FASTMATH)
def sample_kernel(U, W, V_t, b_h, b_y, h, uniforms, inv_temperature, top_k, top_p, greedy, out_ids):
    """Draw len(out_ids) characters from hidden state `h` (H,), which has read every character so
    far. `uniforms` (n,) are the draws' random numbers; V_t (vocab, H) is V transposed. Leaves in
    `h` the state after the last character drawn, so the next call continues the same text."""
    pre = np.empty(h.shape[0], dtype=np.float32)               # (H,)
    logits = np.empty(b_y.shape[0], dtype=np.float32)          # (V,)
    weights = np.empty(b_y.shape[0], dtype=np.float64)         # (V,)
    for t in range(out_ids.shape[0]):
        _logits(V_t, b_y, h, logits)
        char_id = _draw(logits, uniforms[t], inv_temperature, top_k, top_p, greedy, weights)
        out_ids[t] = char_id
        _step(U, W, b_h, h, char_id, pre)


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


def _kernel_params(params: Params, vocab: Vocab) -> Params:
    if not isinstance(params, Params):
        raise InputError(f"params must be a charrnn Params, got {type(params).__name__}")
    if not isinstance(vocab, Vocab):
        raise InputError(f"vocab must be a charrnn Vocab, got {type(vocab).__name__}")
    if params.vocab_size != len(vocab):
        raise InputError(f"the weights are for {params.vocab_size} characters but the vocabulary "
                         f"has {len(vocab)}")
    if params.dtype != np.float32:
        params = params.astype(np.float32)
    if not np.isfinite(params.flat).all():
        raise InputError("the model's weights are not finite (NaN or infinity)")
    return params


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


def iter_sample(params: Params, vocab: Vocab, length: int, *, prime: str = "",
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                greedy: bool = False, rng: np.random.Generator,
                chunk_size: int = MAX_CHUNK) -> Iterator[str]:
    """Generate `length` characters after `prime`, yielding pieces of text as they are made.

    The pieces joined are exactly `sample_text(...)` with the same arguments and generator state;
    `for ch in itertools.chain.from_iterable(iter_sample(...))` gives one character at a time.
    Arguments are checked here, before the first piece is asked for (InputError, one line).
    `top_k` 0 and `top_p` 1 switch those cuts off; `greedy` takes the most likely character every
    time (then `temperature`, `top_k` and `top_p` do not matter, and no random numbers are used).
    """
    _check_options(length, temperature, top_k, top_p, greedy, rng)
    if not _is_whole(chunk_size) or chunk_size < 1:
        raise InputError(f"chunk size must be a whole number of 1 or more, got {chunk_size!r}")
    if not isinstance(prime, str):
        raise InputError(f"prime must be a string, got {type(prime).__name__}")
    params = _kernel_params(params, vocab)
    problem = unknown_prime_message(vocab, prime)
    if problem:
        raise InputError(problem)
    prime_ids = vocab.encode(prime).astype(np.int64)               # (len(prime),)
    return _generate(params, vocab, int(length), prime_ids, 1.0 / float(temperature), int(top_k),
                     float(top_p), bool(greedy), rng, int(chunk_size))


def _generate(params, vocab, length, prime_ids, inv_temperature, top_k, top_p, greedy, rng,
              chunk_size) -> Iterator[str]:
    """The generator behind iter_sample, over checked arguments."""
    # Decoding a chunk is one gather and one bytes -> str conversion rather than a join of chars.
    code_points = np.array([ord(c) for c in vocab.chars], dtype=np.uint32)    # (V,)
    V_t = np.ascontiguousarray(params.V.T)                                     # (V, H)
    h = np.zeros(params.hidden, dtype=np.float32)                              # (H,)
    advance_kernel(params.U, params.W, params.b_h, h, prime_ids)
    out_ids = np.empty(chunk_size, dtype=np.int64)                             # (chunk,)
    done = 0
    size = min(FIRST_CHUNK, chunk_size)
    while done < length:
        n = min(size, length - done)
        if greedy:
            uniforms = np.zeros(n, dtype=np.float64)                           # (n,) unused
        else:
            uniforms = rng.random(n)                                           # (n,) in [0, 1)
        ids = out_ids[:n]
        sample_kernel(params.U, params.W, V_t, params.b_h, params.b_y, h, uniforms,
                      inv_temperature, top_k, top_p, greedy, ids)
        yield code_points[ids].tobytes().decode("utf-32-le")
        done += n
        size = min(size * 2, chunk_size)


def sample_text(params: Params, vocab: Vocab, length: int, *, prime: str = "",
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                greedy: bool = False, rng: np.random.Generator) -> str:
    """`length` characters generated after `prime` (the prime itself is not included).

    The hidden state starts at zero and reads the prime first; with an empty prime the first
    character is drawn from softmax(b_y). Same generator state, same text.
    """
    return "".join(iter_sample(params, vocab, length, prime=prime, temperature=temperature,
                               top_k=top_k, top_p=top_p, greedy=greedy, rng=rng))


# ----------------------------------------------------------------------------------------------
# Conveniences over a model directory.

def load(model: Model | str | os.PathLike | None = None) -> Model:
    """A Model as is, the model in a directory, or (None) the model that ships with charrnn."""
    if isinstance(model, Model):
        return model
    if model is None:
        directory = bundled_model_dir()
        if not (directory / MODEL_FILE).is_file():
            raise ModelFormatError(f"this installation of charrnn has no bundled model "
                                   f"({directory} holds no {MODEL_FILE}); give a model "
                                   f"directory made by `charrnn train`")
        return load_model(directory)
    return load_model(Path(model))


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
    """Pieces of generated text from a model (a Model, a directory, or None for the bundled one)."""
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
