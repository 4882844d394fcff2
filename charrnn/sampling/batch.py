"""The batched sampler: any number of streams of one model, stepped together.

The per-character loop runs in Numba-compiled kernels, a chunk of characters per call, carrying the
hidden state from one call to the next so that text can be shown as it is made. Every random number
is drawn here, in Python, from the caller's seeded `np.random.Generator` and handed to the kernel
as an array: the same seed gives the same text whether the JIT is on or off (NUMBA_DISABLE_JIT=1),
and however the characters are split into chunks (a Generator's `random(a)` then `random(b)` gives
the same numbers as `random(a + b)`).

One step, in the model's notation (x the one-hot of the last character, so x U.0 is a row of
U.0): every layer's cell (charrnn.model.spec) updates its state, then
    logits = h V + b_y;  p = softmax(logits / temperature)
from the last layer's h; then p is cut to its `top_k` most likely characters, then to the smallest most likely set whose
mass reaches `top_p` of what is left, renormalised, and one character is drawn by inverse CDF.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
from numba.core import config as numba_config

from charrnn.errors import InputError
from charrnn.kernels.parts import packs, part_count, split_weights
from charrnn.kernels.sampler import run_parts
from charrnn.kernels.sync import COUNTER_STRIDE
from charrnn.kernels.threads import TeamThreads, usable_cores
from charrnn.model.checkpoint import Model
from charrnn.model.params import Params
from charrnn.model.spec import ModelSpec
from charrnn.model.vocab import Vocab
from charrnn.sampling.options import is_whole

# Characters per kernel call: small at first so the first characters show at once, then larger so
# the per-call overhead (a Generator call, a dispatch, a decode, and waking the second thread:
# about 0.15 ms in all) is spread thin: 1,024 characters take 8-10 ms for a 512-unit vanilla RNN.
FIRST_CHUNK = 16
MAX_CHUNK = 1024
# After a call whose threads spent more than WAITING_LIMIT of their time waiting for each other
# (a core busy with another process: a wait lasts a time slice), the sampler runs on one thread
# for ALONE_SECONDS before it tries two again.
JUDGED_STEPS = 32  # shorter calls are too few barriers to judge by
WAITING_LIMIT = 0.2  # seen: 0.02-0.11 quiet, 0.22-0.93 with one busy process
ALONE_SECONDS = 1.0
# Below this many multiply-adds per step in the recurrent products (streams x layers x G x H^2),
# the barriers cost what a second thread saves (a lone 256-unit vanilla stream: the same speed;
# 128 units: 4% slower), and the parts run on one thread unless threads were asked for.
TEAM_MIN_WORK = 1 << 16


class BatchSampler:
    """Generation for one model, any number of streams at once.

    A stream is a row of a state array (n, L, K, H) (see charrnn.model.spec): `new_states(n)` makes
    them at zero, `read` runs a prime through one row, `draw` draws k characters for every row,
    each with its own uniforms and options. A row's characters and state are bit-identical
    whatever other rows share the batch, so streams may join or leave between calls, and whatever
    the number of threads. `threads`: how many a call may use (default: 2 where this process may
    use two cores, for models large enough to gain from them). The kernels release the GIL; one
    call at a time per state array."""

    def __init__(self, model_or_params, vocab: Vocab | None = None, *, threads: int | None = None):
        if isinstance(model_or_params, Model):
            params, vocab = model_or_params.params, model_or_params.vocab
        else:
            params = model_or_params
        if not isinstance(params, Params):
            raise InputError(f"params must be a charrnn Params, got {type(params).__name__}")
        if vocab is not None and not isinstance(vocab, Vocab):
            raise InputError(f"vocab must be a charrnn Vocab, got {type(vocab).__name__}")
        if vocab is not None and params.vocab_size != len(vocab):
            raise InputError(f"the weights are for {params.vocab_size} characters but the vocabulary has {len(vocab)}")
        if not np.isfinite(params.flat).all():
            raise InputError("the model's weights are not finite (NaN or infinity)")
        self.spec: ModelSpec = params.spec
        self.vocab = vocab
        spec = self.spec
        self._always_team = threads is not None
        if threads is None:
            threads = default_threads()
        if not is_whole(threads) or threads < 1:
            raise InputError(f"threads must be a whole number of 1 or more, got {threads!r}")
        threads = 1 if numba_config.DISABLE_JIT else int(threads)  # type: ignore[attr-defined]  # set at run time
        self._packed = packs(spec.hidden, spec.gates, 1)
        self.parts = part_count(spec.hidden, spec.gates, threads, self._packed)
        self._arrays = {name: np.asarray(params[name], dtype=np.float32) for name in spec.array_shapes()}
        self._split: dict[int, tuple] = {}  # parts -> (weights, layout), made when first needed
        self._b_y = np.ascontiguousarray(self._arrays["b_y"])  # (vocab,)
        self._cell = np.int64(spec.cell_code)
        self._alone_until = 0.0  # time.monotonic() until which the parts run on one thread
        self.last_waiting = 0.0  # the share of the last two-thread call spent at barriers
        # Decoding is one gather and one bytes -> str conversion rather than a join of chars.
        # (None: a sampler that only scores, for a model whose characters do not matter.)
        self._code_points = (
            None if vocab is None else np.array([ord(c) for c in vocab.chars], dtype=np.uint32)
        )  # (vocab,)

    def _weights(self, parts: int) -> tuple:
        """(weights, layout): the model cut in `parts` (charrnn.kernels.sampler), made once.
        The sampler keeps one part for calls on one thread (a second, serial part would cost
        20-50% more there) and `self.parts` for calls on two; both give the same bits."""
        if parts not in self._split:
            spec = self.spec
            self._split[parts] = split_weights(
                self._arrays, spec.gates, spec.layers, spec.hidden, spec.vocab_size, parts, self._packed
            )
        return self._split[parts]

    def _arguments(
        self,
        parts,
        states,
        forced,
        uniforms,
        inv_temperature,
        top_k,
        top_p,
        greedy,
        out_ids,
        targets=None,
        log_probs=None,
        logits=None,
        record=None,
    ) -> tuple:
        """run_parts's arguments after `first, last` (charrnn.kernels.sampler), for the model
        in `parts` parts, with fresh shared buffers; what is not asked for (targets, logits,
        record: None) is passed empty along its steps' axis, so one compiled kernel serves all."""
        weights, layout = self._weights(parts)
        n, layers, kinds, hidden = states.shape
        if targets is None:
            targets = np.zeros((n, 0), dtype=np.int64)  # not scoring
            log_probs = np.zeros((n, 0))
        if logits is None:
            logits = np.zeros((n, 0, self.spec.vocab_size), dtype=np.float32)  # (n, 0, vocab)
        if record is None:
            record = np.zeros((n, 0, layers, kinds, hidden), dtype=np.float32)  # (n, 0, L, K, H)
        spare = np.empty_like(states)  # (n, L, K, H)
        drawn = np.zeros((parts, n), dtype=np.int64)  # (parts, n)
        _, a, b, c = layout[-1]  # V's part
        columns = int(a * c if self._packed else b)
        shared_logits = np.zeros((parts, n, columns), dtype=np.float32)  # (parts, n, Cp)
        counters = np.zeros(parts * COUNTER_STRIDE, dtype=np.int64)
        return (
            weights,
            layout,
            self._cell,
            self._packed,
            self._b_y,
            states,
            spare,
            forced,
            uniforms,
            inv_temperature,
            top_k,
            top_p,
            greedy,
            out_ids,
            targets,
            log_probs,
            logits,
            record,
            shared_logits,
            drawn,
            counters,
        )

    def _run(self, states, forced, uniforms, inv_temperature, top_k, top_p, greedy, out_ids, *scoring):
        """run_parts over `states` in place: the parts on threads of their own, or the model in
        one part on this thread (a small model, or for a while after the threads kept waiting for
        each other: another process was using a core). Same bits either way. scoring: where the
        pass scores, (targets, log_probs, logits, record) as _arguments takes them."""
        options = (states, forced, uniforms, inv_temperature, top_k, top_p, greedy, out_ids, *scoring)
        n = states.shape[0]
        work = n * self.spec.layers * self.spec.gates * self.spec.hidden**2
        if self.parts == 1 or time.monotonic() < self._alone_until or (work < TEAM_MIN_WORK and not self._always_team):
            run_parts(0, 1, *self._arguments(1, *options))
            return
        arguments = self._arguments(self.parts, *options)
        counters = arguments[-1]

        def part(p):
            try:
                return run_parts(p, p + 1, *arguments)
            except BaseException:
                counters[p * COUNTER_STRIDE] = 1 << 62  # release the others, then raise
                raise

        waiting = _team_run(self.parts, part) / self.parts
        self.last_waiting = waiting
        if waiting > WAITING_LIMIT and max(forced.shape[1], uniforms.shape[1]) >= JUDGED_STEPS:
            self._alone_until = time.monotonic() + ALONE_SECONDS

    def new_states(self, n: int) -> np.ndarray:
        return np.zeros(self.spec.state_shape(n), dtype=np.float32)  # (n, L, K, H)

    def read(self, states: np.ndarray, row: int, prime_ids) -> None:
        """Run the character ids `prime_ids` through stream `row` of `states`, in place."""
        ids = np.ascontiguousarray(prime_ids, dtype=np.int64)  # (m,)
        if ids.size and (ids.min() < 0 or ids.max() >= self.spec.vocab_size):
            raise InputError("character ids outside the vocabulary")
        one = states[row : row + 1]  # (1, L, K, H)
        nothing = np.zeros((1, 0))
        self._run(
            one,
            ids.reshape(1, -1),
            nothing,
            np.ones(1),
            np.zeros(1, dtype=np.int64),
            np.ones(1),
            np.zeros(1, dtype=bool),
            np.zeros((1, 0), dtype=np.int64),
        )

    def score(
        self,
        states: np.ndarray,
        inputs: np.ndarray,
        targets: np.ndarray,
        log_probs: np.ndarray,
        *,
        logits: np.ndarray | None = None,
        record: np.ndarray | None = None,
    ) -> None:
        """Read inputs (n, k) int64 into every stream of `states` (n, L, K, H), in place, and after
        each character write the natural log of the probability of targets (n, k) int64 into
        log_probs (n, k) float64. Ids are used as given: check them first (0 <= id < vocab).
        Optionally, after each character: logits (n, k, vocab) float32 gets the whole row of
        logits (h V + b_y, before the softmax), record (n, k, L, K, H) float32 every layer's
        state. Both C-contiguous, with these dtypes and shapes (InputError otherwise)."""
        n, steps = inputs.shape
        wanted = {
            "logits": (logits, (n, steps, self.spec.vocab_size)),
            "record": (record, (n, steps, *states.shape[1:])),
        }
        for name, (array, shape) in wanted.items():
            if array is not None and (
                array.dtype != np.float32 or array.shape != shape or not array.flags.c_contiguous
            ):
                raise InputError(f"{name} must be a C-contiguous float32 array of shape {shape}")
        nothing = np.zeros((n, 0))
        self._run(
            states,
            inputs,
            nothing,
            np.ones(n),
            np.zeros(n, dtype=np.int64),
            np.ones(n),
            np.zeros(n, dtype=bool),
            np.zeros((n, 0), dtype=np.int64),
            targets,
            log_probs,
            logits,
            record,
        )

    def draw(self, states, uniforms, inv_temperature, top_k, top_p, greedy, out_ids) -> None:
        """k characters for every stream: uniforms (n, k) float64, options (n,) arrays
        (inv_temperature float64, top_k int64 with 0 off, top_p float64 with 1 off, greedy bool),
        out_ids (n, k) int64. Arrays are used as given: make them with these dtypes."""
        no_ids = np.zeros((states.shape[0], 0), dtype=np.int64)
        self._run(states, no_ids, uniforms, inv_temperature, top_k, top_p, greedy, out_ids)

    def decode(self, ids) -> str:
        if self._code_points is None:
            raise InputError("this sampler was made without a vocabulary: it scores, it cannot decode")
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
