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
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numba.core import config as numba_config

from charrnn.checkpoint import MODEL_FILE, Model, load_model
from charrnn.errors import InputError, ModelFormatError
from charrnn.kernels.sampler import draw_one, packs, part_count, run_parts, split_weights
from charrnn.kernels.sync import COUNTER_STRIDE
from charrnn.kernels.threads import TeamThreads, usable_cores
from charrnn.params import Params
from charrnn.resources import DEFAULT_MODEL, bundled_model_dir, bundled_model_names
from charrnn.spec import ModelSpec
from charrnn.vocab import Vocab

# Characters per kernel call: small at first so the first characters show at once, then larger so
# the per-call overhead (a Generator call, a dispatch, a decode, and waking the second thread:
# about 0.15 ms in all) is spread thin: 1,024 characters take 8-10 ms for a 512-unit vanilla RNN.
FIRST_CHUNK = 16
MAX_CHUNK = 1024
# After a call whose threads spent more than WAITING_LIMIT of their time waiting for each other
# (a core busy with another process: a wait lasts a time slice), the sampler runs on one thread
# for ALONE_SECONDS before it tries two again.
JUDGED_STEPS = 32                   # shorter calls are too few barriers to judge by
WAITING_LIMIT = 0.2                 # seen: 0.02-0.11 quiet, 0.22-0.93 with one busy process
ALONE_SECONDS = 1.0
# Below this many multiply-adds per step in the recurrent products (streams x layers x G x H^2),
# the barriers cost what a second thread saves (a lone 256-unit vanilla stream: the same speed;
# 128 units: 4% slower), and the parts run on one thread unless threads were asked for.
TEAM_MIN_WORK = 1 << 16

_draw = draw_one               # one character's draw (charrnn.kernels.sampler)


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
    whatever other rows share the batch, so streams may join or leave between calls, and whatever
    the number of threads. `threads`: how many a call may use (default: 2 where this process may
    use two cores, for models large enough to gain from them). The kernels release the GIL; one
    call at a time per state array."""

    def __init__(self, model_or_params, vocab: Vocab | None = None, *,
                 threads: int | None = None):
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
        spec = self.spec
        self._always_team = threads is not None
        if threads is None:
            threads = default_threads()
        if not _is_whole(threads) or threads < 1:
            raise InputError(f"threads must be a whole number of 1 or more, got {threads!r}")
        threads = 1 if numba_config.DISABLE_JIT else int(threads)
        self._packed = packs(spec.hidden, spec.gates, 1)
        self.parts = part_count(spec.hidden, spec.gates, threads, self._packed)
        self._arrays = {name: np.asarray(params[name], dtype=np.float32)
                        for name in spec.array_shapes()}
        self._split = {}              # parts -> (weights, layout), made when first needed
        self._b_y = np.ascontiguousarray(self._arrays["b_y"])                 # (vocab,)
        self._cell = np.int64(spec.cell_code)
        self._alone_until = 0.0       # time.monotonic() until which the parts run on one thread
        self.last_waiting = 0.0       # the share of the last two-thread call spent at barriers
        # Decoding is one gather and one bytes -> str conversion rather than a join of chars.
        self._code_points = np.array([ord(c) for c in vocab.chars], dtype=np.uint32)  # (vocab,)

    def _weights(self, parts: int) -> tuple:
        """(weights, layout): the model cut in `parts` (charrnn.kernels.sampler), made once.
        The sampler keeps one part for calls on one thread (a second, serial part would cost
        20-50% more there) and `self.parts` for calls on two; both give the same bits."""
        if parts not in self._split:
            spec = self.spec
            self._split[parts] = split_weights(self._arrays, spec.gates, spec.layers,
                                               spec.hidden, spec.vocab_size, parts, self._packed)
        return self._split[parts]

    def _arguments(self, parts, states, forced, uniforms, inv_temperature, top_k, top_p, greedy,
                   out_ids) -> tuple:
        """run_parts's arguments after `first, last` (charrnn.kernels.sampler), for the model
        in `parts` parts, with fresh shared buffers."""
        weights, layout = self._weights(parts)
        n = states.shape[0]
        spare = np.empty_like(states)                                          # (n, L, K, H)
        drawn = np.zeros((parts, n), dtype=np.int64)                           # (parts, n)
        _, a, b, c = layout[-1]                                                # V's part
        columns = int(a * c if self._packed else b)
        logits = np.zeros((parts, n, columns), dtype=np.float32)               # (parts, n, Cp)
        counters = np.zeros(parts * COUNTER_STRIDE, dtype=np.int64)
        return (weights, layout, self._cell, self._packed, self._b_y, states, spare, forced,
                uniforms, inv_temperature, top_k, top_p, greedy, out_ids, logits, drawn, counters)

    def _run(self, states, forced, uniforms, inv_temperature, top_k, top_p, greedy, out_ids):
        """run_parts over `states` in place: the parts on threads of their own, or the model in
        one part on this thread (a small model, or for a while after the threads kept waiting for
        each other: another process was using a core). Same bits either way."""
        options = (states, forced, uniforms, inv_temperature, top_k, top_p, greedy, out_ids)
        n = states.shape[0]
        work = n * self.spec.layers * self.spec.gates * self.spec.hidden ** 2
        if (self.parts == 1 or time.monotonic() < self._alone_until
                or (work < TEAM_MIN_WORK and not self._always_team)):
            run_parts(0, 1, *self._arguments(1, *options))
            return
        arguments = self._arguments(self.parts, *options)
        counters = arguments[-1]

        def part(p):
            try:
                return run_parts(p, p + 1, *arguments)
            except BaseException:
                counters[p * COUNTER_STRIDE] = 1 << 62       # release the others, then raise
                raise

        waiting = _team_run(self.parts, part) / self.parts
        self.last_waiting = waiting
        if waiting > WAITING_LIMIT and max(forced.shape[1], uniforms.shape[1]) >= JUDGED_STEPS:
            self._alone_until = time.monotonic() + ALONE_SECONDS

    def new_states(self, n: int) -> np.ndarray:
        return np.zeros(self.spec.state_shape(n), dtype=np.float32)              # (n, L, K, H)

    def read(self, states: np.ndarray, row: int, prime_ids) -> None:
        """Run the character ids `prime_ids` through stream `row` of `states`, in place."""
        ids = np.ascontiguousarray(prime_ids, dtype=np.int64)                     # (m,)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.vocab)):
            raise InputError("character ids outside the vocabulary")
        one = states[row:row + 1]                                                 # (1, L, K, H)
        nothing = np.zeros((1, 0))
        self._run(one, ids.reshape(1, -1), nothing, np.ones(1), np.zeros(1, dtype=np.int64),
                  np.ones(1), np.zeros(1, dtype=bool), np.zeros((1, 0), dtype=np.int64))

    def draw(self, states, uniforms, inv_temperature, top_k, top_p, greedy, out_ids) -> None:
        """k characters for every stream: uniforms (n, k) float64, options (n,) arrays
        (inv_temperature float64, top_k int64 with 0 off, top_p float64 with 1 off, greedy bool),
        out_ids (n, k) int64. Arrays are used as given: make them with these dtypes."""
        no_ids = np.zeros((states.shape[0], 0), dtype=np.int64)
        self._run(states, no_ids, uniforms, inv_temperature, top_k, top_p, greedy, out_ids)

    def decode(self, ids) -> str:
        return self._code_points[ids].tobytes().decode("utf-32-le")


def default_threads() -> int:
    """Threads a sampler splits its steps over: 2 where this process may use 2 cores or more
    (the work splits in two halves; more parts measured no faster on 2 cores), else 1."""
    return 2 if usable_cores() >= 2 else 1


_TEAMS: dict[int, TeamThreads] = {}
_TEAMS_LOCK = threading.Lock()


def _forget_teams_after_fork() -> None:
    """A forked child has the parent's teams but not their threads (and maybe a lock taken by a
    thread it does not have): it starts its own."""
    global _TEAMS_LOCK
    _TEAMS.clear()
    _TEAMS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_teams_after_fork)


def _team_run(parts: int, task) -> float:
    """task(p) for p in range(parts), each on a thread of its own at the same time (the caller's
    is part 0). One team per process, one call at a time: samplers on several threads (a server
    with several models) take turns, as they would for the cores anyway."""
    with _TEAMS_LOCK:
        team = _TEAMS.get(parts)
        if team is None:
            team = _TEAMS[parts] = TeamThreads(parts)
        return team.run(task)


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
