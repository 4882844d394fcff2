"""A generation request as the server's engine sees it: a Job of `num` streams (made by
`make_job`), the sink it reports through, and the errors that end it.

A job reports through a callable `sink`, called on the worker thread with a list of `num` new
pieces of text (some possibly empty), then once with None at the end (or with a CharRNNError if
the job was stopped by the engine).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from charrnn.errors import CharRNNError

INT64_MAX = np.iinfo(np.int64).max


class EngineBusy(CharRNNError):
    """Every generation slot is taken (or this client's share of them)."""


class GenerationFailed(CharRNNError):
    """One job could not be generated; the detail is in the server's log."""

    def __init__(self, message: str = "generation failed (see the server's log)"):
        super().__init__(message)


class EngineClosed(CharRNNError):
    """The engine is shutting down."""


Sink = Callable[[object], None]


@dataclass
class Job:
    """One request: `num` samples of `length` characters after the prime ids, with the same
    options; sample i draws with row i of `np.random.default_rng(seed).random((num, length))`.
    Made by `make_job`."""

    prime_ids: np.ndarray  # (m,) int64
    length: int
    num: int
    seed: int | None
    inv_temperature: float
    top_k: int
    top_p: float
    greedy: bool
    sink: Sink
    generated: int = 0  # characters drawn so far, over all samples
    cancelled: bool = False
    finished: bool = False
    on_done: Callable[[], None] | None = None  # called once on the worker thread when it ends
    _left: int = 0  # streams still running

    def cancel(self) -> None:
        """Stop generating (the client went away); the worker drops its rows at the next tick and
        sends nothing more to the sink."""
        self.cancelled = True

    def uniforms_of(self, index: int) -> np.random.Generator | None:
        """A generator whose random() calls continue row `index` of
        default_rng(seed).random((num, length)): default_rng is PCG64, each float64 takes one
        64-bit output, so the row starts index * length outputs in. None when greedy."""
        if self.greedy:
            return None
        bits = np.random.PCG64(self.seed)
        if index:
            bits.advance(index * self.length)
        return np.random.Generator(bits)


def make_job(
    prime_ids,
    length: int,
    num: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    greedy: bool = False,
    seed: int | None = None,
    sink: Sink,
) -> Job:
    """A job as `charrnn sample --seed SEED --num NUM --length LENGTH` would run it (no seed: a
    fresh one). Options must already be checked."""
    if seed is None:
        seed = secrets.randbits(128)  # as np.random.SeedSequence() draws its entropy
    # top_k at or past the vocabulary's size is off: any larger whole number means the same, so it
    # is held where an int64 row of the worker's arrays can keep it.
    return Job(
        np.ascontiguousarray(prime_ids, dtype=np.int64),
        int(length),
        int(num),
        seed,
        1.0 / float(temperature),
        min(int(top_k), INT64_MAX),
        float(top_p),
        bool(greedy),
        sink,
    )


def deliver(job: Job, item) -> None:
    """Hand `item` to the job's sink; a sink that fails cancels its job, never the worker."""
    try:
        job.sink(item)
    except Exception:  # noqa: BLE001 - the sink belongs to a client that may be gone
        job.cancelled = True
